"""The back-to-back MLP template (kernels/mlp.py, codegen/mlp.py, fusion's `mlp` groups): the kernel
against torch at shapes no block divides, with one row, no rows, NaN and inf; engines that fuse a
ConvNeXt / transformer MLP (layer scale, residual) at fp16 and bf16, and what they leave as two GEMMs;
engine files; and the tuning space. Every kernel these tests run is also compiled for sm_90."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trident.compiler import config
from trident.compiler.autotune import problem_of
from trident.compiler.autotune.constraints import config_error
from trident.compiler.autotune.space import candidates, full_space, prune
from trident.compiler.build import build_engine, load_engine
from trident.compiler.ir.launch import LaunchConfig
from trident.compiler.testing import run_engine
from trident.kernels.mlp import fits, mlp
from trident.tools.explain import explain

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _weights(c_in, hidden, c_out, dtype=torch.float16, seed=0):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(hidden, c_in, generator=g) / c_in ** 0.5
    w2 = torch.randn(c_out, hidden, generator=g) / hidden ** 0.5
    b1, b2 = torch.randn(hidden, generator=g), torch.randn(c_out, generator=g)
    return [t.to(DEVICE, dtype) for t in (w1, b1, w2, b2)]


def _reference(x, w1, b1, w2, b2):
    """fp32 math with the hidden activation rounded to the operands' dtype, as an engine stores it."""
    hidden = F.gelu(x.float() @ w1.float().T + b1.float()).to(x.dtype).float()
    return hidden @ w2.float().T + b2.float()


# (rows, C_IN, H, C_OUT, BLOCK_M, BLOCK_H): hidden steps that do and do not divide H, a step wider than H
@pytest.mark.parametrize("rows, c_in, hidden, c_out, block_m, block_h", [
    (37, 24, 96, 24, 16, 32), (5, 20, 40, 12, 16, 16), (70, 16, 64, 40, 32, 64), (1, 3, 17, 1, 16, 32)])
def test_kernel_matches_torch(rows, c_in, hidden, c_out, block_m, block_h):
    w1, b1, w2, b2 = _weights(c_in, hidden, c_out)
    x = torch.randn(rows, c_in, device=DEVICE, dtype=torch.float16)
    got = mlp(x, w1, b1, w2, b2, LaunchConfig.of(4, 1, BLOCK_M=block_m, BLOCK_H=block_h))
    ref = _reference(x, w1, b1, w2, b2)
    torch.testing.assert_close(got.float(), ref, rtol=2e-3, atol=2e-3 * ref.abs().max().item())


def test_kernel_with_no_rows_launches_nothing():
    w1, b1, w2, b2 = _weights(8, 32, 8)
    assert mlp(torch.empty(0, 8, device=DEVICE, dtype=torch.float16), w1, b1, w2, b2).shape == (0, 8)


def test_nan_and_inf_reach_only_their_rows():
    w1, b1, w2, b2 = _weights(16, 48, 16)
    x = torch.randn(20, 16, device=DEVICE, dtype=torch.float16)
    x[3, 5], x[11, 0] = float("nan"), float("inf")
    got = mlp(x, w1, b1, w2, b2, LaunchConfig.of(4, 1, BLOCK_M=16, BLOCK_H=32)).float().cpu()
    ref = _reference(x, w1, b1, w2, b2).cpu()
    bad = torch.zeros(20, dtype=torch.bool)
    bad[[3, 11]] = True
    assert got[3].isnan().all()
    torch.testing.assert_close(got[11].isnan(), ref[11].isnan())  # inf through GELU and W2: inf - inf is NaN
    assert got[~bad].isfinite().all()
    torch.testing.assert_close(got[~bad], ref[~bad], rtol=2e-3, atol=2e-3 * ref[~bad].abs().max().item())


def test_refusals_name_what_is_wrong():
    assert "float32" in fits(96, 384, 96, torch.float32)
    assert "384 channels" in fits(384, 1536, 384, torch.float16)
    assert "padded to 256" in fits(192, 768, 192, torch.float16)
    assert fits(256, 1024, 256, torch.bfloat16) is None and fits(96, 384, 96, torch.float16) is None
    w1, b1, w2, b2 = _weights(8, 32, 8)
    with pytest.raises(ValueError, match="unit channel stride"):
        mlp(torch.randn(8, 4, device=DEVICE, dtype=torch.float16).T, w1, b1, w2, b2)


class ConvNeXtMLP(nn.Module):
    """ConvNeXt's channels-last block tail: Linear -> GELU -> Linear -> layer scale -> residual."""

    def __init__(self, c=24, hidden=96):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(c, hidden), nn.GELU(), nn.Linear(hidden, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        return x + self.gamma * self.fc2(self.act(self.fc1(x)))


def _mlp_steps(engine):
    return [s for s in engine.plan.kernel_steps() if problem_of(s.source).get("template") == "mlp"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_engine_runs_the_block_as_one_kernel(dtype):
    """An fp16 engine of an fp32 model, and a bf16 model kept in bf16 (precision fp32)."""
    torch.manual_seed(0)
    model = ConvNeXtMLP(20, 72).eval()
    x = torch.randn(2, 5, 7, 20)  # 70 rows, 20 -> 72 -> 20 channels: no block divides them
    if dtype == torch.bfloat16:
        model, x = model.to(dtype), x.to(dtype)
    engine = build_engine(model, "fp16" if dtype == torch.float16 else "fp32", example_inputs=(x,))
    (step,) = _mlp_steps(engine)
    assert "gelu" in step.source and "mul(" in step.source and "add(" in step.source
    assert not [s for s in engine.plan.kernel_steps() if problem_of(s.source).get("template") == "matmul"]
    fresh = torch.randn(2, 5, 7, 20, dtype=x.dtype)
    with torch.no_grad():
        ref = model.float()(fresh.float())
    got = run_engine(engine, fresh)[0].float()
    tol = 4e-3 if dtype == torch.float16 else 3e-2
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol * ref.abs().max().item())


class ReciprocalMiddle(nn.Module):
    """A middle epilogue whose value at 0 is inf: the padded hidden columns must not reach W2."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 40, bias=False), nn.Linear(40, 16)

    def forward(self, x):
        return self.fc2(torch.reciprocal(self.fc1(x).abs() + 1))


def test_padded_hidden_columns_never_reach_the_second_product():
    torch.manual_seed(0)
    model = ReciprocalMiddle().eval()
    x = torch.randn(33, 16)
    engine = build_engine(model, "fp16", example_inputs=(x,))
    (step,) = _mlp_steps(engine)
    assert step.config["BLOCK_H"] > 40 or 40 % step.config["BLOCK_H"]  # a step covers columns past H
    got = run_engine(engine, x)[0].float()
    with torch.no_grad():
        ref = model(x)
    assert got.isfinite().all()
    torch.testing.assert_close(got, ref, rtol=4e-3, atol=4e-3 * ref.abs().max().item())


class HiddenAlsoReturned(ConvNeXtMLP):
    def forward(self, x):
        hidden = self.act(self.fc1(x))
        return x + self.gamma * self.fc2(hidden), hidden


@pytest.mark.parametrize("model, precision, why", [
    (HiddenAlsoReturned(16, 32), "fp16", "read elsewhere"),
    (ConvNeXtMLP(16, 32), "fp32", "float32"),
    (ConvNeXtMLP(272, 64), "fp16", "272 channels"),
    (ConvNeXtMLP(192, 64), "fp16", "padded to 256")])
def test_what_stays_two_gemms_and_explain_says_why(model, precision, why):
    model = model.eval()
    x = torch.randn(2, 3, model.fc1.in_features)
    engine = build_engine(model, precision, example_inputs=(x,))
    assert not _mlp_steps(engine)
    assert len([s for s in engine.plan.kernel_steps() if problem_of(s.source).get("template") == "matmul"]) == 2
    reasons = [line for line in explain(model, (x,), precision, source=False).splitlines() if "mlp: not fused" in line]
    assert len(reasons) == 1 and why in reasons[0]


def test_switch_keeps_two_gemms(monkeypatch):
    monkeypatch.setattr(config, "FUSE_MLP", False)
    engine = build_engine(ConvNeXtMLP(16, 32).eval(), "fp16", example_inputs=(torch.randn(3, 16),))
    assert not _mlp_steps(engine)


def test_engine_file_round_trip(tmp_path):
    torch.manual_seed(0)
    model, x = ConvNeXtMLP(16, 48).eval(), torch.randn(4, 9, 16)
    engine = build_engine(model, "fp16", example_inputs=(x,))
    assert _mlp_steps(engine)
    engine.save(tmp_path / "mlp.engine")
    loaded = load_engine(tmp_path / "mlp.engine")
    assert torch.equal(run_engine(loaded, x)[0], run_engine(engine, x)[0])


def test_tuning_space_holds_configs_the_kernel_accepts():
    engine = build_engine(ConvNeXtMLP(96, 384).eval(), "fp16", example_inputs=(torch.randn(1, 16, 16, 96),))
    (step,) = _mlp_steps(engine)
    problem, base = problem_of(step.source), step.config
    assert (problem["C_IN"], problem["H"], problem["C_OUT"], problem["M"]) == (96, 384, 96, 256)
    for level in ("fast", "full"):
        configs = candidates(problem, base, level)
        assert configs[0] == base and len(configs) > 1
        assert all(config_error(c, problem, base) is None for c in configs)
    assert len(prune(full_space(problem, base), problem)) < len(full_space(problem, base))
    wide = {**problem, "M": 100352}
    assert any(c["BLOCK_M"] == 128 for c in candidates(wide, base, "full"))
    # "fast" times the heuristic and the configs the H200 ranked next (kernels/mlp.py, RANKED)
    gpu_heuristic = LaunchConfig.of(4, 2, BLOCK_M=64, BLOCK_H=32)  # (the interpreter's is bigger)
    fast = [(c["BLOCK_M"], c["BLOCK_H"], c.num_warps, c.num_stages) for c in candidates(wide, gpu_heuristic, "fast")]
    assert fast == [(64, 32, 4, 2), (64, 64, 4, 2), (64, 32, 4, 3), (128, 32, 8, 3)]


class ConvNeXtBlock(nn.Module):
    """torchvision's CNBlock: depthwise 7x7, then over channels-last rows LayerNorm -> Linear -> GELU
    -> Linear, permuted back, layer scale, residual."""

    def __init__(self, c=20, norm=nn.LayerNorm):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = norm(c, eps=1e-6)
        self.fc1, self.act, self.fc2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.layer_scale = nn.Parameter(torch.rand(c, 1, 1) + 0.5)
        with torch.no_grad():  # (a norm's default weight is 1 and bias 0: make them count)
            self.norm.weight.uniform_(0.5, 1.5)
            if getattr(self.norm, "bias", None) is not None:
                self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        y = self.fc2(self.act(self.fc1(self.norm(self.dw(x).permute(0, 2, 3, 1)))))
        return x + self.layer_scale * y.permute(0, 3, 1, 2)


def test_the_layer_norm_in_front_runs_in_the_row_loads():
    torch.manual_seed(0)
    model = ConvNeXtBlock(20).eval()
    x = torch.randn(2, 20, 9, 11)  # 198 rows of 20 channels (padded to 32 in the tile)
    engine = build_engine(model, "fp16", example_inputs=(x,))
    (step,) = _mlp_steps(engine)
    assert step.name.startswith("mlp_layer_norm_matmul")
    assert not [s for s in engine.plan.kernel_steps() if problem_of(s.source).get("template") == "reduction"]
    fresh = torch.randn(2, 20, 9, 11)
    fresh[1, :, 4, 6] = float("nan")  # one pixel: its row (every channel) is NaN after the norm
    with torch.no_grad():
        ref = model(fresh)
    got = run_engine(engine, fresh)[0].float()
    torch.testing.assert_close(got.isnan(), ref.isnan())
    ok = ~ref.isnan()
    torch.testing.assert_close(got[ok], ref[ok], rtol=4e-3, atol=4e-3 * ref[ok].abs().max().item())


def test_an_onnx_rms_norm_in_front_runs_in_the_row_loads():
    """RMSNormalization (opset 23) -> MatMul + bias -> Relu -> MatMul + bias, as one kernel."""
    from onnx_util import F32, make_model, node

    rng = np.random.default_rng(0)
    w = {"s": rng.uniform(0.5, 1.5, 24), "w1": rng.standard_normal((24, 40)) / 5, "b1": rng.standard_normal(40),
         "w2": rng.standard_normal((40, 24)) / 6, "b2": rng.standard_normal(24)}
    w = {k: v.astype(F32) for k, v in w.items()}
    model = make_model([node("RMSNormalization", ["x", "s"], ["n"], axis=-1, epsilon=1e-5),
                        node("MatMul", ["n", "w1"], ["h"]), node("Add", ["h", "b1"], ["hb"]), node("Relu", ["hb"], ["r"]),
                        node("MatMul", ["r", "w2"], ["o"]), node("Add", ["o", "b2"], ["y"])],
                       {"x": (F32, [3, 11, 24])}, ["y"], w, opset=23)
    engine = build_engine(model, "fp16")
    (step,) = _mlp_steps(engine)
    # the input cast, the norm, both projections and the output cast: one kernel
    assert step.name == "mlp_cast_rms_norm_matmul_relu_matmul_cast" and len(engine.plan.kernel_steps()) == 1
    x = rng.standard_normal((3, 11, 24)).astype(F32)
    normed = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, -1, keepdims=True) + 1e-5) * w["s"]
    ref = torch.from_numpy(np.maximum(normed @ w["w1"] + w["b1"], 0) @ w["w2"] + w["b2"]).float()
    got = run_engine(engine, torch.from_numpy(x))[0].float()
    torch.testing.assert_close(got, ref, rtol=5e-3, atol=5e-3 * ref.abs().max().item())


class NormReadTwice(ConvNeXtBlock):
    def forward(self, x):
        normed = self.norm(x.permute(0, 2, 3, 1))
        return normed + self.fc2(self.act(self.fc1(normed)))


@pytest.mark.parametrize("model, why", [(NormReadTwice(16), "read elsewhere"), (ConvNeXtBlock(256), "would spill")])
def test_norms_left_in_their_own_kernel_and_why(model, why):
    model = model.eval()
    x = torch.randn(1, model.fc1.in_features, 3, 5)
    engine = build_engine(model, "fp16", example_inputs=(x,))
    (step,) = _mlp_steps(engine)
    assert "norm" not in step.name
    reasons = [line for line in explain(model, (x,), "fp16", source=False).splitlines() if "not fused" in line and "norm" in line]
    assert len(reasons) == 1 and why in reasons[0]


def test_a_shape_generic_engine_runs_the_mlp_at_every_size_of_its_profile():
    torch.manual_seed(0)
    model = ConvNeXtMLP(16, 48).eval()
    engine = build_engine(model, "fp16", (torch.randn(2, 5, 16),),
                          shapes={"x": ((1, 5, 16), (2, 5, 16), (4, 9, 16))})
    (step,) = _mlp_steps(engine)
    assert step.sizes  # one kernel for every size, its row count a launch argument
    for batch, length in ((1, 5), (3, 7), (4, 9)):
        x = torch.randn(batch, length, 16)
        with torch.no_grad():
            ref = model(x)
        got = run_engine(engine, x)[0].float()
        torch.testing.assert_close(got, ref, rtol=4e-3, atol=4e-3 * ref.abs().max().item())


def test_gpu_heuristic_takes_the_tiles_measured_best(monkeypatch):
    import trident.kernels.mlp as template

    monkeypatch.setattr(template, "is_interpreter", lambda: False)
    assert template.heuristic_config(100352, 96, 384, 96) == LaunchConfig.of(4, 2, BLOCK_M=64, BLOCK_H=32)
    assert template.heuristic_config(8192, 256, 1024, 256) == LaunchConfig.of(4, 2, BLOCK_M=64, BLOCK_H=64)
    assert template.heuristic_config(10, 8, 16, 8)["BLOCK_H"] == 16  # no step wider than the hidden dim
