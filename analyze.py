"""Analyses of trained networks and search runs.

    python analyze.py importance --ckpt runs/train/tiny_best.ckpt          # block importance (Fig. 2)
    python analyze.py hourglass --arch config/arch/fbnet_a.yaml            # params/FLOPs per block
    python analyze.py report --run runs/search                             # one HTML page per search run
    python analyze.py ablations --set-name all --retrain-epochs 2          # Tables 2, 4, 5
    python analyze.py compare --config config/compare/fashion_mnist.yaml --data_path DIR
                                                          # searched nets against random ones

See docs/analysis.md for what each picture shows and how to read it. Exit codes: 0 done,
1 internal error, 2 bad input (or, for importance/ablations, a result that could not be
computed), 130 interrupted.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from src.interrupt import exit_on_interrupt  # noqa: E402

exit_on_interrupt()  # before the heavy imports: Ctrl-C while they load is one line

from src.cli import ArgumentParser, common_parser, emit_json, log, run_main  # noqa: E402
from src.data import DATASETS  # noqa: E402
from src.errors import HourNASError  # noqa: E402

COMMANDS = ("importance", "hourglass", "report", "ablations", "compare")


def _common(sub: argparse.ArgumentParser, flags: tuple[str, ...]) -> None:
    """Give ``sub`` the shared flags of src.cli (same spelling and help) named in ``flags``."""
    for action in common_parser()._actions:
        if action.dest in flags:
            sub._add_action(copy.copy(action))


def _probability(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number; give probabilities in (0, 1]")
    if not 0.0 < p <= 1.0:
        raise argparse.ArgumentTypeError(f"mask probability {p:g} is outside (0, 1]")
    return p


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, allow_abbrev=False,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    subs = p.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", required=True)

    imp = subs.add_parser("importance", allow_abbrev=False,
                          help="accuracy drop when one block's output channels are zeroed at "
                               "random (the paper's Fig. 2)")
    imp.add_argument("--ckpt", required=True, metavar="PATH", help="a training checkpoint (.ckpt)")
    imp.add_argument("--arch", metavar="FILE",
                     help="architecture YAML (default: the record stored in the checkpoint)")
    imp.add_argument("--p", nargs="+", type=_probability, default=[0.3, 0.6, 1.0], metavar="P",
                     help="probabilities of zeroing a channel (default: 0.3 0.6 1.0)")
    imp.add_argument("--seeds", type=int, default=3, metavar="N",
                     help="random masks per block and p (default 3)")
    imp.add_argument("--dataset", choices=DATASETS,
                     help="evaluation data (default: the dataset the checkpoint was trained on)")
    imp.add_argument("--batch_size", type=int, default=128, metavar="B")
    imp.add_argument("--max_images", type=int, metavar="N",
                     help="evaluate on the first N images of the eval split only")
    _common(imp, ("output_dir", "device_target", "data_path", "json", "debug"))

    hg = subs.add_parser("hourglass", allow_abbrev=False,
                         help="parameters and FLOPs per block of an architecture, vital ones marked")
    hg.add_argument("--arch", required=True, metavar="FILE",
                    help="architecture YAML or a reference name (fbnet_a, ...)")
    hg.add_argument("--output", metavar="PNG", help="default: <arch name>_hourglass.png in "
                                                    "--output_dir (default: the current folder)")
    _common(hg, ("output_dir", "json", "debug"))

    rep = subs.add_parser("report", allow_abbrev=False,
                          help="one self-contained HTML page for a search run folder")
    rep.add_argument("--run", required=True, metavar="DIR", help="the search.py --output_dir")
    rep.add_argument("--output", metavar="HTML", help="default: DIR/report.html")
    _common(rep, ("json", "debug"))

    abl = subs.add_parser("ablations", allow_abbrev=False,
                          help="run the ablation configs (config/ablation/) and tabulate them")
    abl.add_argument("--set-name", dest="set_name", default="all",
                     choices=("m", "priori", "sampler", "all"),
                     help="m: Table 2, priori: Table 4, sampler: Table 5, all (default)")
    abl.add_argument("--configs", nargs="+", metavar="NAME",
                     help="run these configs of config/ablation/ instead of a set (e.g. m8)")
    abl.add_argument("--full", action="store_true",
                     help="the full-length configs (config/ablation/full/) instead of the tiny ones")
    abl.add_argument("--retrain-epochs", dest="retrain_epochs", type=int, default=0, metavar="N",
                     help="retrain each derived arch.yaml with train.py for N epochs (0: skip)")
    abl.add_argument("--train-config", dest="train_config", metavar="PATH",
                     help="train.py --config for retraining (default: train.py's own default, "
                          "the digits recipe); dataset and resolution follow the search's")
    abl.add_argument("--reuse", action="store_true",
                     help="keep searches that already finished in --output_dir")
    abl.add_argument("--dry-run", dest="dry_run", action="store_true",
                     help="print the commands, run nothing")
    _common(abl, ("output_dir", "device_target", "data_path", "overrides", "json", "debug"))
    cmp = subs.add_parser("compare", allow_abbrev=False,
                          help="the searched networks against random ones of the same size, "
                               "retrained alike (resumable; docs/results.md)")
    cmp.add_argument("--config", required=True, metavar="YAML",
                     help="a comparison config (config/compare/)")
    cmp.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="run up to N independent steps at once, each on its own core "
                          "(default 1; docs/analysis.md)")
    mode = cmp.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="dry_run", action="store_true",
                      help="print the commands, run nothing")
    mode.add_argument("--report", action="store_true",
                      help="write the table and picture from the steps finished so far (the "
                           "rest marked pending), run nothing")
    _common(cmp, ("output_dir", "device_target", "data_path", "json", "debug"))
    for sub in (imp, hg, rep, abl, cmp):
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
    return p


# ----------------------------------------------------------------------------- commands

def cmd_importance(args) -> int:
    from src.analysis.importance import (EvalSet, block_importance, eval_data_config,
                                         load_trained, verdict_lines, write_importance)
    from src.context import setup_context

    if args.batch_size < 1:
        raise HourNASError(f"--batch_size must be >= 1, got {args.batch_size}")
    setup_context(args.device_target or "CPU", "graph")
    net, arch, extra = load_trained(args.ckpt, args.arch)
    data_cfg = eval_data_config(arch, extra, args.dataset, args.data_path)
    eval_set = EvalSet(data_cfg, args.batch_size, args.max_images)
    log(f"block importance of {arch.name} ({len(arch.layers)} layers) on {data_cfg.name} "
        f"{arch.input_size}x{arch.input_size}: p = {', '.join(f'{p:g}' for p in args.p)}, "
        f"{args.seeds} seed(s), {eval_set.images} images")
    result = block_importance(net, arch, eval_set, args.p, args.seeds, log=log)
    result.checkpoint = os.path.abspath(args.ckpt)
    out_dir = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(args.ckpt)),
                                              "importance")
    paths = write_importance(result, out_dir)
    for line in verdict_lines(result):
        log(line)
    t = result.timing
    log(f"{t['evaluations']} evaluations in {t['total_s']:.1f} s (first, with the graph "
        f"compilation: {t['first_eval_s']:.2f} s; median of the rest {t['eval_s_median'] or 0:.2f} s)")
    log(f"wrote {', '.join(sorted(set(os.path.basename(v) for v in paths.values())))} in {out_dir}")
    if args.json:
        emit_json({"output_dir": out_dir, "files": paths, "baseline_top1": result.baseline_top1,
                   "summary": result.summary(), "timing": t, "rows": len(result.rows)})
    return 0


def cmd_hourglass(args) -> int:
    from src.analysis.hourglass import plot_hourglass
    from src.config import format_size
    from src.space.space import load_arch

    arch = load_arch(args.arch)
    out = args.output or os.path.join(args.output_dir or ".", f"{arch.name}_hourglass.png")
    if not out.lower().endswith(".png"):
        raise HourNASError(f"--output '{out}' must end with .png")
    data = plot_hourglass(arch, out)
    log(f"{arch.name}: {format_size(sum(data['params']))} params, "
        f"{format_size(sum(data['flops']))} FLOPs; vital blocks: "
        + ", ".join(n for n, v in zip(data["name"], data["vital"]) if v))
    log(f"wrote {out}")
    if args.json:
        emit_json({"output": out, **data})
    return 0


def cmd_report(args) -> int:
    from src.analysis.report import build_report

    path, facts = build_report(args.run, args.output)
    if facts["missing"]:
        log(f"missing from {args.run}: {', '.join(facts['missing'])} (the page says so)")
    for p in facts["problems"]:
        log(f"note: {p}")
    log(f"wrote {path} ({len(facts['images'])} pictures)")
    if args.json:
        emit_json(facts)
    return 0


def cmd_ablations(args) -> int:
    from src.analysis.ablation import run_ablations

    passthrough = []
    if args.device_target:
        passthrough += ["--device_target", args.device_target]
    if args.data_path:
        passthrough += ["--data_path", args.data_path]
    search_args = passthrough + [a for item in args.overrides for a in ("--set", item)]
    train_args = passthrough + (["--config", args.train_config] if args.train_config else [])
    out = args.output_dir or os.path.join("runs", "ablations" + ("_full" if args.full else ""))
    rows, paths = run_ablations(args.set_name, out, full=args.full,
                                retrain_epochs=args.retrain_epochs, search_args=search_args,
                                train_args=train_args, reuse=args.reuse, dry_run=args.dry_run,
                                configs=args.configs, log=log)
    if args.dry_run:
        return 0
    with open(paths["markdown"], encoding="utf-8") as f:
        log(f.read().rstrip())
    failed = [r.config for r in rows if r.status != "ok"]
    if args.json:
        from src.analysis.ablation import _flat
        emit_json({"files": paths, "rows": [_flat(r) for r in rows], "failed": failed})
    if failed:
        log(f"error: {len(failed)} of {len(rows)} runs failed ({', '.join(failed)}); "
            f"see search.out / retrain.out in their folders")
        return 2
    return 0


def cmd_compare(args) -> int:
    from src.analysis.compare import run_compare

    result = run_compare(args.config, data_path=args.data_path, output_dir=args.output_dir,
                         device_target=args.device_target, jobs=args.jobs,
                         dry_run=args.dry_run, report_only=args.report, log=log)
    if args.dry_run:
        return 0
    with open(os.path.join(result["output_dir"], "compare.md"), encoding="utf-8") as f:
        log(f.read().rstrip())
    if args.json:
        emit_json(result)
    return 0


def main(args) -> int:
    return {"importance": cmd_importance, "hourglass": cmd_hourglass, "report": cmd_report,
            "ablations": cmd_ablations, "compare": cmd_compare}[args.command](args)


if __name__ == "__main__":
    sys.exit(run_main(main, parser=parser()))
