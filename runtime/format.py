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
arguments and launch config, torch-fallback nodes, a dynamic-batch plan's profile and templates),
and a table of the weights (name, dtype, shape, offset, size in the payload). Weights are stored
already packed in the layouts their kernels read, so loading runs neither the frontend nor the
passes nor codegen: it re-imports the kernel sources and places the weights. No pickle anywhere:
tensors are raw bytes.

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
FORMAT_VERSION = 2   # 2: the header holds a launch plan (1 held the compiler's graph and groups)
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


def _weights(header: dict, payload: memoryview) -> dict[str, torch.Tensor]:
    out = {}
    for entry in header["weights"]:
        dtype = dtype_from_name(entry["dtype"], f"weight {entry['name']}")
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
    problems = mismatches(header, device)
    if any_gpu:
        problems = [p for p in problems if not p.startswith("built for ")]
    if problems and not force:
        raise EngineFileError(f"engine file {path} cannot run here: {'; '.join(problems)}. "
                              f"Rebuild it on this machine (trident compile), or load it with "
                              f"force=True (or re-tune it for this GPU: "
                              f"trident.compiler.build.retune)")
    try:
        plan = Plan.from_json(header["plan"], _weights(header, payload))
    except EngineFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise EngineFileError(f"engine file {path}: malformed plan ({type(e).__name__}: {e})") \
            from None
    info = {k: header.get(k) for k in ("format", "created", *IDENTITY_FIELDS, "engine")}
    info.update(path=str(path), bytes=Path(path).stat().st_size)
    return EngineFile(plan, info)


__all__ = ["EngineFile", "FORMAT_VERSION", "MAGIC", "read_engine", "read_engine_file", "save_engine"]
