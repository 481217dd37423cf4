"""Layer plans: the exact structure of one block, shared by the Cell builder and the counter.

A plan lists every conv of a block with its shapes. ``src/ops.py`` turns a plan into an
``nn.Cell`` and ``src/resource.py`` counts it; neither decides structure on its own, so the
counted parameters always equal the built Cell's.

Per-family differences are data (:class:`Conventions`), never branches elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from src.errors import HourNASError
from src.space.blockstr import Op

ACTIVATIONS = ("relu", "relu6", "swish")
SE_BASES = ("in", "mid")


@dataclass(frozen=True)
class Conventions:
    """Builder conventions of a block family (they change the counts; keep them per space).

    expand_at_e1: an ``ir`` op with e=1 keeps its 1x1 expansion conv (FBNet, HourNAS model zoo);
        when False it is built as a depthwise-separable block (MobileNetV2, EfficientNet).
    se_base / se_ratio_min: SE width = max(se_min, floor(base_channels * ratio)), base = the
        block's input channels (``in``: EfficientNet, MnasNet) or its expanded width (``mid``).
    se_bias: the SE 1x1 convs carry a bias.
    activation: relu | relu6 | swish (SE uses the same one, gated by a sigmoid).
    """

    expand_at_e1: bool = True
    se_base: str = "in"
    se_min: int = 1
    se_bias: bool = True
    activation: str = "relu"

    def validate(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise HourNASError(f"unknown activation '{self.activation}'; valid: "
                               f"{', '.join(ACTIVATIONS)}")
        if self.se_base not in SE_BASES:
            raise HourNASError(f"unknown se_base '{self.se_base}'; valid: {', '.join(SE_BASES)}")


@dataclass(frozen=True)
class ConvSpec:
    """A conv (+ optional BN and activation) at a given output resolution."""

    cin: int
    cout: int
    k: int
    stride: int
    h_out: int
    groups: int = 1
    bias: bool = False
    bn: bool = True
    act: str | None = None

    @property
    def padding(self) -> int:
        return self.k // 2

    @property
    def params(self) -> int:
        n = self.k * self.k * (self.cin // self.groups) * self.cout
        return n + (self.cout if self.bias else 0) + (2 * self.cout if self.bn else 0)

    @property
    def flops(self) -> int:
        return self.k * self.k * (self.cin // self.groups) * self.cout * self.h_out * self.h_out


@dataclass(frozen=True)
class SESpec:
    """Squeeze-and-excitation on ``channels`` with ``reduced`` hidden units."""

    channels: int
    reduced: int
    bias: bool
    act: str

    @property
    def params(self) -> int:
        b = (self.reduced + self.channels) if self.bias else 0
        return 2 * self.channels * self.reduced + b

    @property
    def flops(self) -> int:
        # Both 1x1 convs act on a 1x1 map; counted (they are convs), tiny next to the block.
        return 2 * self.channels * self.reduced


@dataclass(frozen=True)
class LayerPlan:
    """One block: expand (1x1) -> [shuffle] -> depthwise -> [SE] -> project (1x1) [+ residual].

    A ``skip`` op is either the identity (``identity``) or, where the shape changes, FBNet's
    1x1 conv + BN + act projection (held in ``project``).
    """

    op: Op
    c_in: int
    c_out: int
    stride: int
    h_in: int
    h_out: int
    expand: ConvSpec | None = None
    shuffle: int = 1
    dw: ConvSpec | None = None
    se: SESpec | None = None
    project: ConvSpec | None = None
    residual: bool = False
    identity: bool = False

    @property
    def convs(self) -> list[ConvSpec]:
        return [c for c in (self.expand, self.dw, self.project) if c is not None]

    @property
    def params(self) -> int:
        return sum(c.params for c in self.convs) + (self.se.params if self.se else 0)

    @property
    def flops(self) -> int:
        return sum(c.flops for c in self.convs) + (self.se.flops if self.se else 0)


def conv_out(h: int, k: int, stride: int) -> int:
    """Output size of a conv with padding k//2 (the same for every conv we build)."""
    return (h + 2 * (k // 2) - k) // stride + 1


def residual_possible(c_in: int, c_out: int, stride: int) -> bool:
    return stride == 1 and c_in == c_out


def plan_layer(op: Op, c_in: int, c_out: int, stride: int, h_in: int,
               conv: Conventions) -> LayerPlan:
    """The structure of ``op`` placed at a layer (c_in -> c_out, stride, input size h_in)."""
    act = conv.activation
    if op.is_skip:
        if residual_possible(c_in, c_out, stride):
            return LayerPlan(op, c_in, c_out, stride, h_in, h_in, identity=True)
        h_out = conv_out(h_in, 1, stride)
        proj = ConvSpec(c_in, c_out, 1, stride, h_out, act=act)
        return LayerPlan(op, c_in, c_out, stride, h_in, h_out, project=proj)

    h_out = conv_out(h_in, op.k, stride)
    expand_conv = op.kind == "ir" and (op.e != 1 or conv.expand_at_e1)
    mid = int(c_in * op.e) if expand_conv else c_in
    if op.g > 1 and (mid % op.g or c_in % op.g or c_out % op.g):
        raise HourNASError(f"op '{op.name}' needs channels divisible by {op.g} "
                           f"(in {c_in}, mid {mid}, out {c_out})")
    expand = ConvSpec(c_in, mid, 1, 1, h_in, groups=op.g, act=act) if expand_conv else None
    dw = ConvSpec(mid, mid, op.k, stride, h_out, groups=mid, act=act)
    se = None
    if op.se:
        base = c_in if conv.se_base == "in" else mid
        reduced = max(conv.se_min, int(math.floor(base * op.se + 1e-9)))
        se = SESpec(mid, reduced, conv.se_bias, act)
    project = ConvSpec(mid, c_out, 1, 1, h_out, groups=op.g if expand_conv else 1)
    residual = residual_possible(c_in, c_out, stride) and not op.noskip
    return LayerPlan(op, c_in, c_out, stride, h_in, h_out, expand=expand,
                     shuffle=op.g if (expand_conv and op.g > 1) else 1, dw=dw, se=se,
                     project=project, residual=residual)


@dataclass(frozen=True)
class StemSpec:
    c: int
    k: int = 3
    s: int = 2


@dataclass(frozen=True)
class NetPlan:
    """The fixed parts of a network around its layers: stem, head and classifier."""

    stem: ConvSpec
    head: ConvSpec | None
    fc_in: int
    num_classes: int
    layers: list[LayerPlan] = field(default_factory=list)

    @property
    def fc_params(self) -> int:
        return self.fc_in * self.num_classes + self.num_classes

    @property
    def fc_flops(self) -> int:
        return self.fc_in * self.num_classes
