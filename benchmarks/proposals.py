"""Space-proposal solver: speed, compliance at every τ, diversity, and held-out targets.

    python benchmarks/proposals.py [--json] [--check] [--ablations]

1. FBNetSS ImageNet, 4.8M params / 295M FLOPs (config/search/fbnet_imagenet.yaml): m = 8
   proposals x 1000 iterations; solve seconds (best and median of --repeats), the share of
   10,000 sampled architectures within ±5% at each report τ, diversity of the m arg-max nets.
2. Held-out targets: in every space, --per_space targets made from random architectures
   (jointly feasible by construction; drawn with a seed not used while developing the solver);
   the share within ±5% of every target at the lowest τ.
3. --ablations: the same held-out targets with other solver settings (no re-solve, fixed τ,
   the Gumbel-Max sampler, the paper's literal orthogonality term, none), to show why the
   defaults are what they are.

Acceptance: solve < 1 s; >= 90% of the sampled architectures within ±5% of every target at the
lowest τ, for every held-out target; the m arg-max architectures not all the same.
--check exits 1 when one fails.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from src.cli import common_parser, emit_json, log, run_main  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELD_OUT_SEED = 20240611


def held_out_targets(table, k: int, rng) -> list[dict]:
    """k targets, each the cost of a random architecture whose per-layer op probabilities are
    themselves random (Dirichlet 0.5): spread over the space, always jointly feasible."""
    n_layers, n_ops = next(iter(table.table.values())).shape
    out = []
    for _ in range(k):
        probs = rng.dirichlet(np.full(n_ops, 0.5), size=n_layers)
        idx = np.array([rng.choice(n_ops, p=p) for p in probs])
        out.append(table.cost(np.eye(n_ops)[idx]))
    return out


def main(args) -> int:
    from src.config import format_size, load_config
    from src.proposal import compliance_report, solve_proposals
    from src.resource import resource_table
    from src.search.config import SearchConfig
    from src.space.space import available_spaces, load_space

    cfg = load_config(SearchConfig, os.path.join(ROOT, "config/search/fbnet_imagenet.yaml"))
    p = cfg.proposal
    table = resource_table(load_space(cfg.space))
    targets = {k: float(v) for k, v in p.targets.items()}
    times = []
    for _ in range(args.repeats):
        props = solve_proposals(table, targets, p)
        times.append(props.solve_seconds)
    log(f"FBNetSS ImageNet, targets {format_size(targets['params'])} params / "
        f"{format_size(targets['flops'])} FLOPs, m={p.m} x {p.iterations} iterations: "
        f"solve {min(times):.3f} s best, {np.median(times):.3f} s median of {args.repeats}")
    per_tau = {}
    for tau in p.report_taus:
        r = compliance_report(props, table, args.samples, tau, seed=0)
        per_tau[f"{tau:g}"] = {**{k: v["within_5pct"] for k, v in r["objectives"].items()},
                               "all": r["all"]["within_5pct"]}
        log(f"  tau {tau:g}: within ±5% " + ", ".join(f"{k} {v:.1%}"
                                                     for k, v in per_tau[f"{tau:g}"].items()))
    div = r["diversity"]
    log(f"  arg-max architectures: {div['distinct_architectures']}/{props.m} distinct, mean "
        f"pairwise overlap {div['mean_pairwise_overlap']:.2f} (1.0 = collapsed, 1/9 = unrelated)"
        f"; arg-max within ±5% on both: {r['argmax']['all_within_5pct']:.0%}")

    tau_low = min(p.report_taus)
    rng = np.random.default_rng(HELD_OUT_SEED)
    cases = []
    for name in available_spaces():
        t = resource_table(load_space(name))
        cases += [(name, t, tg) for tg in held_out_targets(t, args.per_space, rng)]
    variants = {"default": {}}
    if args.ablations:
        variants.update({"no re-solve (resolve 0)": {"resolve": 0},
                         "fixed tau=1": {"tau": 1.0, "tau_final": 1.0},
                         "fixed tau=0.1": {"tau": 0.1, "tau_final": 0.1},
                         "sampler gumbel_max (ST)": {"sampler": "gumbel_max"},
                         "orthogonality paper": {"orthogonality": "paper"},
                         "no orthogonality (beta 0)": {"beta": 0.0}})
    held = {}
    for vname, change in variants.items():
        vcfg = dataclasses.replace(p, **change)
        rows = []
        for name, t, tg in cases:
            pr = solve_proposals(t, tg, vcfg)
            rep = compliance_report(pr, t, args.samples, tau_low, seed=1)
            rows.append({"space": name, "targets": tg, "within_5pct_all": rep["all"]["within_5pct"],
                         "within_5pct": {k: v["within_5pct"] for k, v in rep["objectives"].items()},
                         "overlap": rep["diversity"]["mean_pairwise_overlap"],
                         "distinct": rep["diversity"]["distinct_architectures"],
                         "solve_seconds": pr.solve_seconds})
            if vname == "default":
                log(f"  held-out {name:22s} {format_size(tg['params']):>7s} / "
                    f"{format_size(tg['flops']):>8s}: {rows[-1]['within_5pct_all']:.1%} within "
                    f"±5% of both at tau {tau_low:g}, overlap {rows[-1]['overlap']:.2f}")
        shares = np.array([r["within_5pct_all"] for r in rows])
        held[vname] = {"min_within_5pct_all": float(shares.min()),
                       "mean_within_5pct_all": float(shares.mean()),
                       "targets_below_90pct": int((shares < 0.9).sum()),
                       "mean_overlap": float(np.mean([r["overlap"] for r in rows])),
                       "cases": rows}
        log(f"{vname:28s} held-out at tau {tau_low:g}: min {shares.min():.1%}, mean "
            f"{shares.mean():.1%}, {int((shares < 0.9).sum())}/{len(rows)} targets below 90%, "
            f"mean overlap {held[vname]['mean_overlap']:.2f}")

    acceptance = {"solve_under_1s": min(times) < 1.0,
                  "held_out_90pct_within_5pct": held["default"]["min_within_5pct_all"] >= 0.9,
                  "not_collapsed": div["distinct_architectures"] > 1}
    log("acceptance: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in acceptance.items()))
    if args.json:
        emit_json({"solve_seconds": min(times), "solve_seconds_all": times,
                   "within_5pct": per_tau, "diversity": div, "tau_low": tau_low,
                   "held_out": {k: {kk: vv for kk, vv in v.items() if kk != "cases"}
                                for k, v in held.items()},
                   "held_out_cases": held["default"]["cases"], "acceptance": acceptance})
    return 1 if args.check and not all(acceptance.values()) else 0


def parser():
    p = common_parser(__doc__)
    p.add_argument("--repeats", type=int, default=5, help="timed solves (default 5)")
    p.add_argument("--samples", type=int, default=10000, help="sampled architectures per report")
    p.add_argument("--per_space", type=int, default=3, help="held-out targets per space")
    p.add_argument("--ablations", action="store_true", help="also run other solver settings")
    p.add_argument("--check", action="store_true", help="exit 1 if an acceptance check fails")
    return p


if __name__ == "__main__":
    sys.exit(run_main(main, parser=parser()))
