"""The Engine at run time: input checks, dynamic batch (optimization profiles), graph outputs."""
from __future__ import annotations

import re

import pytest
import torch

from trident.compiler import InputError, TridentError, UnsupportedError, build_engine
from trident.compiler.build import BuildTrace
from trident.compiler.codegen.dynamic import fit
from trident.compiler.codegen.dynamic_source import generic_source
from trident.compiler.codegen.polyfit import Grid
from trident.compiler.ir.shapes import BatchProfile, Poly, instantiate
from trident.models import MODELS

# torch.onnx.export's TorchScript exporter announces its own deprecation
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def mlp():
    build, make_inputs = MODELS["mlp"]
    return build(), make_inputs


@pytest.fixture(scope="module")
def static_engine(mlp):
    model, make_inputs = mlp
    return build_engine(model, "fp32", make_inputs(4))


@pytest.fixture(scope="module")
def dynamic_engine(mlp):
    model, make_inputs = mlp
    return build_engine(model, "fp32", make_inputs(2), batch=(1, 4, 16))


# --------------------------------------------------------------------- input checks ----
def name_of(engine) -> str:
    """The graph input's name (what the frontend called the model's forward argument)."""
    return re.escape(engine.inputs[0])


def test_wrong_count(static_engine):
    x = torch.randn(4, 64)
    name = name_of(static_engine)
    with pytest.raises(InputError, match=rf"expected 1 input\(s\) \({name}: float32\(4, 64\)\), got 2"):
        static_engine(x, x)
    with pytest.raises(InputError, match="got 0"):
        static_engine()


def test_wrong_dtype(static_engine):
    with pytest.raises(InputError, match=rf'input "{name_of(static_engine)}" \(#1 of 1\): expected '
                                         r"dtype torch.float32, got torch.float16"):
        static_engine(torch.randn(4, 64, dtype=torch.float16))


def test_wrong_shape(static_engine):
    with pytest.raises(InputError, match=rf'input "{name_of(static_engine)}".*expected shape '
                                         r"\(4, 64\), got \(4, 65\)"):
        static_engine(torch.randn(4, 65))
    with pytest.raises(InputError, match=r"expected shape \(4, 64\), got \(64,\)"):
        static_engine(torch.randn(64))


def test_wrong_device(static_engine):
    with pytest.raises(InputError, match=rf'input "{name_of(static_engine)}".*expected a tensor '
                                         r"on cpu, got one on meta"):
        static_engine(torch.empty(4, 64, device="meta"))


def test_not_a_tensor(static_engine):
    with pytest.raises(InputError, match=rf'input "{name_of(static_engine)}".*expected a '
                                         r"torch.Tensor, got list"):
        static_engine([[0.0] * 64] * 4)


def test_non_contiguous_input_is_fine(static_engine, mlp):
    model, _ = mlp
    x = torch.randn(64, 4).t()
    with torch.no_grad():
        torch.testing.assert_close(static_engine(x)[0], model(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------- dynamic batch ----
def test_profile_parsing():
    assert BatchProfile.parse("1:32:256") == BatchProfile(1, 32, 256)
    assert BatchProfile.parse(8) == BatchProfile(8, 8, 8) and BatchProfile.parse(8).is_static
    for bad in ("0:1:2", "4:2:8", "a:b", (1, 2), "1:2:3:4"):
        with pytest.raises(TridentError, match="batch profile"):
            BatchProfile.parse(bad)


BATCH_GRID = Grid(("batch",), ((2, 3),), ((9,),))


def test_polynomial_fit():
    assert fit(BATCH_GRID, {(2,): 8, (3,): 12, (9,): 36}, "x") == Poly.of("batch", 4)
    assert fit(BATCH_GRID, {(2,): (5, 7), (3,): (5, 9), (9,): (5, 21)}, "x") == (5, Poly.of("batch", 2, 3))
    assert instantiate({"shape": (Poly.of("batch"), 16)}, {"batch": 7}) == {"shape": (7, 16)}
    square = Grid(("batch",), ((2, 3, 4),), ((9,),))
    assert str(fit(square, {(2,): 4, (3,): 9, (4,): 16, (9,): 81}, "x")) == "batch * batch"
    with pytest.raises(UnsupportedError, match="depends on the sizes"):
        fit(BATCH_GRID, {(2,): 4, (3,): 9, (9,): 81}, "square")  # not linear on a linear grid
    with pytest.raises(UnsupportedError, match="depends on the sizes"):
        fit(BATCH_GRID, {(2,): 1, (3,): 2, (9,): 3}, "ceil-division")
    with pytest.raises(UnsupportedError, match="depends on the sizes"):
        fit(BATCH_GRID, {(2,): 0.5, (3,): 0.25, (9,): 0.125}, "a float")


def test_non_polynomial_kernel_is_refused():
    src = "@triton.jit\ndef kernel(in0, BLOCK: tl.constexpr):\n    x = {}\n"
    points = [(2,), (3,), (9,)]
    with pytest.raises(UnsupportedError, match="kernel k.*depends on the sizes"):
        generic_source(BATCH_GRID, [src.format(4), src.format(9), src.format(81)], points, "k",
                       {"batch": "size_batch"}, lambda t: 0)
    with pytest.raises(UnsupportedError, match="different structure"):
        generic_source(BATCH_GRID, [src.format("a"), src.format("b + 1"), src.format("c")],
                       points, "k", {"batch": "size_batch"}, lambda t: 0)


def test_dynamic_engine_matches_eager_at_every_batch(dynamic_engine, mlp):
    model, make_inputs = mlp
    assert dynamic_engine.profile.symbols == {"batch": BatchProfile(1, 4, 16)}
    kernels = dynamic_engine.plan.kernel_steps()
    assert kernels and all("def kernel(size_batch, " in k.source and k.sizes == ("batch",)
                           for k in kernels)
    for batch in (1, 5, 16):
        x = make_inputs(batch)
        (out,) = dynamic_engine(*x)
        assert out.shape == (batch, 10)
        with torch.no_grad():
            torch.testing.assert_close(out, model(*x), rtol=1e-4, atol=1e-5)
    # every batch size seen has its own arena views (and, on a GPU, its own CUDA graph)
    assert {(1,), (5,), (16,)} <= set(dynamic_engine._bound)
    assert dynamic_engine.arena.nbytes == dynamic_engine.memory.arena_bytes


@pytest.mark.parametrize("batch", [0, 17, 64])
def test_batch_outside_profile(dynamic_engine, batch):
    x = torch.randn(batch, 64)
    name = name_of(dynamic_engine)
    with pytest.raises(InputError, match=rf'input "{name}": dim 0 \(batch\) is {batch}, outside '
                                         r"the engine's optimization profile \[1, 16\] \(shape "
                                         rf"\({batch}, 64\); batch: min 1, opt 4, max 16\)"):
        dynamic_engine(x)


def test_dynamic_engine_other_dims_still_checked(dynamic_engine):
    with pytest.raises(InputError, match=r"expected shape \(batch, 64\) = \(3, 64\) at batch=3, "
                                         r"got \(3, 32\)"):
        dynamic_engine(torch.randn(3, 32))


def test_static_profile_builds_for_that_batch(mlp):
    model, make_inputs = mlp
    engine = build_engine(model, "fp32", make_inputs(2), batch=3)
    assert engine.profile is None and engine.input_specs()[0][1] == (3, 64)
    with pytest.raises(InputError, match=r"expected shape \(3, 64\), got \(2, 64\)"):
        engine(*make_inputs(2))


def test_dynamic_onnx_model(tmp_path):
    build, make_inputs = MODELS["multihead"]
    model = build()
    path = tmp_path / "multihead.onnx"
    torch.onnx.export(model, make_inputs(2), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    engine = build_engine(str(path), "fp32", batch="1:2:8")
    for batch in (1, 7):
        x = make_inputs(batch)
        with torch.no_grad():
            for got, ref in zip(engine(*x), model(*x)):
                torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    fixed = tmp_path / "fixed.onnx"
    torch.onnx.export(model, make_inputs(2), str(fixed), dynamo=False, input_names=["x"])
    with pytest.raises(UnsupportedError, match="no input's shape changes with the batch"):
        build_engine(str(fixed), "fp32", batch="1:2:8")


def test_dynamic_batch_with_a_horizontal_kernel():
    """resnet_tiny's downsample and conv1 share a launch; its members get the run-time batch."""
    from trident.compiler import build_engine
    from trident.models import MODELS

    build, make_inputs = MODELS["resnet_tiny"]
    model = build().eval()
    trace = BuildTrace()
    engine = build_engine(model, "fp32", make_inputs(4), batch=(1, 4, 8), trace=trace)
    assert any(s.group.kind == "horizontal" for s in trace.program.steps)
    for batch in (2, 8):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(x)
        assert ((engine(x)[0] - expected).norm() / expected.norm()).item() < 1e-5


def test_cuda_graphs_follow_the_environment_switch(static_engine, monkeypatch):
    # TRIDENT_CUDA_GRAPHS=0 (config.CUDA_GRAPHS) is how runs under compute-sanitizer launch eagerly;
    # an explicit cuda_graph= still wins.
    from trident.compiler import config
    from trident.runtime.engine import Engine

    plan = static_engine.plan
    monkeypatch.setattr(config, "CUDA_GRAPHS", False)
    assert Engine(plan).cuda_graph is False
    assert Engine(plan, cuda_graph=True).cuda_graph is True
    monkeypatch.setattr(config, "CUDA_GRAPHS", True)
    assert Engine(plan).cuda_graph is True
