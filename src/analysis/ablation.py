"""The paper's ablations as ready configs plus a runner (Sec. 4.3; Tables 2, 4, 5).

Configs live in ``config/ablation/`` (tiny: built on ``config/search/default.yaml``, CI-sized)
and ``config/ablation/full/`` (built on ``config/search/fbnet_cifar10.yaml``):

* ``m``:       m1, m2, m4, m8, m16 -- the number of space proposals (Table 2)
* ``priori``:  m8 vs no_vital_priori -- search.vital_priori (Table 4)
* ``sampler``: m8 vs gumbel_softmax -- search.sampler (Table 5)

m8 (the paper's setting: 8 proposals, vital priori, Gumbel-Max) is the shared baseline. Each
config runs as ``python search.py --config C --output_dir D/NAME --json`` in a subprocess (its
output in D/NAME/search.out), optionally followed by ``python train.py --arch D/NAME/arch.yaml
--epochs N`` on the search's dataset and resolution; the results go into one table (Markdown and CSV).
"""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from src.rundir import ARCH_FILE, CONFIG_FILE, SUMMARY_FILE, lock_output_dir
from src.config import format_size, read_yaml
from src.errors import HourNASError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ABLATION_DIR = os.path.join(ROOT, "config", "ablation")
SETS = {
    "m": ["m1", "m2", "m4", "m8", "m16"],
    "priori": ["m8", "no_vital_priori"],
    "sampler": ["m8", "gumbel_softmax"],
}
SET_NAMES = tuple(SETS) + ("all",)
WHAT = {"m": "Table 2: number of space proposals m",
        "priori": "Table 4: with / without the vital-block priori",
        "sampler": "Table 5: Gumbel-Max / Gumbel-softmax"}


class AblationUnavailable(HourNASError):
    """A piece the runner needs (search.py, a base config) is not in this checkout."""


def available_configs(full: bool = False) -> list[str]:
    folder = os.path.join(ABLATION_DIR, "full") if full else ABLATION_DIR
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml"))


def config_names(set_name: str) -> list[str]:
    if set_name == "all":
        names: list[str] = []
        for group in SETS.values():
            names += [n for n in group if n not in names]
        return names
    if set_name not in SETS:
        raise HourNASError(f"unknown ablation set '{set_name}'; valid: {', '.join(SET_NAMES)}")
    return list(SETS[set_name])


def config_path(name: str, full: bool = False) -> str:
    return os.path.join(ABLATION_DIR, "full" if full else "", f"{name}.yaml")


def _bases(path: str) -> list[str]:
    data = read_yaml(path)
    bases = data.get("_base_") or []
    bases = [bases] if isinstance(bases, str) else list(bases)
    return [b if os.path.isabs(b) else os.path.normpath(os.path.join(os.path.dirname(path), b))
            for b in bases]


def check_available(names: list[str], full: bool, retrain: bool) -> None:
    """Raise AblationUnavailable naming the first missing piece (entry point or base config)."""
    script = os.path.join(ROOT, "search.py")
    if not os.path.isfile(script):
        raise AblationUnavailable("search.py is not in this checkout yet: the ablation runner "
                                  "runs each config through 'python search.py --config ...'")
    if retrain and not os.path.isfile(os.path.join(ROOT, "train.py")):
        raise AblationUnavailable("train.py is not in this checkout: --retrain-epochs needs it")
    for name in names:
        path = config_path(name, full)
        if not os.path.isfile(path):
            raise HourNASError(f"ablation config '{path}' is missing")
        for base in _bases(path):
            if not os.path.isfile(base):
                raise AblationUnavailable(
                    f"'{os.path.relpath(path, ROOT)}' builds on '{os.path.relpath(base, ROOT)}', "
                    f"which is not in this checkout yet")


@dataclass
class AblationRow:
    config: str
    m: int | None = None
    vital_priori: bool | None = None
    sampler: str | None = None
    targets: dict = field(default_factory=dict)
    achieved: dict = field(default_factory=dict)
    relative_error: dict = field(default_factory=dict)
    stage_seconds: dict = field(default_factory=dict)
    search_wall_s: float | None = None
    retrain_top1: float | None = None
    retrain_epochs: int | None = None
    status: str = "ok"
    run_dir: str = ""


def read_row(name: str, run_dir: str) -> AblationRow:
    """What a finished search run folder says (config.yaml + summary.json, through the one
    reader of a search folder)."""
    from src.search.folder import read_search_folder

    row = AblationRow(config=name, run_dir=run_dir)
    folder = read_search_folder(run_dir, log=False) if os.path.isdir(run_dir) else None
    cfg = (folder.config if folder else None) or {}
    row.m = (cfg.get("proposal") or {}).get("m")
    row.vital_priori = (cfg.get("search") or {}).get("vital_priori")
    row.sampler = (cfg.get("search") or {}).get("sampler")
    s = folder.summary if folder else None
    if s is None:
        row.status = f"no {SUMMARY_FILE}"
        return row
    row.targets = {k: float(v) for k, v in (s.get("targets") or {}).items()}
    row.achieved = {k: float(v) for k, v in (s.get("achieved") or {}).items()}
    row.relative_error = {k: float(v) for k, v in (s.get("relative_error") or {}).items()}
    row.stage_seconds = {k: float(v) for k, v in (s.get("stage_seconds") or {}).items()}
    return row


COLUMNS = ("config", "m", "vital_priori", "sampler", "target_params", "target_flops",
           "achieved_params", "achieved_flops", "params_error", "flops_error",
           "stage1_vital_s", "stage2_s", "search_wall_s", "retrain_epochs", "retrain_top1",
           "status")


def _flat(row: AblationRow) -> dict:
    st = row.stage_seconds
    stage2 = st.get("nonvital", st.get("single"))
    return {"config": row.config, "m": row.m, "vital_priori": row.vital_priori,
            "sampler": row.sampler,
            "target_params": row.targets.get("params"), "target_flops": row.targets.get("flops"),
            "achieved_params": row.achieved.get("params"),
            "achieved_flops": row.achieved.get("flops"),
            "params_error": row.relative_error.get("params"),
            "flops_error": row.relative_error.get("flops"),
            "stage1_vital_s": st.get("vital"), "stage2_s": stage2,
            "search_wall_s": row.search_wall_s, "retrain_epochs": row.retrain_epochs,
            "retrain_top1": row.retrain_top1, "status": row.status}


def table_csv(rows: list[AblationRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        d = _flat(r)
        w.writerow(["" if d[c] is None else (f"{d[c]:.6g}" if isinstance(d[c], float) else d[c])
                    for c in COLUMNS])
    return buf.getvalue()


def table_markdown(rows: list[AblationRow], title: str) -> str:
    def size(v):
        return "—" if v is None else format_size(v)

    def sec(v):
        return "—" if v is None else f"{v:.1f}"

    def pct(v):
        return "" if v is None else f" ({v:+.1%})"

    head = ("| config | m | vital priori | sampler | params: target → achieved | "
            "FLOPs: target → achieved | stage 1 (s) | stage 2 (s) | search wall (s) | "
            "retrained top-1 (%) | status |")
    lines = [f"# {title}", "", head, "|" + "---|" * 11]
    for r in rows:
        d = _flat(r)
        top1 = "—" if d["retrain_top1"] is None else \
            f"{d['retrain_top1']:.2f} ({d['retrain_epochs']} ep)"
        lines.append(
            f"| {d['config']} | {d['m'] if d['m'] is not None else '—'} | "
            f"{'—' if d['vital_priori'] is None else ('yes' if d['vital_priori'] else 'no')} | "
            f"{d['sampler'] or '—'} | {size(d['target_params'])} → "
            f"{size(d['achieved_params'])}{pct(d['params_error'])} | "
            f"{size(d['target_flops'])} → {size(d['achieved_flops'])}{pct(d['flops_error'])} | "
            f"{sec(d['stage1_vital_s'])} | {sec(d['stage2_s'])} | {sec(d['search_wall_s'])} | "
            f"{top1} | {d['status']} |")
    return "\n".join(lines) + "\n"


def _tail(path: str, n: int = 3) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return ""
    errs = [ln for ln in lines if ln.startswith("error:")]
    return (errs[-1] if errs else " | ".join(lines[-n:]))[:300]


def _run(cmd: list[str], log_path: str) -> tuple[int, str | None, float]:
    """Run ``cmd`` in the foreground from the repository root, stdout+stderr to ``log_path``;
    returns (exit code, last stdout line that parses as a JSON object, seconds)."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    t0 = time.perf_counter()
    stopped = []
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)

        def forward(signum, _frame):  # let the child save its state and stop cleanly
            stopped.append(signum)
            proc.send_signal(signum)

        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            stdout, _ = proc.communicate()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        log.write(stdout)
    if stopped:
        raise KeyboardInterrupt(f"stopped by signal {stopped[0]}; the interrupted run is in "
                                f"{os.path.dirname(log_path)}")
    last = None
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            last = line
            break
    return proc.returncode, last, time.perf_counter() - t0


def same_data(run_dir: str) -> list[str]:
    """train.py overrides that retrain on the search's dataset at the search's resolution."""
    path = os.path.join(run_dir, CONFIG_FILE)
    data = (read_yaml(path).get("data") or {}) if os.path.isfile(path) else {}
    out = []
    for key in ("name", "image_size"):
        if data.get(key) is not None:
            out += ["--set", f"data.{key}={data[key]}"]
    return out


def search_command(name: str, full: bool, run_dir: str, extra: list[str]) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "search.py"), "--config", config_path(name, full),
            "--output_dir", run_dir, "--json"] + extra


def train_command(arch_yaml: str, epochs: int, out_dir: str, extra: list[str]) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "train.py"), "--arch", arch_yaml, "--epochs",
            str(epochs), "--output_dir", out_dir, "--json"] + extra


def _check_request(names: list[str], full: bool, retrain_epochs: int) -> None:
    for name in names:
        if name not in available_configs(full):
            raise HourNASError(f"unknown ablation config '{name}'; valid: "
                               f"{', '.join(available_configs(full))}")
    if retrain_epochs < 0:
        raise HourNASError(f"--retrain-epochs must be >= 0, got {retrain_epochs}")


def _print_commands(names: list[str], output_dir: str, full: bool, retrain_epochs: int,
                    search_args: list[str], train_args: list[str],
                    log: Callable[[str], None]) -> None:
    """--dry-run: the commands each config would run, nothing else."""
    for name in names:
        run_dir = os.path.join(output_dir, name)
        log(" ".join(search_command(name, full, run_dir, search_args)))
        if retrain_epochs:
            log(" ".join(train_command(os.path.join(run_dir, ARCH_FILE), retrain_epochs,
                                       os.path.join(run_dir, "retrain"), train_args)))


def _search_row(name: str, label: str, run_dir: str, full: bool, reuse: bool,
                search_args: list[str], log: Callable[[str], None]) -> AblationRow:
    """Search one config (or reuse its finished search); its row, failed or not."""
    wall = None
    if reuse and os.path.isfile(os.path.join(run_dir, SUMMARY_FILE)):
        log(f"{label} {name}: reusing the finished search in {run_dir}")
    else:
        log(f"{label} {name}: searching ({os.path.relpath(config_path(name, full), ROOT)})")
        code, _, wall = _run(search_command(name, full, run_dir, search_args),
                             os.path.join(run_dir, "search.out"))
        if code != 0:
            row = read_row(name, run_dir)
            row.status = f"search failed (exit {code}): {_tail(os.path.join(run_dir, 'search.out'))}"
            row.search_wall_s = wall
            log(f"  {row.status}")
            return row
    row = read_row(name, run_dir)
    row.search_wall_s = wall
    if row.status == "ok":
        log(f"  params {format_size(row.achieved.get('params', 0))}, FLOPs "
            f"{format_size(row.achieved.get('flops', 0))}; stage seconds "
            + ", ".join(f"{s} {v:.1f}" for s, v in row.stage_seconds.items()))
    return row


def _retrain_row(row: AblationRow, run_dir: str, retrain_epochs: int, train_args: list[str],
                 log: Callable[[str], None]) -> None:
    """Retrain a searched row's architecture; its top-1 (or the failure) goes into ``row``."""
    arch_yaml = os.path.join(run_dir, ARCH_FILE)
    out = os.path.join(run_dir, "retrain")
    log(f"  retraining {arch_yaml} for {retrain_epochs} epoch(s)")
    code, last, _ = _run(train_command(arch_yaml, retrain_epochs, out,
                                       train_args + same_data(run_dir)),
                         os.path.join(run_dir, "retrain.out"))
    row.retrain_epochs = retrain_epochs
    if code == 0 and last:
        row.retrain_top1 = json.loads(last).get("best_top1")
        log(f"  retrained top-1 {row.retrain_top1:.2f}%")
    else:
        row.status = f"retrain failed (exit {code}): {_tail(os.path.join(run_dir, 'retrain.out'))}"
        log(f"  {row.status}")


def _title(set_name: str, configs: list[str] | None, full: bool) -> str:
    if configs:
        what = ", ".join(configs)
    elif set_name == "all":
        what = "all: " + "; ".join(WHAT.values())
    else:
        what = f"{set_name}: {WHAT[set_name]}"
    return f"HourNAS ablations ({what}; {'full' if full else 'tiny'} configs)"


def run_ablations(set_name: str, output_dir: str, *, full: bool = False,
                  retrain_epochs: int = 0, search_args: list[str] | None = None,
                  train_args: list[str] | None = None, reuse: bool = False,
                  dry_run: bool = False, configs: list[str] | None = None,
                  log: Callable[[str], None] = print) -> tuple[list[AblationRow], dict]:
    """Run every config of ``set_name`` (or the named ``configs``); write ablations.md /
    ablations.csv in ``output_dir``.
    Returns (rows, paths). A failed run is a row with its status; the caller decides the
    exit code."""
    from src.checkpoint import atomic_write_text

    names = list(configs) if configs else config_names(set_name)
    _check_request(names, full, retrain_epochs)
    search_args, train_args = list(search_args or []), list(train_args or [])
    from src.checkpoint import check_output_dir
    check_output_dir(output_dir)  # a dry run refuses what the real run would
    if dry_run:
        _print_commands(names, output_dir, full, retrain_epochs, search_args, train_args, log)
        return [], {}
    check_available(names, full, retrain_epochs > 0)
    lock_output_dir(output_dir, "ablation run")  # makes the folder; one run at a time
    rows = []
    for k, name in enumerate(names, 1):
        run_dir = os.path.join(output_dir, name)
        row = _search_row(name, f"[{k}/{len(names)}]", run_dir, full, reuse, search_args, log)
        if retrain_epochs and row.status == "ok":
            _retrain_row(row, run_dir, retrain_epochs, train_args, log)
        rows.append(row)
    paths = {"markdown": os.path.join(output_dir, "ablations.md"),
             "csv": os.path.join(output_dir, "ablations.csv")}
    atomic_write_text(paths["markdown"], table_markdown(rows, _title(set_name, configs, full)))
    atomic_write_text(paths["csv"], table_csv(rows))
    return rows, paths
