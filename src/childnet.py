"""A standalone network built from an architecture record (train, eval, export)."""
from __future__ import annotations

import mindspore.nn as nn

from src.ops import Block, Classifier, ConvBNAct
from src.space.space import Arch


class ChildNet(nn.Cell):
    """stem -> layers -> head -> classifier, exactly as :func:`src.resource.profile` counts."""

    def __init__(self, arch: Arch):
        super().__init__()
        plan = arch.net_plan()
        self.arch_name = arch.name
        self.stem = ConvBNAct(plan.stem)
        self.layers = nn.CellList([Block(p) for p in plan.layers])
        self.head = ConvBNAct(plan.head) if plan.head is not None else None
        self.classifier = Classifier(plan.fc_in, plan.num_classes, arch.dropout)

    def features(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        if self.head is not None:
            x = self.head(x)
        return x

    def construct(self, x):
        return self.classifier(self.features(x))


def trainable_size(cell: nn.Cell) -> int:
    """Number of trainable parameter elements of a Cell."""
    return int(sum(p.size for p in cell.trainable_params()))
