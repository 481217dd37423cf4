"""The one place that writes and reads checkpoints (and writes files atomically).

A checkpoint is a MindSpore ``.ckpt`` file holding the parameters plus one
string entry ``__extra_json__`` with the caller's ``extra`` dict (step, RNG
state, config, ...) as JSON, so every value comes back with its Python type.
No pickle. MindSpore is imported lazily so that ``atomic_write*`` (used by
``src.config``) stay cheap to import.
"""
from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from src.errors import CheckpointError

EXTRA_KEY = "__extra_json__"
HEADER_KEY = "__hournas_format__"
_FORMAT = "hournas-ckpt"
_VERSION = 1
_NDARRAY = "__ndarray__"
_TUPLE = "__tuple__"
_SHOW = 3  # names listed per category in mismatch messages


# ----------------------------------------------------------------------------- atomic writes

def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write_fn: Callable[[str], Any]) -> str:
    """Write ``path`` atomically: ``write_fn(tmp_path)`` writes a temp file in the same
    directory (same extension, so tools that append one do not), which is fsynced and
    renamed over ``path``. On any exception the temp file is removed and ``path`` is
    left as it was. Returns ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    if not base:
        raise CheckpointError(f"cannot write '{path}': it names a directory, not a file")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create output directory '{directory}': {e.strerror or e}") from e
    stem, ext = os.path.splitext(base)
    prefix = os.path.join(directory, f".{stem}.{secrets.token_hex(4)}.tmp")
    tmp = prefix + ext
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
    except OSError as e:
        raise CheckpointError(
            f"output directory '{directory}' is not writable ({e.strerror or e}); "
            f"choose another output directory") from e
    try:
        write_fn(tmp)
        if not os.path.isfile(tmp):
            raise CheckpointError(f"writing '{path}' failed: the writer did not create '{tmp}'")
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # ms.save_checkpoint leaves files read-only (0400)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        for leftover in (tmp, prefix + ".tmp"):  # ms.save_checkpoint's own x.tmp.tmp
            try:
                os.remove(leftover)
            except OSError:
                pass
        if isinstance(e, OSError):  # disk full, quota, file size limit, I/O error
            from src.errors import os_error_hint
            kept = "the previous file is kept" if os.path.exists(path) else "nothing was written"
            raise CheckpointError(f"writing '{path}' failed: {e.strerror or e}; "
                                  f"{os_error_hint(e.errno)}; {kept}") from e
        raise
    _fsync_dir(directory)
    return path


# what atomic_write leaves when its process is killed: .{stem}.{8 hex}.tmp{ext}
# (or ms.save_checkpoint's own .{stem}.{8 hex}.tmp.tmp)
_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[^.]+)?(\.tmp)?$")


def _is_temp_name(name: str) -> bool:
    return bool(_TEMP_RE.match(name))


def remove_stale_temps(directory: str) -> list[str]:
    """Delete the temp files that killed ``atomic_write`` calls left in ``directory`` (a run
    that owns the folder calls this when it starts). Returns the names removed."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(directory, name)
        if _is_temp_name(name) and os.path.isfile(path):
            try:
                os.remove(path)
                removed.append(name)
            except OSError:
                pass
    return removed


def check_output_dir(path: str, flag: str = "--output_dir") -> str:
    """Raise CheckpointError unless ``path`` is (or can be created as) a writable folder.
    Creates nothing, so a run that fails later leaves no empty folder behind."""
    path = os.fspath(path)
    full = os.path.abspath(path)
    if os.path.exists(full) and not os.path.isdir(full):
        raise CheckpointError(f"output folder '{path}' is a file, not a folder; give {flag} a "
                              f"folder (new or existing)")
    probe = full
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise CheckpointError(f"cannot create output folder '{path}': '{probe}' is a file, not a "
                              f"folder; give {flag} a path under a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CheckpointError(f"output folder '{path}' is not writable ('{probe}' does not allow "
                              f"writing); give {flag} a folder you can write to")
    return path


def atomic_write_bytes(path: str, data: bytes) -> str:
    """Atomically replace ``path`` with ``data``."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    return atomic_write(path, write)


def atomic_write_text(path: str, text: str, encoding: str = "utf-8") -> str:
    """Atomically replace ``path`` with ``text``."""
    return atomic_write_bytes(path, text.encode(encoding))


# ----------------------------------------------------------------------------- extra <-> JSON

def _encode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise CheckpointError(f"checkpoint extra '{where}' is an object array; "
                                  f"valid: numeric or bool numpy arrays")
        return {_NDARRAY: {"dtype": value.dtype.str, "shape": list(value.shape),
                           "data": value.ravel().tolist()}}
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError(f"checkpoint extra '{where}' has a {type(k).__name__} key {k!r}; "
                                      f"keys must be strings")
            out[k] = _encode(v, f"{where}.{k}")
        return out
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise CheckpointError(f"checkpoint extra '{where}' has type {type(value).__name__}; valid: int, float, "
                          f"bool, str, None, numpy arrays/scalars, and lists/tuples/dicts of these")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and _NDARRAY in value:
            spec = value[_NDARRAY]
            return np.array(spec["data"], dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])
        if len(value) == 1 and _TUPLE in value:
            return tuple(_decode(v) for v in value[_TUPLE])
        return {k: _decode(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- checkpoints

def _check_suffix(path: str) -> None:
    if not path.endswith(".ckpt"):
        raise CheckpointError(f"checkpoint path '{path}' must end with '.ckpt' (MindSpore reads no other name)")


def _param_list(params: Any) -> list[dict]:
    """Normalise a Cell / list of Parameters / name->value dict to ms's list form."""
    import mindspore as ms
    from mindspore import nn

    if isinstance(params, nn.Cell):
        items = list(params.parameters_and_names())
        items = [(p.name, p) for _, p in items]
    elif isinstance(params, Mapping):
        items = list(params.items())
    elif isinstance(params, (list, tuple)):
        items = []
        for p in params:
            if not isinstance(p, ms.Parameter):
                raise CheckpointError(f"save_checkpoint got a list containing {type(p).__name__}; "
                                      f"a list must hold Parameters (or pass a dict name -> value)")
            items.append((p.name, p))
    else:
        raise CheckpointError(f"save_checkpoint cannot save a {type(params).__name__}; "
                              f"valid: nn.Cell, list of Parameters, dict name -> Parameter/Tensor/ndarray")
    out, seen = [], set()
    for name, value in items:
        if name in seen:
            raise CheckpointError(f"save_checkpoint got two parameters named '{name}'; names must be unique")
        if name in (EXTRA_KEY, HEADER_KEY):
            raise CheckpointError(f"parameter name '{name}' is reserved for checkpoint metadata")
        seen.add(name)
        if isinstance(value, np.ndarray):
            value = ms.Tensor(value)
        elif not isinstance(value, ms.Tensor):  # Parameter is a Tensor
            raise CheckpointError(f"checkpoint parameter '{name}' has type {type(value).__name__}; "
                                  f"valid: Parameter, Tensor, numpy array")
        out.append({"name": name, "data": value})
    return out


def save_checkpoint(path: str, params: Any, extra: Mapping[str, Any] | None = None) -> str:
    """Atomically write ``params`` (nn.Cell, list of Parameters, or dict name ->
    Parameter/Tensor/ndarray) and ``extra`` (JSON-like values, numpy arrays) to ``path``."""
    import mindspore as ms

    path = os.fspath(path)
    _check_suffix(path)
    plist = _param_list(params)
    payload = {"format": _FORMAT, "names": [p["name"] for p in plist],
               "extra": _encode(dict(extra or {}), "extra")}
    blob = json.dumps(payload, separators=(",", ":"))

    # The header is the first record and the extra the last: a file cut anywhere
    # has the first without the last (or fails to parse), which load_checkpoint catches.
    records = [{"name": HEADER_KEY, "data": ms.Tensor(np.array([_VERSION], np.int32))}] + plist

    def write(tmp: str) -> None:
        ms.save_checkpoint(records, tmp, append_dict={EXTRA_KEY: blob})

    return atomic_write(path, write)


def _shape_str(shape: tuple) -> str:
    return str(tuple(shape)).replace(" ", "")


def _names(items: list[str]) -> str:
    more = f", ... {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def check_fit(where: str, actual: Mapping[str, tuple], expected: Mapping[str, tuple],
              allow_unexpected: bool = False, network: str = "this network") -> None:
    """Raise CheckpointError if ``actual`` (name -> shape) does not fit ``expected`` (the
    parameters of ``network``, named so in the message)."""
    missing = [n for n in expected if n not in actual]
    unexpected = [] if allow_unexpected else [n for n in actual if n not in expected]
    shaped = [f"{n}: {_shape_str(actual[n])} vs {_shape_str(expected[n])}"
              for n in expected if n in actual and tuple(actual[n]) != tuple(expected[n])]
    if not (missing or unexpected or shaped):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if shaped:
        parts.append(f"{len(shaped)} with other shapes ({_names(shaped)}; checkpoint vs network)")
    raise CheckpointError(f"{where} does not fit {network}: " + ", ".join(parts))


def _read_raw(path: str, choice_func=None) -> tuple[dict, str]:
    """(MindSpore's name -> value dict of ``path``, the message for an unreadable file);
    ``choice_func(name)`` picks the entries to read (None: all)."""
    import mindspore as ms

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    _check_suffix(path)
    unreadable = f"checkpoint '{path}' is unreadable (truncated or not a MindSpore checkpoint)"
    try:
        return ms.load_checkpoint(path, choice_func=choice_func), unreadable
    except ValueError as e:
        if choice_func is not None and "empty after filter" in str(e):
            return {}, unreadable  # readable, but holds none of the chosen entries
        raise CheckpointError(unreadable) from e
    except (RuntimeError, TypeError, OSError) as e:
        raise CheckpointError(unreadable) from e


def load_checkpoint(path: str, expected: Mapping[str, tuple] | None = None) -> tuple[dict, dict]:
    """Read ``path`` -> (params: name -> Parameter, extra). With ``expected`` (name ->
    shape), names and shapes must match exactly."""
    import mindspore as ms

    path = os.fspath(path)
    raw, unreadable = _read_raw(path)
    params, extra, blob, header = {}, {}, None, None
    for name, value in raw.items():
        if name == EXTRA_KEY:
            blob = value
        elif name == HEADER_KEY and isinstance(value, ms.Tensor):
            header = value
        elif isinstance(value, ms.Parameter):
            params[name] = value
        else:  # plain strings appended by other writers
            extra[name] = value
    if header is not None and (blob is None or header.asnumpy().tolist() != [_VERSION]):
        raise CheckpointError(unreadable)
    if blob is not None:
        try:
            payload = json.loads(blob)
            names = payload["names"]
            extra.update(_decode(payload["extra"]))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(unreadable) from e
        if payload.get("format") != _FORMAT or set(names) != set(params):
            raise CheckpointError(unreadable)
    if expected is not None:
        check_fit(f"checkpoint '{path}'", {n: tuple(p.shape) for n, p in params.items()},
                  {n: tuple(s) for n, s in expected.items()})
    return params, extra


def read_checkpoint_extra(path: str) -> dict:
    """The ``extra`` of a checkpoint without its tensors (what listing a run's checkpoints
    needs: ~10x faster than :func:`load_checkpoint` on a 1.4 MB file). A file cut short has
    no extra record: CheckpointError, as from :func:`load_checkpoint`."""
    path = os.fspath(path)
    raw, unreadable = _read_raw(path, choice_func=lambda name: name in (EXTRA_KEY, HEADER_KEY))
    blob, header = raw.get(EXTRA_KEY), raw.get(HEADER_KEY)
    if header is None and blob is None:
        return {}  # a plain MindSpore checkpoint (not written here): no metadata
    if blob is None or header is None or header.asnumpy().tolist() != [_VERSION]:
        raise CheckpointError(unreadable)
    try:
        payload = json.loads(blob)
        extra = _decode(payload["extra"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(unreadable) from e
    if payload.get("format") != _FORMAT or not isinstance(extra, dict):
        raise CheckpointError(unreadable)
    return extra


def require_training_checkpoint(path: str, extra: Mapping[str, Any]) -> None:
    """Refuse a search state (``search_state.ckpt``) where a trained network is expected."""
    from src.rundir import SEARCH_KIND, checkpoint_kind
    if checkpoint_kind(extra) == SEARCH_KIND:
        raise CheckpointError(f"'{path}' is a search state (search_state.ckpt), not a trained "
                              f"network; retrain the searched architecture with 'python train.py "
                              f"--arch {os.path.join(os.path.dirname(path) or '.', 'arch.yaml')}' "
                              f"and give its checkpoint ({{arch}}_best.ckpt)")


def load_into(cell: Any, params: Mapping[str, Any], strict: bool = True,
              where: str = "checkpoint", network: str = "this network") -> None:
    """Load ``params`` into ``cell`` after checking names and shapes against
    ``cell.parameters_dict()`` (``strict=False`` ignores extra names); ``network`` names
    ``cell`` in the mismatch message."""
    import mindspore as ms

    own = {n: tuple(p.shape) for n, p in cell.parameters_dict().items()}
    check_fit(where, {n: tuple(p.shape) for n, p in params.items()}, own,
              allow_unexpected=not strict, network=network)
    to_load = {n: (p if isinstance(p, ms.Parameter) else ms.Parameter(p, name=n))
               for n, p in params.items() if n in own}
    not_loaded, _ = ms.load_param_into_net(cell, to_load, strict_load=True)
    if not_loaded:
        raise CheckpointError(f"{where} did not load into this network: {len(not_loaded)} not loaded "
                              f"({_names(list(not_loaded))})")
