"""The importer loop: each node of an fx graph mapped to a Python value (a Val, a constant
tensor, a plain object) by its converter, folded with torch itself when nothing in it depends on
a run-time input, or imported through torch's own decomposition (aten.py) when it has no
converter; export's and dynamo's records of each node's result checked on the way."""
from __future__ import annotations

import builtins
import difflib
import operator
from typing import Any

import torch
import torch.fx
import torch.nn as nn
from torch.utils._pytree import tree_flatten

from trident.compiler.errors import ShapeError, TridentError, UnsupportedError
from trident.compiler.fx_mutation import writes_in_place
from trident.compiler.frontend.fx import complex as complex_values
from trident.compiler.frontend.fx.aten import traced_call
from trident.compiler.frontend.fx.context import Ctx, Val, _has_tensor, _has_val, on_one_device
from trident.compiler.frontend.fx.registry import (FUNCTIONS, METHODS, _has_converter,
                                                   _module_converter, _target_name,
                                                   supported_targets, target_label)
from trident.compiler.ir import SUPPORTED_DTYPES, Graph, TensorType


# ============================================================================ importer ====
def _node_label(gm: torch.fx.GraphModule, node: torch.fx.Node) -> str:
    """IR node names: a module call is named by its module path (`layer1.0.conv1`, as in the
    user's model and in ONNX exports); a bare nn.Sequential index by its type (`relu_1`)."""
    if node.op != "call_module":
        return node.name
    target = str(node.target)
    if target.isdigit():
        return f"{type(gm.get_submodule(target)).__name__.lower()}_{target}"
    return target


class _Importer:
    def __init__(self, name: str):
        self.cx = Ctx(name)

    # -- the loop ----------------------------------------------------------------------------
    def run(self, gm: torch.fx.GraphModule, placeholders: list, label: str | None = None) -> Any:
        """Map each node of `gm` to a value; `placeholders` are the values of its placeholders.
        `label` names every IR node the graph makes (a decomposed call: its own fx node's name)."""
        env: dict[torch.fx.Node, Any] = {}
        feed = iter(placeholders)
        for node in gm.graph.nodes:
            self.cx.node_name = label or _node_label(gm, node)
            self.cx.fx_node = node
            if node.op == "placeholder":
                env[node] = next(feed, _NO_EXAMPLE)
                if env[node] is _NO_EXAMPLE:
                    env[node] = _placeholder_default(node)
            elif node.op == "get_attr":
                env[node] = self._get_attr(gm, node)
            elif node.op == "output":
                return torch.fx.node.map_arg(node.args[0], lambda n: env[n])
            else:
                args = torch.fx.node.map_arg(node.args, lambda n: env[n])
                kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
                env[node] = self._call_located(gm, node, args, kwargs)
                self._check_against_meta(node, env[node])
                if isinstance(env[node], torch.Tensor):  # folded: name it after its fx node
                    self.cx.hints.setdefault(id(env[node]), (env[node], node.name))
        raise TridentError(f"{gm.__class__.__name__}: fx graph has no output node")

    def _get_attr(self, gm, node):
        obj = gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, torch.Tensor):
            self.cx.hints.setdefault(id(obj), (obj, node.target))
            return obj
        return obj  # a submodule, for higher-order ops; converters that get one will refuse it

    def _call_located(self, gm, node: torch.fx.Node, args, kwargs):
        """_call, with any unexpected failure turned into a TridentError naming the node."""
        try:
            return self._call(gm, node, args, kwargs)
        except TridentError as e:
            # the refused node (a refusal, or a node whose result disagrees with torch's), of the
            # outermost graph (a call traced through torch's own decomposition is one node of
            # it): torch.compile's partition splits around it
            if isinstance(e, UnsupportedError) or getattr(e, "fx_node", None) is not None:
                e.fx_node = node.name
            raise
        except Exception as e:  # noqa: BLE001  (a converter bug or torch refusing a fold)
            raise TridentError(f'fx node "{node.name}" ({target_label(node)}): '
                               f"{type(e).__name__}: {e}") from e

    def _call(self, gm, node: torch.fx.Node, args, kwargs):
        if node.op == "call_module":
            return self._call_module(gm, node, args, kwargs)
        if complex_values.holds_complex(args, kwargs):
            return complex_values.convert(self.cx, node, args, kwargs)
        table = FUNCTIONS if node.op == "call_function" else METHODS
        convert = table.get(node.target)
        constant = not _has_val((args, kwargs))
        if convert is not None and (_has_tensor((args, kwargs)) or _is_python_op(node)):
            try:
                return convert(self.cx, *args, **kwargs)
            except TypeError as e:
                raise UnsupportedError(f'fx node "{node.name}" ({target_label(node)}): '
                                       f"arguments the converter does not take: {e}") from None
            except UnsupportedError:
                # Constants only (a mask built from torch.ones and aranges): torch computes it
                # now, whatever the converter takes. Not a write: it could land in the model.
                if not constant or writes_in_place(node):
                    raise
        if constant:
            out = _fold_with_torch(node, args, kwargs)
            self.cx.note_made(out, (args, kwargs))
            return out
        if convert is None:  # torch's own decomposition of the call, when it has converters
            traced = traced_call(node.op, node.target, args, kwargs, self._meta_of, _has_converter)
            if traced is not None:
                graph, tensors = traced
                return self.run(graph, tensors, label=self.cx.node_name)
        raise _unsupported(node)

    def _meta_of(self, v) -> torch.Tensor | None:
        """A meta tensor of a tensor argument's shape and dtype (aten.py traces on those)."""
        if isinstance(v, torch.Tensor):
            return torch.empty(tuple(v.shape), dtype=v.dtype, device="meta")
        if not isinstance(v, Val):
            return None
        t = self.cx.type(v)
        if not t.is_static:
            raise LookupError(v.name)
        return torch.empty(tuple(t.shape), dtype=t.dtype, device="meta")

    def _call_module(self, gm, node, args, kwargs):
        module = gm.get_submodule(node.target)
        if node.target == "_guards_fn":  # ExportedProgram.module() input checks
            return None
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            self.cx.hints.setdefault(id(t), (t, f"{node.target}.{name}"))
        if not _has_val((args, kwargs)) and not isinstance(module, nn.Sequential):
            return _fold_with_torch(node, args, kwargs, module)
        convert = _module_converter(module)
        if convert is not None:
            return convert(self.cx, module, *args, **kwargs)
        if isinstance(module, nn.Sequential):
            return self._inline(module, args, kwargs, node)
        raise _unsupported(node, type(module))

    def _inline(self, module: nn.Module, args, kwargs, node):
        """A container left as a leaf by a custom tracer: trace it and import its graph here."""
        try:
            sub = torch.fx.symbolic_trace(module)
        except Exception as e:  # noqa: BLE001  (tracing user code raises anything)
            raise UnsupportedError(f'fx node "{node.name}": cannot trace {type(module).__name__}'
                                   f": {e}") from None
        return self.run(sub, list(args) + list(kwargs.values()))

    def _check_against_meta(self, node: torch.fx.Node, value) -> None:
        """export and dynamo record what torch computed for each node; a converter that
        disagrees has a bug, and saying so here names the node instead of a wrong answer later."""
        meta = node.meta.get("val", node.meta.get("example_value"))
        metas, values = (meta, value) if isinstance(meta, (list, tuple)) else ([meta], [value])
        if not isinstance(values, (list, tuple)) or len(metas) != len(values):
            return
        for m, v in zip(metas, values):
            if isinstance(m, torch.Tensor) and (isinstance(v, complex_values.Complex) or m.is_complex()):
                m, v = self._complex_as_meta(node, m, v)
            if not isinstance(m, torch.Tensor) or not isinstance(v, (Val, torch.Tensor)):
                continue
            got = self.cx.type(v)
            static = all(isinstance(d, int) for d in m.shape)  # symbolic: the examples decided ours
            if m.dtype != got.dtype or (static and tuple(m.shape) != got.shape):
                error = ShapeError(f'fx node "{node.name}" ({target_label(node)}): imported as {got}, '
                                   f"but torch computed {TensorType(tuple(m.shape), m.dtype)}")
                error.fx_node = node.name  # torch.compile's partition runs this node in torch
                raise error

    def _complex_as_meta(self, node: torch.fx.Node, meta: torch.Tensor, value):
        """(meta, value) to check as real ones: a complex value's real part against torch's
        complex record as a real one of its shape. A complex record with a real value, or the
        reverse, disagrees."""
        if isinstance(value, complex_values.Complex) and meta.is_complex():
            real = torch.empty(meta.shape, dtype=complex_values.REAL_OF[meta.dtype], device="meta")
            return real, value.re
        if isinstance(value, torch.Tensor) and value.is_complex() and meta.is_complex():
            return meta, value  # (a folded complex constant)
        kind = "a complex value" if isinstance(value, complex_values.Complex) else "a real value"
        error = ShapeError(f'fx node "{node.name}" ({target_label(node)}): imported as {kind}, but torch '
                           f"computed {TensorType(tuple(meta.shape), meta.dtype)}")
        error.fx_node = node.name  # torch.compile's partition runs this node in torch
        raise error

    # -- graph inputs and outputs -----------------------------------------------------------
    def input(self, name: str, x) -> Any:
        """A graph input for a tensor example; a non-tensor example (a SymInt's int) is constant."""
        if not isinstance(x, torch.Tensor):
            return _python_value(x)
        if x.dtype not in SUPPORTED_DTYPES:
            raise UnsupportedError(f'input "{name}" has dtype {x.dtype}; supported: '
                                   f"{sorted(str(d) for d in SUPPORTED_DTYPES)}")
        return Val(self.cx.b.input(name, TensorType.of(x)))

    def constant(self, t: torch.Tensor, hint: str) -> torch.Tensor:
        self.cx.hints.setdefault(id(t), (t, hint))
        return t

    def finish(self, result) -> Graph:
        outputs = []
        for v in tree_flatten(result)[0]:
            if v is None:
                continue
            if not isinstance(v, (Val, torch.Tensor)):
                raise UnsupportedError(f"graph output {v!r} is not a tensor")
            outputs.append(self.cx.name_of(v))
        return self.cx.b.finish(outputs)


_NO_EXAMPLE = object()


def _placeholder_default(node: torch.fx.Node):
    if node.args:  # symbolic_trace records a forward() default as the placeholder's argument
        return node.args[0]
    raise TridentError(f'placeholder "{node.name}" has no example input (for a torch.export '
                       "graph, pass the ExportedProgram: its signature tells weights from inputs)")


def _is_python_op(node: torch.fx.Node) -> bool:
    """Converters that also work on plain Python objects (x.size()[1], a tuple's item)."""
    return node.target in (operator.getitem, builtins.getattr)


def _fold_with_torch(node: torch.fx.Node, args, kwargs, module: nn.Module | None = None):
    """Nothing here depends on a run-time input: compute it now with torch itself."""
    args, kwargs = on_one_device((args, kwargs))
    with torch.no_grad():
        if node.op == "call_function":
            out = node.target(*args, **kwargs)
        elif node.op == "call_method":
            out = getattr(args[0], node.target)(*args[1:], **kwargs)
        else:
            out = module(*args, **kwargs)
    return out.detach() if isinstance(out, torch.Tensor) else out


# Targets a graph holds where the model reads a tensor's value as a Python number: a whole-graph
# import has no value to read there.
_DATA_DEPENDENT = {"aten._local_scalar_dense.default": ".item(), .tolist() or int() of a run-time tensor"}


def _unsupported(node: torch.fx.Node, module_type: type | None = None) -> UnsupportedError:
    """The node, its target, and the converted targets nearest to it by name (the whole list is
    supported_targets(): about a thousand names)."""
    target = _target_name(module_type or node.target)
    known = supported_targets()
    if target in _DATA_DEPENDENT:
        why = (f"{_DATA_DEPENDENT[target]}: a data-dependent value (torch.compile(backend=\"trident\") "
               "splits the graph there and runs the rest)")
    else:
        near = difflib.get_close_matches(target, known, n=4, cutoff=0.6)
        why = f"nearest converted: {', '.join(near)}" if near else "no converted target is near it by name"
    return UnsupportedError(f'fx node "{node.name}": unsupported {node.op} target {target} ({why}; '
                            f"{len(known)} targets are converted: trident.compiler.frontend.fx.supported_targets())")


def _python_value(x):
    """A SymInt example (dynamo with dynamic shapes) stands for the size it was traced at."""
    if isinstance(x, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        hint = x.node.hint
        return hint if hint is not None else int(x)
    return x
