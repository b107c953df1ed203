"""torch.compile(dynamic=True) and mark_dynamic: one engine per partition over dynamo's symbolic
sizes, not one per concrete size."""
from __future__ import annotations

import math

import pytest
import torch

from trident.compiler import dynamo
from trident.models import MODELS

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def partitions(monkeypatch):
    made = []
    init = dynamo.TridentSubgraph.__init__

    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(dynamo.TridentSubgraph, "__init__", record)
    return made


def test_bert_over_eight_lengths_builds_at_most_two_engines(partitions):
    torch._dynamo.reset()
    build, make = MODELS["bert_tiny"]
    model = build().eval().to(DEV)
    compiled = torch.compile(model, backend="trident", dynamic=True, options={"fallback": False})
    with torch.no_grad():
        for seq in (8, 12, 5, 31, 64, 100, 9, 17):
            x = [t.to(DEV) for t in make(2, seq=seq, with_mask=True)]
            torch.testing.assert_close(compiled(*x), model(*x), rtol=1e-4, atol=1e-4)
    assert partitions and all(p.symbolic is not None for p in partitions)
    built = [p.engines_built for p in partitions]
    print(f"engines built per partition over 8 lengths: {built}")
    assert all(1 <= n <= 2 for n in built)


def test_mark_dynamic(partitions):
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).eval().to(DEV)
    compiled = torch.compile(model, backend="trident", options={"fallback": False})
    with torch.no_grad():
        for rows in (3, 7, 20):
            x = torch.randn(rows, 16, device=DEV)
            torch._dynamo.mark_dynamic(x, 0)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
    assert sum(p.engines_built for p in partitions) == 1


class Shifted(torch.nn.Module):
    """An int argument the graph computes with that sizes no tensor (Funnel's relative-position
    shift and stride, a sliding-window cache's start): under dynamic=True dynamo passes it as a
    symbol of its own."""

    def forward(self, x, shift: int):
        return torch.relu(x * shift + torch.sym_max(shift, 0))


def test_an_int_that_sizes_no_tensor_is_a_run_time_input(partitions):
    """The engine takes it as a 0-d tensor (dynamo_shapes.run_time_numbers): one engine for every
    shift and row count."""
    torch._dynamo.reset()
    model = Shifted()
    compiled = torch.compile(model, backend="trident", dynamic=True, options={"fallback": False})
    with torch.no_grad():
        for rows, shift in ((3, 2), (5, 2), (4, 3), (6, -1)):
            x = torch.randn(rows, 7, device=DEV)
            torch.testing.assert_close(compiled(x, shift), model(x, shift), rtol=1e-5, atol=1e-5)
    assert sum(p.engines_built for p in partitions) == 1


class Cropped(torch.nn.Module):
    def forward(self, x, n: int):
        return x[:, :n] * 2


def test_an_int_the_graph_needs_as_a_size_is_a_value(partitions):
    """A slice bound is a size of the engine's tensors: the build with it as a tensor fails, and
    the int is then a value, an engine per value seen (rows share one)."""
    torch._dynamo.reset()
    model = Cropped()
    compiled = torch.compile(model, backend="trident", dynamic=True, options={"fallback": False})
    with torch.no_grad():
        for rows, n in ((3, 4), (5, 4), (4, 6)):
            x = torch.randn(rows, 9, device=DEV)
            torch.testing.assert_close(compiled(x, n), model(x, n))
    assert sum(p.engines_built for p in partitions) == 2


class DecodeStep(torch.nn.Module):
    """A decoder step over a KV cache: keys and values are two inputs, so dynamo gives their
    past lengths two symbols, which the attention needs equal."""

    def forward(self, q, k, v, past_k, past_v):
        keys, values = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
        return torch.nn.functional.scaled_dot_product_attention(q, keys, values) * 2


def _decode_steps(model, with_padding: bool) -> None:
    """Four steps of `model` through torch.compile, the past growing (each cache's length, and
    the padding mask's, marked dynamic as transformers' become after their first recompile),
    checked against eager."""
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="trident", options={"fallback": False})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for past in (5, 9, 14, 30):
            x = [torch.randn(2, 4, 1, 8, generator=gen) for _ in range(3)]
            x += [torch.randn(2, 4, past, 8, generator=gen) for _ in range(2)]
            if with_padding:
                padding = torch.ones(2, past + 1, dtype=torch.int64)
                padding[1, :2] = 0  # the second row's prompt was left-padded
                x.append(padding)
            x = [t.to(DEV) for t in x]
            for t, dim in zip(x[3:], (2, 2, 1)):
                torch._dynamo.mark_dynamic(t, dim)
            torch.testing.assert_close(compiled(*x), model(*x), rtol=1e-4, atol=1e-5)


def test_cache_lengths_of_two_symbols_share_one_profile(partitions):
    """Probed apart, keys and values of different lengths fail; built as one symbol
    (dynamo_shapes.equal_symbols), one engine serves every past length."""
    _decode_steps(DecodeStep(), with_padding=False)
    assert sum(p.engines_built for p in partitions) == 1


class MaskedDecodeStep(torch.nn.Module):
    """As transformers' decoders build the mask of one new token: the padding mask, one longer
    than the cache, gathered at the key positions `arange(past + 1)`."""

    def forward(self, q, k, v, past_k, past_v, padding):
        keys, values = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
        positions = torch.arange(past_k.shape[2] + 1, device=q.device)
        allowed = padding.bool()[:, positions][:, None, None, :]
        return torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=allowed)


def test_a_mask_one_longer_than_the_cache_shares_its_profile(partitions):
    """Dynamo gives the mask's length a symbol of its own; probed apart from the cache's, the
    gather reads past the mask's end. Built as the cache's symbol plus one
    (dynamo_shapes.near_symbols), one engine serves every past length."""
    _decode_steps(MaskedDecodeStep(), with_padding=True)
    assert sum(p.engines_built for p in partitions) == 1


class WindowMask(torch.nn.Module):
    """A sliding window's padding mask as transformers builds it for one new token: the user's
    mask (one longer than the past) read at the window's key positions, which start at a
    run-time int."""

    def forward(self, x, padding, past: int):
        window = x.shape[1]
        positions = torch.arange(window, device=x.device) + max(past - window + 1, 0)
        keep = padding.bool()[torch.arange(x.shape[0], device=x.device)[:, None], positions[None, :]]
        return x.masked_fill(~keep, 0.0) + 1


@pytest.mark.parametrize("batch", [1, 2])
def test_a_mask_read_at_run_time_positions_is_one_engine(partitions, batch):
    """x[arange(b)[:, None], positions] is a GatherElements along the mask's length: nothing in
    it is a constant of the sizes (a flat index of the mask would be), so after dynamo's
    recompile one engine serves every past length."""
    torch._dynamo.reset()
    model = WindowMask()
    compiled = torch.compile(model, backend="trident", options={"fallback": False})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for past in (5, 9, 14, 30, 41):
            x = torch.randn(batch, 4, generator=gen).to(DEV)
            padding = (torch.rand(batch, past + 1, generator=gen) < 0.7).long().to(DEV)
            torch.testing.assert_close(compiled(x, padding, past), model(x, padding, past), rtol=0, atol=0)
    assert [p.engines_built for p in partitions] == [1, 1]  # the first call's sizes, then all


def test_a_float_computed_from_a_length_is_an_input_of_one_engine(partitions):
    """`math.sqrt(n)` is computed by the graph around the partition and passed in as a float (a
    SymFloat placeholder): the engine takes it as a 0-d float32 tensor (what torch divides a
    float32 tensor by), so one engine serves every length."""
    def fn(x):
        return x / math.sqrt(x.shape[1])

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="trident", dynamic=True)
    for n in (5, 9, 14):
        x = torch.randn(3, n, device=DEV)
        torch.testing.assert_close(compiled(x), fn(x), rtol=0, atol=0)
    assert sum(p.engines_built for p in partitions) == 1


def test_an_aliased_symbol_fits_only_at_its_symbols_size():
    from types import SimpleNamespace

    from trident.compiler.dynamo_shapes import equal_symbols, fits

    assert equal_symbols({"s0": 2, "s1": 7, "s2": 7, "s3": 2}) == {"s2": ("s1", 0), "s3": ("s0", 0)}
    engine = SimpleNamespace(profile=SimpleNamespace(symbols={"s1": range(1, 65)}), symbol_aliases={"s2": ("s1", 0)})
    assert fits(engine, {"s1": 9, "s2": 9})
    assert not fits(engine, {"s1": 9, "s2": 10}) and not fits(engine, {"s1": 90, "s2": 90})


def test_symbols_a_step_apart_alias_the_smallest_plus_a_constant():
    from types import SimpleNamespace

    from trident.compiler.dynamo_shapes import fits, near_symbols

    assert near_symbols({"mask": 21, "keys": 20, "values": 20, "batch": 2}) == \
        {"mask": ("keys", 1), "values": ("keys", 0)}
    # transitively, at most NEAR apart at each step; 9 is three above 6: a root of its own
    assert near_symbols({"a": 4, "b": 5, "c": 6, "d": 9}) == {"b": ("a", 1), "c": ("a", 2)}
    assert near_symbols({"a": 3}) == {}
    engine = SimpleNamespace(profile=SimpleNamespace(symbols={"keys": range(1, 81)}),
                             symbol_aliases={"mask": ("keys", 1)})
    assert fits(engine, {"keys": 30, "mask": 31}) and fits(engine, {"keys": 80, "mask": 81})
    assert not fits(engine, {"keys": 30, "mask": 30}) and not fits(engine, {"keys": 81, "mask": 82})


class Positions(torch.nn.Module):
    def forward(self, x):
        return x * torch.arange(x.shape[1] + 1, device=x.device)[1:]


def test_an_arange_of_a_size_is_a_constant_at_each_probe(partitions):
    torch._dynamo.reset()
    model = Positions()
    compiled = torch.compile(model, backend="trident", dynamic=True, options={"fallback": False})
    with torch.no_grad():
        for n in (3, 8, 5, 20):
            x = torch.randn(2, n, device=DEV)
            torch.testing.assert_close(compiled(x), model(x))
    assert sum(p.engines_built for p in partitions) == 1


def _factories(x):
    b, s = x.shape
    z = torch.zeros(b, s, device=x.device) + torch.ones((b, 1), device=x.device) * 2
    e = torch.empty_like(x).fill_(3.0)
    full = torch.full((b, s), 7, device=x.device) + torch.full([1, s], 0.5, device=x.device)
    return (x + z + e).reshape(torch.Size([b, s])) + full


def test_factories_of_sizes_are_constants_at_each_probe(partitions):
    """torch.zeros / ones / full / empty_like / torch.Size of symbolic sizes (DeBERTa's, GPT-2's,
    Mixtral's) convert: one engine for every size, nothing in torch."""
    torch._dynamo.reset()
    compiled = torch.compile(_factories, backend="trident", dynamic=True, options={"fallback": False})
    for shape in ((2, 3), (4, 5), (3, 7)):
        x = torch.randn(*shape, device=DEV)
        got = compiled(x)
        torch.testing.assert_close(got, _factories(x))
        assert got.dtype == _factories(x).dtype
    assert sum(p.engines_built for p in partitions) == 1


class PositionsAfterPast(torch.nn.Module):
    """Whisper's decoder positions: `arange(new) + past`, past the cache's length, pick rows of a
    position table; and a mean over the cache's length."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(64, 8))

    def forward(self, x, cache):
        positions = torch.arange(x.shape[1], device=x.device) + cache.shape[1]
        return x + self.table[positions] + cache.mean(1, keepdim=True)


def test_a_size_added_to_a_tensor_is_read_at_run_time(partitions):
    """The positions after a past of every length gather different rows: probed at fixed sizes they
    would fold to constants none of which is a slice of another (an engine per length). The past's
    length reaches the engine as a 0-d tensor as well; the mean divides by the length, an integer
    the kernel takes as a size. One engine for every length."""
    torch._dynamo.reset()
    model = PositionsAfterPast().to(DEV)
    compiled = torch.compile(model, backend="trident", options={"fallback": False})
    with torch.no_grad():
        for past in (3, 7, 12, 5, 20):
            x, cache = torch.randn(2, 1, 8, device=DEV), torch.randn(2, past, 8, device=DEV)
            torch._dynamo.mark_dynamic(cache, 1)
            torch.testing.assert_close(compiled(x, cache), model(x, cache))
    assert sum(p.engines_built for p in partitions) == 1
    assert any(p._int_values for p in partitions)


def test_int8_calibration_under_mark_dynamic(partitions):
    """Calibration runs each partition's own graph in torch: an int placeholder that is a symbol
    takes the size the batch gives it (computing with dynamo's SymInt of the example specialized
    the graph, and dynamo refused the dim marked dynamic), and the partition takes the sized ints
    it reads as values as 0-d tensors after its arguments, as forward passes them."""
    torch._dynamo.reset()
    model = PositionsAfterPast().to(DEV)
    calibration = [(torch.randn(2, 1, 8, device=DEV), torch.randn(2, 5, 8, device=DEV))]
    compiled = torch.compile(model, backend="trident",
                             options={"precision": "int8", "calibration": calibration, "fallback": False})
    with torch.no_grad():
        for past in (3, 7):
            x, cache = torch.randn(2, 1, 8, device=DEV), torch.randn(2, past, 8, device=DEV)
            torch._dynamo.mark_dynamic(cache, 1)
            torch.testing.assert_close(compiled(x, cache), model(x, cache), rtol=1e-2, atol=1e-2)
    assert any(p._int_values and p.calibration for p in partitions)
    assert sum(p.engines_built for p in partitions) == 1


OF_THE_LENGTH = {
    "mean": lambda x: x.mean(1),
    "std_correction_0": lambda x: x.std(1, correction=0),
    "var_unbiased": lambda x: x.var(1),
    "std_correction_2": lambda x: x.std(1, correction=2),
    "sum_over_length": lambda x: x.sum(1) / x.shape[1],
    "logsumexp": lambda x: torch.logsumexp(x, 1),
    "global_average_pool": lambda x: torch.nn.functional.adaptive_avg_pool1d(x.transpose(1, 2), 1),
    # numbers Python computes from the length, which a tensor is then scaled by
    "scaled_by_a_power_of_the_length": lambda x: x * x.shape[1] ** -0.5,
    "scaled_by_one_over_the_length": lambda x: (1.0 / x.shape[1]) * x,
    "shifted_by_half_the_length": lambda x: x - x.shape[1] // 2,
}


@pytest.mark.parametrize("name", sorted(OF_THE_LENGTH))
def test_what_reads_a_dynamic_length_builds_one_engine(partitions, name):
    """A mean (a variance: less its correction) divides by its length as a size of the kernel, a
    sum divided by the length reads it at run time, and so does a number computed from it
    (`x.shape[1] ** -0.5`); logsumexp converts without torch's decomposition (which dynamic shapes
    cannot trace): one engine for every length, nothing in torch."""
    fn = OF_THE_LENGTH[name]
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="trident", dynamic=True, options={"fallback": False})
    for n in (5, 9, 14):
        x = torch.randn(3, n, 4, device=DEV)
        torch.testing.assert_close(compiled(x), fn(x), rtol=1e-5, atol=1e-5)
    assert sum(p.engines_built for p in partitions) == 1


def test_a_constant_pad_over_a_dynamic_dim_runs_no_torch_step(partitions):
    """A constant pad's fill spans the dims it does not pad, one of them dynamic here: the fill
    is stored at the profile's max sizes, and each run views its first elements in the shape its
    sizes give (a slice of a dense tensor along an inner dim would be a copy in torch)."""
    def fn(x):
        return torch.nn.functional.pad(x, (1, 2)) * 2

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="trident", dynamic=True, options={"fallback": False})
    for n in (5, 9, 3):
        x = torch.randn(2, n, 4, device=DEV)
        torch.testing.assert_close(compiled(x), fn(x))
    assert sum(p.engines_built for p in partitions) == 1
    steps = [s for p in partitions for e in p.built_engines() for s in e.plan.steps]
    assert "view" in {s.kind for s in steps} and "torch" not in {s.kind for s in steps}


class PaddedByItsBuffers(torch.nn.Module):
    """Reflect-pads by widths its buffers give, after a test on them that breaks the graph, so the
    widths reach the next frame as 0-d tensors (EnCodec's and Mimi's padded convolutions)."""

    def __init__(self):
        super().__init__()
        self.kernel, self.stride = torch.nn.Buffer(torch.tensor(3)), torch.nn.Buffer(torch.tensor(2))

    def forward(self, x):
        left, right = self.kernel - 1, (x.shape[-1] - self.kernel) % self.stride + 1
        if torch.maximum(left, right) >= x.shape[-1]:
            x = torch.nn.functional.pad(x, (0, 4))
        return torch.nn.functional.pad(x, (left, right), "reflect") * 2


def test_pad_widths_passed_as_tensors_are_taken_by_value(partitions):
    """The padded tensor's shape depends on the widths' values: each engine takes them as
    constants and is keyed by them (a length of another parity, other widths: another engine).
    That is on the CPU. CUDA widths dynamo reads itself (it breaks the graph at the pad, which
    runs in torch between two graphs), so trident never sees them as tensors: no partition takes
    sizes by value there, and the graphs it does see run whole."""
    from trident.compiler.testing import compile_with_reports, ops_in_torch

    model = PaddedByItsBuffers().to(DEV)
    x = torch.randn(2, 3, 9, device=DEV)
    got, reports = compile_with_reports(model, x)
    torch.testing.assert_close(got, model(x))
    assert ops_in_torch(reports) == []
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="trident", options={"fallback": False})
    for n in (9, 10, 7):
        x = torch.randn(2, 3, n, device=DEV)
        torch.testing.assert_close(compiled(x), model(x))
    assert any(p._sizes_by_value for p in partitions) == (DEV == "cpu")
