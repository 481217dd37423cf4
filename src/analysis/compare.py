"""The standard test of a NAS method: the searched networks against random ones of the same size.

``python analyze.py compare --config config/compare/NAME.yaml [--data_path DIR]`` runs, in
one output folder, resumable and skipping what is done:

1. the search once per seed (``search.py --set search.seed=S``),
2. K architectures drawn uniformly at random among those that meet the same targets within
   the same tolerance (``search.py --strategy random``), and optionally K more with the
   first seed's vital ops fixed (they differ from it only where stage 2 searched, and its
   supernet can score them),
3. every one of them retrained with the same recipe and seed (``train.py``) and evaluated on
   the test split: the figure is the **last** epoch's, never a best epoch picked on the test
   set,
   and optionally the network of each of the first seed's other proposals (``proposals``:
   the m candidates stage 2 chose among with Π; did Π pick the best of them?),
4. the supernet's ranking: each architecture's accuracy on a search's final shared weights
   (``src.search.supernet_eval``) against its retrained top-1, Kendall's τ per supernet,
5. ``compare.md`` / ``compare.csv`` / ``compare.json`` (each net's params, FLOPs, top-1; each
   group's mean ± std; the searched nets' ranks) and ``compare.png`` (top-1 against FLOPs,
   searched nets marked; supernet accuracy against top-1).

The steps run as subprocesses through the entry points (their output in ``*.out`` beside
their folders); SIGINT/SIGTERM are passed on so a step saves its state, and the same
command continues.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from src.rundir import ARCH_FILE, SEARCH_STATE_FILE, SUMMARY_FILE, TRAIN_LOG_FILE, lock_output_dir
from src.config import Seed, format_size, load_config
from src.errors import ConfigError, HourNASError
from src.jsonlog import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GROUPS = ("searched", "random", "random_vital", "proposals")
GROUP_LABELS = {"searched": "HourNAS (searched)", "random": "random, same targets",
                "random_vital": "random, same targets and vital ops as seed {seed}",
                "proposals": "seed {seed}'s other proposals (their arg-max)"}
PROPOSALS_FILE = "proposals.json"
PROGRESS_FILE = "compare_progress.json"


@dataclass
class CompareConfig:
    """``config/compare/*.yaml``: what to compare, and where."""

    search: str                     # search config (repository-relative or absolute)
    train: str                      # training recipe every network is retrained with
    seeds: list[Seed] = field(default_factory=lambda: [0])   # one search per seed
    random: int = 5                 # architectures drawn at random with the same targets
    random_seed: Seed = 100          # their draw's seed (not one of the search seeds)
    random_vital: int = 0           # drawn with the first seed's vital ops fixed
    supernet: bool = True           # score every network on each search's final supernet
    # retrain the network of each of the first seed's other proposals as well (the m
    # candidates stage 2's Π chose among): is the searched net the best of them?
    proposals: bool = False
    output_dir: str = "runs/compare"
    # an earlier comparison's output folder: its searches and random draws are taken as they
    # are (nothing is searched or drawn here) and retrained with this config's recipe, e.g.
    # the same networks trained longer
    archs_from: str | None = None

    def validate(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"compare 'seeds' must be a non-empty list of distinct seeds, got "
                              f"{self.seeds}")
        if any(s < 0 for s in self.seeds) or self.random_seed < 0:
            raise ConfigError("compare seeds and random_seed must be >= 0")
        if self.random < 0 or self.random_vital < 0:
            raise ConfigError("compare 'random' and 'random_vital' must be >= 0")
        if self.archs_from is not None and not str(self.archs_from).strip():
            raise ConfigError("compare 'archs_from' must be an earlier comparison's output "
                              "folder or null")


@dataclass
class Net:
    """One compared network."""

    name: str            # searched_s0, random_01, vital_01
    group: str           # searched | random | random_vital
    arch: str            # its architecture file
    seed: int | None = None
    params: int | None = None
    flops: int | None = None
    pi: float | None = None          # Π's final probability of its proposal (seed 0's nets)
    skips: int | None = None         # layers that are the identity (or FBNet's projecting skip)
    grouped: int | None = None       # layers with a grouped 1x1 (the g2 ops)
    top1: float | None = None
    epochs: int | None = None
    train_s: float | None = None
    supernet: dict = field(default_factory=dict)   # search seed -> accuracy (0..1)
    source_top1: float | None = None  # archs_from: its top-1 with that comparison's recipe


def _abs(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


class Compare:
    """One comparison in its output folder: the layout, the commands, the state of each step."""

    def __init__(self, cfg: CompareConfig, data_path: str | None, device_target: str | None,
                 log: Callable[[str], None]):
        self.cfg, self.data_path, self.device, self.log = cfg, data_path, device_target, log
        self.out = os.path.abspath(cfg.output_dir)
        self.source = os.path.abspath(cfg.archs_from) if cfg.archs_from else self.out
        if cfg.archs_from and self.source == self.out:
            raise ConfigError(f"compare 'archs_from' is the output folder itself ({self.out}); "
                              f"name an earlier comparison's folder, or drop archs_from")
        for what, path in (("search", cfg.search), ("train", cfg.train)):
            if not os.path.isfile(_abs(path)):
                raise ConfigError(f"compare '{what}' config '{path}' does not exist")

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    def archs_path(self, *parts: str) -> str:
        """Where the searches and draws are: this folder, or ``archs_from``'s."""
        return os.path.join(self.source, *parts)

    def search_dir(self, seed: int) -> str:
        return self.archs_path("search", f"seed{seed}")

    def check_archs_from(self) -> None:
        """With ``archs_from``, every search and draw this config names must be there."""
        if self.source == self.out:
            return
        cfg, missing = self.cfg, []
        missing += [f"search seed {s}" for s in cfg.seeds if not self.search_done(s)]
        missing += [g for g, k in (("random", cfg.random), ("random_vital", cfg.random_vital))
                    if k and not self.random_done(g)]
        missing += ["proposals"] if cfg.proposals and not self.proposals_done() else []
        if missing:
            raise HourNASError(f"archs_from '{self.source}' lacks what this comparison "
                               f"retrains: {', '.join(missing)}; finish that comparison first "
                               f"(or compare fewer seeds / no random group)")
        for group, k in (("random", cfg.random), ("random_vital", cfg.random_vital)):
            if k and (n := len(self.drawn(group))) != k:
                raise HourNASError(f"archs_from '{self.source}' drew {n} '{group}' networks, "
                                   f"this config asks for {k}: set {group}: {n}")

    def common(self) -> list[str]:
        out = ["--data_path", self.data_path] if self.data_path else []
        return out + (["--device_target", self.device] if self.device else [])

    # --------------------------------------------------------------- commands
    def search_cmd(self, seed: int) -> list[str]:
        d = self.search_dir(seed)
        resume = ["--resume"] if os.path.isfile(os.path.join(d, SEARCH_STATE_FILE)) else []
        return [sys.executable, _abs("search.py"), "--config", _abs(self.cfg.search),
                "--output_dir", d, "--set", f"search.seed={seed}", "--json",
                *self.common(), *resume]

    def random_cmd(self, group: str) -> list[str]:
        k = self.cfg.random if group == "random" else self.cfg.random_vital
        cmd = [sys.executable, _abs("search.py"), "--config", _abs(self.cfg.search),
               "--strategy", "random", "--num_archs", str(k), "--output_dir",
               self.archs_path(group), "--set", f"search.seed={self.cfg.random_seed}", "--json",
               *self.common()]
        if group == "random_vital":
            cmd += ["--set", "search.random_fix_vital="
                    + os.path.join(self.search_dir(self.cfg.seeds[0]), ARCH_FILE)]
        return cmd

    def train_cmd(self, net: Net) -> list[str]:
        d = self.path("train", net.name)
        resume = ["--resume"] if _train_state(d)[0] == "resume" else []
        return [sys.executable, _abs("train.py"), "--config", _abs(self.cfg.train), "--arch",
                net.arch, "--output_dir", d, "--json", *self.common(), *resume]

    # --------------------------------------------------------------- what exists
    def search_done(self, seed: int) -> bool:
        d = self.search_dir(seed)
        return all(os.path.isfile(os.path.join(d, n)) for n in (ARCH_FILE, SUMMARY_FILE))

    def random_done(self, group: str) -> bool:
        return os.path.isfile(self.archs_path(group, "random_archs.json"))

    def proposals_done(self) -> bool:
        return os.path.isfile(self.archs_path("proposals", PROPOSALS_FILE))

    def proposal_records(self) -> list[dict]:
        """proposals/proposals.json: one record per proposal of the first seed's search."""
        with open(self.archs_path("proposals", PROPOSALS_FILE), encoding="utf-8") as f:
            return json.load(f)["proposals"]

    def write_proposals(self) -> None:
        """With ``proposals``, once the first seed's search is done: each proposal's network
        as proposals/proposal_J.yaml, and proposals.json (Π's probability of each, and which
        network it is: the derived one, another proposal's, or its own)."""
        from src.checkpoint import atomic_write_text
        from src.space.space import arch_to_yaml
        from src.search.supernet_eval import proposal_archs

        seed = self.cfg.seeds[0]
        if not self.cfg.proposals or self.proposals_done() or not self.search_done(seed):
            return
        recs, seen = [], {}
        for r in proposal_archs(self.search_dir(seed)):
            ops = tuple(op.name for op in r["arch"].ops)
            same = f"searched_s{seed}" if r["derived"] else seen.get(ops)
            name = f"proposal_{r['proposal']}"
            seen.setdefault(ops, f"searched_s{seed}" if r["derived"] else name)
            file = f"{name}.yaml"
            atomic_write_text(self.path("proposals", file), f"# Proposal {r['proposal']} of "
                              f"{self.search_dir(seed)}\n" + arch_to_yaml(r["arch"]))
            recs.append({"proposal": r["proposal"], "pi": r["pi"], "file": file,
                         "derivation": r["method"], "within": r["within"], "same_as": same})
        atomic_write_text(self.path("proposals", PROPOSALS_FILE), json.dumps(
            {"search": self.search_dir(seed), "proposals": recs}, indent=1) + "\n")
        self.log(f"wrote the networks of seed {seed}'s {len(recs)} proposals in "
                 f"{self.path('proposals')}")

    def drawn(self, group: str) -> list[dict]:
        """The random draw's records of ``group`` (its random_archs.json)."""
        with open(self.archs_path(group, "random_archs.json"), encoding="utf-8") as f:
            return json.load(f)["archs"]

    def nets(self) -> list[Net]:
        """The compared networks whose architecture exists by now, in table order."""
        out = [Net(f"searched_s{s}", "searched", os.path.join(self.search_dir(s), ARCH_FILE),
                   seed=s) for s in self.cfg.seeds if self.search_done(s)]
        for group, prefix in (("random", "random"), ("random_vital", "vital")):
            if not self.random_done(group):
                continue
            for k, rec in enumerate(self.drawn(group), 1):
                out.append(Net(f"{prefix}_{k:02d}", group,
                               self.archs_path(group, rec["file"])))
        if self.cfg.proposals and self.proposals_done():
            # one network per distinct architecture; its π is Π's probability of drawing a
            # proposal whose network it is (the sum over proposals that coincide)
            recs, seed = self.proposal_records(), self.cfg.seeds[0]
            pi: dict[str, float] = {}
            for rec in recs:
                name = rec["same_as"] or f"proposal_{rec['proposal']}"
                pi[name] = pi.get(name, 0.0) + rec["pi"]
            out += [Net(f"proposal_{rec['proposal']}", "proposals",
                        self.archs_path("proposals", rec["file"]), seed=seed)
                    for rec in recs if rec["same_as"] is None]
            for n in out:
                if n.name in pi:
                    n.pi = pi[n.name]
        return out


def _train_state(folder: str) -> tuple[str, dict | None]:
    """('done', last eval record) | ('resume', None) | ('new', None) of a training folder."""
    recs = read_jsonl(os.path.join(folder, TRAIN_LOG_FILE))
    evals = [r for r in recs if r.get("event") == "eval"]
    if recs and recs[-1].get("event") == "done" and evals:
        return "done", {**evals[-1], "wall_s": recs[-1].get("wall_s")}
    if os.path.isdir(folder) and any(n.endswith(".ckpt") and "_best" not in n
                                     for n in os.listdir(folder)):
        return "resume", None
    return "new", None


# ----------------------------------------------------------------------------- the chain


@dataclass
class Step:
    """One command of the chain: a search, a random draw or a retraining."""

    kind: str            # search | random | train
    name: str            # seed0, random, random_vital, random_01, ...
    folder: str          # what it writes (its output goes to folder + ".out")
    command: Callable[[], list[str]]   # built when it starts (it may have to --resume)


def pending_steps(cmp: Compare) -> list[Step]:
    """The steps not done yet whose inputs exist, in the order they should run: searches, the
    random draws (those with the first seed's vital ops once that search is done), then the
    retraining of every network that exists by now."""
    cfg, out = cmp.cfg, []
    for s in cfg.seeds:
        if not cmp.search_done(s):
            out.append(Step("search", f"seed{s}", cmp.search_dir(s),
                            lambda s=s: cmp.search_cmd(s)))
    for group, k in (("random", cfg.random), ("random_vital", cfg.random_vital)):
        ready = group == "random" or cmp.search_done(cfg.seeds[0])
        if k and ready and not cmp.random_done(group):
            out.append(Step("random", group, cmp.archs_path(group),
                            lambda g=group: cmp.random_cmd(g)))
    for net in cmp.nets():
        folder = cmp.path("train", net.name)
        if _train_state(folder)[0] != "done":
            out.append(Step("train", net.name, folder, lambda n=net: cmp.train_cmd(n)))
    return out


def step_counts(cmp: Compare) -> dict[str, int]:
    """How many steps of each kind are left, including retraining of networks that do not
    exist yet (their search or draw is still to come)."""
    cfg = cmp.cfg
    groups = [g for g, k in (("random", cfg.random), ("random_vital", cfg.random_vital)) if k]
    nets = cmp.nets()
    trained = sum(_train_state(cmp.path("train", n.name))[0] == "done" for n in nets)
    proposals = 0
    if cfg.proposals:  # before the search: its other proposals, m - 1 (fewer if some coincide)
        proposals = sum(n.group == "proposals" for n in nets) if cmp.proposals_done() \
            else _search_m(cfg.search) - 1
    return {"search": sum(not cmp.search_done(s) for s in cfg.seeds),
            "random": sum(not cmp.random_done(g) for g in groups),
            "train": len(cfg.seeds) + cfg.random + cfg.random_vital + proposals - trained}


def _search_m(search_config: str) -> int:
    """The number of proposals the comparison's search config asks for."""
    from src.search.config import SearchConfig

    return int(load_config(SearchConfig, _abs(search_config)).proposal.m)


class Progress:
    """Steps done out of all, and an ETA from the mean time of each kind of step (kept in
    compare_progress.json, so a comparison continued in another session still has one),
    divided by the number of steps that run at once."""

    def __init__(self, path: str, total: int, jobs: int, log: Callable[[str], None]):
        self.path, self.total, self.jobs, self.log, self.done = path, total, jobs, log, 0
        self.seconds: dict[str, list[float]] = {}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                self.seconds = json.load(f).get("seconds", {})

    def eta(self, remaining: dict[str, int]) -> str:
        from src.runlog import hms
        if any(n and not self.seconds.get(kind) for kind, n in remaining.items()):
            return "ETA after the first step of each kind"
        left = sum(n * float(np.mean(self.seconds[kind])) for kind, n in remaining.items() if n)
        return f"ETA {hms(left / self.jobs)}"

    def step(self, kind: str, seconds: float, what: str, remaining: dict[str, int]) -> None:
        from src.checkpoint import atomic_write_text
        self.seconds.setdefault(kind, []).append(seconds)
        atomic_write_text(self.path, json.dumps({"seconds": self.seconds}, indent=1) + "\n")
        self.done += 1
        self.log(f"[{self.done}/{self.total}] {what} ({self.eta(remaining)})")


def _pin(core: int | None):
    """A preexec_fn that keeps a step on one core (its MindSpore then uses one thread): steps
    that run at once do not make each other's multi-threaded kernels wait."""
    if core is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {core})


class Runner:
    """Runs steps as subprocesses, up to ``jobs`` at once (each on its own core when there are
    several), passes SIGINT/SIGTERM on to them (they save their state) and waits for them."""

    def __init__(self, cmp: Compare, jobs: int):
        self.cmp, self.jobs = cmp, jobs
        self.cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else list(range(os.cpu_count() or 1))
        self.running: dict[str, tuple] = {}   # name -> (process, step, start, core, log file)
        self.stopped: list[int] = []

    def start(self, step: Step) -> None:
        import subprocess

        used = {r[3] for r in self.running.values()}
        core = next((c for c in self.cores if c not in used), None) if self.jobs > 1 else None
        cmd = step.command()
        self.cmp.log(f"{step.kind} {step.name} -> {step.folder}"
                     + (f" (core {core})" if core is not None else ""))
        os.makedirs(os.path.dirname(step.folder), exist_ok=True)
        out = open(step.folder + ".out", "a", encoding="utf-8")  # a resumed step: appended
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_pin(core))
        self.running[step.name] = (proc, step, time.time(), core, out)

    def forward(self, signum, _frame) -> None:
        self.stopped.append(signum)
        for proc, *_ in self.running.values():
            proc.send_signal(signum)

    def finished(self) -> list[tuple[Step, int, float]]:
        """The steps that ended since the last call: (step, exit code, seconds)."""
        done = []
        for name, (proc, step, t0, _, out) in list(self.running.items()):
            if proc.poll() is not None:
                out.close()
                del self.running[name]
                done.append((step, proc.returncode, time.time() - t0))
        return done


def run_chain(cmp: Compare, jobs: int = 1, dry_run: bool = False) -> None:
    """Searches, random draws and retraining, each skipped when done, up to ``jobs`` at once."""
    import signal

    from src.analysis.ablation import _tail

    if dry_run:
        for step in pending_steps(cmp):
            cmp.log(" ".join(step.command()))
        cmp.log(f"then: the steps that need those (retraining each network with "
                f"train.py --config {cmp.cfg.train})")
        return
    lock_output_dir(cmp.out, "comparison")  # makes the folder; one run at a time
    if cmp.source == cmp.out:
        cmp.write_proposals()  # (the search may be done already: count its nets now)
    remaining = step_counts(cmp)
    progress = Progress(cmp.path(PROGRESS_FILE), sum(remaining.values()), jobs, cmp.log)
    runner, failed = Runner(cmp, jobs), None
    old = {s: signal.signal(s, runner.forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            if failed is None and not runner.stopped:
                if cmp.source == cmp.out:
                    cmp.write_proposals()
                for step in pending_steps(cmp):
                    if len(runner.running) >= jobs:
                        break
                    if step.name not in runner.running:
                        runner.start(step)
            if not runner.running:
                break
            time.sleep(0.5)
            for step, code, seconds in runner.finished():
                if code != 0:
                    failed = failed or (step, code)
                    continue
                remaining[step.kind] -= 1
                progress.step(step.kind, seconds, f"{step.kind} {step.name} done in "
                              f"{seconds / 60:.1f} min", remaining)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if runner.stopped:
        raise KeyboardInterrupt(f"stopped by signal {runner.stopped[0]}; the same command "
                                f"continues")
    if failed is not None:
        step, code = failed
        raise HourNASError(f"{step.kind} {step.name} failed (exit {code}): "
                           f"{_tail(step.folder + '.out')}; its output is in {step.folder}.out; "
                           f"fix it and run the same command again to continue")


# ----------------------------------------------------------------------------- results


def collect(cmp: Compare) -> list[Net]:
    """Every network with its cost and, once retrained, its last epoch's test top-1."""
    from src.resource import count
    from src.space.space import load_arch

    nets = cmp.nets()
    for net in nets:
        arch = load_arch(net.arch)
        c = count(arch)
        net.params, net.flops = int(c["params"]), int(c["flops"])
        net.skips = sum(op.is_skip for op in arch.ops)
        net.grouped = sum(op.g > 1 for op in arch.ops)
        state, ev = _train_state(cmp.path("train", net.name))
        if state == "done":
            net.top1, net.epochs, net.train_s = float(ev["top1"]), int(ev["epoch"]), ev["wall_s"]
        if cmp.source != cmp.out:
            state, ev = _train_state(cmp.archs_path("train", net.name))
            net.source_top1 = float(ev["top1"]) if state == "done" else None
    return nets


def recipe_agreement(nets: list[Net]) -> dict | None:
    """With ``archs_from``: do the two recipes rank the same networks alike? Kendall's τ
    between each net's top-1 there and here, and each group's mean under both (over the nets
    retrained under both), from at least three networks."""
    from src.search.supernet_eval import kendall_tau

    both = [n for n in nets if n.top1 is not None and n.source_top1 is not None]
    if len(both) < 3:
        return None
    tau, p = kendall_tau([n.source_top1 for n in both], [n.top1 for n in both])
    groups = {g: {"n": len(v), "there": float(np.mean([n.source_top1 for n in v])),
                  "here": float(np.mean([n.top1 for n in v]))}
              for g in GROUPS if (v := [n for n in both if n.group == g])}
    return {"tau": tau, "p": p, "n": len(both), "groups": groups}


def score_supernets(cmp: Compare, nets: list[Net]) -> None:
    """Each retrained network's accuracy on each finished search's final supernet (cached in
    supernet_eval.json: scoring takes a pass over the architecture split per network; one not
    retrained yet waits, as its score serves only the ranking against its top-1)."""
    from src.checkpoint import atomic_write_text
    from src.search.supernet_eval import supernet_accuracy
    from src.space.space import load_arch

    cache_path = cmp.path("supernet_eval.json")
    cache = {}
    if os.path.isfile(cache_path):
        with open(cache_path, encoding="utf-8") as f:
            cache = json.load(f)
    for s in cmp.cfg.seeds:
        todo = [n for n in nets if n.top1 is not None and f"{s}:{n.name}" not in cache]
        if todo:
            cmp.log(f"scoring {len(todo)} networks on the supernet of seed {s}")
            accs = supernet_accuracy(cmp.search_dir(s), [load_arch(n.arch) for n in todo],
                                     cmp.data_path, log=cmp.log)
            cache.update({f"{s}:{n.name}": a for n, a in zip(todo, accs)})
            atomic_write_text(cache_path, json.dumps(cache, indent=1) + "\n")
        for n in nets:
            if cache.get(f"{s}:{n.name}") is not None:
                n.supernet[s] = cache[f"{s}:{n.name}"]


def group_stats(nets: list[Net]) -> dict[str, dict]:
    """mean, sample std and count of the test top-1 per group."""
    out = {}
    for g in GROUPS:
        v = [n.top1 for n in nets if n.group == g and n.top1 is not None]
        if v:
            out[g] = {"n": len(v), "mean": float(np.mean(v)),
                      "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                      "min": float(min(v)), "max": float(max(v))}
    return out


def rankings(cmp: Compare, nets: list[Net]) -> dict:
    """Kendall's τ per supernet between its accuracy and the retrained top-1, over the
    networks it can run (at least three); and again without the supernet's own derived net
    (``others``), whose path stage 2 trained most: the shared weights may favour it for that
    alone, which a ranking of the nets it did not favour shows."""
    from src.search.supernet_eval import kendall_tau

    out = {}
    for s in cmp.cfg.seeds:
        both = [n for n in nets if s in n.supernet and n.top1 is not None]
        if len(both) >= 3:
            tau, p = kendall_tau([n.supernet[s] for n in both], [n.top1 for n in both])
            out[s] = {"tau": tau, "p": p, "n": len(both), "nets": [n.name for n in both]}
            others = [n for n in both if not (n.group == "searched" and n.seed == s)]
            if 3 <= len(others) < len(both):
                tau, p = kendall_tau([n.supernet[s] for n in others], [n.top1 for n in others])
                out[s]["others"] = {"tau": tau, "p": p, "n": len(others)}
    return out


def proposal_choice(cmp: Compare, nets: list[Net]) -> dict | None:
    """With ``proposals``: where Π's choice (the first seed's searched net) ranks by retrained
    top-1 among the networks of that search's proposals, the best of them, and Kendall's τ
    between Π's probability of each network and its top-1 (from three networks)."""
    from src.search.supernet_eval import kendall_tau

    seed = cmp.cfg.seeds[0]
    pool = [n for n in nets if n.pi is not None and n.top1 is not None]
    chosen = next((n for n in pool if n.name == f"searched_s{seed}"), None)
    if not cmp.cfg.proposals or chosen is None or len(pool) < 2:
        return None
    best = max(pool, key=lambda n: n.top1)
    top1 = [n.top1 for n in pool]
    summary = os.path.join(cmp.search_dir(seed), SUMMARY_FILE)
    derive = "pi"   # how the search chose among its proposals (search.derive)
    if os.path.isfile(summary):
        with open(summary, encoding="utf-8") as f:
            derive = json.load(f).get("derive") or "pi"
    out = {"seed": seed, "n": len(pool), "derive": derive, "chosen": chosen.name,
           "chosen_pi": chosen.pi,
           "chosen_top1": chosen.top1, "chosen_rank": 1 + sum(t > chosen.top1 for t in top1),
           "best": best.name, "best_top1": best.top1, "mean": float(np.mean(top1)),
           "std": float(np.std(top1, ddof=1)), "tau": None, "p": None}
    if len(pool) >= 3:
        out["tau"], out["p"] = kendall_tau([n.pi for n in pool], top1)
    return out


def verdict(stats: dict) -> dict | None:
    """The goal of the comparison: searched mean >= random mean + 2 std; beside it, how far
    the searched mean is from each random group's and whether that differs from chance
    (``mean_tests``)."""
    if "searched" not in stats or "random" not in stats or stats["random"]["n"] < 2:
        return None
    bar = stats["random"]["mean"] + 2 * stats["random"]["std"]
    return {"searched_mean": stats["searched"]["mean"], "random_mean_plus_2std": bar,
            "beats_random": stats["searched"]["mean"] >= bar, "tests": mean_tests(stats)}


def mean_tests(stats: dict) -> dict[str, dict]:
    """Searched mean minus each random group's (points of top-1), with the two-sided p-value
    of Welch's t-test (unequal variances, from the groups' means, stds and counts): with three
    searches and five random nets a difference of half a point is well within chance, and the
    report should say so rather than read it as "below". Groups of fewer than two nets (no
    spread to test against) are left out."""
    from scipy.stats import ttest_ind_from_stats

    a = stats.get("searched")
    out = {}
    for g in GROUPS:
        b = stats.get(g)
        if g == "searched" or a is None or b is None or a["n"] < 2 or b["n"] < 2:
            continue
        diff = a["mean"] - b["mean"]
        if a["std"] == 0 and b["std"] == 0:  # no spread: the t statistic is undefined
            p = 1.0 if diff == 0 else 0.0
        else:
            p = float(ttest_ind_from_stats(a["mean"], a["std"], a["n"], b["mean"], b["std"],
                                           b["n"], equal_var=False).pvalue)
        out[g] = {"diff": diff, "p": p, "n": [a["n"], b["n"]]}
    return out


def write_results(cmp: Compare, nets: list[Net], stats: dict, ranks: dict) -> dict:
    """compare.json, compare.csv, compare.md and compare.png; returns the JSON's content."""
    import csv
    import io

    from src.checkpoint import atomic_write_text

    done = sorted([n for n in nets if n.top1 is not None], key=lambda n: -n.top1)
    for k, n in enumerate(done, 1):
        n.rank = k
    agree = recipe_agreement(nets) if cmp.cfg.archs_from else None
    result = {"output_dir": cmp.out,
              "config": {k: getattr(cmp.cfg, k) for k in CompareConfig.__dataclass_fields__},
              "nets": [{**n.__dict__, "rank": getattr(n, "rank", None)} for n in nets],
              "groups": stats, "kendall_tau": {str(k): v for k, v in ranks.items()},
              "verdict": verdict(stats), "recipes": agree,
              "proposals": proposal_choice(cmp, nets),
              "pending": step_counts(cmp)}
    atomic_write_text(cmp.path("compare.json"), json.dumps(result, indent=2) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ("name", "group", "seed", "pi", "params", "flops", "skips", "grouped", "top1", "epochs",
            "rank") + (("source_top1",) if cmp.cfg.archs_from else ())
    w.writerow(cols + tuple(f"supernet_s{s}" for s in cmp.cfg.seeds))
    for n in nets:
        w.writerow([getattr(n, c, None) if getattr(n, c, None) is not None else "" for c in cols]
                   + [n.supernet.get(s, "") for s in cmp.cfg.seeds])
    atomic_write_text(cmp.path("compare.csv"), buf.getvalue())
    atomic_write_text(cmp.path("compare.md"), markdown(cmp, nets, stats, ranks,
                                                       result["pending"], agree,
                                                       result["proposals"]))
    if done:
        plot(cmp, nets, ranks)
    return result


def markdown(cmp: Compare, nets: list[Net], stats: dict, ranks: dict,
             pending: dict[str, int] | None = None, agree: dict | None = None,
             choice: dict | None = None) -> str:
    """compare.md; ``agree`` is ``recipe_agreement``'s result (with ``archs_from``),
    ``choice`` ``proposal_choice``'s (with ``proposals``)."""
    seeds = cmp.cfg.seeds
    there, with_pi = cmp.cfg.archs_from, cmp.cfg.proposals
    source = f"; networks of {there}" if there else ""
    lines = [f"# Searched against random ({cmp.cfg.search}{source}; retrained with "
             f"{cmp.cfg.train})", "", "| network | group | " + ("Π | " if with_pi else "")
             + "params | FLOPs | skip / g2 layers | "
             "test top-1 (%) | rank | " + (f"top-1 in {there} (%) | " if there else "")
             + " | ".join(f"supernet s{s} (%)" for s in seeds) + " |",
             "|" + "---|" * (7 + bool(with_pi) + bool(there) + len(seeds))]
    def size(v):
        return "—" if v is None else format_size(v)

    for n in nets:
        top1 = "—" if n.top1 is None else f"{n.top1:.2f}"
        sup = [("—" if s not in n.supernet else f"{100 * n.supernet[s]:.2f}") for s in seeds]
        ops = "—" if n.skips is None else f"{n.skips} / {n.grouped}"
        old = ("—" if n.source_top1 is None else f"{n.source_top1:.2f}") + " | " if there else ""
        pi = ("—" if n.pi is None else f"{n.pi:.3f}") + " | " if with_pi else ""
        lines.append(f"| {n.name} | {n.group} | {pi}{size(n.params)} | {size(n.flops)} | {ops}"
                     f" | {top1} | {getattr(n, 'rank', '—')} | {old}" + " | ".join(sup) + " |")
    lines += ["", "| group | n | test top-1 mean ± std (%) | min | max |", "|---|---|---|---|---|"]
    for g, s in stats.items():
        lines.append(f"| {g} | {s['n']} | {s['mean']:.2f} ± {s['std']:.2f} | {s['min']:.2f} | "
                     f"{s['max']:.2f} |")
    v = verdict(stats)
    if v:
        lines += ["", f"Searched mean {v['searched_mean']:.2f}% against the random nets' mean + "
                      f"2 std {v['random_mean_plus_2std']:.2f}%: "
                      + ("the search beats random." if v["beats_random"] else
                         "the search does **not** beat random by that margin.")]
        for g, t in v["tests"].items():
            lines.append(f"Searched mean - {g} mean: {t['diff']:+.2f} points (Welch's t-test, "
                         f"n = {t['n'][0]} and {t['n'][1]}: p = {t['p']:.2f}"
                         + ("; no difference beyond chance at these counts)." if t["p"] >= 0.05
                            else ")."))
    if agree:
        means = "; ".join(f"{g} {v['there']:.2f} -> {v['here']:.2f}% (n = {v['n']})"
                          for g, v in agree["groups"].items())
        lines += ["", f"This recipe against {there}'s, over the {agree['n']} networks retrained "
                      f"with both: Kendall's τ = {agree['tau']:.2f} (p = {agree['p']:.2f}) "
                      f"between their top-1s; group means there -> here: {means}."]
    if choice:
        tau = "" if choice["tau"] is None else (
            f" Kendall's τ between Π's probability and retrained top-1: {choice['tau']:.2f} "
            f"(p = {choice['p']:.2f}).")
        how = "The supernet's choice" if choice.get("derive") == "supernet" else "Π's choice"
        lines += ["", f"{how} among the {choice['n']} networks of seed {choice['seed']}'s "
                      f"proposals: {choice['chosen']} (Π {choice['chosen_pi']:.3f}) retrained to "
                      f"{choice['chosen_top1']:.2f}%, rank {choice['chosen_rank']} of "
                      f"{choice['n']}; the best, {choice['best']}, {choice['best_top1']:.2f}%; "
                      f"all {choice['mean']:.2f} ± {choice['std']:.2f}%." + tau]
    for s, r in ranks.items():
        lines.append(f"\nSupernet of seed {s}: Kendall's τ = {r['tau']:.2f} (p = {r['p']:.2f}) "
                     f"between supernet accuracy and retrained top-1 over {r['n']} networks "
                     f"({', '.join(r['nets'])})" + (
                         f"; without its own derived net (the path stage 2 trained most): "
                         f"τ = {r['others']['tau']:.2f} (p = {r['others']['p']:.2f}) over "
                         f"{r['others']['n']}." if "others" in r else "."))
    if pending and any(pending.values()):
        left = ", ".join(f"{k} {v}" for k, v in pending.items() if v)
        lines += ["", f"**Not finished** (steps left: {left}): the figures above are those of "
                      f"the steps done so far; the same command without --report continues."]
    return "\n".join(lines) + "\n"


def plot(cmp: Compare, nets: list[Net], ranks: dict) -> str:
    """compare.png: top-1 against FLOPs (searched marked), supernet accuracy against top-1."""
    from src.analysis.plotting import pyplot, save_png

    plt = pyplot()
    ncols = 2 if ranks else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 4.6), squeeze=False)
    style = {"searched": ("*", "#d62728", 180), "random": ("o", "#1f77b4", 50),
             "random_vital": ("^", "#2ca02c", 60), "proposals": ("s", "#ff7f0e", 50)}
    ax = axes[0][0]
    seed0 = cmp.cfg.seeds[0]
    for g in GROUPS:
        pts = [n for n in nets if n.group == g and n.top1 is not None]
        if pts:
            m, c, size = style[g]
            ax.scatter([n.flops / 1e6 for n in pts], [n.top1 for n in pts], marker=m, c=c, s=size,
                       label=GROUP_LABELS[g].format(seed=seed0), edgecolors="k", linewidths=0.5)
    ax.set_xlabel("FLOPs (M, multiply-adds)")
    ax.set_ylabel("test top-1 (%), last epoch")
    ax.set_title("retrained with the same recipe")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if ranks:
        ax = axes[0][1]
        s = next(iter(ranks))
        for g in GROUPS:
            pts = [n for n in nets if n.group == g and s in n.supernet and n.top1 is not None]
            if pts:
                m, c, size = style[g]
                ax.scatter([100 * n.supernet[s] for n in pts], [n.top1 for n in pts], marker=m,
                           c=c, s=size, edgecolors="k", linewidths=0.5)
        ax.set_xlabel(f"accuracy on the supernet of seed {s} (%, architecture split)")
        ax.set_ylabel("test top-1 (%), retrained")
        ax.set_title(f"supernet ranking: Kendall's τ = {ranks[s]['tau']:.2f} (n = {ranks[s]['n']})")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, cmp.path("compare.png"))


def run_compare(config: str, *, data_path: str | None = None, output_dir: str | None = None,
                device_target: str | None = None, jobs: int = 1, dry_run: bool = False,
                report_only: bool = False, log: Callable[[str], None] = print) -> dict:
    """The whole comparison (see the module docstring); returns compare.json's content.
    ``report_only``: no step runs; the results are written from what has finished."""
    overrides = [f"output_dir={json.dumps(output_dir)}"] if output_dir else []
    cfg = load_config(CompareConfig, config, overrides)
    cmp = Compare(cfg, os.path.abspath(data_path) if data_path else None, device_target, log)
    if jobs < 1:
        raise HourNASError(f"--jobs must be >= 1, got {jobs}")
    from src.checkpoint import check_output_dir
    check_output_dir(cmp.out)  # a dry run refuses what the real run would
    cmp.check_archs_from()
    t0 = time.time()
    if report_only:
        if not any(cmp.search_done(s) for s in cfg.seeds):
            raise HourNASError(f"nothing to report in {cmp.out}: no search of {config} has "
                               f"finished; run the same command without --report first")
        if cfg.archs_from and not any(_train_state(cmp.path("train", n.name))[0] == "done"
                                      for n in cmp.nets()):
            raise HourNASError(f"nothing to report in {cmp.out}: no network of {cfg.archs_from} "
                               f"has been retrained here yet; run the same command without "
                               f"--report first")
    else:
        run_chain(cmp, jobs, dry_run)
    if dry_run:
        return {}
    nets = collect(cmp)
    if cfg.supernet:
        from src.context import setup_context
        setup_context(device_target or "CPU", "pynative")
        score_supernets(cmp, nets)
    stats = group_stats(nets)
    result = write_results(cmp, nets, stats, rankings(cmp, nets))
    log(f"compared {len(nets)} networks in {time.time() - t0:.0f} s this time; "
        f"{cmp.path('compare.md')}, {cmp.path('compare.png')}")
    return result
