"""The converter tables (call_function targets, Tensor method names and call_module leaf types ->
converter), the `converts` / `converts_module` decorators that fill them, and what the tables
answer: supported_fx_target, target_label, supported_targets. The in-place Tensor methods
(add_, relu_ ...) are registered from their out-of-place forms once every converter module is
imported (the package's __init__ calls _register_in_place_methods)."""
from __future__ import annotations

import operator
import sys
from typing import Any, Callable

import torch
import torch.fx
import torch.nn as nn

from trident.compiler.frontend.fx.aten import traced_call
from trident.compiler.frontend.fx.context import Ctx, Val


# ============================================================================== tables ====
class _Targets(dict):
    """call_function targets -> converters. A library's own operator (transformers'
    grouped_mm_fallback) is keyed by its qualified name, "namespace::name": the operator object
    exists only once the library registers it, which may be after trident is imported. Its packet
    and every overload find that entry."""

    def get(self, target, default=None):
        if dict.__contains__(self, target):
            return dict.__getitem__(self, target)
        name = _operator_name(target) or _numpy_operator(target)
        return dict.get(self, name, default) if name else default

    def __contains__(self, target) -> bool:
        return self.get(target) is not None


# numpy operators whose results on arrays are torch's on tensors (true division is not: numpy
# divides integers into float64, torch into float32). Where numpy promotes mixed dtypes otherwise
# (an int64 array times 0.5 is float64 there), the node's recorded dtype disagrees with the
# converter's and the importer's check against it sends that node to torch.
_NUMPY_AS_TORCH = {operator.add, operator.sub, operator.mul, operator.mod, operator.floordiv,
                   operator.neg, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
                   operator.ge, operator.and_, operator.or_, operator.xor, operator.invert}


def _numpy_operator(target):
    """The `operator` function a dynamo wrapper of a numpy operator on tensors calls (`a % 3` of a
    tensor's .numpy(): Reformer's bucket arithmetic), where numpy's result is torch's; else None."""
    utils = sys.modules.get("torch._dynamo.utils")
    wrapper = getattr(utils, "numpy_operator_wrapper", None)
    if wrapper is None or not isinstance(target, wrapper):
        return None
    return target.op if target.op in _NUMPY_AS_TORCH else None


def _operator_name(target) -> str | None:
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name
    return None


FUNCTIONS: dict[Any, Callable] = _Targets()  # call_function targets: aten, torch.*, F.*, operator.*
METHODS: dict[str, Callable] = {}    # call_method names (Tensor methods)
MODULES: dict[type, Callable] = {}   # call_module leaf types (symbolic_trace); fn(cx, module, ...)


def converts(*targets):
    """Register one converter for call_function targets (objects) and method names (strings)."""
    def register(fn: Callable) -> Callable:
        for t in targets:
            if isinstance(t, str):
                METHODS[t] = fn
            else:
                FUNCTIONS[t] = fn
        return fn
    return register


def converts_operator(*names: str):
    """Register one converter for library operators by qualified name ("namespace::name")."""
    def register(fn: Callable) -> Callable:
        for name in names:
            FUNCTIONS[name] = fn
        return fn
    return register


def converts_module(*types):
    def register(fn: Callable) -> Callable:
        for t in types:
            MODULES[t] = fn
        return fn
    return register


# =============================================================== what the tables answer ====
def _target_name(target) -> str:
    if isinstance(target, str):  # a method name, or a library operator's qualified name
        return "torch.ops." + target.replace("::", ".") if "::" in target else f"Tensor.{target}"
    if isinstance(target, type):
        if target.__module__.startswith("torch.nn.modules"):
            return f"torch.nn.{target.__name__}"
        return f"{target.__module__}.{target.__qualname__}"
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    name = getattr(target, "__name__", None) or repr(target)
    module = getattr(target, "__module__", None) or "torch"
    # Where users find these functions, not where they are defined (torch._C._nn.gelu is F.gelu).
    module = {"torch._C._nn": "torch.nn.functional", "torch._C._special": "torch.special",
              "_operator": "operator", "torch.functional": "torch",
              "torch._C._VariableFunctions": "torch"}.get(module, module)
    return f"{module}.{name}"


def target_label(node: torch.fx.Node) -> str:
    """What an fx node calls, as users write it: `aten.cumsum.default`, `Tensor.view`, ..."""
    if node.op == "call_module":
        return f"module {node.target}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return _target_name(node.target)


def supported_targets() -> list[str]:
    """Every fx target with a converter: aten overloads, torch functions, methods, modules."""
    names = {_target_name(t) for t in FUNCTIONS} | {f"Tensor.{m}" for m in METHODS}
    names |= {_target_name(t) for t in MODULES} | {"torch.nn.Sequential"}
    return sorted(names)


def _module_converter(module: nn.Module):
    return MODULES.get(type(module))


def supported_fx_target(node: torch.fx.Node) -> bool:
    """Cheap check (for partitioning around unsupported nodes): can import_fx convert `node`?

    True for nodes with a converter, for nodes with no fx-node inputs (they fold), and for calls
    torch's decomposition turns into ops with converters (aten.py, judged on the recorded example
    values). A convertible target can still fail on unusual arguments.
    """
    if node.op in ("placeholder", "output", "get_attr"):
        return True
    if node.op == "call_function":
        return node.target in FUNCTIONS or not node.all_input_nodes or _decomposes(node)
    if node.op == "call_method":
        return node.target in METHODS or not node.all_input_nodes or _decomposes(node)
    if node.op == "call_module":
        root = node.graph.owning_module
        if root is None:
            return False
        module = root.get_submodule(node.target)
        return _module_converter(module) is not None or isinstance(module, nn.Sequential)
    return False


def _decomposes(node: torch.fx.Node) -> bool:
    """A call without a converter that torch's decomposition turns into ops with converters
    (aten.py), judged on the example values dynamo and export record for its inputs."""
    try:
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), _example_of)
    except LookupError:
        return False
    return traced_call(node.op, node.target, args, kwargs, _meta_tensor, _has_converter) \
        is not None


def _example_of(node: torch.fx.Node):
    """A meta tensor for a node that computes a tensor of static shape, its value for one that
    computes a Python number; LookupError otherwise (a symbolic size, no record)."""
    example = node.meta.get("val", node.meta.get("example_value"))
    if isinstance(example, torch.Tensor) and all(isinstance(d, int) for d in example.shape):
        return torch.empty(tuple(example.shape), dtype=example.dtype, device="meta")
    if type(example) in (int, float, bool):
        return example
    raise LookupError(node.name)


def _meta_tensor(a):
    return a if isinstance(a, torch.Tensor) else None


def _has_converter(target) -> bool:
    return target in FUNCTIONS


# ===================================================================== in-place methods ====
def _in_place(convert: Callable) -> Callable:
    """x.op_(...), once fx_mutation has pointed x's later readers at it: x.op(...) in x's dtype
    (an in-place op never changes its tensor's dtype: fp16 x.mul_(fp32 y) stays fp16)."""
    def write(cx: Ctx, x, *args, **kwargs):
        out = convert(cx, x, *args, **kwargs)
        return cx.cast(out, cx.dtype(x)) if isinstance(x, Val) and isinstance(out, Val) else out
    return write


def _register_in_place_methods() -> None:
    """Tensor.add_, relu_, clamp_, masked_fill_ ... from the converters of their out-of-place
    forms (zero_ and fill_, which write into constants the import made, have their own)."""
    for name, convert in list(METHODS.items()):
        in_place = name + "_"
        if not name.startswith("_") and in_place not in METHODS and hasattr(torch.Tensor, in_place):
            METHODS[in_place] = _in_place(convert)
