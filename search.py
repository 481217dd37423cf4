"""HourNAS search: vital blocks first, then m space proposals, then the non-vital blocks.

    python search.py --config config/search/fbnet_imagenet.yaml --stage proposals \\
        [--set proposal.targets.params=4.2M --set proposal.targets.flops=260M] \\
        [--output_dir DIR] [--json]

Stages:
  all        (default) the whole search; for now it describes the space and its layers
  proposals  solve the space proposals for the targets (Eq. 7) and report how well the
             architectures sampled from them meet the targets (proposals.npz,
             proposals_report.json, proposals.png in the output folder)

Without --config, config/search/default.yaml is used. The resolved config is saved as
config.yaml in the output folder. Infeasible targets: one 'error:' line with the feasible
range, exit code 2.
"""
from __future__ import annotations

import os
import sys

from src.cli import common_parser, emit_json, log, overrides_from_args, run_main

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(ROOT, "config", "search", "default.yaml")
STAGES = ("all", "proposals")


def describe_space(cfg) -> dict:
    from src.space.space import load_space
    space = load_space(cfg.space, cfg.width_mult)
    labels = lambda idx: [space.layers[i].label for i in idx]  # noqa: E731
    return {"space": space.name, "architectures": space.num_architectures,
            "layers": len(space.layers), "searchable": labels(space.searchable),
            "vital": labels(space.vital_layers()), "nonvital": labels(space.nonvital_layers())}


def main(args) -> int:
    from src.config import load_config, save_config
    from src.search.config import SearchConfig

    cfg = load_config(SearchConfig, args.config or DEFAULT_CONFIG,
                      overrides_from_args(args, SearchConfig))
    out_dir = cfg.output_dir
    if args.stage == "proposals":
        from src.search.proposals_stage import run_proposals_stage
        summary = run_proposals_stage(cfg, out_dir)
        save_config(cfg, os.path.join(out_dir, "config.yaml"))
        summary["config"] = os.path.join(out_dir, "config.yaml")
    else:
        summary = describe_space(cfg)
        log(f"space {summary['space']}: {summary['architectures']:.3g} architectures, "
            f"{summary['layers']} layers, {len(summary['searchable'])} searchable")
        log(f"vital layers (stage 1): {', '.join(summary['vital'])}")
        log(f"non-vital layers (stage 2): {', '.join(summary['nonvital'])}")
        log("the two-stage search arrives with the search engine; for now run "
            "'--stage proposals' to solve the space proposals for the targets")
        summary["stage"] = "all"
    if args.json:
        emit_json(summary)
    return 0


def parser():
    p = common_parser(__doc__)
    p.add_argument("--stage", choices=STAGES, default="all",
                   help="which part of the search to run (default: all)")
    return p


if __name__ == "__main__":
    sys.exit(run_main(main, parser=parser()))
