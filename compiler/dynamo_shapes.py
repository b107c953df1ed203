"""torch.compile with dynamic shapes: the symbolic sizes dynamo hands a partition, as an
optimization profile (compiler/profiles.py), so one engine serves every size.

Dynamo marks a dim dynamic (dynamic=True, torch._dynamo.mark_dynamic, or after a recompile) by
giving the placeholder's example value (node.meta["example_value"], a FakeTensor) a SymInt there;
a size the graph computes with is passed as an int placeholder of its own. Each symbolic dim
becomes a profile symbol (named as dynamo names it, "s0"); an int placeholder that is a symbol
follows that symbol's size in every probe. The range is min 1, opt the size first seen, max
RANGE_FACTOR times it (at least MIN_MAX); a later size past the max builds a second engine whose
range starts from that size. A profile the model cannot be built for at its max (BERT's position
table holds 512 rows, or a tiny model's 128) is tried again with the max at the size seen
(`profiles_for`).

Dynamo gives every input its own symbols, also where the model only ever passes equal sizes: a
decoder's key and value caches grow as one, but are two inputs, `s1` and `s2`. Probed apart, the
attention between them fails (keys and values of different lengths), so where a profile cannot
be built as dynamo states it, the symbols of equal size in the call are tried as one
(`ALIASES`): the engine's profile names the first of them, and it fits a later call only where
those sizes are still equal.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.fx

from trident.compiler.ir.shapes import Poly

RANGE_FACTOR = 4
MIN_MAX = 64
# a profile's build options key: {symbol: the symbol of equal size it is built as}
ALIASES = "aliases"


@dataclass
class SymbolicInputs:
    dims: dict[int, dict[int, str]]    # placeholder index -> {dim: symbol}
    scalars: dict[int, str]            # placeholder index of an int that is a symbol

    def symbols_of(self, args: Sequence) -> dict[str, int]:
        """Each symbol's size in these arguments."""
        sizes = {}
        for i, dims in self.dims.items():
            for d, s in dims.items():
                sizes[s] = int(args[i].shape[d])
        for i, s in self.scalars.items():
            sizes.setdefault(s, int(args[i]))
        return sizes

    def key(self, args: Sequence) -> tuple:
        """The arguments' signature with the symbolic sizes left out."""
        out = []
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor):
                shape = tuple("*" if d in self.dims.get(i, {}) else n for d, n in enumerate(a.shape))
                out.append((shape, a.dtype, a.device))
            elif i in self.scalars:
                out.append("symbol")
            else:
                out.append(("value", a) if isinstance(a, (int, float, bool)) else type(a).__name__)
        return tuple(out)


def _symbol(size) -> str | None:
    if isinstance(size, torch.SymInt):
        return str(size.node.expr)
    return None


def _placeholder_symbols(gm: torch.fx.GraphModule) -> tuple[dict, dict]:
    """({placeholder index: {dim: symbol}} of the tensors, {placeholder index: symbol} of the ints
    that are a symbol of their own)."""
    dims, ints = {}, {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for i, node in enumerate(placeholders):
        value = node.meta.get("example_value", node.meta.get("val"))
        if isinstance(value, torch.Tensor):
            found = {d: s for d, size in enumerate(value.shape) if (s := _symbol(size))}
            if found:
                dims[i] = found
        elif (s := _symbol(value)) is not None and s.isidentifier():
            ints[i] = s
    return dims, ints


def _sized(dims: dict) -> set[str]:
    return {s for found in dims.values() for s in found.values()}


def symbolic_inputs(gm: torch.fx.GraphModule) -> SymbolicInputs | None:
    """The symbolic dims of a partition's placeholders, or None if it has none. An int that is no
    tensor's size (Funnel's relative-position shift) has no range a profile could hold: the
    engine takes it as a tensor (run_time_numbers), or as a value."""
    dims, ints = _placeholder_symbols(gm)
    sized = _sized(dims)
    scalars = {i: s for i, s in ints.items() if s in sized}
    return SymbolicInputs(dims, scalars) if dims else None


def run_time_numbers(gm: torch.fx.GraphModule) -> list[int]:
    """The placeholders of ints dynamo made symbols that size no tensor of the partition (the
    position a sliding-window cache's mask starts from, a relative-position shift), and of floats
    computed from sizes (`math.sqrt(n)`, which the graph around the partition computes): the
    engine takes each as a 0-d tensor (int64, float32), so one engine serves every value."""
    dims, ints = _placeholder_symbols(gm)
    sized = _sized(dims)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    floats = [i for i, n in enumerate(placeholders) if isinstance(n.meta.get("example_value"), torch.SymFloat)]
    return sorted([i for i, s in ints.items() if s not in sized] + floats)


# Arithmetic that reads an int as a number beside a tensor (torch promotes a 0-d int64 tensor there
# exactly as it does the int: a dimensioned tensor's dtype wins within its category).
_ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, torch.add, torch.sub,
               torch.mul, torch.div, torch.true_divide}
_ARITHMETIC_METHODS = {"add", "sub", "mul", "div", "true_divide"}
VALUE_SUFFIX = "_as_tensor"


def _is_tensor_node(arg) -> bool:
    return isinstance(arg, torch.fx.Node) and isinstance(arg.meta.get("example_value"), torch.Tensor)


def _reads_as_value(user: torch.fx.Node, node: torch.fx.Node) -> bool:
    """Does `user` add, subtract, multiply or divide `node` with a tensor?"""
    arithmetic = (user.op == "call_function" and user.target in _ARITHMETIC) or \
        (user.op == "call_method" and user.target in _ARITHMETIC_METHODS)
    return arithmetic and len(user.args) == 2 and any(_is_tensor_node(a) for a in user.args if a is not node)


# Python arithmetic on the int alone (and constants), giving a number a tensor is then scaled by
_NUMBER_MATH = {operator.pow, operator.truediv, operator.floordiv, operator.mul, operator.add, operator.sub}


def _number_of(user: torch.fx.Node, node: torch.fx.Node) -> bool:
    """Is `user` a number computed from `node` and constants (`s ** -0.5`, `1.0 / s`) that only
    tensor arithmetic reads?"""
    alone = user.op == "call_function" and user.target in _NUMBER_MATH and \
        all(a is node or not isinstance(a, torch.fx.Node) for a in user.args)
    return alone and bool(user.users) and all(_reads_as_value(u, user) for u in user.users)


def _value_uses(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The users of an int placeholder that read it as a number beside tensors: arithmetic with a
    tensor, or a number computed from it that such arithmetic reads."""
    return [u for u in node.users if _reads_as_value(u, node) or _number_of(u, node)]


def _placeholders_first(graph: torch.fx.Graph) -> None:
    """Every placeholder ahead of the first other node, in their order (the arguments' order)."""
    first = next((n for n in graph.nodes if n.op != "placeholder"), None)
    if first is not None:
        for node in [n for n in graph.nodes if n.op == "placeholder"]:
            first.prepend(node)


def take_sized_int_values(gm: torch.fx.GraphModule) -> list[int]:
    """Where an int that is a symbol sizing a tensor is also added to, subtracted from, multiplied
    with or divided into or by a tensor, the graph reads that int at run time too. Whisper's
    decoder takes its positions as `arange(new) + past`, past the cache's length; a sum divided
    by its length is a mean; `x * x.shape[1] ** -0.5` scales by a number computed from it (which
    then becomes a 0-d tensor too). Probed at fixed sizes, such values would fold to constants of
    each size, none a slice of another (codegen/dynamic_constants.py), and the engine would be
    rebuilt for every length. So each such use reads a new placeholder instead, the int as a 0-d int64
    tensor, appended after the others. Returns the positions of the ints, in the order of the new
    placeholders (the caller passes `torch.tensor(args[k])` for each, after the arguments)."""
    dims, ints = _placeholder_symbols(gm)
    sized = _sized(dims)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    read = {i: uses for i, node in enumerate(placeholders) if ints.get(i) in sized and (uses := _value_uses(node))}
    if not read:
        return []
    _placeholders_first(gm.graph)  # (a partition's placeholders can sit between its nodes)
    last = placeholders[-1]
    for i, uses in read.items():
        node = placeholders[i]
        with gm.graph.inserting_after(last):
            last = gm.graph.placeholder(node.name + VALUE_SUFFIX)
        last.meta["example_value"] = torch.tensor(0)
        for user in uses:
            user.args = tuple(last if a is node else a for a in user.args)
            if not _reads_as_value(user, last):  # a number from the int: now a 0-d tensor, of
                # the dtype torch gives it (`s // 2` int64, `s ** -0.5` float)
                user.meta["example_value"] = user.target(*(torch.tensor(2) if a is last else a for a in user.args))
    gm.recompile()
    return list(read)


def profile_ranges(sizes: dict[str, int], factor: int = RANGE_FACTOR) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) per symbol: 1, the size seen, factor times it (at least MIN_MAX when
    factor > 1)."""
    return {s: (1, v, max(factor * v, MIN_MAX) if factor > 1 else v) for s, v in sizes.items()}


def profiles_for(sym: SymbolicInputs, args: Sequence) -> list[dict]:
    """The build options to try in order: the wide profile, then one whose max is the size seen;
    each first as dynamo states the symbols, then with those of equal size as one, then also
    with those a step or two apart as one plus a constant."""
    sizes = sym.symbols_of(args)
    tries = [a for a in (equal_symbols(sizes), near_symbols(sizes)) if a]
    tries = [a for k, a in enumerate(tries) if a not in tries[:k]]
    options = []
    for factor in (RANGE_FACTOR, 1):
        options.append(build_options(sym, args, factor))
        options += [build_options(sym, args, factor, aliases) for aliases in tries]
    return options


Alias = tuple[str, int]   # (the symbol one is built as, the constant added to it)


def equal_symbols(sizes: dict[str, int]) -> dict[str, Alias]:
    """{symbol: (the first symbol of the same size, 0)}, for every symbol after the first of a
    size."""
    return near_symbols(sizes, apart=0)


NEAR = 2  # sizes at most this far apart may be one symbol plus a constant


def near_symbols(sizes: dict[str, int], apart: int = NEAR) -> dict[str, Alias]:
    """{symbol: (root, k)}: each size is the size of the smallest symbol at most `apart` below it
    (transitively) plus k; symbols of one size alias the first of them. transformers' decoders
    pass the attention mask one longer than the key cache (its past and the new token), as a
    symbol of its own: probed apart, the mask's gather reads past its end."""
    base: dict[int, Alias] = {}
    first: dict[int, str] = {}
    for s, v in sorted(sizes.items(), key=lambda item: item[1]):
        first.setdefault(v, s)
        if v not in base:
            below = next((v - k for k in range(1, apart + 1) if v - k in base), None)
            base[v] = (first[v], 0) if below is None else (base[below][0], base[below][1] + v - below)
    return {s: base[v] for s, v in sizes.items() if base[v][0] != s}


def build_options(sym: SymbolicInputs, args: Sequence, factor: int = RANGE_FACTOR,
                  aliases: dict[str, Alias] | None = None) -> dict:
    """shapes= and dim_names= for build_engine (placeholders by index), and scalar inputs;
    aliases: symbols built as another plus a constant (kept under ALIASES)."""
    aliases = aliases or {}
    sizes = sym.symbols_of(args)
    ranges = profile_ranges({s: v for s, v in sizes.items() if s not in aliases}, factor)

    def name(s: str):
        root, k = aliases.get(s, (s, 0))
        return Poly.of(root, 1, k) if k else root

    def triple(s: str) -> tuple[int, int, int]:
        root, k = aliases.get(s, (s, 0))
        return tuple(t + k for t in ranges[root])

    shapes, names = {}, {}
    for i, dims in sym.dims.items():
        shape = list(args[i].shape)
        triples = [triple(dims[d]) if d in dims else (n, n, n) for d, n in enumerate(shape)]
        shapes[i] = tuple(tuple(t[k] for t in triples) for k in range(3))
        names[i] = {d: name(s) for d, s in dims.items()}
    names.update({i: name(s) for i, s in sym.scalars.items()})   # an int placeholder that is a symbol
    options = {"shapes": shapes, "dim_names": names}
    if aliases:
        options[ALIASES] = dict(aliases)
    return options


def fits(engine, sizes: dict[str, int]) -> bool:
    """Does the engine's profile hold these sizes (a symbol it was built to alias: only at the
    size of the symbol it stands for, plus the constant)?"""
    symbols = engine.profile.symbols if engine.profile is not None else {}
    aliases = getattr(engine, "symbol_aliases", {})

    def holds(s: str, v: int) -> bool:
        root, k = aliases.get(s, (s, 0))
        return root in symbols and v - k in symbols[root] and (root == s or sizes.get(root) == v - k)
    return all(holds(s, v) for s, v in sizes.items())


__all__ = ["ALIASES", "Alias", "SymbolicInputs", "build_options", "equal_symbols", "fits", "near_symbols",
           "profile_ranges", "profiles_for", "run_time_numbers", "symbolic_inputs", "take_sized_int_values"]
