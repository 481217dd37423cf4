"""Supernet Cells: searchable layers hold their candidate ops, fixed layers are plain blocks.

A supernet is built for a subset of a space's layers:

* stage 1 (``S_vital``): only the vital layers; the non-vital (residual) layers are removed;
* stage 2: every layer; vital layers fixed to the ops stage 1 chose, non-vital ones searched;
* the single-stage ablation (``--no-vital-priori``): every searchable layer searched.

Three ways to run a searchable layer, one per executor (see ``src/search/step.py``):

* ``eager``: the op index is a Python int sampled on the host; only that candidate runs and its
  output is scaled by the straight-through weight ``A[l, idx]`` (1 forward, gradient to θ);
* ``graph``: the same inside one jitted step, the branch picked by a Tensor index
  (MindSpore's switch_layer);
* ``all-path``: every candidate runs, outputs summed with Gumbel-softmax weights (FBNet).
"""
from __future__ import annotations

import mindspore.nn as nn

from src.ops import Block, Classifier, ConvBNAct
from src.space.space import Space


class MixedLayer(nn.Cell):
    """A searchable layer: one Block per candidate op."""

    def __init__(self, space: Space, index: int):
        super().__init__()
        layer = space.layers[index]
        self.index = index
        self.candidates = nn.CellList([Block(layer.plan(op, space.conventions))
                                       for op in layer.ops])

    def construct(self, x, weights, idx):
        """Graph executor: ``idx`` is a Tensor, so the branch is switch_layer."""
        return self.candidates[idx](x) * weights[idx]


class Supernet(nn.Cell):
    """stem -> layers (searchable: MixedLayer, fixed: Block) -> head -> classifier.

    ``searched`` lists the space-layer indices that are searched; ``fixed`` maps the other
    searchable layers to their chosen candidate; ``keep`` lists the layers present (stage 1
    drops the non-vital ones). Layer Cells are named by their space index (``L{i}``) so
    weights carry over between stages by name.
    """

    def __init__(self, space: Space, searched: list[int], fixed: dict[int, int] | None = None,
                 keep: list[int] | None = None):
        super().__init__()
        fixed = dict(fixed or {})
        keep = list(range(len(space.layers))) if keep is None else sorted(keep)
        self.space_name = space.name
        self.searched = [i for i in keep if i in searched]
        self.keep = keep
        plan = space.net_plan()
        self.stem = ConvBNAct(plan.stem)
        cells = []
        for i in keep:
            layer = space.layers[i]
            if i in searched:
                cells.append(MixedLayer(space, i))
            else:
                op = layer.ops[fixed.get(i, 0)]
                cells.append(Block(layer.plan(op, space.conventions)))
        self.layers = nn.CellList(cells)
        self.is_searched = [i in searched for i in keep]
        self.head = ConvBNAct(plan.head) if plan.head is not None else None
        self.classifier = Classifier(plan.fc_in, plan.num_classes, 0.0)

    def _tail(self, x):
        if self.head is not None:
            x = self.head(x)
        return self.classifier(x)

    def forward_path(self, x, weights, indices: list[int]):
        """Eager single path: ``indices[k]`` (host ints) picks the op of searched layer k;
        ``weights`` is the (L, O) straight-through one-hot tensor."""
        x = self.stem(x)
        k = 0
        for cell, searched in zip(self.layers, self.is_searched):
            if searched:
                o = int(indices[k])
                x = cell.candidates[o](x) * weights[k, o]
                k += 1
            else:
                x = cell(x)
        return self._tail(x)

    def forward_all(self, x, weights):
        """All paths: every candidate runs, summed with weights (FBNet's Gumbel-softmax)."""
        x = self.stem(x)
        k = 0
        for cell, searched in zip(self.layers, self.is_searched):
            if searched:
                out = None
                for o, cand in enumerate(cell.candidates):
                    y = cand(x) * weights[k, o]
                    out = y if out is None else out + y
                x = out
                k += 1
            else:
                x = cell(x)
        return self._tail(x)

    def construct(self, x, weights, idx):
        """Graph single path: ``idx`` is an int32 Tensor (one index per searched layer)."""
        x = self.stem(x)
        k = 0
        for cell, searched in zip(self.layers, self.is_searched):
            if searched:
                x = cell(x, weights[k], idx[k])
                k += 1
            else:
                x = cell(x)
        return self._tail(x)

    def candidate_params(self) -> list[list[list]]:
        """For each searched layer, for each candidate: its trainable Parameters."""
        out = []
        for cell, searched in zip(self.layers, self.is_searched):
            if searched:
                out.append([list(c.trainable_params()) for c in cell.candidates])
        return out

    def shared_params(self) -> list:
        """Trainable parameters that every path uses (stem, fixed layers, head, classifier)."""
        owned = {id(p) for layer in self.candidate_params() for cand in layer for p in cand}
        return [p for p in self.trainable_params() if id(p) not in owned]
