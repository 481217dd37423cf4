"""Space proposals (Section 3.3, Eqs. 5-9): solve m θ's whose samples meet the resource targets.

Eq. 7, for m proposals θ_1..θ_m (each L x O over a ResourceTable's layers) and n objectives:

    min (1/(n m)) Σ_j Σ_i |R_i(G(θ_j)) - T_i| / M_i  +  β Σ |O - I|,   R_i(A) = base_i + Σ A ⊙ F_i

with M_i the largest value of objective i over the table's space. The solver is vectorised
numpy with analytic gradients and Adam (a MindSpore op per step would cost more than the whole
solve), and keeps off BLAS (einsum on these tiny matrices) so that a busy machine's BLAS
threads cannot stall it. Two choices differ from a literal reading of the paper and one step
is added; all were measured (``benchmarks/proposals.py --ablations``):

- **Temperature while solving.** τ divides the logits (``src.sampler``), so the sampled
  architectures at τ are Categorical(softmax(θ/τ)). The solver anneals τ geometrically from
  ``cfg.tau`` (5.0, where the paper's search starts) to ``cfg.tau_final`` (default: the lowest
  report τ, 0.1), from a near-uniform init (θ ~ N(0, 0.1²)). Early, high-τ steps explore with
  smooth gradients; late, low-τ steps make the Gumbel-softmax samples (nearly) the hard
  architectures the report and the derivation take, so it is those that are pushed onto the
  target. Measured on 64 random feasible targets over the 8 spaces: a fixed τ = 0.1 leaves 7 of
  64 below 90% within ±5% at τ = 0.1 (and only ~65% within at τ = 0.5); a fixed τ = 0.1 from
  N(0, 1) inits, 42 of 64; annealing 5 -> 0.1, 1 of 64. The expected-cost term
  |R(softmax(θ/τ)) - T| did not help on top of annealing and is not used.
- **Re-solving a stuck proposal.** About one proposal in 200 freezes early on an architecture
  5-6% off a target (the softmax saturates, and its neighbours are no better). It costs that
  target 1/8 of its samples, so after the schedule any proposal whose arg-max architecture
  misses by more than 5% is solved again from a new init with the others fixed
  (``cfg.resolve`` times at most): 0 of 192 random targets below 90% afterwards (1 without).
- **Orthogonality.** The paper's O = ΘΘᵀ has ||θ_j||² on its diagonal, so |O - I| pulls every
  θ_j to unit norm: over 198 entries that keeps softmax(θ/τ) nearly flat and only ~10% of the
  sampled architectures land within ±5%. ``orthogonality: cosine`` (default) uses the cosines
  of the per-layer-centred θ's instead (softmax ignores a per-layer shift): the same pressure
  to make the proposals different, no pull on their scale. ``paper`` keeps the literal term.
  Without the term (β = 0) the arg-max architectures share ~36% of their ops, with it ~11%
  (1/9 would be unrelated).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from src.config import format_size
from src.errors import HourNASError, ResourceTargetError
from src.resource import ResourceTable
from src.sampler import (GumbelNoise, check_sampler, gumbel_from_uniform, sample_index_np,
                         softmax_np)

_ADAM = (0.9, 0.999, 1e-8)
RESOLVE_TOLERANCE = 0.05
UNITS = {"latency": "ms"}


# ----------------------------------------------------------------------------- the formula
# One definition of R_i and of the resource term, for numpy arrays and MindSpore Tensors alike
# (only operators and methods both share), used by the solver and by the stage-2 regulariser.


def resource_cost(A, tables, base):
    """R(A) = base + Σ A ⊙ table per objective: A (..., L, O), tables (n, L, O), base (n,)
    -> (..., n)."""
    shape = tuple(A.shape)
    A = A.reshape(shape[:-2] + (1,) + shape[-2:])
    return (A * tables).sum(axis=(-2, -1)) + base


def normalized_error(cost, targets, maxima):
    """|R_i - T_i| / M_i, elementwise over the objective axis."""
    return abs(cost - targets) / maxima


def resource_loss(A, tables, base, targets, maxima):
    """T(A): mean_i |base_i + Σ A ⊙ table_i - T_i| / M_i (Eq. 6); a batch of A's (m, L, O) gives
    the mean over proposals too, Eq. 7's first term. numpy or MindSpore (stage 2's regulariser:
    A (L, O), tables (n, L, O), base/targets/maxima (n,) Tensors -> scalar Tensor)."""
    return normalized_error(resource_cost(A, tables, base), targets, maxima).mean()


def ensemble(pi_weights, per_proposal_A):
    """A_Θ = Σ_i π_i · G(θ_i) (Eq. 9): pi_weights (m,), per_proposal_A (m, L, O) -> (L, O)."""
    m = per_proposal_A.shape[0]
    return (pi_weights.reshape((m, 1, 1)) * per_proposal_A).sum(axis=0)


def ensemble_sample(sampler_fn, pi_logits, thetas, pi_noise, theta_noise, tau):
    """Eqs. 8-9 in one call: π = G(Π), A_i = G(θ_i) for all i, A_Θ = Σ π_i A_i.

    ``sampler_fn`` is ``src.sampler.get_sampler(name)`` resolved on the host; pi_logits (m,),
    thetas (m, L, O), pi_noise (m,), theta_noise (m, L, O). With Gumbel-Max π is one-hot: the
    forward is the chosen proposal's architecture, Π gets a gradient through every A_i (the
    straight-through π) and only the chosen θ_i gets one (its weight π_i is 1, the others 0).
    """
    pi = sampler_fn(pi_logits, pi_noise, tau)
    return ensemble(pi, sampler_fn(thetas, theta_noise, tau))


def init_proposal_logits(m: int) -> np.ndarray:
    """Π at its uniform initial state (Eq. 8): zeros, so π = softmax(Π/τ) = 1/m."""
    return np.zeros(m, dtype=np.float32)


# ----------------------------------------------------------------------------- targets


def format_objective(objective: str, value: float) -> str:
    if UNITS.get(objective) == "ms":
        return f"{value:.2f} ms"
    return format_size(value)


@dataclass
class ObjectiveArrays:
    """The table stacked over the objectives that have targets (all float64)."""

    names: tuple[str, ...]
    tables: np.ndarray   # (n, L, O)
    base: np.ndarray     # (n,)
    targets: np.ndarray  # (n,)
    maxima: np.ndarray   # (n,): M_i, the table's largest reachable value

    def as_float32(self) -> tuple[np.ndarray, ...]:
        """(tables, base, targets, maxima) as float32, ready for ``Tensor`` and resource_loss."""
        return tuple(np.asarray(a, np.float32)
                     for a in (self.tables, self.base, self.targets, self.maxima))


def _check_names(table: ResourceTable, targets: dict) -> None:
    unknown = [k for k in targets if k not in table.objectives]
    if unknown:
        hint = (" (latency needs proposal.latency_table)" if unknown[0] == "latency" else "")
        raise ResourceTargetError(f"unknown objective '{unknown[0]}' in the targets; valid: "
                                  f"{', '.join(table.objectives)}{hint}")
    if not targets:
        raise ResourceTargetError(f"no resource targets given; valid objectives: "
                                  f"{', '.join(table.objectives)}")


def objective_arrays(table: ResourceTable, targets: dict[str, float]) -> ObjectiveArrays:
    """The objectives of Eq. 6 over ``table``, for the solver and for stage 2's regulariser
    alike. M_i (``maxima``) is the largest value of objective i that the table can reach: in
    stage 2 the table is the non-vital layers' with the vital ops fixed, so M_i is measured
    over the architectures the proposals and the stage-2 search can actually produce."""
    _check_names(table, targets)
    names = tuple(targets)
    bounds = table.bounds()
    return ObjectiveArrays(
        names=names,
        tables=np.stack([np.asarray(table.table[o], np.float64) for o in names]),
        base=np.array([table.base[o] for o in names], np.float64),
        targets=np.array([float(targets[o]) for o in names], np.float64),
        maxima=np.array([bounds[o][1] for o in names], np.float64))


def feasible_range(table: ResourceTable) -> dict[str, tuple[float, float]]:
    """Smallest and largest value of every objective over the table (each one on its own)."""
    return {o: (float(lo), float(hi)) for o, (lo, hi) in table.bounds().items()}


def check_feasible(table: ResourceTable, targets: dict[str, float]) -> None:
    """Raise ResourceTargetError naming the first target outside its objective's range."""
    _check_names(table, targets)
    for obj, (lo, hi) in feasible_range(table).items():
        if obj not in targets:
            continue
        t = float(targets[obj])
        rng = f"(feasible: {format_objective(obj, lo)} .. {format_objective(obj, hi)})"
        if not math.isfinite(t) or t <= 0:
            raise ResourceTargetError(f"target {obj} {t} must be a positive number {rng}")
        if t < lo:
            raise ResourceTargetError(f"target {obj} {format_objective(obj, t)} is below the "
                                      f"space's minimum {format_objective(obj, lo)} {rng}")
        if t > hi:
            raise ResourceTargetError(f"target {obj} {format_objective(obj, t)} is above the "
                                      f"space's maximum {format_objective(obj, hi)} {rng}")


# ----------------------------------------------------------------------------- the solver


@dataclass
class Proposals:
    """m solved proposals over ``layers`` (indices into the space's layers)."""

    theta: np.ndarray                  # (m, L, O)
    objectives: tuple[str, ...]
    targets: dict[str, float]
    layers: list[int]
    maxima: dict[str, float]
    solve_seconds: float
    history: dict[str, np.ndarray]     # loss, resource, orthogonality, tau per iteration
    settings: dict = field(default_factory=dict)

    @property
    def m(self) -> int:
        return int(self.theta.shape[0])

    def argmax_choices(self) -> np.ndarray:
        """(m, L): the op index per layer of each proposal's most likely architecture."""
        return self.theta.argmax(axis=-1)

    def save(self, path: str) -> str:
        """Write a .npz (plain arrays and a JSON string; loads without pickle)."""
        import io

        from src.checkpoint import atomic_write_bytes
        meta = {"objectives": list(self.objectives), "targets": self.targets,
                "layers": [int(i) for i in self.layers], "maxima": self.maxima,
                "solve_seconds": self.solve_seconds, "settings": self.settings}
        buf = io.BytesIO()
        np.savez(buf, theta=self.theta, meta=np.array(json.dumps(meta)),
                 **{f"history_{k}": v for k, v in self.history.items()})
        return atomic_write_bytes(path, buf.getvalue())


def load_proposals(path: str) -> Proposals:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            history = {k[len("history_"):]: z[k] for k in z.files if k.startswith("history_")}
            theta = z["theta"]
    except (OSError, KeyError, ValueError) as exc:
        raise HourNASError(f"cannot read proposals '{path}': {exc}".replace("\n", " ")) from None
    return Proposals(theta=theta, objectives=tuple(meta["objectives"]), targets=meta["targets"],
                     layers=meta["layers"], maxima=meta["maxima"],
                     solve_seconds=meta["solve_seconds"], history=history,
                     settings=meta.get("settings", {}))


def tau_schedule(cfg, iterations: int) -> np.ndarray:
    """The solver's τ per iteration: geometric from cfg.tau to cfg.tau_final (or min report τ)."""
    tau_final = cfg.tau_final if cfg.tau_final is not None else min(cfg.report_taus)
    frac = np.arange(iterations) / max(1, iterations - 1)
    return cfg.tau * (tau_final / cfg.tau) ** frac


def _center(theta: np.ndarray) -> np.ndarray:
    """Remove the per-layer mean (softmax is blind to it); a symmetric projection."""
    return theta - theta.sum(axis=-1, keepdims=True) * (1.0 / theta.shape[-1])


def orthogonality_loss_and_grad(theta: np.ndarray, beta: float, kind: str = "cosine"):
    """β Σ|O - I| and its gradient w.r.t. theta (m, L, O).

    paper: O = ΘΘᵀ of the raw flattened θ's. cosine: O = UUᵀ with U the per-layer-centred,
    unit-length θ's (diagonal exactly 1, so only the off-diagonal cosines count).
    """
    m = theta.shape[0]
    eye = np.eye(m)
    if kind == "paper":
        F = theta.reshape(m, -1)
        O = np.einsum("ik,jk->ij", F, F)
        S = np.sign(O - eye)
        grad = np.einsum("ij,jk->ik", beta * (S + S.T), F)
        return beta * float(np.abs(O - eye).sum()), grad.reshape(theta.shape)
    if kind != "cosine":
        raise HourNASError(f"unknown orthogonality '{kind}'; valid: cosine, paper")
    F = _center(theta).reshape(m, -1)
    norm = np.maximum(np.sqrt((F * F).sum(axis=1, keepdims=True)), 1e-12)
    U = F / norm
    C = np.einsum("ik,jk->ij", U, U)
    off = C * (1.0 - eye)
    S = np.sign(off)
    gU = np.einsum("ij,jk->ik", beta * (S + S.T), U)
    gF = (gU - U * (gU * U).sum(axis=1, keepdims=True)) / norm  # rows stay centred
    return beta * float(np.abs(off).sum()), gF.reshape(theta.shape)


def loss_and_grad(theta: np.ndarray, noise: np.ndarray | None, tau: float,
                  arrays: ObjectiveArrays, beta: float, sampler: str = "gumbel_softmax",
                  orthogonality: str = "cosine"):
    """Eq. 7 at one noise draw: (total, resource, orthogonality, d total / d theta).

    Gradients are analytic: d|c - T|/M = sign(c - T)/M · table through the softmax Jacobian
    (Gumbel-Max: the straight-through gradient, the soft sample's).
    """
    m = theta.shape[0]
    n = arrays.tables.shape[0]
    z = theta / tau if sampler == "softmax" else theta / tau + noise
    soft = softmax_np(z)
    if sampler == "gumbel_max":
        A = (z.argmax(axis=-1)[..., None] == np.arange(z.shape[-1])).astype(np.float64)
    else:
        A = soft
    cost = resource_cost(A, arrays.tables, arrays.base)                  # (m, n)
    res = float(normalized_error(cost, arrays.targets, arrays.maxima).sum()) / (n * m)
    coef = np.sign(cost - arrays.targets) / (arrays.maxima * (n * m))    # (m, n)
    gA = np.einsum("mn,nlo->mlo", coef, arrays.tables)                   # (m, L, O)
    g = soft * (gA - (gA * soft).sum(axis=-1, keepdims=True)) / tau
    orth, g_orth = orthogonality_loss_and_grad(theta, beta, orthogonality) if beta else (0.0, 0)
    return res + orth, res, orth, g + g_orth


def _adam(theta: np.ndarray, arrays: ObjectiveArrays, cfg, taus: np.ndarray,
          noise: GumbelNoise, trainable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One pass of the annealed schedule; rows not ``trainable`` stay fixed (they still count
    in the orthogonality term). Returns (theta, history (iterations, 3))."""
    m, L, O = theta.shape
    iters = len(taus)
    b1, b2, eps = _ADAM
    theta = theta.copy()
    mom = np.zeros_like(theta)
    vel = np.zeros_like(theta)
    frozen = ~np.asarray(trainable, bool)
    hist = np.zeros((iters, 3))
    block = 100  # noise drawn 100 iterations at a time: same stream, fewer calls
    for t in range(iters):
        if t % block == 0:
            g_block = gumbel_from_uniform(noise.uniform((min(block, iters - t), m, L, O)))
        total, res, orth, grad = loss_and_grad(theta, g_block[t % block], taus[t], arrays,
                                               cfg.beta, cfg.sampler, cfg.orthogonality)
        hist[t] = (total, res, orth)
        if frozen.any():
            grad[frozen] = 0.0
        mom *= b1
        mom += (1 - b1) * grad
        vel *= b2
        vel += (1 - b2) * (grad * grad)
        denom = np.sqrt(vel * (1.0 / (1 - b2 ** (t + 1))))
        denom += eps
        theta -= (cfg.lr / (1 - b1 ** (t + 1))) * mom / denom
    return theta, hist


def missing_proposals(theta: np.ndarray, arrays: ObjectiveArrays,
                      tolerance: float = RESOLVE_TOLERANCE) -> np.ndarray:
    """(m,) bool: proposals whose arg-max architecture misses a target by more than tolerance."""
    rel = choice_costs(theta.argmax(axis=-1), arrays) / arrays.targets - 1.0
    return (np.abs(rel) > tolerance).any(axis=1)


def solve_proposals(table: ResourceTable, targets: dict[str, float], cfg) -> Proposals:
    """Solve Eq. 7 for ``cfg.m`` proposals over ``table``'s layers (``cfg``: ProposalConfig).

    Checks feasibility first. After the ``cfg.iterations`` steps, a proposal whose arg-max
    architecture still misses a target by more than 5% (about 1 in 200 on random feasible
    targets: it froze early on a nearby architecture) is solved again from a new random init,
    the others held fixed, up to ``cfg.resolve`` times; not when every proposal misses (the
    targets are then unlikely to be jointly reachable; the report says so). Deterministic for
    a given ``cfg.seed``.
    """
    check_sampler(cfg.sampler)
    check_feasible(table, targets)
    arrays = objective_arrays(table, targets)
    _, L, O = arrays.tables.shape
    m, iters = int(cfg.m), int(cfg.iterations)
    t0 = time.perf_counter()
    init_rng = np.random.Generator(np.random.PCG64([int(cfg.seed), 7]))
    theta = init_rng.normal(0.0, cfg.init_std, size=(m, L, O))
    noise = GumbelNoise(cfg.seed)
    taus = tau_schedule(cfg, iters)
    theta, hist = _adam(theta, arrays, cfg, taus, noise, np.ones(m, bool))
    hists, resolved = [hist], []
    for _ in range(int(getattr(cfg, "resolve", 0))):
        miss = missing_proposals(theta, arrays)
        if not miss.any() or miss.all():
            break
        theta[miss] = init_rng.normal(0.0, cfg.init_std, size=(int(miss.sum()), L, O))
        theta, hist = _adam(theta, arrays, cfg, taus, noise, miss)
        hists.append(hist)
        resolved.append([int(j) for j in np.flatnonzero(miss)])
    seconds = time.perf_counter() - t0
    hist = np.concatenate(hists)
    return Proposals(
        theta=theta, objectives=arrays.names,
        targets={o: float(v) for o, v in zip(arrays.names, arrays.targets)},
        layers=list(table.layers), maxima={o: float(v) for o, v in zip(arrays.names, arrays.maxima)},
        solve_seconds=seconds,
        history={"loss": hist[:, 0], "resource": hist[:, 1], "orthogonality": hist[:, 2],
                 "tau": np.tile(taus, len(hists))},
        settings={"m": m, "iterations": iters, "beta": cfg.beta, "lr": cfg.lr,
                  "sampler": cfg.sampler, "tau": cfg.tau, "tau_final": float(taus[-1]),
                  "init_std": cfg.init_std, "orthogonality": cfg.orthogonality,
                  "seed": cfg.seed, "resolved": resolved})


# ----------------------------------------------------------------------------- the report


def sample_architectures(proposals: Proposals, n: int, tau: float, seed: int = 0,
                         chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Gumbel-Max samples at ``tau``: each picks a proposal uniformly (Π at its uniform
    start, Eq. 8), then one op per layer from it. Returns (proposal index (n,), choices (n, L))."""
    noise = GumbelNoise(seed)
    which = noise.integers(proposals.m, n)
    _, L, O = proposals.theta.shape
    choices = np.empty((n, L), dtype=np.int64)
    for s in range(0, n, chunk):
        w = which[s:s + chunk]
        g = gumbel_from_uniform(noise.uniform((len(w), L, O)))
        choices[s:s + chunk] = sample_index_np(proposals.theta[w], g, tau)
    return which, choices


def choice_costs(choices: np.ndarray, arrays: ObjectiveArrays) -> np.ndarray:
    """Costs (N, n) of architectures given as op indices (N, L) -- a gather, same R as above."""
    L = choices.shape[1]
    per_layer = arrays.tables[:, np.arange(L)[None, :], choices]  # (n, N, L)
    return (per_layer.sum(axis=-1) + arrays.base[:, None]).T


def _stats(rel: np.ndarray) -> dict:
    a = np.abs(rel)
    return {"mean": float(rel.mean()), "p5": float(np.percentile(rel, 5)),
            "p50": float(np.percentile(rel, 50)), "p95": float(np.percentile(rel, 95)),
            "mean_abs": float(a.mean()), "within_2pct": float((a <= 0.02).mean()),
            "within_5pct": float((a <= 0.05).mean())}


def diversity(choices: np.ndarray) -> dict:
    """Mean pairwise overlap (share of layers with the same op) of m architectures, and how
    many are distinct. Overlap 1.0 = collapsed to one architecture; 1/O = unrelated."""
    m = choices.shape[0]
    pairs = [(a, b) for a in range(m) for b in range(a + 1, m)]
    overlap = float(np.mean([(choices[a] == choices[b]).mean() for a, b in pairs])) if pairs \
        else 1.0
    return {"mean_pairwise_overlap": overlap,
            "distinct_architectures": int(len({tuple(c) for c in choices}))}


def compliance_report(proposals: Proposals, table: ResourceTable, n: int = 10000,
                      tau: float = 0.1, seed: int = 0) -> dict:
    """How well ``n`` sampled architectures at ``tau`` meet the targets.

    Per objective: mean / p5 / p50 / p95 of the relative error (R - T)/T, and the share within
    ±2% and ±5%; ``all``: the share within on every objective at once; the same for the m
    arg-max architectures; per proposal: its samples' joint share within ±5%; diversity.
    """
    arrays = objective_arrays(table, proposals.targets)
    which, choices = sample_architectures(proposals, n, tau, seed)
    rel = choice_costs(choices, arrays) / arrays.targets - 1.0           # (N, n)
    best = proposals.argmax_choices()
    rel_best = choice_costs(best, arrays) / arrays.targets - 1.0         # (m, n)
    joint5 = (np.abs(rel) <= 0.05).all(axis=1)
    return {
        "tau": float(tau), "samples": int(n), "seed": int(seed),
        "sampling": "proposal chosen uniformly per sample, then Gumbel-Max per layer at tau",
        "objectives": {o: _stats(rel[:, i]) for i, o in enumerate(arrays.names)},
        "all": {"within_2pct": float((np.abs(rel) <= 0.02).all(axis=1).mean()),
                "within_5pct": float(joint5.mean())},
        "per_proposal_within_5pct": [float(joint5[which == j].mean()) if (which == j).any()
                                     else None for j in range(proposals.m)],
        "argmax": {
            "relative_error": {o: rel_best[:, i].tolist() for i, o in enumerate(arrays.names)},
            "objectives": {o: _stats(rel_best[:, i]) for i, o in enumerate(arrays.names)},
            "all_within_5pct": float((np.abs(rel_best) <= 0.05).all(axis=1).mean())},
        "diversity": diversity(best),
    }


# ----------------------------------------------------------------------------- Fig. 3


def _axis(objective: str) -> tuple[float, str]:
    if UNITS.get(objective) == "ms":
        return 1.0, f"{objective} (ms)"
    return 1e6, {"params": "parameters (M)", "flops": "FLOPs (M)"}.get(objective,
                                                                     f"{objective} (M)")


def _plot_cloud(ax, cost: np.ndarray, ok: np.ndarray, best: np.ndarray, tx: float, ty: float,
                sx: float, sy: float) -> None:
    """Two objectives: the sampled costs (green within ±5% of the target), the target and its
    ±5% box, each proposal's arg-max architecture."""
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((0.95 * tx, 0.95 * ty), 0.1 * tx, 0.1 * ty, fill=False,
                           ls="--", lw=1.2, color="red", zorder=1))
    ax.axvline(tx, color="red", lw=0.8, alpha=0.6, zorder=1)
    ax.axhline(ty, color="red", lw=0.8, alpha=0.6, zorder=1)
    ax.scatter(cost[~ok, 0] / sx, cost[~ok, 1] / sy, s=4, alpha=0.3,
               color="tab:blue", linewidths=0, zorder=2)
    ax.scatter(cost[ok, 0] / sx, cost[ok, 1] / sy, s=4, alpha=0.3, color="tab:green",
               linewidths=0, zorder=2)
    ax.scatter(best[:, 0] / sx, best[:, 1] / sy, s=40, facecolors="none",
               edgecolors="black", linewidths=1.0, zorder=3)


def _legend_handles(one_objective: bool) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if one_objective:
        return [Patch(color="tab:blue", label="sampled"),
                Line2D([], [], color="red", lw=1.5, label="target"),
                Patch(color="red", alpha=0.12, label="target ±5%")]
    return [Line2D([], [], ls="none", marker="o", ms=5, color="tab:blue",
                   label="sampled, outside ±5%"),
            Line2D([], [], ls="none", marker="o", ms=5, color="tab:green",
                   label="sampled, within ±5% on every objective"),
            Line2D([], [], ls="none", marker="o", ms=7, mfc="none", mec="black",
                   label="arg-max architecture of each proposal"),
            Line2D([], [], color="red", lw=0.8, label="target"),
            Patch(fill=False, ls="--", ec="red", label="target ±5%")]


def plot_proposals(proposals: Proposals, table: ResourceTable, path: str,
                   taus: list[float], n: int = 10000, seed: int = 0, title: str = "") -> str:
    """Fig. 3: ``n`` sampled architectures per τ, first objective on x, second on y (one
    objective: a histogram); target, its ±5% box and each proposal's arg-max architecture
    marked. Writes a PNG; returns ``path``."""
    from src.context import pyplot
    plt = pyplot()

    arrays = objective_arrays(table, proposals.targets)
    names = arrays.names
    k = len(taus)
    ncols = 2 if k == 4 else min(k, 3)
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.3 * nrows + 0.6),
                             squeeze=False, sharex=True, sharey=len(names) > 1)
    sx, lx = _axis(names[0])
    sy, ly = _axis(names[1]) if len(names) > 1 else (1.0, "architectures")
    tx = arrays.targets[0] / sx
    ty = arrays.targets[1] / sy if len(names) > 1 else None
    best = choice_costs(proposals.argmax_choices(), arrays)
    for idx, ax in enumerate(axes.flat):
        if idx >= k:
            ax.set_visible(False)
            continue
        tau = taus[idx]
        _, choices = sample_architectures(proposals, n, tau, seed)
        cost = choice_costs(choices, arrays)
        ok = (np.abs(cost / arrays.targets - 1.0) <= 0.05).all(axis=1)
        if len(names) > 1:
            _plot_cloud(ax, cost, ok, best, tx, ty, sx, sy)
        else:
            ax.hist(cost[:, 0] / sx, bins=60, color="tab:blue", alpha=0.8)
            ax.axvspan(0.95 * tx, 1.05 * tx, color="red", alpha=0.12)
            ax.axvline(tx, color="red", lw=1.5)
        ax.set_title(f"τ = {tau:g}:  {100 * ok.mean():.1f}% within ±5% of the target",
                     fontsize=11)
        ax.set_xlabel(lx)
        ax.set_ylabel(ly)
        ax.grid(alpha=0.3)
    targets = ", ".join(f"{o} {format_objective(o, v)}" for o, v in zip(names, arrays.targets))
    fig.suptitle(title or f"{n:,} architectures sampled from {proposals.m} space proposals "
                 f"per temperature τ\n(targets: {targets})", fontsize=12)
    fig.legend(handles=_legend_handles(len(names) == 1), loc="lower center", ncol=3,
               fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
