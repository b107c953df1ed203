"""`trident fuzz-files`: an adversarial test of engine files and caches.

A tiny model (a conv, a view, a matmul, a softmax) is built and saved once, and once more with a
batch profile (shape-generic kernels, whose specs hold their probes'; run at a batch it was not
generated at). Then, seeded:
- header cases edit one field of an engine file's header JSON (any field: types, sizes, names,
  kernel sources and specs, launch configs, shapes, weights' table, the profile and its
  templates) and re-pack the file with a valid checksum, so only trident's own checks stand
  between the edit and the kernels (one case in PROFILED_SHARE edits the profiled file);
- cache cases damage one file of the kernel cache, the autotune cache or a timing-cache file
  (flipped bytes, truncation, foreign code, edited configs, a folder or a link in its place).
Every case is loaded and run in a worker process (many cases per worker; a worker that dies is
restarted and its case counted as a crash, with the last line it wrote to stderr). Each worker has
its own copy of the caches and the timing file, so one worker's damage never meets another's case.
A case passes when it ends in a trident error or in the clean engine's outputs. Foreign code
injected by the cases would create a sentinel file; the sentinel must never appear, and no file may
appear outside the cache and the case files.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

SENTINEL = "FOREIGN_CODE_RAN"
KINDS = ("ok", "error", "raw", "wrong", "crash")
PROFILE = (1, 2, 5)       # the profiled engine's batch range; it runs at PROFILED_BATCH
PROFILED_BATCH = 3
PROFILED_SHARE = 4        # every 4th header case edits the profiled engine file


# ------------------------------------------------------------------------- the model ----
def tiny_model():
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4 * 3 * 3, 6)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return torch.softmax(self.fc(y.flatten(1)), -1)

    torch.manual_seed(0)
    return Tiny().eval(), (torch.randn(2, 3, 5, 5),)


def profiled_inputs():
    import torch

    return (torch.randn(PROFILED_BATCH, 3, 5, 5, generator=torch.Generator().manual_seed(1)),)


# --------------------------------------------------------------------- header edits ----
def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for k, v in enumerate(value):
            yield from _paths(v, prefix + (k,))


def _get(root, path):
    for p in path:
        root = root[p]
    return root


def _foreign(sentinel: str) -> str:
    return f"open({sentinel!r}, 'w').write('x')\n"


def _replacement(rng: random.Random, old, sentinel: str):
    """Another value for a field: another type, a nearby or extreme number, a hostile string."""
    code = _foreign(sentinel)
    choices = [None, True, False, 0, -1, 1, 2, 3, 7, 2**31, 2**63, -2**40, 0.5, float("nan"), "",
               "x", "float32", "int32", "float16", "../../escape", "/tmp/escape", "a b", "__init__",
               [], [1, 2], {}, {"a": 1}, code, "import os\n" + code,
               {"tuple": [1]}, {"dtype": "float16"}, {"affine": [1, 0]}, [[[[[]]]]]]
    if type(old) is int:
        choices += [old + 1, old - 1, old * 2, old // 2, -old, old + 64]
    if isinstance(old, str):
        choices += [old + "x", old[:-1], old.replace("/", "*"), old.replace("+", "-"),
                    old.upper(), code + old, old + "\n" + code, old.replace("tl.", "__import__('os').")]
    if isinstance(old, list) and old:
        choices += [old[:-1], old + [old[-1]], list(reversed(old)), old[1:]]
    return rng.choice(choices)


def edit_header(header: dict, rng: random.Random, sentinel: str) -> str:
    """Edit one field of `header` in place; returns a description of the edit."""
    paths = [p for p in _paths(header) if p]
    focus = rng.random()
    if focus < 0.35:  # the kernels: sources, specs, configs, names
        paths = [p for p in paths if "steps" in p] or paths
    elif focus < 0.5:
        paths = [p for p in paths if "layouts" in p or "weights" in p] or paths
    elif focus < 0.6:  # a profiled plan's profile and templates (none in a static plan)
        paths = [p for p in paths if "dynamic" in p] or paths
    path = rng.choice(paths)
    parent, key = _get(header, path[:-1]), path[-1]
    old = parent[key]
    action = rng.random()
    if action < 0.12 and isinstance(parent, dict):
        del parent[key]
        return f"drop {'.'.join(map(str, path))}"
    if action < 0.18 and isinstance(parent, list):
        parent.insert(rng.randrange(len(parent) + 1), copy.deepcopy(old))
        return f"duplicate {'.'.join(map(str, path))}"
    if action < 0.22 and isinstance(parent, dict):
        parent[rng.choice(["extra", "source", "spec", "node", "__class__"])] = _replacement(rng, old, sentinel)
        return f"add a field beside {'.'.join(map(str, path))}"
    parent[key] = _replacement(rng, old, sentinel)
    return f"set {'.'.join(map(str, path))} = {str(parent[key])[:40]!r}"


def repack(path: Path, header: dict, payload: bytes, out: Path) -> None:
    """Write `header` and `payload` as an engine file with a valid header checksum."""
    from trident.runtime import format as fmt

    head = json.dumps(header, separators=(",", ":")).encode()
    import hashlib
    preamble = fmt._PREAMBLE.pack(fmt.MAGIC, fmt.FORMAT_VERSION, 0, len(head), hashlib.sha256(head).digest())
    out.write_bytes(preamble + head + payload)


# ---------------------------------------------------------------------- cache edits ----
CACHE_TARGETS = ("kernel", "autotune", "timing")


def damage_bytes(data: bytes, rng: random.Random, sentinel: str) -> bytes:
    action = rng.randrange(8)
    if action == 0 and data:
        k = rng.randrange(len(data))
        return data[:k] + bytes([data[k] ^ (1 << rng.randrange(8))]) + data[k + 1:]
    if action == 1:
        return data[:rng.randrange(len(data) + 1)]
    if action == 2:
        return b""
    if action == 3:
        return _foreign(sentinel).encode() + data
    if action == 4:
        return data.replace(b"/", b"*").replace(b" + ", b" - ")
    if action == 5:
        return rng.randbytes(rng.randrange(1, 200))  # (from the seed: a run repeats exactly)
    if action == 6:
        return data + b"\n" + _foreign(sentinel).encode()
    return data.replace(b"BLOCK", b"BLOCK_", 1)


def edit_tuning_entry(entry: dict, rng: random.Random, sentinel: str) -> dict:
    """A JSON edit of an autotune entry, mostly of its config (the key stays consistent)."""
    entry = copy.deepcopy(entry)
    config = entry["config"]
    key = rng.choice(sorted(config) + ["num_warps", "new_param"])
    config[key] = rng.choice([0, -1, 1, 2, 3, 4, 5, 6, 8, 12, 16, 64, 1024, 2**20, 2**40, None, "16",
                              1.5, True, [], {}, _foreign(sentinel)])
    if rng.random() < 0.2:
        del entry[rng.choice(sorted(entry))]
    return entry


# -------------------------------------------------------------------------- running ----
def outputs_match(got, want) -> bool:
    import torch

    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5, equal_nan=True):
            return False
    return True


def _classify(run) -> tuple[str, str]:
    from trident.compiler.errors import TridentError

    try:
        ok = run()
    except TridentError as e:
        return "error", f"{type(e).__name__}: {str(e)[:160]}"
    except Exception as e:  # noqa: BLE001 - what the fuzzer exists to find
        return "raw", f"{type(e).__name__}: {str(e)[:160]}"
    return ("ok", "") if ok else ("wrong", "outputs differ from the clean engine's")


def _run_header_case(case: dict, ctx: dict) -> tuple[str, str]:
    from trident.compiler.build import load_engine

    inputs, expected = ctx["cases_of"][case.get("engine", "static")]

    def run():
        engine = load_engine(case["file"])
        return outputs_match(engine(*inputs), expected)
    return _classify(run)


def _forget_kernel_modules() -> None:
    for name in [m for m in sys.modules if m.startswith("trident_kernels.")]:
        del sys.modules[name]


def _run_cache_case(case: dict, ctx: dict) -> tuple[str, str]:
    import torch

    from trident.compiler.autotune import tune_program
    from trident.compiler.build import compile_graph, engine_from, import_model

    _forget_kernel_modules()
    target, path = case["target"], Path(ctx["root"]) / case["path"]
    kind = case["damage"]
    if kind == "dir":
        path.unlink(missing_ok=True)
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "link":
        path.unlink(missing_ok=True)
        path.symlink_to(ctx["outside"])
    else:
        path.write_bytes(bytes.fromhex(case["bytes"]))

    def run():
        if target == "kernel":
            engine = ctx["load"](ctx["engine_file"])
        else:
            program = compile_graph(import_model(ctx["model"], ctx["inputs"]))
            timer = lambda run_, cfg: 1.0  # noqa: E731 - level "none" never times
            tune_program(program, "none", timing_cache=ctx["timing"] if target == "timing" else None,
                         cache=ctx["autotune"], timer=timer, progress=False)
            engine = engine_from(program, torch.device("cpu"))
        return outputs_match(engine(*ctx["inputs"]), ctx["expected"])
    result = _classify(run)
    _restore(path, case["clean"])
    return result


def _restore(path: Path, clean_hex: str) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes.fromhex(clean_hex))


def worker(context_file: str) -> int:
    """Read cases (JSON lines) on stdin, print one result line per case."""
    import warnings

    from trident.compiler.build import load_engine

    warnings.simplefilter("ignore")
    ctx = json.loads(Path(context_file).read_text())
    model, inputs = tiny_model()
    ctx.update(model=model, inputs=inputs, load=load_engine)
    ctx["expected"] = [t.clone() for t in load_engine(ctx["engine_file"])(*inputs)]
    wide = profiled_inputs()
    ctx["cases_of"] = {"static": (inputs, ctx["expected"]),
                       "profiled": (wide, [t.clone() for t in load_engine(ctx["profiled_file"])(*wide)])}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        run = _run_header_case if case["family"] == "header" else _run_cache_case
        kind, detail = run(case, ctx)
        print(json.dumps({"id": case["id"], "kind": kind, "detail": detail}), flush=True)
    return 0


# --------------------------------------------------------------------------- driver ----
def _context(root: Path, shared: Path) -> dict:
    """The files a process works on: the caches and the timing file under `root` (its own), the
    engine files and the outside file under `shared`."""
    return {"root": str(root), "autotune": str(root / "cache" / "autotune"), "timing": str(root / "timing.json"),
            "engine_file": str(shared / "clean.engine"), "profiled_file": str(shared / "profiled.engine"),
            "outside": str(shared / "outside.py")}


def _env(root: Path) -> dict:
    return dict(os.environ, TRIDENT_CACHE_DIR=str(root / "cache"), TRIDENT_QUIET="1")


# Where a run may write: the case files, and each worker's (or the clean copy's) caches and timing file
# (a timing file is replaced through a hidden temporary beside it). Any other new file escaped.
WRITABLE = re.compile(r"work/run/(cases(/|$)|(worker\d+/)?(cache(/|$)|\.?timing\.json|stderr\.log$))")


class Fuzz:
    def __init__(self, root: Path, seed: int, sentinel: Path):
        self.root, self.seed, self.sentinel = root, seed, sentinel
        self.rng = random.Random(seed)
        self.cache = root / "cache"
        self.cases_dir = root / "cases"
        self.cases_dir.mkdir(parents=True, exist_ok=True)

    def prepare(self) -> dict:
        """Build and save the clean engine, fill the caches (in a subprocess: this process keeps
        no trident state), and return the clean files' context."""
        ctx = _context(self.root, self.root)
        (self.root / "context.json").write_text(json.dumps(ctx))
        code = ("import sys; from trident.tools.fuzz_files import prepare_files; "
                "prepare_files(sys.argv[1])")
        subprocess.run([sys.executable, "-c", code, str(self.root / "context.json")], check=True,
                       env=_env(self.root), cwd=self.root)
        Path(ctx["outside"]).write_text(_foreign(str(self.sentinel)))
        return ctx

    def worker_roots(self, workers: int) -> list[Path]:
        """Each worker's private copy of the clean caches and timing file."""
        roots = []
        for k in range(workers):
            root = self.root / f"worker{k}"
            shutil.copytree(self.cache, root / "cache", symlinks=True)
            shutil.copy2(self.root / "timing.json", root / "timing.json")
            (root / "context.json").write_text(json.dumps(_context(root, self.root)))
            roots.append(root)
        return roots

    def header_cases(self, n: int, ctx: dict) -> list[dict]:
        from trident.runtime.format import read_engine_file

        files = {}
        for engine, key in (("static", "engine_file"), ("profiled", "profiled_file")):
            header, payload = read_engine_file(ctx[key])
            files[engine] = (Path(ctx[key]), header, bytes(payload))
        cases = []
        for k in range(n):
            engine = "profiled" if k % PROFILED_SHARE == PROFILED_SHARE - 1 else "static"
            source, header, payload = files[engine]
            edited = copy.deepcopy(header)
            what = edit_header(edited, self.rng, str(self.sentinel))
            out = self.cases_dir / f"h{k}.engine"
            repack(source, edited, payload, out)
            cases.append({"id": f"h{k}", "family": "header", "engine": engine,
                          "what": f"{engine}: {what}", "file": str(out)})
        return cases

    def cache_cases(self, n: int, ctx: dict) -> list[dict]:
        files = {"kernel": sorted((self.cache / "kernels").glob("*.py")),
                 "autotune": sorted((self.cache / "autotune").glob("??/*.json")),
                 "timing": [Path(ctx["timing"])]}
        cases = []
        for k in range(n):
            target = CACHE_TARGETS[k % len(CACHE_TARGETS)]
            path = self.rng.choice(files[target])
            clean = path.read_bytes()
            r = self.rng.random()
            if r < 0.08:
                damage, data = "dir", b""
            elif r < 0.14:
                damage, data = "link", b""
            elif target != "kernel" and r < 0.6:
                damage, data = "json", self._json_edit(clean, target)
            else:
                damage, data = "bytes", damage_bytes(clean, self.rng, str(self.sentinel))
            cases.append({"id": f"c{k}", "family": "cache", "target": target,
                          "path": str(path.relative_to(self.root)),
                          "damage": damage, "bytes": data.hex(), "clean": clean.hex(),
                          "what": f"{target} {damage} {path.name}"})
        return cases

    def _json_edit(self, clean: bytes, target: str) -> bytes:
        data = json.loads(clean)
        if target == "autotune":
            data = edit_tuning_entry(data, self.rng, str(self.sentinel))
        else:
            key = self.rng.choice(sorted(data["entries"]))
            data["entries"][key] = edit_tuning_entry(data["entries"][key], self.rng, str(self.sentinel))
        return json.dumps(data).encode()

    def run(self, cases: list[dict], roots: list[Path]) -> list[dict]:
        chunks = [cases[k::len(roots)] for k in range(len(roots))]
        results = []
        procs = [_Worker(root, chunk) for root, chunk in zip(roots, chunks) if chunk]
        for p in procs:
            results += p.finish()
        return results


WORKER_COMMAND = ("-m", "trident.tools.fuzz_files", "--worker")  # (the context file's path follows)


class _Worker:
    """One worker process over a list of cases, in its own folder `root`; restarted after a crash."""

    def __init__(self, root: Path, cases: list[dict]):
        self.root, self.todo, self.results = Path(root), list(cases), []
        self.stderr = self.root / "stderr.log"
        self._start()

    def _start(self):
        # The cases reach the worker from a file, not a pipe: written to a pipe before its results
        # were read, a long list filled both pipes and the two processes waited on each other.
        self.stderr_from = self.stderr.stat().st_size if self.stderr.exists() else 0
        with tempfile.TemporaryFile("w+", dir=self.root) as todo, open(self.stderr, "ab") as stderr:
            todo.writelines(json.dumps(case) + "\n" for case in self.todo)
            todo.seek(0)
            self.proc = subprocess.Popen(
                [sys.executable, *WORKER_COMMAND, str(self.root / "context.json")],
                stdin=todo, stdout=subprocess.PIPE, stderr=stderr, text=True,
                env=_env(self.root), cwd=self.root)

    def finish(self) -> list[dict]:
        while self.todo:
            line = self.proc.stdout.readline()
            if not line:  # the worker died: its current case crashed it
                self._crashed(self.todo.pop(0))
                continue
            message = json.loads(line)
            if "ready" in message:
                continue
            self.todo.pop(0)
            self.results.append(message)
        self.proc.wait()
        return self.results

    def _crashed(self, case: dict) -> None:
        self.proc.wait()
        with open(self.stderr, "rb") as f:
            f.seek(self.stderr_from)
            said = f.read().decode(errors="replace").strip().splitlines()
        detail = f"worker exit code {self.proc.returncode}" + (f": {said[-1][:200]}" if said else "")
        self.results.append({"id": case["id"], "kind": "crash", "detail": detail})
        if case.get("family") == "cache":
            _restore(self.root / case["path"], case["clean"])
        if self.todo:
            self._start()


def prepare_files(context_file: str) -> None:
    """In a fresh process: the clean engine file, a filled kernel cache and autotune cache, and a
    timing-cache file, for the tiny model."""
    import torch

    from trident.compiler.autotune import tune_program
    from trident.compiler.autotune.cache import TuningCache, new_entry, write_timing_cache
    from trident.compiler.autotune.tuner import collect_units, program_kernels
    from trident.compiler.build import build_engine, compile_graph, engine_from, import_model
    from trident.kernels.identity import identity

    ctx = json.loads(Path(context_file).read_text())
    model, inputs = tiny_model()
    build_engine(model, "fp32", example_inputs=inputs, batch=PROFILE,
                 device=torch.device("cpu")).save(ctx["profiled_file"])
    program = compile_graph(import_model(model, inputs))
    engine = engine_from(program, torch.device("cpu"))
    engine(*inputs)
    engine.save(ctx["engine_file"])
    cache = TuningCache(ctx["autotune"])
    entries = {}
    for unit in collect_units(program_kernels(program), program.layouts, identity(torch.device("cpu"))):
        for kernel, components, key in zip(unit.kernels, unit.components, unit.keys):
            entry = new_entry(components, kernel.config.to_dict(), 1.0, "full")
            cache.put(entry)
            entries[key] = entry
    write_timing_cache(ctx["timing"], entries, merge=False)
    tune_program(program, "none", cache=ctx["autotune"], timer=lambda r, c: 1.0, progress=False)


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def summary(results: list[dict], cases: list[dict], escaped: list[str], foreign: bool) -> str:
    family = {c["id"]: (c["family"] if c["family"] == "header" else f"cache:{c['target']}") for c in cases}
    table = Counter((family[r["id"]], r["kind"]) for r in results)
    groups = sorted({family[r["id"]] for r in results})
    lines = [f"{'cases':<16}" + "".join(f"{k:>8}" for k in KINDS)]
    for g in groups:
        lines.append(f"{g:<16}" + "".join(f"{table[(g, k)]:>8}" for k in KINDS))
    lines.append(f"{'total':<16}" + "".join(f"{sum(table[(g, k)] for g in groups):>8}" for k in KINDS))
    lines.append(f"escaped files: {len(escaped)}; foreign code executed: {'YES' if foreign else 'no'}")
    what = {c["id"]: c["what"] for c in cases}
    for r in results:
        if r["kind"] in ("raw", "wrong", "crash"):
            lines.append(f"  {r['kind']:<6} {r['id']:<6} {what[r['id']][:70]}: {r['detail'][:150]}")
    for e in escaped[:10]:
        lines.append(f"  escaped: {e}")
    return "\n".join(lines)


def fuzz(headers: int, caches: int, seed: int = 0, workers: int = 2, root: Path | None = None) -> dict:
    """Run the fuzzer; returns {"results", "cases", "escaped", "foreign", "table"}."""
    with tempfile.TemporaryDirectory(prefix="trident-fuzz-") as tmp:
        base = Path(root or tmp)
        fuzz_root = base / "work" / "run"
        sentinel = base / SENTINEL
        f = Fuzz(fuzz_root, seed, sentinel)
        ctx = f.prepare()
        cases = f.header_cases(headers, ctx) + f.cache_cases(caches, ctx)
        roots = f.worker_roots(workers)
        before = snapshot(base)
        results = f.run(cases, roots)
        what = {c["id"]: c["what"] for c in cases}
        for r in results:
            r["what"] = what[r["id"]]
        after = snapshot(base)
        escaped = sorted(p for p in after - before if not WRITABLE.match(p))
        foreign = sentinel.exists() or any(p.endswith(SENTINEL) for p in after)
        return {"results": results, "cases": cases, "escaped": escaped, "foreign": foreign,
                "table": summary(results, cases, escaped, foreign)}


def run(args: argparse.Namespace) -> int:
    start = time.time()
    report = fuzz(args.header, args.cache, args.seed, args.workers)
    print(report["table"])
    bad = sum(r["kind"] in ("raw", "wrong", "crash") for r in report["results"])
    print(f"{len(report['results'])} cases in {time.time() - start:.0f} s (seed {args.seed})")
    if args.json:
        Path(args.json).write_text(json.dumps({k: report[k] for k in ("results", "escaped", "foreign")}))
    return 1 if bad or report["escaped"] or report["foreign"] else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("fuzz-files", help="adversarial test: edited engine headers and "
                                                 "damaged caches must end in a trident error or "
                                                 "a correct answer")
    p.add_argument("--header", type=int, default=300, help="header edits")
    p.add_argument("--cache", type=int, default=100, help="cache-file edits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--json", metavar="OUT.json", help="also write every case's result")
    p.set_defaults(func=run)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker(sys.argv[2]))
    sys.exit(subprocess.call([sys.executable, "-m", "trident.tools", "fuzz-files", *sys.argv[1:]]))
