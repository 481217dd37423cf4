"""The one resource counter: parameters and FLOPs per layer x candidate op and per network.

Convention (the papers'): FLOPs are multiply-adds of convolutions and fully-connected layers
for one image at the space's input size; conv = k*k*(C_in/groups)*C_out*H_out*W_out, FC =
C_in*C_out. BatchNorm, activations, biases, residual adds, pooling and the SE scaling multiply
are not counted; the two 1x1 convs of SE *are* counted (they are convs, on a 1x1 map).
Params are trainable parameters: conv/FC weights, biases, BN gamma and beta (not the running
statistics). Everything is computed from the same layer plans the Cell builder uses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src.errors import HourNASError
from src.space.plan import LayerPlan, NetPlan
from src.space.space import Arch, Network, Space

OBJECTIVES = ("params", "flops")


@dataclass
class Row:
    """One row of a network's profile."""

    name: str
    op: str
    c_in: int
    c_out: int
    stride: int
    h_out: int
    params: int
    flops: int
    vital: bool


def _fixed_rows(net: Network, plan: NetPlan) -> tuple[list[Row], list[Row]]:
    stem, head = plan.stem, plan.head
    before = [Row("stem", f"conv{stem.k}x{stem.k}", stem.cin, stem.cout, stem.stride,
                  stem.h_out, stem.params, stem.flops, True)]
    after = []
    if head is not None:
        after.append(Row("head", "conv1x1", head.cin, head.cout, 1, head.h_out, head.params,
                         head.flops, True))
    after.append(Row("classifier", "fc", plan.fc_in, plan.num_classes, 1, 1, plan.fc_params,
                     plan.fc_flops, True))
    return before, after


def profile(arch: Arch) -> list[Row]:
    """Per-block rows of a network: stem, every layer, head, classifier."""
    plan = arch.net_plan()
    before, after = _fixed_rows(arch, plan)
    rows = []
    for layer, lp, vital in zip(arch.layers, plan.layers, arch.vital):
        rows.append(Row(layer.label, lp.op.name, lp.c_in, lp.c_out, lp.stride, lp.h_out,
                        lp.params, lp.flops, vital))
    return before + rows + after


def count(arch: Arch) -> dict[str, int]:
    """Whole-network totals: {'params': int, 'flops': int}."""
    rows = profile(arch)
    return {"params": sum(r.params for r in rows), "flops": sum(r.flops for r in rows)}


def plan_cost(plan: LayerPlan, objective: str) -> int:
    if objective == "params":
        return plan.params
    if objective == "flops":
        return plan.flops
    raise HourNASError(f"unknown objective '{objective}'; valid: {', '.join(OBJECTIVES)}")


@dataclass
class ResourceTable:
    """Cost of every candidate op at every layer of ``layers``, plus the cost of the rest.

    ``table[obj]`` has shape (len(layers), num_ops); ``base[obj]`` is the cost of everything
    outside ``layers`` (stem, head, classifier, and the other layers at their ``fixed`` op).
    The cost of an architecture A (one-hot or soft, shape like the table) is
    ``base + sum(A * table)`` -- the paper's R(A) = sum(A ⊙ F).
    """

    layers: list[int]
    objectives: tuple[str, ...]
    table: dict[str, np.ndarray]
    base: dict[str, float]

    def cost(self, weights: np.ndarray) -> dict[str, float]:
        return {o: float(self.base[o] + (weights * self.table[o]).sum()) for o in self.objectives}

    def bounds(self) -> dict[str, tuple[float, float]]:
        """Smallest and largest value each objective can reach over these layers."""
        return {o: (self.base[o] + float(self.table[o].min(axis=1).sum()),
                    self.base[o] + float(self.table[o].max(axis=1).sum()))
                for o in self.objectives}


def resource_table(space: Space, layers: list[int] | None = None,
                   fixed: dict[int, int] | None = None,
                   objectives: tuple[str, ...] = OBJECTIVES,
                   extra_tables: dict[str, np.ndarray] | None = None) -> ResourceTable:
    """Per-layer x per-op table over ``layers`` (default: all searchable layers).

    ``fixed`` gives the chosen candidate index of layers outside ``layers`` that are
    searchable (e.g. the vital layers fixed by stage 1); it must cover all of them.
    ``extra_tables`` adds objectives measured elsewhere (e.g. latency), as full
    (num_layers, num_ops) arrays over every layer of the space, fixed ones at index 0.
    """
    layers = list(space.searchable if layers is None else layers)
    fixed = dict(fixed or {})
    missing = [space.layers[i].label for i in space.searchable
               if i not in layers and i not in fixed]
    if missing:
        raise HourNASError(f"layers {', '.join(missing)} are neither searched nor fixed")
    num_ops = {len(space.layers[i].ops) for i in layers}
    if len(num_ops) > 1:
        raise HourNASError("searched layers must share the number of candidate ops")
    conv = space.conventions
    plan = space.net_plan()
    before, after = _fixed_rows(space, plan)
    fixed_plans = {}
    for i, layer in enumerate(space.layers):
        if i in layers:
            continue
        fixed_plans[i] = layer.plan(layer.ops[fixed.get(i, 0)], conv)
    table, base = {}, {}
    for obj in objectives:
        if extra_tables and obj in extra_tables:
            full = np.asarray(extra_tables[obj], dtype=np.float64)
            table[obj] = full[layers]
            base[obj] = float(sum(full[i, fixed.get(i, 0)] for i in fixed_plans))
            continue
        table[obj] = np.array([[plan_cost(space.layers[i].plan(op, conv), obj)
                                for op in space.layers[i].ops] for i in layers], dtype=np.float64)
        fixed_rows = sum(getattr(r, obj) for r in before + after)
        base[obj] = float(fixed_rows + sum(plan_cost(p, obj) for p in fixed_plans.values()))
    return ResourceTable(layers=layers, objectives=tuple(objectives), table=table, base=base)
