"""Codegen of `attention` groups: one launch of kernels/attention.py's fused program per node.

q, k, v and the mask are read through their layouts' strides, so a head split's transpose, the
split of a fused QKV projection or a mask broadcast over batch and heads (stride 0) costs no copy;
the output is stored in whatever layout the program chose for it (a [B, H, L, D] result that is
transposed back to [B, L, H, D] is stored that way, so the reshape after it is a view). Sizes,
strides, scale and the mask kind are literals of the generated source, as in every generated kernel.
"""
from __future__ import annotations

import torch

from trident.compiler.codegen.kernels import Args, KernelSource, _header, _launcher
from trident.compiler.codegen.program import Layout
from trident.compiler.fusion import Group
from trident.compiler.ir import Graph
from trident.kernels import attention as template
from trident.kernels import attention_hopper
from trident.kernels.common import dot_precision


def _keywords(values: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items())


def _triple(layout: Layout):
    return layout.shape, layout.strides, layout.dtype


def generate(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
             name: str) -> KernelSource:
    node = group.anchor
    (out,) = node.outputs
    q, k, v = (layouts[i] for i in node.inputs[:3])
    mask = layouts[node.inputs[3]] if len(node.inputs) > 3 else None
    plan = template.plan_launch(_triple(q), _triple(k), _triple(v), None if mask is None else _triple(mask),
                                _triple(layouts[out]), node.attrs.get("causal"))
    args = Args()
    pointers = [args(i) for i in node.inputs]
    if mask is None:
        pointers.append(pointers[0])  # never read: MASK_KIND is 0
    pointers.append(args(out, "out"))
    mask_bytes = 0 if mask is None else mask.dtype.itemsize
    scale, zero_nan_rows = float(node.attrs["scale"]), bool(node.attrs.get("zero_nan_rows", False))
    causal = plan.causal_offset is not None
    hopper = _hopper_here(plan, q.dtype, zero_nan_rows)
    cfg = template.heuristic_config(plan.Lq, plan.Lk, plan.D, q.dtype, plan.DV, mask_bytes, causal, hopper,
                                    plan.rows)
    imports = "from trident.kernels.attention import attention_program, program_count"
    if hopper:
        imports += "\nfrom trident.kernels.attention import AttentionLaunch\nfrom trident.kernels import attention_hopper"
    src = _header(name, group.nodes, graph, imports)
    params = ", ".join(args.names[a] for a in args.order)
    src += (f"@triton.jit\ndef kernel({params}, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, "
            f"PAIRED: tl.constexpr = 0):\n")
    src += _program_call(pointers, plan, scale, q.dtype, zero_nan_rows)
    prepare = ""
    if hopper:
        program = template.heuristic_config(plan.Lq, plan.Lk, plan.D, q.dtype, plan.DV, mask_bytes, causal,
                                            rows=plan.rows)
        src += f"\n\nPLAN = {plan!r}\nPROGRAM_CONFIG = {program.to_dict()!r}\n"
        prepare = _hopper_prologue(pointers, scale, mask is not None)
    grid = f"(program_count({plan.Lq}, meta['BLOCK_M'], {plan.heads}, meta.get('PAIRED', 0)),)"
    src += "\n\n" + _launcher(args, grid, cfg, prepare=prepare)
    problem = {"template": "attention", "BH": plan.heads, "Lq": plan.Lq, "Lk": plan.Lk, "D": plan.D,
               "DV": plan.DV, "causal": causal, "mask_bytes": mask_bytes, "dtype": q.dtype, "hopper": hopper}
    return KernelSource(name, src, list(args.order), cfg, problem=problem)


def _hopper_here(plan, dtype, zero_nan_rows: bool) -> bool:
    """Does kernels/attention_hopper.py's kernel take this problem on this machine's GPU? (Its data
    pointers are checked at each launch.)"""
    if not torch.cuda.is_available():
        return False
    device = torch.device("cuda", torch.cuda.current_device())
    return attention_hopper.available(device) and attention_hopper.why_not(plan, dtype, zero_nan_rows) is None


def _hopper_prologue(pointers: list[str], scale: float, masked: bool) -> str:
    """launch()'s first lines under WS=1: the warp-specialized kernel, or the program (with its own
    heuristic config) when an operand does not start 16-byte aligned (attention_hopper's
    why_not_at_launch; the strides were settled here, at generation). pointers: q, k, v, the mask
    (q's when there is none) and o."""
    q, k, v, mask, o = pointers
    return "\n    ".join([
        "if config.get('WS'):",
        f"    if attention_hopper.why_not_at_launch({q}.dtype, [t.data_ptr() for t in ({q}, {k}, {v}, {o})]):",
        "        config = PROGRAM_CONFIG",
        "    else:",
        f"        return attention_hopper.launch({q}, {k}, {v}, {o}, PLAN, {scale!r}, config, "
        f"{mask if masked else None})"])


def _program_call(pointers: list[str], plan, scale: float, dtype: torch.dtype, zero_nan_rows: bool) -> str:
    """The kernel's body: attention_program with every size, stride and flag spelled out by name."""
    strides = plan.stride_args()
    lines = [", ".join(pointers) + ", pid=tl.program_id(0)", _keywords(plan.sizes())]
    lines += [_keywords({k: s for k, s in strides.items() if k.startswith(operand)})
              for operand in ("sq", "sk", "sv", "sm", "so")]
    lines.append(_keywords({"SCALE": scale, "MASK_KIND": plan.mask_kind, "MASK_PER_KEY": plan.mask_per_key,
                            "CAUSAL": plan.causal_offset is not None}))
    lines.append("BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, " + _keywords(
        {"BLOCK_D": template.head_block(plan.D), "BLOCK_DV": template.head_block(plan.DV),
         "INPUT_PRECISION": dot_precision(dtype, "attention"), "ZERO_NAN_ROWS": zero_nan_rows}) + ", PAIRED=PAIRED")
    return "    attention_program(\n" + ",\n".join(" " * 8 + line for line in lines) + ")\n"
