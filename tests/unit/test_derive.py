"""Derivation: arg-max when it meets the targets, else the most probable architecture that does."""
import itertools

import numpy as np

from src.resource import resource_table
from src.search.derive import beam_search, derive
from src.space.space import load_space


def _toy():
    space = load_space("fbnet_cifar10", width_mult=0.25)
    layers = space.searchable[:5]
    fixed = {i: 0 for i in space.searchable[5:]}
    return resource_table(space, layers=layers, fixed=fixed)


def test_argmax_taken_when_within():
    table = _toy()
    rng = np.random.default_rng(0)
    logp = np.log(rng.dirichlet(np.ones(9), size=5))
    choices = list(np.argmax(logp, axis=1))
    cost = table.cost(np.eye(9)[choices])
    d = derive(logp, table, cost, tol=0.02)
    assert d.method == "argmax" and d.within and d.choices == choices


def test_beam_finds_most_probable_feasible_exactly():
    table = _toy()
    rng = np.random.default_rng(1)
    logp = np.log(rng.dirichlet(np.ones(9), size=5))
    lo, hi = table.bounds()["flops"]
    lo_p, hi_p = table.bounds()["params"]
    targets = {"flops": lo + 0.6 * (hi - lo), "params": lo_p + 0.6 * (hi_p - lo_p)}
    tol = 0.05
    # brute force over 9^5 architectures
    best, best_score = None, -np.inf
    eye = np.eye(9)
    for ch in itertools.product(range(9), repeat=5):
        c = table.cost(eye[list(ch)])
        if all(abs(c[k] - t) / t <= tol for k, t in targets.items()):
            s = sum(logp[i, o] for i, o in enumerate(ch))
            if s > best_score:
                best, best_score = list(ch), s
    found = beam_search(logp, table, targets, tol, beam=9 ** 4)
    assert found is not None and found[0] == best
    d = derive(logp, table, targets, tol, beam=512)
    assert d.within
    for k, t in targets.items():
        assert abs(d.cost[k] - t) / t <= tol


def test_infeasible_targets_give_none():
    table = _toy()
    logp = np.zeros((5, 9))
    hi = table.bounds()["flops"][1]
    assert beam_search(logp, table, {"flops": hi * 1.5}, 0.02) is None
