"""The block-string grammar: one strict parser and one formatter.

Two forms share one token set:

* a candidate **op** of a search space: ``k3_e6``, ``k5_e1_g2``, ``k3_e6_se0.25``, ``skip``;
* a **block** of a whole network (timm / model-zoo style):
  ``ir_r2_k3_s2_e6_c24_se0.25``, ``ds_r1_k3_s1_c16_noskip``, ``skip_r1_s1_c24``.

Tokens (canonical order): type (``ir`` | ``ds`` | ``skip``), ``r<repeats>``, ``k<kernel>``,
``s<stride>``, ``e<expansion>``, ``c<channels>``, ``g<groups>``, ``se<ratio>``, ``noskip``.
Unknown or repeated tokens raise; ``format(parse(s)) == s`` for every accepted canonical string.
"""
from __future__ import annotations

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


def _tokens(source: str, allowed: tuple[str, ...]) -> tuple[str, dict]:
    if not isinstance(source, str) or not source:
        raise BlockStringError(f"empty or non-string block string: {source!r}")
    parts = source.split("_")
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


def with_se(op: Op, se: float) -> Op:
    return op if op.is_skip else replace(op, se=se)
