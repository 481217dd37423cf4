"""PyTorch twins of our Cells, built from the same layer plans (benchmarks only).

``torch_net(arch)`` is ``src.childnet.ChildNet`` and ``TorchSupernet(space, searched, keep)``
is ``src.supernet.Supernet``: the same convolutions, BatchNorms, activations, shuffles, SE and
residuals, so a step of each framework does the same arithmetic. PyTorch is not a requirement
of the project; these are imported only when it is installed.
"""
from __future__ import annotations

import torch
from torch import nn

ACT = {"relu": nn.ReLU, "relu6": nn.ReLU6, "swish": nn.SiLU}


def conv(spec) -> nn.Module:
    mods = [nn.Conv2d(spec.cin, spec.cout, spec.k, spec.stride, spec.padding,
                      groups=spec.groups, bias=spec.bias)]
    if spec.bn:
        mods.append(nn.BatchNorm2d(spec.cout))
    if spec.act:
        mods.append(ACT[spec.act]())
    return nn.Sequential(*mods)


class Shuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class SE(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.reduce = nn.Conv2d(s.channels, s.reduced, 1, bias=s.bias)
        self.expand = nn.Conv2d(s.reduced, s.channels, 1, bias=s.bias)
        self.act = ACT[s.act]()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class Block(nn.Module):
    """``src.ops.Block`` from a :class:`LayerPlan`."""

    def __init__(self, lp):
        super().__init__()
        self.identity, self.residual = lp.identity, lp.residual
        mods = []
        if lp.expand:
            mods.append(conv(lp.expand))
        if lp.shuffle > 1:
            mods.append(Shuffle(lp.shuffle))
        if lp.dw:
            mods.append(conv(lp.dw))
        if lp.se:
            mods.append(SE(lp.se))
        if lp.project:
            mods.append(conv(lp.project))
        self.body = nn.Sequential(*mods)

    def forward(self, x):
        if self.identity:
            return x
        y = self.body(x)
        return y + x if self.residual else y


class _Tail(nn.Module):
    def __init__(self, plan):
        super().__init__()
        self.head = conv(plan.head) if plan.head is not None else nn.Identity()
        self.fc = nn.Linear(plan.fc_in, plan.num_classes)

    def forward(self, x):
        return self.fc(self.head(x).mean((2, 3)))


def torch_net(arch) -> nn.Module:
    """The same network as ``src.childnet.ChildNet``."""
    plan = arch.net_plan()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv(plan.stem)
            self.layers = nn.Sequential(*[Block(lp) for lp in plan.layers])
            self.tail = _Tail(plan)

        def forward(self, x):
            return self.tail(self.layers(self.stem(x)))

    return Net()


class TorchSupernet(nn.Module):
    """``src.supernet.Supernet``: searched layers hold one Block per candidate; the host picks
    the path; ``weights`` (the straight-through one-hot) scales the sampled outputs."""

    def __init__(self, space, searched: list[int], keep: list[int] | None = None):
        super().__init__()
        keep = list(range(len(space.layers))) if keep is None else sorted(keep)
        plan = space.net_plan()
        self.stem = conv(plan.stem)
        self.is_searched = [i in searched for i in keep]
        layers = []
        for i in keep:
            layer = space.layers[i]
            ops = layer.ops if i in searched else layer.ops[:1]
            layers.append(nn.ModuleList([Block(layer.plan(op, space.conventions)) for op in ops]))
        self.layers = nn.ModuleList(layers)
        self.tail = _Tail(plan)

    def forward(self, x, weights, indices):
        x = self.stem(x)
        k = 0
        for cands, searched in zip(self.layers, self.is_searched):
            if searched:
                x = cands[indices[k]](x)
                if weights is not None:
                    x = x * weights[k, indices[k]]
                k += 1
            else:
                x = cands[0](x)
        return self.tail(x)
