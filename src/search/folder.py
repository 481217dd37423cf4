"""The one typed reader of a search's run folder (what ``search.py`` writes there:
``src.search.outputs`` and ``src.search.state``; the names are ``src.rundir``'s). The report,
the ablation runner and the reproduction runner read a search through it."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from src.config import parse_size
from src.errors import HourNASError
from src.rundir import ARCH_FILE, ARCH_PARAMS_FILE, CONFIG_FILE, SEARCH_LOG_FILE, SUMMARY_FILE

FILES = {
    CONFIG_FILE: "the resolved search config (space and targets)",
    SEARCH_LOG_FILE: "the per-step search log (sampled paths, losses, τ)",
    ARCH_PARAMS_FILE: "the final architecture parameters θ (and Π)",
    ARCH_FILE: "the derived architecture",
    SUMMARY_FILE: "the run summary (targets, achieved cost, stage times)",
}


@dataclass
class SearchFolder:
    """What a search's run folder holds, as :func:`read_search_folder` found it."""

    folder: str
    config: dict | None = None
    log: list[dict] | None = None
    params: dict | None = None
    arch: object | None = None
    summary: dict | None = None
    space: object | None = None
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[dict]:
        return [r for r in (self.log or []) if "global_step" in r and "event" not in r]

    def targets(self) -> dict[str, float]:
        if self.summary and isinstance(self.summary.get("targets"), dict):
            return {k: float(v) for k, v in self.summary["targets"].items()}
        raw = ((self.config or {}).get("proposal") or {}).get("targets") or {}
        out = {}
        for k, v in raw.items():
            try:
                out[k] = float(parse_size(v, f"proposal.targets.{k}"))
            except HourNASError:
                pass
        return out


def read_search_folder(folder: str, log: bool = True) -> SearchFolder:
    """Everything readable in a search's run folder (``log=False``: all but the per-step log,
    for readers that need only the result); what is missing or unreadable is listed."""
    import yaml
    if not os.path.isdir(folder):
        raise HourNASError(f"run folder '{folder}' does not exist; give the --output_dir of a "
                           f"search.py run")
    run = SearchFolder(folder)
    for name in FILES:
        if not os.path.isfile(os.path.join(folder, name)):
            run.missing.append(name)
    path = lambda n: os.path.join(folder, n)  # noqa: E731
    if CONFIG_FILE not in run.missing:
        try:
            with open(path(CONFIG_FILE), encoding="utf-8") as f:
                run.config = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            run.problems.append(f"config.yaml is unreadable: {_first_line(e)}")
    if log and SEARCH_LOG_FILE not in run.missing:
        run.log, bad = [], 0
        with open(path(SEARCH_LOG_FILE), encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    run.log.append(json.loads(line))
                except ValueError:
                    bad += 1
        if bad:
            run.problems.append(f"search_log.jsonl: {bad} unreadable line(s) skipped")
    if ARCH_PARAMS_FILE not in run.missing:
        try:
            with np.load(path(ARCH_PARAMS_FILE), allow_pickle=False) as data:
                run.params = {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError) as e:
            run.problems.append(f"arch_params.npz is unreadable: {_first_line(e)}")
    if SUMMARY_FILE not in run.missing:
        try:
            with open(path(SUMMARY_FILE), encoding="utf-8") as f:
                run.summary = json.load(f)
        except (OSError, ValueError) as e:
            run.problems.append(f"summary.json is unreadable: {_first_line(e)}")
    if ARCH_FILE not in run.missing:
        from src.space.space import load_arch
        try:
            run.arch = load_arch(path(ARCH_FILE))
        except HourNASError as e:
            run.problems.append(f"arch.yaml is unreadable: {_first_line(e)}")
    space_name = (run.config or {}).get("space") or (run.summary or {}).get("space")
    if space_name:
        from src.space.space import load_space
        try:
            run.space = load_space(space_name, float((run.config or {}).get("width_mult", 1.0)))
        except HourNASError as e:
            run.problems.append(f"space '{space_name}' cannot be loaded ({_first_line(e)}); "
                                f"layers are shown by position")
    return run


def _first_line(e) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
