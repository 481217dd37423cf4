"""What a training run reports: progress lines and step records (``StateMonitor``) and the
loss/accuracy curves drawn from its log (``plot_log``)."""
from __future__ import annotations

import time

import numpy as np

from src.checkpoint import atomic_write
from src.jsonlog import read_jsonl
from src.runlog import StepClock


def plot_log(log_path: str, png_path: str) -> str | None:
    """Loss and accuracy curves of a run (PNG), from its JSONL log."""
    from src.context import pyplot
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    recs = read_jsonl(log_path)
    steps = [r for r in recs if r.get("event") == "step" and r.get("loss") is not None]
    evals = [r for r in recs if r.get("event") == "eval"]
    if not steps and not evals:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    if steps:
        ax1.plot([r["global_step"] for r in steps], [r["loss"] for r in steps], lw=1,
                 label="train loss (logged steps)")
    if evals:
        ax1.plot([r["global_step"] for r in evals], [r["loss"] for r in evals], "o-",
                 label="eval loss")
        ax2.plot([r["epoch"] for r in evals], [r["top1"] for r in evals], "o-", label="eval top-1")
        ax2.plot([r["epoch"] for r in evals], [r["top5"] for r in evals], "s--", label="eval top-5")
    ax1.set_xlabel("global step")
    ax1.set_ylabel("cross-entropy loss")
    ax1.set_title("loss")
    ax1.grid(alpha=0.3)
    ax1.legend()
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.set_title("eval accuracy")
    ax2.set_ylim(0, 100)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return png_path




class StateMonitor:
    """Progress lines and step records every ``log_every`` steps (loss, lr, images/s, ETA),
    the compile report once, and the epoch's summary line."""

    def __init__(self, run: Run):
        self.run = run
        self.clock = StepClock()
        self.compile_reported = False
        self.t_epoch = time.perf_counter()
        self.loss_sum, self.loss_n = 0.0, 0

    def epoch_begin(self) -> None:
        self.t_epoch = time.perf_counter()
        self.loss_sum, self.loss_n = 0.0, 0

    def step_end(self, loss: float, lr: float) -> None:
        run, pos, p = self.run, self.run.pos, self.run.cfg.train
        self.loss_sum += loss
        self.loss_n += 1
        if pos.global_step % p.log_every == 0 or pos.epoch_step == run.spe or len(self.clock) == 1:
            per_step = self.clock.per_step()
            run.log(f"epoch {pos.epoch}/{p.epochs} step {pos.epoch_step}/{run.spe} loss "
                    f"{loss:.4f} lr {lr:.4g} {p.batch_size / per_step:.1f} img/s ETA "
                    f"{self.clock.eta(run.total_steps - pos.global_step)}")
            run.runlog.write(event="step", epoch=pos.epoch, epoch_step=pos.epoch_step,
                             global_step=pos.global_step, loss=loss, lr=lr,
                             images_per_s=p.batch_size / per_step)
        if not self.compile_reported and (len(self.clock) >= 6
                                          or pos.global_step == run.total_steps):
            self._compile_report()

    def _compile_report(self) -> None:
        """Step 1 holds the graph compile; one compiled graph means the lr never recompiled."""
        self.compile_reported = True
        first, rest = self.clock.first, self.clock.later
        med = float(np.median(rest)) if rest else None
        graphs = len(self.run.step_cell.compile_cache)
        later = (f"steps 2..{len(self.clock)} {med:.3f} s median" if rest
                 else "no later step to compare (a one-step run)")
        if self.run.cfg.train.mode == "pynative":  # op by op: nothing compiled to report
            self.run.log(f"first step: {first:.2f} s (PyNative, train.mode: op by op), {later}")
        else:
            self.run.log(f"compile: step 1 took {first:.2f} s (graph compile + step), {later}; "
                         f"compiled training graphs: {graphs}"
                         + (" (no recompiles)" if graphs == 1 else " (RECOMPILED)"))
        self.run.runlog.write(event="compile", global_step=self.run.pos.global_step,
                              first_step_s=first, later_step_s=med, graphs=graphs)

    def epoch_message(self) -> str:
        pos, p = self.run.pos, self.run.cfg.train
        return (f"epoch {pos.epoch}/{p.epochs} done in {time.perf_counter() - self.t_epoch:.1f} "
                f"s, mean loss {self.loss_sum / max(1, self.loss_n):.4f}")

    def images_per_s(self) -> float | None:
        later = self.clock.later
        return self.run.cfg.train.batch_size / float(np.mean(later)) if later else None
