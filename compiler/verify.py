"""Checking a launch plan read from an engine file before anything is built from it.

An engine file's header is an input: it may be corrupted, edited, or written by someone else. The
checksums catch corruption; this module catches a header that is well formed JSON with a valid
checksum but does not describe a plan this trident would build:

- every kernel's source is regenerated from its spec (compiler/codegen/spec.py) and must equal the
  stored one, with the same arguments; so no stored code runs that this compiler did not write;
- each value's layout is typed and ranged (rank, non-negative sizes and strides) and agrees with
  what the kernels were generated for, with the view ops that produce views, and with the output
  layouts torch gives the ops that run through torch;
- each kernel's index checks are the ones its spec's gathers need;
- each launch config passes its template's constraints (compiler/autotune/constraints.py, the
  check every tuning candidate passes);
- every step reads values that exist by then, every value is produced once, and the weights
  match their layouts.

Any failure is an EngineFileError naming the field.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

from trident.compiler.autotune.constraints import config_error
from trident.compiler.autotune.tuner import problem_of
from trident.compiler.codegen import render
from trident.compiler.codegen.dynamic_kernel import grid_of
from trident.compiler.codegen.program import (index_checks, same_elements, torch_output_layouts,
                                              view_layouts)
from trident.compiler.codegen.spec import MAX_ELEMENTS, parse
from trident.compiler.errors import EngineFileError, TridentError
from trident.compiler.ir import Graph, TensorType
from trident.compiler.ir.plan import KernelStep, Layout, Plan
from trident.compiler.ir.shapes import Poly, instantiate, variable_names
from trident.compiler.ops import OPS
from trident.compiler.types import SUPPORTED_DTYPES

MAX_RANK = 8


def _bad(where: str, what: str) -> EngineFileError:
    return EngineFileError(f"engine file: {where}: {what}")


def check_layout(lay: Layout, where: str) -> None:
    if lay.dtype not in SUPPORTED_DTYPES:
        raise _bad(where, f"dtype {lay.dtype} is not one trident supports")
    if len(lay.shape) > MAX_RANK or len(lay.strides) != len(lay.shape):
        raise _bad(where, f"shape {list(lay.shape)} and strides {list(lay.strides)} should have "
                          f"one entry per dim (rank <= {MAX_RANK})")
    if any(d < 0 for d in lay.shape) or any(s < 0 for s in lay.strides) or lay.offset < 0:
        raise _bad(where, "sizes, strides and offset must be >= 0")
    if math.prod(lay.shape) > MAX_ELEMENTS or \
            sum((d - 1) * s for d, s in zip(lay.shape, lay.strides) if d) + lay.offset > MAX_ELEMENTS:
        raise _bad(where, f"spans more than {MAX_ELEMENTS} elements")


def _same(a: Layout, b: Layout) -> bool:
    return (tuple(a.shape), tuple(a.strides), a.dtype, a.offset) == (tuple(b.shape), tuple(b.strides),
                                                                      b.dtype, b.offset)


def _describe(lay: Layout) -> str:
    return f"{str(lay.dtype).replace('torch.', '')}{list(lay.shape)} strides {list(lay.strides)}"


# ------------------------------------------------------------------------ data flow ----
def check_flow(plan: Plan) -> None:
    """Names unique, every read value defined before, every written value written once."""
    for key in ("inputs", "outputs"):
        values = getattr(plan, key)
        if len(set(values)) != len(values):
            raise _bad(f"plan.{key}", "names a value twice")
    if not plan.outputs:
        raise _bad("plan.outputs", "is empty")
    defined = set(plan.inputs) | set(plan.constants)
    if set(plan.inputs) & set(plan.constants):
        raise _bad("plan.inputs", "names a weight")
    for k, step in enumerate(plan.steps):
        where = f"plan.steps[{k}]"
        missing = [v for v in step.inputs if v not in defined]
        if missing:
            raise _bad(where, f"reads {missing[:3]} before any step writes them")
        if not step.outputs or len(set(step.outputs)) != len(step.outputs):
            raise _bad(f"{where}.outputs", "should name distinct values")
        again = [v for v in step.outputs if v in defined]
        if again:
            raise _bad(f"{where}.outputs", f"writes {again[:3]}, already defined")
        defined.update(step.outputs)
    absent = [v for v in plan.outputs if v not in defined]
    if absent:
        raise _bad("plan.outputs", f"{absent[:3]} are never written")
    unlaid = sorted(v for v in defined if v not in plan.layouts)
    if unlaid:
        raise _bad("plan.layouts", f"no layout for {unlaid[:3]}")
    for name, bound in plan.index_bounds.items():
        if name not in plan.inputs or not 1 <= bound <= MAX_ELEMENTS:
            raise _bad(f"plan.index_bounds.{name}", "should bound an input by a positive size")


def check_weights(plan: Plan) -> None:
    for name, tensor in plan.constants.items():
        lay = plan.layouts.get(name)
        if lay is None:
            raise _bad(f"weights.{name}", "has no layout in plan.layouts")
        if tuple(tensor.shape) != tuple(lay.shape) or tensor.dtype != lay.dtype:
            raise _bad(f"weights.{name}", f"is {str(tensor.dtype).replace('torch.', '')}"
                                          f"{list(tensor.shape)}, its layout is {_describe(lay)}")


# -------------------------------------------------------------------------- kernels ----
def check_kernel(step: KernelStep, plan: Plan, where: str, force: bool) -> KernelStep:
    """The step with its source regenerated from its spec; EngineFileError unless it matches."""
    if not isinstance(step.spec, dict):
        raise _bad(f"{where}.spec", "is missing: this trident regenerates every kernel from its spec")
    kernel = render(step.spec, f"{where}.spec")
    if kernel.name != step.name:
        raise _bad(f"{where}.name", f"{step.name!r}, its spec generates kernel {kernel.name!r}")
    if tuple(kernel.args) != step.args:
        raise _bad(f"{where}.args", f"{list(step.args)}, its kernel takes {kernel.args}")
    if step.sizes != kernel.sizes:
        raise _bad(f"{where}.sizes", f"{list(step.sizes)}, its spec's kernel takes {list(kernel.sizes)}")
    spec = step.spec["probes"][0] if "probes" in step.spec else step.spec
    if list(step.outputs) != spec["outputs"]:
        raise _bad(f"{where}.outputs", f"{list(step.outputs)}, its spec writes {spec['outputs']}")
    _check_spec_layouts(kernel, plan, where)
    _check_index_checks(step, spec, plan, where)
    if kernel.source != step.source:
        if not force:
            raise _bad(f"{where}.source", f"kernel {step.name} is not the kernel its spec generates "
                                          f"with this trident (edited, or written by another "
                                          f"version: rebuild the engine)")
        warnings.warn(f"trident: kernel {step.name} of this engine file differs from the one this "
                      f"trident generates for it; running this trident's (force=True)", stacklevel=4)
    why = config_error(step.config, problem_of(kernel.source), kernel.config)
    if why:
        raise _bad(f"{where}.config", f"{step.config} cannot launch kernel {step.name}: {why}")
    return dataclasses.replace(step, source=kernel.source)


def _check_index_checks(step: KernelStep, spec: dict, plan: Plan, where: str) -> None:
    """The engine checks the indices of every gather the kernel computes: a file may not drop
    one, nor point one at a dim its data does not have."""
    want = index_checks(parse(spec, f"{where}.spec")[1].nodes, plan.inputs)
    if step.index_checks != want:
        raise _bad(f"{where}.index_checks", f"{[c.indices for c in step.index_checks]}, its kernel "
                                            f"gathers through {[c.indices for c in want]}")
    for c in want:
        if not 0 <= c.axis < len(plan.layouts[c.data].shape):
            raise _bad(f"{where}.index_checks", f"axis {c.axis} of {c.data!r}, which has "
                                                f"{len(plan.layouts[c.data].shape)} dims")


def _check_spec_layouts(kernel, plan: Plan, where: str) -> None:
    """The layouts the source was generated for are the plan's (packed weights included)."""
    spec = kernel.spec["probes"][0] if "probes" in kernel.spec else kernel.spec
    layouts = {v: lay for v, lay in (_spec_layouts(spec)).items() if v in kernel.args}
    layouts.update({name: lay for name, (_, lay) in kernel.packed.items()})
    for value in kernel.args:
        mine, theirs = layouts.get(value), plan.layouts.get(value)
        if mine is None or theirs is None or not _same(mine, theirs):
            raise _bad(f"plan.layouts.{value}", f"{_describe(theirs) if theirs else 'missing'}; "
                                                f"{where} was generated for "
                                                f"{_describe(mine) if mine else 'another value'}")


def _spec_layouts(spec: dict) -> dict[str, Layout]:
    return parse(spec, "spec")[3]


# ----------------------------------------------------------------- views and torch ----
def check_view(step, plan: Plan, where: str) -> None:
    node = step.node
    if node is None or tuple(node.inputs) != step.inputs or tuple(node.outputs) != step.outputs:
        raise _bad(f"{where}.node", "should be the view op, reading and writing the step's values")
    if len(step.inputs) != 1:
        raise _bad(f"{where}.inputs", "a view reads one value")
    try:
        made = view_layouts(node, plan.layouts[step.inputs[0]])
    except (TridentError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise _bad(f"{where}.node", f"not a view ({type(e).__name__}: {e})") from None
    if made is None or len(made) != len(step.outputs):
        raise _bad(f"{where}.node", f"{node.op} is not a view of {step.inputs[0]}")
    for value, lay in zip(step.outputs, made):
        if not same_elements(lay, plan.layouts[value]):
            raise _bad(f"plan.layouts.{value}", f"{_describe(plan.layouts[value])}; the view "
                                                f"{node.op} gives {_describe(lay)}")


def check_torch(step, plan: Plan, where: str) -> None:
    node = step.node
    if node.op not in OPS:
        raise _bad(f"{where}.node.op", f"unknown op {node.op!r}")
    types = {v: TensorType(tuple(plan.layouts[v].shape), plan.layouts[v].dtype)
             for v in (*node.inputs, *node.outputs)}
    graph = Graph([node], list(node.inputs), list(node.outputs), types, {}, "check")
    try:
        made = torch_output_layouts(node, plan.layouts, graph)
    except Exception as e:  # noqa: BLE001 - an op's meta kernel on attributes from a file
        raise _bad(f"{where}.node", f"{node.op} cannot run on these inputs "
                                    f"({type(e).__name__}: {str(e)[:200]})") from None
    for value, lay in zip(node.outputs, made):
        theirs = plan.layouts[value]
        if (tuple(lay.shape), lay.dtype) != (tuple(theirs.shape), theirs.dtype) or \
                any(s > 1 and a != b for s, a, b in zip(lay.shape, lay.strides, theirs.strides)):
            raise _bad(f"plan.layouts.{value}", f"{_describe(theirs)}; {node.op} gives {_describe(lay)}")


# ------------------------------------------------------------------------- dynamic ----
MAX_SIZE = 1 << 20


def check_dynamic(plan: Plan) -> None:
    """A profiled plan's templates: over its symbols, typed, and giving the plan at its build sizes
    and well-formed layouts at the profile's min, max and corners."""
    info = plan.dynamic
    if info is None:
        return
    symbols = info.profile.symbols
    for s, r in symbols.items():
        if r.max > MAX_SIZE or r.min < 0:
            raise _bad(f"plan.dynamic.symbols.{s}", f"should lie in [0, {MAX_SIZE}]")
    if set(info.build_sizes) != set(symbols) or \
            any(info.build_sizes[s] not in r for s, r in symbols.items()):
        raise _bad("plan.dynamic.build_sizes", "should give each symbol a size in its range")
    varying = [s for s, r in symbols.items() if not r.is_static]
    if not varying or info.variables != variable_names(varying):
        raise _bad("plan.dynamic.variables", f"should be {variable_names(varying)} (the kernels' "
                                             f"size parameters of the varying symbols)")
    for key in ("layouts", "inputs"):
        for value in getattr(info, key):
            if value not in (plan.layouts if key == "layouts" else plan.inputs):
                raise _bad(f"plan.dynamic.{key}.{value}", "is not a value of the plan"
                           if key == "layouts" else "is not an input")
            _check_symbols(getattr(info, key)[value], symbols, f"plan.dynamic.{key}.{value}")
    for k, template in info.node_attrs.items():
        if not 0 <= k < len(plan.steps) or plan.steps[k].kind != "torch":
            raise _bad(f"plan.dynamic.node_attrs.{k}", "is not a torch step")
        _check_symbols(template, symbols, f"plan.dynamic.node_attrs.{k}")
    corners = info.profile.corners()
    for sizes in [info.build_sizes] + corners[:16]:
        _check_at(plan, sizes)


def _check_symbols(template, symbols, where: str) -> None:
    if isinstance(template, Poly):
        unknown = [s for s in template.symbols if s not in symbols]
        if unknown:
            raise _bad(where, f"uses {unknown}, not symbols of the profile")
    elif isinstance(template, (tuple, list)):
        for t in template:
            _check_symbols(t, symbols, where)
    elif isinstance(template, dict):
        for t in template.values():
            _check_symbols(t, symbols, where)


def _sizes_text(sizes: dict) -> str:
    return ", ".join(f"{s}={v}" for s, v in sizes.items())


def _check_at(plan: Plan, sizes: dict[str, int]) -> None:
    info = plan.dynamic
    build = sizes == info.build_sizes
    try:
        layouts = info.layouts_at(sizes, plan.layouts)
        shapes = {n: info.input_shape(n, sizes) for n in info.inputs}
        attrs = {k: instantiate(t, sizes) for k, t in info.node_attrs.items()}
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise _bad("plan.dynamic", f"its templates do not instantiate at {_sizes_text(sizes)} "
                                   f"({e})") from None
    finally:
        info._cache.clear()
    for value, lay in layouts.items():
        if not isinstance(lay.shape, tuple) or \
                not all(type(d) is int for d in (*lay.shape, *lay.strides, lay.offset)):
            raise _bad(f"plan.dynamic.layouts.{value}", f"is not a layout at {_sizes_text(sizes)}")
        check_layout(lay, f"plan.dynamic.layouts.{value} at {_sizes_text(sizes)}")
        if build and not _same(lay, plan.layouts[value]):
            raise _bad(f"plan.dynamic.layouts.{value}", "differs from plan.layouts at the build sizes")
    for name, shape in shapes.items():
        if tuple(shape) != tuple(layouts[name].shape):
            raise _bad(f"plan.dynamic.inputs.{name}", f"shape {list(shape)} at {_sizes_text(sizes)}, "
                                                      f"its layout has {list(layouts[name].shape)}")
    for k, value in attrs.items():
        if not isinstance(value, dict) or (build and value != plan.steps[k].node.attrs):
            raise _bad(f"plan.dynamic.node_attrs.{k}", "does not give the step's attributes")


def _check_probe_layouts(step: KernelStep, plan: Plan, where: str) -> None:
    """A shape-generic kernel's probes were generated at the plan's build sizes and along its
    profile, for the layouts the plan's templates give there."""
    info = plan.dynamic
    if info is None:
        raise _bad(f"{where}.spec", "a shape-generic kernel in a plan without a profile")
    grid, ranges = grid_of(step.spec, f"{where}.spec")
    for s in grid.symbols:
        if s not in info.profile.symbols or ranges.symbols[s] != info.profile.symbols[s]:
            raise _bad(f"{where}.spec.ranges.{s}", "should be the range of the plan's profile")
    base = grid.sizes(grid.points()[0])
    if any(info.build_sizes[s] != v for s, v in base.items()) or \
            set(grid.symbols) != {s for s, r in info.profile.symbols.items() if not r.is_static}:
        raise _bad(f"{where}.spec.axes", "should start at the plan's build sizes, one axis per "
                                         "varying symbol")
    for k, (point, probe) in enumerate(zip(grid.points(), step.spec["probes"])):
        sizes = {**info.build_sizes, **grid.sizes(point)}
        at = info.layouts_at(sizes, plan.layouts)
        for value, lay in _spec_layouts(probe).items():
            if value in step.args and value not in plan.constants and \
                    (value not in at or not _same(lay, at[value])):
                raise _bad(f"plan.dynamic.layouts.{value}", f"{where}.spec.probes[{k}] was "
                                                            f"generated for {_describe(lay)} at "
                                                            f"{_sizes_text(sizes)}")
    info._cache.clear()


# ---------------------------------------------------------------------------- plan ----
def verify_plan(plan: Plan, force: bool = False) -> Plan:
    """The plan, each kernel's source regenerated by this trident; EngineFileError naming the
    field when the plan is not one trident builds (see the module's docstring)."""
    for value, lay in plan.layouts.items():
        check_layout(lay, f"plan.layouts.{value}")
    check_flow(plan)
    check_weights(plan)
    check_dynamic(plan)
    steps = []
    for k, step in enumerate(plan.steps):
        where = f"plan.steps[{k}]"
        if step.kind == "kernel":
            step = check_kernel(step, plan, where, force)
            if "probes" in step.spec:
                _check_probe_layouts(step, plan, where)
        elif step.kind == "view":
            check_view(step, plan, where)
        else:
            check_torch(step, plan, where)
        steps.append(step)
    if plan.dynamic is None and any(s.kind == "kernel" and s.sizes for s in steps):
        raise _bad("plan.dynamic", "is missing, but kernels are shape-generic")
    return dataclasses.replace(plan, steps=steps)


__all__ = ["check_layout", "verify_plan"]
