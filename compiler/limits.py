"""What generated kernels assume of a graph, checked before the passes run (build.compile_graph).

- Static shapes: kernels bake every size and stride in as a constant. A symbolic dim reaches
  codegen only when the model was built without a batch profile.
- 32-bit indices: lane offsets (`program_id * BLOCK + arange`), the per-dim indices and element
  offsets are int32 in the kernels, so a tensor of 2^31 or more elements would wrap its offsets
  and address memory outside itself. Such a model is refused by name instead of crashing in the
  allocator, or worse, writing out of bounds.
"""
from __future__ import annotations

import math

from trident.compiler.errors import UnsupportedError, where
from trident.compiler.ir import Graph

INDEX_LIMIT = 2**31  # elements of one tensor: int32 offsets reach 2^31 - 1


def check_codegen_limits(graph: Graph) -> None:
    """Raise UnsupportedError naming the first value codegen cannot handle, and why."""
    symbolic = [name for name in graph.inputs if not graph.types[name].is_static]
    if symbolic:
        shapes = ", ".join(f"'{n}': {graph.types[n]}" for n in symbolic)
        raise UnsupportedError(
            f"graph input(s) with symbolic dims ({shapes}): trident builds engines for static "
            f"shapes; give the batch profile (build_engine(..., batch=(min, opt, max)), "
            f"`trident compile --batch min:opt:max`) or export the model with static shapes")
    producer = {out: node for node in graph.nodes for out in node.outputs}
    for name, t in graph.types.items():
        if not t.is_static:
            node = producer.get(name)
            raise UnsupportedError(f"value '{name}' {t}" + (f", output of {where(node)}" if node else "")
                                   + ": a symbolic dim reached codegen, which needs static shapes")
        numel = math.prod(t.shape)
        if numel >= INDEX_LIMIT:
            node = producer.get(name)
            source = f"output of {where(node)}" if node else (
                "graph input" if name in graph.inputs else "constant")
            raise UnsupportedError(
                f"value '{name}' {t} ({source}) has {numel:,} elements; trident's kernels index "
                f"tensors with 32-bit integers, so a tensor may hold at most {INDEX_LIMIT - 1:,}")
