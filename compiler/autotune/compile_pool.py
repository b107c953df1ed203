"""Compile candidate configs in parallel worker processes ahead of timing them.

Triton compiles hold the GIL for much of their time, so threads in one process do not overlap
well; instead each of N threads here feeds one `trident.compiler.autotune.worker` subprocess. The
parent submits every (kernel, config) up front and times each kernel as soon as its configs are
compiled, so GPU timing overlaps the compiles still running.
"""
from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import threading
from concurrent.futures import Future

from trident.compiler import config

JOB_TIMEOUT_S = 300.0   # per compile, including the worker's start-up on its first job
MAX_CRASHES = 3          # a worker that dies this many times in a row: stop using the pool


class CompilePool:
    """submit(path, dtypes, launch_config) -> Future of {"ok": True} | {"error": str} | {"skipped": str}.

    "error": Triton could not compile the config (or its compile crashed or hung): a failed config.
    "skipped": the pool itself could not run it; the tuner compiles it at first launch instead.
    """

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self.jobs: queue.Queue = queue.Queue()
        self.broken: str | None = None
        self._next_id = 0
        self._threads = [threading.Thread(target=self._serve, daemon=True, name=f"trident-compile-{i}")
                         for i in range(self.workers)]
        for t in self._threads:
            t.start()

    def submit(self, path: str, dtypes: list[str], launch_config: dict) -> Future:
        future: Future = Future()
        self._next_id += 1
        self.jobs.put(({"id": self._next_id, "path": path, "dtypes": dtypes, "config": launch_config}, future))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self.jobs.put(None)
        for t in self._threads:
            t.join(timeout=10)

    def cancel_pending(self) -> None:
        """Drop queued jobs (their futures answer "skipped")."""
        while True:
            try:
                item = self.jobs.get_nowait()
            except queue.Empty:
                return
            if item is None:
                self.jobs.put(None)
                return
            item[1].set_result({"skipped": "cancelled"})

    # -- one thread per worker process -------------------------------------------------------
    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, TRIDENT_QUIET="1")
        return subprocess.Popen([sys.executable, "-m", "trident.compiler.autotune.worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=None if config.DEBUG else subprocess.DEVNULL, env=env, bufsize=0)

    def _serve(self) -> None:
        state = {"proc": None, "answered": 0, "crashes": 0}
        while True:
            item = self.jobs.get()
            if item is None:
                break
            job, future = item
            try:
                future.set_result(self._run_job(job, state))
            except Exception as exc:  # noqa: BLE001 - never leave a future unanswered
                if not future.done():
                    future.set_result({"skipped": f"compile pool error: {exc}"})
        _close(state["proc"])

    def _run_job(self, job: dict, state: dict) -> dict:
        if self.broken:
            return {"skipped": self.broken}
        if state["proc"] is None or state["proc"].poll() is not None:
            try:
                state["proc"], state["answered"] = self._start(), 0
            except OSError as exc:
                self.broken = f"compile workers unavailable ({exc})"
                return {"skipped": self.broken}
        try:
            reply = self._ask(state["proc"], job)
        except (OSError, ValueError):  # broken pipe, garbled answer
            reply = None
        if reply is not None:
            state["answered"] += 1
            state["crashes"] = 0
            return reply
        # Died or hung. A worker that never answered anything failed to start: not the config's fault.
        started = state["answered"] > 0
        _kill(state["proc"])
        state["proc"] = None
        state["crashes"] += 1
        if state["crashes"] >= MAX_CRASHES and not self.broken:
            self.broken = "compile workers keep dying"
        if not started or self.broken:
            return {"skipped": self.broken or "compile worker did not start"}
        return {"error": "compile crashed or timed out"}

    @staticmethod
    def _ask(proc: subprocess.Popen, job: dict) -> dict | None:
        proc.stdin.write((json.dumps(job) + "\n").encode())
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], JOB_TIMEOUT_S)
        if not ready:
            return None
        line = proc.stdout.readline()
        if not line:
            return None
        reply = json.loads(line)
        return reply if reply.get("id") == job["id"] else None


def _kill(proc) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def _close(proc) -> None:
    if proc is None:
        return
    try:
        proc.stdin.close()
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        _kill(proc)

