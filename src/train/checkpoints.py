"""A training run's checkpoints: listed by their metadata (no tensors read), the newest one to
resume from, and ``CheckpointManager`` (writes the state, keeps the last N and the best apart,
never a non-finite one, and words a divergence)."""
from __future__ import annotations

import os

from src.checkpoint import read_checkpoint_extra, save_checkpoint
from src.config import to_dict
from src.errors import CheckpointError
from src.evaluate import by_name
from src.rundir import (KIND_KEY, TRAIN_KIND, best_ckpt_name, checkpoint_kind,
                        periodic_ckpt_name)
from src.runlog import nonfinite
from src.train.config import DivergedError, resume_command


def is_training_checkpoint(extra: dict) -> bool:
    return checkpoint_kind(extra) == TRAIN_KIND


def list_checkpoints(output_dir: str, unreadable: list[str] | None = None) -> list[tuple[str, dict]]:
    """[(path, extra)] of this project's training checkpoints in ``output_dir``, oldest first
    (by the global step stored inside), read by their metadata only (no tensors). Unreadable
    ``.ckpt`` files are skipped; their paths are appended to ``unreadable`` when a list is
    given."""
    found = []
    if not os.path.isdir(output_dir):
        return found
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if not name.endswith(".ckpt") or name.startswith(".") or not os.path.isfile(path):
            continue
        try:
            extra = read_checkpoint_extra(path)
        except CheckpointError:
            if unreadable is not None:
                unreadable.append(path)
            continue
        if is_training_checkpoint(extra):
            found.append((path, extra))
    found.sort(key=lambda pe: (pe[1]["global_step"], pe[1].get("best", False)))
    return found


def latest_checkpoint(output_dir: str) -> tuple[str, dict]:
    """The newest training checkpoint to resume from. An unreadable ``.ckpt`` in the folder
    stops the resume: it may be the newest one (a damaged disk or copy), and silently going
    back to an older one would repeat or lose work without saying so."""
    unreadable: list[str] = []
    found = [pe for pe in list_checkpoints(output_dir, unreadable) if not pe[1].get("best")]
    if unreadable:
        bad = unreadable[-1]
        older = (f"the newest readable one is '{found[-1][0]}' (global step "
                 f"{found[-1][1]['global_step']}): to continue from it, move the unreadable "
                 f"file away (mv '{bad}' '{bad}.broken') and run --resume again"
                 if found else "no readable training checkpoint is left: start a new run")
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise CheckpointError(f"--resume: checkpoint '{bad}'{more} in '{output_dir}' is "
                              f"unreadable (truncated or not a MindSpore checkpoint); {older}")
    if not found:
        raise CheckpointError(f"--resume: no training checkpoint in '{output_dir}'; start without "
                              f"--resume, or give the --output_dir of the run to continue")
    return found[-1]




def state_names(step_cell) -> list[str]:
    """What a checkpoint stores of the step: every parameter but the lr (an input)."""
    return [n for n in by_name(step_cell) if n != "learning_rate"]


class CheckpointManager:
    """Writes the training state ({arch}-{epoch}_{step}.ckpt, the last ``ckpt_keep`` kept;
    {arch}_best.ckpt apart) on rank 0, never a non-finite one, and words a divergence."""

    def __init__(self, run: Run):
        self.run = run
        self.state_names = state_names(run.step_cell)
        self.network_names = list(run.eval_net.parameters_dict())  # what eval/export load
        self.kept: list[str] = [path for path, ex in list_checkpoints(run.cfg.output_dir)
                                if not ex.get("best")] if run.main else []

    @property
    def last(self) -> str | None:
        return self.kept[-1] if self.kept else None

    def diverged(self, what: str) -> DivergedError:
        """The error for a run that stopped at ``what``, naming the last good checkpoint."""
        last = self.last or "none (no checkpoint was written yet)"
        return DivergedError(f"{what}; training stopped; the last good checkpoint is {last}; "
                             f"{resume_command(self.run.cfg, self.last)}")

    def _extra(self, reason: str, best_copy: bool) -> dict:
        run, pos = self.run, self.run.pos
        ev = pos.last_eval
        return {KIND_KEY: TRAIN_KIND, "epoch": pos.epoch, "epoch_step": pos.epoch_step,
                "global_step": pos.global_step, "steps_per_epoch": run.spe,
                "best_top1": pos.best_top1, "best_epoch": pos.best_epoch,
                "ema": bool(run.cfg.train.ema), "arch": run.arch.to_dict(),
                "config": to_dict(run.cfg), "reason": reason, "network": self.network_names,
                "eval": ev if ev and ev.get("global_step") == pos.global_step else None,
                "best": best_copy}

    def _state(self) -> dict:
        own = by_name(self.run.step_cell)
        state = {n: own[n].asnumpy() for n in self.state_names}
        bad = nonfinite(state)
        if bad:  # e.g. BN statistics that overflowed while the loss was still finite
            pos = self.run.pos
            self.run.runlog.write(event="stop", reason="diverged", epoch=pos.epoch,
                                  epoch_step=pos.epoch_step, global_step=pos.global_step)
            raise self.diverged(f"non-finite values in {len(bad)} tensors (e.g. '{bad[0]}') at "
                                f"epoch {pos.epoch} step {pos.epoch_step} (global step "
                                f"{pos.global_step})")
        return state

    def save(self, reason: str, best_copy: bool = False) -> str | None:
        """Write the state; ``best_copy`` writes {arch}_best.ckpt instead. None off rank 0."""
        run, pos = self.run, self.run.pos
        if not run.main:
            return None
        state = self._state()
        name = (best_ckpt_name(run.arch.name) if best_copy
                else periodic_ckpt_name(run.arch.name, pos.epoch, pos.epoch_step))
        path = run.path(name)
        save_checkpoint(path, state, self._extra(reason, best_copy))
        if best_copy:
            return path
        if path in self.kept:
            self.kept.remove(path)
        self.kept.append(path)
        while len(self.kept) > run.cfg.train.ckpt_keep:
            try:
                os.remove(self.kept.pop(0))
            except OSError:
                pass
        run.runlog.write(event="checkpoint", epoch=pos.epoch, epoch_step=pos.epoch_step,
                         global_step=pos.global_step, ckpt=name, reason=reason)
        return path
