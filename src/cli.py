"""Shared command-line plumbing for search.py, train.py, eval.py and export.py.

    def main(args) -> int:
        cfg = load_config(SearchConfig, args.config, overrides_from_args(args, SearchConfig))
        log("searching ...")
        emit_json({"best": ...})
        return 0

    if __name__ == "__main__":
        sys.exit(run_main(main, parser=common_parser(__doc__)))

Exit codes: 0 ok, 1 internal error, 2 usage, HourNASError or a failed file operation (a
path that is not writable, a full disk), 130 interrupted.
With ``--json`` the last line on stdout is one JSON object and ``log`` writes to stderr.
"""
from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import math
import os
import sys
import traceback
import typing
from collections.abc import Callable, Sequence
from typing import Any

from src.context import DEVICE_TARGETS  # the one list (src.context is light to import)
from src.errors import OS_HINTS, HourNASError, Stopped, os_error_hint
from src.runlog import log



def _device_target(text: str) -> str:
    for t in DEVICE_TARGETS:
        if text.lower() == t.lower():
            return t
    raise argparse.ArgumentTypeError(f"unknown device target '{text}'; valid: {', '.join(DEVICE_TARGETS)}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error format: a usage error (unknown flag, bad choice, a
    value that is not a number, a missing required flag) is one ``error: ...`` line on stderr
    and exit code 2, without argparse's usage block (``--help`` still shows it). Subparsers
    made with ``add_subparsers`` inherit the class."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {_one_line(message)} (see {self.prog} --help)\n")


def common_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The flags every entry point shares; add command-specific ones to the result."""
    p = ArgumentParser(description=description, allow_abbrev=False,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="PATH", help="YAML config file")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config key, e.g. --set search.tau=5.0 (repeatable)")
    p.add_argument("--output_dir", metavar="DIR", help="where outputs go (config key output_dir)")
    p.add_argument("--device_target", type=_device_target, default=None, metavar="{CPU,GPU,Ascend}",
                   help="device to run on (default: the config's, else CPU)")
    p.add_argument("--data_path", metavar="PATH", help="dataset folder (config key data.path)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


# ----------------------------------------------------------------------------- output



def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, Tensors via asnumpy
        return _jsonable(obj.tolist())
    if hasattr(obj, "asnumpy"):
        return _jsonable(obj.asnumpy().tolist())
    if isinstance(obj, enum.Enum):
        return _jsonable(obj.value)
    return str(obj)


def emit_json(obj: Any) -> None:
    """Print ``obj`` as one compact JSON line on stdout (non-finite floats -> null)."""
    sys.stdout.write(json.dumps(_jsonable(obj), separators=(",", ":"), allow_nan=False) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- config glue

def _has_key(schema_cls: type, dotted: str) -> bool:
    cls: Any = schema_cls
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(cls):
            return False
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return False
        tp = typing.get_type_hints(cls).get(part, fields[part].type)
        if typing.get_origin(tp) is not None and not dataclasses.is_dataclass(tp):
            tp = next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), tp)
        cls = tp
    return True


def overrides_from_args(args: argparse.Namespace, schema_cls: type) -> list[str]:
    """``--data_path``/``--output_dir``/``--device_target`` as overrides (data.path,
    output_dir, device_target) followed by the ``--set`` items, so ``--set`` wins."""
    out = []
    for flag, key in (("data_path", "data.path"), ("output_dir", "output_dir"), ("device_target", "device_target")):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if _has_key(schema_cls, key):
            out.append(f"{key}={json.dumps(str(value))}")  # quoted: a path stays a string
        elif flag != "device_target":
            raise HourNASError(f"--{flag} does not apply to this command (its config has no key '{key}')")
    return out + list(getattr(args, "overrides", None) or [])


# ----------------------------------------------------------------------------- main wrapper

def os_error_message(e: OSError) -> str:
    """One line for a failed file operation: what, where, what to do."""
    where = f" '{e.filename}'" if e.filename else ""
    if getattr(e, "filename2", None):
        where += f" -> '{e.filename2}'"
    what = e.strerror or _one_line(e) or type(e).__name__
    return f"file operation failed on{where or ' a file'}: {what}; {os_error_hint(e.errno)}"


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class _TolerantStream:
    """stdout/stderr whose reader may go away (a closed pipe, a log ``tee`` stopped with the
    job): the first failed write sends the rest to /dev/null instead of raising in the middle
    of a save; the run still ends, saves and exits with its own code."""

    def __init__(self, stream):
        self._stream = stream

    def _drop(self) -> None:
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError):
            pass

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def tolerate_closed_output() -> None:
    """Make a closed stdout or stderr harmless for the rest of the process."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _TolerantStream):
            setattr(sys, name, _TolerantStream(stream))


def run_main(main_fn: Callable[[argparse.Namespace], int | None], argv: Sequence[str] | None = None,
             parser: argparse.ArgumentParser | None = None) -> int:
    """Parse ``argv`` with ``parser`` (default ``common_parser``), run ``main_fn(args)`` and
    return its exit code. HourNASError -> ``error: <msg>`` on stderr, SystemExit(2); an
    OSError about a path (not writable, disk full, ...) -> ``error: file operation failed on
    '<path>': <why>; <what to do>``, SystemExit(2);
    Ctrl-C -> SystemExit(130); any other exception -> one ``error: internal error`` line,
    SystemExit(1). ``--debug`` adds the traceback. Usage errors exit 2 (argparse)."""
    tolerate_closed_output()
    parser = parser or common_parser(main_fn.__doc__)
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    log.configure(getattr(args, "json", False))
    dumps = _decoder_dumps()
    try:
        return _run(main_fn, args, debug)
    finally:
        _remove_new_dumps(dumps)


def _decoder_dumps() -> dict[str, int]:
    """The files MindSpore's image decoder dumps into the current folder when an image fails
    (./abnormal_image.jpg, ./unsupported_image.gif, ...), with their mtimes."""
    from src.data import DECODER_DUMPS

    out = {}
    try:
        with os.scandir(os.getcwd()) as it:
            for e in it:
                if e.name.startswith(DECODER_DUMPS) and e.is_file(follow_symlinks=False):
                    out[e.path] = e.stat(follow_symlinks=False).st_mtime_ns
    except OSError:
        pass
    return out


def _remove_new_dumps(before: dict[str, int]) -> None:
    """Remove the decoder dumps this process made: nothing the user did not ask for stays in
    the working folder (the error line names the broken file itself)."""
    for path, mtime in _decoder_dumps().items():
        if path not in before:
            try:
                os.remove(path)
            except OSError:
                pass


def _run(main_fn: Callable[[argparse.Namespace], int | None], args: argparse.Namespace,
         debug: bool) -> int:
    try:
        code = main_fn(args)
    except Stopped as e:  # a signal stopped the run after it saved its state
        print(str(e), file=sys.stderr, flush=True)
        raise SystemExit(128 + e.signum) from None
    except HourNASError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(e) or type(e).__name__}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except OSError as e:
        if debug:
            traceback.print_exc()
        if not (e.filename or e.errno in OS_HINTS):  # not about a path: an internal error
            print(f"error: internal error: {type(e).__name__}: {_one_line(e)[:300]}"
                  f"{'' if debug else ' (run with --debug for the traceback)'}",
                  file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        print(f"error: {os_error_message(e)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("error: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except Exception as e:
        if debug:
            traceback.print_exc()
        from src.data import pipeline_error
        named = pipeline_error(e)  # a broken image met by MindSpore's pipeline during a run
        if named is not None:
            print(f"error: {_one_line(named)}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        msg = lines[0][:300] if lines else ""
        hint = "" if debug else " (run with --debug for the traceback)"
        print(f"error: internal error: {type(e).__name__}: {msg}{hint}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    return 0 if code is None else int(code)
