"""Supernet Cells: searchable layers hold their candidate ops, fixed layers are plain blocks.

A supernet is built for a subset of a space's layers:

* stage 1 (``S_vital``): only the vital layers; the non-vital (residual) layers are removed;
* stage 2: every layer; vital layers fixed to the ops stage 1 chose, non-vital ones searched;
* the single-stage ablation (``--no-vital-priori``): every searchable layer searched.

Two ways to run a searchable layer (the executors are in ``src/search/step.py``):

* single path (``eager`` and ``graph``): the op index is a Python int sampled on the host; only
  that candidate runs and its output is scaled by the straight-through weight ``A[l, idx]``
  (1 forward, gradient to θ). ``graph`` runs the same path with every Block compiled
  (``compile_blocks``): the host still picks which compiled candidate to call;
* all paths (``allpath``): every candidate runs, outputs summed with Gumbel-softmax weights
  (FBNet).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
import mindspore.nn as nn

from src.ops import Block, Classifier, ConvBNAct
from src.space.space import Space


def _zero_init_residual(block: Block) -> None:
    """A residual candidate starts as the identity: its last BatchNorm's gamma is 0 (the
    zero-init of residual branches, Goyal et al. 2017; torchvision's ``zero_init_residual``).

    With one candidate sampled per layer and step, a residual branch at full strength from the
    start adds a different random map at every layer and step and the supernet does not learn
    in a few hundred steps (measured, docs/search_engine.md); zeroed, the supernet starts as its
    fixed backbone and each candidate grows its branch as it is trained. Only the supernet
    does this: derived networks are retrained with the usual initialisation.
    """
    if block.residual and block.project is not None and block.project.bn is not None:
        gamma = block.project.bn.gamma
        gamma.set_data(ms.Tensor(np.zeros(gamma.shape, np.float32)))


class MixedLayer(nn.Cell):
    """A searchable layer: one Block per candidate op (``Supernet.forward_path`` calls the
    sampled one, ``forward_all`` every one)."""

    def __init__(self, space: Space, index: int):
        super().__init__()
        layer = space.layers[index]
        self.index = index
        self.candidates = nn.CellList([Block(layer.plan(op, space.conventions))
                                       for op in layer.ops])


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
        for cell, is_searched in zip(cells, self.is_searched):
            for block in (cell.candidates if is_searched else [cell]):
                _zero_init_residual(block)
        self.head = ConvBNAct(plan.head) if plan.head is not None else None
        self.classifier = Classifier(plan.fc_in, plan.num_classes, 0.0)

    def _tail(self, x):
        if self.head is not None:
            x = self.head(x)
        return self.classifier(x)

    def forward_path(self, x, weights, indices: list[int]):
        """Single path: ``indices[k]`` (host ints) picks the op of searched layer k;
        ``weights`` is the (L, O) straight-through one-hot tensor (None: outputs unscaled,
        what the weight step uses: the one-hot's 1 changes no bit)."""
        x = self.stem(x)
        k = 0
        for cell, searched in zip(self.layers, self.is_searched):
            if searched:
                o = int(indices[k])
                x = cell.candidates[o](x)
                if weights is not None:
                    x = x * weights[k, o]
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

    def construct(self, x, weights, indices: list[int]):
        return self.forward_path(x, weights, indices)

    def compile_blocks(self) -> int:
        """Compile every Block (candidates and fixed layers), the stem, the head and the
        classifier, each on its first call (``ms.jit`` on the instance's ``construct``; an
        identity candidate has nothing to compile). The path is still chosen on the host, so
        no graph holds a branch. Returns how many Cells were set to compile."""
        cells = [self.stem, self.classifier] + ([self.head] if self.head is not None else [])
        for cell, searched in zip(self.layers, self.is_searched):
            cells.extend(cell.candidates if searched else [cell])
        n = 0
        for cell in cells:
            if getattr(cell, "identity", False) or getattr(cell, "_compiled", False):
                continue
            cell.construct = ms.jit(cell.construct)
            cell._compiled = True
            n += 1
        return n

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
