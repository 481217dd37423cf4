"""HourNAS search: vital blocks first, then m space proposals, then the non-vital blocks.

    python search.py --config config/search/fbnet_imagenet.yaml --stage proposals \\
        [--set proposal.targets.params=4.2M --set proposal.targets.flops=260M] \\
        [--output_dir DIR] [--json]

    python search.py                      # the built-in default: a complete search in minutes
    python search.py --config config/search/fbnet_cifar10.yaml --data_path DATA [--resume]
        [--no-vital-priori] [--distributed] [--device_target CPU|GPU|Ascend]

    python search.py --strategy random [--num_archs K] [--output_dir DIR] [--json]
        [--set search.random_fix_vital=runs/search_default/arch.yaml]

Stages:
  all        (default) Algorithm 1: stage 1 searches the vital layers, the space proposals are
             solved for the non-vital ones, stage 2 searches them; writes arch.yaml (retrain it
             with train.py), summary.json, search_log.jsonl, plots and a resumable checkpoint
  describe   print the space: its size, searchable, vital and non-vital layers
  proposals  solve the space proposals for the targets (Eq. 7) and report how well the
             architectures sampled from them meet the targets (proposals.npz,
             proposals_report.json, proposals.png in the output folder)

Strategies:
  hournas    (default) the search above
  random     the baseline: no training; K architectures (search.num_archs, default 5) drawn
             uniformly among those within search.tolerance of proposal.targets, with
             search.seed; search.random_fix_vital (an arch.yaml of the same space) keeps its
             vital ops. Writes random_01.yaml .. random_K.yaml (retrain each with train.py),
             random_archs.json and config.yaml; rerunning the same command changes nothing

Without --config, config/search/default.yaml is used. The resolved config is saved as
config.yaml in the output folder. Infeasible targets: one 'error:' line with the feasible
range, exit code 2.
"""
from __future__ import annotations

import os
import sys

from src.interrupt import exit_on_interrupt

exit_on_interrupt()  # before the heavy imports: Ctrl-C while they load is one line

from src.cli import common_parser, emit_json, log, overrides_from_args, run_main  # noqa: E402
from src.rundir import ARCH_FILE, CONFIG_FILE

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(ROOT, "config", "search", "default.yaml")
STAGES = ("all", "describe", "proposals")


def describe_space(cfg) -> dict:
    from src.space.space import load_space
    space = load_space(cfg.space, cfg.width_mult)
    labels = lambda idx: [space.layers[i].label for i in idx]  # noqa: E731
    return {"space": space.name, "architectures": space.num_architectures,
            "layers": len(space.layers), "searchable": labels(space.searchable),
            "vital": labels(space.vital_layers()), "nonvital": labels(space.nonvital_layers())}


def run_full_search(cfg, args) -> dict:
    from src.context import setup_context
    from src.search.engine import run_search

    facts = setup_context(cfg.device_target, mode="pynative", distributed=args.distributed)
    out_dir = cfg.output_dir
    if facts["group_size"] > 1:
        log(f"rank {facts['rank']} of {facts['group_size']}")
    summary = run_search(cfg, out_dir, args.resume, facts)
    arch = os.path.join(out_dir, ARCH_FILE)
    log(f"architecture: {arch}")
    log("ops: " + " ".join(summary["ops"]))
    log(f"retrain it: python train.py --arch {arch}")
    return summary


def run_random(cfg, args) -> dict:
    """--strategy random: the baseline (src.search.random_baseline), no training."""
    from src.errors import HourNASError
    from src.search.random_baseline import run_random_baseline

    for flag, given in (("--stage " + args.stage, args.stage != "all"),
                        ("--resume", args.resume), ("--distributed", args.distributed)):
        if given:
            raise HourNASError(f"{flag} does not apply to --strategy random (it draws "
                               f"architectures and trains nothing; rerunning it is a no-op)")
    return run_random_baseline(cfg, cfg.output_dir)


def main(args) -> int:
    from src.config import load_config, save_config
    from src.errors import HourNASError
    from src.search.config import SearchConfig

    overrides = overrides_from_args(args, SearchConfig)
    # flags are overrides: validated with the rest, saved as run; --set wins
    if args.no_vital_priori:
        overrides.insert(0, "search.vital_priori=false")
    if args.strategy is not None:
        overrides.insert(0, f"search.strategy={args.strategy}")
    if args.num_archs is not None:
        overrides.insert(0, f"search.num_archs={args.num_archs}")
    cfg = load_config(SearchConfig, args.config or DEFAULT_CONFIG, overrides)
    if args.num_archs is not None and cfg.search.strategy != "random":
        raise HourNASError("--num_archs applies to --strategy random only")
    out_dir = cfg.output_dir
    if args.stage != "describe":
        from src.checkpoint import check_output_dir
        check_output_dir(out_dir)
    if cfg.search.strategy == "random":
        summary = run_random(cfg, args)
        if args.json:
            emit_json(summary)
        return 0
    if args.verify_data and args.stage == "all":
        from src.data import verify_dataset
        verify_dataset(cfg.data, log)
    if args.stage == "proposals":
        from src.search.proposals_stage import run_proposals_stage
        summary = run_proposals_stage(cfg, out_dir)
        save_config(cfg, os.path.join(out_dir, CONFIG_FILE))
        summary["config"] = os.path.join(out_dir, CONFIG_FILE)
    elif args.stage == "describe":
        summary = describe_space(cfg)
        log(f"space {summary['space']}: {summary['architectures']:.3g} architectures, "
            f"{summary['layers']} layers, {len(summary['searchable'])} searchable")
        log(f"vital layers (stage 1): {', '.join(summary['vital'])}")
        log(f"non-vital layers (stage 2): {', '.join(summary['nonvital'])}")
    else:
        summary = run_full_search(cfg, args)
    if args.json:
        emit_json(summary)
    return 0


def parser():
    from src.search.config import STRATEGIES
    p = common_parser(__doc__)
    p.add_argument("--stage", choices=STAGES, default="all",
                   help="which part of the search to run (default: all)")
    p.add_argument("--verify-data", dest="verify_data", action="store_true",
                   help="decode every image of the dataset first (in parallel, progress "
                        "on stderr); one error names the broken ones (by default a large image "
                        "folder is checked on a random sample)")
    p.add_argument("--resume", action="store_true",
                   help="continue the search in --output_dir from its checkpoint")
    p.add_argument("--no-vital-priori", dest="no_vital_priori", action="store_true",
                   help="ablation (Table 4): one stage over all layers, no vital-block priori")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel worker under msrun/mpirun (see scripts/)")
    p.add_argument("--strategy", choices=STRATEGIES, default=None,
                   help="hournas: the search (default); random: the baseline, architectures "
                        "drawn uniformly among those that meet the targets, no training "
                        "(config key search.strategy)")
    p.add_argument("--num_archs", type=int, default=None, metavar="K",
                   help="--strategy random: how many architectures to draw (config key "
                        "search.num_archs, default 5)")
    return p


if __name__ == "__main__":
    sys.exit(run_main(main, parser=parser()))
