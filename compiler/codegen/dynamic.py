"""Dynamic batch: one engine for every batch size in an optimization profile (min, opt, max).

The kernels take the batch as a run-time argument `nb`. Rather than teach every generator to
track the batch symbolically, the program is generated at three batch sizes (the "probes": opt,
opt + 1 and max, all >= 2 so no batch dim degenerates to size 1) and compared:
- the programs must agree in structure: the same steps, values, kernels and constants;
- every integer that differs between them (a mask bound such as `xoffs < 8192`, a grid size, the
  M of a matmul or conv tile, a stride or a reshape's target shape) must be an affine function
  a * batch + c of the batch, checked on all three probes;
- in each kernel's source those integers become expressions of `nb`, which is added as the
  kernel's first (never specialized) argument and a `nb=` keyword of `launch()`; the launch
  config (block sizes, warps) is the one chosen at the opt batch;
- the layouts, input shapes and torch-fallback attributes become affine templates (the plan's
  BatchInfo, compiler/ir/plan.py) the engine instantiates for each batch it sees
  (runtime/engine.py), with one CUDA graph per batch size.

Anything that is not affine in the batch (a reduction over the batch, a batch x batch matrix, a
constant with a batch dim) is refused at build time with an UnsupportedError saying what varies.
The batch is dim 0 of the inputs given as examples (ONNX: the models' symbolic first dim).
"""
from __future__ import annotations

import dataclasses
import io
import math
import re
import tokenize
from typing import Any, Callable, Sequence

import torch

from trident.compiler.codegen.program import Layout, Program
from trident.compiler.errors import UnsupportedError
from trident.compiler.ir.plan import BatchInfo
from trident.compiler.ir.shapes import Affine, BatchProfile, is_constant

INT32_MAX = 2**31 - 1


# ----------------------------------------------------------------------------- fitting ----
def _same_leaf(values: Sequence) -> bool:
    first = values[0]
    for v in values[1:]:
        if type(v) is not type(first):
            return False
        if isinstance(v, float) and math.isnan(v) and math.isnan(first):
            continue
        if isinstance(v, torch.Tensor):
            if not (v.shape == first.shape and v.dtype == first.dtype and torch.equal(v, first)):
                return False
            continue
        if v != first:
            return False
    return True


def fit(samples: Sequence[tuple[int, Any]], where: str) -> Any:
    """A template reproducing each (batch, value) sample: the value itself where all agree,
    Affine where integers vary affinely with the batch; UnsupportedError otherwise."""
    values = [v for _, v in samples]
    first = values[0]
    if isinstance(first, (tuple, list)):
        if not all(type(v) is type(first) and len(v) == len(first) for v in values):
            raise _varies(where, samples)
        parts = [fit([(b, v[k]) for b, v in samples], f"{where}[{k}]") for k in range(len(first))]
        return type(first)(parts)
    if isinstance(first, dict):
        if not all(isinstance(v, dict) and v.keys() == first.keys() for v in values):
            raise _varies(where, samples)
        return {k: fit([(b, v[k]) for b, v in samples], f"{where}.{k}") for k in first}
    if isinstance(first, int) and not isinstance(first, bool) and \
            all(type(v) is int for v in values):
        if len(set(values)) == 1:
            return first
        (b0, v0), (b1, v1) = samples[0], samples[1]
        if (v1 - v0) % (b1 - b0):
            raise _varies(where, samples)
        a = (v1 - v0) // (b1 - b0)
        affine = Affine(a, v0 - a * b0)
        if any(affine.at(b) != v for b, v in samples):
            raise _varies(where, samples)
        return affine
    if not _same_leaf(values):
        raise _varies(where, samples)
    return first


def _varies(where: str, samples) -> UnsupportedError:
    seen = ", ".join(f"{v!r} at batch {b}" for b, v in samples)
    return UnsupportedError(f"dynamic batch: {where} depends on the batch in a way trident cannot "
                            f"express as a run-time size ({seen}); build for a fixed batch "
                            f"(batch=N) instead")


# --------------------------------------------------------------------- kernel source ----
_BUILD_BATCH_LITERALS = ("CONFIG", "PROBLEM")  # module-level literals kept at the build batch
_KERNEL_DEF = "@triton.jit\ndef kernel("
_GRID_DEF = "def grid(meta):"
_LAUNCH_DEF = re.compile(r"^def launch\((.*)\):$", re.MULTILINE)
_LAUNCH_CALL = "kernel[grid]("


def _tokens(source: str) -> list[tokenize.TokenInfo]:
    return list(tokenize.generate_tokens(io.StringIO(source).readline))


def generic_source(sources: Sequence[str], batches: Sequence[int], name: str, build_batch: int,
                   max_batch: int) -> str | None:
    """The kernel source with its batch-dependent integers written in terms of `nb`, or None if
    no integer depends on the batch. sources[k] was generated at batches[k]; sources[0] (the
    build batch's) provides the comments, the launch CONFIG and the PROBLEM the tuner reads."""
    streams = [_tokens(s) for s in sources]
    base = streams[0]
    if any(len(t) != len(base) for t in streams):
        raise UnsupportedError(f"dynamic batch: kernel {name} has a different structure at batch "
                               f"sizes {list(batches)}; build for a fixed batch (batch=N)")
    edits: list[tuple[tuple[int, int], tuple[int, int], str]] = []
    in_config = False
    config_line = None
    for k, tok in enumerate(base):
        others = [t[k] for t in streams]
        if tok.type == tokenize.NAME and tok.string in _BUILD_BATCH_LITERALS and tok.start[1] == 0:
            in_config = True
            config_line = config_line or tok.start[0]
        if tok.type in (tokenize.NEWLINE,) and in_config:
            in_config = False
        if any(o.type != tok.type for o in others):
            raise UnsupportedError(f"dynamic batch: kernel {name} has a different structure at "
                                   f"batch sizes {list(batches)} (line {tok.start[0]})")
        if all(o.string == tok.string for o in others) or tok.type == tokenize.COMMENT or in_config:
            continue
        if tok.type != tokenize.NUMBER:
            raise UnsupportedError(f"dynamic batch: kernel {name} has a different structure at "
                                   f"batch sizes {list(batches)} ({tok.string!r} on line "
                                   f"{tok.start[0]})")
        try:
            values = [int(o.string, 0) for o in others]
        except ValueError:
            raise _varies(f"kernel {name}, line {tok.start[0]}",
                          list(zip(batches, [o.string for o in others]))) from None
        template = fit(list(zip(batches, values)), f"kernel {name}, line {tok.start[0]}")
        in_kernel = config_line is None  # numbers before CONFIG are inside the @triton.jit code
        worst = max(abs(template.at(1)), abs(template.at(max_batch)))
        var = "nb.to(tl.int64)" if in_kernel and worst > INT32_MAX else "nb"
        edits.append((tok.start, tok.end, template.expr(var)))
    if not edits:
        return None
    lines = sources[0].splitlines(keepends=True)
    for (row, col), (erow, ecol), text in reversed(edits):
        assert row == erow
        line = lines[row - 1]
        lines[row - 1] = line[:col] + text + line[ecol:]
    out = "".join(lines)
    out = _add_batch_argument(out, name, build_batch)
    first_newline = out.index("\n") + 1
    return (out[:first_newline] + f"# batch-generic: `nb` is the run-time batch (generated at "
            f"batch {build_batch})\n" + out[first_newline:])


def _add_batch_argument(source: str, name: str, build_batch: int) -> str:
    def once(text: str, old: str, new: str) -> str:
        if text.count(old) != 1:
            raise UnsupportedError(f"dynamic batch: cannot add the batch argument to kernel "
                                   f"{name} (expected one {old!r} in its source)")
        return text.replace(old, new)

    source = once(source, _KERNEL_DEF, '@triton.jit(do_not_specialize=["nb"])\ndef kernel(nb, ')
    source = once(source, _GRID_DEF, f"def grid(meta, nb={build_batch}):")
    source = once(source, _LAUNCH_CALL, "kernel[lambda meta: grid(meta, nb)](nb, ")
    source, n = _LAUNCH_DEF.subn(lambda m: f"def launch({m.group(1)}, nb={build_batch}):", source)
    if n != 1:
        raise UnsupportedError(f"dynamic batch: cannot add the batch argument to kernel {name} "
                               f"(expected one `def launch(...)`)")
    # The tile function (and a horizontal kernel's members) compute with the batch too: hand it down.
    source = _MEMBER_DEF.sub(r"def \1(nb, ", source)
    return _MEMBER_CALL.sub(r"\1(nb, ", source)


_MEMBER_DEF = re.compile(r"def (member\d+|one_tile)\(")
_MEMBER_CALL = re.compile(r"(?<!def )\b(member\d+|one_tile)\(")


# ---------------------------------------------------------------------- the program ----
def _layout_tuple(lay: Layout):
    return (tuple(lay.shape), tuple(lay.strides), lay.offset)


def _check_same(programs: dict[int, Program]) -> None:
    batches = list(programs)
    ref = programs[batches[0]]

    def refuse(what: str) -> UnsupportedError:
        return UnsupportedError(f"dynamic batch: the program differs between batch sizes "
                                f"{batches}: {what}; build for a fixed batch (batch=N)")

    for b, p in programs.items():
        if p.graph.inputs != ref.graph.inputs or p.graph.outputs != ref.graph.outputs:
            raise refuse(f"inputs/outputs {p.graph.inputs} -> {p.graph.outputs} at batch {b}")
        if len(p.steps) != len(ref.steps):
            raise refuse(f"{len(p.steps)} steps at batch {b}, {len(ref.steps)} at {batches[0]}")
        for k, (s, r) in enumerate(zip(p.steps, ref.steps)):
            if (s.kind, s.inputs, s.outputs) != (r.kind, r.inputs, r.outputs):
                raise refuse(f"step {k} is {s.kind} {s.inputs} -> {s.outputs} at batch {b}")
            if s.kind == "kernel" and (s.kernel.name, s.kernel.args) != (r.kernel.name, r.kernel.args):
                raise refuse(f"step {k} runs kernel {s.kernel.name} at batch {b}")
            if s.kind == "torch" and s.group.nodes[0].op != r.group.nodes[0].op:
                raise refuse(f"step {k} runs {s.group.nodes[0].op} at batch {b}")
        if p.layouts.keys() != ref.layouts.keys():
            raise refuse(f"values {sorted(p.layouts.keys() ^ ref.layouts.keys())[:5]}")
        if p.constants.keys() != ref.constants.keys():
            raise refuse(f"constants {sorted(p.constants.keys() ^ ref.constants.keys())[:5]}")
        for name, t in p.constants.items():
            r = ref.constants[name]
            if t.shape != r.shape or t.dtype != r.dtype or not torch.equal(t, r):
                raise UnsupportedError(
                    f"dynamic batch: constant {name} depends on the batch ({tuple(r.shape)} at "
                    f"batch {batches[0]}, {tuple(t.shape)} at batch {b}); build for a fixed "
                    f"batch (batch=N)")


def make_dynamic(program: Program, profile: BatchProfile,
                 compile_at: Callable[[int], Program]) -> Program:
    """The batch-generic version of `program` (generated at profile.probes()[0]); compile_at(b)
    generates the same model at batch b (import, passes, fusion, codegen)."""
    batches = profile.probes()
    programs = {batches[0]: program}
    for b in batches[1:]:
        programs[b] = compile_at(b)
    _check_same(programs)
    samples = lambda get: [(b, get(p)) for b, p in programs.items()]  # noqa: E731
    layouts = {}
    for value, lay in program.layouts.items():
        if any(p.layouts[value].dtype != lay.dtype for p in programs.values()):
            raise UnsupportedError(f"dynamic batch: the dtype of {value} depends on the batch")
        layouts[value] = fit(samples(lambda p: _layout_tuple(p.layouts[value])),
                             f"the layout of {value}")
    inputs = {name: fit(samples(lambda p: tuple(p.graph.types[name].shape)),
                        f'the shape of input "{name}"') for name in program.graph.inputs}
    if all(is_constant(t) for t in inputs.values()):
        raise UnsupportedError(
            "dynamic batch: no input's shape changes with the batch (an ONNX model needs a "
            "symbolic first dim, e.g. torch.onnx.export(..., dynamic_axes={'x': {0: 'batch'}}))")
    node_attrs, steps = {}, []
    for k, step in enumerate(program.steps):
        if step.kind == "torch":
            node = step.group.nodes[0]
            node_attrs[k] = fit(samples(lambda p: p.steps[k].group.nodes[0].attrs),
                                f"the attributes of {node.name or node.op}")
        if step.kind == "kernel":
            source = generic_source([p.steps[k].kernel.source for p in programs.values()],
                                    batches, step.kernel.name, batches[0], profile.max)
            if source is not None:
                spec = {"batches": list(batches), "max_batch": profile.max,
                        "probes": [p.steps[k].kernel.spec for p in programs.values()]}
                step = dataclasses.replace(step, batched=True, kernel=dataclasses.replace(
                    step.kernel, source=source, spec=spec))
        steps.append(step)
    info = BatchInfo(profile, batches[0], layouts, inputs, node_attrs)
    return Program(program.graph, steps, program.layouts, program.constants, info)


__all__ = ["fit", "generic_source", "make_dynamic"]
