"""Strided views and the other view ops dynamo and torch.export emit, through the fx frontend and
the engine (compiler/frontend/fx/strided.py); constants folded on one device."""
from __future__ import annotations

import pytest
import torch

from trident.compiler import build_engine
from trident.compiler.frontend.fx import import_fx, on_one_device
from trident.compiler.frontend.fx.context import Ctx, Val
from trident.compiler.ir import TensorType
from trident.compiler.testing import run_engine


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


CASES = {  # name: (function of a [3, 4] input, the IR ops expected)
    "as_strided_transpose": (lambda x: torch.as_strided(x + 1, (4, 3), (1, 4)), "transpose"),
    "as_strided_slice": (lambda x: torch.as_strided(x + 1, (2, 4), (4, 1), 4), "slice"),
    "as_strided_expand": (lambda x: torch.as_strided(x + 1, (3, 2, 4), (0, 4, 1)), "expand"),
    "as_strided_windows": (lambda x: torch.as_strided(x + 1, (3, 3), (2, 1)), "gather"),
    "as_strided_of_transposed": (lambda x: (x + 1).t().as_strided((4, 2), (1, 4)), "gather"),
    "as_strided_size_one": (lambda x: torch.as_strided(x + 1, (1, 4), (99, 1), 8), "slice"),
    "unfold": (lambda x: (x + 1).unfold(1, 2, 1), "gather"),
    "movedim": (lambda x: torch.movedim(x.reshape(3, 2, 2), 0, -1) * 2, "transpose"),
    "unflatten": (lambda x: (x + 1).unflatten(1, (2, 2)), "reshape"),
    "slice_scatter": (lambda x: torch.slice_scatter(x, torch.ones(3, 2), 1, 1, 3), "concat"),
    # (torch.export decomposes select_scatter into a masked where)
    "select_scatter": (lambda x: torch.select_scatter(x, torch.ones(4), 0, 2), ("concat", "where")),
    "gather": (lambda x: torch.gather(x, 1, torch.tensor([[0, 3], [1, 1], [2, 0]])),
               "gather_elements"),
    "cumsum": (lambda x: torch.cumsum(x, 1), "cumsum"),
    "cumsum_bool": (lambda x: torch.cumsum(x > 0, 1), "cumsum"),
    "trig": (lambda x: torch.cos(x) + torch.sin(x), "cos"),
    "log_softmax": (lambda x: torch.log_softmax(x, -1), "log_softmax"),
}


def dynamo_graph(fn, x):
    graphs = []

    def capture(gm, example_inputs):
        graphs.append((gm, list(example_inputs)))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(Fn(fn), backend=capture)(x)
    torch._dynamo.reset()
    return graphs[0]


@pytest.mark.parametrize("tracer", ["export", "dynamo"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_view_ops_through_the_engine(name, tracer, rng):
    fn, op = CASES[name]
    x = torch.randn(3, 4, generator=rng)
    if tracer == "export":
        graph_module, examples = torch.export.export(Fn(fn), (x,)), (x,)
    else:
        graph_module, examples = dynamo_graph(fn, x)
    graph = import_fx(graph_module, examples)
    ops = (op,) if isinstance(op, str) else op
    assert set(ops) & {n.op for n in graph.nodes}
    engine = build_engine(graph_module, example_inputs=examples, precision="fp32")
    (got,) = run_engine(engine, x)
    ref = fn(x)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_as_strided_beyond_its_input_is_refused():
    x = torch.randn(3, 4)
    ep = torch.export.export(Fn(lambda t: (t + 1)[1:].as_strided((2, 4), (4, 1), 0)), (x,))
    with pytest.raises(Exception, match="as_strided.*reads storage outside its input"):
        import_fx(ep, (x,))


def test_constants_fold_on_the_device_of_the_others():
    """T5's bucket arithmetic under dynamo on a GPU: a position table made on the model's device
    meets the CPU scalars converters make (torch.min refuses to mix them). 'meta' stands in for
    the GPU here: torch refuses to mix it with the CPU the same way."""
    on_device = torch.arange(6, device="meta")
    with pytest.raises(RuntimeError):
        torch.minimum(on_device, torch.tensor([3]))
    moved = on_one_device([on_device, torch.tensor(3), (torch.tensor([1.0]), 2)])
    assert moved[1].device.type == "meta" and moved[2][0].device.type == "meta"
    assert moved[2][1] == 2
    cx = Ctx("t")
    folded = cx.emit("minimum", [on_device, torch.tensor([3])])
    assert folded.device.type == "meta" and folded.shape == (6,)


def test_graph_constants_live_on_the_cpu():
    """IR constants are CPU tensors whatever the model's device; the engine places them."""
    cx = Ctx("t")
    x = Val(cx.b.input("x", TensorType((2, 3), torch.float32)))
    on_device = torch.randn(2, 3, device="meta")  # the GPU's stand-in, as above
    assert on_one_device([on_device, torch.tensor(2.0)])[1].device.type == "meta"
    out = cx.emit("mul", [cx.emit("add", [x, torch.randn(2, 3)]), torch.tensor(2.0)])
    graph = cx.b.finish([out.name])
    assert graph.constants and all(t.device.type == "cpu" for t in graph.constants.values())
