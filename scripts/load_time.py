"""Time how fast a saved engine starts: `trident run` from a fresh process, and load_engine alone.

    python3 scripts/load_time.py model.engine [--runs 5] [--checkout DIR]

Each run is a new Python process (nothing warm but the OS file cache and the kernel cache, as for
a deployed engine). Prints the median and the spread of: the whole `trident run --iterations 1
--warmup 0` (interpreter start, imports, load, first run), and `trident.load_engine` alone.
--checkout: time another trident checkout too (e.g. the previous version), on its own engine
file built the same way (--other-engine), for a before/after figure. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

LOAD = ("import sys, time, trident; t = time.perf_counter(); trident.load_engine(sys.argv[1]); "
        "print(time.perf_counter() - t)")


def _env(checkout: str) -> dict:
    return dict(os.environ, PYTHONPATH=checkout)


def time_run(engine: str, checkout: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trident.tools", "run", engine, "--iterations", "1",
                    "--warmup", "0"], check=True, capture_output=True, env=_env(checkout), cwd=checkout)
    return time.perf_counter() - start


def time_load(engine: str, checkout: str) -> float:
    done = subprocess.run([sys.executable, "-c", LOAD, engine], check=True, capture_output=True,
                          text=True, env=_env(checkout), cwd=checkout)
    return float(done.stdout.strip().splitlines()[-1])


def measure(engine: str, checkout: str, runs: int) -> dict:
    time_run(engine, checkout)  # fills the kernel cache and Triton's, as a deployed engine's are
    whole = [time_run(engine, checkout) for _ in range(runs)]
    load = [time_load(engine, checkout) for _ in range(runs)]
    return {"run_s": statistics.median(whole), "run_spread": (min(whole), max(whole)),
            "load_s": statistics.median(load), "load_spread": (min(load), max(load))}


def show(label: str, m: dict) -> None:
    print(f"{label:<10} trident run (fresh process) median {m['run_s']:.2f} s "
          f"[{m['run_spread'][0]:.2f}, {m['run_spread'][1]:.2f}]; load_engine alone median "
          f"{m['load_s']:.2f} s [{m['load_spread'][0]:.2f}, {m['load_spread'][1]:.2f}]")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("engine")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--checkout", help="another trident checkout to time as well")
    p.add_argument("--other-engine", help="the engine file that checkout built (default: ENGINE)")
    args = p.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    mine = measure(os.path.abspath(args.engine), here, args.runs)
    show("this", mine)
    if args.checkout:
        other = measure(os.path.abspath(args.other_engine or args.engine), args.checkout, args.runs)
        show("other", other)
        print(f"difference: trident run {mine['run_s'] - other['run_s']:+.2f} s, load_engine "
              f"{mine['load_s'] - other['load_s']:+.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
