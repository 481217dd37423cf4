"""Ctrl-C or SIGTERM outside a run's loops: one line, the cleanups, exit 128 + signum.

The entry points call :func:`exit_on_interrupt` before their first heavy import. Without it, a
Ctrl-C while MindSpore loads (the first seconds of every command) unwinds through its C++
start-up and ends in Python's "Fatal Python error" report (~100 lines, exit -6), or in an
ImportError. While a training or search loop runs, its own handlers (``src.runlog.StopSignals``)
take the signals over: they save the state first, then stop (``src.errors.Stopped``); when the
loop ends, this handler is back. While MindSpore itself runs a call (a graph compiles or
runs), its own guard handles Ctrl-C by raising SIGTERM: the exit is then 143, the same one line
and cleanups.

Standard library only: it must be importable before numpy and MindSpore.
"""
from __future__ import annotations

import os
import signal
from typing import Callable

_CLEANUPS: list[Callable[[], None]] = []


def _stop(signum, _frame) -> None:
    for fn in reversed(_CLEANUPS):
        try:
            fn()
        except Exception:  # noqa: BLE001 - exiting anyway; the others still run
            pass
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    try:
        os.write(2, f"error: {what}\n".encode())
    except OSError:  # stderr closed: the exit code still says it
        pass
    os._exit(128 + signum)


def exit_on_interrupt() -> None:
    """SIGINT and SIGTERM end the process at once: one ``error:`` line on stderr, the
    registered cleanups, exit 130 / 143 (no traceback, no interpreter shutdown that MindSpore's
    threads could crash)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)


def on_interrupt(fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` (e.g. remove a staging folder) if a signal ends the process; returns the
    function that unregisters it."""
    _CLEANUPS.append(fn)

    def remove() -> None:
        if fn in _CLEANUPS:
            _CLEANUPS.remove(fn)
    return remove
