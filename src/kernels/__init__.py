"""CPU kernels of our own, compiled on first use: the depthwise convolution's gradients.

``depthwise_library()`` returns the path of ``depthwise.cc`` built as a shared library (g++,
OpenMP), or None where it cannot be built (no compiler, a failed build, not Linux): callers
then keep MindSpore's own kernels, and the reason is printed once. The library is cached per
source, flags and CPU under ``$HOURNAS_CACHE`` (default ``~/.cache/hournas``); a build is
written to a temporary name and renamed, so processes that build at once (``pytest -n 2``,
``analyze.py compare --jobs 2``) never load half a file. ``HOURNAS_CXX`` names the compiler
(default ``g++``).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "depthwise.cc")
# no -ffast-math: with -shared, GCC 12 links crtfastmath.o, which would flush denormals to
# zero for the whole process (MindSpore's kernels included)
FLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fno-signed-zeros",
         "-fassociative-math", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC")
CACHE_ENV, CXX_ENV = "HOURNAS_CACHE", "HOURNAS_CXX"

_built: dict[str, str | None] = {}   # cache key -> library path (None: could not build)
_said: set[str] = set()


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and flags."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return ""


def _key(cxx: str) -> str:
    with open(SOURCE, "rb") as f:
        body = f.read()
    h = hashlib.sha256(body + " ".join((cxx,) + FLAGS).encode() + _cpu_id().encode())
    return h.hexdigest()[:16]


def _say(why: str) -> None:
    if why not in _said:
        _said.add(why)
        print(f"note: {why}; MindSpore's own depthwise gradient is used", file=sys.stderr)


def depthwise_library() -> str | None:
    """The built library's path, building it if needed; None (with one note) if it cannot."""
    if not sys.platform.startswith("linux"):
        return None
    cxx = os.environ.get(CXX_ENV, "g++").strip() or "g++"
    try:
        key = _key(cxx)
    except OSError as e:
        _say(f"cannot read {SOURCE} ({e})")
        return None
    if key in _built:
        return _built[key]
    cache = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                       "hournas")
    path = os.path.join(cache, f"depthwise-{key}.so")
    if not os.path.isfile(path):
        try:
            os.makedirs(cache, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".depthwise-", suffix=".so", dir=cache)
            os.close(fd)
            try:
                res = subprocess.run([cxx, *FLAGS, "-o", tmp, SOURCE], capture_output=True,
                                     text=True, timeout=300)
                if res.returncode != 0:
                    last = (res.stderr.strip().splitlines() or ["no message"])[-1]
                    _say(f"the depthwise kernel did not build with {cxx} ({last})")
                    _built[key] = None
                    return None
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        except (OSError, subprocess.SubprocessError) as e:
            _say(f"the depthwise kernel could not be built with {cxx} ({e})")
            _built[key] = None
            return None
    # OpenMP threads that spin between calls take the cores MindSpore's own threads need
    # (PyTorch's busy-waiting slowed it 5-20x here under load): they sleep. libgomp reads
    # this when it loads, with the library.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        ctypes.CDLL(path)
    except OSError as e:
        _say(f"the depthwise kernel {path} does not load ({e})")
        _built[key] = None
        return None
    _built[key] = path
    return path


def set_threads(n: int) -> None:
    """The kernels' OpenMP threads (0: OpenMP's default), if built; one value per process."""
    path = depthwise_library()
    if path is not None:
        ctypes.CDLL(path).DwSetThreads(ctypes.c_int(int(n)))


def threads() -> int | None:
    """The kernels' OpenMP threads now (None where the kernel is not built)."""
    path = depthwise_library()
    return None if path is None else int(ctypes.CDLL(path).DwThreads())
