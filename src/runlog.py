"""The run toolkit that training (``src.train``) and the search (``src.search``) share.

- ``JsonLog``: a JSON-lines log (one record a line), started afresh or, on resume, cut back to
  the records the caller keeps (a line cut by a kill is dropped).
- ``StopSignals``: SIGTERM/SIGINT set a flag the loop reads after each step; the loop saves
  its state and raises ``src.errors.Stopped``, which the entry point turns into exit
  128 + signum (``src.cli``). The library never exits the process.
- ``check_resume_config`` / ``config_changes`` / ``describe_changes``: what a resumed run may
  change, and the one line that says what it changed.
- ``nonfinite``: the names of arrays holding NaN or inf (the divergence guard: a state that
  holds any is never saved over the last good one).
- ``digest`` / ``params_digest``: sha256 over named arrays (equal digests, equal bits).
- ``cosine``: the cosine learning-rate curve.
- ``hms`` and ``StepClock``: h:mm:ss, seconds per step and the ETA.
- ``log``: the progress printer (stdout, or stderr under ``--json``); the entry points
  configure it (``src.cli``), the library only calls it, so it never imports the CLI module.

Nothing here imports MindSpore at module level or touches device state (``src.context``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
from typing import Any, Callable, Iterable, TextIO

import numpy as np

from src.checkpoint import atomic_write_text
from src.config import flatten
from src.errors import ConfigError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


# ----------------------------------------------------------------------------- the log

class JsonLog:
    """A JSON-lines log. ``enabled=False`` (ranks other than 0) makes every call a no-op;
    ``stamp`` is merged into every record (e.g. ``{"rank": r}``). Non-finite floats are written
    as null, so every line is standard JSON."""

    def __init__(self, path: str, *, enabled: bool = True, stamp: dict | None = None,
                 atomic: bool = True):
        self.path = path
        self.enabled = enabled
        self.stamp = dict(stamp or {})
        self.atomic = atomic  # False: a plain rewrite (a file other ranks' cleanups may race)

    def reset(self, keep: Callable[[dict], bool] | None = None) -> int:
        """Start the log afresh, or (``keep`` given, a resumed run) keep only the records
        ``keep(record)`` accepts. Returns how many records were kept."""
        if not self.enabled:
            return 0
        kept = []
        if keep is not None and os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a kill
                    if keep(rec):
                        kept.append(json.dumps(rec))
        text = "".join(line + "\n" for line in kept)
        if self.atomic:
            atomic_write_text(self.path, text)
        else:
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return len(kept)

    def write(self, **rec) -> None:
        if not self.enabled:
            return
        rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
               for k, v in {**self.stamp, **rec}.items()}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()


def up_to_step(step: int) -> Callable[[dict], bool]:
    """``JsonLog.reset`` filter of a resumed run: the records up to global step ``step`` (the
    checkpoint's); records without a global step are kept."""
    return lambda rec: rec.get("global_step", 0) <= step


# ----------------------------------------------------------------------------- stop signals

class StopSignals:
    """``with StopSignals() as stop:`` SIGTERM/SIGINT only set ``stop.signum``; the loop
    checks it after each step, saves its state and raises ``Stopped``. The old handlers come
    back on exit."""

    def __init__(self, signals: Iterable[int] = STOP_SIGNALS):
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> "StopSignals":
        for sig in self.signals:
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.signum = signum

    def pin(self) -> None:
        """Put our handlers back: MindSpore installs a SIGINT handler of its own (it raises
        SIGTERM) when its runtime starts, i.e. after the first step has run."""
        for sig in self._old:
            signal.signal(sig, self._handle)

    def agree(self, all_ranks: Callable[[int | None], int | None] | None) -> int | None:
        """Data parallel: every rank acts on a signal any rank saw (``all_ranks`` is
        ``src.context.agree_stop``, called at the same point on every rank); None: one process."""
        if all_ranks is not None:
            self.signum = all_ranks(self.signum)
        return self.signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


# ----------------------------------------------------------------------------- resume

def config_changes(stored: dict, now: dict, keys: Iterable[str] | None = None,
                   skip: Iterable[str] = ()) -> dict[str, tuple]:
    """{dotted key: (stored value, new value)} where two nested configs differ; only ``keys``
    when given, never those in ``skip``."""
    a, b = flatten(stored), flatten(now)
    keys = sorted(set(a) | set(b)) if keys is None else list(keys)
    skip = set(skip)
    return {k: (a.get(k), b.get(k)) for k in keys if k not in skip and a.get(k) != b.get(k)}


def check_resume_config(stored: dict, now: dict, may_change: tuple[str, ...], advice: str) -> None:
    """Raise ConfigError if ``now`` differs from the run's ``stored`` config in a key outside
    ``may_change`` (a key that changes what the run computes). ``advice`` says what to do."""
    diff = config_changes(stored, now, skip=may_change)
    if diff:
        shown = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in list(diff.items())[:3])
        raise ConfigError(f"--resume with a different configuration ({shown}); {advice} "
                          f"(may change on resume: {', '.join(may_change)})")


def describe_changes(changed: dict[str, tuple]) -> str:
    """'key old -> new, ...' for a log line."""
    return ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())


# ----------------------------------------------------------------------------- numbers

def nonfinite(arrays: dict) -> list[str]:
    """Names of the arrays (anything numpy takes) that hold a NaN or an infinity."""
    return [name for name, a in arrays.items() if not np.isfinite(np.asarray(a)).all()]


def digest(arrays: Iterable[tuple[str, np.ndarray]]) -> str:
    """sha256 over (name, array) pairs, sorted by name: equal digests, bit-identical values."""
    h = hashlib.sha256()
    for name, a in sorted(arrays, key=lambda kv: kv[0]):
        a = np.ascontiguousarray(a)
        h.update(name.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def params_digest(params) -> str:
    """``digest`` of MindSpore Parameters by their names (equal digests on two ranks mean
    bit-identical weights: what the data-parallel gradient mean keeps)."""
    return digest((p.name, p.asnumpy()) for p in params)


def cosine(peak: float, floor: float, t: float) -> float:
    """The cosine curve from ``peak`` (t = 0) to ``floor`` (t >= 1)."""
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * min(1.0, t)))


# ----------------------------------------------------------------------------- time

def hms(seconds: float) -> str:
    """h:mm:ss (negative: 0:00:00)."""
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class StepClock:
    """Wall time of every step this process ran. The first step holds a graph compile (or
    warm-up) and is kept apart: ``per_step`` is the mean of the latest ``window`` later steps."""

    def __init__(self, window: int = 50):
        self.window = window
        self.steps: list[float] = []

    def add(self, seconds: float) -> None:
        self.steps.append(seconds)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def first(self) -> float | None:
        return self.steps[0] if self.steps else None

    @property
    def later(self) -> list[float]:
        return self.steps[1:]

    def per_step(self) -> float:
        """Seconds per step: the latest later steps' mean, or the first step alone."""
        if self.later:
            return float(np.mean(self.later[-self.window:]))
        return self.steps[0] if self.steps else float("nan")

    def eta(self, remaining: int) -> str:
        """h:mm:ss for ``remaining`` steps; 'after compile' while only the first step ran."""
        return hms(self.per_step() * remaining) if self.later else "after compile"


class ConsoleLog:
    """Human progress lines: stdout normally, stderr under --json (stdout stays JSON)."""

    def __init__(self) -> None:
        self.to_stderr = False

    def configure(self, json_mode: bool) -> None:
        self.to_stderr = bool(json_mode)

    def __call__(self, msg: Any) -> None:
        stream: TextIO = sys.stderr if self.to_stderr else sys.stdout
        print(msg, file=stream, flush=True)


log = ConsoleLog()  # the one progress printer: entry points configure it (src/cli.py), the library calls it
