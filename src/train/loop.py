"""The training loop: ``train`` runs ``train_epoch`` and ``end_epoch`` (validation with the
BatchNorm statistics re-estimated, checkpoints) with two callback objects, ``StateMonitor`` and
``CheckpointManager``, over the ``Run`` that ``prepare_run`` built."""
from __future__ import annotations

import math
import os
import time
from typing import Callable

from src.data import make_dataset
from src.errors import HourNASError, Stopped
from src.evaluate import by_name, copy_weights, evaluate
from src.rundir import TRAIN_PLOT_FILE, best_ckpt_name
from src.runlog import StopSignals, hms, params_digest, signal_name
from src.train.checkpoints import CheckpointManager
from src.train.config import TrainConfig
from src.train.factory import create_dataset, lr_at
from src.train.monitor import StateMonitor, plot_log
from src.train.prepare import Run, prepare_run

def _check_finite(run: Run, ckpt: CheckpointManager, loss: float, grads_finite: bool) -> None:
    """A NaN/inf loss (or, without a loss scale to absorb it, an overflowed gradient) stops
    the run before the step counts; the update was not applied."""
    if math.isfinite(loss) and (grads_finite or run.use_scale):
        return
    pos = run.pos
    run.runlog.write(event="stop", reason="diverged", epoch=pos.epoch,
                     epoch_step=pos.epoch_step + 1, global_step=pos.global_step + 1, loss=loss)
    raise ckpt.diverged(f"loss is {loss} (gradients {'finite' if grads_finite else 'not finite'}) "
                        f"at epoch {pos.epoch} step {pos.epoch_step + 1} (global step "
                        f"{pos.global_step + 1})")


def _stopped(run: Run, ckpt: CheckpointManager, signum: int) -> Stopped:
    """Checkpoint where a stop signal found the run (unless the epoch's end just did)."""
    name, pos = signal_name(signum), run.pos
    path = ckpt.last if pos.epoch_step == run.spe and ckpt.kept else ckpt.save(name)
    run.runlog.write(event="stop", reason=name, global_step=pos.global_step,
                     ckpt=os.path.basename(path) if path else None)
    return Stopped(signum, f"stopped by {name} at epoch {pos.epoch} step {pos.epoch_step}/"
                           f"{run.spe} (global step {pos.global_step}); saved {path}; continue "
                           f"with --resume")


def train_epoch(run: Run, monitor: StateMonitor, ckpt: CheckpointManager,
                stop: StopSignals) -> None:
    """The rest of the current epoch, one compiled step per batch."""
    import mindspore as ms

    p, pos = run.cfg.train, run.pos
    data, _ = create_dataset(run.cfg, "train", epoch=pos.epoch - 1, start_batch=pos.epoch_step,
                             shard=run.shard)
    monitor.epoch_begin()
    for x, y in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
        if pos.epoch_step >= run.spe:
            break
        lr = lr_at(p, pos.global_step, run.spe)
        t0 = time.perf_counter()
        loss, finite = run.step_cell(ms.Tensor(x), ms.Tensor(y), ms.Tensor(lr, ms.float32))
        loss, finite = float(loss.asnumpy()), bool(finite.asnumpy())
        monitor.clock.add(time.perf_counter() - t0)
        stop.pin()
        _check_finite(run, ckpt, loss, finite)
        pos.epoch_step += 1
        pos.global_step += 1
        monitor.step_end(loss, lr)
        if p.ckpt_every and pos.global_step % p.ckpt_every == 0 and pos.epoch_step < run.spe:
            ckpt.save("interval")
        if stop.agree(run.agree) is not None:  # a signal seen by one device stops all
            break
    if pos.epoch_step < run.spe:
        if stop.signum is not None:
            raise _stopped(run, ckpt, stop.signum)
        raise HourNASError(f"the training data ran out at epoch {pos.epoch} step "
                           f"{pos.epoch_step}/{run.spe}")


def recalibrate_bn(run: Run, own: dict, prefix: str) -> None:
    """Re-estimate the BatchNorm running statistics of ``run.eval_net`` (which holds the weights
    being validated) from ``train.bn_recalibrate`` batches of training images, not augmented,
    in a fixed order per epoch: forward passes in training mode move each running average
    towards these weights' statistics (momentum 0.9 a batch: after n batches the lagged start
    weighs 0.9^n). The new statistics go back into the step's own (``prefix``: "ema." for the
    EMA copy), so the checkpoint holds what was evaluated; training itself never reads them.
    Data parallel: every rank reads the same batches (not its shard), so all ranks hold the
    same statistics and rank 0's checkpoint is what the sharded evaluation used."""
    import mindspore as ms

    p = run.cfg.train
    data = make_dataset(run.cfg.data, "train", p.batch_size // run.size, augment=False,
                        shuffle=True, seed=p.seed + 1, epoch=run.pos.epoch, shard=None,
                        drop_remainder=True)
    run.eval_net.set_train(True)
    done = 0
    while done < p.bn_recalibrate:
        for x, _ in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
            run.eval_net(ms.Tensor(x))
            done += 1
            if done == p.bn_recalibrate:
                break
    run.eval_net.set_train(False)
    stats = [n for n in run.eval_net.parameters_dict() if n.endswith(("moving_mean",
                                                                      "moving_variance"))]
    for n in stats:
        own[prefix + n].set_data(ms.Tensor(run.eval_net.parameters_dict()[n].asnumpy()))


def validate(run: Run, ckpt: CheckpointManager) -> str:
    """Evaluate the trained (or EMA) weights (their BatchNorm statistics re-estimated first
    with ``train.bn_recalibrate``), checkpoint the epoch and the best; returns the part of the
    epoch line that reports it."""
    pos, p = run.pos, run.cfg.train
    own = by_name(run.step_cell)
    prefix = "ema." if p.ema else ""
    copy_weights(run.eval_net, {n: own[prefix + n] for n in run.eval_net.parameters_dict()})
    if p.bn_recalibrate:
        recalibrate_bn(run, own, prefix)
    r = evaluate(run.eval_net, run.cfg.data, p.eval_batch_size or p.batch_size, shard=run.shard)
    pos.last_eval = {**r, "epoch": pos.epoch, "global_step": pos.global_step}
    improved = pos.best_top1 is None or r["top1"] > pos.best_top1
    if improved:
        pos.best_top1, pos.best_epoch = r["top1"], pos.epoch
    path = ckpt.save("epoch")
    if improved:
        ckpt.save("best", best_copy=True)
    run.runlog.write(event="eval", epoch=pos.epoch, global_step=pos.global_step,
                     ckpt=os.path.basename(path) if path else None,
                     **{k: r[k] for k in ("top1", "top5", "loss", "images")})
    if run.main:
        plot_log(run.runlog.path, run.path(TRAIN_PLOT_FILE))
    return (f"; eval top-1 {r['top1']:.2f}% top-5 {r['top5']:.2f}% loss {r['loss']:.4f} over "
            f"{r['images']} images, {r['images_per_s']:.0f} img/s (best {pos.best_top1:.2f}% "
            f"at epoch {pos.best_epoch})")


def end_epoch(run: Run, monitor: StateMonitor, ckpt: CheckpointManager,
              stop: StopSignals) -> None:
    """Validate every ``val_interval`` epochs and after the last, checkpoint, report."""
    p, pos = run.cfg.train, run.pos
    msg = monitor.epoch_message()
    if pos.epoch % p.val_interval == 0 or pos.epoch == p.epochs:
        msg += validate(run, ckpt)
    else:
        ckpt.save("epoch")
    run.log(msg)
    if stop.agree(run.agree) is not None:
        raise _stopped(run, ckpt, stop.signum)


def _summary(run: Run, monitor: StateMonitor, ckpt: CheckpointManager, wall: float) -> dict:
    pos, p = run.pos, run.cfg.train
    summary = {"exit_code": 0, "arch": run.arch.name, "epochs": p.epochs,
               "global_step": pos.global_step, "best_top1": pos.best_top1,
               "best_epoch": pos.best_epoch, "last": pos.last_eval, "ckpt": ckpt.last,
               "best_ckpt": run.path(best_ckpt_name(run.arch.name)), "wall_s": wall,
               "rank": run.rank, "devices": run.size,
               "weights_sha256": params_digest(run.net.trainable_params()),
               "train_images_per_s": monitor.images_per_s(), "output_dir": run.cfg.output_dir}
    run.runlog.write(event="done", global_step=pos.global_step, wall_s=wall,
                     best_top1=pos.best_top1)
    run.log(f"done in {hms(wall)}: best top-1 {pos.best_top1:.2f}% (epoch {pos.best_epoch}); "
            f"outputs in {run.cfg.output_dir}")
    return summary


def train(cfg: TrainConfig, facts: dict, *, resume_from: str | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Train ``cfg`` (continuing ``resume_from`` if given) on the device the entry point set
    up (``facts``: ``src.context.setup_context(..., "graph")``'s; the seed is the entry
    point's too: ``src.context.set_seed(cfg.train.seed)``). Returns a summary (``exit_code``
    0). SIGTERM/SIGINT: the step ends, a checkpoint is written and ``Stopped`` is raised
    (the entry point exits 128 + signum). A NaN/inf loss raises DivergedError (the last good
    checkpoint stays)."""
    t_start = time.time()
    run = prepare_run(cfg, facts, resume_from, log)
    ckpt, monitor = CheckpointManager(run), StateMonitor(run)
    with StopSignals() as stop:
        while run.pos.epoch <= cfg.train.epochs:
            train_epoch(run, monitor, ckpt, stop)
            end_epoch(run, monitor, ckpt, stop)
            if run.pos.epoch == cfg.train.epochs:
                break
            run.pos.epoch += 1
            run.pos.epoch_step = 0
    return _summary(run, monitor, ckpt, time.time() - t_start)
