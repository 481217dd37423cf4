"""The space-proposal stage on its own (``python search.py --stage proposals``).

Loads the space, builds the resource table over every searchable layer (plus latency when the
config names a table), checks that every target is feasible, solves the m proposals (Eq. 7)
and writes into ``output_dir``:

- ``proposals.npz``          θ (m, L, O), the loss history and the settings (no pickle)
- ``proposals_report.json``  compliance of sampled architectures at every report τ (see
                             ``src.proposal.compliance_report``), the arg-max architectures
- ``proposals.png``          Fig. 3: the sampled architectures per τ around the target
"""
from __future__ import annotations

import json
import os

import numpy as np

from src.rundir import lock_output_dir
from src.checkpoint import atomic_write_text
from src.runlog import log
from src.errors import HourNASError
from src.proposal import (compliance_report, feasible_range, format_objective, plot_proposals,
                          solve_proposals, check_feasible)
from src.resource import OBJECTIVES, ResourceTable, resource_table
from src.search.config import SearchConfig
from src.space.space import Space, load_space
from src.space.blockstr import format_op

FILES = {"proposals": "proposals.npz", "report": "proposals_report.json",
         "plot": "proposals.png"}


def proposal_table(cfg: SearchConfig, space: Space) -> ResourceTable:
    """All searchable layers; latency joins params and FLOPs when proposal.latency_table is set."""
    p = cfg.proposal
    if p.latency_table:
        from src.latency import load_latency_table
        return resource_table(space, extra_tables={"latency": load_latency_table(
            p.latency_table, space)}, objectives=OBJECTIVES + ("latency",))
    if "latency" in p.targets:
        raise HourNASError("a latency target needs proposal.latency_table (write one with "
                           "'python benchmarks/latency_table.py --space "
                           f"{cfg.space}')")
    return resource_table(space)


def run_proposals_stage(cfg: SearchConfig, output_dir: str) -> dict:
    p = cfg.proposal
    space = load_space(cfg.space, cfg.width_mult)
    table = proposal_table(cfg, space)
    targets = {k: float(v) for k, v in p.targets.items()}
    check_feasible(table, targets)
    ranges = feasible_range(table)
    log(f"space {space.name}: {len(table.layers)} searchable layers; targets "
        + ", ".join(f"{k} {format_objective(k, v)} (feasible {format_objective(k, ranges[k][0])}"
                    f" .. {format_objective(k, ranges[k][1])})" for k, v in targets.items()))
    props = solve_proposals(table, targets, p)
    log(f"solved {props.m} proposals x {p.iterations} iterations in {props.solve_seconds:.3f} s "
        f"({p.sampler}, tau {p.tau:g} -> {props.settings['tau_final']:g})")

    lock_output_dir(output_dir, "search")  # makes the folder; one run at a time
    path = lambda key: os.path.join(output_dir, FILES[key])  # noqa: E731
    props.save(path("proposals"))
    reports = [compliance_report(props, table, p.report_samples, tau, seed=p.seed)
               for tau in p.report_taus]
    for r in reports:
        log(f"  tau {r['tau']:g}: within ±5% " + ", ".join(
            f"{k} {v['within_5pct']:.1%}" for k, v in r["objectives"].items())
            + f", all {r['all']['within_5pct']:.1%}")
    argmax = argmax_architectures(props, space, table)
    final = reports[-1]
    _warn_if_argmax_misses(final)
    report = {"space": space.name, "layers": [space.layers[i].label for i in table.layers],
              "targets": targets, "feasible_range": ranges,
              "solve_seconds": props.solve_seconds, "settings": props.settings,
              "final_loss": float(props.history["loss"][-1]),
              "reports": reports, "argmax_architectures": argmax}
    atomic_write_text(path("report"), json.dumps(report, indent=1) + "\n")
    plot_proposals(props, table, path("plot"), list(p.report_taus), p.report_samples, p.seed,
                   title=f"{space.name}: {p.report_samples:,} architectures sampled from "
                         f"{props.m} space proposals per τ\n(targets: " + ", ".join(
                             f"{k} {format_objective(k, v)}" for k, v in targets.items()) + ")")
    log(f"diversity: mean pairwise overlap {final['diversity']['mean_pairwise_overlap']:.2f}, "
        f"{final['diversity']['distinct_architectures']}/{props.m} distinct arg-max architectures;"
        f" wrote {', '.join(FILES.values())} to {output_dir}")
    return {
        "space": space.name, "m": props.m, "iterations": p.iterations,
        "solve_seconds": props.solve_seconds, "targets": targets, "feasible": True,
        "feasible_range": ranges, "final_tau": final["tau"],
        "within_5pct": {k: v["within_5pct"] for k, v in final["objectives"].items()},
        "within_2pct": {k: v["within_2pct"] for k, v in final["objectives"].items()},
        "within_5pct_all": final["all"]["within_5pct"],
        "argmax_within_5pct_all": final["argmax"]["all_within_5pct"],
        "diversity": final["diversity"],
        "files": {k: path(k) for k in FILES},
    }


def argmax_architectures(props, space: Space, table: ResourceTable) -> list[dict]:
    """Each proposal's most probable architecture: its ops, block strings and cost."""
    out = []
    for j, choices in enumerate(props.argmax_choices()):
        arch = space.arch([int(c) for c in choices])
        out.append({"proposal": j,
                    "ops": [format_op(space.layers[i].ops[int(c)])
                            for i, c in zip(table.layers, choices)],
                    "blocks": arch.block_strings(),
                    "cost": table.cost(_one_hot(choices, table))})
    return out


def _warn_if_argmax_misses(final: dict) -> None:
    if final["argmax"]["all_within_5pct"] < 0.5:
        med = {k: float(np.median(v)) for k, v in final["argmax"]["relative_error"].items()}
        log("warning: most proposals' arg-max architectures miss a target by more than 5% "
            "(median relative error " + ", ".join(f"{k} {v:+.1%}" for k, v in med.items())
            + "): each target is inside its range, but together they may not be reachable "
              "in this space")


def _one_hot(choices, table: ResourceTable):
    num_ops = next(iter(table.table.values())).shape[1]
    return np.eye(num_ops)[np.asarray(choices, dtype=int)]
