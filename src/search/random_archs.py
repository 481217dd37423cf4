"""Random architectures that meet the targets: the baseline a NAS result is compared with.

The standard test of a NAS method is to compare its architecture with architectures drawn at
random among those of the same size. ``sample_feasible`` draws k distinct architectures
uniformly at random from the feasible set

    F = {A : |R_i(A) - T_i| / T_i <= tol for every objective i with a target T_i}

(the test of ``src.search.derive._within``), with R_i from the one counter
(``src.resource.resource_table``: params, FLOPs, and latency when a table is given).

- **Rejection** (the default): uniform architectures of the space in batches of 2^16
  (vectorised numpy, one seeded ``np.random.default_rng``), the feasible ones kept in draw
  order, the first k distinct taken. A feasible uniform draw is uniform over F, so the k are a
  uniformly random k-subset of F. Exact, and cheap while F is not too rare.
- **Chain** (when fewer than k are found in ``max_draws`` draws, or forced): a Metropolis
  chain over F. Its proposal sets r uniformly chosen layers to uniformly chosen ops, r = 1 with
  probability 1/2, 2 with 1/4, ... (and r = L, a fresh uniform architecture, with the rest); it
  is symmetric, so accepting iff the proposed architecture is feasible leaves the uniform
  distribution over F stationary, and the r = L move makes it the only one. It starts from a
  feasible architecture found by rejection (else the beam search of ``src.search.derive`` over
  uniform, then random, log-probabilities), burns in until it has moved 10 times per drawn layer and
  thins by as many steps. Samples are exactly uniform only in the limit (the report names the
  method and the chain's acceptance).

``fixed`` ({layer index: op index}) holds some searchable layers at an op (e.g. the vital ops a
search fixed), so the draws differ from it only in the other layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from src.errors import HourNASError, ResourceTargetError
from src.resource import ResourceTable, resource_table
from src.search.derive import _within, beam_search

BATCH = 1 << 16        # uniform draws per rejection batch
MAX_DRAWS = 1 << 22    # rejection's budget (4,194,304 draws) before the chain takes over
CHAIN_STEPS_PER_LAYER = 10  # burn-in and thinning: moves per drawn layer
BEAM_TRIES = 8         # beam searches over random log-probabilities for the chain's start
METHODS = ("auto", "rejection", "chain")


@dataclass
class RandomArchs:
    """k architectures drawn uniformly from the feasible set, and how they were drawn."""

    choices: list[list[int]]        # op index per searchable layer (fixed ones included)
    costs: list[dict[str, float]]   # the table's cost of each
    method: str                     # "rejection" | "chain"
    draws: int                      # uniform architectures drawn by rejection
    feasible_draws: int             # of them within every target (repeats included)
    chain_steps: int = 0            # Metropolis steps (0: no chain)
    chain_accepted: int = 0         # of them moved (the proposal was feasible)

    @property
    def acceptance_rate(self) -> float:
        """The feasible fraction of uniform draws: an estimate of |F| / |space|."""
        return self.feasible_draws / self.draws if self.draws else 0.0

    def report(self) -> dict:
        out = {"method": self.method, "draws": self.draws, "feasible_draws": self.feasible_draws,
               "acceptance_rate": self.acceptance_rate}
        if self.method == "chain":
            out["chain"] = {"steps": self.chain_steps, "accepted": self.chain_accepted,
                            "acceptance_rate": self.chain_accepted / max(self.chain_steps, 1)}
        return out


@dataclass
class _Problem:
    """The drawn layers' cost arrays and the targets, stacked over the objectives."""

    space: object
    table: ResourceTable           # over the drawn layers, the fixed ones in its base
    fixed: dict[int, int]
    tabs: np.ndarray               # (n, L, O)
    base: np.ndarray               # (n,)
    targets: np.ndarray            # (n,)
    tol: float

    @property
    def num_layers(self) -> int:
        return self.tabs.shape[1]

    @property
    def num_ops(self) -> int:
        return self.tabs.shape[2]

    def costs(self, draws: np.ndarray) -> np.ndarray:
        """(B, n) cost of each row of ``draws`` (B, L): base + the chosen ops' costs."""
        picked = self.tabs[:, np.arange(self.num_layers), draws]        # (n, B, L)
        return (picked.sum(axis=-1) + self.base[:, None]).T

    def feasible(self, draws: np.ndarray) -> np.ndarray:
        """Which rows meet every target: ``_within``'s test, vectorised."""
        err = np.abs((self.costs(draws) - self.targets) / self.targets)
        return np.all(err <= self.tol + 1e-12, axis=1)

    def full(self, choice) -> list[int]:
        """Op index per searchable layer: the drawn ones and the fixed ones."""
        it = iter(int(c) for c in choice)
        return [self.fixed[i] if i in self.fixed else next(it) for i in self.space.searchable]


def sample_feasible(space, targets: dict[str, float], tolerance: float, k: int, seed: int,
                    fixed: dict[int, int] | None = None, *, extra_tables: dict | None = None,
                    distinct: bool = True, method: str = "auto", batch: int = BATCH,
                    max_draws: int = MAX_DRAWS) -> RandomArchs:
    """k architectures of ``space`` drawn uniformly from those within ``tolerance`` (relative)
    of every target, distinct unless ``distinct=False`` (then k independent uniform draws with
    repeats: what a test of uniformity needs). Deterministic for ``seed``. ``method``: auto
    (rejection, the chain if rejection finds too few), rejection, or chain (forced)."""
    if k < 1:
        raise HourNASError(f"the number of architectures must be >= 1, got {k}")
    if method not in METHODS:
        raise HourNASError(f"unknown sampling method '{method}'; valid: {', '.join(METHODS)}")
    prob = _problem(space, targets, tolerance, fixed, extra_tables)
    _check_reachable(prob, targets)
    total = prob.num_ops ** prob.num_layers
    if distinct and k > total:
        raise HourNASError(f"asked for {k} distinct architectures, but with the fixed layers "
                           f"the space holds only {total}")
    rng = np.random.default_rng(seed)
    want = 1 if method == "chain" else k
    found, draws, hits = _rejection(prob, rng, want, distinct, batch, max_draws)
    if method != "chain" and len(found) >= k:
        return _result(prob, found[:k], "rejection", draws, hits)
    if method == "rejection":
        raise _too_few(prob, len(found), k, f"{draws:,} random draws")
    start = found[0] if found else _beam_start(prob, rng)
    if start is None:
        raise _none_feasible(prob, targets, draws)
    chosen, steps, moved = _chain(prob, rng, start, k, distinct)
    if len(chosen) < k:
        raise _too_few(prob, len(chosen), k,
                       f"{draws:,} random draws and {steps:,} chain steps")
    return _result(prob, chosen, "chain", draws, hits, steps, moved)


def _problem(space, targets: dict[str, float], tol: float, fixed: dict[int, int] | None,
             extra_tables: dict | None) -> _Problem:
    """The resource table over the drawn layers (``fixed`` ones in its base), checked."""
    fixed = {int(i): int(o) for i, o in (fixed or {}).items()}
    for i, o in fixed.items():
        if i not in space.searchable:
            raise HourNASError(f"fixed layer index {i} is not a searchable layer of space "
                               f"'{space.name}' (searchable: {space.searchable})")
        if not 0 <= o < len(space.layers[i].ops):
            raise HourNASError(f"fixed op index {o} of layer {space.layers[i].label} is out of "
                               f"range (0..{len(space.layers[i].ops) - 1})")
    if not tol > 0:
        raise HourNASError(f"the tolerance must be > 0 (e.g. 0.02 for ±2%), got {tol}")
    if not targets:
        raise HourNASError("no resource targets given; e.g. params: 150K, flops: 20M")
    free = [i for i in space.searchable if i not in fixed]
    objectives = tuple(targets)
    table = resource_table(space, layers=free, fixed=fixed, objectives=objectives,
                           extra_tables=extra_tables)
    num_ops = len(space.layers[free[0]].ops) if free else 1
    tabs = np.stack([np.asarray(table.table[o], np.float64).reshape(len(free), num_ops)
                     for o in objectives])
    table.table = dict(zip(objectives, tabs))  # (0, 1) when every layer is fixed
    return _Problem(space, table, fixed, tabs, np.array([table.base[o] for o in objectives]),
                    np.array([float(targets[o]) for o in objectives]), float(tol))


def _rejection(prob: _Problem, rng: np.random.Generator, k: int, distinct: bool, batch: int,
               max_draws: int) -> tuple[list[tuple], int, int]:
    """Uniform draws in batches until k feasible (distinct ones if ``distinct``) or
    ``max_draws``. Returns them in draw order, the draws made and the feasible draws."""
    found: list[tuple] = []
    seen: set[tuple] = set()
    draws = hits = 0
    while len(found) < k and draws < max_draws:
        n = min(batch, max_draws - draws)
        x = rng.integers(0, prob.num_ops, size=(n, prob.num_layers))
        ok = np.nonzero(prob.feasible(x))[0]
        draws += n
        hits += len(ok)
        for row in x[ok]:
            key = tuple(int(v) for v in row)
            if distinct and key in seen:
                continue
            seen.add(key)
            found.append(key)
            if len(found) == k:
                break
    return found, draws, hits


def _beam_start(prob: _Problem, rng: np.random.Generator) -> tuple | None:
    """A feasible architecture for the chain to start from when rejection found none: the
    beam search of the derivation, over uniform log-probabilities, then (its ties keep one
    corner of the space, which often misses a joint target) over up to ``BEAM_TRIES`` random
    ones (Gumbel noise: a different corner each)."""
    if prob.num_layers == 0:
        return None  # the one architecture there is was drawn and is not feasible
    shape = (prob.num_layers, prob.num_ops)
    targets = dict(zip(prob.table.objectives, prob.targets))
    for log_probs in [np.zeros(shape)] + [rng.gumbel(size=shape) for _ in range(BEAM_TRIES)]:
        found = beam_search(log_probs, prob.table, targets, prob.tol)
        if found is not None and prob.feasible(np.array([found[0]]))[0]:
            return tuple(found[0])
    return None


def _chain(prob: _Problem, rng: np.random.Generator, start: tuple, k: int,
           distinct: bool) -> tuple[list[tuple], int, int]:
    """Metropolis over the feasible set from ``start``, accepting a proposal iff it is
    feasible. The burn-in runs until the chain has moved 10 times per layer (at least 10 steps
    per layer, at most 1000); then every ``thin``-th state is taken, ``thin`` = the burn-in's
    length, so that samples lie about as many moves apart however rarely proposals are
    accepted (a repeat is skipped if ``distinct``). Returns the states taken, the steps made
    and the steps that moved."""
    num_layers = prob.num_layers
    need, most = CHAIN_STEPS_PER_LAYER * num_layers, 100 * CHAIN_STEPS_PER_LAYER * num_layers
    state = np.array(start, dtype=np.int64)
    taken: list[tuple] = []
    seen: set[tuple] = set()
    steps = moved = 0
    burn = thin = max_steps = None
    while num_layers and (burn is None or (len(taken) < k and steps < max_steps)):
        for layers, ops in _proposals(rng, num_layers, prob.num_ops, 4096):
            steps += 1
            new = state.copy()
            new[layers] = ops
            if (new != state).any() and prob.feasible(new[None])[0]:
                state, moved = new, moved + 1
            if burn is None:
                if steps >= need and moved >= need or steps >= most:
                    burn = thin = steps
                    max_steps = burn + 50 * k * thin
            elif (steps - burn) % thin == 0:
                key = tuple(int(v) for v in state)
                if not (distinct and key in seen):
                    seen.add(key)
                    taken.append(key)
                if len(taken) == k or steps >= max_steps:
                    break
    return taken, steps, moved


def _proposals(rng: np.random.Generator, num_layers: int, num_ops: int, n: int):
    """n proposals (layers, ops): r = min(Geometric(1/2), L) distinct layers drawn uniformly,
    each set to a uniformly drawn op. The proposal is symmetric (its probability depends only
    on which layers differ), so the chain's stationary law is uniform over the feasible set.
    Why not one layer only: at tight targets one-layer moves leave most feasible architectures
    isolated (tiny_space at ±5%, vital ops fixed: 30 of 30), where two-layer moves trade one
    layer's cost against another's and join them; r = L (a fresh uniform architecture, the
    rejection draw) makes the chain irreducible over any feasible set."""
    r = np.minimum(rng.geometric(0.5, size=n), num_layers)
    order = np.argsort(rng.random((n, num_layers)), axis=1)   # a uniform permutation per row
    ops = rng.integers(0, num_ops, size=(n, num_layers))
    for i in range(n):
        yield order[i, :r[i]], ops[i, :r[i]]


def _result(prob: _Problem, chosen: list[tuple], method: str, draws: int, hits: int,
            steps: int = 0, moved: int = 0) -> RandomArchs:
    """The record of the draw; every architecture re-checked with ``_within`` itself."""
    eye = np.eye(prob.num_ops)
    targets = dict(zip(prob.table.objectives, prob.targets))
    choices, costs = [], []
    for choice in chosen:
        cost = prob.table.cost(eye[list(choice)].reshape(prob.num_layers, prob.num_ops))
        if not _within(cost, targets, prob.tol):
            raise AssertionError(f"drawn architecture {choice} misses the targets: {cost}")
        choices.append(prob.full(choice))
        costs.append(cost)
    return RandomArchs(choices, costs, method, draws, hits, steps, moved)


def _where(prob: _Problem) -> str:
    """'space 'x'' and, with fixed layers, which ops are fixed."""
    where = f"space '{prob.space.name}'"
    if prob.fixed:
        where += " with " + ", ".join(f"{prob.space.layers[i].label}="
                                      f"{prob.space.layers[i].ops[o].name}"
                                      for i, o in sorted(prob.fixed.items())) + " fixed"
    return where


def _fmt(objective: str, value: float) -> str:
    from src.proposal import format_objective  # (imports MindSpore: only for an error)
    return format_objective(objective, value)


def _reachable(prob: _Problem) -> str:
    return ", ".join(f"{o} {_fmt(o, lo)} .. {_fmt(o, hi)}"
                     for o, (lo, hi) in prob.table.bounds().items())


def _check_reachable(prob: _Problem, targets: dict[str, float]) -> None:
    """Raise when a target's band lies outside its objective's range (no draw needed)."""
    for o, (lo, hi) in prob.table.bounds().items():
        t = float(targets[o])
        if not math.isfinite(t) or t <= 0:
            raise ResourceTargetError(f"target {o} {t} must be a positive number "
                                      f"(reachable in {_where(prob)}: {_reachable(prob)})")
        side = ("below the minimum" if t * (1 + prob.tol) < lo - 1e-9 else
                "above the maximum" if t * (1 - prob.tol) > hi + 1e-9 else None)
        if side:
            raise ResourceTargetError(
                f"target {o} {_fmt(o, t)} (±{prob.tol * 100:g}%) is {side} of "
                f"{_where(prob)}: reachable {_reachable(prob)}")


def _none_feasible(prob: _Problem, targets: dict[str, float], draws: int) -> HourNASError:
    want = ", ".join(f"{o} {_fmt(o, t)}" for o, t in targets.items())
    return ResourceTargetError(
        f"no architecture of {_where(prob)} lies within ±{prob.tol * 100:g}% of every target "
        f"({want}): none in {draws:,} random draws nor by {BEAM_TRIES + 1} beam searches; "
        f"reachable {_reachable(prob)} (each on its own); move the targets or widen "
        f"search.tolerance")


def _too_few(prob: _Problem, found: int, k: int, how: str) -> HourNASError:
    return ResourceTargetError(
        f"found only {found} distinct architecture(s) of {_where(prob)} within "
        f"±{prob.tol * 100:g}% of every target in {how}, {k} asked; ask for fewer or widen "
        f"search.tolerance")
