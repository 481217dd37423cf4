"""The random baseline's sampler: architectures drawn uniformly among those that meet the
targets (src/search/random_archs.py), by rejection and by the Metropolis chain."""
import itertools

import numpy as np
import pytest
from scipy.stats import chisquare

from src.errors import HourNASError, ResourceTargetError
from src.resource import count
from src.search.derive import _within
from src.search.random_archs import _problem, sample_feasible
from src.space.space import load_space

DEFAULT = {"params": 150e3, "flops": 20e6}   # config/search/default.yaml
TINY = {"params": 6e3, "flops": 500e3}       # tests/fixtures/tiny_search.yaml


@pytest.fixture(scope="module")
def default_space():
    return load_space("fbnet_cifar10", width_mult=0.25)


@pytest.fixture(scope="module")
def tiny_space():
    return load_space("tests/fixtures/tiny_space.yaml")


def _feasible_set(space, targets, tol, fixed):
    """Every feasible architecture (op index per searchable layer), listed by brute force with
    the table and ``_within`` (the derivation's test)."""
    table = _problem(space, targets, tol, fixed, None).table
    free = [i for i in space.searchable if i not in fixed]
    eye = np.eye(len(space.layers[free[0]].ops))
    out = []
    for ch in itertools.product(range(eye.shape[0]), repeat=len(free)):
        if _within(table.cost(eye[list(ch)]), targets, tol):
            it = iter(ch)
            out.append(tuple(fixed[i] if i in fixed else next(it) for i in space.searchable))
    return out


def _assert_meet(space, drawn, targets, tol):
    for choice, cost in zip(drawn.choices, drawn.costs):
        counted = count(space.arch(choice))  # the one counter, on the built architecture
        assert {k: float(counted[k]) for k in targets} == cost
        assert _within(counted, targets, tol), (choice, counted)


def test_samples_meet_the_targets_are_distinct_and_deterministic(default_space):
    drawn = sample_feasible(default_space, DEFAULT, 0.02, 20, seed=0)
    assert drawn.method == "rejection" and len(drawn.choices) == 20
    _assert_meet(default_space, drawn, DEFAULT, 0.02)
    assert len({tuple(c) for c in drawn.choices}) == 20
    assert drawn.draws % (1 << 16) == 0 and 0 < drawn.acceptance_rate < 0.05
    again = sample_feasible(default_space, DEFAULT, 0.02, 20, seed=0)
    assert again.choices == drawn.choices and again.draws == drawn.draws
    other = sample_feasible(default_space, DEFAULT, 0.02, 20, seed=1)
    assert other.choices != drawn.choices


def test_fixed_layers_are_respected(default_space):
    vital = default_space.vital_layers()
    fixed = {i: (3 * n) % 9 for n, i in enumerate(vital)}
    drawn = sample_feasible(default_space, DEFAULT, 0.02, 10, seed=2, fixed=fixed)
    pos = {i: p for p, i in enumerate(default_space.searchable)}
    for choice in drawn.choices:
        assert all(choice[pos[i]] == o for i, o in fixed.items())
    _assert_meet(default_space, drawn, DEFAULT, 0.02)
    assert len({tuple(c) for c in drawn.choices}) == 10


def test_forced_and_fallback_chain_meet_the_targets(default_space):
    chain = sample_feasible(default_space, DEFAULT, 0.02, 5, seed=0, method="chain")
    assert chain.method == "chain" and chain.chain_steps > 0 and chain.chain_accepted > 0
    _assert_meet(default_space, chain, DEFAULT, 0.02)
    assert len({tuple(c) for c in chain.choices}) == 5
    # rejection's budget too small to find any: the chain starts from the beam search
    fallback = sample_feasible(default_space, DEFAULT, 0.02, 3, seed=0, batch=16, max_draws=16)
    assert fallback.method == "chain" and fallback.draws == 16
    _assert_meet(default_space, fallback, DEFAULT, 0.02)
    assert sample_feasible(default_space, DEFAULT, 0.02, 3, seed=0, batch=16,
                           max_draws=16).choices == fallback.choices


def test_rejection_is_uniform_over_the_feasible_set(tiny_space):
    feasible = _feasible_set(tiny_space, TINY, 0.05, {})
    assert len(feasible) == 593
    drawn = sample_feasible(tiny_space, TINY, 0.05, 20 * len(feasible), seed=0, distinct=False)
    index = {f: n for n, f in enumerate(feasible)}
    counts = np.bincount([index[tuple(c)] for c in drawn.choices], minlength=len(feasible))
    assert chisquare(counts).pvalue > 1e-3


def test_chain_is_uniform_over_the_feasible_set(tiny_space):
    """The vital layers fixed, ±10%: 164 feasible architectures that one-layer moves split
    into 17 unconnected groups; the chain's multi-layer moves join them."""
    vital = tiny_space.vital_layers()
    fixed = {vital[0]: 0, vital[1]: 0}
    feasible = _feasible_set(tiny_space, TINY, 0.1, fixed)
    assert len(feasible) == 164 and _groups_by_one_layer_moves(feasible) == 17
    drawn = sample_feasible(tiny_space, TINY, 0.1, 1000, seed=0, fixed=fixed, distinct=False,
                            method="chain")
    assert drawn.method == "chain"
    index = {f: n for n, f in enumerate(feasible)}
    counts = np.bincount([index[tuple(c)] for c in drawn.choices], minlength=len(feasible))
    assert chisquare(counts).pvalue > 1e-3


def _groups_by_one_layer_moves(archs) -> int:
    left, groups = set(archs), 0
    while left:
        stack, groups = [left.pop()], groups + 1
        while stack:
            a = stack.pop()
            near = {b for b in left if sum(x != y for x, y in zip(a, b)) == 1}
            left -= near
            stack.extend(near)
    return groups


def test_infeasible_targets_raise_with_the_range(tiny_space):
    with pytest.raises(ResourceTargetError, match=r"target params 1.00K \(±5%\) is below the "
                       r"minimum of space 'tiny': reachable params 1.99K .. 11.43K, flops"):
        sample_feasible(tiny_space, {"params": 1e3, "flops": 500e3}, 0.05, 1, seed=0)
    # each target within its range, but no architecture meets both
    with pytest.raises(ResourceTargetError, match=r"no architecture of space 'tiny' lies "
                       r"within ±2% of every target .* reachable params 1.99K .. 11.43K"):
        sample_feasible(tiny_space, {"params": 11e3, "flops": 150e3}, 0.02, 1, seed=0,
                        max_draws=1 << 16)
    vital = tiny_space.vital_layers()
    with pytest.raises(ResourceTargetError, match=r"with L4=k3_e3, L7=k3_e3 fixed: reachable "
                       r"params 4.91K"):
        sample_feasible(tiny_space, {"params": 3e3, "flops": 500e3}, 0.05, 1, seed=0,
                        fixed={vital[0]: 1, vital[1]: 1})


def test_too_few_and_bad_arguments(tiny_space):
    vital = tiny_space.vital_layers()
    fixed = {vital[0]: 0, vital[1]: 0}
    with pytest.raises(ResourceTargetError, match=r"found only 30 distinct architecture"):
        sample_feasible(tiny_space, TINY, 0.05, 31, seed=0, fixed=fixed, method="rejection")
    with pytest.raises(HourNASError, match=r"only 1024"):
        sample_feasible(tiny_space, TINY, 0.05, 2000, seed=0, fixed=fixed)
    with pytest.raises(HourNASError, match=r"must be >= 1, got 0"):
        sample_feasible(tiny_space, TINY, 0.05, 0, seed=0)
    with pytest.raises(HourNASError, match=r"not a searchable layer"):
        sample_feasible(tiny_space, TINY, 0.05, 1, seed=0, fixed={99: 0})
    with pytest.raises(HourNASError, match=r"op index 7 of layer L4 is out of range"):
        sample_feasible(tiny_space, TINY, 0.05, 1, seed=0, fixed={vital[0]: 7})


def test_search_params_validate_the_strategy_keys():
    from src.search.config import SearchParams
    SearchParams(strategy="random", num_archs=1, random_fix_vital="runs/x/arch.yaml").validate()
    for kwargs, text in (({"strategy": "grid"}, "unknown search.strategy 'grid'"),
                         ({"num_archs": 0}, "search.num_archs (--num_archs) must be >= 1"),
                         ({"random_fix_vital": " "}, "search.random_fix_vital must be")):
        with pytest.raises(HourNASError, match=text.replace("(", r"\(").replace(")", r"\)")):
            SearchParams(**kwargs).validate()
