"""Optimization profiles from what a user gives: `batch=` (the first dim of every input) and
`shapes=` ({input: (min_shape, opt_shape, max_shape)}, TensorRT's model), and the model imported
at any sizes of the profile (the probes compiler/codegen/dynamic.py fits its templates from).

Which dims vary together:
- ONNX: dims that share a symbolic name (dim_param) are one symbol; a profile given for one input
  binds that symbol in every input;
- torch: the example inputs' dims whose (min, opt, max) are equal form one symbol (dim 0's is
  named "batch"); `dim_names` ({input: {dim: symbol}}, as dynamo's SymInts give) names them
  explicitly instead; {input: symbol} marks an int input that is that symbol's size. A name may
  also be `Poly.of(symbol, 1, k)`: the dim (or int) is that symbol's size plus k (a decoder's
  attention mask is one longer than its key cache).
"""
from __future__ import annotations

import inspect
from typing import Sequence

import torch

from trident.compiler.errors import TridentError, UnsupportedError
from trident.compiler.frontend.onnx import input_dims
from trident.compiler.ir.shapes import Poly, ShapeProfile, SizeRange

Triple = tuple[int, int, int]


def _shape_triple(name: str, spec, rank: int) -> list[Triple]:
    """(min, opt, max) of each dim of `name` from its (min_shape, opt_shape, max_shape)."""
    try:
        if isinstance(spec, str):
            spec = [[int(d) for d in part.split("x")] if part else [] for part in spec.split(":")]
        shapes = [tuple(int(d) for d in s) for s in spec]
    except (TypeError, ValueError):
        raise TridentError(f'shapes["{name}"]: expected (min_shape, opt_shape, max_shape), got '
                           f"{spec!r}") from None
    if len(shapes) == 1:
        shapes = shapes * 3
    if len(shapes) != 3 or any(len(s) != rank for s in shapes):
        raise TridentError(f'shapes["{name}"]: expected three shapes (min, opt, max) of rank '
                           f"{rank}, got {spec!r}")
    triples = list(zip(*shapes))
    for k, (lo, opt, hi) in enumerate(triples):
        if not 0 <= lo <= opt <= hi:
            raise TridentError(f'shapes["{name}"]: dim {k} needs 0 <= min <= opt <= max, got '
                               f"{lo}, {opt}, {hi}")
    return triples


def _bind(symbols: dict[str, SizeRange], symbol: str, triple: Triple, where: str) -> None:
    r = SizeRange(*triple)
    if symbols.get(symbol, r) != r:
        raise TridentError(f"{where}: {symbol} already has the range {symbols[symbol]}, not {r} "
                           f"(dims sharing a symbolic name vary together)")
    symbols[symbol] = r


def _check_names(shapes: dict, known: Sequence[str]) -> None:
    unknown = [n for n in shapes if n not in known]
    if unknown:
        raise TridentError(f"shapes: no input named {', '.join(map(repr, unknown))}; the inputs "
                           f"are {', '.join(known)}")


def onnx_profile(model, batch, shapes: dict | None) -> ShapeProfile:
    dims = input_dims(model)
    symbols: dict[str, SizeRange] = {}
    shapes = dict(shapes or {})
    _check_names(shapes, list(dims))
    for name, spec in shapes.items():
        for k, (triple, dim) in enumerate(zip(_shape_triple(name, spec, len(dims[name])), dims[name])):
            if isinstance(dim, int):
                if triple != (dim, dim, dim):
                    raise TridentError(f'shapes["{name}"]: dim {k} is fixed at {dim} in the '
                                       f"model, not {triple}")
                continue
            _bind(symbols, dim, triple, f'shapes["{name}"] dim {k}')
    if batch is not None:
        r = SizeRange.parse(batch)
        firsts = {d[0] for d in dims.values() if d and isinstance(d[0], str)}
        if not firsts and not r.is_static:
            raise UnsupportedError("dynamic shapes: no input's shape changes with the batch (an "
                                   "ONNX model needs a symbolic first dim, e.g. torch.onnx."
                                   "export(..., dynamic_axes={'x': {0: 'batch'}}))")
        for symbol in firsts - symbols.keys():
            symbols[symbol] = r
    unbound = [f"{n} dim {k} ({d})" for n, ds in dims.items() for k, d in enumerate(ds)
               if isinstance(d, str) and d not in symbols]
    if unbound:
        raise TridentError(f"the profile leaves symbolic dims without a size: "
                           f"{', '.join(unbound)}; give them in shapes= (or batch=)")
    return ShapeProfile(symbols, dims)


def torch_input_names(model, count: int) -> list[str]:
    if isinstance(model, torch.fx.GraphModule):
        names = [n.name for n in model.graph.nodes if n.op == "placeholder"]
    else:
        try:
            names = [p.name for p in inspect.signature(model.forward).parameters.values()
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            names = []
    names = names[:count]
    return names + [f"input{k}" for k in range(len(names), count)]


def torch_profile(model, example_inputs: Sequence, batch, shapes: dict | None,
                  dim_names: dict | None = None) -> ShapeProfile:
    if isinstance(model, torch.export.ExportedProgram):
        raise UnsupportedError("a torch.export program is fixed at the shapes it was exported "
                               "with; build the profile from the nn.Module (example_inputs) or "
                               "an ONNX file with symbolic dims")
    if example_inputs is None:
        raise TridentError("build_engine: a profile for a torch model needs example_inputs")
    names = torch_input_names(model, len(example_inputs))
    tensors = {n: x for n, x in zip(names, example_inputs) if isinstance(x, torch.Tensor)}
    shapes = {(names[k] if isinstance(k, int) else k): v for k, v in (shapes or {}).items()}
    _check_names(shapes, list(tensors))
    dim_names = {(names[k] if isinstance(k, int) else k): v for k, v in (dim_names or {}).items()}
    scalars = {n: s for n, s in dim_names.items() if not isinstance(s, dict)}
    dim_names = {n: d for n, d in dim_names.items() if isinstance(d, dict)}
    ranges: dict[tuple[str, int], Triple] = {}
    for name, spec in shapes.items():
        for k, triple in enumerate(_shape_triple(name, spec, tensors[name].dim())):
            ranges[(name, k)] = triple
    if batch is not None:
        r = SizeRange.parse(batch).as_tuple()
        for name, x in tensors.items():
            if x.dim() and (name, 0) not in ranges:
                ranges[(name, 0)] = r
    symbols: dict[str, SizeRange] = {}
    by_range: dict[Triple, str] = {}
    dims = {n: list(x.shape) for n, x in tensors.items()}
    for (name, k), triple in ranges.items():
        symbol = dim_names.get(name, {}).get(k)
        if symbol is None:
            if triple[0] == triple[2]:
                symbol = f"{name}.d{k}"
            else:
                symbol = by_range.setdefault(triple, "batch" if k == 0 and "batch" not in
                                             by_range.values() else f"{name}.d{k}")
        if isinstance(symbol, Poly):  # a symbol plus a constant: the symbol's range is the dim's, less it
            (root, _, offset), where = symbol.linear_in(), f'shapes["{name}"] dim {k} ({symbol})'
            _bind(symbols, root, tuple(t - offset for t in triple), where)
        else:
            _bind(symbols, symbol, triple, f'shapes["{name}"] dim {k}')
        dims[name][k] = symbol
    return ShapeProfile(symbols, {n: tuple(d) for n, d in dims.items()}, scalars)


def at_sizes(example_inputs: Sequence, profile: ShapeProfile, names: Sequence[str],
             sizes: dict[str, int]) -> tuple:
    """Example inputs resized to `sizes`: rows repeated or dropped (so integer inputs such as
    token ids stay valid); a dim that was empty is filled with random values."""
    out = []
    for name, x in zip(names, example_inputs):
        if name in profile.scalars:
            x = _size(profile.scalars[name], sizes)
        if isinstance(x, torch.Tensor) and name in profile.inputs:
            for k, d in enumerate(profile.inputs[name]):
                if not isinstance(d, int):
                    x = _resize(x, k, _size(d, sizes))
        out.append(x)
    return tuple(out)


def _size(dim: str | Poly, sizes: dict[str, int]) -> int:
    return dim.at(sizes) if isinstance(dim, Poly) else sizes[dim]


def _resize(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    if x.shape[dim] == size:
        return x
    if x.shape[dim] == 0:
        shape = list(x.shape)
        shape[dim] = size
        gen = torch.Generator().manual_seed(size)
        if x.dtype.is_floating_point:
            return torch.randn(shape, generator=gen, dtype=x.dtype).to(x.device)
        return torch.zeros(shape, dtype=x.dtype, device=x.device)
    index = torch.arange(size, device=x.device) % x.shape[dim]
    return x.index_select(dim, index)


__all__ = ["at_sizes", "onnx_profile", "torch_input_names", "torch_profile"]
