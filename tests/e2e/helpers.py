"""Running the real CLI in a subprocess, and waiting on one to signal it at a chosen point."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The bound on a subprocess or a wait in the tests: it stops a hang, it does not time a run (a
# correct run on a loaded machine may take many times its idle time).
HANG = 1800


def cli_env() -> dict:
    env = dict(os.environ)
    env.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    env["GLOG_v"] = "3"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(script: str, *args, timeout: int = HANG, check: bool = True):
    """``python ROOT/script ARGS`` (paths may be Path objects) from the repository root."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT,
                          env=cli_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def last_json(out) -> dict:
    """The JSON object on the last line of stdout (a string, or a finished process)."""
    stdout = out if isinstance(out, str) else out.stdout
    return json.loads(stdout.strip().splitlines()[-1])


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], poll: float = 0.05) -> bool:
    """Poll ``ready()`` while ``proc`` runs (bounded by HANG against hangs, not as a timing);
    True once it holds, False if the process ended (or the bound passed) first."""
    deadline = time.time() + HANG
    while time.time() < deadline:
        if ready():
            return True
        if proc.poll() is not None:
            return bool(ready())
        time.sleep(poll)
    return False


def records(path) -> list[dict]:
    """The records of a JSON-lines log so far (a line being written is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out
