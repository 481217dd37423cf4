"""Fair timing of two frameworks on a shared machine: one worker process each, repeats
interleaved, the same thread count, OpenMP waiting passively, the load average beside.

A benchmark script runs itself again as workers (``--worker NAME``). The parent sends every
worker the same request in turn (one JSON line: which repeat, the path to run) and reads one
JSON line back, so the frameworks take turns on the cores and a burst of other work hits both
alike. Each worker process sets up its framework once (the first answer, ``{"ready": ...}``,
carries the set-up and warm-up facts), then times one repeat per request.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

PASSIVE_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}  # PyTorch's OpenMP busy-waits otherwise (5-20x
# slower under contention, measured: ../shared notes and docs/search_engine.md)


class Worker:
    """A worker process speaking JSON lines on stdin/stdout (its stderr goes to ours)."""

    def __init__(self, argv: list[str], threads: int, env: dict[str, str] | None = None):
        env = dict(os.environ, **PASSIVE_ENV, OMP_NUM_THREADS=str(threads), **(env or {}))
        self.proc = subprocess.Popen([sys.executable] + argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        first = self._read()
        if "error" in first:
            self.close()
            raise RuntimeError(first["error"])
        self.ready = first["ready"]

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"benchmark worker {self.proc.args[1:]} ended "
                                   f"(exit {self.proc.wait()})")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def call(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def serve(setup, step) -> int:
    """Worker side: ``setup()`` -> ready facts; then ``step(request)`` -> timings per line."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the frameworks print goes to stderr
    try:
        ready = {"ready": setup()}
    except MemoryError as e:  # a set-up that outgrows its budget is a result, not a crash
        out.write(json.dumps({"error": str(e)}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps(ready) + "\n")
    out.flush()
    for line in sys.stdin:
        if line.strip():
            out.write(json.dumps(step(json.loads(line))) + "\n")
            out.flush()
    return 0


def _status_gb(key: str) -> float:
    """A memory line of /proc/self/status in GiB (Linux; 0 where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def rss_gb() -> float:
    """This process's resident memory now, in GiB."""
    return _status_gb("VmRSS")


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (its high-water mark), in GiB: what a
    worker reports with each answer, so a benchmark can set two frameworks' peaks side by
    side (each worker is its own process, so the figure is that framework's alone)."""
    return _status_gb("VmHWM")


def memory_gb() -> float:
    """Physical memory in GiB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def interleave(workers: dict[str, Worker], requests: list[dict], log=None) -> dict:
    """Each request to every worker in turn; returns {worker: [answers]} and the load averages."""
    answers = {name: [] for name in workers}
    loads = []
    for r, req in enumerate(requests):
        for name, w in workers.items():
            answers[name].append(w.call(req))
            if log:
                log(f"  repeat {r + 1}/{len(requests)} {name}: {answers[name][-1]}")
        loads.append(round(os.getloadavg()[0], 2))
    return {"answers": answers, "load_avg_1min": loads}


def median(values: list[float]) -> float:
    return float(statistics.median(values))
