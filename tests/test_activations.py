"""compiler/passes/activations.py: GELU written out as x * 0.5 * (1 + erf(x / sqrt 2)) becomes one
`gelu` node, in every association the exporters and model authors write; near misses stay as they
are; the folded graph computes the exact GELU (checked against float64 erfc) where the spelled-out
form cancels; the tanh form (GPT-2's `gelu_new`, `gelu_fast`) becomes a tanh `gelu`."""
import math

import pytest
import torch

from trident.compiler import build_engine
from trident.compiler.build import import_model
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.passes.activations import fold_gelu
from trident.compiler.reference import run_reference
from trident.compiler.testing import assert_matches_reference, export_onnx, run_engine

SHAPE = (3, 5, 7)


def spelled_gelu(form: str, root2=math.sqrt(2), half=0.5, one=1.0, other_x=False):
    """A graph of x -> GELU written out op by op, in one of the forms seen in exported models."""
    b = GraphBuilder("gelu")
    x = b.input("x", TensorType(SHAPE, torch.float32))
    y = b.input("y", TensorType(SHAPE, torch.float32))
    c = lambda v, n: b.constant(torch.tensor(v), n)  # noqa: E731  (0-d constants, as exporters write)
    arg = (b.add1("div", [x, c(root2, "root2")]) if form != "mul_by_inverse"
           else b.add1("mul", [c(1 / root2, "inv_root2"), x]))
    e = b.add1("add", [c(one, "one"), b.add1("erf", [arg])])
    scaled = y if other_x else x
    if form in ("div", "mul_by_inverse"):      # torch's decomposition: mul(mul(x, 0.5), 1 + erf)
        out = b.add1("mul", [b.add1("mul", [scaled, c(half, "half")]), e])
    elif form == "half_last":                   # transformers' BERT: (x * (1 + erf)) * 0.5
        out = b.add1("mul", [b.add1("mul", [scaled, e]), c(half, "half")])
    else:                                       # x * (0.5 * (1 + erf))
        out = b.add1("mul", [scaled, b.add1("mul", [e, c(half, "half")])])
    return b.finish([out])


def ops(graph) -> list[str]:
    return [n.op for n in graph.nodes]


@pytest.mark.parametrize("form", ["div", "mul_by_inverse", "half_last", "half_inside"])
def test_every_association_folds_into_one_gelu(form, rng):
    graph = spelled_gelu(form)
    folded = fold_gelu(graph)
    assert ops(folded) == ["gelu"] and folded.nodes[0].attrs["approximate"] == "none"
    xs = [torch.randn(SHAPE, generator=rng) * 3, torch.randn(SHAPE, generator=rng)]
    torch.testing.assert_close(run_reference(folded, xs)[0], run_reference(graph, xs)[0], rtol=1e-6, atol=1e-6)
    assert_matches_reference(folded, xs, max_kernels=1)


def test_constants_of_an_fp16_export_fold_too():
    fp16 = lambda v: float(torch.tensor(v, dtype=torch.float16))  # noqa: E731
    assert ops(fold_gelu(spelled_gelu("mul_by_inverse", root2=1 / fp16(math.sqrt(0.5))))) == ["gelu"]


@pytest.mark.parametrize("change", [{"root2": 2.0}, {"half": 0.25}, {"one": 2.0}, {"other_x": True}])
def test_near_misses_stay_as_written(change, rng):
    graph = spelled_gelu("div", **change)
    folded = fold_gelu(graph)
    assert "gelu" not in ops(folded) and "erf" in ops(folded)
    xs = [torch.randn(SHAPE, generator=rng), torch.randn(SHAPE, generator=rng)]
    torch.testing.assert_close(run_reference(folded, xs)[0], run_reference(graph, xs)[0], rtol=0, atol=0)


def test_a_product_read_twice_is_left_alone():
    # mul(x, 0.5) also feeds the output: folding the outer product would leave it computed anyway,
    # and its factors are not this product's alone
    b = GraphBuilder("shared")
    x = b.input("x", TensorType(SHAPE, torch.float32))
    half = b.add1("mul", [x, b.constant(torch.tensor(0.5), "half")])
    e = b.add1("add", [b.add1("erf", [b.add1("div", [x, b.constant(torch.tensor(math.sqrt(2)), "r")])]),
                       b.constant(torch.tensor(1.0), "one")])
    graph = b.finish([b.add1("mul", [half, e]), half])
    assert "gelu" not in ops(fold_gelu(graph))


def test_other_products_beside_a_gelu_are_untouched(rng):
    b = GraphBuilder("beside")
    x = b.input("x", TensorType(SHAPE, torch.float32))
    y = b.input("y", TensorType(SHAPE, torch.float32))
    arg = b.add1("div", [x, b.constant(torch.tensor(math.sqrt(2)), "r")])
    e = b.add1("add", [b.add1("erf", [arg]), b.constant(torch.tensor(1.0), "one")])
    gelu = b.add1("mul", [b.add1("mul", [x, b.constant(torch.tensor(0.5), "half")]), e])
    graph = b.finish([gelu, b.add1("mul", [x, y]), b.add1("mul", [arg, y])])
    folded = fold_gelu(graph)
    assert sorted(ops(folded)) == ["div", "gelu", "mul", "mul"]
    xs = [torch.randn(SHAPE, generator=rng), torch.randn(SHAPE, generator=rng)]
    for got, want in zip(run_reference(folded, xs), run_reference(graph, xs)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


class ExplicitGelu(torch.nn.Module):
    """A linear layer and transformers' BERT GELU, as the model writes it."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 16)

    def forward(self, x):
        x = self.linear(x)
        return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


@pytest.mark.parametrize("via", ["onnx", "fx"])
def test_model_gelu_joins_the_gemm_and_is_exact_in_the_tail(via):
    torch.manual_seed(3)
    model = ExplicitGelu().eval()
    x = torch.randn(4, 8)
    source = export_onnx(model, (x,)) if via == "onnx" else model
    engine = build_engine(source, "fp32", example_inputs=None if via == "onnx" else [x])
    (step,) = engine.plan.kernel_steps()
    assert "gelu" in step.name and "erf" not in step.name
    with torch.no_grad():
        torch.testing.assert_close(run_engine(engine, x)[0], model(x), rtol=1e-5, atol=1e-5)
    # far down the negative tail the written-out form is 0 (1 + erf cancels); the engine is exact
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.copy_(torch.linspace(-9, -5, 16))
    engine = build_engine(export_onnx(model, (x,)) if via == "onnx" else model, "fp32",
                          example_inputs=None if via == "onnx" else [x])
    got = run_engine(engine, x)[0].double()
    z = model.linear.bias.double()
    exact = (z * 0.5 * torch.special.erfc(-z / math.sqrt(2))).expand_as(got)
    assert ((got - exact).abs() / exact.abs()).max() < 3e-5
    assert (model(x)[:, :8] == 0).all()  # (torch's fp32 result there)


@pytest.mark.parametrize("precision, gelu", [("fp32", "prims.gelu_erf("), ("fp16", "prims.gelu_erf_half(")])
def test_a_16_bit_gelu_takes_the_shorter_fit(precision, gelu):
    """The GEMM + GELU kernel of an fp16 engine rounds the GELU to fp16, so it runs the degree-6
    fit (within one fp16 ulp: tests/test_prims.py); an fp32 engine keeps the full one."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU()).eval()
    x = torch.randn(4, 8)
    engine = build_engine(model, precision, example_inputs=[x])
    (step,) = [s for s in engine.plan.kernel_steps() if "gelu" in s.source]  # (fp16: casts beside it)
    assert gelu in step.source and ("gelu_erf_half" in step.source) == (precision == "fp16")
    with torch.no_grad():
        tolerance = dict(rtol=2e-3, atol=2e-3) if precision == "fp16" else dict(rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(run_engine(engine, x)[0].float(), model(x), **tolerance)


class TanhGelu(torch.nn.Module):
    """The tanh-form GELU as models write it out: transformers' `gelu_new` (GPT-2: pow(x, 3)),
    `gelu_fast` (x * c * (1 + 0.044715 * x * x)) and the cube as products; `c`, `cubic`, `half`
    and `other_x` make near misses of them."""

    def __init__(self, form: str, c=math.sqrt(2 / math.pi), cubic=0.044715, half=0.5, other_x=False):
        super().__init__()
        self.form, self.c, self.cubic, self.half, self.other_x = form, c, cubic, half, other_x

    def forward(self, x, y):
        if self.form == "gelu_new":
            arg = self.c * (x + self.cubic * torch.pow(x, 3.0))
        elif self.form == "gelu_fast":
            arg = x * self.c * (1.0 + self.cubic * x * x)
        elif self.form == "mixed":  # a cube of another tensor: no polynomial in x
            arg = self.c * (x + self.cubic * y * y * y)
        else:
            arg = (x + x * x * x * self.cubic) * self.c
        scaled = y if self.other_x else x
        return self.half * scaled * (1.0 + torch.tanh(arg))


def _folded(module: torch.nn.Module, via: str = "fx"):
    xs = [torch.randn(SHAPE), torch.randn(SHAPE)]
    source = export_onnx(module, tuple(xs)) if via == "onnx" else module
    return fold_gelu(import_model(source, None if via == "onnx" else xs))


@pytest.mark.parametrize("via", ["fx", "onnx"])
@pytest.mark.parametrize("form", ["gelu_new", "gelu_fast", "cube_by_products"])
def test_every_tanh_form_folds_into_one_tanh_gelu(form, via, rng):
    folded = _folded(TanhGelu(form), via)
    assert ops(folded) == ["gelu"] and folded.nodes[0].attrs["approximate"] == "tanh"
    xs = [torch.randn(SHAPE, generator=rng) * 3, torch.randn(SHAPE, generator=rng)]
    with torch.no_grad():
        want = TanhGelu(form)(*xs)
    xs = xs[:len(folded.inputs)]  # (the ONNX export drops the unused y)
    torch.testing.assert_close(run_reference(folded, xs)[0], want, rtol=1e-5, atol=1e-6)
    assert_matches_reference(folded, xs, max_kernels=1)


@pytest.mark.parametrize("change", [{"c": 0.7}, {"cubic": 0.05}, {"half": 0.25}, {"other_x": True},
                                    {"form": "mixed"}])
def test_tanh_near_misses_stay_as_written(change):
    folded = _folded(TanhGelu(**{"form": "gelu_new", **change}))
    assert "gelu" not in ops(folded) and "tanh" in ops(folded)


@pytest.mark.parametrize("via", ["onnx", "fx"])
def test_a_gpt2_gelu_joins_the_gemm_and_keeps_its_negative_tail(via):
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), GptGelu()).eval()
    x = torch.randn(4, 8)
    source = export_onnx(model, (x,)) if via == "onnx" else model
    engine = build_engine(source, "fp32", example_inputs=None if via == "onnx" else [x])
    (step,) = engine.plan.kernel_steps()
    assert "gelu" in step.name and "tanh" not in step.name and "prims.gelu_tanh(" in step.source
    with torch.no_grad():
        torch.testing.assert_close(run_engine(engine, x)[0], model(x), rtol=1e-5, atol=1e-5)
        model[0].weight.zero_()
        model[0].bias.copy_(torch.linspace(-7, -4, 16))
    engine = build_engine(export_onnx(model, (x,)) if via == "onnx" else model, "fp32",
                          example_inputs=None if via == "onnx" else [x])
    z = model[0].bias.double()
    exact = z * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3))
    got = run_engine(engine, x)[0].double()
    assert ((got - exact) / exact).abs().max() < 2e-5
    with torch.no_grad():  # torch's fp32 form, written out, is 20-100% off there
        assert ((model(x)[0].double() - exact) / exact).abs().max() > 0.1


class GptGelu(torch.nn.Module):
    """transformers' NewGELUActivation (GPT-2's `gelu_new`), as it is written."""

    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
