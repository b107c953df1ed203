"""kernels/attention.py against a float64 softmax(q k^T * scale + mask) v, in Triton's interpreter on
the CPU (or on the GPU when present): odd lengths, Lq != Lk, head dims that are not powers of two,
causal masks in both alignments, boolean and additive masks broadcast over batch and heads, grouped
query heads, fully masked rows, size-1 and empty dims, strided operands."""
import itertools
import json
import math

import pytest
import torch

import trident.kernels.attention as attention_module
from trident.compiler.ops.transformer import attention as op_attention
from trident.kernels.attention import (attention_config, attention, candidate_configs, causal_offset,
                                       heuristic_config, smem_bytes, why_unfit)

pytestmark = pytest.mark.compiles_for_hopper  # every kernel run here also compiles for sm_90 (tests/conftest.py)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# Per-element tolerance on outputs of magnitude ~1 (fp16 rounds P to fp16 before the PV dot).
TOL = {torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 3e-2}


def rand(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype).to(DEV)


def reference(q, k, v, mask=None, scale=None, causal=None):
    """float64 attention from the (already rounded) inputs; rows with no visible key give 0."""
    q, k, v = q.double().cpu(), k.double().cpu(), v.double().cpu()
    if q.dim() >= 4 and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
        v = v.repeat_interleave(q.shape[-3] // v.shape[-3], dim=-3)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.transpose(-1, -2) * scale
    visible = torch.ones_like(s, dtype=torch.bool)
    if mask is not None:
        mask = mask.cpu()
        if mask.dtype == torch.bool:
            visible = visible & mask
        else:
            s = s + mask.double()
    if causal is not None:
        lq, lk = s.shape[-2:]
        visible = visible & torch.ones(lq, lk, dtype=torch.bool).tril(causal_offset(causal, lq, lk))
    s = s.masked_fill(~visible, -math.inf)
    p = torch.softmax(s, -1).nan_to_num(0.0)  # softmax of all -inf is NaN; torch's SDPA gives 0
    return p @ v


def check(out, ref, dtype):
    assert out.shape == ref.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double().cpu(), ref, rtol=TOL[dtype], atol=TOL[dtype])


def qkv(b, h, h_kv, lq, lk, d, dv=None, dtype=torch.float32, seed=0):
    dv = d if dv is None else dv
    return (rand((b, h, lq, d), seed, dtype), rand((b, h_kv, lk, d), seed + 1, dtype),
            rand((b, h_kv, lk, dv), seed + 2, dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("b,h,lq,lk,d,dv", [(2, 3, 37, 53, 32, 32), (1, 2, 70, 19, 80, 48),
                                            (1, 1, 1, 45, 128, 128), (2, 2, 45, 1, 64, 64)])
def test_odd_lengths_and_head_dims(dtype, b, h, lq, lk, d, dv):
    q, k, v = qkv(b, h, h, lq, lk, d, dv, dtype)
    check(attention(q, k, v), reference(q, k, v), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("causal", ["top_left", "bottom_right"])
@pytest.mark.parametrize("lq,lk", [(37, 53), (53, 37), (40, 40)])
def test_causal_alignments(dtype, causal, lq, lk):
    # Lq > Lk bottom-right leaves the first Lq - Lk rows with no key at all: they must be 0.
    q, k, v = qkv(1, 2, 2, lq, lk, 32, dtype=dtype, seed=3)
    check(attention(q, k, v, causal=causal), reference(q, k, v, causal=causal), dtype)


@pytest.mark.parametrize("cfg", [attention_config(16, 16), attention_config(32, 16), attention_config(16, 32)])
@pytest.mark.parametrize("causal", [None, "top_left", "bottom_right"])
def test_many_query_and_key_blocks(cfg, causal):
    # Small blocks: several query tiles, fully visible key blocks, diagonal blocks and a key tail.
    q, k, v = qkv(1, 2, 1, 75, 83, 32, seed=5)
    check(attention(q, k, v, causal=causal, config=cfg), reference(q, k, v, causal=causal), torch.float32)


@pytest.mark.parametrize("causal", [None, "bottom_right"])
def test_row_maxima_that_grow_and_fall_across_key_blocks(causal):
    """Each row's scores rise (or fall) along the keys at a rate of its own, up to about 12 a
    16-key block in the log2 domain, and one late key scores far above the rest (a jump past
    fp32's exponent range): every block rescales what came before, down to alpha = 0."""
    q, k, v = qkv(1, 2, 1, 75, 83, 32, seed=11)
    q[..., 0] = torch.linspace(-8, 8, 75)[torch.randperm(75, generator=torch.Generator().manual_seed(1))]
    k[..., 0] = torch.linspace(0, 30, 83)
    q[0, 1, :, 1], k[0, 0, 70, 1] = 8.0, 150.0  # head 1 (sharing head 0's keys): key 70 far above the rest
    check(attention(q, k, v, causal=causal, config=attention_config(16, 16)), reference(q, k, v, causal=causal),
          torch.float32)


@pytest.mark.parametrize("causal", ["top_left", "bottom_right"])
@pytest.mark.parametrize("lq,lk", [(75, 83), (64, 64), (83, 40), (16, 83)])
def test_paired_causal_tiles(causal, lq, lk):
    """PAIRED: a program computes query tiles j and n - 1 - j of one head (an odd count's middle
    tile alone): every tile computed, whatever the alignment, with a user mask and GQA too."""
    q, k, v = qkv(2, 4, 2, lq, lk, 32, seed=11)
    bias = torch.randn(2, 1, lq, lk, generator=torch.Generator().manual_seed(12)).to(DEV)
    for block_m in (16, 32):
        for mask in (None, bias):
            cfg = attention_config(block_m, 16).replace(PAIRED=1)
            got = attention(q, k, v, mask, causal=causal, config=cfg)
            check(got, reference(q, k, v, mask, causal=causal), torch.float32)


def test_pairing_rule(monkeypatch):
    """Causal problems with enough query rows pair their tiles; the heuristic then runs the paired
    program (not the warp-specialized kernel) up to PAIRED_PROGRAM_KEYS per head dim, and the
    tuner also times the heuristic's tile unpaired. Pairing is numerically the unpaired program."""
    monkeypatch.setattr(attention_module, "is_interpreter", lambda: False)  # the H200's configs
    rows = attention_module.PAIR_MIN_ROWS
    assert attention_module.pairs_tiles(True, rows) and not attention_module.pairs_tiles(True, rows - 1)
    assert not attention_module.pairs_tiles(False, 10**9) and not attention_module.pairs_tiles(True, None)
    paired = heuristic_config(2048, 2048, 64, torch.float16, causal=True, hopper=True, rows=rows)
    assert paired == attention_config(64, 64, 4, 3).replace(PAIRED=1)
    assert heuristic_config(4096, 4096, 64, torch.float16, causal=True, hopper=True, rows=rows).get("WS")
    assert heuristic_config(1024, 1024, 128, torch.float16, causal=True, hopper=True, rows=rows) == paired
    assert heuristic_config(2048, 2048, 128, torch.float16, causal=True, hopper=True, rows=rows).get("WS")
    assert heuristic_config(512, 512, 256, torch.float16, causal=True, rows=rows) != paired  # (not measured)
    assert heuristic_config(2048, 2048, 64, torch.float16, causal=True, hopper=True).get("WS")  # rows unknown
    assert heuristic_config(512, 512, 64, torch.float16, causal=False, rows=rows).get("PAIRED") is None
    cands = candidate_configs(2048, 2048, 64, torch.float16, causal=True, hopper=True, rows=rows)
    program = [c for c in cands if not c.get("WS")]
    assert cands[0] == paired and attention_config(64, 64, 4, 3) not in program[:1]
    assert sum(not c.get("PAIRED") for c in program) == 1 and any(c.get("WS") for c in cands)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_padding_mask_broadcast_over_heads_and_queries(dtype):
    b, h, lq, lk = 3, 2, 21, 29
    q, k, v = qkv(b, h, h, lq, lk, 64, dtype=dtype, seed=7)
    keep = torch.rand(b, 1, 1, lk, generator=torch.Generator().manual_seed(8)) < 0.7
    keep[1] = False  # a fully padded sequence: every row of it is fully masked
    keep = keep.to(DEV)
    check(attention(q, k, v, keep), reference(q, k, v, keep), dtype)
    bias = torch.zeros(b, 1, 1, lk, dtype=dtype, device=DEV).masked_fill(~keep, -math.inf)
    check(attention(q, k, v, bias), reference(q, k, v, bias), dtype)


@pytest.mark.parametrize("causal", [None, "bottom_right"])
@pytest.mark.parametrize("shape", [(2, 1, 1, 83), (83,), (2, 3, 1, 83)])
def test_per_key_masks_over_many_key_blocks(shape, causal):
    """A mask with one row for every query is read as a vector per key block (MASK_PER_KEY):
    full key blocks, the tail and the diagonal, bool and additive, at 16-key steps."""
    q, k, v = qkv(2, 3, 3, 75, 83, 32, seed=30)
    keep = (torch.rand(shape, generator=torch.Generator().manual_seed(31)) < 0.6).to(DEV)
    bias = rand(shape, 32).clamp(max=0.5).masked_fill(~keep, -math.inf)
    for mask in (keep, bias):
        plan = attention_module.plan_launch(*(attention_module._triple(t) for t in (q, k, v, mask, q)),
                                            causal)
        assert plan.mask_per_key
        out = attention(q, k, v, mask, causal=causal, config=attention_config(16, 16))
        check(out, reference(q, k, v, mask, causal=causal), torch.float32)


@pytest.mark.parametrize("causal", [None, "bottom_right", "top_left"])
def test_key_blocks_a_padding_mask_hides_from_every_row_are_not_read(causal):
    """A per-key mask's leading and trailing key blocks that hold no kept key (left and right
    padding) are skipped, as keys past the causal diagonal are: a NaN in their K or V reaches no
    row (it would, times 0, if they were multiplied). Blocks between kept keys are read and masked.
    With the exporters' NaN-row guard every key is read: its graph multiplies V by the zeros."""
    q, k, v = qkv(3, 2, 2, 40, 150, 32, seed=40)
    keep = torch.zeros(3, 1, 1, 150, dtype=torch.bool)
    keep[0, ..., :97] = True  # right padding: keys 112 on are whole 16-key blocks of padding
    keep[1, ..., 70:] = True  # left padding: keys 0-63
    keep[2, ..., 20:30] = keep[2, ..., 120:125] = True  # padding on both sides, and a gap between
    k_nan, v_nan = k.clone(), v.clone()
    for entry, hidden in ((0, slice(112, None)), (1, slice(0, 64)), (2, slice(0, 16)), (2, slice(128, None))):
        k_nan[entry, :, hidden, 3] = math.nan
        v_nan[entry, :, hidden, 5] = math.inf
    bias = torch.zeros(keep.shape).masked_fill(~keep, -math.inf)
    for mask in (keep.to(DEV), bias.to(DEV)):
        out = attention(q, k_nan, v_nan, mask, causal=causal, config=attention_config(16, 16))
        check(out, reference(q, k, v, mask, causal=causal), torch.float32)
    guarded = attention(q, k, v_nan, keep.to(DEV), config=attention_config(16, 16), zero_nan_rows=True)
    assert guarded[..., 5].isnan().all() and not guarded[..., :5].isnan().any()


@pytest.mark.parametrize("shape", [(2, 1, 1, 83), (2, 1, 75, 83)])
def test_a_nan_bias_makes_the_rows_that_see_it_nan(shape):
    """A NaN in an additive mask makes the rows that see its key NaN, as in torch. (Kept above a
    finite floor by a max, it became the floor on the GPU, whose max returns the number beside a
    NaN: the key was silently masked.)"""
    q, k, v = qkv(2, 3, 3, 75, 83, 32, seed=41)
    bias = torch.zeros(shape, device=DEV)
    bias[0, ..., 50] = math.nan
    out = attention(q, k, v, bias, config=attention_config(16, 16))
    assert out[0].isnan().all() and not out[1].isnan().any()


def test_masks_with_a_row_per_query_are_tiles():
    q, k, v = qkv(1, 2, 2, 7, 9, 16, seed=33)
    for shape in ((1, 1, 7, 9), (7, 9), (1, 2, 7, 9)):
        mask = rand(shape, 34)
        plan = attention_module.plan_launch(*(attention_module._triple(t) for t in (q, k, v, mask, q)), None)
        assert not plan.mask_per_key, shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_relative_position_bias_and_window_masks(dtype):
    b, h, lq, lk = 2, 3, 19, 23
    q, k, v = qkv(b, h, h, lq, lk, 32, dtype=dtype, seed=9)
    bias = rand((1, h, lq, lk), 10, dtype)  # T5: one bias per head, shared over the batch
    check(attention(q, k, v, bias), reference(q, k, v, bias), dtype)
    windows = rand((b, 1, lq, lk), 11, dtype).clamp(max=0.5) * 4  # Swin-like: per batch, all heads
    check(attention(q, k, v, windows, causal="top_left"), reference(q, k, v, windows, causal="top_left"), dtype)
    full = rand((b, h, lq, lk), 12, dtype)
    check(attention(q, k, v, full[:, :, :, :], scale=0.3), reference(q, k, v, full, scale=0.3), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_window_masks_repeat_over_an_outer_batch_dim(dtype):
    # Swin: [images, windows, heads, N, N] scores, a mask per window shared by every image and head,
    # a relative position bias per head; K/V with fewer heads for good measure.
    images, windows, heads, n = 2, 3, 4, 10
    q, k, v = (rand((images, windows, h, n, 32), 24 + i, dtype) for i, h in enumerate((heads, 2, 2)))
    window = torch.zeros(1, windows, 1, n, n, dtype=dtype)
    window[0, 1, 0, :5, 5:] = -100.0
    window[0, 2, 0, :, ::2] = -math.inf
    bias = rand((1, 1, heads, n, n), 27, dtype) + window.to(DEV)
    check(attention(q, k, v, bias), reference(q, k, v, bias), dtype)


def test_bool_mask_with_causal_and_a_2d_mask():
    q, k, v = qkv(2, 2, 2, 33, 41, 32, seed=13)
    keep = (torch.rand(33, 41, generator=torch.Generator().manual_seed(14)) < 0.5).to(DEV)
    keep[4] = False
    for causal in (None, "bottom_right"):
        check(attention(q, k, v, keep, causal=causal), reference(q, k, v, keep, causal=causal), torch.float32)


def test_fully_masked_rows_follow_torch():
    # All-False and all -inf rows give 0 (torch's SDPA); a row of huge finite values (transformers'
    # finfo.min masks) averages its values, exactly as torch computes it.
    q, k, v = qkv(1, 1, 1, 6, 10, 16, seed=15)
    bias = torch.zeros(1, 1, 6, 10, device=DEV)
    bias[0, 0, 1] = -math.inf
    bias[0, 0, 2] = torch.finfo(torch.float32).min
    bias[0, 0, 3, 4:] = torch.finfo(torch.float32).min
    out = attention(q, k, v, bias)
    assert torch.equal(out[0, 0, 1].cpu(), torch.zeros(16))
    expected = torch.nn.functional.scaled_dot_product_attention(q.cpu(), k.cpu(), v.cpu(), attn_mask=bias.cpu())
    torch.testing.assert_close(out.cpu(), expected, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(out[0, 0, 2].cpu(), v[0, 0].mean(0).cpu(), rtol=2e-5, atol=2e-5)


def guarded_reference(q, k, v, mask):
    """The guarded chain torch's exporters write, in float64: softmax(q k^T * scale + mask), then
    where(isnan(p), 0, p), then p @ v (0 * NaN stays NaN). An additive mask is added (-inf meets
    +inf or NaN as NaN, as in the exported graph, whose boolean mask arrives as where(m, 0, -inf));
    a boolean one hides the scores it masks (masked_fill)."""
    q, k, v, mask = q.double().cpu(), k.double().cpu(), v.double().cpu(), mask.cpu()
    if k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
        v = v.repeat_interleave(q.shape[-3] // v.shape[-3], dim=-3)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else s + mask.double()
    p = torch.softmax(s, -1)
    return torch.where(torch.isnan(p), 0.0, p) @ v


@pytest.mark.parametrize("mask_kind", ["bool", "additive"])
@pytest.mark.parametrize("h_kv", [2, 1])
def test_zero_nan_rows_is_the_exporters_nan_guard(mask_kind, h_kv):
    # Rows whose probabilities are NaN (a NaN or +inf score they see; every key masked) give the
    # guard's 0 * V; a NaN or inf a row does not see leaves it alone; a NaN in V reaches every row
    # in its column (0 * NaN), NaN rows included. Lk spans three 16-key blocks and a tail.
    q, k, v = qkv(1, 2, h_kv, 9, 53, 16, seed=31)
    keep = torch.rand(1, 1, 9, 53, generator=torch.Generator().manual_seed(5)) < 0.8
    keep[..., 4, :] = False                  # a fully masked row
    keep[..., 5, 40] = keep[..., 6, 40] = False
    q[0, :, 1, 3] = math.nan                 # row 1: NaN scores
    k[0, :, 40, :] = math.inf                # key 40: +inf / -inf / NaN scores, hidden from rows 5 and 6
    k[0, :, 7, 0] = math.nan                 # key 7: NaN scores for the rows that see it
    keep[..., 7] = False
    keep[..., 2, 7] = True                   # ... only row 2
    mask = keep.to(DEV) if mask_kind == "bool" else \
        torch.zeros(keep.shape, device=DEV).masked_fill(~keep.to(DEV), -math.inf)
    config = attention_config(16, 16)
    out = attention(q, k, v, mask, config=config, zero_nan_rows=True).double().cpu()
    expected = guarded_reference(q, k, v, mask)
    if mask_kind == "bool":  # a bool mask hides a key's score entirely: rows 5 and 6 keep their values
        assert torch.isfinite(out[0, :, 5:7]).all()
    assert torch.equal(out[0, :, 4], torch.zeros(2, 16))
    torch.testing.assert_close(out, expected, rtol=2e-5, atol=2e-5, equal_nan=True)
    v[0, -1, 50, 5] = math.nan
    out = attention(q, k, v, mask, config=config, zero_nan_rows=True).double().cpu()
    expected = guarded_reference(q, k, v, mask)
    torch.testing.assert_close(out, expected, rtol=2e-5, atol=2e-5, equal_nan=True)
    # the op's reference implementation (the reference executor, and torch where no kernel runs)
    in_torch = op_attention(*(x.cpu() for x in (q, k, v, mask)), scale=0.25, zero_nan_rows=True)
    torch.testing.assert_close(in_torch.double(), expected, rtol=2e-5, atol=2e-5, equal_nan=True)


@pytest.mark.parametrize("h_kv", [1, 2])
def test_grouped_query_heads(h_kv):
    q, k, v = qkv(2, 4, h_kv, 17, 26, 32, seed=16)
    check(attention(q, k, v), reference(q, k, v), torch.float32)
    check(attention(q, k, v, causal="bottom_right"), reference(q, k, v, causal="bottom_right"), torch.float32)


def test_strided_operands_need_no_copy():
    # [B, L, H, D] projections viewed as [B, H, L, D], a K sliced out of a packed KV tensor.
    b, lq, lk, h, d = 2, 13, 17, 3, 32
    q = rand((b, lq, h, d), 17).transpose(1, 2)
    kv = rand((b, lk, h, 2 * d), 18).transpose(1, 2)
    k, v = kv[..., :d], kv[..., d:]
    o = attention(q, k, v)
    check(o, reference(q, k, v), torch.float32)


def test_rank3_and_negative_scale():
    q, k, v = rand((3, 11, 24), 19), rand((3, 15, 24), 20), rand((3, 15, 40), 21)
    mask = rand((11, 15), 22)
    check(attention(q, k, v, mask, scale=-0.2), reference(q, k, v, mask, scale=-0.2), torch.float32)


def test_empty_dims():
    q, k, v = qkv(0, 2, 2, 5, 7, 16)
    assert attention(q, k, v).shape == (0, 2, 5, 16)
    q, k, v = qkv(1, 2, 2, 0, 7, 16)
    assert attention(q, k, v).shape == (1, 2, 0, 16)
    q, k, v = qkv(1, 2, 2, 5, 0, 16)  # no keys at all: zeros, as torch gives
    assert torch.equal(attention(q, k, v).cpu(), torch.zeros(1, 2, 5, 16))


def test_keys_past_the_diagonal_are_never_read():
    # Top-left causal with Lk > Lq: keys >= Lq are invisible to every row. NaN there would poison
    # the output if their blocks were loaded (0 * NaN in the PV dot); they must be skipped.
    q, k, v = qkv(1, 1, 1, 32, 64, 16, seed=23)
    ref = reference(q, k, v, causal="top_left")
    k[..., 32:, :] = math.nan
    v[..., 32:, :] = math.nan
    check(attention(q, k, v, causal="top_left", config=attention_config(16, 16)), ref, torch.float32)


def test_bad_inputs():
    q, k, v = qkv(1, 3, 2, 5, 7, 16)
    with pytest.raises(ValueError, match="heads"):
        attention(q, k, v)
    q, k, v = qkv(1, 2, 2, 5, 7, 16)
    with pytest.raises(ValueError, match="dtype"):
        attention(q, k.half(), v)
    with pytest.raises(ValueError, match="broadcast"):
        attention(q, k, v, torch.zeros(5, 6, device=DEV))
    with pytest.raises(ValueError, match="causal"):
        attention(q, k, v, causal="diagonal")
    with pytest.raises(ValueError, match="BLOCK_N"):
        attention(q, k, v, config=attention_config(16, 8))
    q, k, v = qkv(1, 1, 1, 5, 7, 288)
    with pytest.raises(ValueError, match="head dim"):
        attention(q, k, v)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_gpu_configs_fit_and_start_with_the_heuristic(dtype, monkeypatch):
    monkeypatch.setattr(attention_module, "is_interpreter", lambda: False)  # the H200's configs
    for d, lq, lk, mask_bytes, causal in itertools.product((32, 64, 80, 128, 256), (1, 100, 197, 8192),
                                                           (197, 577, 8192), (0, 1, 2, 4), (False, True)):
        cands = candidate_configs(lq, lk, d, dtype, None, mask_bytes, causal)
        assert cands[0] == heuristic_config(lq, lk, d, dtype, None, mask_bytes, causal)
        assert len(set(cands)) == len(cands)
        assert all(c.BLOCK_M <= max(16, 1 << (lq - 1).bit_length()) for c in cands)
        if dtype == torch.float16:  # (fp32 past head dim 128 spills at every size)
            assert all(why_unfit(c, d, d, dtype.itemsize, mask_bytes) is None for c in cands), \
                (d, lq, mask_bytes, causal)
    # Vision transformers' short key rows take shorter steps (kernels/attention.py, SHORT_KEYS):
    if dtype == torch.float16:
        assert heuristic_config(197, 197, 64, dtype) == attention_config(128, 32, 4, 4)
        assert heuristic_config(577, 577, 64, dtype) == attention_config(64, 64, 4, 3)
        assert heuristic_config(1370, 1370, 64, dtype) == attention_config(128, 64, 4, 4)
        assert heuristic_config(197, 197, 64, dtype, causal=True) == attention_config(128, 64, 4, 4)
    # Causal or not, one config's buffers: Triton 3.6 compiled 128x64 on 2 stages at head dim 256 into
    # 96 KB either way (the model over-estimates it at 208 KB), where the causal kernel once took
    # 192 KB (its second key loop got the first one's pointer tiles, kernels/attention.py).
    assert smem_bytes(attention_config(128, 64, 8, 2), 256, 256, 2) == 212992
    # What ptxas / Triton 3.9 reported for sm_90 (shared memory exactly; see smem_bytes):
    assert smem_bytes(attention_config(128, 64, 8, 3), 128, 128, 2) == 131072
    assert smem_bytes(attention_config(128, 64, 8, 3), 80, 80, 2) == 147456
    assert smem_bytes(attention_config(128, 64, 4, 4), 64, 64, 2, mask_bytes=4) == 180224
    assert why_unfit(attention_config(128, 128, 8, 3), 128, 128, 2, mask_bytes=1) == "shared memory"  # 256 KB
    assert why_unfit(attention_config(128, 64, 4, 4), 128, 128, 2) == "registers"  # spilled


@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run is the CPU path (the interpreter)")
def test_dry_run_of_the_benchmark(tmp_path):
    from trident.tools.cli import main

    assert main(["bench", "attention", "--dry-run", "--out", str(tmp_path)]) == 0
    (out,) = tmp_path.glob("*-attention.json")
    rows = json.loads(out.read_text())["rows"]
    assert [r["causal"] for r in rows] == [False, True]
    assert all(r["max_abs_err"] < 1e-2 and r["ms"] > 0 and r["vs_sdpa"] > 0 for r in rows)
    # trident and SDPA timed in turn, each figure the median of its rounds
    assert all(len(r["rounds_ms"]["heuristic"]) == len(r["rounds_ms"]["sdpa"]) == 3 for r in rows)
    assert all(r["sdpa_ms"] == sorted(r["rounds_ms"]["sdpa"])[1] for r in rows)
    # --shape: a problem of one's own instead of the table's; a malformed one is refused by name
    assert main(["bench", "attention", "--dry-run", "--shape", "1,3,40,16", "--causal", "yes",
                 "--out", str(tmp_path)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batch"], r["heads"], r["seq"], r["head_dim"], r["causal"]) for r in rows] == [(1, 3, 40, 16, True)]
    with pytest.raises(SystemExit):
        main(["bench", "attention", "--dry-run", "--shape", "1,3,40"])
    with pytest.raises(SystemExit):
        main(["bench", "attention", "--dry-run", "--rounds", "0"])
    # --mask padding: a key-padding mask for trident and SDPA alike (the odd batch entries see 3/4 of the keys)
    assert main(["bench", "attention", "--dry-run", "--shape", "2,2,40,16", "--mask", "padding", "--causal", "no",
                 "--out", str(tmp_path)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["mask"] == "padding" and row["max_abs_err"] < 1e-2
    assert main(["bench", "attention", "--dry-run", "--mask", "padding", "--out", str(tmp_path)]) == 2  # causal rows


def test_the_benchmarks_padding_mask_hides_a_quarter_of_the_odd_entries_keys():
    from trident.tools.benchmarks.attention import padding_mask

    mask = padding_mask(3, 8, "cpu")
    assert mask.shape == (3, 1, 1, 8) and mask.dtype == torch.bool
    assert mask[:, 0, 0].sum(-1).tolist() == [8, 6, 8]


# ----------------------------------------------------------------------------- GPU ----
GPU_SHAPES = [(8, 16, 512, 64), (4, 16, 2048, 64), (2, 16, 8192, 128), (1, 32, 4096, 96), (2, 8, 1000, 256)]


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [None, "top_left"])
@pytest.mark.parametrize("b,h,seq,d", GPU_SHAPES)
def test_gpu_matches_torch_sdpa(b, h, seq, d, causal):
    q, k, v = (torch.randn(b, h, seq, d, device="cuda", dtype=torch.float16) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal is not None)
    torch.testing.assert_close(attention(q, k, v, causal=causal), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", candidate_configs(2048, 2048, 128, torch.float16, mask_bytes=1))
def test_gpu_every_candidate_config_is_correct(cfg):
    q, k, v = (torch.randn(2, 4, 2000, 128, device="cuda", dtype=torch.float16) for _ in range(3))
    keep = torch.rand(2, 1, 1, 2000, device="cuda") < 0.9
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    torch.testing.assert_close(attention(q, k, v, keep, config=cfg), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
def test_gpu_fp32_is_exact_and_gqa_masks_work():
    q, k, v = (torch.randn(2, 8, 777, 80, device="cuda") for _ in range(3))
    k, v = k[:, :2], v[:, :2]
    bias = torch.randn(1, 8, 777, 777, device="cuda")
    check(attention(q, k, v, bias), reference(q, k, v, bias), torch.float32)


@pytest.mark.gpu
def test_gpu_sequence_16k_in_linear_memory():
    # The unfused scores of this problem would be 32 * 16384^2 * 2 bytes = 16 GiB.
    q, k, v = (torch.randn(1, 32, 16384, 128, device="cuda", dtype=torch.float16) for _ in range(3))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = attention(q, k, v, causal="top_left")
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before <= out.numel() * out.element_size() + (1 << 20)
    ref = torch.nn.functional.scaled_dot_product_attention(q[:, :2], k[:, :2], v[:, :2], is_causal=True)
    torch.testing.assert_close(out[:, :2], ref, rtol=1e-2, atol=1e-2)
