"""kernels/attention_hopper.py, the warp-specialized Hopper kernel: what it takes, how configs and
generated kernels reach it and fall back from it (CPU), and its results against a float64
reference on an sm_90 GPU: odd lengths, Lq != Lk, both causal alignments, rows that see no key,
grouped-query heads, head-split views of one QKV tensor, rank-5 operands, bf16, NaN."""
import math

import pytest
import torch

from trident.compiler.autotune.constraints import config_error
from trident.compiler.autotune.space import candidates
from trident.kernels import attention_hopper as hopper
from trident.kernels.attention import (_triple, attention, candidate_configs, causal_offset, heuristic_config,
                                       hopper_config, hopper_fits, plan_launch, plan_tensors)

HOPPER = torch.cuda.is_available() and hopper.available(torch.device("cuda"))
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def plan_of(q, k, v, causal=None, mask=None):
    o = torch.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype)
    return plan_launch(_triple(q), _triple(k), _triple(v), None if mask is None else _triple(mask), _triple(o), causal)


def test_it_takes_16_bit_head_dims_up_to_256_and_per_key_masks():
    q = torch.empty(2, 4, 100, 64, dtype=torch.float16)
    assert hopper.why_not(plan_of(q, q, q), torch.float16) is None
    assert hopper.why_not(plan_of(q, q, q, "bottom_right"), torch.float16) is None
    q32 = q.float()
    assert "dtype" in hopper.why_not(plan_of(q32, q32, q32), torch.float32)
    for d in (8, 32, 40, 80, 96, 128, 160, 256):
        qd = torch.empty(2, 4, 100, d, dtype=torch.float16)
        assert hopper.why_not(plan_of(qd, qd, qd), torch.float16) is None, d
    v32 = torch.empty(2, 4, 100, 32, dtype=torch.float16)
    assert "head dims 64/32" in hopper.why_not(plan_of(q, q, v32), torch.float16)
    q36 = torch.empty(2, 4, 100, 36, dtype=torch.float16)  # rows 72 bytes apart: not TMA's 16-byte steps
    assert "strides" in hopper.why_not(plan_of(q36, q36, q36), torch.float16)
    for mask in (torch.ones(2, 1, 1, 100, dtype=torch.bool), torch.zeros(2, 4, 1, 100), torch.zeros(100),
                 torch.zeros(2, 1, 100, 100, dtype=torch.float16).expand(2, 4, 100, 100)[:, :, :1]):
        assert hopper.why_not(plan_of(q, q, q, mask=mask), torch.float16) is None, mask.shape
    rows = torch.ones(2, 1, 100, 100, dtype=torch.bool)  # a mask per query row (causal, windows): the program
    assert hopper.why_not(plan_of(q, q, q, mask=rows), torch.float16) == "a mask that varies along the query rows"
    assert hopper.why_not(plan_of(q, q, q), torch.float16, zero_nan_rows=True) == "the NaN-row guard"


def test_it_asks_tma_aligned_strides_and_pointers():
    x = torch.empty(2, 100, 3, 4, 64, dtype=torch.float16)  # a QKV projection's head-split views
    q, k, v = (x[:, :, i].transpose(1, 2) for i in range(3))
    assert hopper.why_not(plan_of(q, k, v), torch.float16) is None
    odd = torch.empty(2, 4, 100, 68, dtype=torch.float16)[..., :64]  # rows 136 bytes apart
    assert "strides" in hopper.why_not(plan_of(odd, odd, odd), torch.float16)
    plan = plan_of(q, k, v)
    assert hopper.why_not(plan, torch.float16, pointers=[0, 16, 32, 48]) is None
    shared = torch.empty(2, 4, 1, 64, dtype=torch.float16).expand(2, 4, 100, 64)  # one key row, repeated
    assert "broadcast" in hopper.why_not(plan_of(q, shared, shared), torch.float16)
    none = torch.empty(2, 4, 0, 64, dtype=torch.float16)
    assert hopper.why_not(plan_of(q, none, none), torch.float16) == "no keys"
    assert "q does not start 16-byte aligned" in hopper.why_not(plan, torch.float16, pointers=[2, 16, 32, 48])


def test_a_head_dim_between_the_kernels_runs_at_the_next_and_reads_zeros_past_it():
    assert [hopper.kernel_head_dim(d) for d in (8, 32, 33, 64, 80, 96, 128, 129, 256, 257)] == [
        32, 32, 64, 64, 128, 128, 128, 256, 256, None]
    q = torch.empty(2, 4, 100, 80, dtype=torch.float16)
    desc = hopper._descriptor(q, (2, 1, 4, 100, 80), (32000, 0, 8000, 80, 1), 64)
    assert desc.shape[-1] == 80 and desc.block_shape == [1, 1, 1, 64, 128]  # TMA fills columns 80-127 with 0
    assert hopper.smem_bytes(hopper_config(128, 3), 80) == hopper.smem_bytes(hopper_config(128, 3), 128)
    # past 128 the block is 256 wide: only 64-key blocks in two stages fit (192 KB), and the heuristic takes them
    assert hopper.why_unfit(hopper_config(128, 2), 160) == "shared memory"
    assert hopper.why_unfit(hopper_config(64, 2), 160) is None and hopper.why_unfit(hopper_config(64, 3), 256)
    assert heuristic_config(4096, 4096, 160, torch.float16, hopper=True) == hopper_config(64, 2)
    assert "head dim 300" in hopper.why_unfit(hopper_config(64, 2), 300)


def test_descriptor_strides_fill_size_one_dims():
    # as_5d pads a rank-4 [B, H, L, D] with W = 1 at stride 0: TMA wants a nonzero stride there.
    assert hopper._descriptor_strides((2, 1, 4, 100, 64), (25600, 0, 6400, 64, 1)) == [25600, 25600, 6400, 64, 1]
    assert hopper._descriptor_strides((1, 1, 1, 7, 64), (0, 0, 0, 64, 1)) == [448, 448, 448, 64, 1]


_SCHEDULE_CHECK = r"""
import re
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from trident.compiler.target_check import sass_of
from trident.kernels import attention_hopper as hopper
from trident.kernels.gluon_hopper import shared_layout

for d, mask_kind, mask_type, block_n, stages in ((64, 0, "*fp16", 128, 3), (128, 0, "*fp16", 128, 3),
                                                 (128, 1, "*i1", 128, 3), (128, 2, "*fp32", 128, 3),
                                                 (256, 0, "*fp16", 64, 2)):
    def desc(rows):
        return f"tensordesc<fp16[1,1,1,{rows},{d}],{shared_layout((1, 1, 1, rows, d), torch.float16)!r}>"
    fn = hopper.attention_hopper_kernel
    const = dict(QK_SCALE=0.18, CAUSAL=False, STAGES=stages, BLOCK_N=block_n, HEAD_DIM=d, OVERLAP=True,
                 PINGPONG=False, MASK_KIND=mask_kind)
    sig = {name: "i32" for name in fn.arg_names}
    sig.update(q_desc=desc(64), k_desc=desc(block_n), v_desc=desc(block_n), o_ptr="*fp16", mask_ptr=mask_type,
               **{name: "i64" for name in ("so_b", "so_w", "so_h", "so_m", "sm_b", "sm_w", "sm_h", "sm_n")},
               **{name: "constexpr" for name in const})
    src = GluonASTSource(fn, sig, {(fn.arg_names.index(name),): value for name, value in const.items()})
    sass = sass_of(triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}))
    # each consumer group's overlapped loop: exponentials between "QK^T done" and "PV done"
    segments = re.findall(r"DEPBAR\.LE gsb0, 0x1(.*?)DEPBAR\.LE gsb0, 0x0", sass, re.S)
    def spills(text):  # local memory: registers spilled
        return len(re.findall(r"\b(STL|LDL)\b", text))
    print(f"{d}/{mask_kind}", spills(sass), sum(map(spills, segments)), *[seg.count("MUFU.EX2") for seg in segments])
"""


@pytest.mark.skipif(not hopper.HAVE_GLUON, reason="needs Triton's Gluon")
def test_the_softmax_runs_beside_the_groups_own_pv(tmp_path):
    """Compiled for sm_90 on this machine: in each consumer group's overlapped loop, a key
    block's exponentials (64 rows x 128 keys: 64 a thread) lie between the wait for its QK^T
    and the wait for the previous block's PV. ptxas used to hoist the PV wait above them (the
    softmax then ran after the PV, not beside it); a branch between the two (the wait for the
    block's V) keeps the order the source gives. With a per-key mask (bool, additive) too, at head
    dim 256 (64 keys a block: 32 a thread), and with no register spilled to local memory there;
    without a mask up to head dim 128, nowhere. (Triton 3.9's ptxas spills a masked kernel's values
    around its boundary blocks at head dim 128, and at 256 outside the loop, once a tile; Triton
    3.6's does not.)"""
    import os
    import subprocess
    import sys

    script = tmp_path / "schedule_check.py"
    script.write_text(_SCHEDULE_CHECK)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TRITON_INTERPRET="0"))
    assert done.returncode == 0, done.stderr[-2000:]
    counts = {key: list(map(int, c)) for key, *c in (line.split() for line in done.stdout.splitlines())}
    assert sorted(counts) == ["128/0", "128/1", "128/2", "256/0", "64/0"], done.stdout
    for key, (spills, spills_in_loop, *per_group) in counts.items():
        assert spills_in_loop == 0 and (spills == 0 or key not in ("64/0", "128/0")), (key, spills, spills_in_loop)
        per_thread = 32 if key.startswith("256/") else 64  # a block's exponentials: 64 rows x 64 or 128 keys
        assert len(per_group) == 2 and all(c >= per_thread for c in per_group), (key, per_group)


def test_configs_fit_shared_memory():
    assert hopper.why_unfit(hopper_config(128, 3), 128) is None  # 224 KB
    assert hopper.why_unfit(hopper_config(128, 3), 128, masked=True) is None  # + 1.5 KB of per-key bias
    assert hopper.smem_bytes(hopper_config(128, 3), 128, masked=True) - hopper.smem_bytes(hopper_config(128, 3), 128) \
        == 3 * 128 * 4
    assert hopper.why_unfit(hopper_config(128, 4), 128) == "shared memory"
    assert hopper.why_unfit(hopper_config(128, 4), 64) is None
    assert hopper.why_unfit(hopper_config(128, 1), 64) is not None
    assert hopper.why_unfit(hopper_config(32, 2), 64) is not None


def test_the_heuristic_picks_it_where_it_measured_ahead():
    assert heuristic_config(8192, 8192, 128, torch.float16, hopper=True).get("WS") == 1
    assert heuristic_config(2048, 2048, 64, torch.float16, causal=True, hopper=True).get("WS") == 1
    # short rows, and anything without the kernel: the Triton program
    assert heuristic_config(512, 512, 64, torch.float16, hopper=True).get("WS") is None
    assert heuristic_config(8192, 8192, 128, torch.float16).get("WS") is None
    # head dims the kernel pads measured ahead too (80 at 128, 40 at 64); 32 and below: the program
    assert heuristic_config(4096, 4096, 80, torch.float16, hopper=True).get("WS") == 1
    assert heuristic_config(4096, 4096, 40, torch.float16, hopper=True).get("WS") == 1
    assert heuristic_config(4096, 4096, 32, torch.float16, hopper=True).get("WS") is None


def test_the_tuner_times_it_only_where_it_runs():
    with_hopper = candidate_configs(4096, 4096, 128, torch.float16, hopper=True)
    assert any(c.get("WS") for c in with_hopper)
    assert not any(c.get("WS") for c in candidate_configs(4096, 4096, 128, torch.float16))
    problem = {"template": "attention", "BH": 64, "Lq": 4096, "Lk": 4096, "D": 128, "DV": 128, "causal": False,
               "mask_bytes": 0, "dtype": torch.float16, "hopper": True}
    base = heuristic_config(4096, 4096, 128, torch.float16)  # a program config as the base
    timed = candidates(problem, base, "fast")
    assert any(c.get("WS") for c in timed) and all(config_error(c, problem, base) is None for c in timed)
    # A cache entry or engine file that asks for the kernel where the problem does not take it is refused.
    assert "WS" in config_error(hopper_config().to_dict(), {**problem, "hopper": False}, base)


def test_a_config_is_checked_at_the_problems_head_dim():
    from trident.kernels.attention import check_config

    check_config(hopper_config(128, 4), 64)  # 160 KB at head dim 64
    with pytest.raises(ValueError, match="shared memory"):
        check_config(hopper_config(128, 4), 128)


def test_a_ws_config_without_the_kernel_runs_the_program():
    q, k, v = (torch.randn(1, 2, 40, 64, device=DEV) for _ in range(3))  # fp32: the kernel takes 16-bit
    out = attention(q, k, v, causal="top_left", config=hopper_config())
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_a_generated_kernel_with_the_path_runs_the_program_where_the_kernel_cannot(monkeypatch):
    """An attention kernel generated with the hopper path (forced here): its launch() under a WS
    config runs the warp-specialized kernel where why_not allows, else the program with its own
    config (here the operands are fp32)."""
    from trident.compiler.build import compile_graph
    from trident.compiler.codegen import attention as codegen_attention
    from trident.compiler.ir import GraphBuilder, TensorType
    from trident.kernels.loader import load_kernel

    monkeypatch.setattr(codegen_attention, "_hopper_here", lambda plan, dtype, zero_nan_rows: True)
    b = GraphBuilder("attention")
    xs = [b.input(f"x{i}", TensorType((1, 2, 300, 64), torch.float32)) for i in range(3)]
    graph = b.finish([b.add1("attention", xs, {"scale": 0.125, "causal": "top_left"})])
    program = compile_graph(graph, "fp32")
    (step,) = [s for s in program.plan().kernel_steps() if "attention_program(" in s.source]
    assert "attention_hopper.launch(" in step.source
    module = load_kernel(step.name, step.source)
    q, k, v = (torch.randn(1, 2, 300, 64, device=DEV) for _ in range(3))
    out = torch.empty_like(q)
    module.launch(q, k, v, out, config=hopper_config().to_dict())
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.125)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_a_generated_kernel_hands_its_padding_mask_to_the_kernel(monkeypatch):
    """With a per-key mask the generated launch() passes the mask on to the warp-specialized kernel
    (and runs the program with it where the kernel cannot: here fp32 operands)."""
    from trident.compiler.build import compile_graph
    from trident.compiler.codegen import attention as codegen_attention
    from trident.compiler.ir import GraphBuilder, TensorType
    from trident.kernels.loader import load_kernel

    monkeypatch.setattr(codegen_attention, "_hopper_here", lambda plan, dtype, zero_nan_rows: True)
    b = GraphBuilder("attention")
    xs = [b.input(f"x{i}", TensorType((2, 2, 70, 32), torch.float32)) for i in range(3)]
    xs.append(b.input("keep", TensorType((2, 1, 1, 70), torch.bool)))
    graph = b.finish([b.add1("attention", xs, {"scale": 0.2})])
    (step,) = [s for s in compile_graph(graph, "fp32").plan().kernel_steps() if "attention_program(" in s.source]
    module = load_kernel(step.name, step.source)
    launch = next(line for line in step.source.splitlines() if "attention_hopper.launch(" in line)
    assert launch.rstrip(")").endswith(module.launch.__code__.co_varnames[3])  # the mask, the launch's 4th
    q, k, v = (torch.randn(2, 2, 70, 32, device=DEV) for _ in range(3))
    keep = torch.arange(70, device=DEV)[None, :] < torch.tensor([70, 33], device=DEV)[:, None]
    out = torch.empty_like(q)
    module.launch(q, k, v, keep[:, None, None], out, config=hopper_config().to_dict())
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None], scale=0.2)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------- GPU ----
def reference(q, k, v, causal=None, mask=None):
    """float64 attention (mask: bool, True = attend, or additive); rows that see no key give 0."""
    qd, kd, vd = q.double(), k.double(), v.double()
    if kd.shape[-3] != qd.shape[-3]:
        kd = kd.repeat_interleave(qd.shape[-3] // kd.shape[-3], dim=-3)
        vd = vd.repeat_interleave(qd.shape[-3] // vd.shape[-3], dim=-3)
    s = qd @ kd.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.double()
    if causal is not None:
        Lq, Lk = s.shape[-2:]
        i = torch.arange(Lq, device=s.device)[:, None]
        j = torch.arange(Lk, device=s.device)[None, :]
        s = s.masked_fill(j > i + causal_offset(causal, Lq, Lk), float("-inf"))
    return torch.softmax(s, -1).nan_to_num(0.0) @ vd


def run(q, k, v, causal, config, mask=None, o=None):
    """The kernel's output (into o where given), its plan asserted to be one why_not takes."""
    o = torch.empty(q.shape[:-1] + v.shape[-1:], device=q.device, dtype=q.dtype) if o is None else o
    plan = plan_launch(_triple(q), _triple(k), _triple(v), None if mask is None else _triple(mask), _triple(o), causal)
    assert hopper.why_not(plan, q.dtype, pointers=[t.data_ptr() for t in (q, k, v, o)]) is None
    hopper.launch(q, k, v, o, plan, 1 / math.sqrt(q.shape[-1]), config.to_dict(), mask)
    return o


def cases(d):
    g = torch.Generator(device="cuda").manual_seed(d)

    def r(*shape, dtype=torch.float16):
        return torch.randn(*shape, device="cuda", dtype=dtype, generator=g)
    x = r(2, 333, 3, 4, d)
    views = tuple(x[:, :, i].transpose(1, 2) for i in range(3))
    return growing_scores(r, g, d) + [
        ("200 keys", (r(2, 3, 200, d), r(2, 3, 200, d), r(2, 3, 200, d)), None),
        ("200 keys causal", (r(2, 3, 200, d), r(2, 3, 200, d), r(2, 3, 200, d)), "top_left"),
        ("77 x 300 bottom-right", (r(1, 2, 77, d), r(1, 2, 300, d), r(1, 2, 300, d)), "bottom_right"),
        ("77 x 300 top-left", (r(1, 2, 77, d), r(1, 2, 300, d), r(1, 2, 300, d)), "top_left"),
        ("300 x 77 bottom-right: rows that see no key", (r(1, 2, 300, d), r(1, 2, 77, d), r(1, 2, 77, d)),
         "bottom_right"),
        ("grouped heads 8 / 2", (r(2, 8, 130, d), r(2, 2, 257, d), r(2, 2, 257, d)), "bottom_right"),
        ("QKV views", views, None),
        ("QKV views causal", views, "top_left"),
        ("one query, one key", (r(3, 4, 1, d), r(3, 4, 1, d), r(3, 4, 1, d)), None),
        ("one query, 1000 keys", (r(3, 4, 1, d), r(3, 4, 1000, d), r(3, 4, 1000, d)), "bottom_right"),
        ("rank 5", (r(2, 2, 2, 150, d), r(2, 2, 2, 150, d), r(2, 2, 2, 150, d)), None),
        ("bf16", tuple(r(2, 3, 190, d, dtype=torch.bfloat16) for _ in range(3)), "top_left"),
        ("2,500 keys", (r(1, 3, 2500, d), r(1, 3, 2500, d), r(1, 3, 2500, d)), "top_left"),
    ]


def growing_scores(r, g, d):
    """Rows whose scores grow (or fall) along the keys by up to 16 (log2 domain) a 128-key block, at
    a rate of their own, so each block moves the rows' maxima by a different amount (the rescale of
    the accumulator and row sums at every step); and a key in the sixth block whose scores exceed
    every other's by far more than fp32's exponent range (alpha = 0)."""
    q, k, v = r(2, 3, 700, d), r(2, 3, 700, d), r(2, 3, 700, d)
    q[..., 0] = torch.linspace(-12, 12, 700, device="cuda")[torch.randperm(700, device="cuda", generator=g)]
    k[..., 0] = torch.linspace(0, 5 * math.sqrt(d), 700, device="cuda")
    q2, k2, v2 = r(1, 2, 700, d), r(1, 2, 700, d), r(1, 2, 700, d)
    q2[..., 0], k2[..., 650, 0] = 8, 200  # key 650 scores about 1,600 / sqrt(d) above the others
    return [("scores growing along the keys", (q, k, v), None),
            ("scores growing along the keys, causal", (q, k, v), "top_left"),
            ("one late key far above the rest", (q2, k2, v2), None)]


GPU_CONFIGS = [hopper_config(128, 3, True), hopper_config(128, 2, True), hopper_config(128, 2, False),
               hopper_config(64, 4, True), hopper_config(128, 3, True, pingpong=True),
               hopper_config(128, 2, False, pingpong=True)]


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="needs an sm_90 GPU and Gluon")
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("config", GPU_CONFIGS, ids=str)
def test_gpu_matches_float64(d, config):
    for name, (q, k, v), causal in cases(d):
        out = run(q, k, v, causal, config)
        tol = 2e-2 if q.dtype == torch.bfloat16 else 4e-3
        err = (out.double() - reference(q, k, v, causal)).abs().max().item()
        assert err <= tol, f"{name}: max error {err:.2e} (tolerance {tol})"


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="needs an sm_90 GPU and Gluon")
@pytest.mark.parametrize("d, config", [
    (d, c) for d in (32, 40, 80, 96, 160, 256)
    for c in GPU_CONFIGS[:2] + GPU_CONFIGS[3:4] + [hopper_config(64, 2, True), hopper_config(64, 2, False)]
    if hopper.why_unfit(c, d) is None], ids=str)
def test_gpu_head_dims_between_the_kernels_match_float64(d, config):
    """Head dims run at the next kernel block (40 at 64, 80 and 96 at 128, 160 at 256, where the
    queries stay in shared memory): the zeros TMA reads past D change nothing, and the output's
    columns past D are not written (the NaN around the view's D columns stays)."""
    for name, (q, k, v), causal in cases(d):
        o = torch.full(q.shape[:-1] + (d + 8,), float("nan"), device="cuda", dtype=q.dtype)[..., :d]
        run(q, k, v, causal, config, o=o)
        tol = 2e-2 if q.dtype == torch.bfloat16 else 4e-3
        err = (o.double() - reference(q, k, v, causal)).abs().max().item()
        assert err <= tol, f"{name}: max error {err:.2e} (tolerance {tol})"
        assert o._base[..., d:].isnan().all(), f"{name}: a column past D was written"


def block_kinds(g, batch, keys):
    """A bool [batch, keys] mask whose 64-key chunks are live (every key kept), dead (none kept) or
    mixed (half at random), with the chunk kinds (1, 2, 0): the kernel's loader sorts 64- and
    128-key blocks into these kinds, and its consumers take a step per kind. The first chunks
    are dead (a row's first blocks see nothing: left padding), keys 256-511 live and 512-767 dead
    (whole 128-key blocks of each kind), the rest at random."""
    kinds = torch.randint(0, 3, (batch, keys // 64 + 1), device="cuda", generator=g)
    kinds[:, :3], kinds[:, 4:8], kinds[:, 8:12] = 2, 1, 2
    chunk = kinds.repeat_interleave(64, dim=1)[:, :keys]
    coin = torch.rand(batch, keys, device="cuda", generator=g) < 0.5
    return torch.where(chunk == 1, True, torch.where(chunk == 2, False, coin)), chunk


def masked_cases(d):
    """Per-key masks (padding masks) of each kind and broadcast, with odd lengths, both causal
    alignments, grouped heads and full blocks (the overlapped loop) as well as boundary ones."""
    g = torch.Generator(device="cuda").manual_seed(100 + d)

    def r(*shape, dtype=torch.float16):
        return torch.randn(*shape, device="cuda", dtype=dtype, generator=g)

    def padding(batch, keys, kept):  # [batch, 1, 1, keys]: batch i attends to its first kept[i] keys
        return (torch.arange(keys, device="cuda")[None, :] < torch.tensor(kept, device="cuda")[:, None])[:, None, None]
    qkv = (r(3, 4, 200, d), r(3, 4, 200, d), r(3, 4, 200, d))
    long = (r(2, 2, 700, d), r(2, 2, 2500, d), r(2, 2, 2500, d))
    finite_min = torch.finfo(torch.float32).min
    additive = torch.where(padding(2, 2500, [2100, 1900]), r(2, 1, 1, 2500, dtype=torch.float32), finite_min)
    additive[1] = finite_min  # transformers' mask of an empty row: torch averages the values
    bias16 = r(3, 4, 1, 200) * 3
    bias16[0, :, :, 50:90] = float("-inf")
    strided = padding(3, 400, [400, 123, 7])[..., ::2]  # every other key of a wider mask: key stride 2
    keep, chunk = block_kinds(g, 2, 2500)
    mixed = r(2, 2500, dtype=torch.float32)
    by_block = torch.where(keep, torch.where(chunk == 0, mixed, 0.0), float("-inf"))[:, None, None]
    return [
        ("bool blocks live, dead and mixed, leading dead", long, None, keep[:, None, None]),
        ("additive blocks live (0), dead (-inf) and mixed, causal", long, "bottom_right", by_block),
        ("bool padding, a batch that sees no key", qkv, None, padding(3, 200, [150, 200, 0])),
        ("additive fp16 per head, -inf keys", qkv, None, bias16),
        ("bool padding, causal", qkv, "top_left", padding(3, 200, [77, 199, 200])),
        ("fp32 finite minimum, 2,500 keys, bottom-right", long, "bottom_right", additive),
        ("2,500 keys, padding", long, None, padding(2, 2500, [2401, 1000])),
        ("grouped heads 8 / 2", (r(2, 8, 130, d), r(2, 2, 257, d), r(2, 2, 257, d)), None,
         padding(2, 257, [256, 129])),
        ("a key-strided mask", qkv, None, strided),
        ("one mask row for all", qkv, "top_left", padding(1, 200, [180])[0, 0, 0]),
    ]


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="needs an sm_90 GPU and Gluon")
@pytest.mark.parametrize("d, config", [
    (d, c) for d in (64, 128, 256) for c in GPU_CONFIGS[:3] + GPU_CONFIGS[4:5] + [hopper_config(64, 2, True)]
    if hopper.why_unfit(c, d, masked=True) is None], ids=str)
def test_gpu_per_key_masks_match_float64(d, config):
    for name, (q, k, v), causal, mask in masked_cases(d):
        out = run(q, k, v, causal, config, mask)
        err = (out.double() - reference(q, k, v, causal, mask)).abs().max().item()
        assert err <= 4e-3, f"{name}: max error {err:.2e} (tolerance 4e-3)"


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="needs an sm_90 GPU and Gluon")
def test_gpu_attention_with_a_padding_mask_picks_it_and_matches_sdpa():
    q, k, v = (torch.randn(2, 4, 3000, 80, device="cuda", dtype=torch.float16) for _ in range(3))
    keep = torch.arange(3000, device="cuda")[None, :] < torch.tensor([3000, 2222], device="cuda")[:, None]
    mask = keep[:, None, None]
    plan = plan_tensors(q, k, v, mask, q, None)
    assert hopper_fits(plan, q, k, v, q)
    assert heuristic_config(3000, 3000, 80, torch.float16, mask_bytes=1, hopper=True).get("WS") == 1
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention(q, k, v, mask), ref, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="mask kind"):  # a plan with a mask launched without one
        hopper.launch(q, k, v, torch.empty_like(q), plan, 0.1, hopper_config().to_dict())


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="needs an sm_90 GPU and Gluon")
def test_gpu_nan_in_a_key_reaches_every_row_that_sees_it():
    q, k, v = (torch.randn(1, 2, 700, 128, device="cuda", dtype=torch.float16) for _ in range(3))
    k[0, 1, 400, 5] = float("nan")
    out = run(q, k, v, "top_left", hopper_config())
    assert out[0, 1, 400:].isnan().all() and not out[0, 1, :400].isnan().any() and not out[0, 0].isnan().any()


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="needs an sm_90 GPU and Gluon")
@pytest.mark.parametrize("config", [hopper_config(), hopper_config(128, 2, False)], ids=str)
def test_gpu_nan_in_a_padding_mask_reaches_every_row(config):
    """A NaN bias makes its key block mixed (neither live nor dead): the rows that see it are NaN,
    as in torch; the other batch's rows are not."""
    q, k, v = (torch.randn(2, 2, 700, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    bias = torch.zeros(2, 1, 1, 700, device="cuda")
    bias[0, ..., 300] = float("nan")
    out = run(q, k, v, None, config, bias)
    assert out[0].isnan().all() and not out[1].isnan().any()


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="needs an sm_90 GPU and Gluon")
def test_gpu_attention_picks_it_and_matches_sdpa():
    q, k, v = (torch.randn(2, 4, 4096, 128, device="cuda", dtype=torch.float16) for _ in range(3))
    assert heuristic_config(4096, 4096, 128, torch.float16, hopper=True).get("WS") == 1
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(attention(q, k, v, causal="top_left"), ref, rtol=1e-2, atol=1e-2)
