"""Search spaces and architecture records.

A :class:`Space` is a macro-architecture (stem, a sequence of layers each with its candidate
ops, head, classifier). An :class:`Arch` is one network: the same skeleton with one op per
layer. Both are loaded from YAML (``config/spaces/``, ``config/arch/``) and derive, from their
structure alone, the input resolution of every layer and which blocks are **vital** (on every
input->output path: the paper's hourglass neck).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from functools import cached_property

from src.errors import HourNASError
from src.rundir import check_stem
from src.space.blockstr import Block, Op, format_block, format_op, parse_block, parse_op
from src.space.plan import (Conventions, ConvSpec, LayerPlan, NetPlan, StemSpec, conv_out,
                            plan_layer, residual_possible)

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "config")
SPACES_DIR = os.path.join(CONFIG_DIR, "spaces")


@dataclass(frozen=True)
class Layer:
    """A layer of a space: its shape and candidate ops (one candidate = a fixed layer)."""

    label: str
    c_in: int
    c_out: int
    stride: int
    h_in: int
    ops: tuple[Op, ...]

    @property
    def searchable(self) -> bool:
        return len(self.ops) > 1

    @property
    def residual_possible(self) -> bool:
        return residual_possible(self.c_in, self.c_out, self.stride)

    def plan(self, op: Op, conv: Conventions) -> LayerPlan:
        return plan_layer(op, self.c_in, self.c_out, self.stride, self.h_in, conv)


def _vital_flags(layers: list[Layer]) -> list[bool]:
    """Blocks on every input->output path (P_1 ∩ ... ∩ P_n).

    The network is a chain of nodes x_0 -> x_1 -> ... -> x_L; layer i joins x_i to x_{i+1}
    through its transformation F_i and, where a residual is possible, also through the
    identity. A block lies on every path iff it is the only edge between its two nodes, i.e.
    its layer admits no shortcut.
    """
    flags = []
    for layer in layers:
        edges = [("F", layer.label)]
        if layer.residual_possible and any(not op.noskip for op in layer.ops):
            edges.append(("identity", layer.label))
        flags.append(len(edges) == 1)
    return flags


@dataclass
class Network:
    """What a Space and an Arch share: stem, layers, head, classifier, conventions."""

    name: str
    input_size: int
    num_classes: int
    conventions: Conventions
    stem: StemSpec
    layers: list[Layer]
    head: int | None
    dropout: float = 0.0
    in_channels: int = 3

    @cached_property
    def vital(self) -> list[bool]:
        return _vital_flags(self.layers)

    @property
    def stem_out(self) -> int:
        return conv_out(self.input_size, self.stem.k, self.stem.s)

    def net_plan(self) -> NetPlan:
        act = self.conventions.activation
        stem = ConvSpec(self.in_channels, self.stem.c, self.stem.k, self.stem.s, self.stem_out,
                        act=act)
        last_c = self.layers[-1].c_out if self.layers else self.stem.c
        last_h = conv_out(self.layers[-1].h_in, 1, self.layers[-1].stride) if self.layers \
            else self.stem_out
        head = ConvSpec(last_c, self.head, 1, 1, last_h, act=act) if self.head else None
        return NetPlan(stem=stem, head=head, fc_in=self.head or last_c,
                       num_classes=self.num_classes)


def _build_layers(stem: StemSpec, input_size: int, entries: list[tuple[str, int, int, tuple]],
                  where: str) -> list[Layer]:
    """entries: (label, c_out, stride, ops) in order; computes c_in and h_in by walking."""
    c_in = stem.c
    h = conv_out(input_size, stem.k, stem.s)
    layers = []
    for label, c_out, stride, ops in entries:
        if stride < 1 or c_out < 1:
            raise HourNASError(f"{where}: layer {label} needs positive channels and stride")
        layer = Layer(label, c_in, c_out, stride, h, tuple(ops))
        layers.append(layer)
        h = conv_out(h, 1, stride)  # odd kernels with padding k//2: size depends on stride only
        c_in = c_out
    return layers


# ---------------------------------------------------------------- spaces


@dataclass
class Space(Network):
    """A search space. ``layers`` hold the candidates; fixed layers have one."""

    family: str = ""
    op_names: tuple[str, ...] = ()

    @property
    def searchable(self) -> list[int]:
        return [i for i, layer in enumerate(self.layers) if layer.searchable]

    @property
    def num_architectures(self) -> int:
        return math.prod(len(layer.ops) for layer in self.layers)

    def vital_layers(self) -> list[int]:
        """Searchable layers that are vital (stage 1 searches these)."""
        return [i for i in self.searchable if self.vital[i]]

    def nonvital_layers(self) -> list[int]:
        return [i for i in self.searchable if not self.vital[i]]

    def op_index(self, layer: int, op: Op | str) -> int:
        op = parse_op(op) if isinstance(op, str) else op
        try:
            return self.layers[layer].ops.index(op)
        except ValueError:
            valid = ", ".join(format_op(o) for o in self.layers[layer].ops)
            raise HourNASError(f"op '{format_op(op)}' is not a candidate of layer "
                               f"{self.layers[layer].label} in space '{self.name}'; valid: {valid}")

    def arch(self, choices: list[Op | str | int], name: str | None = None,
             meta: dict | None = None) -> "Arch":
        """The network that takes ``choices[i]`` (op, op string or candidate index) at layer i.

        ``choices`` covers every layer, or only the searchable ones (fixed layers fill in).
        """
        if len(choices) == len(self.searchable) and len(choices) != len(self.layers):
            full: list = []
            it = iter(choices)
            for layer in self.layers:
                full.append(next(it) if layer.searchable else layer.ops[0])
            choices = full
        if len(choices) != len(self.layers):
            raise HourNASError(f"space '{self.name}' has {len(self.layers)} layers "
                               f"({len(self.searchable)} searchable); got {len(choices)} choices")
        ops = []
        for i, choice in enumerate(choices):
            if isinstance(choice, int):
                ops.append(self.layers[i].ops[choice])
            else:
                ops.append(self.layers[i].ops[self.op_index(i, choice)])
        layers = [replace(layer, ops=(op,)) for layer, op in zip(self.layers, ops)]
        return Arch(name=name or f"{self.name}_arch", input_size=self.input_size,
                    num_classes=self.num_classes, conventions=self.conventions, stem=self.stem,
                    layers=layers, head=self.head, dropout=self.dropout,
                    in_channels=self.in_channels, space=self.name, meta=dict(meta or {}))

    def choices_of(self, arch: "Arch") -> list[int]:
        """Candidate index per layer of an architecture of this space."""
        if len(arch.layers) != len(self.layers):
            raise HourNASError(f"architecture '{arch.name}' has {len(arch.layers)} layers; space "
                               f"'{self.name}' has {len(self.layers)}")
        return [self.op_index(i, layer.ops[0]) for i, layer in enumerate(arch.layers)]


_SPACE_KEYS = {"name", "family", "input_size", "num_classes", "conventions", "stem", "ops",
               "stages", "head", "dropout", "in_channels", "description"}
_STAGE_KEYS = {"c", "n", "s", "ops"}


def _check_keys(data: dict, valid: set, where: str) -> None:
    if not isinstance(data, dict):
        raise HourNASError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - valid)
    if unknown:
        raise HourNASError(f"{where}: unknown key '{unknown[0]}'; valid keys: "
                           f"{', '.join(sorted(valid))}")


def _int(data: dict, key: str, where: str, minimum: int = 1, default=None, optional=False):
    """``data[key]`` as an int >= ``minimum`` (a hand-edited file gets one clear line)."""
    value = data.get(key, default)
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        null = " or null" if optional else ""
        raise HourNASError(f"{where}: '{key}' must be an integer >= {minimum}{null}, got "
                           f"{value!r}")
    return value


def _dropout(data: dict, where: str) -> float:
    value = data.get("dropout", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise HourNASError(f"{where}: 'dropout' must be a number in [0, 1), got {value!r}")
    return float(value)


def _name(data: dict, where: str) -> str:
    value = data["name"]
    if not isinstance(value, str) or not value.strip():
        raise HourNASError(f"{where}: 'name' must be a non-empty string, got {value!r}")
    return check_stem(value, f"{where}: 'name'")  # files are named after it


def _parse_all(strings, parse, what: str, where: str) -> list:
    """Parse each op/block string; errors say which file and which entry."""
    from src.space.blockstr import BlockStringError

    if not isinstance(strings, list) or not strings:
        raise HourNASError(f"{where}: '{what}' must be a non-empty list of {what[:-1]} strings, "
                           f"got {strings!r}")
    out = []
    for i, text in enumerate(strings):
        try:
            out.append(parse(text))
        except BlockStringError as e:
            raise BlockStringError(f"{where}: {what}[{i}]: {e}") from None
        if what == "ops" and out[-1] in out[:-1]:  # a choice listed twice would be searched twice
            j = out.index(out[-1])
            raise HourNASError(f"{where}: ops[{i}] '{text}' is the same op as ops[{j}] "
                               f"'{strings[j]}'; list each op once")
    return out


def _conventions(data: dict | None, where: str) -> Conventions:
    data = data or {}
    valid = set(Conventions.__dataclass_fields__)
    w = f"{where}: conventions"
    _check_keys(data, valid, w)
    for key in ("expand_at_e1", "se_bias"):
        if key in data and not isinstance(data[key], bool):
            raise HourNASError(f"{w}: '{key}' must be true or false, got {data[key]!r}")
    if "se_min" in data:
        _int(data, "se_min", w)
    conv = Conventions(**data)
    try:
        conv.validate()
    except HourNASError as e:
        raise HourNASError(f"{w}: {e}") from None
    return conv


def _stem(data, where: str) -> StemSpec:
    if isinstance(data, int) and not isinstance(data, bool):
        return StemSpec(c=_int({"c": data}, "c", f"{where}: stem"))
    _check_keys(data, {"c", "k", "s"}, f"{where}: stem")
    w = f"{where}: stem"
    if "c" not in data:
        raise HourNASError(f"{w}: missing key 'c' (output channels)")
    k = _int(data, "k", w, default=StemSpec.k)
    if k % 2 == 0:
        raise HourNASError(f"{w}: kernel 'k' must be odd (e.g. 3, 5), got {k}")
    return StemSpec(c=_int(data, "c", w), k=k, s=_int(data, "s", w, default=StemSpec.s))


def _read_yaml(path: str) -> dict:
    """Space and architecture files go through the project's one YAML reader (safe_load
    semantics, duplicate keys refused, errors with line and column)."""
    from src.config import read_yaml
    return read_yaml(path)


def scale_channels(c: int, width_mult: float, divisor: int = 4) -> int:
    """Channels scaled by a width multiplier, rounded to a multiple of ``divisor`` (MobileNet's
    rule: never below ``divisor``, never more than 10% under the exact product)."""
    if width_mult == 1.0:
        return c
    exact = c * width_mult
    out = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * exact else out


def space_from_dict(data: dict, where: str = "space", width_mult: float = 1.0) -> Space:
    """A space from its YAML mapping; ``width_mult`` narrows (or widens) every layer."""
    _check_keys(data, _SPACE_KEYS, where)
    for key in ("name", "input_size", "num_classes", "stem", "ops", "stages"):
        if key not in data:
            raise HourNASError(f"{where}: missing key '{key}'")
    if width_mult <= 0:
        raise HourNASError(f"width_mult must be positive, got {width_mult}")
    _name(data, where)
    input_size = _int(data, "input_size", where, minimum=8)
    num_classes = _int(data, "num_classes", where)
    head = _int(data, "head", where, optional=True)
    in_channels = _int(data, "in_channels", where, default=3)
    dropout = _dropout(data, where)
    conv = _conventions(data.get("conventions"), where)
    stem = _stem(data["stem"], where)
    stem = replace(stem, c=scale_channels(stem.c, width_mult))
    default_ops = tuple(_parse_all(data["ops"], parse_op, "ops", where))
    if not isinstance(data["stages"], list) or not data["stages"]:
        raise HourNASError(f"{where}: 'stages' must be a non-empty list of mappings "
                           f"{{c, n, s[, ops]}}, got {data['stages']!r}")
    entries = []
    for si, stage in enumerate(data["stages"]):
        w = f"{where}: stage {si + 1}"
        _check_keys(stage, _STAGE_KEYS, w)
        for key in ("c", "s"):
            if key not in stage:
                raise HourNASError(f"{w}: missing key '{key}'")
        c, stride, n = _int(stage, "c", w), _int(stage, "s", w), _int(stage, "n", w, default=1)
        ops = tuple(_parse_all(stage["ops"], parse_op, "ops", w)) if "ops" in stage \
            else default_ops
        for j in range(n):
            entries.append((None, scale_channels(c, width_mult), stride if j == 0 else 1, ops))
    # Labels: searchable layers L1..Ln as in the papers; fixed ones F1..Fk.
    labelled, n_search, n_fixed = [], 0, 0
    for _, c, s, ops in entries:
        if len(ops) > 1:
            n_search += 1
            label = f"L{n_search}"
        else:
            n_fixed += 1
            label = f"F{n_fixed}"
        labelled.append((label, c, s, ops))
    layers = _build_layers(stem, input_size, labelled, where)
    name = str(data["name"]) if width_mult == 1.0 else f"{data['name']}_w{width_mult:g}"
    return Space(name=name, input_size=input_size, num_classes=num_classes, conventions=conv,
                 stem=stem, layers=layers,
                 head=scale_channels(head, width_mult) if head else head, dropout=dropout,
                 in_channels=in_channels, family=str(data.get("family", "")),
                 op_names=tuple(format_op(o) for o in default_ops))


def available_spaces() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(SPACES_DIR) if f.endswith(".yaml"))


def load_space(name_or_path: str, width_mult: float = 1.0) -> Space:
    """A space by name (``fbnet_imagenet``) or YAML path, optionally narrowed."""
    path = name_or_path
    if not (path.endswith(".yaml") or os.sep in path):
        path = os.path.join(SPACES_DIR, f"{name_or_path}.yaml")
        if not os.path.isfile(path):
            raise HourNASError(f"unknown space '{name_or_path}'; valid: "
                               f"{', '.join(available_spaces())}")
    return space_from_dict(_read_yaml(path), where=path, width_mult=width_mult)


# ---------------------------------------------------------------- architectures


@dataclass
class Arch(Network):
    """One concrete network (one op per layer), the record that train/eval/export read."""

    space: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def ops(self) -> list[Op]:
        return [layer.ops[0] for layer in self.layers]

    def plans(self) -> list[LayerPlan]:
        return [layer.plan(layer.ops[0], self.conventions) for layer in self.layers]

    def net_plan(self) -> NetPlan:
        base = super().net_plan()
        return replace(base, layers=self.plans())

    def block_strings(self, group: bool = True) -> list[str]:
        """timm / model-zoo style strings; consecutive equal layers grouped into repeats."""
        blocks: list[Block] = []
        for layer in self.layers:
            op = layer.ops[0]
            prev = blocks[-1] if blocks else None
            if group and prev and prev.op == op and prev.c == layer.c_out and layer.stride == 1 \
                    and layer.c_in == layer.c_out:
                blocks[-1] = replace(prev, r=prev.r + 1)
            else:
                blocks.append(Block(op=op, c=layer.c_out, s=layer.stride, r=1))
        return [format_block(b) for b in blocks]

    def to_dict(self) -> dict:
        conv = self.conventions
        out = {
            "name": self.name,
            "space": self.space,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            "conventions": {k: getattr(conv, k) for k in Conventions.__dataclass_fields__},
            "stem": {"c": self.stem.c, "k": self.stem.k, "s": self.stem.s},
            "blocks": self.block_strings(group=False),
            "head": self.head,
            "dropout": self.dropout,
        }
        if self.in_channels != 3:
            out["in_channels"] = self.in_channels
        if self.meta:
            out["meta"] = self.meta
        return out


_ARCH_KEYS = {"name", "space", "input_size", "num_classes", "conventions", "stem", "blocks",
              "head", "dropout", "in_channels", "meta", "description"}


def arch_from_dict(data: dict, where: str = "architecture") -> Arch:
    _check_keys(data, _ARCH_KEYS, where)
    for key in ("name", "input_size", "num_classes", "stem", "blocks"):
        if key not in data:
            raise HourNASError(f"{where}: missing key '{key}'")
    name = _name(data, where)
    input_size = _int(data, "input_size", where, minimum=8)
    num_classes = _int(data, "num_classes", where)
    head = _int(data, "head", where, optional=True)
    in_channels = _int(data, "in_channels", where, default=3)
    dropout = _dropout(data, where)
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise HourNASError(f"{where}: 'meta' must be a mapping, got {meta!r}")
    space = data.get("space")
    if space is not None and not isinstance(space, str):
        raise HourNASError(f"{where}: 'space' must be a space name or null, got {space!r}")
    stem = _stem(data["stem"], where)
    entries = []
    for block in _parse_all(data["blocks"], parse_block, "blocks", where):
        for j in range(block.r):
            entries.append((f"L{len(entries) + 1}", block.c, block.s if j == 0 else 1,
                            (block.op,)))
    layers = _build_layers(stem, input_size, entries, where)
    return Arch(name=name, input_size=input_size, num_classes=num_classes,
                conventions=_conventions(data.get("conventions"), where), stem=stem,
                layers=layers, head=head, dropout=dropout, in_channels=in_channels, space=space,
                meta=dict(meta))


def load_arch(path: str) -> Arch:
    if not os.path.isfile(path):
        named = os.path.join(CONFIG_DIR, "arch", f"{path}.yaml")
        if os.path.isfile(named):
            path = named
        else:
            ref = sorted(f[:-5] for f in os.listdir(os.path.join(CONFIG_DIR, "arch"))
                         if f.endswith(".yaml"))
            raise HourNASError(f"architecture file not found: '{path}' (reference nets: "
                               f"{', '.join(ref)})")
    return arch_from_dict(_read_yaml(path), where=path)


def arch_to_yaml(arch: Arch) -> str:
    """The record as YAML: small mappings inline, one block string per line."""
    import yaml
    out = []
    for key, value in arch.to_dict().items():
        if key == "blocks":
            out.append("blocks:\n" + "".join(f"  - {b}\n" for b in value))
        else:
            flow = None if isinstance(value, (dict, list)) else False
            out.append(yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=flow,
                                      width=100))
    return "".join(out)
