"""The bilevel loop of Algorithm 1 (lines 3-10 in stage 1, 15-22 in stage 2).

One iteration is one weight step then one architecture step:

1. a batch of the 80% split (``weight_batches``), a path sampled from θ (stage 2: a proposal
   from Π, then a path from its θ_j) with fresh Gumbel noise, SGD on that path's weights at
   ``weight_lr`` (``search.w_lr_schedule``: cosine or constant) (lines 5 / 17);
2. a batch of the 20% split (``arch_batches``), another path with fresh noise, the gradient of
   CE (+ α·T in stage 2) for θ (Π, Θ), Adam on the host (lines 8 / 20). Not in the stage's
   first ``warmup`` epochs (``search.warmup_nvital``, stage 2): there the weights train on
   paths drawn from θ as it started (Π uniform over the solved proposals), so that no path is
   trained more because θ already favoured it (the warm-up of FBNet and ProxylessNAS; not in
   the paper).

The paper alternates per epoch (a pass over the weight split, then one over the architecture
split); this loop alternates per step. Both see the same data per epoch; per-step alternation
lets θ follow the weights within the one epoch per stage the paper runs, and a stop or a
resume lands between two whole iterations. τ decays by ``tau_decay`` per iteration.

Where a run is lives in ``run.state`` (``src.search.state.SearchState``): both data streams
start from its positions, so a resumed stage continues at the saved iteration.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from src.data import make_dataset, sample_order
from src.search.hooks import check_finite_losses
from src.search.step import PathSample, StepResult, sample_path


@dataclass
class Stage:
    """What one stage trains: the supernet, θ or Π/Θ, their optimizers and the executor."""

    name: str              # vital | nonvital | single (no vital priori)
    net: object            # src.supernet.Supernet
    arch: object           # src.search.step.ArchParams
    sgd: object            # src.search.step.SparseSGD (the weights)
    adam: object           # src.search.step.HostAdam (θ / Π, Θ)
    executor: object       # src.search.step.Executor
    table: object          # stage 2: the ResourceTable of the searched layers; S_vital: None
    epochs: int
    warmup: int = 0        # the first epochs train only the weights (θ frozen; no arch step)


@dataclass
class Iteration:
    """What one iteration did, as the hooks see it (``run.state`` has already advanced)."""

    stage: str
    tau: float
    lr: float
    w_path: PathSample
    w: StepResult
    a_path: PathSample | None  # None in a warm-up epoch (θ frozen)
    a: StepResult | None
    seconds: float


def bilevel_loop(run, stage: Stage, hooks: Sequence[Callable[[Iteration], None]]) -> None:
    """Train ``stage`` for its epochs from ``run.state``'s position; after every iteration
    the hooks run in order (log, checkpoint, stop on a signal)."""
    state, p, arch = run.state, run.p, stage.arch
    total = stage.epochs * run.steps_per_epoch()
    val = arch_batches(run)
    for x, y in weight_batches(run, stage.epochs):
        t0 = time.perf_counter()
        tau = run.tau.value(state.global_step)
        lr = weight_lr(p, state.stage_step, total)
        # weights: a path sampled from θ (Π, Θ), SGD on its weights, 80% split
        w_path = sample_path(arch, run.noise, tau)
        w = stage.executor.weight_step(x, y, w_path, lr)
        # architecture: another path, CE + α·T on the 20% split, Adam on θ (Π, Θ); not in a
        # warm-up epoch, where the weights train on paths from θ as it started
        a_path = a = None
        if state.epoch >= stage.warmup:
            xv, yv = next(val)
            a_path = sample_path(arch, run.noise, tau)
            a = stage.executor.arch_step(xv, yv, a_path)
            arch.assign(stage.adam.step(arch.values(), a.grads))
        check_finite_losses(run, stage, w.loss, a.loss if a else 0.0)
        state.advance()
        it = Iteration(stage.name, tau, lr, w_path, w, a_path, a, time.perf_counter() - t0)
        for hook in hooks:
            hook(it)


def weight_lr(p, step: int, total: int) -> float:
    """The weights' learning rate at ``step`` of a stage of ``total`` (``search.w_lr_schedule``:
    cosine from ``w_lr`` to 0, or ``w_lr`` throughout)."""
    return p.w_lr if p.w_lr_schedule == "constant" else cosine_lr(p.w_lr, step, total)


def cosine_lr(base: float, step: int, total: int) -> float:
    """The weights' learning rate, cosine from ``base`` to 0 over a stage. (Not
    ``src.runlog.cosine``: that one computes π·(step/total), this π·step/total, which may
    differ in the last bit, and a search's results are kept the same to the bit.)"""
    return 0.5 * base * (1 + math.cos(math.pi * step / total))


def weight_batches(run, epochs: int) -> Iterator:
    """The 80% split, epoch after epoch, from ``run.state``'s (epoch, step); the loop
    advances ``state.step``, this stream the epoch."""
    state, p = run.state, run.p
    steps = run.steps_per_epoch()
    while state.epoch < epochs:
        if state.step < steps:  # (a state saved right at an epoch's end has step == steps)
            data = make_dataset(run.cfg.data, "train", run.rank_batch, indices=run.w_idx,
                                shuffle=True, seed=p.seed, epoch=state.epoch,
                                start_batch=state.step, shard=run.shard, drop_remainder=True)
            it = data.create_tuple_iterator(num_epochs=1)
            while state.step < steps:
                yield next(it)
        state.epoch += 1
        state.step = 0


def arch_batches(run) -> Iterator:
    """Endless stream over the architecture split (20%), resumable by (val_epoch, val_pos)."""
    state, p = run.state, run.p  # (run.check_batches: the split holds a batch)
    per_epoch = len(sample_order(run.a_idx, shard=run.shard)) // run.rank_batch
    while True:
        # a state saved right after an epoch's last batch has val_pos == per_epoch
        if state.val_pos < per_epoch:
            data = make_dataset(run.cfg.data, "train", run.rank_batch, indices=run.a_idx,
                                shuffle=True, seed=p.seed + 1, epoch=state.val_epoch,
                                start_batch=state.val_pos, shard=run.shard, drop_remainder=True)
            for x, y in data.create_tuple_iterator(num_epochs=1):
                state.val_pos += 1
                yield x, y
        state.val_epoch += 1
        state.val_pos = 0
