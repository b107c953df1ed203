"""The implicit quantization pass: float conv / matmul layers -> int8 layers (qconv / qmatmul).

For every selected layer y = conv(x, W, b) (or matmul(x, W, b)):
    xq = quantize_linear(x, T_x / 127, 0; narrow)       activation: per tensor, from calibration
    y  = qconv(xq, Wq, w_scale, b; x_scale = T_x / 127)  weight: per output channel, max |W| / 127
quantize_linear of one value is emitted once, however many int8 layers read it. Fusion then puts
each quantize_linear in the epilogue of the kernel that produces x (an int8 store), and each int8
layer's dequantization in its own epilogue: int8 tensors flow between consecutive int8 layers and
float ones only where a float op reads them (precision boundaries).

Rounding: round half to even (torch.round, ONNX QuantizeLinear), then clamp to [-127, 127]
(symmetric, as TensorRT: -128 is never produced), in the kernels (prims.quantize) and the reference.

Two rewrites follow, which change what is stored (only the first changes a value: the shortcut's):
  residuals  in conv nets (4-D activations), an `add` of an int8 layer's output and a value that
             is also quantized for another int8 layer (a ResNet identity shortcut) reads the int8
             copy through dequantize_linear, which fuses into the add's kernel: the value is then
             stored once, as int8, instead of as int8 and fp16 (TensorRT's residual fusion); the
             shortcut carries int8 rounding. A shortcut that is itself an int8 layer's output read
             by nothing but the add (ResNet's downsample conv) is quantized with its own
             calibrated threshold: its conv stores int8, half the bytes both kernels move.
             Transformers keep their residual stream in fp16:
             there it costs more accuracy (BERT-base cosine to fp32 0.9977 vs 0.9994) and saves
             less traffic.
  commute    quantize_linear(max_pool(u)) = max_pool(quantize_linear(u)) with one scale (rounding
             and clamping are monotonic): the pool reads and writes int8, and u is stored as int8;
             likewise through reshape and transpose (a flatten before a classifier).
"""
from __future__ import annotations

import fnmatch

import torch

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.rewrite import Rebuild, rewrite

QMAX = 127
_MIN_THRESHOLD = 1e-8  # an all-zero tensor still gets a finite scale


# ------------------------------------------------------------------------ which layers ----
def is_candidate(node: Node, graph: Graph) -> bool:
    """Float conv / matmul layers an int8 kernel can run: 2-D convs and GEMMs with constant
    weights (attention's activation x activation matmuls stay in fp16)."""
    if node.op not in ("conv", "matmul") or node.inputs[1] not in graph.constants:
        return False
    x, w = graph.types[node.inputs[0]], graph.constants[node.inputs[1]]
    if not x.is_static or not x.dtype.is_floating_point or not w.dtype.is_floating_point:
        return False
    if any(i not in graph.constants for i in node.inputs[2:]):
        return False
    if node.op == "conv":
        return x.rank == 4 and w.dim() == 4
    return w.dim() == 2 and 2 <= x.rank <= 4


def candidate_layers(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if is_candidate(n, graph)]


def layer_key(node: Node) -> str:
    """A layer's identity across the graphs one build makes: its output value's name."""
    return node.outputs[0]


def layer_name(node: Node) -> str:
    return node.name or node.outputs[0]


def layer_aliases(node: Node) -> list[str]:
    """Names an override may use for a layer: the IR node name, its output value, and the module
    path its weight came from ("layer1.0.conv1" for the constant "layer1.0.conv1.weight_bn")."""
    names = [node.name, node.outputs[0]]
    for part in node.inputs[1].split("+"):  # merged Q/K/V weights are named "q.weight+k.weight+..."
        names.append(part.split(".weight")[0] if ".weight" in part else part)
    return [n for n in dict.fromkeys(names) if n]


def matches(node: Node, patterns) -> bool:
    return any(fnmatch.fnmatchcase(alias, p) for p in patterns for alias in layer_aliases(node))


# ------------------------------------------------------------------------- the rewrite ----
def activation_scale(threshold: float) -> torch.Tensor:
    """scale = T / 127 as the fp32 scalar every kernel and the reference use."""
    return torch.tensor(max(float(threshold), _MIN_THRESHOLD) / QMAX, dtype=torch.float32)


def quantize_weight(w: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-channel int8 weights along `axis`: (int8 weights, fp32 scales [C])."""
    dims = [d for d in range(w.dim()) if d != axis]
    amax = w.detach().double().abs().amax(dim=dims) if dims else w.detach().double().abs()
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax)).float()
    shape = [-1 if d == axis else 1 for d in range(w.dim())]
    q = torch.round(w.float() / scale.reshape(shape)).clamp(-QMAX, QMAX).to(torch.int8)
    return q, scale


def quantize_layers(graph: Graph, selected: set[str], thresholds: dict[str, float],
                    residuals: bool = True, commute: bool = True) -> Graph:
    """Rewrite the layers whose layer_key is in `selected` into int8 layers."""
    quantized: dict[str, str] = {}  # float value -> its int8 copy in the new graph
    zeros: list[str] = []           # one shared int8 zero point

    def int8_input(value: str, rb: Rebuild) -> str:
        if value not in quantized:
            scale = rb.builder.constant(activation_scale(thresholds[value]), f"{value}_scale")
            if not zeros:
                zeros.append(rb.builder.constant(torch.zeros((), dtype=torch.int8), "int8_zero"))
            zero = zeros[0]
            quantized[value] = rb.builder.add1("quantize_linear", [rb.value(value), scale, zero],
                                               {"axis": 0, "narrow": True}, name=f"{value}_int8")
        return quantized[value]

    def to_int8(node: Node, rb: Rebuild):
        if layer_key(node) not in selected or not is_candidate(node, graph):
            return None
        x = node.inputs[0]
        xq = int8_input(x, rb)
        x_scale = float(activation_scale(thresholds[x]))
        weight = graph.constants[node.inputs[1]]
        if node.op == "conv":
            wq, w_scale = quantize_weight(weight, 0)
        else:  # matmul weight [K, N]: per output column, stored K-major [N, K]
            wq, w_scale = quantize_weight(weight, 1)
            wq = wq.t().contiguous()
        ins = [xq, rb.builder.constant(wq, node.inputs[1] + "_int8"),
               rb.builder.constant(w_scale, node.inputs[1] + "_wscale")]
        ins += [rb.value(i) for i in node.inputs[2:]]
        attrs = dict(node.attrs, x_scale=x_scale, dtype=graph.types[node.outputs[0]].dtype)
        # Same output name as the float layer: thresholds (calibrated on the float graph) stay
        # keyed by it, e.g. a downsample branch's for dequantize_residuals.
        return rb.builder.add("qconv" if node.op == "conv" else "qmatmul", ins, attrs, node.name,
                              outputs=node.outputs)

    out = rewrite(graph, to_int8)
    if residuals:
        out = dequantize_residuals(out, thresholds)
    if commute:
        out = quantize_earlier(out)
    return eliminate_dead_code(out)


def _int8_copies(graph: Graph) -> dict[str, Node]:
    """float value -> the (first) narrow quantize_linear node that makes its int8 copy."""
    copies: dict[str, Node] = {}
    for node in graph.nodes:
        if node.op == "quantize_linear" and node.attrs.get("narrow"):
            copies.setdefault(node.inputs[0], node)
    return copies


def residual_branches(graph: Graph, layers: list[Node]) -> list[str]:
    """Outputs of conv layers read only by an `add` with another conv layer's output (ResNet's
    downsample branch): the values whose thresholds let the residual rewrite store them as int8."""
    consumers = graph.consumers()
    convs = {n.outputs[0] for n in layers if n.op == "conv"}
    out = []
    for node in graph.nodes:
        if node.op != "add" or not all(v in convs for v in node.inputs):
            continue
        out += [v for v in node.inputs if len(consumers.get(v, [])) == 1 and v not in graph.outputs]
    return list(dict.fromkeys(out))


def dequantize_residuals(graph: Graph, thresholds: dict[str, float] | None = None) -> Graph:
    """add(int8 layer's output, v) with v also quantized -> add(output, dequantize_linear(v_int8));
    v produced by another int8 layer for this add alone, with a threshold: quantized here first."""
    producers, consumers = graph.producers(), graph.consumers()
    copies = _int8_copies(graph)
    int8_ops = ("qconv", "qmatmul")
    thresholds = thresholds or {}

    def branch_copy(value: str, add: Node, rb: Rebuild):
        """A narrow quantize_linear of `value` (an int8 layer's output read only by `add`)."""
        producer = producers.get(value)
        if (producer is None or producer.op not in int8_ops or value not in thresholds
                or value in graph.outputs or [id(c) for c in consumers.get(value, [])] != [id(add)]):
            return None
        scale = rb.builder.constant(activation_scale(thresholds[value]), f"{value}_scale")
        zero = rb.builder.constant(torch.zeros((), dtype=torch.int8), f"{value}_zero")
        rb.builder.add1("quantize_linear", [rb.value(value), scale, zero], {"axis": 0, "narrow": True},
                        name=f"{value}_int8")
        return rb.builder.graph.nodes[-1]

    def rewrite_add(node: Node, rb: Rebuild):
        if node.op != "add":
            return None
        a, b = node.inputs
        for layer_out, other in ((a, b), (b, a)):
            producer = producers.get(layer_out)
            if (producer is None or producer.op not in int8_ops
                    or graph.types[other] != graph.types[node.outputs[0]]
                    or graph.types[other].rank != 4):
                continue
            q = copies.get(other) or branch_copy(other, node, rb)
            if q is None:
                continue
            # Typed like `other` (no cast node): the add's kernel keeps it in fp32 registers
            # rather than rounding it through fp16 (15% of the int8 layer1 residual kernel, H200).
            dq = rb.builder.add1("dequantize_linear", [rb.value(q.outputs[0]), rb.value(q.inputs[1]),
                                                       rb.value(q.inputs[2])],
                                 {"axis": 0, "dtype": graph.types[other].dtype},
                                 name=f"{other}_dequantized")
            # The int8 layer's output first: fusion tries an add's inputs in order, and the add
            # (with the dequantization absorbed) belongs in that layer's epilogue.
            return rb.builder.add("add", [rb.value(layer_out), dq], node.attrs, node.name)
        return None

    return rewrite(graph, rewrite_add)


COMMUTING_OPS = ("max_pool", "reshape", "transpose")


def quantize_earlier(graph: Graph) -> Graph:
    """quantize_linear(f(u)) -> f(quantize_linear(u)) for f = max_pool, reshape, transpose, when
    nothing else reads f's float output or u: f then moves int8, and u is stored as int8 only.
    Exact for one per-tensor scale (rounding and clamping are monotonic; the others move data).
    Repeats, so a quantization moves up a chain (max_pool -> reshape -> quantize)."""
    for _ in range(len(graph.nodes)):
        moved = _commute_once(graph)
        if moved is graph:
            return graph
        graph = moved
    return graph


def _commute_once(graph: Graph) -> Graph:
    consumers = graph.consumers()
    producers = graph.producers()
    moved: dict[str, Node] = {}  # f's output -> the quantize node that reads it
    for value, q in _int8_copies(graph).items():
        f = producers.get(value)
        if (f is None or f.op not in COMMUTING_OPS or len(f.outputs) != 1
                or value in graph.outputs or f.inputs[0] in graph.outputs
                or f.inputs[0] in graph.constants
                or any(c is not q for c in consumers.get(value, []))
                or len(consumers.get(f.inputs[0], [])) != 1):
            continue
        moved[value] = q
    if not moved:
        return graph
    quantize_ids = {id(q) for q in moved.values()}

    def commute(node: Node, rb: Rebuild):
        if node.outputs[0] in moved:
            q = moved[node.outputs[0]]
            uq = rb.builder.add1("quantize_linear", [rb.value(node.inputs[0])] +
                                 [rb.value(i) for i in q.inputs[1:]], q.attrs,
                                 name=f"{node.inputs[0]}_int8")
            out = rb.builder.add1(node.op, [uq], node.attrs, node.name)
            rb.rename[q.outputs[0]] = out
            return [out]  # (the float output had no other reader)
        if id(node) in quantize_ids:
            return [rb.value(node.outputs[0])]
        return None

    return rewrite(graph, commute)
