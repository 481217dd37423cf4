"""YAML -> typed config: the single config loader of the project.

Schemas are nested ``@dataclass``es with defaults. ``load_config`` layers
schema defaults < ``base`` < YAML file (and its ``_base_`` chain) < dotted
``KEY=VALUE`` overrides, then checks every key and type strictly:

    cfg = load_config(SearchConfig, "config/search_cifar10.yaml", ["search.tau=5.0"])

A field annotated ``Size`` accepts natural units (``4.8M``, ``1.5G``, ``300K``).
A dataclass may define ``validate(self)``; it is called after loading.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import math
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union

import yaml

from src.errors import ConfigError

Size = Annotated[float, "size"]
"""A count such as FLOPs or parameters; YAML may say 4.8M, 295M, 1.5G, 300K, 2.5e6."""

Seed = Annotated[int, "seed"]
"""A random seed: an integer in 0 .. 2**32 - 1 (what numpy and MindSpore accept)."""
SEED_MAX = 2**32 - 1

BASE_KEY = "_base_"
_SIZE_RE = re.compile(r"^([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([kmg]?)$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_NO_DEFAULT = object()


# ----------------------------------------------------------------------------- sizes

def parse_size(value: Any, key: str = "size") -> int | float:
    """``4.8M`` -> 4800000; numbers pass through; K=1e3, M=1e6, G=1e9 (any case)."""
    if isinstance(value, bool):
        raise ConfigError(f"invalid size {value!r} for '{key}'; give a number such as 4.8M, 295M, 1.5G, 300K or 2.5e6")
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        m = _SIZE_RE.match(value.strip().replace(",", "").replace("_", ""))
        if not m:
            raise ConfigError(f"invalid size {value!r} for '{key}'; give a number, optionally with K, M or G, "
                              f"e.g. 4.8M, 295M, 1.5G, 300K, 2.5e6, 4,800,000")
        number = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise ConfigError(f"invalid size {value!r} ({type(value).__name__}) for '{key}'; "
                          f"give a number such as 4.8M, 295M, 1.5G, 300K or 2.5e6")
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"invalid size {value!r} for '{key}'; a size must be a finite number >= 0, e.g. 4.8M")
    if isinstance(number, float) and number.is_integer():
        return int(number)
    return number


def format_size(n: float) -> str:
    """4800000 -> '4.80M', 295e6 -> '295.00M', 1.5e9 -> '1.50G', 512 -> '512'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n)) if float(n).is_integer() else f"{n:.2f}"


# ----------------------------------------------------------------------------- YAML reading

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys in a mapping."""


def _mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(f"duplicate key '{key}' in '{mark.name}' at line {mark.line + 1}; "
                              f"each key may appear once per mapping")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_no_duplicates)


def read_yaml(path: str) -> dict:
    """Read one YAML file (no ``_base_`` handling) into a dict."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            loader = _StrictLoader(f)
            loader.name = path
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"invalid YAML in '{path}'{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file '{path}': {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values at the top level, "
                          f"got a {type(data).__name__}")
    return data


def deep_merge(base: Mapping, child: Mapping) -> dict:
    """Recursive merge; ``child`` wins; neither input is modified."""
    out = copy.deepcopy(dict(base))
    for k, v in child.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_with_bases(path: str, chain: tuple[str, ...] = ()) -> dict:
    real = os.path.realpath(path)
    if real in chain:
        raise ConfigError(f"config '{path}' includes itself through '{BASE_KEY}'; remove the cycle")
    data = read_yaml(path)
    if not data:  # an empty file (or only comments) is a mistake, not "all defaults"
        raise ConfigError(f"config file '{path}' is empty; give a YAML mapping of config keys "
                          f"(e.g. a copy of a file in config/), or leave --config out for the "
                          f"defaults")
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"'{BASE_KEY}' in '{path}' must be a file name or a list of file names, got {bases!r}")
    merged: dict = {}
    for b in bases:
        b_path = b if os.path.isabs(b) else os.path.join(os.path.dirname(path), b)
        merged = deep_merge(merged, _read_with_bases(b_path, chain + (real,)))
    return deep_merge(merged, data)


# ----------------------------------------------------------------------------- type checking

def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception as e:  # unresolvable forward reference: a schema bug, not a user error
        raise TypeError(f"cannot resolve type annotations of {cls.__name__}: {e}") from e


def _is_size(tp: Any) -> bool:
    return typing.get_origin(tp) is Annotated and "size" in tp.__metadata__


def _is_seed(tp: Any) -> bool:
    return typing.get_origin(tp) is Annotated and "seed" in tp.__metadata__


def _short(tp: Any) -> str:
    if _is_seed(tp):
        return "seed"
    if _is_size(tp):
        return "size"
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "any value"
    if _is_size(tp):
        return "a size (e.g. 4.8M, 295M, 1.5G)"
    if _is_seed(tp):
        return f"a seed (an integer 0 .. {SEED_MAX})"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, Sequence, tuple):
        return f"a list (of {_short(args[0])})" if args else "a list"
    if origin in (dict, Mapping):
        return f"a mapping (of {_short(args[1])})" if args else "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _wrong(key: str, tp: Any, value: Any) -> ConfigError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {shown} ({type(value).__name__})")


def _unknown(key: str, name: str, valid: list[str]) -> ConfigError:
    where = f"in '{key}'" if key else "at the top level"
    hint = difflib.get_close_matches(name, valid, n=1)
    hint_s = f" (did you mean '{hint[0]}'?)" if hint else ""
    full = f"{key}.{name}" if key else name
    return ConfigError(f"unknown config key '{full}'; valid keys {where}: {', '.join(valid)}{hint_s}")


def _same_kind(tp: Any, value: Any) -> bool:
    """Whether ``value`` is the container kind ``tp`` expects (mapping / list)."""
    origin = typing.get_origin(tp) or tp
    if dataclasses.is_dataclass(tp) or origin in (dict, Mapping):
        return isinstance(value, Mapping)
    return origin in (list, tuple, Sequence) and isinstance(value, (list, tuple))


def _join(key: str, name: Any) -> str:
    return f"{key}.{name}" if key else str(name)


def _coerce(value: Any, tp: Any, key: str, default: Any = None) -> Any:
    """Check ``value`` against annotation ``tp``; return the typed value. ``default``
    (a dataclass instance) fills the keys a nested mapping leaves out."""
    if tp is Any or tp is object:
        return value
    if _is_size(tp):
        return float(parse_size(value, key))
    if _is_seed(tp):
        seed = _coerce_scalar(value, int, key)
        if not 0 <= seed <= SEED_MAX:
            raise ConfigError(f"config key '{key}' must be a seed, an integer 0 .. {SEED_MAX}, "
                              f"got {seed}")
        return seed
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _coerce(value, args[0], key, default)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, args, key, default)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _wrong(key, tp, value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _wrong(key, tp, value)
        return build(tp, value, key, default if isinstance(default, tp) else None)
    if origin in (list, Sequence, tuple, dict, Mapping) or tp in (list, Sequence, tuple, dict,
                                                                   Mapping):
        return _coerce_container(value, tp, origin, args, key)
    return _coerce_scalar(value, tp, key)


def _coerce_union(value: Any, tp: Any, args: tuple, key: str, default: Any) -> Any:
    """Optional / Union: None where allowed, else the first member type that accepts it."""
    if value is None and type(None) in args:
        return None
    for a in (a for a in args if a is not type(None)):
        try:
            return _coerce(value, a, key, default if _schema_child(a) else None)
        except ConfigError:
            if _same_kind(a, value):
                raise  # e.g. a mapping for a dataclass: the inner error (key, index) is precise
    raise _wrong(key, tp, value)


def _coerce_container(value: Any, tp: Any, origin: Any, args: tuple, key: str) -> Any:
    """list / Sequence / tuple (homogeneous or fixed) / dict / Mapping, element by element."""
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _wrong(key, tp, value)
        ktp, vtp = args if args else (Any, Any)
        return {_coerce(k, ktp, f"{key} key {k!r}"): _coerce(v, vtp, _join(key, k)) for k, v in value.items()}
    if not isinstance(value, (list, tuple)):
        raise _wrong(key, tp, value)
    if origin in (list, Sequence) or tp in (list, Sequence):
        elem = args[0] if args else Any
        return [_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        elem = args[0] if args else Any
        return tuple(_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"config key '{key}' must be a list of {len(args)} items, got {len(value)}: {value!r}")
    return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    """Enums (by value or name), bool, int (not bool), float (ints and YAML 1.1's '1e-3'
    strings too), str, any other class by isinstance."""
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for m in tp:
            if value == m.value or value == m.name:
                return m
        raise _wrong(key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong(key, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        raise _wrong(key, tp, value)
    if tp in (bool, str) or isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _wrong(key, tp, value)
    raise TypeError(f"config schema type {tp!r} of '{key}' is not supported")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return copy.deepcopy(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _NO_DEFAULT


def build(cls: type, data: Mapping[str, Any], key: str = "", defaults: Any = None) -> Any:
    """Build dataclass ``cls`` from a mapping, strictly. Keys left out take their value
    from ``defaults`` (an instance of ``cls``) or else the field default. Nested
    dataclasses merge key by key; any other value given (lists, open mappings) replaces
    the default whole."""
    if not isinstance(data, Mapping):
        raise _wrong(key or "(top level)", cls, data)
    hints = _hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    for k in data:
        if k not in names:
            raise _unknown(key, str(k), names)
    kwargs = {}
    for f in fields:
        fkey = _join(key, f.name)
        tp = hints.get(f.name, f.type)
        default = copy.deepcopy(getattr(defaults, f.name)) if defaults is not None else _field_default(f)
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], tp, fkey, default)
        elif default is _NO_DEFAULT:
            raise ConfigError(f"missing required config key '{fkey}' ({_type_name(tp)})")
        else:
            kwargs[f.name] = default
    try:
        obj = cls(**kwargs)
        if callable(getattr(obj, "validate", None)):
            obj.validate()
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        where = f"'{key}'" if key else cls.__name__
        raise ConfigError(f"invalid config {where}: {e}") from e
    return obj


# ----------------------------------------------------------------------------- overrides

def parse_override(item: str) -> tuple[list[str], Any]:
    """``'search.tau=5.0'`` -> (['search', 'tau'], 5.0); VALUE is read as YAML."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override '{item}' must look like KEY=VALUE, e.g. search.tau=5.0")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"override '{item}': value {text!r} is not valid YAML; "
                          f"quote it, e.g. {key}='\"{text}\"'") from None
    return key.split("."), value


def _schema_child(tp: Any) -> Any:
    """The dataclass a field type leads to (through Optional), or None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        for a in typing.get_args(tp):
            if dataclasses.is_dataclass(a):
                return a
    return None


def apply_override(data: dict, schema_cls: type, item: str) -> None:
    """Apply one ``KEY=VALUE`` override to raw config ``data`` in place. Keys must exist
    in the schema; inside an open mapping one entry is set and the others are kept."""
    path, value = parse_override(item)
    node, cls, key, defaults = data, schema_cls, "", None
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if cls is not None:
            fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
            if part not in fields:
                raise ConfigError(f"{_unknown(key, part, list(fields))} (in override '{item}')")
            f = fields[part]
            tp = _hints(cls).get(part, f.type)
            default = getattr(defaults, part) if defaults is not None else _field_default(f)
            cls = _schema_child(tp)
            defaults = default if cls is not None and isinstance(default, cls) else None
            if not last and cls is None and part not in node:
                # an open mapping the YAML did not set: start from its default entries
                node[part] = copy.deepcopy(dict(default)) if isinstance(default, Mapping) else {}
        if last:
            node[part] = value
            return
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"override '{item}': '{_join(key, part)}' is {nxt!r}, not a mapping")
        node, key = nxt, _join(key, part)


def load_config(schema_cls: type, path: str | None = None, overrides: Sequence[str] = (),
                base: Mapping[str, Any] | None = None) -> Any:
    """Defaults < ``base`` < YAML at ``path`` (with ``_base_``) < ``overrides`` -> a checked
    ``schema_cls`` instance. Every problem raises ConfigError (a HourNASError)."""
    if not dataclasses.is_dataclass(schema_cls):
        raise TypeError(f"load_config needs a dataclass schema, got {schema_cls!r}")
    data = copy.deepcopy(dict(base or {}))
    if path is not None:
        data = deep_merge(data, _read_with_bases(os.fspath(path)))
    if isinstance(overrides, str):
        overrides = [overrides]
    for item in overrides:
        apply_override(data, schema_cls, item)
    return build(schema_cls, data)


# ----------------------------------------------------------------------------- writing

def flatten(d: Any, prefix: str = "") -> dict:
    """A nested mapping as {dotted.key: value} (to compare two resolved configs)."""
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def to_dict(cfg: Any) -> Any:
    """A dataclass (or nested values) -> plain dicts/lists/scalars, ready for YAML or JSON."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, enum.Enum):
        return cfg.value
    if isinstance(cfg, os.PathLike):
        return os.fspath(cfg)
    if hasattr(cfg, "item") and callable(cfg.item):  # numpy scalar
        return cfg.item()
    return cfg


def dump_config(cfg: Any) -> str:
    """The resolved config as YAML text (loadable again with ``load_config``)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)


def save_config(cfg: Any, path: str) -> str:
    """Write the resolved config as YAML, atomically. Returns ``path``."""
    from src.checkpoint import atomic_write_text

    return atomic_write_text(path, dump_config(cfg))
