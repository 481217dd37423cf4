"""The blocks as ``nn.Cell``: the single block builder of the project.

Every Cell is built from a plan (``src/space/plan.py``), the same plan the resource counter
counts, so structure is decided in one place. Nothing here has Python side effects inside
``construct``; all Cells run in graph and PyNative mode.
"""
from __future__ import annotations

import mindspore.nn as nn
import mindspore.ops as ops
from mindspore.common.initializer import HeNormal, Normal

from src.space.plan import ConvSpec, LayerPlan, SESpec


def activation(name: str) -> nn.Cell:
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "swish": nn.SiLU}[name]()


class ConvBNAct(nn.Cell):
    """Conv (+ BN) (+ activation) from a :class:`ConvSpec`."""

    def __init__(self, spec: ConvSpec):
        super().__init__()
        self.conv = nn.Conv2d(spec.cin, spec.cout, spec.k, stride=spec.stride, pad_mode="pad",
                              padding=spec.padding, group=spec.groups, has_bias=spec.bias,
                              weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))
        self.bn = nn.BatchNorm2d(spec.cout, momentum=0.9) if spec.bn else None
        self.act = activation(spec.act) if spec.act else None

    def construct(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x


class ChannelShuffle(nn.Cell):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def construct(self, x):
        b, c, h, w = x.shape
        x = ops.reshape(x, (b, self.groups, c // self.groups, h, w))
        x = ops.transpose(x, (0, 2, 1, 3, 4))
        return ops.reshape(x, (b, c, h, w))


class SqueezeExcite(nn.Cell):
    """x * sigmoid(W2 act(W1 mean(x))), the SE of MnasNet/EfficientNet."""

    def __init__(self, spec: SESpec):
        super().__init__()
        self.reduce = nn.Conv2d(spec.channels, spec.reduced, 1, has_bias=spec.bias,
                                weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))
        self.expand = nn.Conv2d(spec.reduced, spec.channels, 1, has_bias=spec.bias,
                                weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))
        self.act = activation(spec.act)
        self.gate = nn.Sigmoid()

    def construct(self, x):
        s = x.mean(axis=(2, 3), keep_dims=True)
        s = self.gate(self.expand(self.act(self.reduce(s))))
        return x * s


class Block(nn.Cell):
    """One layer: IRF/MBConv (expand, shuffle, depthwise, SE, project, residual), the
    depthwise-separable block, FBNet's projecting skip, or the identity."""

    def __init__(self, plan: LayerPlan):
        super().__init__()
        self.plan_name = plan.op.name
        self.identity = plan.identity
        self.residual = plan.residual
        self.expand = ConvBNAct(plan.expand) if plan.expand else None
        self.shuffle = ChannelShuffle(plan.shuffle) if plan.shuffle > 1 else None
        self.dw = ConvBNAct(plan.dw) if plan.dw else None
        self.se = SqueezeExcite(plan.se) if plan.se else None
        self.project = ConvBNAct(plan.project) if plan.project else None

    def construct(self, x):
        if self.identity:
            return x
        y = x
        if self.expand is not None:
            y = self.expand(y)
        if self.shuffle is not None:
            y = self.shuffle(y)
        if self.dw is not None:
            y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        if self.residual:
            y = y + x
        return y


class Classifier(nn.Cell):
    """Global average pool, dropout, FC with bias."""

    def __init__(self, c_in: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        self.fc = nn.Dense(c_in, num_classes, weight_init=Normal(0.01), bias_init="zeros")

    def construct(self, x):
        x = x.mean(axis=(2, 3))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x)
