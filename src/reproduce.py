"""The paper's experiments as one table (config/reproduce.yaml) and the chain that reproduces a
row: search -> retrain -> evaluate -> export -> summary.

``scripts/run_reproduce_{gpu,ascend,cpu}.sh`` drive it; this module decides, for each stage,
whether it is done (its output exists: skipped), can be resumed (its state exists: the same
command with ``--resume``) or starts anew, and builds the command, which always goes through the
existing launchers (``scripts/run_search_*.sh`` and friends: msrun, mpirun fallback).

    python -m src.reproduce list [--json]                     # the rows
    python -m src.reproduce check NAME --device_target GPU --devices 8 --output_dir OUT [--data_path D]
    python -m src.reproduce command NAME STAGE ... (same options)     # NUL-separated argv, or nothing
    python -m src.reproduce summary NAME ... (same options)           # OUT/reproduce_summary.{json,md}

Output folder of a row::

    OUT/search/   search.py's outputs (arch.yaml, summary.json, search_state.ckpt, log/)
    OUT/train/    train.py's (checkpoints, train_log.jsonl, log/train.log, log/eval.log)
    OUT/export/   {arch}.mindir
    OUT/reproduce_summary.json, OUT/reproduce_summary.md
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass, field

from src.context import DEVICE_TARGETS
from src.config import format_size, load_config, read_yaml, to_dict
from src.errors import ConfigError, HourNASError
from src.rundir import ARCH_FILE, SEARCH_STATE_FILE, SUMMARY_FILE, TRAIN_LOG_FILE, best_ckpt_name, searched_arch_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "config", "reproduce.yaml")
STAGES = ("search", "train", "eval", "export", "summary")
TARGETS = {t.lower(): t for t in DEVICE_TARGETS}  # the scripts' suffix -> the device target
SUMMARY_JSON = "reproduce_summary.json"
SUMMARY_MD = "reproduce_summary.md"
MD_HEADER = ("| experiment | paper row | devices | search cost (device-hours) | params | FLOPs "
             "| top-1 (%) | top-5 (%) |\n|---|---|---|---|---|---|---|---|")


# ----------------------------------------------------------------------------- the table

@dataclass
class PaperFigures:
    """One row of the paper, as printed (see config/reproduce.yaml)."""

    row: str
    table: int
    search_gpu_days: float
    params_m: float
    flops_m: float | None = None
    top1: float | None = None
    top5: float | None = None
    test_error: float | None = None

    def validate(self) -> None:
        if (self.top1 is None) == (self.test_error is None):
            raise ConfigError(f"paper row '{self.row}': give top1 (ImageNet tables) or "
                              f"test_error (Table 2), not both or neither")

    @property
    def top1_pct(self) -> float:
        """Top-1 accuracy in %: Table 2 gives the test error instead."""
        return self.top1 if self.top1 is not None else round(100.0 - self.test_error, 2)


@dataclass
class PublishedFigure:
    """A published result on the same data to set beside ours (not the HourNAS paper's),
    e.g. a row of a dataset's own benchmark table."""

    model: str
    top1: float                  # test accuracy, %
    params_m: float | None = None
    note: str = ""


@dataclass
class Experiment:
    description: str
    search: str                  # search config, relative to the repository root
    train: str                   # training recipe, relative to the repository root
    paper: PaperFigures | None = None
    published: list[PublishedFigure] = field(default_factory=list)
    published_source: str = ""   # where the ``published`` figures come from


@dataclass
class ReproduceTable:
    experiments: dict[str, Experiment] = field(default_factory=dict)


def load_table(path: str = TABLE) -> dict[str, Experiment]:
    """The rows of config/reproduce.yaml, checked by the project's config loader."""
    table = load_config(ReproduceTable, path).experiments
    if not table:
        raise ConfigError(f"'{path}' lists no experiments")
    return table


def get_experiment(name: str, path: str = TABLE) -> Experiment:
    table = load_table(path)
    if name not in table:
        import difflib
        hint = difflib.get_close_matches(name, list(table), n=1)
        raise HourNASError(f"unknown experiment '{name}'"
                           + (f" (did you mean '{hint[0]}'?)" if hint else "")
                           + f"; valid: {', '.join(table)}")
    return table[name]


def _abs(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


def load_configs(exp: Experiment, data_path: str | None = None):
    """The row's search and training configs, loaded and checked (with --data_path applied)."""
    from src.search.config import SearchConfig
    from src.train.config import TrainConfig

    extra = [f"data.path={json.dumps(data_path)}"] if data_path else []
    search = load_config(SearchConfig, _abs(exp.search), extra)
    train = load_config(TrainConfig, _abs(exp.train), extra)
    if search.data.name != train.data.name:
        raise ConfigError(f"{exp.search} searches on '{search.data.name}' but {exp.train} trains "
                          f"on '{train.data.name}'; a row must use one dataset")
    return search, train


# ----------------------------------------------------------------------------- stages

@dataclass
class ReproduceRun:
    """One invocation: which row, where, on what."""

    name: str
    exp: Experiment
    output_dir: str
    device_target: str = "GPU"
    devices: int = 1
    data_path: str | None = None

    @property
    def out(self) -> str:
        return os.path.abspath(self.output_dir)

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    @property
    def suffix(self) -> str:
        return self.device_target.lower()

    def arch_name(self) -> str:
        """The searched architecture's name: from OUT/search/arch.yaml once it exists, else what
        the search will call it (``hournas_{space}``, src/search/engine.py)."""
        arch_file = self.path("search", ARCH_FILE)
        if os.path.isfile(arch_file):
            data = read_yaml(arch_file)
            if isinstance(data.get("name"), str):
                return data["name"]
        from src.search.config import SearchConfig
        from src.space.space import load_space

        cfg = load_config(SearchConfig, _abs(self.exp.search))
        return searched_arch_name(load_space(cfg.space, cfg.width_mult).name)

    def best_ckpt(self) -> str:
        return self.path("train", best_ckpt_name(self.arch_name()))

    def data_args(self) -> list[str]:
        return [self.data_path] if self.data_path else []


def _newer_or_same(a: str, b: str) -> bool:
    return os.path.getmtime(a) >= os.path.getmtime(b)


def eval_result(run: ReproduceRun) -> dict | None:
    """The evaluation of the best checkpoint: the last JSON line of OUT/train/log/eval.log if it
    is about the current best checkpoint and newer than it, else None."""
    log_file, ckpt = run.path("train", "log", "eval.log"), run.best_ckpt()
    if not (os.path.isfile(log_file) and os.path.isfile(ckpt)):
        return None
    with open(log_file, encoding="utf-8", errors="replace") as f:
        lines = [ln.strip() for ln in f if ln.strip().startswith("{")]
    for line in reversed(lines):
        try:
            res = json.loads(line)
        except ValueError:
            continue
        if isinstance(res, dict) and "top1" in res:
            if os.path.abspath(res.get("ckpt", "")) == ckpt and _newer_or_same(log_file, ckpt):
                return res
            return None
    return None


def train_done(run: ReproduceRun) -> bool:
    from src.jsonlog import read_jsonl

    records = read_jsonl(run.path("train", TRAIN_LOG_FILE))
    return bool(records) and records[-1].get("event") == "done" and os.path.isfile(run.best_ckpt())


def train_checkpoints(run: ReproduceRun) -> list[str]:
    """Periodic (resumable) checkpoints of this architecture in OUT/train."""
    folder, prefix = run.path("train"), run.arch_name() + "-"
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(".ckpt"))


def stage_state(run: ReproduceRun, stage: str) -> tuple[str, str]:
    """(state, why): state is 'done' (skip), 'resume' or 'new'."""
    if stage == "search":
        arch, summ = run.path("search", ARCH_FILE), run.path("search", SUMMARY_FILE)
        if os.path.isfile(arch) and os.path.isfile(summ):
            return "done", f"{arch} exists"
        state = run.path("search", SEARCH_STATE_FILE)
        if os.path.isfile(state):
            return "resume", f"continuing from {state}"
        return "new", ""
    if stage == "train":
        if train_done(run):
            return "done", f"{run.path('train', 'train_log.jsonl')} ends with 'done'"
        ckpts = train_checkpoints(run)
        if ckpts:
            return "resume", f"continuing from the newest of {', '.join(ckpts)}"
        return "new", ""
    if stage == "eval":
        if eval_result(run) is not None:
            return "done", f"{run.path('train', 'log', 'eval.log')} holds the best checkpoint's result"
        return "new", ""
    if stage == "export":
        mindir, ckpt = run.path("export", f"{run.arch_name()}.mindir"), run.best_ckpt()
        if os.path.isfile(mindir) and (not os.path.isfile(ckpt) or _newer_or_same(mindir, ckpt)):
            return "done", f"{mindir} exists"
        return "new", ""
    if stage == "summary":
        return "new", "always rewritten"
    raise HourNASError(f"unknown stage '{stage}'; valid: {', '.join(STAGES)}")


def stage_command(run: ReproduceRun, stage: str) -> list[str]:
    """The command of a stage (relative paths are from the repository root)."""
    t, n = run.suffix, run.devices
    resume = ["--", "--resume"] if stage_state(run, stage)[0] == "resume" else []
    if stage == "search":
        return ["bash", f"scripts/run_search_{t}.sh", str(n), run.exp.search, run.path("search"),
                *run.data_args(), *resume]
    if stage == "train":
        arch = run.path("search", ARCH_FILE)
        if n == 1:
            return ["bash", f"scripts/run_standalone_train_{t}.sh", arch, run.exp.train,
                    run.path("train"), *run.data_args(), *resume]
        return ["bash", f"scripts/run_distribute_train_{t}.sh", str(n), arch, run.exp.train,
                run.path("train"), *run.data_args(), *resume]
    if stage == "eval":
        return ["bash", f"scripts/run_eval_{t}.sh", run.best_ckpt(), *run.data_args(), "--",
                "--json"]
    if stage == "export":
        return ["python", "export.py", "--ckpt", run.best_ckpt(), "--file_format", "MINDIR",
                "--output_dir", run.path("export"), "--device_target", run.device_target, "--json"]
    if stage == "summary":
        cmd = ["python", "-m", "src.reproduce", "summary", run.name, "--device_target",
               run.device_target, "--devices", str(n), "--output_dir", run.out]
        return cmd + (["--data_path", run.data_path] if run.data_path else [])
    raise HourNASError(f"unknown stage '{stage}'; valid: {', '.join(STAGES)}")


def plan(run: ReproduceRun) -> list[tuple[str, str, str, list[str]]]:
    """[(stage, state, why, command)] of every stage as things stand now."""
    return [(s, *stage_state(run, s), stage_command(run, s)) for s in STAGES]


def check_run(run: ReproduceRun) -> None:
    """Everything that can be checked before a run starts: the configs load, the dataset is
    where the row needs it, the output folder can be written."""
    from src.checkpoint import check_output_dir
    from src.data import dataset_info

    if run.devices < 1:
        raise HourNASError(f"DEVICE_NUM must be >= 1, got {run.devices}")
    search, train = load_configs(run.exp, run.data_path)
    dataset = search.data.name
    if dataset == "digits":
        if run.data_path:
            raise HourNASError(f"experiment '{run.name}' runs on the built-in digits set; give no "
                               f"DATA_PATH")
    elif not run.data_path and not (search.data.path and os.path.isdir(search.data.path)):
        what = {"cifar10": "CIFAR-10's folder (data_batch_1..5.bin, test_batch.bin)",
                "fashion_mnist": "Fashion-MNIST's folder (the four idx files)"}.get(
                    dataset, "ImageNet's folder (train/ and val/ class folders)")
        raise HourNASError(f"experiment '{run.name}' needs DATA_PATH: {what}")
    else:  # DATA_PATH, or the folder the row's config names where it exists (Fashion-MNIST's
        # Debian package)
        dataset_info(search.data)
    for what, batch in (("search.batch_size", search.search.batch_size),
                        ("train.batch_size", train.train.batch_size)):
        if batch % run.devices:
            raise HourNASError(f"{what} {batch} (a global batch) does not divide over "
                               f"{run.devices} devices; choose a device count that divides it")
    check_output_dir(run.out, "OUTPUT_DIR")


# ----------------------------------------------------------------------------- summary

def summarize(run: ReproduceRun) -> dict:
    """What the run gave next to what the paper reports; written as JSON and one Markdown row."""
    from src.checkpoint import atomic_write_text
    from src.resource import count
    from src.space.space import load_arch

    from src.search.folder import read_search_folder

    folder = run.path("search")
    search = read_search_folder(folder, log=False).summary if os.path.isdir(folder) else None
    if search is None:
        raise HourNASError(f"no search result in {run.path('search')} (summary.json); run the "
                           f"search stage first")
    arch_file = run.path("train", ARCH_FILE)
    if not os.path.isfile(arch_file):
        arch_file = run.path("search", ARCH_FILE)
    counted = count(load_arch(arch_file))
    seconds = float(sum(search.get("stage_seconds", {}).values()))
    ev = eval_result(run)
    mindir = run.path("export", f"{run.arch_name()}.mindir")
    p = run.exp.paper
    out = {
        "experiment": run.name, "description": run.exp.description,
        "search_config": run.exp.search, "train_config": run.exp.train,
        "device_target": run.device_target, "devices": run.devices,
        "search": {"stage_seconds": search.get("stage_seconds", {}), "seconds": seconds,
                   "device_hours": seconds * run.devices / 3600.0,
                   "targets": search.get("targets"), "within_tolerance": search.get("within_tolerance"),
                   "ops": search.get("ops")},
        "arch": run.path("search", ARCH_FILE), "params": int(counted["params"]),
        "flops": int(counted["flops"]),
        "top1": ev["top1"] if ev else None, "top5": ev["top5"] if ev else None,
        "eval_images": ev["images"] if ev else None, "best_ckpt": run.best_ckpt(),
        "mindir": mindir if os.path.isfile(mindir) else None,
        "paper": None,
    }
    if p is not None:
        out["paper"] = {"row": p.row, "table": p.table, "search_gpu_days": p.search_gpu_days,
                        "search_gpu_hours": p.search_gpu_days * 24, "params_m": p.params_m,
                        "flops_m": p.flops_m, "top1": p.top1_pct, "top5": p.top5,
                        "test_error": p.test_error}
        out["delta"] = {"top1": None if out["top1"] is None else round(out["top1"] - p.top1_pct, 2),
                        "top5": None if out["top5"] is None or p.top5 is None
                        else round(out["top5"] - p.top5, 2),
                        "params_m": round(out["params"] / 1e6 - p.params_m, 3),
                        "flops_m": None if p.flops_m is None
                        else round(out["flops"] / 1e6 - p.flops_m, 1)}
    out["published"] = [to_dict(f) for f in run.exp.published]
    out["published_source"] = run.exp.published_source
    out["markdown"] = markdown_row(out)
    atomic_write_text(run.path(SUMMARY_JSON), json.dumps(out, indent=2) + "\n")
    atomic_write_text(run.path(SUMMARY_MD), MD_HEADER + "\n" + out["markdown"] + "\n"
                      + published_markdown(out))
    return out


def published_markdown(s: dict) -> str:
    """Published figures on the same data, with ours on top (empty when the row has none)."""
    if not s.get("published"):
        return ""
    ours = "—" if s["top1"] is None else f"{s['top1']:.2f}"
    lines = ["", f"Published figures on the same data ({s['published_source']}):", "",
             "| model | params | test top-1 (%) |", "|---|---|---|",
             f"| **ours: {s['experiment']}** | {format_size(s['params'])} | **{ours}** |"]
    for f in s["published"]:
        params = "—" if f["params_m"] is None else f"{f['params_m']:g}M"
        note = f" ({f['note']})" if f["note"] else ""
        lines.append(f"| {f['model']}{note} | {params} | {f['top1']:g} |")
    return "\n".join(lines) + "\n"


def markdown_row(s: dict) -> str:
    """| experiment | paper row | devices | search cost | params | FLOPs | top-1 | top-5 |,
    ours first, the paper's in parentheses."""
    p = s.get("paper") or {}

    def paper(v, fmt):
        return f" ({fmt.format(v)})" if v is not None else ""

    def ours(v, fmt="{:.2f}"):
        return "—" if v is None else fmt.format(v)

    row = p.get("row")
    hours = s["search"]["device_hours"]
    cost = f"{hours:.2f}" if hours >= 0.1 else f"{hours:.2g}"
    if p:
        cost += f" (paper: {p['search_gpu_hours']:g} = {p['search_gpu_days']:g} GPU-days)"
    cells = [s["experiment"], f"{row} (Table {p['table']})" if row else "—",
             f"{s['devices']} x {s['device_target']}", cost,
             format_size(s["params"]) + paper(p.get("params_m"), "{:g}M"),
             format_size(s["flops"]) + paper(p.get("flops_m"), "{:g}M"),
             ours(s["top1"]) + paper(p.get("top1"), "{:g}"),
             ours(s["top5"]) + paper(p.get("top5"), "{:g}")]
    return "| " + " | ".join(cells) + " |"


# ----------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
    from src.cli import ArgumentParser  # one error line, not argparse's usage block

    p = ArgumentParser(prog="python -m src.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--table", default=TABLE, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="the rows of config/reproduce.yaml")
    ls.add_argument("--json", action="store_true")

    def run_args(sp):
        sp.add_argument("name", metavar="EXPERIMENT")
        sp.add_argument("--device_target", default="GPU", type=lambda s: TARGETS.get(s.lower(), s),
                        choices=sorted(TARGETS.values()))
        sp.add_argument("--devices", type=int, default=1)
        sp.add_argument("--output_dir", required=True)
        sp.add_argument("--data_path", default=None)
        sp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    run_args(sub.add_parser("check", help="check a run's inputs (configs, data, output folder)"))
    cm = sub.add_parser("command", help="a stage's command, NUL-separated; nothing when done")
    cm.add_argument("stage", choices=STAGES)
    run_args(cm)
    pl = sub.add_parser("plan", help="every stage's state and command, one line each")
    run_args(pl)
    run_args(sub.add_parser("summary", help="write OUT/reproduce_summary.{json,md}"))
    return p


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(args) -> int:
    if args.cmd == "list":
        table = load_table(args.table)
        if args.json:
            print(json.dumps({k: to_dict(v) for k, v in table.items()}))
        else:
            for name, exp in table.items():
                tag = f"{exp.paper.row} (Table {exp.paper.table})" if exp.paper else "not a paper row"
                print(f"{name:<25} {tag:<36} {exp.description}")
        return 0
    run = ReproduceRun(args.name, get_experiment(args.name, args.table), args.output_dir,
              args.device_target, args.devices,
              os.path.abspath(args.data_path) if args.data_path else None)
    if args.cmd == "check":
        check_run(run)
        p = run.exp.paper
        _note(f"experiment {run.name}: {run.exp.description}"
              + (f"; the paper's {p.row} (Table {p.table})" if p else "")
              + f"\n  search {run.exp.search}, train {run.exp.train}, {run.devices} x "
                f"{run.device_target}, outputs in {run.out}")
    elif args.cmd == "command":
        state, why = stage_state(run, args.stage)
        if state == "done":
            _note(f"{args.stage}: done ({why}): skipped")
            return 0
        if why and state == "resume":
            _note(f"{args.stage}: {why}")
        sys.stdout.write("\0".join(stage_command(run, args.stage)))
    elif args.cmd == "plan":
        for stage, state, why, cmd in plan(run):
            print(f"{stage:<8}{state:<7}{shlex.join(cmd)}" + (f"   # {why}" if why else ""))
    elif args.cmd == "summary":
        s = summarize(run)
        print(MD_HEADER)
        print(s["markdown"])
        print(published_markdown(s), end="")
        _note(f"summary: {run.path(SUMMARY_JSON)}, {run.path(SUMMARY_MD)}")
    return 0


if __name__ == "__main__":
    from src.interrupt import exit_on_interrupt

    exit_on_interrupt()
    from src.cli import run_main

    sys.exit(run_main(main, parser=_parser()))
