"""Derivation: from the learned distributions to one architecture that meets the targets.

The paper fixes the most probable proposal and op per layer. That arg-max can miss the
targets (the paper lands up to 8% off). We take it when it is within tolerance; otherwise the
most probable architecture that is (a beam search over layers on log-probabilities, pruned
with the cost bounds of the layers still to choose), and the report says which one it took.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src.resource import ResourceTable


@dataclass
class Derived:
    choices: list[int]          # candidate index per searched layer
    log_prob: float
    cost: dict[str, float]
    method: str                 # "argmax" | "beam" | "closest"
    within: bool                # every objective within tolerance


def relative_errors(cost: dict[str, float], targets: dict[str, float]) -> dict[str, float]:
    return {k: (cost[k] - t) / t for k, t in targets.items()}


def _within(cost: dict, targets: dict, tol: float) -> bool:
    return all(abs(e) <= tol + 1e-12 for e in relative_errors(cost, targets).values())


def beam_search(log_probs: np.ndarray, table: ResourceTable, targets: dict[str, float],
                tol: float, beam: int = 256) -> tuple[list[int], float] | None:
    """Most probable choice (one op per row of ``log_probs``) whose every objective lies within
    ``tol`` (relative) of its target; None if the beam finds none."""
    objs = list(targets)
    tabs = np.stack([table.table[o] for o in objs])               # (n, L, O)
    lo_t = np.array([targets[o] * (1 - tol) for o in objs])
    hi_t = np.array([targets[o] * (1 + tol) for o in objs])
    base = np.array([table.base[o] for o in objs])
    mins = tabs.min(axis=2)                                        # (n, L)
    maxs = tabs.max(axis=2)
    rest_min = np.concatenate([np.cumsum(mins[:, ::-1], axis=1)[:, ::-1],
                               np.zeros((len(objs), 1))], axis=1)  # cost bounds of layers l..L-1
    rest_max = np.concatenate([np.cumsum(maxs[:, ::-1], axis=1)[:, ::-1],
                               np.zeros((len(objs), 1))], axis=1)
    num_layers, num_ops = log_probs.shape
    # Beam entries: (score, cost vector, choices)
    beams = [(0.0, base.copy(), [])]
    for layer in range(num_layers):
        scores, costs, parents, ops_ = [], [], [], []
        for b, (score, cost, _) in enumerate(beams):
            new_cost = cost[:, None] + tabs[:, layer, :]            # (n, O)
            lo = new_cost + rest_min[:, layer + 1:layer + 2]
            hi = new_cost + rest_max[:, layer + 1:layer + 2]
            ok = np.all((hi >= lo_t[:, None]) & (lo <= hi_t[:, None]), axis=0)
            for o in np.nonzero(ok)[0]:
                scores.append(score + log_probs[layer, o])
                costs.append(new_cost[:, o])
                parents.append(b)
                ops_.append(int(o))
        if not scores:
            return None
        keep = np.argsort(-np.asarray(scores), kind="stable")[:beam]
        beams = [(scores[i], costs[i], beams[parents[i]][2] + [ops_[i]]) for i in keep]
    best = beams[0]
    return best[2], float(best[0])


def derive(log_probs: np.ndarray, table: ResourceTable, targets: dict[str, float], tol: float,
           beam: int = 256) -> Derived:
    """The arg-max architecture if it meets the targets, else the beam's best that does."""
    choices = [int(i) for i in np.argmax(log_probs, axis=1)]
    score = float(sum(log_probs[l, o] for l, o in enumerate(choices)))
    cost = table.cost(np.eye(log_probs.shape[1])[choices])
    if _within(cost, targets, tol):
        return Derived(choices, score, cost, "argmax", True)
    found = beam_search(log_probs, table, targets, tol, beam)
    if found is not None:
        ch, sc = found
        c = table.cost(np.eye(log_probs.shape[1])[ch])
        return Derived(ch, sc, c, "beam", _within(c, targets, tol))
    # Nothing within tolerance (a small space may have no such architecture): the most probable
    # one within the smallest wider band, reported as not within tolerance.
    wider = tol
    for _ in range(8):
        wider *= 2
        found = beam_search(log_probs, table, targets, wider, beam)
        if found is not None:
            ch, sc = found
            c = table.cost(np.eye(log_probs.shape[1])[ch])
            return Derived(ch, sc, c, f"beam (no architecture within ±{tol:.0%}; "
                           f"best within ±{wider:.0%})", False)
    return Derived(choices, score, cost, "argmax (no architecture near the targets)", False)


def derive_from_distributions(pi: np.ndarray | None, probs: np.ndarray, table: ResourceTable,
                              targets: dict[str, float], tol: float,
                              beam: int = 256) -> tuple[Derived, int | None]:
    """Algorithm 1, line 23: the most probable proposal (arg-max of π; stage 1 only: θ) and
    in it the most probable op per layer (``derive``); if that proposal cannot meet the
    targets, the others in the order of π. Returns the derivation and the proposal taken."""
    if pi is None:
        return derive(np.log(probs + 1e-12), table, targets, tol, beam), None
    j = int(np.argmax(pi))
    d = derive(np.log(probs[j] + 1e-12), table, targets, tol, beam)
    if not d.within:
        for jj in np.argsort(-pi):
            dd = derive(np.log(probs[jj] + 1e-12), table, targets, tol, beam)
            if dd.within:
                d, j = dd, int(jj)
                d.method += f" (proposal {j})"
                break
    return d, j


def derive_each_proposal(probs: np.ndarray, table: ResourceTable, targets: dict[str, float],
                         tol: float, beam: int = 256) -> list[Derived]:
    """Each proposal's own derivation (``derive`` on softmax(Θ_j)): the m networks stage 2
    chose among with Π. Retrained, they tell whether Π picked the best of them."""
    return [derive(np.log(p + 1e-12), table, targets, tol, beam) for p in probs]


def ranked_choices(log_probs: np.ndarray, limit: int):
    """Choices in decreasing probability (best-first over a product of per-row orders)."""
    import heapq
    order = np.argsort(-log_probs, axis=1)
    rows = log_probs.shape[0]
    start = (0,) * rows
    score = lambda r: float(sum(log_probs[i, order[i, r[i]]] for i in range(rows)))  # noqa: E731
    heap = [(-score(start), start)]
    seen = {start}
    n = 0
    while heap and n < limit:
        _, ranks = heapq.heappop(heap)
        n += 1
        yield [int(order[i, ranks[i]]) for i in range(rows)]
        for i in range(rows):
            if ranks[i] + 1 < log_probs.shape[1]:
                nxt = ranks[:i] + (ranks[i] + 1,) + ranks[i + 1:]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (-score(nxt), nxt))
