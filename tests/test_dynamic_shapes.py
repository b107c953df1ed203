"""Optimization profiles on several dims (batch and sequence): ONNX and torch models, the errors
for shapes outside the profile, and profiled engines saved and loaded."""
from __future__ import annotations

import pytest
import torch

from trident.compiler import InputError, TridentError, build_engine, load_engine
from trident.compiler.codegen.polyfit import Grid, fit_int
from trident.compiler.ir.shapes import Poly, PolyTable, instantiate
from trident.models import MODELS
from trident.tools.compile import parse_shapes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SHAPES = ((1, 4), (2, 16), (3, 40))   # (batch, seq): min, opt, max
CASES = ((1, 4), (3, 23), (3, 40), (2, 16), (1, 1 + 4))


@pytest.fixture(scope="module")
def bert():
    build, make_inputs = MODELS["bert_tiny"]
    torch.manual_seed(0)
    return build().eval(), lambda b, s: make_inputs(b, seq=s, with_mask=True)


@pytest.fixture(scope="module")
def onnx_bert(bert, tmp_path_factory):
    model, make = bert
    path = tmp_path_factory.mktemp("dyn") / "bert.onnx"
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(model, make(2, 16), str(path), dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["out"],
                      dynamic_axes={"input_ids": axes, "attention_mask": axes, "out": axes})
    # A profile for input_ids binds "batch" and "sequence" in attention_mask too.
    return path, build_engine(str(path), "fp32", shapes={"input_ids": SHAPES})


@pytest.fixture(scope="module")
def torch_engine(bert):
    model, make = bert
    return build_engine(model, "fp32", make(2, 16),
                        shapes={"input_ids": SHAPES, "attention_mask": SHAPES})


def check(engine, model, make, cases=CASES):
    for b, s in cases:
        x = make(b, s)
        with torch.no_grad():
            want = model(*x)
        (got,) = engine(*x)
        assert got.shape == (b, s, 64)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_polynomials_of_several_sizes():
    grid = Grid(("b", "s"), ((2, 3), (5, 6, 7)), ((4, 8),))
    stride = lambda b, s: b * s * s * 12 + s * 768 - 3  # noqa: E731
    values = {p: stride(*p) for p in grid.points()}
    template = fit_int(grid, values)
    assert isinstance(template, Poly) and template.at({"b": 11, "s": 29}) == stride(11, 29)
    assert eval(template.expr({"b": "b", "s": "s"}), {"b": 5, "s": 9}) == stride(5, 9)
    values[(4, 8)] += 1   # the check probe disagrees: no polynomial of these degrees
    assert fit_int(grid, values) is None
    ceil = {p: -(-p[1] // 2) for p in grid.points()}
    assert fit_int(grid, ceil) is None


def test_a_table_of_polynomials_evaluates_each_exactly():
    """PolyTable (what re-lays a profiled engine's values at each new size) agrees with
    evaluating every template alone, and stays exact past int64 (Python ints then)."""
    b, s = Poly.of("b"), Poly.of("s")
    stride = Poly.from_coefficients({(("b", 1), ("s", 2)): 12, (("s", 1),): 768, (): -3})
    leaves = [7, b, s, stride, Poly.of("s", 64, 1), 0, -5]
    table = PolyTable(leaves)
    for sizes in ({"b": 1, "s": 1}, {"b": 3, "s": 40}, {"b": 11, "s": 29}):
        assert table.at(sizes) == [instantiate(x, sizes) for x in leaves]
    huge = {"b": 2 ** 40, "s": 2 ** 12}   # 12 * b * s**2 is past int64
    assert table.at(huge)[3] == 12 * 2 ** 40 * 2 ** 24 + 768 * 2 ** 12 - 3
    assert PolyTable([2 ** 70, b]).at({"b": 4}) == [2 ** 70, 4]
    assert PolyTable([]).at({}) == []


def test_onnx_profile_on_batch_and_sequence(bert, onnx_bert):
    model, make = bert
    _, engine = onnx_bert
    assert set(engine.profile.symbols) == {"batch", "sequence"}
    assert engine.profile.inputs["attention_mask"] == ("batch", "sequence")
    check(engine, model, make)
    kernels = engine.plan.kernel_steps()
    assert any(k.sizes == ("batch", "sequence") for k in kernels)
    # The weights-only kernels (none here) and the static ones take no sizes; every generic
    # kernel declares its size parameters unspecialized.
    assert all(f'"size_{s}"' in k.source for k in kernels for s in k.sizes)


def test_torch_profile_on_batch_and_sequence(bert, torch_engine):
    model, make = bert
    check(torch_engine, model, make)
    assert len(torch_engine.profile.symbols) == 2


def test_position_rows_are_a_view_of_the_stored_table(torch_engine):
    """The rows [:seq] of the position table are its leading part: no copy runs for them."""
    slices = [(s.kind, s.inputs[0]) for s in torch_engine.plan.steps
              if s.kind != "kernel" and s.node.op == "slice"]
    assert ("view", "embeddings.position_embeddings.weight.slice@max") in slices, slices


def test_generic_kernels_tell_triton_which_sizes_are_aligned(bert, torch_engine):
    """Every shape-generic kernel restores, for the sizes that are multiples of 16, what Triton
    would have specialized on; a run with one size aligned and the other not takes that path."""
    generic = [s for s in torch_engine.plan.kernel_steps() if s.sizes]
    assert generic
    for step in generic:
        params = [f"size_{'batch' if n == 'batch' else 'input_ids_d1'}" for n in step.sizes]
        for bit, param in enumerate(params):
            assert f"if ALIGNED & {1 << bit}:\n        {param} = {param} // 16 * 16" in step.source
    model, make = bert
    check(torch_engine, model, make, cases=((3, 32), (2, 17)))


def test_torch_profile_up_to_the_whole_position_table(bert):
    """At the profile's max sequence the position table's slice is the whole table: the folded
    constant must still be found by name at every probe size."""
    model, make = bert
    table = model.embeddings.position_embeddings.weight.shape[0]
    shapes = ((1, 8), (1, table // 2), (2, table))
    engine = build_engine(model, "fp32", make(1, table // 2),
                          shapes={"input_ids": shapes, "attention_mask": shapes})
    check(engine, model, make, cases=((2, table), (1, 9)))


@pytest.mark.parametrize("b, s, dim, value, low, high", [
    (2, 41, 1, 41, 4, 40), (2, 3, 1, 3, 4, 40), (4, 16, 0, 4, 1, 3)])
def test_outside_the_profile(onnx_bert, bert, b, s, dim, value, low, high):
    _, engine = onnx_bert
    symbol = ("batch", "sequence")[dim]
    with pytest.raises(InputError, match=rf'input "input_ids": dim {dim} \({symbol}\) is {value}, '
                                         rf"outside the engine's optimization profile "
                                         rf"\[{low}, {high}\]"):
        engine(*bert[1](b, s))


def test_inputs_that_disagree_on_a_size(onnx_bert, bert):
    _, engine = onnx_bert
    ids, _ = bert[1](2, 16)
    _, mask = bert[1](2, 20)
    with pytest.raises(InputError, match=r'input "attention_mask".*dim 1 gives sequence = 20, '
                                         r'but input "input_ids" dim 1 gives sequence = 16'):
        engine(ids, mask)


def test_save_and_load_a_profiled_engine(onnx_bert, bert, tmp_path):
    _, engine = onnx_bert
    path = tmp_path / "bert.engine"
    engine.save(path)
    loaded = load_engine(path)
    assert loaded.profile == engine.profile
    model, make = bert
    check(loaded, model, make, cases=((3, 33), (1, 4)))
    with pytest.raises(InputError, match="outside the engine's optimization profile"):
        loaded(*make(1, 41))


def test_profile_errors(onnx_bert):
    path, _ = onnx_bert
    with pytest.raises(TridentError, match="no input named 'ids'"):
        build_engine(str(path), shapes={"ids": SHAPES})
    with pytest.raises(TridentError, match="sequence already has the range"):
        build_engine(str(path), shapes={"input_ids": SHAPES,
                                        "attention_mask": ((1, 4), (2, 16), (3, 50))})
    with pytest.raises(TridentError, match="expected three shapes"):
        build_engine(str(path), shapes={"input_ids": ((1, 4), (2, 16, 3), (3, 40))})
    with pytest.raises(TridentError, match="needs 0 <= min <= opt <= max"):
        build_engine(str(path), shapes={"input_ids": ((1, 40), (2, 16), (3, 40))})


def test_cli_shapes():
    assert parse_shapes("input_ids:1x16:8x128:32x512,mask:1x16:8x128:32x512") == {
        "input_ids": "1x16:8x128:32x512", "mask": "1x16:8x128:32x512"}
    with pytest.raises(InputError, match="NAME:MIN:OPT:MAX"):
        parse_shapes("input_ids:1x16:8x128")


def test_a_size_dependent_constant_is_found_as_a_window_of_its_max():
    """The leading slice first; else a window at an offset (T5's decoder bias: the last columns);
    else none (the profile is refused)."""
    from trident.compiler.codegen.dynamic_constants import _window_of

    big = torch.arange(24.0).reshape(2, 3, 4)
    assert _window_of(big, big[:, :2, :3].clone()) == [0, 0, 0]
    assert _window_of(big, big[:, 1:, 2:].clone()) == [0, 1, 2]
    assert _window_of(big, big[:, :, 1:3].clone() * 2) is None
    assert _window_of(big, torch.zeros(2, 3, 5)) is None


def test_transformers_bert_from_the_dynamo_exporter_with_a_padding_mask(tmp_path):
    """transformers 5 builds the padding mask as mask[arange(b)[:, None, None, None], arange(s)],
    which the dynamo exporter writes as a GatherND of stacked aranges: it runs as views of the mask
    (passes/gather_nd.py), where the lowering's flat rows depended on the sequence length and the
    profile was refused. scripts/onnx_profiles.py's check: against onnxruntime at four sizes of
    the profile, a padded row in each."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    script = Path(__file__).resolve().parent.parent / "scripts" / "onnx_profiles.py"
    spec = importlib.util.spec_from_file_location("onnx_profiles", script)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    row = sweep.check("bert", tmp_path)
    assert row["max_abs_diff"] < 1e-4 and row["torch_steps"] == ["slice"], row
