"""What runs around the bilevel loop: the log, checkpoints, stop signals, the non-finite guard.

The loop (``src.search.loop.bilevel_loop``) calls its hooks after every iteration, in order:
``keep_signal_handlers``, ``StepLogger`` (search_log.jsonl, the per-rank log, the console
line, the stage's seconds), ``every_n_steps_checkpoint`` and ``stop_on_signal`` (save, then
raise ``Stopped``). The log file, the signal handlers and h:mm:ss are ``src.runlog``'s, the
toolkit training uses too.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable

import numpy as np

from src.rundir import SEARCH_STATE_FILE
from src.runlog import log
from src.context import agree_stop
from src.errors import HourNASError, Stopped
from src.jsonlog import read_jsonl
from src.runlog import hms, signal_name
from src.search.config import lower_lr_command
from src.search.state import save_state

STAGE_ACCURACY_STEPS = 20  # a stage's "learned" figure: mean accuracy of its last steps
STAGE_LABELS = {"vital": "stage 1/2 (vital layers)", "nonvital": "stage 2/2 (non-vital layers)",
                "single": "single stage (all layers)"}

# ----------------------------------------------------------------------------- run utilities
# The log, the signal handlers and h:mm:ss are src.runlog's (shared with training); the
# non-finite-loss message is the search's own (it names the stage, step and last good state).


def check_finite_losses(run, stage, w_loss: float, a_loss: float) -> None:
    """A non-finite loss stops the run naming the step, the last good state and the rate to
    lower (:func:`diverged_rate`)."""
    if math.isfinite(w_loss) and math.isfinite(a_loss):
        return
    st, rate = run.state, diverged_rate(stage, w_loss)
    if rate == "search.arch_lr":  # stage 2 may have its own (search.arch_lr_nvital)
        rate = run.cfg.search.arch_lr_key(stage.name)
    raise HourNASError(
        f"non-finite loss at {stage.name} epoch {st.epoch + 1} step {st.step + 1} (global step "
        f"{st.global_step + 1}; weight loss {w_loss}, architecture loss {a_loss}); the last "
        f"good state is in {run.path(SEARCH_STATE_FILE)} (global step {run.saved_step}); "
        + lower_lr_command(run.cfg, run.out, (rate,)))


def diverged_rate(stage, w_loss: float) -> str:
    """The learning rate that made the loss non-finite. The architecture step's loss is
    computed with the weights the weight step has just changed, so a non-finite architecture
    loss is the weights' doing (``search.w_lr``) unless the weights are all finite and θ (Π, Θ)
    is not (``search.arch_lr``)."""
    if not math.isfinite(w_loss):
        return "search.w_lr"
    weights_ok = all(np.isfinite(p.asnumpy()).all() for p in stage.net.get_parameters())
    arch_ok = all(np.isfinite(v).all() for v in stage.arch.values().values())
    return "search.arch_lr" if weights_ok and not arch_ok else "search.w_lr"


def progress_bar(stage: str, done: int, total: int, per_step: float, eta: float) -> None:
    width = 30
    fill = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{stage}] |{'#' * fill}{'.' * (width - fill)}| {done}/{total} "
                     f"{per_step:.2f} s/step ETA {hms(eta)}")
    sys.stderr.flush()


# ----------------------------------------------------------------------------- the hooks


class StepLogger:
    """Everything a stage reports: its start line, one record and (every ``log_every``
    steps) one console line per iteration, its seconds counted step by step (so a checkpoint
    holds the time spent so far), and what it learned at its end."""

    def __init__(self, run, stage):
        self.run, self.stage = run, stage
        self.epochs, self.steps = stage.epochs, run.steps_per_epoch()
        self.total = self.epochs * self.steps
        self.done_at_start = run.state.stage_step
        self.t_stage = self.t_last = time.perf_counter()
        # a live progress bar on a terminal; plain lines (log_every) everywhere
        self.bar = run.is_main and sys.stderr.isatty()

    def start(self) -> None:
        run, stage = self.run, self.stage
        log(f"{STAGE_LABELS[stage.name]}: {len(stage.net.searched)} searched layers, "
            f"{self.epochs} epoch(s) x {self.steps} steps, batch {run.p.batch_size}"
            + (f" ({run.rank_batch} per rank)" if run.group_size > 1 else "")
            + f", θ's lr {stage.adam.lr:g}"
            + (f" (frozen in the first {stage.warmup} epoch(s): warm-up)" if stage.warmup else "")
            + f", executor {stage.executor.name}")

    def __call__(self, it) -> None:
        run, st = self.run, self.run.state
        run.log.write(**step_record(run, self.stage, it))
        if run.rank_log is not None:
            a_path = it.a_path
            run.rank_log.write(stage=it.stage, global_step=st.global_step, path=it.w_path.indices,
                               proposal=it.w_path.proposal,
                               a_path=a_path.indices if a_path else None,
                               a_proposal=a_path.proposal if a_path else None)
        done = st.stage_step - self.done_at_start
        now = time.perf_counter()
        st.stage_seconds[it.stage] = st.stage_seconds.get(it.stage, 0.0) + (now - self.t_last)
        self.t_last = now
        per_step = (now - self.t_stage) / max(done, 1)
        eta = per_step * (self.total - st.stage_step)
        if self.bar:
            progress_bar(it.stage, st.stage_step, self.total, per_step, eta)
        if st.stage_step % run.p.log_every == 0 or st.stage_step == self.total:
            if self.bar:
                sys.stderr.write("\r\033[K")
            arch = (f"a_loss {it.a.loss:.3f} reg {it.a.reg:.4f}" if it.a else
                    "θ frozen (warm-up)")
            log(f"[{it.stage}] epoch {st.epoch + 1}/{self.epochs} step {st.step}/{self.steps} | "
                f"{per_step:.2f} s/step | ETA {hms(eta)} | w_loss {it.w.loss:.3f} acc "
                f"{it.w.acc:.2f} | {arch} | tau {it.tau:.4f}")

    def end(self) -> None:
        """The stage's learned accuracy (state and console); data parallel: its digests."""
        run, stage = self.run, self.stage
        acc = run.state.stage_accuracy[stage.name] = stage_accuracy(run, stage.name)
        if acc:
            log(f"[{stage.name}] learned: over its last {acc['steps']} steps the supernet's "
                f"architecture-step accuracy is {acc['a_acc']:.2f} and its weight-step "
                f"accuracy {acc['w_acc']:.2f} (chance {1 / run.space.num_classes:.2f})")
        if run.rank_log is not None:
            from src.search.distributed import arch_digest, weights_digest
            run.rank_log.write(event="stage_end", stage=stage.name,
                               global_step=run.state.global_step,
                               weights_sha256=weights_digest(stage.net),
                               arch_sha256=arch_digest(stage.arch.values()))


def step_record(run, stage, it) -> dict:
    """One line of search_log.jsonl."""
    st, arch = run.state, stage.arch
    _, probs = arch.probabilities()
    return {"stage": it.stage, "epoch": st.epoch, "step": st.step,
            "global_step": st.global_step, "tau": it.tau, "lr": it.lr,
            "w_loss": it.w.loss, "w_acc": it.w.acc,
            **({"a_loss": it.a.loss, "a_ce": it.a.ce, "a_reg": it.a.reg, "a_acc": it.a.acc}
               if it.a else {"warmup": True}),
            "path": it.w_path.indices, "proposal": it.w_path.proposal,
            "entropy": float(-(probs * np.log(probs + 1e-12)).sum(axis=-1).mean()),
            **({"pi": arch.probabilities()[0].round(5).tolist()} if arch.use_proposals else {}),
            "step_seconds": it.seconds, **{f"path_{k}": v for k, v in
                                           path_cost(stage, it.w_path.indices).items()}}


def path_cost(stage, indices: list[int]) -> dict:
    """The whole network's cost for the sampled path (stage 2; S_vital has no table)."""
    tab = stage.table
    if tab is None:
        return {}
    onehot = np.zeros(tab.table[tab.objectives[0]].shape)
    onehot[np.arange(len(indices)), indices] = 1
    return tab.cost(onehot)


def stage_accuracy(run, stage: str, last: int = STAGE_ACCURACY_STEPS) -> dict:
    """Mean accuracies of the stage's last steps, from the log (so a resumed stage counts
    its steps before the resume too); rank 0 only (it holds the log)."""
    if not (run.is_main and os.path.exists(run.log.path)):
        return {}
    recs = [r for r in read_jsonl(run.log.path) if r.get("stage") == stage and "a_acc" in r][-last:]
    if not recs:
        return {}
    return {"steps": len(recs), "a_acc": float(np.mean([r["a_acc"] for r in recs])),
            "w_acc": float(np.mean([r["w_acc"] for r in recs]))}


def every_n_steps_checkpoint(run, stage) -> Callable:
    """Save the whole state every ``search.ckpt_every`` steps of the stage."""
    def hook(_it) -> None:
        if run.state.stage_step % run.p.ckpt_every == 0:
            save_state(run, stage)
    return hook


def keep_signal_handlers(run) -> Callable:
    """Before a step is logged as done, put our SIGTERM / SIGINT handlers back (MindSpore
    installs its own SIGINT handler at its first op)."""
    def hook(_it) -> None:
        run.signals.pin()
    return hook


def stop_on_signal(run, stage) -> Callable:
    """After a SIGTERM / SIGINT (on any rank, data parallel): save, then raise ``Stopped``."""
    def hook(_it) -> None:
        # data parallel: every rank stops after the same step
        signum = run.signals.agree(agree_stop if run.group_size > 1 else None)
        if signum is None:
            return
        save_state(run, stage)
        raise Stopped(signum, f"stopped by {signal_name(signum)} at {run.state.stage} "
                              f"global step {run.state.global_step}: state saved in "
                              f"{run.path(SEARCH_STATE_FILE)}; continue with --resume")
    return hook
