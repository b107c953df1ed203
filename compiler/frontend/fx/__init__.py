"""torch.fx frontend: an nn.Module, a torch.fx GraphModule or a torch.export ExportedProgram in,
an IR Graph out.

Four kinds of fx graph reach this importer, and one table of small converters serves them all:
- `torch.fx.symbolic_trace`: call_module leaves (nn.Conv2d, nn.Linear ...), torch.* / F.* /
  operator.* functions, Tensor methods, get_attr for parameters;
- `torch.export` (an nn.Module is exported, then decomposed to the core ATen set): aten overloads,
  parameters and buffers as placeholders named by the graph signature;
- `ExportedProgram.module()`: the same aten ops with get_attr parameters;
- dynamo (what a torch.compile backend receives): torch functions and methods, with parameters and
  buffers lifted to placeholders whose example inputs are the real tensors.

While importing, every fx node maps to a Python value: a `Val` (a tensor that is only known at run
time, i.e. an IR value), a torch.Tensor (a constant: parameter, buffer, or the result of folding),
or a plain Python object (an int from `x.size(1)`, a shape, a list of results). A node whose inputs
are all known at import time is folded instead of emitted, so shape arithmetic, position ids and
transposed weights never reach the IR.

The package: context.py (Val, Missing, Ctx), registry.py (the converter tables and what they
answer), helpers.py and axes.py (dim arguments); the converters, a module per op family
(elementwise, arithmetic, linear, normalization, attention, reductions, pooling, movement,
indexing, sorting, scans, complex, spectral, strided, triangular, shapes, and modules for call_module leaves), with decompose.py and
math_ops.py for the ops written as others and aten.py for calls imported through torch's own
decomposition; importer.py (the loop). The entry points are here.
"""
from __future__ import annotations

import inspect
import warnings
from typing import Sequence

import torch
import torch.fx
import torch.nn as nn
from torch.utils._pytree import tree_flatten

from trident.compiler.errors import UnsupportedError
from trident.compiler.fx_mutation import RUN_TIME_INPUT, make_writes_explicit
# The family modules register their converters on import.
from trident.compiler.frontend.fx import (arithmetic, attention, elementwise,  # noqa: F401
                                          indexing, linear, modules, movement, normalization,
                                          pooling, reductions, scans, shapes, spectral, strided,
                                          triangular)
from trident.compiler.frontend.fx.context import on_one_device
from trident.compiler.frontend.fx.importer import _Importer
from trident.compiler.frontend.fx.registry import (FUNCTIONS, _register_in_place_methods,
                                                   supported_fx_target, supported_targets,
                                                   target_label)
from trident.compiler.ir import Graph

aten = torch.ops.aten

__all__ = ["import_fx", "supported_fx_target", "user_input_indices", "supported_targets",
           "target_label", "on_one_device"]

_register_in_place_methods()


# ========================================================================== entry points ====
def _is_weight(node: torch.fx.Node, example) -> bool:
    """Is this tensor placeholder part of the model rather than a user input?

    Dynamo lifts module parameters and buffers to placeholders and marks them static; under
    dynamic shapes it also passes Python float attributes (eps, momentum) as 0-d float64 tensors,
    the only tensor placeholders it records no tensor_dict for.
    """
    if node.meta.get(RUN_TIME_INPUT):  # (state the graph writes, a value another partition computed)
        return False
    if isinstance(example, nn.Parameter):
        return True
    if node.meta.get("tensor_dict", {}).get("_dynamo_static_input_type") is not None:
        return True
    return (isinstance(node.meta.get("example_value"), torch.Tensor) and "tensor_dict" not in node.meta
            and example.dim() == 0)


def user_input_indices(gm: torch.fx.GraphModule, example_inputs: Sequence) -> list[int]:
    """Which example inputs import_fx keeps as graph inputs, in order.

    A dynamo graph lifts parameters and buffers to placeholders; import_fx makes those constants,
    so a torch.compile backend must call the engine with `[args[i] for i in these]` only. Other
    graphs keep every tensor input.
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    return [i for i, (n, x) in enumerate(zip(placeholders, example_inputs))
            if isinstance(x, torch.Tensor) and not _is_weight(n, x)]


def _import_graph_module(gm: torch.fx.GraphModule, example_inputs: Sequence, name: str) -> Graph:
    unexplicit = make_writes_explicit(gm)
    if unexplicit:
        node, why = unexplicit[0]
        raise UnsupportedError(f'fx node "{node.name}" ({target_label(node)}) {why}')
    imp = _Importer(name)
    keep = set(user_input_indices(gm, example_inputs))
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    values = []
    for i, (node, x) in enumerate(zip(placeholders, example_inputs)):
        values.append(imp.input(node.name, x) if i in keep or not isinstance(x, torch.Tensor)
                      else imp.constant(x, node.name))
    return imp.finish(imp.run(gm, values))


def _import_exported(ep: torch.export.ExportedProgram, example_inputs: Sequence,
                     name: str) -> Graph:
    from torch.export.graph_signature import InputKind, OutputKind

    if _needs_decomposition(ep):
        ep = _decompose(ep)  # to the core ATen set the table covers
    imp = _Importer(name)
    user = iter(tree_flatten(list(example_inputs))[0])
    placeholders = [n for n in ep.graph_module.graph.nodes if n.op == "placeholder"]
    values = []
    for spec, node in zip(ep.graph_signature.input_specs, placeholders):
        if spec.kind == InputKind.USER_INPUT:
            values.append(imp.input(node.name, next(user)))
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            t = ep.state_dict.get(spec.target)
            t = ep.constants[spec.target] if t is None else t
            values.append(imp.constant(t, spec.target))
        else:
            raise UnsupportedError(f'exported input "{node.name}" of kind {spec.kind.name}')
    results = imp.run(ep.graph_module, values)
    # Buffer mutations (none in eval mode) come before the user's outputs; keep the outputs.
    return imp.finish([v for v, spec in zip(results, ep.graph_signature.output_specs)
                       if spec.kind == OutputKind.USER_OUTPUT])


def _needs_decomposition(ep: torch.export.ExportedProgram) -> bool:
    """Decomposing costs seconds on a big model; skip it when every aten op has a converter."""
    return any(isinstance(n.target, torch._ops.OpOverload) and n.target not in FUNCTIONS
               for n in ep.graph_module.graph.nodes if n.op == "call_function")


# Kept whole when decomposing: attention becomes one IR attention node (one fused kernel), where
# core ATen's decomposition would spell it out in a dozen ops; F.unfold becomes slices and F.fold a
# sum of shifted planes (fx/movement.py, passes/col2im.py), where it would write gathers and an
# index_put that adds every window's values in one ScatterND.
_KEEP_UNDECOMPOSED = (aten.scaled_dot_product_attention.default, aten.im2col.default, aten.col2im.default)


def _decompose(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    table = torch.export.default_decompositions()
    for op in _KEEP_UNDECOMPOSED:
        table.pop(op, None)
    return ep.run_decompositions(table)


def _symbolic_trace(module: nn.Module, example_inputs: tuple) -> torch.fx.GraphModule:
    """torch.fx.symbolic_trace, with forward's unsupplied optional arguments fixed to defaults."""
    params = list(inspect.signature(module.forward).parameters.values())[len(example_inputs):]
    concrete = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return torch.fx.symbolic_trace(module, concrete_args=concrete or None)


def _export(module: nn.Module, example_inputs: tuple):
    """torch.export, decomposed to the core ATen set."""
    with warnings.catch_warnings():  # torch.export's internal pytree deprecation noise
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        return _decompose(torch.export.export(module, example_inputs))


def _import_module(module: nn.Module, example_inputs: tuple, name: str) -> Graph:
    """Trace a module: symbolic_trace first (a fraction of a second even for ResNet-50), and
    torch.export (seconds, but it sees through data-dependent Python) when tracing or importing
    the traced graph fails."""
    try:
        return _import_graph_module(_symbolic_trace(module, example_inputs), example_inputs, name)
    except Exception as trace_error:  # noqa: BLE001  (tracing fails in many ways on user code)
        try:
            exported = _export(module, example_inputs)
        except Exception as export_error:  # noqa: BLE001
            raise UnsupportedError(f"cannot trace {name}: symbolic_trace failed ({trace_error}); "
                                   f"torch.export failed ({export_error})") from None
        return _import_exported(exported, example_inputs, name)


def _check_eval_mode(module: nn.Module) -> None:
    """BatchNorm and dropout compute something else in training mode; say so up front rather
    than fail later on the ops training mode traces to."""
    stateful = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    training = [name or type(module).__name__ for name, m in module.named_modules()
                if m.training and isinstance(m, stateful)]
    if training:
        raise UnsupportedError(f"{type(module).__name__}: {', '.join(training[:3])}"
                               f"{' ...' if len(training) > 3 else ''} in training mode "
                               "(call model.eval() before compiling)")


def import_fx(gm_or_module, example_inputs: Sequence) -> Graph:
    """Import an nn.Module, fx.GraphModule or ExportedProgram as an IR Graph.

    `example_inputs` fix every shape (the IR here is static): for a dynamo graph they are what
    the backend was handed (parameters included); otherwise the model's positional inputs.
    Graph inputs are named after the placeholders.
    """
    example_inputs = tuple(example_inputs)
    model = gm_or_module
    name = type(model).__name__
    if isinstance(model, nn.Module) and not isinstance(model, torch.fx.GraphModule):
        _check_eval_mode(model)
        return _import_module(model, example_inputs, name)
    if isinstance(model, torch.export.ExportedProgram):
        graph = _import_exported(model, example_inputs, name)
    elif isinstance(model, torch.fx.GraphModule):
        graph = _import_graph_module(model, example_inputs, name)
    else:
        raise UnsupportedError(f"import_fx takes an nn.Module, fx.GraphModule or "
                               f"ExportedProgram, not {type(gm_or_module).__name__}")
    return graph
