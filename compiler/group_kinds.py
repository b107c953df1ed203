"""Which group each IR node starts in (`initial_kind`), and what each kernel generator takes:
the capability constants and refusals fusion.py partitions by and explain reports ("why runs in
torch"). Fusion decides what joins a group; this module decides what a lone node can be.
"""
from __future__ import annotations

import torch

from trident.compiler.templates import attention_kind
from trident.compiler.ir import Graph, Node
from trident.compiler.ops import OPS, Kind

# The largest reduction a row kernel keeps in registers (softmax and layer norm rows). Longer
# sums, means and maxima loop over their row in chunks (codegen/kernels.py: reduction).
MAX_ROW = 8192
# Reductions of integer rows (codegen/reductions.py INTEGER_BODIES): exact, sums and products in
# the output's integer type, extremes and their positions in the input's.
INTEGER_REDUCTIONS = ("reduce_sum", "reduce_prod", "reduce_max", "reduce_min", "argmax", "argmin")
INTEGER_REDUCTION_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
LOOPED_REDUCTIONS = ("reduce_sum", "reduce_mean", "reduce_max")
# Movement ops a pointwise kernel computes element by element (codegen/moves.py):
# they start pointwise groups, never anchor one.
PER_ELEMENT_MOVES = ("gather", "gather_elements", "concat", "pad", "resample", "grid_sample")
# The ops whose kernels read or write through an index tensor (input 1 indexes dim `axis` of
# input 0): the engine checks the indices before the kernel runs (codegen/program.py index_checks).
INDEXED_OPS = ("gather", "gather_elements", "scatter_elements")
# Each lane of a concat kernel tries every piece (masked loads): a concat of more pieces is
# written as a tree of concats of at most this many (passes/concats.py).
MAX_CONCAT_PIECES = 8

VIEW_OPS = {"reshape", "transpose", "expand", "slice", "split", "identity"}
# Reductions the reduction generator has a body for (compiler/codegen/kernels.py).
REDUCTION_KERNELS = {"softmax", "log_softmax", "layer_norm", "rms_norm", "reduce_sum", "reduce_mean",
                     "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"}
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
POINTWISE_DTYPES = {torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64,
                    torch.bool, torch.int8}
INDEX_DTYPES = (torch.int32, torch.int64)
# What the scan generator (codegen/scan.py) runs over: floats in fp32 registers, integers in their
# own width (wrapping as torch's cumsum or cumprod cast back to the dtype does).
SCAN_DTYPES = {torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.int8,
               torch.int16, torch.uint8}
# What the sort generator (codegen/sort.py) orders in one pass: keys that fit 32 bits of its sort
# word (int64 keys take two passes, whole rows only), in rows one program holds in registers
# (int64 words: 32 a thread at 8 warps).
SORT_DTYPES = {torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int16, torch.int8,
               torch.uint8, torch.bool}
MAX_SORT_LENGTH = 4096
# The scatter generator (codegen/scatter.py) holds rows of up to MAX_ROW elements and applies a
# row's updates one after another: at most this many (a one-hot's 1, a top-k's k).
MAX_SCATTER_UPDATES = 16


# --------------------------------------------------------------------------- kinds ----
def _static(graph: Graph, values) -> bool:
    return all(graph.types[v].is_static for v in values)


def initial_kind(node: Node, graph: Graph) -> tuple[str, str]:
    """The group kind a node starts in, and why (for explain)."""
    kind = OPS[node.op].kind
    t = graph.types
    if not _static(graph, list(node.inputs) + list(node.outputs)):
        return "torch", "symbolic shape"
    if node.op in VIEW_OPS:
        return "view", "strides only"
    no_kernel = _dtype_without_kernels(node, graph)
    if no_kernel is not None:
        return "torch", f"{no_kernel} has no kernels"
    if node.op in PER_ELEMENT_MOVES:
        why = move_refusal(node, graph)
        return ("pointwise", _MOVE_REASONS[node.op]) if why is None else ("torch", why)
    if kind == Kind.SCAN:
        why = scan_refusal(node, graph)
        return ("scan", "running sum, product or linear recurrence along one axis (a loop over the "
                        "row carries it)") if why is None else ("torch", why)
    if kind == Kind.SORT:
        why = sort_refusal(node, graph)
        return ("sort", "whole rows sorted in registers") if why is None else ("torch", why)
    if node.op == "scatter_elements":
        why = scatter_refusal(node, graph)
        return ("scatter", "whole rows, their few updates applied in order") if why is None else ("torch", why)
    if kind == Kind.OPAQUE:
        return "torch", f"{node.op} has no kernel template: torch runs it"
    if node.op in ("qconv", "qmatmul"):  # int8 layers share the float conv / GEMM templates
        from trident.compiler.codegen.int8 import initial_kind as int8_kind
        return int8_kind(node, graph)
    if node.op == "attention":
        return attention_kind(node, graph)
    if kind == Kind.ELEMENTWISE:
        from trident.compiler.codegen.expr import supports
        why = supports(node, graph)
        return ("pointwise", "elementwise") if why is None else ("torch", why)
    if node.op == "grouped_mm":
        why = grouped_mm_refusal(node, graph)
        return ("grouped_mm", "rows sorted by group, one GEMM per group's tiles") if why is None else ("torch", why)
    if node.op == "matmul":
        a, b = (t[i] for i in node.inputs[:2])
        if a.rank < 2 or b.rank < 2 or a.dtype not in FLOAT_DTYPES:
            return "torch", "matmul of vectors or non-float dtype"
        if max(a.rank, b.rank) > 4:
            return "torch", "more than 2 batch dims"
        return "matmul", "anchor"
    if node.op == "conv":
        if len(t[node.inputs[0]].shape) != 4 or node.inputs[1] not in graph.constants:
            return "torch", "conv that is not 2-D with constant weights"
        return "conv", "anchor"
    if node.op in ("max_pool", "avg_pool"):
        if t[node.inputs[0]].dtype not in FLOAT_DTYPES + (torch.int8,):
            return "torch", f"pooling of {t[node.inputs[0]].dtype} (the template takes floats, int8)"
        if len(node.attrs["kernel"]) != 2 or list(node.attrs.get("dilations") or [1, 1]) != [1, 1]:
            return "torch", "pooling that is not 2-D"
        return "pool", "anchor"
    if kind == Kind.REDUCTION:
        why = reduction_refusal(node, graph)
        return ("reduction", "anchor") if why is None else ("torch", why)
    return "torch", "no kernel for this op"


_MOVE_REASONS = {"gather": "table lookup (rows of a table by indices)",
                 "gather_elements": "gather of elements (each lane reads the element its index names)",
                 "concat": "concat (each lane reads its piece)",
                 "pad": "pad (each lane reads its element: shifted, clamped, mirrored or "
                        "wrapped, or the fill)",
                 "resample": "resize (each lane looks its taps up in tables and mixes them)",
                 "grid_sample": "grid sample (each lane reads its grid point and mixes the taps there)"}


def move_refusal(node: Node, graph: Graph) -> str | None:
    """None if this per-element move computes in a pointwise kernel (codegen/moves.py), else
    why it runs in torch."""
    t = graph.types
    if node.op == "gather":
        return table_lookup_refusal(node, graph)
    if node.op == "gather_elements":
        return element_gather_refusal(node, graph)
    if node.op == "concat":
        pieces, dtype = len(node.inputs), t[node.inputs[0]].dtype
        if pieces > MAX_CONCAT_PIECES or dtype not in POINTWISE_DTYPES:
            return f"concat of {pieces} pieces of {dtype}"
        return None
    if node.op == "grid_sample":
        x = t[node.inputs[0]]
        if x.rank != 4 or not x.dtype.is_floating_point or node.attrs.get("mode", "linear") == "cubic":
            return f"grid_sample of a {x.rank}-D {x.dtype} input in {node.attrs.get('mode')} mode"
        return None
    if node.op == "resample":  # passes/resample.py took it; its tables are constants
        dtype = t[node.inputs[0]].dtype
        return None if dtype in POINTWISE_DTYPES else f"resample of {dtype}"
    a, x = node.attrs, t[node.inputs[0]]
    mode = a.get("mode", "constant")
    if min(a["pads"]) < 0 or x.dtype not in POINTWISE_DTYPES or 0 in x.shape:
        return "pad that crops, or pads an empty tensor"
    rank = len(x.shape)
    widest = [max(a["pads"][d], a["pads"][rank + d]) for d in range(rank)]
    if mode == "reflect" and any(w > n - 1 for w, n in zip(widest, x.shape)):
        return "reflect pad past the size minus one (a second reflection)"
    if mode == "wrap" and any(w > n for w, n in zip(widest, x.shape)):
        return "wrap pad past the size (a second period)"
    return None


def table_lookup_refusal(node: Node, graph: Graph) -> str | None:
    """None if this gather computes in a pointwise kernel: rows (axis 0) of a table (a constant,
    or a tensor the graph computes: a gather starts its group, so the table is in memory) picked
    by integer indices, else why not. The engine checks the indices before running uncaptured, as
    the torch gather does: token-id inputs once per run (Plan.index_bounds), indices computed in
    the model before the kernel that reads them (IndexCheck)."""
    table = node.inputs[0]
    if node.attrs.get("axis", 0) != 0:
        return "gather along an axis other than 0 (passes/gathers.py moves static ones to 0) runs in torch"
    if graph.types[table].dtype not in POINTWISE_DTYPES:
        return f"gather from a {graph.types[table].dtype} tensor runs in torch"
    return _index_refusal(node, graph, 0)


def element_gather_refusal(node: Node, graph: Graph) -> str | None:
    """None if this GatherElements computes in a pointwise kernel (any data of a pointwise
    dtype, constant or computed), else why not."""
    if graph.types[node.inputs[0]].dtype not in POINTWISE_DTYPES:
        return f"gather_elements of {graph.types[node.inputs[0]].dtype}"
    return _index_refusal(node, graph, node.attrs["axis"])


def _index_refusal(node: Node, graph: Graph, axis: int) -> str | None:
    data, indices = (graph.types[v] for v in node.inputs[:2])
    if indices.dtype not in INDEX_DTYPES:
        return f"{node.op} by {indices.dtype} indices runs in torch"
    if data.shape[axis] == 0 and indices.numel():
        return f"{node.op} from an empty dim runs in torch (every index is out of range)"
    return None


def scan_refusal(node: Node, graph: Graph) -> str | None:
    """Why the scan generator cannot take this scan, or None. A linear recurrence takes float
    coefficients and inputs of one shape (the generator loads both at each position)."""
    x = graph.types[node.inputs[0]]
    if x.dtype not in SCAN_DTYPES:
        return f"{node.op} of {x.dtype}"
    if x.rank == 0:
        return f"{node.op} of a scalar"
    if node.op == "linear_scan":
        b = graph.types[node.inputs[1]]
        if b.shape != x.shape or not (x.dtype in FLOAT_DTYPES and b.dtype in FLOAT_DTYPES):
            return f"linear_scan of {x} coefficients and {b} inputs (floats of one shape)"
    return None


def reduction_refusal(node: Node, graph: Graph) -> str | None:
    """Why the reduction generator cannot take this reduction, or None. Float rows longer than
    MAX_ROW loop (LOOPED_REDUCTIONS, accumulating in fp32); integer rows are exact, in one block."""
    dtype = graph.types[node.inputs[0]].dtype
    floats = dtype in FLOAT_DTYPES
    if node.op not in REDUCTION_KERNELS:
        return f"no reduction kernel for {node.op}"
    if not floats and (dtype not in INTEGER_REDUCTION_DTYPES or node.op not in INTEGER_REDUCTIONS):
        return f"{node.op} of {dtype} (integer rows: {', '.join(INTEGER_REDUCTIONS)})"
    if reduction_length(node, graph) > MAX_ROW and not (floats and node.op in LOOPED_REDUCTIONS):
        return f"{node.op} of {dtype} over more than {MAX_ROW} elements"
    return None


# Views that make no new values: each value they give is one of their input's.
_SAME_VALUES = ("reshape", "transpose", "expand", "slice", "identity")


def through_views(value: str, producers: dict[str, Node], views) -> str:
    """The value `value` is a view of, following its producers while their op is in `views`."""
    while value in producers and producers[value].op in views:
        value = producers[value].inputs[0]
    return value


def _is_index(value: str, graph: Graph) -> bool:
    """Is this int64 value, through views, the index output of an argmax, argmin or topk? Then
    it is below the length of an axis, far below 2^31, and its 32 low bits are the whole value
    (a mixture-of-experts layer sorts the expert ids its router's top-k picked)."""
    producers = graph.producers()
    value = through_views(value, producers, _SAME_VALUES)
    node = producers.get(value)
    if node is None:
        return False
    return node.op in ("argmax", "argmin") or (node.op == "topk" and value == node.outputs[1])


def two_pass_keys(value: str, graph: Graph) -> bool:
    """Does the sort kernel order these keys in two passes? int64 keys that may need all 64 bits
    (not an index output: _is_index)."""
    return graph.types[value].dtype == torch.int64 and not _is_index(value, graph)


def grouped_mm_refusal(node: Node, graph: Graph) -> str | None:
    """Why the grouped GEMM kernel (kernels/grouped_mm.py) cannot take this grouped_mm, or None."""
    x, w, offs = (graph.types[v] for v in node.inputs)
    if x.dtype not in FLOAT_DTYPES or w.dtype != x.dtype:
        return f"grouped_mm of {x.dtype} rows and {w.dtype} weights (the kernel takes one float dtype)"
    if offs.dtype not in INDEX_DTYPES or w.shape[0] == 0:
        return f"grouped_mm with {offs.dtype} offsets of {w.shape[0]} groups"
    return None


def scatter_refusal(node: Node, graph: Graph) -> str | None:
    """Why the scatter generator cannot take this ScatterElements, or None."""
    x, index = graph.types[node.inputs[0]], graph.types[node.inputs[1]]
    return scatter_types_refusal(x, index, node.attrs["axis"] % x.rank)


def scatter_types_refusal(x, index, axis: int) -> str | None:
    """scatter_refusal of a ScatterElements into `x` by `index` along `axis` (TensorTypes): what
    passes/scatter_rows.py asks before it writes one."""
    if x.dtype not in POINTWISE_DTYPES or x.dtype == torch.bool or index.dtype not in INDEX_DTYPES:
        return f"scatter_elements into {x.dtype} by {index.dtype} indices"
    if x.shape[axis] > MAX_ROW or index.shape[axis] > MAX_SCATTER_UPDATES:
        return (f"scatter_elements of {index.shape[axis]} updates into rows of {x.shape[axis]} (the kernel "
                f"takes rows of up to {MAX_ROW} and {MAX_SCATTER_UPDATES} updates a row)")
    return None


def sort_refusal(node: Node, graph: Graph) -> str | None:
    """Why the sort generator cannot take this topk, or None."""
    x = graph.types[node.inputs[0]]
    if x.rank == 0:
        return f"{node.op} of a scalar"
    length = x.shape[node.attrs["axis"] % x.rank]
    if two_pass_keys(node.inputs[0], graph) and node.attrs["k"] != length:
        return f"{node.op} of int64 keys with k < the row (the sort kernel sorts their whole rows)"
    if x.dtype not in SORT_DTYPES and x.dtype != torch.int64:
        return f"{node.op} of {x.dtype} (the sort kernel takes floats and integers)"
    if length > MAX_SORT_LENGTH:
        return f"{node.op} over {length} elements (one program sorts rows of up to {MAX_SORT_LENGTH})"
    return None


def _dtype_without_kernels(node: Node, graph: Graph):
    """The first dtype of the node's values that generated kernels do not handle (float64), or
    None."""
    from trident.compiler.codegen.expr import TL_DTYPES
    for value in list(node.inputs) + list(node.outputs):
        if graph.types[value].dtype not in TL_DTYPES:
            return graph.types[value].dtype
    return None


def reduced_axes(node: Node, graph: Graph) -> tuple[int, ...]:
    rank = graph.types[node.inputs[0]].rank
    if node.op in ("softmax", "log_softmax", "argmax", "argmin"):
        return (node.attrs.get("axis", -1) % rank,)
    if node.op in ("layer_norm", "rms_norm"):
        return tuple(range(node.attrs.get("axis", -1) % rank, rank))
    return tuple(sorted(a % rank for a in node.attrs["axes"]))


def reduction_length(node: Node, graph: Graph) -> int:
    shape = graph.types[node.inputs[0]].shape
    n = 1
    for a in reduced_axes(node, graph):
        n *= shape[a]
    return n
