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

The header holds the identity the engine was built with (trident.kernels.identity: the trident,
Triton and torch versions, a hash of the kernel templates the generated kernels call, and the
device: GPU name and compute capability, or "cpu-interpreter"), the engine's options, the launch
plan (compiler/ir/plan.py, written field by field: layouts, steps with their kernel name, source,
arguments and launch config, torch-fallback nodes, a profiled plan's symbols, ranges and templates),
and a table of the weights (name, dtype, shape, offset, size in the payload). Weights are stored
already packed in the layouts their kernels read, so loading runs neither the frontend nor the
passes: trident.load_engine (compiler/build.py) checks the header's fields here, then the plan
(compiler/verify.py: each kernel's source is regenerated from its spec and must match), then
places the weights. No pickle anywhere: tensors are raw bytes.

Integrity: a wrong magic, an unknown format version, a length that does not add up, or a checksum
that does not match raise EngineFileError before anything is used. Compatibility: a file built
for another GPU (or the interpreter), with another major.minor of trident, Triton or torch, or
with other kernel templates, raises EngineFileError unless read with force=True (run the kernels
anyway), or any_gpu=True (accept another GPU; trident.compiler.build.retune re-tunes such a
file's launch configs here). Writes are atomic: a temporary file in the same directory, fsync,
then rename.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from trident.compiler.errors import EngineFileError
from trident.compiler.ir.plan import Plan, dtype_from_name, dtype_name
from trident.kernels.identity import identity, mismatches

MAGIC = b"TRDNTENG"
# 5: kernel steps carry the index checks the engine runs before them
# (4: optimization profiles over named sizes, shape-generic kernels whose specs hold their probes';
# 3: kernels carry the spec loading regenerates them from; 2: a plan; 1: a graph)
FORMAT_VERSION = 5
_PREAMBLE = struct.Struct("<8sIIQ32s")   # magic, version, reserved, header length, header sha256
BLOB_ALIGN = 64
IDENTITY_FIELDS = ("versions", "templates", "device")


# -------------------------------------------------------------------------- writing ----
def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def save_engine(plan: Plan, path, device: torch.device, options: dict) -> Path:
    """Write `plan` (its weights as raw bytes) to `path` atomically; returns the path.
    device: the one the engine runs on (its identity is recorded); options: the engine's."""
    path = Path(path)
    blobs, table, offset = [], [], 0
    for name in sorted(plan.constants):
        t = plan.constants[name]
        data = _tensor_bytes(t)
        pad = (-offset) % BLOB_ALIGN
        blobs.append(b"\0" * pad)
        offset += pad
        table.append({"name": name, "dtype": dtype_name(t.dtype), "shape": list(t.shape),
                      "offset": offset, "nbytes": len(data)})
        blobs.append(data)
        offset += len(data)
    payload = b"".join(blobs)
    header = {
        "format": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **identity(device),
        "engine": dict(options),
        "plan": plan.to_json(),
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


HEADER_FIELDS = {"format": int, "created": str, "versions": dict, "templates": str, "device": dict,
                 "engine": dict, "plan": dict, "weights": list, "payload": dict}
ENGINE_OPTIONS = {"cuda_graph": bool, "streams": int, "arena_bytes": int}
MAX_STREAMS = 64


def check_header(header, where: str) -> None:
    """The header's fields, typed and ranged (the plan's own are checked as it is read, then by
    trident.compiler.verify); EngineFileError naming the field."""
    if not isinstance(header, dict):
        raise EngineFileError(f"{where}: the header should be a JSON object")
    for key, kind in HEADER_FIELDS.items():
        if type(header.get(key)) is not kind:
            raise EngineFileError(f"{where}: header field {key!r} should be a {kind.__name__}, "
                                  f"got {type(header.get(key)).__name__}")
    extra = sorted(set(header) - set(HEADER_FIELDS))
    if extra:
        raise EngineFileError(f"{where}: unknown header field(s) {extra}")
    if header["format"] != FORMAT_VERSION:
        raise EngineFileError(f"{where}: header field 'format' is {header['format']}, the preamble "
                              f"says {FORMAT_VERSION}")
    options = header["engine"]
    for key, kind in ENGINE_OPTIONS.items():
        if type(options.get(key)) is not kind:
            raise EngineFileError(f"{where}: engine.{key} should be a {kind.__name__}")
    if set(options) != set(ENGINE_OPTIONS):
        raise EngineFileError(f"{where}: engine should hold exactly {sorted(ENGINE_OPTIONS)}")
    if not 1 <= options["streams"] <= MAX_STREAMS or options["arena_bytes"] < 0:
        raise EngineFileError(f"{where}: engine.streams should be in [1, {MAX_STREAMS}] and "
                              f"engine.arena_bytes >= 0")


def _entry(entry, k: int, where: str) -> tuple[str, torch.dtype, tuple, int, int]:
    at = f"{where}: weights[{k}]"
    if not isinstance(entry, dict) or set(entry) != {"name", "dtype", "shape", "offset", "nbytes"}:
        raise EngineFileError(f"{at} should hold name, dtype, shape, offset and nbytes")
    name, shape = entry["name"], entry["shape"]
    if not isinstance(name, str) or not isinstance(entry["dtype"], str):
        raise EngineFileError(f"{at}.name and .dtype should be strings")
    if not isinstance(shape, list) or len(shape) > 8 or not all(type(d) is int and d >= 0 for d in shape):
        raise EngineFileError(f"{at}.shape should be a list of at most 8 sizes >= 0")
    start, n = entry["offset"], entry["nbytes"]
    if type(start) is not int or type(n) is not int or start < 0 or n < 0 or start % BLOB_ALIGN:
        raise EngineFileError(f"{at}.offset and .nbytes should be integers >= 0, the offset a "
                              f"multiple of {BLOB_ALIGN}")
    return name, dtype_from_name(entry["dtype"], f"weights[{k}].dtype"), tuple(shape), start, n


def _weights(header: dict, payload: memoryview, where: str = "engine file") -> dict[str, torch.Tensor]:
    out, end = {}, 0
    for k, entry in enumerate(header["weights"]):
        name, dtype, shape, start, n = _entry(entry, k, where)
        expected = dtype.itemsize
        for d in shape:
            expected *= d
        if name in out:
            raise EngineFileError(f"{where}: weights[{k}].name: {name!r} appears twice")
        if n != expected or start + n > len(payload) or start < end:
            raise EngineFileError(f"{where}: weight {name} has {n} bytes at {start}, expected "
                                  f"{expected} for {dtype}{list(shape)} after byte {end}, within "
                                  f"the payload's {len(payload)}")
        end = start + n
        raw = torch.frombuffer(bytearray(payload[start:start + n]), dtype=torch.uint8) if n else \
            torch.empty(0, dtype=torch.uint8)
        out[name] = raw.view(dtype).reshape(shape)
    return out


@dataclass
class EngineFile:
    """A checked engine file: its plan (weights attached) and its header's other fields."""
    plan: Plan
    info: dict        # format, created, versions, templates, device, engine options, path, bytes


def read_engine(path, device: torch.device | str | None = None, *, force: bool = False,
                any_gpu: bool = False) -> EngineFile:
    """Read and check an engine file for running on `device` (default: the current one).

    force: accept a file built for another GPU or other versions anyway. any_gpu: accept a file
    built for another GPU (only), e.g. to re-tune its launch configs here.
    """
    header, payload = read_engine_file(path)
    check_header(header, f"engine file {path}")
    problems = mismatches(header, device)
    if any_gpu:
        problems = [p for p in problems if not p.startswith("built for ")]
    if problems and not force:
        raise EngineFileError(f"engine file {path} cannot run here: {'; '.join(problems)}. "
                              f"Rebuild it on this machine (trident compile), or load it with "
                              f"force=True (or re-tune it for this GPU: "
                              f"trident.compiler.build.retune)")
    try:
        plan = Plan.from_json(header["plan"], _weights(header, payload, f"engine file {path}"))
    except EngineFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError,
            RecursionError) as e:
        raise EngineFileError(f"engine file {path}: malformed plan ({type(e).__name__}: {e})") \
            from None
    info = {k: header.get(k) for k in ("format", "created", *IDENTITY_FIELDS, "engine")}
    info.update(path=str(path), bytes=Path(path).stat().st_size)
    return EngineFile(plan, info)


__all__ = ["EngineFile", "FORMAT_VERSION", "MAGIC", "check_header", "read_engine", "read_engine_file",
           "save_engine"]
