"""What a run folder is owed: one run at a time, and names that cannot leave it.

* :func:`check_stem`: a name that becomes part of a file name (an architecture's name, a
  space's name) is a plain file stem: no ``/``, ``\\``, ``..``, NUL or control characters,
  at most ``STEM_MAX`` bytes, so that every file named after it lands in the output folder.
* :class:`FolderLock` (through :func:`lock_output_dir`): the first write of a run takes an
  exclusive ``flock`` on ``OUTPUT_DIR/.hournas.lock`` holding its PID; a second run into the
  same folder gets one error naming that PID. The kernel drops the lock when the process
  ends in any way (SIGKILL too), so a stale lock file is simply taken over; a clean exit
  removes it.
"""
from __future__ import annotations

import atexit
import errno
import os

from src.errors import HourNASError
from src.interrupt import on_interrupt

LOCK_NAME = ".hournas.lock"
# A checkpoint adds up to ~30 bytes (``-350_10009.ckpt``, ``_best.ckpt``, ``_b512.onnx``) and
# file systems allow 255: 100 leaves room and keeps the names readable.
STEM_MAX = 100


def check_stem(name: str, what: str) -> str:
    """``name`` if it can be a file stem, else HourNASError naming ``what`` (e.g. the file and
    key it was read from)."""
    bad = None
    if not isinstance(name, str) or not name.strip():
        bad = "it is empty"
    elif "/" in name or "\\" in name:
        bad = "it holds a path separator"
    elif ".." in name:
        bad = "it holds '..'"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        bad = "it holds a control character"
    elif len(name.encode("utf-8")) > STEM_MAX:
        bad = f"it is {len(name.encode('utf-8'))} bytes long, over {STEM_MAX}"
    if bad:
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise HourNASError(f"{what} {shown} cannot name files: {bad}; use letters, digits, "
                           f"'_', '-' and '.' (e.g. 'my_net')")
    return name


def _holder(path: str) -> str:
    """Who holds the lock, from its file: "process PID (a KIND)"."""
    try:
        with open(path, encoding="utf-8") as f:
            pid, _, kind = f.read().strip().partition(" ")
    except OSError:
        return "another process"
    if not pid.isdigit():
        return "another process"
    return f"process {pid}" + (f" (a {kind})" if kind else "")


class FolderLock:
    """An exclusive lock on one output folder for the life of this process (or until
    :meth:`release`)."""

    def __init__(self, folder: str, what: str = "run"):
        self.folder = os.path.abspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> "FolderLock":
        import fcntl

        os.makedirs(self.folder, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise HourNASError(f"output folder '{self.folder}' is in use by {_holder(self.path)}"
                                   f"; wait for it to end, stop it, or choose another "
                                   f"--output_dir") from None
            try:  # the file may have been removed by its last holder between open and flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.what}\n".encode())
        self.fd = fd
        atexit.register(self.release)
        on_interrupt(self.release)  # src.interrupt's exit skips atexit
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.remove(self.path)  # while still held: no one else can be holding it
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


_HELD: dict[str, FolderLock] = {}


def lock_output_dir(folder: str, what: str = "run") -> FolderLock:
    """Take (once per process) the lock of ``folder``, creating it; call it after every check
    and before the first write."""
    key = os.path.abspath(folder)
    if key not in _HELD or _HELD[key].fd is None:
        _HELD[key] = FolderLock(folder, what).acquire()
    return _HELD[key]


# ----------------------------------------------------------------------------- the layout
# What a run folder holds, named once: the search, training, the reproduction runner, the
# ablation runner, the comparison and the report read and write through these names
# (benchmarks/device_check.sh, a shell script, spells them out and says so).

CONFIG_FILE = "config.yaml"          # the resolved config of the run (search and training)
ARCH_FILE = "arch.yaml"              # a search's derived architecture; training's trained one
SUMMARY_FILE = "summary.json"        # a finished search's summary
ARCH_PARAMS_FILE = "arch_params.npz"  # a finished search's final θ (and Π)
SEARCH_STATE_FILE = "search_state.ckpt"
SEARCH_LOG_FILE = "search_log.jsonl"
TRAIN_LOG_FILE = "train_log.jsonl"
TRAIN_PLOT_FILE = "train_curves.png"

# The one key that says what a checkpoint holds. Training checkpoints written before it was
# introduced say so by ``format: hournas-train-1``, which is still read.
KIND_KEY = "kind"
SEARCH_KIND = "hournas-search"
TRAIN_KIND = "hournas-train"
_OLD_TRAIN_FORMAT = ("format", "hournas-train-1")


def checkpoint_kind(extra: dict) -> str | None:
    """SEARCH_KIND, TRAIN_KIND or None (not a checkpoint of this project's runs)."""
    kind = extra.get(KIND_KEY)
    if kind in (SEARCH_KIND, TRAIN_KIND):
        return kind
    if extra.get(_OLD_TRAIN_FORMAT[0]) == _OLD_TRAIN_FORMAT[1]:
        return TRAIN_KIND
    return None


def searched_arch_name(space_name: str) -> str:
    """The name a search gives its derived architecture (and so its checkpoints' names)."""
    return f"hournas_{space_name}"


def best_ckpt_name(arch_name: str) -> str:
    return f"{arch_name}_best.ckpt"


def periodic_ckpt_name(arch_name: str, epoch: int, epoch_step: int) -> str:
    return f"{arch_name}-{epoch}_{epoch_step}.ckpt"
