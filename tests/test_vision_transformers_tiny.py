"""Tiny configurations of transformers' vision models (ViT, DeiT, DINOv2, CLIP's and SigLIP's vision
towers, ConvNeXt, Swin: hidden 16-32, 2 layers, 32 x 32 images, random weights) through both entry
points at fp32 and fp16, against eager fp32. Their stems are patch convs, which run as one GEMM over
the image's patches (compiler/passes/patches.py); nothing may run in torch."""
from __future__ import annotations

import pytest
import torch

from trident.compiler import build_engine
from trident.compiler.autotune import problem_of
from trident.compiler.testing import compile_with_reports, relative_error, run_engine

t = pytest.importorskip("transformers")

from trident.tools.zoo_run import export_onnx  # noqa: E402

pytestmark = pytest.mark.usefixtures("fresh_dynamo")  # (tests/conftest.py)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = {"fp32": 1e-5, "fp16": 5e-3}  # relative error ‖y − y_eager‖ / ‖y_eager‖
_LAYERS = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, num_channels=3)
MODELS = {
    "vit": lambda: t.ViTModel(t.ViTConfig(patch_size=8, intermediate_size=64, **_LAYERS)),
    "deit": lambda: t.DeiTModel(t.DeiTConfig(patch_size=8, intermediate_size=64, **_LAYERS)),
    "dinov2": lambda: t.Dinov2Model(t.Dinov2Config(patch_size=8, mlp_ratio=2, **_LAYERS)),
    "clip_vision": lambda: t.CLIPVisionModel(t.CLIPVisionConfig(patch_size=8, intermediate_size=64, **_LAYERS)),
    "siglip_vision": lambda: t.SiglipVisionModel(t.SiglipVisionConfig(patch_size=8, intermediate_size=64,
                                                                      **_LAYERS)),
    "convnext": lambda: t.ConvNextModel(t.ConvNextConfig(num_channels=3, hidden_sizes=[16, 32], depths=[1, 1],
                                                         num_stages=2, patch_size=4)),
    "swin": lambda: t.SwinModel(t.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                             num_heads=[2, 2], window_size=4)),
}


class LastHidden(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).last_hidden_state


def tiny(name: str):
    torch.manual_seed(0)
    return LastHidden(MODELS[name]()).eval(), torch.randn(2, 3, 32, 32)


def image_convs(engine) -> list[dict]:
    """The problems of conv kernels over 3-channel inputs (the image: the patch conv)."""
    problems = [problem_of(s.source) for s in engine.plan.kernel_steps()]
    return [p for p in problems if p.get("template") == "conv" and p.get("C") == 3]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_through_torch_compile(name, precision):
    module, x = tiny(name)
    module, x = module.to(DEV), x.to(DEV)
    with torch.no_grad():
        ref = module(x)
    got, reports = compile_with_reports(module, x, precision=precision)
    assert relative_error(got.float(), ref) < TOLERANCE[precision]
    assert [t for r in reports for t in r.in_torch] == [] and sum(r.torch_steps for r in reports) == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_through_onnx(name):
    module, x = tiny(name)
    engine = build_engine(export_onnx(module, (x,)), precision="fp32")
    with torch.no_grad():
        ref = module(x)
    (got,) = run_engine(engine, x)
    assert relative_error(got, ref) < TOLERANCE["fp32"]
    assert [s.node.op for s in engine.plan.steps if s.kind == "torch"] == []
    assert image_convs(engine) == []  # the patch conv is a GEMM over the patches
