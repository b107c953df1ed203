"""The engine file: one file holding everything an engine needs to run, and nothing executable
but the generated kernel sources it was built with.

Layout (little endian):

    offset  size  field
    0       8     magic b"TRDNTENG"
    8       4     format version (uint32)
    12      4     reserved, 0
    16      8     header length H (uint64)
    24      32    sha256 of the header bytes
    56      H     header: UTF-8 JSON (below)
    56+H    P     payload: the weights' raw bytes, each blob 64-byte aligned; P and the payload's
                  sha256 are in the header; the file ends exactly there

The header holds the versions it was built with (trident, Triton, torch, and a hash of the kernel
templates the generated kernels call), the device (GPU name and compute capability, or
"cpu-interpreter"), and the program: graph (inputs, outputs, value types,
nodes with their attributes), steps (kind, values, fusion group with its nodes, kernel name,
source, arguments, launch config), every value's layout, a dynamic-batch engine's profile and
templates, and a table of the weights (name, dtype, shape, offset, size in the payload). Weights
are stored already packed in the layouts their kernels read (the engine's own constants), so
loading runs neither the frontend nor the passes nor codegen: it re-imports the kernel sources and
places the weights.

JSON has no tuples, dtypes or affine templates: values are tagged ({"t": [...]}, {"dtype": "float16"},
{"affine": [a, c]}, {"d": [[key, value], ...]}). No pickle anywhere: tensors are raw bytes.

Integrity: a wrong magic, an unknown format version, a length that does not add up, or a checksum
that does not match raise EngineFileError before anything is used. Compatibility: a file built
for another GPU (or the interpreter), with another major.minor of trident, Triton or torch, or
with other kernel templates, raises EngineFileError unless load_engine(..., force=True) (run the kernels
anyway) or retune="fast"/"full" (accept another GPU and re-tune the launch configs here).
Writes are atomic: a temporary file in the same directory, fsync, then rename.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import struct
from pathlib import Path

import torch

from trident.compiler.errors import EngineFileError, TridentError

MAGIC = b"TRDNTENG"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sIIQ32s")   # magic, version, reserved, header length, header sha256
BLOB_ALIGN = 64


# ----------------------------------------------------------------------- identity ----
def versions() -> dict:
    import triton

    try:
        from importlib.metadata import version

        trident_version = version("trident")
    except Exception:  # noqa: BLE001 - a source checkout that is not installed
        trident_version = "0.0.0"
    return {"trident": trident_version, "triton": triton.__version__,
            "torch": torch.__version__.split("+")[0]}


def templates_hash() -> str:
    """sha256 of the kernel templates (trident/kernels/*.py) that generated kernels import: an
    engine whose kernels call templates that changed since it was built is not run."""
    import trident.kernels

    h = hashlib.sha256()
    for path in sorted(Path(trident.kernels.__file__).parent.glob("*.py")):
        if path.name != "bench.py":
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def device_identity(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"name": "cpu-interpreter", "capability": None}
    index = device.index if device.index is not None else torch.cuda.current_device()
    return {"name": torch.cuda.get_device_name(index),
            "capability": list(torch.cuda.get_device_capability(index))}


def _major_minor(v: str) -> tuple:
    parts = v.split("+")[0].split(".")
    return tuple(parts[:2])


def compatibility_problems(header: dict, device: torch.device) -> list[str]:
    """Why this file should not run here (empty if it should)."""
    problems = []
    built, here = header.get("versions", {}), versions()
    for name in ("trident", "triton", "torch"):
        if _major_minor(str(built.get(name, "?"))) != _major_minor(here[name]):
            problems.append(f"built with {name} {built.get(name)}, this is {name} {here[name]}")
    if header.get("templates") != templates_hash():
        problems.append("its kernels were generated for other versions of trident's kernel "
                        "templates (trident/kernels/*.py changed since)")
    want, have = header.get("device", {}), device_identity(device)
    if (want.get("name"), want.get("capability")) != (have["name"], have["capability"]):
        def cap(d: dict) -> str:
            return f" (sm_{''.join(map(str, d['capability']))})" if d.get("capability") else ""
        problems.append(f"built for {want.get('name')}{cap(want)}, this device is "
                        f"{have['name']}{cap(have)}")
    return problems


# ------------------------------------------------------------------ value encoding ----
def encode(value):
    """Python value -> JSON-able, tagged so decode() restores tuples, dtypes and templates."""
    from trident.compiler.codegen.dynamic import Affine

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).replace("torch.", "")}
    if isinstance(value, Affine):
        return {"affine": [value.a, value.c]}
    if isinstance(value, tuple):
        return {"t": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"d": [[encode(k), encode(v)] for k, v in value.items()]}
    raise TridentError(f"engine file: cannot store a {type(value).__name__} ({value!r:.80})")


def decode(value):
    from trident.compiler.codegen.dynamic import Affine

    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        if len(value) != 1:
            raise EngineFileError(f"engine file: malformed value {value!r:.80}")
        (tag, body), = value.items()
        if tag == "t":
            return tuple(decode(v) for v in body)
        if tag == "d":
            return {decode(k): decode(v) for k, v in body}
        if tag == "dtype":
            dtype = getattr(torch, body, None)
            if not isinstance(dtype, torch.dtype):
                raise EngineFileError(f"engine file: unknown dtype {body!r}")
            return dtype
        if tag == "affine":
            return Affine(int(body[0]), int(body[1]))
        raise EngineFileError(f"engine file: unknown tag {tag!r}")
    return value


# ------------------------------------------------------------------ program <-> JSON ----
def _node(n) -> dict:
    return {"op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs),
            "attrs": encode(n.attrs), "name": n.name}


def _layout(lay) -> list:
    return [list(lay.shape), list(lay.strides), encode(lay.dtype), lay.offset]


def program_header(engine) -> dict:
    program = engine.program
    graph = program.graph
    steps = []
    for s in program.steps:
        entry = {"kind": s.kind, "inputs": list(s.inputs), "outputs": list(s.outputs),
                 "group": {"kind": s.group.kind, "nodes": [_node(n) for n in s.group.nodes],
                           "reasons": list(s.group.reasons)}}
        if s.kernel is not None:
            k = s.kernel
            entry["kernel"] = {"name": k.name, "source": k.source, "args": list(k.args),
                               "config": encode(k.config), "problem": encode(k.problem),
                               "packed": sorted(k.packed)}
        steps.append(entry)
    out = {"graph": {"name": graph.name, "inputs": list(graph.inputs),
                     "outputs": list(graph.outputs),
                     "types": {v: [encode(tuple(t.shape)), encode(t.dtype)]
                               for v, t in graph.types.items()},
                     "nodes": [_node(n) for n in graph.nodes]},
           "steps": steps,
           "layouts": {v: _layout(lay) for v, lay in program.layouts.items()}}
    info = engine.dynamic
    if info is not None:
        out["dynamic"] = {"profile": list(info.profile.as_tuple()), "build_batch": info.build_batch,
                          "layouts": encode(info.layouts), "inputs": encode(info.inputs),
                          "node_attrs": encode(info.node_attrs),
                          "batched_kernels": sorted(info.batched_kernels)}
    return out


def _decode_node(d: dict):
    from trident.compiler.ir import Node

    return Node(d["op"], tuple(d["inputs"]), tuple(d["outputs"]), decode(d["attrs"]), d["name"])


def program_from_header(h: dict, constants: dict):
    from trident.compiler.codegen.kernels import KernelSource
    from trident.compiler.codegen.program import Layout, Program, Step
    from trident.compiler.fusion import Group
    from trident.compiler.ir import Graph, TensorType

    g = h["graph"]
    types = {v: TensorType(tuple(decode(shape)), decode(dtype))
             for v, (shape, dtype) in g["types"].items()}
    graph_constants = {n: t for n, t in constants.items() if n in types}
    graph = Graph([_decode_node(n) for n in g["nodes"]], list(g["inputs"]), list(g["outputs"]),
                  types, graph_constants, g["name"])
    layouts = {v: Layout(tuple(shape), tuple(strides), decode(dtype), int(offset))
               for v, (shape, strides, dtype, offset) in h["layouts"].items()}
    steps = []
    for s in h["steps"]:
        group = Group(s["group"]["kind"], [_decode_node(n) for n in s["group"]["nodes"]],
                      list(s["group"]["reasons"]))
        kernel = None
        if "kernel" in s:
            k = s["kernel"]
            kernel = KernelSource(k["name"], k["source"], list(k["args"]), decode(k["config"]),
                                  {n: (constants[n], layouts[n]) for n in k["packed"] if n in constants},
                                  decode(k["problem"]))
        steps.append(Step(s["kind"], list(s["inputs"]), list(s["outputs"]), group, kernel))
    if "dynamic" in h:
        from trident.compiler.codegen.dynamic import BatchInfo, BatchProfile, DynamicProgram

        d = h["dynamic"]
        info = BatchInfo(BatchProfile(*d["profile"]), int(d["build_batch"]), decode(d["layouts"]),
                         decode(d["inputs"]), {int(k): v for k, v in decode(d["node_attrs"]).items()},
                         set(d["batched_kernels"]))
        return DynamicProgram(graph, steps, layouts, dict(constants), info)
    return Program(graph, steps, layouts, dict(constants))


# -------------------------------------------------------------------------- writing ----
def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def save_engine(engine, path) -> Path:
    """Write `engine` to `path` atomically; returns the path."""
    path = Path(path)
    blobs, table, offset = [], [], 0
    for name in sorted(engine.constants):
        data = _tensor_bytes(engine.program.constants[name])
        pad = (-offset) % BLOB_ALIGN
        blobs.append(b"\0" * pad)
        offset += pad
        t = engine.program.constants[name]
        table.append({"name": name, "dtype": encode(t.dtype), "shape": list(t.shape),
                      "offset": offset, "nbytes": len(data)})
        blobs.append(data)
        offset += len(data)
    payload = b"".join(blobs)
    header = {
        "format": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "templates": templates_hash(),
        "device": device_identity(engine.device),
        "engine": {"cuda_graph": engine.cuda_graph, "streams": engine.schedule.num_streams,
                   "arena_bytes": engine.memory.arena_bytes},
        "program": program_header(engine),
        "weights": table,
        "payload": {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()},
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    preamble = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(head), hashlib.sha256(head).digest())
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(preamble)
            f.write(head)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# -------------------------------------------------------------------------- reading ----
def read_engine_file(path) -> tuple[dict, memoryview]:
    """Check the file's structure and checksums; returns (header, payload)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EngineFileError(f"cannot read engine file {path}: {e.strerror or e}") from None
    where = f"engine file {path}"
    if len(data) < _PREAMBLE.size:
        if not data.startswith(MAGIC[:len(data)]):
            raise EngineFileError(f"{where} is not a trident engine file (no magic number)")
        raise EngineFileError(f"{where} is truncated ({len(data)} bytes)")
    magic, version, _, head_len, head_sha = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise EngineFileError(f"{where} is not a trident engine file (magic {magic!r}, "
                              f"expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise EngineFileError(f"{where} has format version {version}; this trident reads version "
                              f"{FORMAT_VERSION} (rebuild the engine with this trident)")
    start = _PREAMBLE.size
    if head_len > len(data) - start:
        raise EngineFileError(f"{where} is truncated (header of {head_len} bytes, "
                              f"{len(data) - start} left)")
    head = data[start:start + head_len]
    if hashlib.sha256(head).digest() != head_sha:
        raise EngineFileError(f"{where} is corrupted (header checksum mismatch)")
    try:
        header = json.loads(head)
        size, sha = int(header["payload"]["size"]), header["payload"]["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise EngineFileError(f"{where}: malformed header ({e})") from None
    payload = memoryview(data)[start + head_len:]
    if len(payload) < size:
        raise EngineFileError(f"{where} is truncated (payload of {size} bytes, {len(payload)} present)")
    if len(payload) > size:
        raise EngineFileError(f"{where} has {len(payload) - size} unexpected bytes after its payload")
    if hashlib.sha256(payload).hexdigest() != sha:
        raise EngineFileError(f"{where} is corrupted (payload checksum mismatch)")
    return header, payload


def _weights(header: dict, payload: memoryview) -> dict[str, torch.Tensor]:
    out = {}
    for entry in header["weights"]:
        dtype = decode(entry["dtype"])
        shape = tuple(int(d) for d in entry["shape"])
        start, n = int(entry["offset"]), int(entry["nbytes"])
        expected = dtype.itemsize
        for d in shape:
            expected *= d
        if n != expected or start < 0 or start + n > len(payload):
            raise EngineFileError(f"engine file: weight {entry['name']} has {n} bytes at {start}, "
                                  f"expected {expected} for {dtype}{list(shape)}")
        raw = torch.frombuffer(bytearray(payload[start:start + n]), dtype=torch.uint8) if n else \
            torch.empty(0, dtype=torch.uint8)
        out[entry["name"]] = raw.view(dtype).reshape(shape)
    return out


def load_engine(path, device=None, *, force: bool = False, retune: str | None = None,
                cuda_graph: bool = True, streams: int | None = None):
    """Load an engine saved with `engine.save(path)`.

    force: run a file built for another GPU or other versions anyway. retune ("fast" | "full"):
    accept another GPU and re-tune the kernels' launch configs on this one (needs a GPU).
    """
    from trident.runtime.engine import Engine, _normalize, default_device

    header, payload = read_engine_file(path)
    device = _normalize(device if device is not None else default_device())
    problems = compatibility_problems(header, device)
    if retune is not None:
        problems = [p for p in problems if not p.startswith("built for ")]
    if problems and not force:
        raise EngineFileError(f"engine file {path} cannot run here: {'; '.join(problems)}. "
                              f"Rebuild it on this machine (trident compile), or load it with "
                              f"force=True (or retune='fast' for another GPU)")
    try:
        constants = _weights(header, payload)
        program = program_from_header(header["program"], constants)
    except EngineFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise EngineFileError(f"engine file {path}: malformed program ({type(e).__name__}: {e})") \
            from None
    if retune is not None:
        from trident.compiler.autotune import tune_program

        tune_program(program, retune, device=device)
    engine = Engine(program, device=device, cuda_graph=cuda_graph, streams=streams)
    engine.file_info = {k: header.get(k) for k in ("format", "created", "versions", "templates",
                                                   "device", "engine")}
    engine.file_info["path"] = str(path)
    engine.file_info["bytes"] = Path(path).stat().st_size
    return engine


__all__ = ["FORMAT_VERSION", "MAGIC", "compatibility_problems", "device_identity", "load_engine",
           "read_engine_file", "save_engine", "versions"]
