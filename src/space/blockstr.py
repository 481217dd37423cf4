"""The block-string grammar: one strict parser and one formatter.

Two forms share one token set:

* a candidate **op** of a search space: ``k3_e6``, ``k5_e1_g2``, ``k3_e6_se0.25``, ``skip``;
* a **block** of a whole network (timm / model-zoo style):
  ``ir_r2_k3_s2_e6_c24_se0.25``, ``ds_r1_k3_s1_c16_noskip``, ``skip_r1_s1_c24``.

Tokens (canonical order): type (``ir`` | ``ds`` | ``skip``), ``r<repeats>``, ``k<kernel>``,
``s<stride>``, ``e<expansion>``, ``c<channels>``, ``g<groups>``, ``se<ratio>``, ``noskip``.
Unknown or repeated tokens raise; ``format(parse(s)) == s`` for every accepted canonical string.
Tokens of timm's grammar that this one lacks (block types ``er``, ``cn``, ``dsa``, ``uir``, ...,
CondConv ``cc<n>``, the ``skip`` flag, activation ``n<act>``, group size ``gs<n>``, mixed
kernels ``k3.5``, ...) are refused by name.

:func:`timm_arch_def` writes an architecture for timm's EfficientNet builder: the block
strings timm builds into the same network (identity ``skip`` layers dropped, a projection
``skip`` written as timm's ``cn_r1_k1`` conv-BN-act), or a refusal that names every construct
timm's grammar cannot express (grouped 1x1 convs with channel shuffle, SE without bias, ...).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from src.errors import HourNASError

BLOCK_TYPES = ("ir", "ds", "skip")
_TOKEN_ORDER = ("r", "k", "s", "e", "c", "g", "se", "noskip")
_TOKEN_RE = re.compile(r"^(se|noskip|[rksecg])(.*)$")
_INT_RE = re.compile(r"^[1-9][0-9]*$")
_NUM_RE = re.compile(r"^(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$")


class BlockStringError(HourNASError):
    """A malformed op or block string."""


@dataclass(frozen=True)
class Op:
    """One candidate operation: the part of a block that a search chooses.

    ``kind`` is ``ir`` (inverted residual / MBConv), ``ds`` (depthwise-separable, no expansion
    conv) or ``skip``. ``e`` is kept as written (int when integral).
    """

    kind: str = "ir"
    k: int = 3
    e: float = 1
    g: int = 1
    se: float = 0.0
    noskip: bool = False

    @property
    def is_skip(self) -> bool:
        return self.kind == "skip"

    @property
    def name(self) -> str:
        return format_op(self)


@dataclass(frozen=True)
class Block:
    """A stage of a network: ``r`` repeats of ``op`` with ``c`` output channels; the first
    repeat has stride ``s``, the others stride 1."""

    op: Op
    c: int
    s: int = 1
    r: int = 1


def _num(text: str, token: str, source: str, integer: bool) -> float:
    pattern = _INT_RE if integer else _NUM_RE
    if not pattern.match(text):
        kind = "a positive integer" if integer else "a number such as 0.25"
        raise BlockStringError(f"malformed token '{token}' in '{source}': expected {kind} after "
                               f"'{token[:len(token) - len(text)]}'")
    value = float(text)
    return int(value) if value.is_integer() else value


def _fmt_num(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


# timm's block types and tokens that this grammar does not have: refused by name
_TIMM_TYPES = {"er": "edge residual", "cn": "conv-BN-act", "dsa": "depthwise-separable with "
               "pointwise activation", "tu": "Tucker conv", "uir": "universal inverted residual",
               "mha": "multi-head attention", "mqa": "multi-query attention"}
_TIMM_TOKENS = ((re.compile(r"^cc\d+$"), "CondConv experts"),
                (re.compile(r"^skip$"), "force-skip flag"),
                (re.compile(r"^n(re|r6|hs|sw|mi)$"), "per-block activation"),
                (re.compile(r"^gs\d+$"), "group size"),
                (re.compile(r"^[ap]\d+(\.\d+)*$"), "expansion/projection kernel size"),
                (re.compile(r"^fc\d+$"), "forced input channels"),
                (re.compile(r"^d\d+$"), "space-to-depth"),
                (re.compile(r"^(ir|or)\d"), "Tucker rank ratio"),
                (re.compile(r"^[hv]\d+$"), "attention heads / key-value stride"),
                (re.compile(r"^k\d+(\.\d+)+$"), "mixed kernel sizes (MixNet)"))


def _refuse_timm(source: str, parts: list[str]) -> None:
    """Raise a clear error for timm block types and tokens this grammar does not support."""
    if parts[0] in _TIMM_TYPES:
        raise BlockStringError(f"block type '{parts[0]}' (timm's {_TIMM_TYPES[parts[0]]}) is not "
                               f"supported in '{source}'; supported: {', '.join(BLOCK_TYPES)}")
    for token in parts[1:]:
        for pattern, what in _TIMM_TOKENS:
            if pattern.match(token):
                raise BlockStringError(f"token '{token}' (timm's {what}) is not supported in "
                                       f"'{source}'; valid tokens: {'/'.join(BLOCK_TYPES)} then "
                                       f"{', '.join(_TOKEN_ORDER)}")


def _tokens(source: str, allowed: tuple[str, ...]) -> tuple[str, dict]:
    if not isinstance(source, str) or not source:
        raise BlockStringError(f"empty or non-string block string: {source!r}")
    parts = source.split("_")
    _refuse_timm(source, parts)
    kind = parts[0]
    rest = parts[1:]
    if kind not in BLOCK_TYPES:
        # An op string may omit the type; it is then an inverted-residual op.
        kind, rest = "ir", parts
        implicit = True
    else:
        implicit = False
    values: dict = {}
    last = -1
    for token in rest:
        m = _TOKEN_RE.match(token)
        if not m or m.group(1) not in allowed:
            valid = ", ".join(f"{t}<n>" if t != "noskip" else t for t in allowed)
            raise BlockStringError(f"unknown token '{token}' in '{source}'; valid tokens: "
                                   f"{'/'.join(BLOCK_TYPES)} then {valid}")
        key, text = m.group(1), m.group(2)
        order = _TOKEN_ORDER.index(key)
        if key in values:
            raise BlockStringError(f"token '{key}' repeated in '{source}'")
        if order < last:
            raise BlockStringError(f"token '{token}' out of order in '{source}'; order is "
                                   f"{', '.join(_TOKEN_ORDER)}")
        last = order
        if key == "noskip":
            if text:
                raise BlockStringError(f"malformed token '{token}' in '{source}'")
            values[key] = True
        elif key in ("e", "se"):
            values[key] = _num(text, token, source, integer=False)
        else:
            values[key] = _num(text, token, source, integer=True)
    values["_implicit"] = implicit
    return kind, values


def _make_op(kind: str, v: dict, source: str) -> Op:
    if kind == "skip":
        extra = [t for t in ("k", "e", "g", "se", "noskip") if t in v]
        if extra:
            raise BlockStringError(f"'skip' takes no '{extra[0]}' token: '{source}'")
        return Op(kind="skip", k=1, e=1, g=1, se=0.0)
    if "k" not in v:
        raise BlockStringError(f"missing kernel token 'k<n>' in '{source}'")
    if v["k"] % 2 == 0:
        raise BlockStringError(f"kernel size must be odd in '{source}' (got k{v['k']}; valid: "
                               f"k1, k3, k5, k7, ...)")
    if kind == "ds":
        if v.get("e", 1) != 1 or "g" in v:
            raise BlockStringError(f"'ds' (depthwise-separable) blocks have no expansion or groups: "
                                   f"'{source}'")
        return Op(kind="ds", k=v["k"], e=1, g=1, se=v.get("se", 0.0), noskip=v.get("noskip", False))
    if "e" not in v:
        raise BlockStringError(f"missing expansion token 'e<n>' in '{source}'")
    if v["e"] <= 0:
        raise BlockStringError(f"expansion must be positive in '{source}'")
    return Op(kind="ir", k=v["k"], e=v["e"], g=v.get("g", 1), se=v.get("se", 0.0),
              noskip=v.get("noskip", False))


def parse_op(source: str) -> Op:
    """Parse a candidate op (``k3_e6``, ``k5_e1_g2``, ``k3_e6_se0.25``, ``skip``, ``ds_k3``)."""
    kind, v = _tokens(source, ("k", "e", "g", "se", "noskip"))
    return _make_op(kind, v, source)


def format_op(op: Op) -> str:
    if op.kind == "skip":
        return "skip"
    parts = [] if op.kind == "ir" else [op.kind]
    parts.append(f"k{op.k}")
    if op.kind == "ir":
        parts.append(f"e{_fmt_num(op.e)}")
    return "_".join(parts + _tail_tokens(op))


def _tail_tokens(op: Op) -> list[str]:
    """The optional tokens after the channel count: groups, SE ratio, noskip."""
    tail = [f"g{op.g}"] if op.g != 1 else []
    if op.se:
        tail.append(f"se{_fmt_num(op.se)}")
    if op.noskip:
        tail.append("noskip")
    return tail


def parse_block(source: str) -> Block:
    """Parse a whole-network block string (``ir_r2_k3_s2_e6_c24_se0.25``)."""
    kind, v = _tokens(source, _TOKEN_ORDER)
    if v["_implicit"]:
        raise BlockStringError(f"block string '{source}' must start with a type: "
                               f"{', '.join(BLOCK_TYPES)}")
    for key in ("r", "s", "c"):
        if key not in v:
            raise BlockStringError(f"missing token '{key}<n>' in block string '{source}'")
    return Block(op=_make_op(kind, v, source), c=v["c"], s=v["s"], r=v["r"])


def format_block(block: Block) -> str:
    op = block.op
    parts = [op.kind, f"r{block.r}"]
    if op.kind != "skip":
        parts.append(f"k{op.k}")
    parts.append(f"s{block.s}")
    if op.kind == "ir":
        parts.append(f"e{_fmt_num(op.e)}")
    parts.append(f"c{block.c}")
    return "_".join(parts + _tail_tokens(op))


# ----------------------------------------------------------------------------- timm

TIMM_ACTIVATIONS = {"relu": "relu", "relu6": "relu6", "swish": "swish"}


def timm_divisible(v: float, divisor: int = 8) -> int:
    """The channel count timm's builder makes of ``v``: the nearest multiple of ``divisor``
    (at least ``divisor``), one more step up when rounding lost over 10%."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _timm_block(layer, plan, conv) -> tuple[str | None, list[str]]:
    """(timm block string with r1, or None for a dropped identity; constructs timm lacks)."""
    op, c = plan.op, plan.c_out
    problems = []
    if timm_divisible(c) != c:
        problems.append(f"{c} output channels (timm's builder rounds block channels to "
                        f"multiples of 8: {timm_divisible(c)})")
    if op.is_skip:
        if plan.identity:
            return None, problems
        return f"cn_r1_k1_s{plan.stride}_c{c}", problems  # FBNet's projection: 1x1 conv-BN-act
    if op.g > 1:
        problems.append(f"grouped 1x1 convs with channel shuffle (_g{op.g}); timm has no token "
                        f"for them and builds '_g{op.g}' as ungrouped convs")
    depthwise_sep = plan.expand is None
    if depthwise_sep:
        tokens = ["ds", "r1", f"k{op.k}", f"s{plan.stride}", f"c{c}"]
    else:
        mid = plan.expand.cout
        if timm_divisible(plan.c_in * op.e) != mid:
            problems.append(f"{mid} expanded channels (timm makes {timm_divisible(plan.c_in * op.e)}"
                            f" of {plan.c_in} x {_fmt_num(op.e)})")
        tokens = ["ir", "r1", f"k{op.k}", f"s{plan.stride}", f"e{_fmt_num(op.e)}", f"c{c}"]
    if op.se:
        tokens.append(f"se{_fmt_num(op.se)}")
        if not conv.se_bias:
            problems.append("squeeze-and-excitation without bias (conventions.se_bias: false); "
                            "timm's SE convs have biases")
        elif conv.se_base != "in":
            problems.append(f"SE width from the {conv.se_base} channels (conventions.se_base); "
                            f"timm's EfficientNet sizes SE from the block input")
        else:
            base = plan.c_in if depthwise_sep else plan.expand.cout
            ratio = op.se if depthwise_sep else op.se / op.e
            if round(base * ratio) != plan.se.reduced:
                problems.append(f"SE width {plan.se.reduced} (timm rounds {base} x "
                                f"{ratio:g} to {round(base * ratio)})")
    if op.noskip:
        tokens.append("noskip")
    return "_".join(tokens), problems


def timm_arch_def(arch) -> dict:
    """``arch`` (a :class:`src.space.space.Arch`) for timm's EfficientNet builder::

        EfficientNet(decode_arch_def(out["arch_def"]), **out["kwargs"])   # + act_layer

    builds the same network (same layers, convs, SE, residuals and parameter count):
    identity ``skip`` layers are dropped (timm has no identity block), a projection ``skip``
    (FBNet's 1x1 conv-BN-act where the shape changes) becomes ``cn_r1_k1_s<s>_c<c>``, ``ir``
    at e=1 without an expansion conv becomes ``ds``, equal consecutive blocks are merged into
    repeats and a new stage starts where the channel count changes. Raises BlockStringError
    naming every construct (and its layers) that timm's grammar or builder cannot express."""
    conv = arch.conventions
    problems: dict[str, list[str]] = {}
    blocks: list[list] = []   # [type+rest key, r, s, c, string parts]
    dropped = []
    if (arch.stem.k, arch.stem.s) != (3, 2):
        problems.setdefault(f"a k{arch.stem.k} stride-{arch.stem.s} stem (timm's EfficientNet "
                            f"stem is a 3x3 stride-2 conv)", [])
    if not arch.head:
        problems.setdefault("no 1x1 head conv (timm's EfficientNet always has one)", [])
    if conv.activation not in TIMM_ACTIVATIONS:
        problems.setdefault(f"activation '{conv.activation}' (no timm name for it)", [])
    for layer, plan in zip(arch.layers, arch.plans()):
        text, found = _timm_block(layer, plan, conv)
        for what in found:
            problems.setdefault(what, []).append(f"{layer.label} '{format_op(plan.op)}'")
        if text is None:
            dropped.append(layer.label)
            continue
        parts = text.split("_")
        key = (parts[0],) + tuple(p for p in parts[2:] if not re.match(r"^s\d+$", p))
        if blocks and blocks[-1][0] == key and plan.stride == 1:
            blocks[-1][1] += 1
        else:
            blocks.append([key, 1, plan.stride, plan.c_out, parts])
    if problems:
        shown = "; ".join(what + (f" ({', '.join(where[:3])}" + (
            f" and {len(where) - 3} more layers" if len(where) > 3 else "") + ")" if where else "")
            for what, where in problems.items())
        raise BlockStringError(f"'{arch.name}' cannot be written for timm: {shown}")
    stages: list[list[str]] = []
    last_c = None
    for key, r, s, c, parts in blocks:
        text = "_".join([parts[0], f"r{r}"] + parts[2:])
        if c != last_c:
            stages.append([])
            last_c = c
        stages[-1].append(text)
    return {"arch_def": stages,
            "kwargs": {"stem_size": arch.stem.c, "fix_stem": True, "num_features": arch.head,
                       "num_classes": arch.num_classes, "in_chans": arch.in_channels,
                       "drop_rate": arch.dropout},
            "act_layer": TIMM_ACTIVATIONS[conv.activation],
            "dropped_identity_layers": dropped}


def timm_snippet(arch, out: dict) -> str:
    """Python that builds ``out`` (from :func:`timm_arch_def`) with timm."""
    rows = "".join(f"    {stage!r},\n" for stage in out["arch_def"])
    kwargs = ", ".join(f"{k}={v!r}" for k, v in out["kwargs"].items())
    return (f"# {arch.name} for timm's EfficientNet builder"
            + (f" (identity skip layers {', '.join(out['dropped_identity_layers'])} dropped)"
               if out["dropped_identity_layers"] else "") + "\n"
            "from timm.layers import get_act_layer\n"
            "from timm.models._efficientnet_builder import decode_arch_def\n"
            "from timm.models.efficientnet import EfficientNet\n\n"
            f"arch_def = [\n{rows}]\n"
            f"model = EfficientNet(decode_arch_def(arch_def), {kwargs},\n"
            f"                     act_layer=get_act_layer({out['act_layer']!r}))\n")
