"""The random baseline: ``python search.py --strategy random [--num_archs K]``.

The standard test of a NAS method compares its architecture with architectures drawn at random
among those of the same size. This draws K of them, uniformly among the architectures of the
run's space whose every objective lies within ``search.tolerance`` of ``proposal.targets``
(``src.search.random_archs``), with ``search.seed``; it trains nothing. The space is matched
to the dataset as the search does (``src.search.engine.prepare_space``), so the draws are
architectures of the same space, classes and input size as the search's. With
``search.random_fix_vital: PATH`` (an arch.yaml of the same space, e.g. a search's result) the
vital layers keep that file's ops, so the draws differ from it only in the non-vital layers.

Writes into ``output_dir``:

- ``random_01.yaml`` .. ``random_K.yaml``  architecture records in the format of a search's
  ``arch.yaml`` (retrain each with ``train.py --arch``)
- ``random_archs.json``  the request, how the draws were made (method, draws, acceptance
  rate) and per architecture its file, ops, params, FLOPs and relative errors
- ``config.yaml``        the resolved config

A folder that already holds the draws of the same request is left as it is and the result is
printed again; one that holds another request's draws, or another run, is refused.
"""
from __future__ import annotations

import json
import os
import time

from src.rundir import ARCH_FILE, CONFIG_FILE, SEARCH_STATE_FILE, SUMMARY_FILE, lock_output_dir
from src.checkpoint import atomic_write_text
from src.config import dump_config, format_size, save_config
from src.errors import HourNASError, ResourceTargetError
from src.resource import count
from src.runlog import config_changes, log
from src.search.config import SearchConfig
from src.search.derive import relative_errors
from src.search.engine import objective_tables, prepare_space, search_targets
from src.search.random_archs import RandomArchs, sample_feasible
from src.space.space import Space, arch_to_yaml, load_arch

REPORT = "random_archs.json"
CONFIG = CONFIG_FILE
SEARCH_FILES = (SEARCH_STATE_FILE, ARCH_FILE, SUMMARY_FILE)  # a search's run folder


def run_random_baseline(cfg: SearchConfig, output_dir: str) -> dict:
    """Draw ``search.num_archs`` architectures for the targets and write them (see above);
    returns the summary (``random_archs.json``'s content and the folder)."""
    space, cfg = prepare_space(cfg)
    p, targets = cfg.search, search_targets(cfg)
    fixed = vital_ops_from(space, p.random_fix_vital) if p.random_fix_vital else {}
    request = _request(space, targets, cfg, fixed)
    log(f"random baseline in space {space.name}: {p.num_archs} architecture(s) drawn uniformly "
        f"among those within ±{p.tolerance * 100:g}% of " + ", ".join(
            f"{k} {_fmt(k, v)}" for k, v in targets.items())
        + (f"; vital ops of '{p.random_fix_vital}' fixed: "
           + ", ".join(f"{k}={v}" for k, v in request["fixed"].items()) if fixed else ""))
    done = _previous(output_dir, request, cfg)
    if done is None:
        t0 = time.perf_counter()
        try:
            drawn = sample_feasible(space, targets, p.tolerance, p.num_archs, p.seed, fixed,
                                    extra_tables=objective_tables(cfg, space))
        except ResourceTargetError as e:
            if not fixed:
                raise
            raise ResourceTargetError(f"the vital ops of search.random_fix_vital "
                                      f"'{p.random_fix_vital}' leave the targets unreachable: "
                                      f"{e}") from None
        records = [_record(space, drawn, j, targets, cfg, request["fixed"])
                   for j in range(p.num_archs)]
        done = _summary(space, request, cfg, drawn, records, time.perf_counter() - t0)
        _write(output_dir, records, done, cfg)
    else:
        log(f"'{output_dir}' already holds these draws ({REPORT}); nothing to do")
    for line in report_lines(done):
        log(line)
    return dict(done, output_dir=output_dir)


def vital_ops_from(space: Space, path: str) -> dict[int, int]:
    """{layer index: op index} of ``space``'s vital layers in the architecture file ``path``
    (e.g. a search's arch.yaml); the file must be an architecture of this space."""
    where = f"search.random_fix_vital '{path}'"
    try:
        arch = load_arch(path)
    except HourNASError as e:
        raise HourNASError(f"search.random_fix_vital: {e}") from None
    if arch.space is not None and arch.space != space.name:
        raise HourNASError(f"{where} is an architecture of space '{arch.space}', not of this "
                           f"run's space '{space.name}'; give an architecture of '{space.name}' "
                           f"(e.g. the arch.yaml of a search in it)")
    shape = lambda net: [(layer.c_out, layer.stride) for layer in net.layers]  # noqa: E731
    if arch.input_size != space.input_size or shape(arch) != shape(space):
        raise HourNASError(f"{where} ({len(arch.layers)} layers at {arch.input_size}x"
                           f"{arch.input_size}) does not have the layers of space '{space.name}' "
                           f"({len(space.layers)} layers at {space.input_size}x"
                           f"{space.input_size}); give an architecture of this space")
    try:
        choices = space.choices_of(arch)
    except HourNASError as e:
        raise HourNASError(f"{where}: {e}") from None
    return {i: choices[i] for i in space.vital_layers()}


def _request(space: Space, targets: dict, cfg: SearchConfig, fixed: dict[int, int]) -> dict:
    """What decides the draws: a folder holding the same request needs no new ones."""
    p = cfg.search
    return {"space": space.name, "targets": targets, "tolerance": p.tolerance, "seed": p.seed,
            "num_archs": p.num_archs,
            "fixed": {space.layers[i].label: space.layers[i].ops[o].name
                      for i, o in sorted(fixed.items())} or None}


def _previous(output_dir: str, request: dict, cfg: SearchConfig) -> dict | None:
    """The summary of the same request's draws in ``output_dir``, None when there are none;
    raises if the folder holds another request's draws or another run."""
    report = os.path.join(output_dir, REPORT)
    if os.path.isfile(report):
        try:
            with open(report, encoding="utf-8") as f:
                done = json.load(f)
            there = done["request"]
        except (ValueError, KeyError, TypeError):
            raise HourNASError(f"'{report}' is unreadable; remove it or choose another "
                               f"--output_dir") from None
        diff = config_changes(there, json.loads(json.dumps(request)))
        if diff:
            shown = "; ".join(f"{k}: there {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise HourNASError(f"'{output_dir}' already holds random draws of another request "
                               f"({shown}); choose another --output_dir")
        return done
    config = os.path.join(output_dir, CONFIG)
    held = [f for f in SEARCH_FILES if os.path.exists(os.path.join(output_dir, f))]
    if not held and os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            same = f.read() == dump_config(cfg)  # the same request, stopped while writing
        held = [] if same else [CONFIG]
    if held:
        raise HourNASError(f"'{output_dir}' already holds another run ({', '.join(held)}); "
                           f"choose another --output_dir for the random baseline")
    return None


def _record(space: Space, drawn: RandomArchs, j: int, targets: dict, cfg: SearchConfig,
            fixed_ops: dict | None):
    """Architecture j as a record (arch.yaml's format), its counts checked against the table."""
    p = cfg.search
    cost = drawn.costs[j]
    meta = {"targets": targets, "achieved": None, "relative_error": None, "seed": p.seed,
            "strategy": "random", "index": j + 1, "tolerance": p.tolerance,
            "method": drawn.method}
    if fixed_ops:
        meta.update(fixed_vital=fixed_ops, fixed_from=p.random_fix_vital)
    arch = space.arch(drawn.choices[j], name=f"random_{space.name}_{j + 1:02d}", meta=meta)
    counted = count(arch)
    for o in set(cost) & set(counted):
        if counted[o] != cost[o]:  # the table and the record must be the same network
            raise AssertionError(f"{arch.name}: {o} counted {counted[o]}, table {cost[o]}")
    achieved = {o: float(counted[o]) if o in counted else cost[o] for o in targets}
    arch.meta["achieved"] = achieved
    arch.meta["relative_error"] = {k: round(v, 5) for k, v in relative_errors(
        achieved, targets).items()}
    return arch


def _summary(space: Space, request: dict, cfg: SearchConfig, drawn: RandomArchs,
             records: list, seconds: float) -> dict:
    """``random_archs.json``: the request, how it was drawn, and the architectures."""
    archs = []
    for j, arch in enumerate(records):
        counted = count(arch)
        archs.append({"file": _file(j), "name": arch.name,
                      "ops": [op.name for op in arch.ops], "params": int(counted["params"]),
                      "flops": int(counted["flops"]), "achieved": arch.meta["achieved"],
                      "relative_error": relative_errors(arch.meta["achieved"],
                                                        request["targets"])})
    return {"strategy": "random", "space": space.name, "request": request,
            "fixed_from": cfg.search.random_fix_vital, **drawn.report(),
            "seconds": round(seconds, 4), "archs": archs, "config": CONFIG}


def _write(output_dir: str, records: list, summary: dict, cfg: SearchConfig) -> None:
    """The records, the config, and the report last (its presence marks a finished draw)."""
    lock_output_dir(output_dir, "random draw")  # makes the folder; one run at a time
    for j, arch in enumerate(records):
        atomic_write_text(os.path.join(output_dir, _file(j)),
                          f"# Drawn at random (the baseline) in {arch.space}\n"
                          + arch_to_yaml(arch))
    save_config(cfg, os.path.join(output_dir, CONFIG))
    atomic_write_text(os.path.join(output_dir, REPORT), json.dumps(summary, indent=2) + "\n")


def report_lines(summary: dict) -> list[str]:
    """What the command prints about the draws (the same on a rerun)."""
    targets = summary["request"]["targets"]
    lines = [f"drawn by {summary['method']}: {summary['draws']:,} uniform draws, "
             f"{summary['feasible_draws']:,} within the targets (acceptance rate "
             f"{summary['acceptance_rate']:.3%})"
             + (f", then {summary['chain']['steps']:,} chain steps" if "chain" in summary
                else "") + f", {summary['seconds']:.2f} s"]
    for a in summary["archs"]:
        lines.append(f"{a['file']}: " + ", ".join(
            f"{k} {_fmt(k, a['achieved'][k])} ({a['relative_error'][k]:+.2%})" for k in targets)
            + "  ops: " + " ".join(a["ops"]))
    return lines


def _file(j: int) -> str:
    return f"random_{j + 1:02d}.yaml"


def _fmt(objective: str, value: float) -> str:
    return f"{value:.3f} ms" if objective == "latency" else format_size(value)
