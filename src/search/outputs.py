"""Algorithm 1, line 23, and what a search leaves behind.

``derive_architecture`` fixes the most probable proposal and op per layer that meets the
targets (``src.search.derive``); ``write_outputs`` writes arch.yaml, summary.json,
arch_params.npz and the plots (rank 0) and returns the summary.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from src.checkpoint import atomic_write, atomic_write_text
from src.rundir import ARCH_FILE, ARCH_PARAMS_FILE, SUMMARY_FILE, searched_arch_name
from src.runlog import log
from src.config import format_size
from src.resource import count
from src.search.derive import Derived, derive_from_distributions, relative_errors
from src.space.space import arch_to_yaml


@dataclass
class Derivation:
    """The derived architecture: the derivation, the proposal it came from, the op of every
    searchable layer (vital ones included) and what it costs against the targets."""

    derived: Derived
    proposal: int | None
    choices: list[int]
    achieved: dict[str, float]
    relative_error: dict[str, float]
    scores: list[dict] | None = None   # search.derive: supernet: each proposal's score


def derive_architecture(run, stage, fixed: dict[int, int]) -> Derivation:
    """Line 23: from the final θ (Π, Θ) of ``stage`` to one architecture of the space."""
    pi, probs = stage.arch.probabilities()
    scores = None
    if run.p.derive == "supernet" and pi is not None:
        d, j, scores = derive_by_supernet(run, stage, fixed, pi, probs)
    else:
        d, j = derive_from_distributions(pi, probs, stage.table, run.targets, run.p.tolerance,
                                         run.p.beam)
    choices = dict(fixed)
    for k, i in enumerate(stage.table.layers):
        choices[i] = d.choices[k]
    full = [choices[i] for i in run.space.searchable]
    counted = count(run.space.arch(full))
    achieved = {o: float(counted[o]) if o in counted else d.cost[o] for o in run.objectives}
    return Derivation(d, j, full, achieved, relative_errors(achieved, run.targets), scores)


def derive_by_supernet(run, stage, fixed: dict[int, int], pi: np.ndarray, probs: np.ndarray):
    """``search.derive: supernet``: each proposal's own network (``derive_each_proposal``),
    scored on the final supernet over the whole architecture split (its single path,
    BatchNorm on each batch's statistics, as ``src.search.supernet_eval`` scores networks);
    the best-scoring one that meets the targets is taken (ties: Π's order). Π's choice is
    kept in the report beside it. Returns (Derived, proposal, one score record per proposal)."""
    from src.search.derive import derive_each_proposal
    from src.search.supernet_eval import path_accuracy, split_batches

    each = derive_each_proposal(probs, stage.table, run.targets, run.p.tolerance, run.p.beam)
    net, cache, records = stage.net, {}, []
    net.set_train(True)
    batches = split_batches(run.cfg.data, run.a_idx)
    for j, d in enumerate(each):
        path = dict(fixed)
        path.update({i: d.choices[k] for k, i in enumerate(stage.table.layers)})
        key = tuple(path[i] for i in net.searched)
        if key not in cache:
            cache[key] = path_accuracy(net, batches, list(key))
        records.append({"proposal": j, "pi": float(pi[j]), "supernet": cache[key],
                        "within": bool(d.within)})
        log(f"derive by the supernet: proposal {j} (Π {pi[j]:.3f}) scores "
            f"{100 * cache[key]:.2f}% on the architecture split ({len(run.a_idx)} images)"
            + ("" if d.within else "; misses the targets"))
    pool = [r for r in records if r["within"]] or records
    best = max(pool, key=lambda r: (r["supernet"], r["pi"]))
    j = best["proposal"]
    d = each[j]
    d.method += f" (proposal {j}: the supernet's best; Π's most probable: {int(np.argmax(pi))})"
    return d, j, records


def write_outputs(run, stage, result: Derivation) -> dict:
    """arch.yaml, summary.json, arch_params.npz, the plots; the summary."""
    space, d, arch = run.space, result.derived, stage.arch
    arch_rec = space.arch(result.choices, name=searched_arch_name(space.name), meta=_meta(run, result))
    summary = _summary(run, result, arch_rec)
    if run.is_main:
        atomic_write_text(run.path(ARCH_FILE),
                          f"# Searched by HourNAS in {space.name}\n" + arch_to_yaml(arch_rec))
        atomic_write_text(run.path(SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")
        atomic_write(run.path(ARCH_PARAMS_FILE),
                     lambda tmp: np.savez(tmp, **{k: v for k, v in arch.values().items()}))
        from src.analysis.report import draw_search_pictures  # the one drawer (analysis)
        draw_search_pictures(run.out)
    if run.rank_log is not None:
        from src.search.distributed import arch_digest, weights_digest
        run.rank_log.write(event="done", global_step=run.state.global_step,
                           ops=summary["ops"], weights_sha256=weights_digest(stage.net),
                           arch_sha256=arch_digest(arch.values()))
    if not d.within:
        log(f"warning: no architecture within ±{run.p.tolerance:.0%} of every target was "
            f"found; taking the most probable one nearest to them")
    achieved, rel = result.achieved, result.relative_error
    log(f"derived ({d.method}): params {format_size(achieved.get('params', 0))}, "
        f"FLOPs {format_size(achieved.get('flops', 0))} for targets " + ", ".join(
            f"{k} {_fmt(k, v)} ({rel[k]:+.2%})" for k, v in run.targets.items()))
    return summary


def _meta(run, result: Derivation) -> dict:
    """arch.yaml's ``meta``."""
    return {"targets": run.targets, "achieved": result.achieved,
            "relative_error": {k: round(v, 5) for k, v in result.relative_error.items()},
            "seed": run.p.seed, "derivation": result.derived.method,
            "proposal": result.proposal, "vital_priori": run.p.vital_priori,
            "sampler": run.p.sampler}


def _summary(run, result: Derivation, arch_rec) -> dict:
    """summary.json (and what ``search.py --json`` prints)."""
    d, state, counted = result.derived, run.state, count(arch_rec)
    return {
        "arch": run.path(ARCH_FILE), "space": run.space.name, "targets": run.targets,
        "achieved": result.achieved, "relative_error": result.relative_error,
        "within_tolerance": d.within, "tolerance": run.p.tolerance, "derivation": d.method,
        "proposal": result.proposal, "derive": run.p.derive, "proposal_scores": result.scores,
        "stage_seconds": state.stage_seconds,
        "stage_accuracy": state.stage_accuracy, "vital": state.vital_report,
        "proposals": state.proposals_report, "executor": run.executor_name,
        "ops": [op.name for op in arch_rec.ops], "blocks": arch_rec.block_strings(),
        "params": int(counted["params"]), "flops": int(counted["flops"]),
    }


def _fmt(obj: str, v: float) -> str:
    return f"{v:.3f} ms" if obj == "latency" else format_size(v)
