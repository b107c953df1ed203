"""The fx frontend, op by op: small modules imported three ways (torch.fx.symbolic_trace,
torch.export, a dynamo graph as a torch.compile backend receives it), run on the reference
executor and compared with eager torch on fresh random inputs."""
from __future__ import annotations

import operator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten

from trident.compiler.errors import TridentError, UnsupportedError
from trident.compiler.frontend.fx import (import_fx, supported_fx_target, supported_targets,
                                          user_input_indices)
from trident.compiler.reference import run_reference
from trident.compiler.testing import relative_error, run_engine

# torch.export's own deprecation noise (pytree LeafSpec), not ours
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")

FP32 = dict(rtol=1e-4, atol=1e-5)
FP16 = dict(rtol=1e-2, atol=1e-3)
VIAS = ["symbolic", "export", "dynamo"]


class _Fn(nn.Module):
    """Wraps a function of the inputs (and of this module's parameters/submodules)."""

    def __init__(self, fn, **children):
        super().__init__()
        self.fn = fn
        for name, child in children.items():
            setattr(self, name, child)


class _Fn1(_Fn):
    def forward(self, a):
        return self.fn(self, a)


class _Fn2(_Fn):
    def forward(self, a, b):
        return self.fn(self, a, b)


class _Fn3(_Fn):
    def forward(self, a, b, c):
        return self.fn(self, a, b, c)


def Fn(fn, **children) -> nn.Module:
    """symbolic_trace needs a forward with named arguments (no *args): one class per arity."""
    arity = fn.__code__.co_argcount - 1
    return {1: _Fn1, 2: _Fn2, 3: _Fn3}[arity](fn, **children)


def randn(*shape):
    return lambda: torch.randn(*shape)


def randint(high, *shape):
    return lambda: torch.randint(0, high, shape)


def _outputs(y) -> list[torch.Tensor]:
    return tree_flatten(y)[0]


def capture_dynamo(module: nn.Module, inputs):
    """The smallest torch.compile backend: keep the graph and example inputs, run eagerly."""
    seen = {}

    def capture(gm, example_inputs):
        seen["gm"], seen["ex"] = gm, list(example_inputs)
        return gm.forward

    torch._dynamo.reset()  # one Fn class serves many tests: avoid dynamo's recompile limit
    torch.compile(module, backend=capture, fullgraph=True)(*inputs)
    return seen["gm"], seen["ex"]


def check(module: nn.Module, make_inputs, via: str, tol=FP32, dtype=None):
    """Import `module` via `via`, then compare reference and eager on fresh inputs."""
    module = module.eval()
    if dtype is not None:
        module = module.to(dtype)

    def fresh():
        return tuple(x.to(dtype) if dtype is not None and x.is_floating_point() else x
                     for x in (f() for f in make_inputs))

    example = fresh()
    if via == "dynamo":
        gm, ex = capture_dynamo(module, example)
        graph = import_fx(gm, ex)
        keep = user_input_indices(gm, ex)
        args = list(ex)
        for i, x in zip(keep, fresh()):  # fresh values for the user inputs, in placeholder order
            args[i] = x if (x.shape, x.dtype) == (ex[i].shape, ex[i].dtype) else args[i]
        expected = gm(*args)
        inputs = [args[i] for i in keep]
    else:
        model = torch.fx.symbolic_trace(module) if via == "symbolic" else module
        graph = import_fx(model, example)
        inputs = fresh()
        with torch.no_grad():
            expected = module(*inputs)
    graph.verify()
    got = run_reference(graph, inputs)
    expected = _outputs(expected)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        torch.testing.assert_close(g, e, **tol)
    return graph


# ------------------------------------------------------------------------ op cases ----
def _bn(c):
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 0.2)
    return bn


def _write_into_a_cloned_mask(s, x):
    mask = torch.full((4, 4), -1e4)[None].expand(2, 4, 4).clone()
    mask[:, :, 0] = 0.0
    return x + mask


CASES = {
    # conv / matmul
    "conv2d": (lambda: Fn(lambda s, x: s.c(x), c=nn.Conv2d(4, 6, 3, stride=2, padding=1)),
               [randn(2, 4, 9, 9)]),
    "conv2d_grouped_dilated": (lambda: Fn(lambda s, x: s.c(x), c=nn.Conv2d(
        4, 8, 3, padding=2, dilation=2, groups=2, bias=False)), [randn(1, 4, 8, 8)]),
    "conv2d_same": (lambda: Fn(lambda s, x: s.c(x), c=nn.Conv2d(3, 4, (3, 4), padding="same")),
                    [randn(1, 3, 7, 7)]),
    # DPT's reassemble stage, U-Net decoders: one IR conv_transpose (torch runs it in the engine)
    "conv_transpose2d": (lambda: Fn(lambda s, x: s.c(x) + 1, c=nn.ConvTranspose2d(
        4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)), [randn(2, 4, 5, 6)]),
    "conv_transpose1d_dilated": (lambda: Fn(lambda s, x: F.conv_transpose1d(x, s.c.weight, None, 2, 0, 0, 1, 2),
                                            c=nn.ConvTranspose1d(3, 2, 4)), [randn(1, 3, 7)]),
    "conv1d": (lambda: Fn(lambda s, x: s.c(x), c=nn.Conv1d(3, 5, 3, padding=1)),
               [randn(2, 3, 10)]),
    "linear3d": (lambda: Fn(lambda s, x: s.l(x), l=nn.Linear(8, 5)), [randn(2, 3, 8)]),
    "linear_nobias": (lambda: Fn(lambda s, x: F.linear(x, s.l.weight), l=nn.Linear(8, 5)),
                      [randn(4, 8)]),
    "matmul_broadcast": (lambda: Fn(lambda s, a, b: a @ b), [randn(2, 3, 4, 5), randn(5, 6)]),
    "bmm": (lambda: Fn(lambda s, a, b: torch.bmm(a, b)), [randn(3, 4, 5), randn(3, 5, 2)]),
    "addmm": (lambda: Fn(lambda s, c, a, b: torch.addmm(c, a, b, beta=0.5, alpha=2.0)),
              [randn(4), randn(3, 5), randn(5, 4)]),
    # arithmetic
    "arith_scalars": (lambda: Fn(lambda s, x: (x * 2.5 - 1) / 3 + 1.5 - (1 - x)),
                      [randn(2, 3)]),
    "arith_broadcast": (lambda: Fn(lambda s, a, b: torch.add(a, b, alpha=2) * b
                                   - a / (b.abs() + 1)),
                        [randn(2, 3, 4), randn(3, 1)]),
    "unary_math": (lambda: Fn(lambda s, x: torch.exp(-x.abs()) + torch.log(x.abs() + 1)
                              + torch.sqrt(x.abs()) + torch.rsqrt(x.abs() + 1)
                              + torch.reciprocal(x.abs() + 2) + torch.erf(x) + x ** 2
                              + torch.pow(x, 3)), [randn(3, 5)]),
    "minmax": (lambda: Fn(lambda s, a, b: torch.maximum(a, b) - torch.minimum(a, b)
                          + torch.max(a, b)), [randn(4, 5), randn(4, 5)]),
    # activations
    "activations": (lambda: Fn(lambda s, x: torch.relu(x) + torch.sigmoid(x) + torch.tanh(x)
                               + F.silu(x) + F.hardswish(x) + F.hardsigmoid(x)
                               + F.leaky_relu(x, 0.2) + F.hardtanh(x, -0.5, 0.5)
                               + F.relu6(x * 4) + torch.clamp(x, -0.3, 0.7)), [randn(3, 8)]),
    "gelu": (lambda: Fn(lambda s, x: F.gelu(x) + F.gelu(x, approximate="tanh")), [randn(4, 7)]),
    "activation_modules": (lambda: nn.Sequential(nn.Linear(6, 6), nn.GELU(), nn.SiLU(),
                                                 nn.Hardswish(), nn.ReLU6(), nn.LeakyReLU(),
                                                 nn.Hardsigmoid(), nn.Tanh(), nn.Sigmoid(),
                                                 nn.Hardtanh(), nn.Dropout(0.3), nn.ReLU()),
                           [randn(2, 6)]),
    "clamp_tensor": (lambda: Fn(lambda s, x, lo: torch.clamp(x, min=lo, max=lo + 1)),
                     [randn(3, 4), randn(4)]),
    # normalizations
    "softmax": (lambda: Fn(lambda s, x: torch.softmax(x, -1) + F.softmax(x, dim=1)),
                [randn(2, 5, 6)]),
    "layer_norm": (lambda: Fn(lambda s, x: s.ln(x) + F.layer_norm(x, (4, 6)),
                              ln=nn.LayerNorm(6)), [randn(2, 4, 6)]),
    "batch_norm": (lambda: Fn(lambda s, x: s.bn(x), bn=_bn(5)), [randn(2, 5, 4, 4)]),
    # pooling
    "max_pool": (lambda: Fn(lambda s, x: F.max_pool2d(x, 3, 2, 1)), [randn(1, 3, 9, 9)]),
    "max_pool_ceil": (lambda: Fn(lambda s, x: s.p(x), p=nn.MaxPool2d(2, ceil_mode=True)),
                      [randn(1, 2, 7, 7)]),
    "max_pool1d": (lambda: Fn(lambda s, x: F.max_pool1d(x, 2)), [randn(2, 3, 8)]),
    # MoE routers (Switch, NLLB-MoE): a mask of the chosen experts
    "one_hot": (lambda: Fn(lambda s, x, i: (F.one_hot(i, 6).float() * x[..., None], F.one_hot(i[:, :1], num_classes=9))),
                [randn(2, 5), randint(6, 2, 5)]),
    # unbatched inputs [C, *spatial] (SuperPoint's keypoint NMS max-pools [1, H, W])
    "unbatched_pools_and_convs": (lambda: Fn(lambda s, x: (F.max_pool2d(x, 3, 1, 1), F.avg_pool2d(x, 2),
                                                           s.c(x), F.conv_transpose2d(x, s.c.weight.transpose(0, 1)),
                                                           F.max_pool1d(x[0], 2), F.conv1d(x[:, 0], s.c.weight[..., 0])),
                                             c=nn.Conv2d(3, 4, 3, padding=1)), [randn(3, 7, 5)]),
    "pool1d_padded": (lambda: Fn(lambda s, x: (F.avg_pool1d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
                                               F.max_pool1d(x, 3, 2, 1, dilation=2), s.p(x)), p=nn.AvgPool1d(2)),
                      [randn(2, 3, 9)]),
    "avg_pool": (lambda: Fn(lambda s, x: F.avg_pool2d(x, 3, 2, 1)
                            + F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)),
                 [randn(1, 3, 8, 8)]),
    "adaptive_avg_pool": (lambda: Fn(lambda s, x: s.g(x).flatten(1)
                                     + F.adaptive_avg_pool2d(x, 2).sum((2, 3)),
                                     g=nn.AdaptiveAvgPool2d((1, 1))), [randn(2, 3, 6, 8)]),
    # movement
    "reshape_permute": (lambda: Fn(lambda s, x: x.view(2, -1).reshape(2, 3, 4).permute(2, 0, 1)
                                   .transpose(0, 1).flatten(1).t().contiguous()),
                        [randn(2, 12)]),
    "squeeze_expand": (lambda: Fn(lambda s, x: x.unsqueeze(1).expand(-1, 3, -1).squeeze(0)
                                  + x.unsqueeze(-1).squeeze(-1).unsqueeze(0)), [randn(1, 5)]),
    "cat_split": (lambda: Fn(lambda s, a, b: torch.cat(torch.split(torch.cat([a, b], 1), 2, 1)[::-1]
                                                       + torch.chunk(a, 3, 1), dim=1)),
                  [randn(2, 3), randn(2, 4)]),
    "split_sizes": (lambda: Fn(lambda s, x: torch.split(x, [1, 3, 2], dim=-1)),
                    [randn(2, 6)]),
    "stack": (lambda: Fn(lambda s, a, b: torch.stack([a, b], 1)), [randn(2, 3), randn(2, 3)]),
    "slicing": (lambda: Fn(lambda s, x: (x[:, 1:3], x[..., ::2], x[:, 0], x[None, -1],
                                         x[:, :, -2:], x.select(2, 1), x.narrow(1, 1, 2))),
                [randn(2, 4, 5)]),
    "embedding": (lambda: Fn(lambda s, i: s.e(i), e=nn.Embedding(10, 4)), [randint(10, 2, 3)]),
    "index_select": (lambda: Fn(lambda s, x, i: torch.index_select(x, 1, i) + x[:, i]),
                     [randn(3, 6), randint(6, 4)]),
    "repeat": (lambda: Fn(lambda s, x: (x.repeat(2, 1, 3), x.repeat(1, 1, 1), x.repeat(3, 1, 2, 1),
                                        x.repeat(1, 0, 1))), [randn(2, 3, 5)]),
    "adaptive_avg_pool1d": (lambda: Fn(lambda s, x: (s.p(x), F.adaptive_avg_pool1d(x, 3), F.adaptive_avg_pool1d(x, 9)),
                                       p=nn.AdaptiveAvgPool1d(1)), [randn(2, 4, 9)]),
    "interpolate": (lambda: Fn(lambda s, x: (
        F.interpolate(x, scale_factor=2), F.interpolate(x, size=(7, 5), mode="nearest-exact"),
        F.interpolate(x, scale_factor=1.5, mode="bilinear"),
        F.interpolate(x, size=(9, 4), mode="bilinear", align_corners=True),
        F.interpolate(x, size=(11, 13), mode="bicubic"), F.interpolate(x, size=(3, 2), mode="bicubic"),
        F.interpolate(x[:, :, 0], size=9, mode="linear"), F.interpolate(x, size=(1, 1), mode="bilinear"))),
        [randn(2, 3, 5, 6)]),
    "group_norm_normalize": (lambda: Fn(lambda s, x: (s.g(x), F.group_norm(x, 2, eps=1e-3), F.normalize(x, dim=1),
                                                      F.normalize(x, p=1.0, dim=-1)), g=nn.GroupNorm(3, 6)),
                             [randn(2, 6, 3, 5)]),
    "einsum": (lambda: Fn(lambda s, a, b: (torch.einsum("ibnd,jbnd->bnij", a, b), torch.einsum("ijkl->lj", a),
                                           torch.einsum("...d,...d->...", a, a), torch.einsum("ibnd,jbnd", [a, b]),
                                           torch.multiply(a, 2.0), torch.cat([a, b], axis=0))),
               [randn(5, 2, 3, 4), randn(6, 2, 3, 4)]),
    "unfold_im2col": (lambda: Fn(lambda s, x: (F.unfold(x, 3), F.unfold(x, (2, 3), dilation=(2, 1), padding=1, stride=2),
                                               s.u(x)), u=nn.Unfold((5, 1), padding=(2, 0))), [randn(2, 3, 7, 6)]),
    "argmax": (lambda: Fn(lambda s, x: (x.argmax(-1), torch.argmax(x), torch.argmin(x, 1, keepdim=True))),
               [randn(2, 4, 5)]),
    "repeat_interleave_baddbmm": (lambda: Fn(lambda s, x, b: (
        torch.repeat_interleave(x, 2, dim=1), x.repeat_interleave(3), torch.baddbmm(b, x, x.transpose(1, 2),
                                                                                    beta=0.5, alpha=2.0),
        x[..., [-2], :], x[:, [0, 2]], x[:, [2, 0, 1]])), [randn(2, 3, 4), randn(2, 3, 3)]),
    "adaptive_max_pool": (lambda: Fn(lambda s, x: F.adaptive_max_pool2d(x, 1)
                                     + F.adaptive_max_pool2d(x, (2, 2)).amax((2, 3), True)),
                          [randn(2, 3, 4, 6)]),
    "pad": (lambda: Fn(lambda s, x: (F.pad(x, (1, 2)), F.pad(x, (0, 0, 2, 1), value=0.5),
                                     F.pad(x, (-1, 1, 1, -1)))), [randn(2, 3, 4)]),
    "conv2d_same_even": (lambda: Fn(lambda s, x: s.c(x), c=nn.Conv2d(2, 3, 4, padding="same")),
                         [randn(1, 2, 6, 6)]),
    # attention
    "sdpa": (lambda: Fn(lambda s, q, k, v: F.scaled_dot_product_attention(q, k, v)
                        + F.scaled_dot_product_attention(q, k, v, is_causal=True)),
             [randn(2, 3, 5, 8), randn(2, 3, 5, 8), randn(2, 3, 5, 8)]),
    "sdpa_masks": (lambda: Fn(lambda s, q, kv, m: F.scaled_dot_product_attention(
        q, kv, kv, attn_mask=m) + F.scaled_dot_product_attention(q, kv, kv, attn_mask=m > -1,
                                                                  scale=0.3)),
        [randn(2, 4, 8), randn(2, 6, 8), randn(4, 6)]),
    # reductions
    "reductions": (lambda: Fn(lambda s, x: (x.mean((1, 2), keepdim=True), x.sum(-1),
                                            torch.amax(x, 1), x.max(dim=2).values, x.mean(),
                                            torch.sum(x, dim=0, keepdim=True))),
                   [randn(2, 3, 4)]),
    # casts, comparisons, where
    "compare_where": (lambda: Fn(lambda s, a, b: (torch.where(a > b, a, b), (a < 0).float(),
                                                  (a >= b).to(torch.float32), (a == a).int(),
                                                  torch.logical_not(a <= b), a != b,
                                                  a.masked_fill(a < 0, 0.5))),
                      [randn(3, 4), randn(3, 4)]),
    # x.where(condition, other): the tensor it is called on gives the values, not the condition
    "where_method": (lambda: Fn(lambda s, a, b: (torch.full_like(a, -float("inf")).where(a > b, b), a.where(a < 0, 2.0))),
                     [randn(3, 4), randn(3, 4)]),
    # max / min over a dim with their indices (argmax / argmin: the first extreme), as a
    # codebook lookup reads them (DAC, GroupViT)
    "max_min_indices": (lambda: Fn(lambda s, a: (a.max(dim=1).indices, torch.max(a, -1, keepdim=True),
                                                 a.min(0)[1] + 1, (a * 0).max(1).indices)),
                        [randn(3, 4)]),
    # the dtype as softmax's third positional argument (torch.softmax's and the method's; F.softmax's
    # third is _stacklevel)
    "softmax_dtype": (lambda: Fn(lambda s, a: (a.half().softmax(-1, torch.float32), torch.log_softmax(a.half(), 0, torch.float32))),
                      [randn(3, 4)]),
    # F.fold of windows that tile the output (MobileViT-v2's patches back to a map), prod
    "fold_prod": (lambda: Fn(lambda s, a: (F.fold(F.unfold(a, 2, stride=2) * 2, (4, 6), 2, stride=2),
                                           a.prod(dim=1), torch.prod(a, -1, keepdim=True))),
                  [randn(2, 3, 4, 6)]),
    # any / all (a max of 0.0 / 1.0), flip(dims=...) and new_ones(size=...) by keyword
    "any_all_flip_dims": (lambda: Fn(lambda s, a: (a.any(), (a > 0).any(dim=1), torch.all(a > -1, 0, keepdim=True),
                                                   a.flip(dims=(0, 1)) + a.new_ones(size=(3, 4)))),
                          [randn(3, 4)]),
    "casts": (lambda: Fn(lambda s, x: (x * 10).int().float() + x.long().to(torch.float32)
                         + x.half().float()), [randn(4, 4)]),
    "int_arith": (lambda: Fn(lambda s, i: (i * 3 + 1, i / 2, (i > 4) & (i < 8))),
                  [randint(10, 2, 5)]),
    "logical": (lambda: Fn(lambda s, a, b: ((a > 0) | (b > 0), (a > 0) ^ (b > 0),
                                            torch.logical_and(a, b > 0), ~(a > b))),
                [randn(3, 4), randn(3, 4)]),
    "min": (lambda: Fn(lambda s, x: (torch.amin(x, (0, 2)), x.min(dim=1).values, x.min())),
            [randn(2, 3, 4)]),
    # transformers 4.x: CodeGen's causal mask, Funnel's position bounds and cls mask
    "triu_tril": (lambda: Fn(lambda s, x: (torch.triu(x), x.tril(-1), torch.triu(x, 2))), [randn(2, 5, 6)]),
    "new_tensor_and_a_list_of_slices": (lambda: Fn(lambda s, x: x[[slice(None), slice(None, 1)]]
                                                   + x.new_tensor([1.5, -2.0, 3.0])), [randn(4, 3)]),
    # BLOOM / BioGPT (transformers 4.x): a mask constant expanded, cloned, then written into
    "clone_of_an_expanded_constant_then_a_write": (lambda: Fn(_write_into_a_cloned_mask), [randn(2, 4, 4)]),
    # a scale past fp16's range (Funnel's INF = 1e6): 1e6 * 0 must stay 0 at fp16, not inf * 0
    "huge_mask_scale": (lambda: Fn(lambda s, x, m: torch.softmax(x - 1e6 * (1 - m), -1)),
                        [randn(3, 8), lambda: (torch.randn(3, 8) > 0).float()]),
}

@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_op(case, via):
    make_module, inputs = CASES[case]
    torch.manual_seed(0)
    check(make_module(), inputs, via)


FP16_CASES = ["conv2d", "linear3d", "layer_norm", "softmax", "gelu", "batch_norm", "avg_pool"]


@pytest.mark.parametrize("case", FP16_CASES)
def test_op_fp16(case):
    make_module, inputs = CASES[case]
    torch.manual_seed(0)
    check(make_module(), inputs, "export", tol=FP16, dtype=torch.float16)


def test_an_fp16_engine_clamps_constants_past_fp16s_range():
    """An fp32 model built at fp16: a constant past fp16's range (Funnel's INF = 1e6) becomes fp16's
    largest finite value, as TensorRT clamps weights, not inf (1e6 * 0 is 0; inf * 0 is NaN)."""
    import trident

    make_module, make_inputs = CASES["huge_mask_scale"]
    module = make_module().eval()
    inputs = [f() for f in make_inputs]
    engine = trident.build_engine(module, "fp16", example_inputs=inputs)
    out = engine(*[x.to(engine.device) for x in inputs])
    out = (out[0] if isinstance(out, (list, tuple)) else out).float().cpu()
    torch.testing.assert_close(out, module(*inputs), rtol=1e-2, atol=1e-3)


def test_an_fp16_engine_keeps_the_models_scalars_exact():
    """An RMSNorm with GLM-4's epsilon, 1.5625e-7, over rows of variance 1e-6, built at fp16: the
    epsilon stays fp32 (torch computes `x16 + eps` with eps in fp32), where rounded to fp16 it was
    1.79e-7 (3 subnormal steps of 6e-8), and the norm 0.9% off."""
    import trident

    def rms_norm(s, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1.5625e-7)

    module, x = Fn(rms_norm).eval(), torch.randn(4, 32, generator=torch.Generator().manual_seed(0)) * 1e-3
    engine = trident.build_engine(module, "fp16", example_inputs=[x])
    (out,) = run_engine(engine, x)
    assert relative_error(out.float(), module(x)) < 2e-3


def test_only_scalars_within_fp16s_range_stay_fp32():
    """The exact scalars are those fp16 can hold once multiplied in: a mask scale past its range
    is clamped as every other constant (a product kept at 1e6 would be inf once stored in fp16)."""
    from trident.compiler.passes.precision import lower_precision

    def masked(s, x, m):
        return (x + 1.5625e-7) - 1e6 * (1 - m)

    x, m = torch.randn(2, 8), (torch.rand(2, 8) > 0.5).float()
    low = lower_precision(import_fx(Fn(masked).eval(), (x, m)), "fp16")
    scalars = {float(t): t.dtype for t in low.constants.values() if t.dim() == 0}
    eps = torch.tensor(1.5625e-7).item()  # (its fp32 value)
    assert scalars == {eps: torch.float32, 65504.0: torch.float16, 1.0: torch.float32}, scalars


# ------------------------------------------------------------------ graph behaviour ----
def test_linear_weight_transposed_at_import():
    lin = nn.Linear(8, 3)
    graph = check(Fn(lambda s, x: s.l(x), l=lin), [randn(2, 8)], "export")
    ops = [n.op for n in graph.nodes]
    assert ops == ["matmul", "add"]
    (w,) = [graph.constants[i] for n in graph.nodes if n.op == "matmul" for i in n.inputs
            if i in graph.constants]
    torch.testing.assert_close(w, lin.weight.detach().t())
    assert w.is_contiguous()


def test_constant_subgraphs_fold():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.randn(16, 4))

        def forward(self, x):
            pos = torch.arange(x.shape[1])  # depends only on a static shape
            bias = (self.table[pos] * 2).sum(-1).exp()
            return x + bias

    for via in VIAS:
        graph = check(M(), [randn(2, 5)], via)
        assert [n.op for n in graph.nodes] == ["add"], via


def test_graph_inputs_named_after_placeholders():
    graph = import_fx(Fn(lambda s, a, b: a + b), (torch.randn(2), torch.randn(2)))
    assert len(graph.inputs) == 2
    gm = torch.fx.symbolic_trace(nn.Linear(3, 3))
    placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    assert import_fx(gm, (torch.randn(1, 3),)).inputs == placeholders


def test_multiple_outputs_and_tuple_returns():
    graph = check(Fn(lambda s, x: (x + 1, (x * 2, x.relu()))), [randn(3)], "symbolic")
    assert len(graph.outputs) == 3


def test_exported_program_and_its_module():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                      nn.Linear(4 * 4 * 4, 5)).eval()
    x = torch.randn(2, 3, 6, 6)
    ep = torch.export.export(m, (x,))
    expected = m(x)
    for model in (ep, ep.run_decompositions(), ep.module()):
        graph = import_fx(model, (x,))
        graph.verify()
        torch.testing.assert_close(run_reference(graph, [x])[0], expected, **FP32)


def test_dynamo_lifts_parameters_to_constants():
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    gm, ex = capture_dynamo(m, (torch.randn(2, 4),))
    keep = user_input_indices(gm, ex)
    assert len(keep) == 1 and len(ex) == 3
    graph = import_fx(gm, ex)
    assert len(graph.inputs) == 1 and len(graph.constants) == 2


def test_unsupported_target_names_node_and_the_nearest_converted():
    gm = torch.fx.symbolic_trace(Fn(lambda s, x: torch.logcumsumexp(x, 0)))
    node = next(n for n in gm.graph.nodes if n.op == "call_function")
    assert not supported_fx_target(node)
    with pytest.raises(UnsupportedError) as info:
        import_fx(gm, (torch.randn(3),))
    msg = str(info.value)
    assert "logcumsumexp" in msg and f'"{node.name}"' in msg
    assert "torch.logsumexp" in msg and "torch.cumsum" in msg and f"{len(supported_targets())} targets" in msg
    assert len(msg) < 400  # not the thousand names of supported_targets()


def test_a_data_dependent_value_says_what_reads_it():
    """aten._local_scalar_dense: a tensor read as a Python number (JetMoE's expert sizes, through
    a whole-graph export), which only a graph split can take."""
    gm = torch.fx.symbolic_trace(Fn(lambda s, x: x * torch.ops.aten._local_scalar_dense.default(x.sum())))
    with pytest.raises(UnsupportedError, match=r"\.item\(\).*data-dependent.*splits the graph"):
        import_fx(gm, (torch.randn(3),))


def test_ops_with_a_parameter_trident_lacks_say_which():
    # torch's antialiasing filter is not ONNX Resize's: the resize stays in torch, and says why
    for body, what in ((lambda s, x: F.interpolate(x, size=(3, 2), mode="bilinear", antialias=True), "antialias"),
                       (lambda s, x: torch.repeat_interleave(x, torch.tensor([1, 2, 1]), dim=1), "per-element"),
                       (lambda s, x: F.interpolate(x, scale_factor=2, mode="area"), "'area'")):
        gm = torch.fx.symbolic_trace(Fn(body))
        with pytest.raises(UnsupportedError, match=what):
            import_fx(gm, (torch.randn(2, 3, 5, 6),))


def test_supported_fx_target():
    def fn(s, x):
        return s.c(x).relu().view(-1) + torch.arange(2 * 3 * 3 * 3)

    gm = torch.fx.symbolic_trace(Fn(fn, c=nn.Conv2d(3, 3, 1)))
    flags = {n.name: supported_fx_target(n) for n in gm.graph.nodes}
    assert all(flags.values()), flags
    assert "aten.convolution.default" in supported_targets()
    assert "torch.nn.Conv2d" in supported_targets()


def test_training_mode_is_refused():
    m = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))  # left in training mode
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(UnsupportedError, match="eval"):
        import_fx(torch.fx.symbolic_trace(m), (x,))
    with pytest.raises(UnsupportedError, match=r"1 in training mode \(call model.eval"):
        import_fx(m, (x,))
    import_fx(m.eval(), (x,))


def test_module_falls_back_to_symbolic_trace(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("export refused")

    monkeypatch.setattr(torch.export, "export", refuse)
    m = nn.Sequential(nn.Linear(4, 4), nn.GELU())
    graph = check(m, [randn(2, 4)], "export")  # "export" hands import_fx the module itself
    assert [n.op for n in graph.nodes] == ["matmul", "add", "gelu"]


def test_python_arithmetic_on_shapes_folds():
    def fn(s, x):
        n = x.size(0) * x.shape[1] // 2
        return x.reshape(n, -1) + operator.add(x.dim(), 1)

    check(Fn(fn), [randn(4, 6)], "symbolic")


def test_unexpected_failure_is_a_located_trident_error():
    gm = torch.fx.symbolic_trace(Fn(lambda s, x: x.view(7, -1)))
    with pytest.raises(TridentError, match='fx node "view"'):
        import_fx(gm, (torch.randn(4, 6),))
