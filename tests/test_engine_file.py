"""Engine files (runtime/format.py): round trips, and every kind of damage refused with
EngineFileError (never a crash, never a wrong output)."""
from __future__ import annotations

import json
import random
import struct

import pytest
import torch

from trident.compiler import EngineFileError, build_engine
from trident.compiler.build import retune
from trident.compiler.ir.plan import Plan
from trident.kernels import identity
from trident.models import MODELS
from trident.runtime import format as fmt
from trident.compiler.build import load_engine


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(engine, path, inputs) for bert_tiny (views, many kernels, token-id bounds)."""
    build, make_inputs = MODELS["bert_tiny"]
    model = build()
    engine = build_engine(model, "fp32", make_inputs(2))
    path = tmp_path_factory.mktemp("engines") / "bert_tiny.engine"
    engine.save(path)
    return engine, path, make_inputs(2)


class ScatterAddHead(torch.nn.Module):
    """A linear layer, a scatter-add of 20 updates a row (a torch step: the scatter kernel takes
    up to group_kinds.MAX_SCATTER_UPDATES) and a relu."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(12, 10)
        self.register_buffer("index", torch.arange(60).reshape(3, 20) % 10)
        self.register_buffer("updates", torch.linspace(-1, 1, 60).reshape(3, 20))

    def forward(self, x):
        return self.linear(x).scatter_add(1, self.index, self.updates).relu().reshape(-1)


@pytest.fixture(scope="module")
def saved_with_torch_step(tmp_path_factory):
    model, x = ScatterAddHead().eval(), torch.randn(3, 12)
    engine = build_engine(model, "fp32", (x,))
    path = tmp_path_factory.mktemp("engines") / "columns.engine"
    engine.save(path)
    return engine, path, (x,)


def outputs_equal(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_round_trip_identical_outputs(saved):
    engine, path, inputs = saved
    loaded = load_engine(path)
    assert outputs_equal(engine(*inputs), loaded(*inputs))
    assert loaded.num_kernels == engine.num_kernels
    assert loaded.memory.arena_bytes == engine.memory.arena_bytes
    assert loaded.file_info["versions"] == identity.versions()
    assert loaded.file_info["device"]["name"] == "cpu-interpreter"
    # the weights are stored once, packed in their kernel layouts; unused originals are dropped
    assert set(loaded.constants) == set(engine.constants)
    assert not list(path.parent.glob(".*tmp*"))  # the atomic write left no temporary behind


def test_round_trip_dynamic_batch(tmp_path):
    build, make_inputs = MODELS["multihead"]
    model = build()
    engine = build_engine(model, "fp32", make_inputs(2), batch=(1, 2, 6))
    path = tmp_path / "dyn.engine"
    engine.save(path)
    loaded = load_engine(path)
    assert loaded.profile == engine.profile
    for batch in (1, 6):
        x = make_inputs(batch)
        assert outputs_equal(engine(*x), loaded(*x))


def test_loading_needs_no_model_and_runs_no_passes(saved, monkeypatch):
    import trident.compiler.build as build
    import trident.compiler.passes as passes

    _, path, inputs = saved
    boom = lambda *a, **k: pytest.fail("loading ran the compiler")  # noqa: E731
    monkeypatch.setattr(passes, "run_pipeline", boom)
    monkeypatch.setattr(build, "import_model", boom)
    load_engine(path)(*inputs)


def damaged(path, tmp_path, data: bytes, name: str = "bad.engine"):
    out = tmp_path / name
    out.write_bytes(data)
    return out


@pytest.mark.parametrize("keep", [0, 5, 30, 56, 200, -1000, -1])
def test_truncated(saved, tmp_path, keep):
    _, path, _ = saved
    data = path.read_bytes()
    with pytest.raises(EngineFileError, match="truncated|magic|checksum"):
        load_engine(damaged(path, tmp_path, data[:keep]))


@pytest.mark.parametrize("where", ["magic", "version", "length", "header", "header_sha", "payload",
                                   "last"])
def test_bit_flip(saved, tmp_path, where):
    _, path, _ = saved
    data = bytearray(path.read_bytes())
    head_len = struct.unpack_from("<Q", data, 16)[0]
    position = {"magic": 0, "version": 8, "length": 16, "header_sha": 30, "header": 56 + head_len // 2,
                "payload": 56 + head_len + 100, "last": len(data) - 1}[where]
    data[position] ^= 0x10
    with pytest.raises(EngineFileError):
        load_engine(damaged(path, tmp_path, bytes(data)))


def test_wrong_magic_and_not_an_engine(saved, tmp_path):
    _, path, _ = saved
    data = path.read_bytes()
    with pytest.raises(EngineFileError, match="not a trident engine file"):
        load_engine(damaged(path, tmp_path, b"PK\x03\x04" + data[4:]))
    with pytest.raises(EngineFileError, match="not a trident engine file"):
        load_engine(damaged(path, tmp_path, b"hello"))
    with pytest.raises(EngineFileError, match="cannot read"):
        load_engine(tmp_path / "missing.engine")


def test_wrong_format_version(saved, tmp_path):
    _, path, _ = saved
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, fmt.FORMAT_VERSION + 1)
    with pytest.raises(EngineFileError, match=f"format version {fmt.FORMAT_VERSION + 1}"):
        load_engine(damaged(path, tmp_path, bytes(data)))


def test_trailing_garbage(saved, tmp_path):
    _, path, _ = saved
    with pytest.raises(EngineFileError, match="unexpected bytes"):
        load_engine(damaged(path, tmp_path, path.read_bytes() + b"\0"))


def test_fuzz_random_corruptions(saved, tmp_path):
    _, path, inputs = saved
    data = path.read_bytes()
    rng = random.Random(1234)
    for trial in range(40):
        bad = bytearray(data)
        kind = trial % 4
        if kind == 0:      # a few random byte changes
            for _ in range(rng.randint(1, 4)):
                bad[rng.randrange(len(bad))] ^= rng.randint(1, 255)
        elif kind == 1:    # cut anywhere
            bad = bad[:rng.randrange(len(bad))]
        elif kind == 2:    # insert bytes
            at = rng.randrange(len(bad))
            bad[at:at] = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 16)))
        else:              # delete a range
            at = rng.randrange(len(bad))
            del bad[at:at + rng.randint(1, 64)]
        if bytes(bad) == data:
            continue
        with pytest.raises(EngineFileError):
            load_engine(damaged(path, tmp_path, bytes(bad)))


def _resave(engine, path, **patches):
    """Save as if built elsewhere: patches replace functions of trident.kernels.identity."""
    original = {k: getattr(identity, k) for k in patches}
    try:
        for k, v in patches.items():
            setattr(identity, k, v)
        engine.save(path)
    finally:
        for k, v in original.items():
            setattr(identity, k, v)


def test_other_gpu_is_refused_unless_forced(saved, tmp_path):
    engine, _, inputs = saved
    path = tmp_path / "h200.engine"
    _resave(engine, path, device_identity=lambda device: {"name": "NVIDIA H200", "capability": [9, 0]})
    with pytest.raises(EngineFileError, match=r"built for NVIDIA H200 \(sm_90\), this device is "
                                              r"cpu-interpreter.*force=True"):
        load_engine(path)
    assert outputs_equal(load_engine(path, force=True)(*inputs), engine(*inputs))
    assert outputs_equal(load_engine(path, any_gpu=True)(*inputs), engine(*inputs))
    # re-tuning accepts another GPU's file (on the CPU nothing is timed: the configs stay)
    retuned = retune(path)
    assert outputs_equal(retuned(*inputs), engine(*inputs))
    assert [s.config for s in retuned.plan.kernel_steps()] == [s.config for s in engine.plan.kernel_steps()]


def test_other_versions_are_refused(saved, tmp_path):
    engine, _, _ = saved
    path = tmp_path / "old.engine"
    ours = identity.versions()
    _resave(engine, path, versions=lambda: {**ours, "triton": "2.1.0"})
    with pytest.raises(EngineFileError, match=r"built with triton 2.1.0, this is triton"):
        load_engine(path)
    with pytest.raises(EngineFileError, match=r"built with triton 2.1.0"):
        load_engine(path, any_gpu=True)  # another GPU is not another Triton


def test_header_is_json_and_weights_are_raw(saved):
    """No pickle: the header parses as JSON, every weight is a (dtype, shape, offset) entry."""
    _, path, _ = saved
    header, payload = fmt.read_engine_file(path)
    json.dumps(header)
    assert header["format"] == fmt.FORMAT_VERSION
    assert header["payload"]["size"] == len(payload)
    assert all(set(w) == {"name", "dtype", "shape", "offset", "nbytes"} for w in header["weights"])
    sources = [s["source"] for s in header["plan"]["steps"] if s["kind"] == "kernel"]
    assert sources and all("@triton.jit" in s for s in sources)


def test_changed_kernel_templates_are_refused(saved, tmp_path):
    engine, _, inputs = saved
    path = tmp_path / "templates.engine"
    _resave(engine, path, templates_hash=lambda: "0123456789abcdef")
    with pytest.raises(EngineFileError, match="kernel templates"):
        load_engine(path)
    assert outputs_equal(load_engine(path, force=True)(*inputs), engine(*inputs))


def test_a_torch_step_round_trips(saved_with_torch_step):
    engine, path, inputs = saved_with_torch_step
    assert [s.kind for s in engine.plan.steps if s.kind != "view"] == ["kernel", "torch", "kernel"]
    assert outputs_equal(engine(*inputs), load_engine(path)(*inputs))


def test_header_holds_a_plan_and_no_compiler_internals(saved_with_torch_step):
    """The plan is written field by field; the whole graph and the tuning problems stay with the
    compiler (each kernel's source declares its own PROBLEM). A kernel carries its spec: the
    fused nodes and layouts its generator read, from which loading regenerates the source."""
    engine, path, _ = saved_with_torch_step
    header, _ = fmt.read_engine_file(path)
    assert "program" not in header and "graph" not in header["plan"]
    steps = header["plan"]["steps"]
    assert {s["kind"] for s in steps} >= {"kernel", "view", "torch"}
    assert not any({"group", "problem"} & set(s) for s in steps)
    kernel = next(s for s in steps if s["kind"] == "kernel")
    assert set(kernel) == {"kind", "name", "source", "args", "outputs", "config", "sizes", "spec",
                           "index_checks"}
    assert set(kernel["spec"]) == {"kind", "name", "outputs", "group", "types", "layouts", "constants"}
    assert set(kernel["config"]) == {"params", "num_warps", "num_stages"}
    assert all(set(lay) == {"shape", "strides", "dtype", "offset"} for lay in header["plan"]["layouts"].values())


def test_plan_json_round_trip(saved):
    engine, _, _ = saved
    plan = engine.plan
    again = Plan.from_json(json.loads(json.dumps(plan.to_json())), plan.constants)
    assert again.steps == plan.steps and again.layouts == plan.layouts
    assert (again.name, again.inputs, again.outputs) == (plan.name, plan.inputs, plan.outputs)
    assert again.index_bounds == plan.index_bounds and again.index_bounds  # bert's token ids


@pytest.mark.parametrize("field, value, message", [
    (("steps", "__kernel__", "config", "num_warps"), "4",
     r"plan\.steps\[\d+\]\.config\.num_warps should be an integer, got str"),
    (("steps", "__kernel__", "kind"), "script", r"steps\[\d+\]\.kind: unknown step kind 'script'"),
    (("steps", "__kernel__", "args"), [1], r"steps\[\d+\]\.args should hold value names"),
    (("layouts", "__first__", "dtype"), "float99", r"unknown dtype 'float99'"),
    (("layouts", "__first__", "shape"), None, r"layouts\..*\.shape should be a list, got null"),
    (("inputs",), "x", r"plan\.inputs should be a list, got str"),
])
def test_malformed_plan_fields_are_named(saved, field, value, message):
    engine, _, _ = saved
    data = json.loads(json.dumps(engine.plan.to_json()))
    target = data
    for key in field[:-1]:
        if key == "__first__":
            key = next(iter(target))
        elif key == "__kernel__":
            key = next(k for k, s in enumerate(target) if s["kind"] == "kernel")
        target = target[key]
    target[field[-1]] = value
    with pytest.raises(EngineFileError, match=message):
        Plan.from_json(data, engine.plan.constants)
