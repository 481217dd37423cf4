"""Training a standalone network from an architecture record, as a pipeline of factories:

    cfg   = load_config(TrainConfig, path, overrides)         # train.py
    arch  = resolve_arch(cfg, info)                           # record -> sized for the dataset
    data  = create_dataset(cfg, "train", epoch, start_batch)  # host-decided order (src.data)
    net   = create_model(arch)                                # src.childnet.ChildNet
    loss  = create_loss(cfg.train)
    opt   = create_optimizer(net, cfg.train)
    step  = TrainStep(net, loss, opt, ...)                    # one graph, compiled once
    train(cfg)                                                # the loop below

Everything a resumed run needs (epoch, step, optimizer moments, EMA weights, loss scale, best
accuracy, the architecture record and the resolved config) is stored inside the checkpoint;
file names are for people only.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from src.checkpoint import (atomic_write, atomic_write_text, check_fit, load_checkpoint,
                            save_checkpoint)
from src.config import flatten, save_config, to_dict
from src.context import agree_stop, params_digest
from src.data import DataConfig, DatasetInfo, dataset_info, make_dataset, num_batches, sample_order
from src.errors import CheckpointError, ConfigError, HourNASError
from src.jsonlog import read_jsonl
from src.space.plan import ACTIVATIONS
from src.space.space import Arch, arch_from_dict, load_arch

SCHEDULES = ("cosine", "constant")
LR_SCALINGS = ("linear", "none")
AMP_LEVELS = ("O0", "O1", "O2", "O3")
LOG_NAME = "train_log.jsonl"
PLOT_NAME = "train_curves.png"
CONFIG_NAME = "config.yaml"
ARCH_NAME = "arch.yaml"
CKPT_FORMAT = "hournas-train-1"
# Keys that may change when a run is resumed: they do not change what is computed.
# (train.epochs may grow: the schedule is recomputed for the new length from that step on.
# distributed and the device count may change: train.batch_size is global, so the steps, the
# data order and the lr are the same; only BatchNorm's batches are per device.)
# The learning-rate keys (RESUME_LR_KEYS) may change too, so a diverged run continues from its
# last good checkpoint with a lower rate; the schedule continues at the saved step with the
# new values, and the log says so.
RESUME_LR_KEYS = ("train.lr", "train.min_lr")
RESUME_MAY_CHANGE = ("arch", "distributed", "train.epochs", "train.log_every", "train.val_interval",
                     "train.ckpt_keep", "train.ckpt_every", "train.eval_batch_size",
                     "data.num_workers", "data.path", "output_dir", "device_target") + RESUME_LR_KEYS


class DivergedError(HourNASError):
    """The loss became NaN or infinite."""


def resume_command(cfg: "TrainConfig", last: str | None) -> str:
    """What to run after a divergence: continue from the last good checkpoint with a tenth
    of the learning rate (or, without one, start again with it)."""
    import shlex

    lower = f"--set train.lr={cfg.train.lr / 10:g}"
    if cfg.train.min_lr > cfg.train.lr / 10:
        lower += f" --set train.min_lr={cfg.train.lr / 10:g}"
    if last is None:
        return (f"no checkpoint was written yet: start again with a lower learning rate "
                f"({lower}) in a new --output_dir")
    return (f"continue from it with a lower learning rate: python train.py --output_dir "
            f"{shlex.quote(cfg.output_dir)} --resume {lower}")


# ----------------------------------------------------------------------------- config

@dataclass
class TrainParams:
    """The ``train:`` section. Defaults are the built-in digits recipe (config/train/digits.yaml)."""

    epochs: int = 8
    batch_size: int = 64            # global: summed over all devices
    eval_batch_size: int | None = None   # default: batch_size
    steps_per_epoch: int | None = None   # cap per epoch (quick runs); None = the whole split
    # lr is the peak rate at a global batch of base_batch. lr_scaling 'linear' scales it by
    # batch_size / base_batch (Goyal et al. 2017), so a recipe keeps its meaning on other batch
    # sizes; 'none' uses lr as given.
    lr: float = 0.02
    base_batch: int = 64
    lr_scaling: str = "linear"
    warmup_epochs: float = 1.0      # linear warm-up from lr/warmup_steps to lr
    schedule: str = "cosine"        # cosine (to min_lr) | constant
    min_lr: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 4e-5
    decay_bn_bias: bool = False     # weight decay on BN gamma/beta and biases too
    label_smoothing: float = 0.0
    ema: bool = False               # evaluate/export an exponential moving average of weights
    ema_decay: float = 0.9999
    amp_level: str = "O0"           # O0 (fp32; forced on CPU) | O1 | O2 | O3 (GPU/Ascend)
    loss_scale: float = 1024.0      # initial loss scale when amp_level != O0
    dynamic_loss_scale: bool = True
    activation: str | None = None   # replace the architecture's activation (e.g. swish)
    dropout: float | None = None    # replace the architecture's classifier dropout
    val_interval: int = 1           # validate every N epochs (and after the last)
    log_every: int = 10             # progress line every N steps
    ckpt_every: int = 0             # also checkpoint every N steps (0: at epoch ends only)
    ckpt_keep: int = 3              # periodic checkpoints kept (the best one is kept apart)
    seed: int = 0
    sync_bn: bool = False           # data parallel on GPU/Ascend: BatchNorm over the global batch

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "base_batch", "val_interval", "log_every", "ckpt_keep"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("eval_batch_size", "steps_per_epoch"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1 or null, got {getattr(self, key)}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(f"train.lr must be > 0 and 0 <= train.min_lr <= train.lr "
                              f"(got lr {self.lr}, min_lr {self.min_lr})")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ConfigError(f"train.warmup_epochs must be in [0, epochs={self.epochs}], "
                              f"got {self.warmup_epochs}")
        if self.ckpt_every < 0:
            raise ConfigError(f"train.ckpt_every must be >= 0 (0 = epoch ends), got {self.ckpt_every}")
        if not 0.0 <= self.momentum < 1.0 or self.weight_decay < 0:
            raise ConfigError("train.momentum must be in [0, 1) and train.weight_decay >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"train.dropout must be in [0, 1) or null, got {self.dropout}")
        if self.loss_scale < 1:
            raise ConfigError(f"train.loss_scale must be >= 1, got {self.loss_scale}")
        for key, valid in (("schedule", SCHEDULES), ("lr_scaling", LR_SCALINGS),
                           ("amp_level", AMP_LEVELS)):
            if getattr(self, key) not in valid:
                raise ConfigError(f"unknown train.{key} '{getattr(self, key)}'; valid: "
                                  f"{', '.join(valid)}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown train.activation '{self.activation}'; valid: "
                              f"{', '.join(ACTIVATIONS)} (or null to keep the architecture's)")

    @property
    def peak_lr(self) -> float:
        scale = self.batch_size / self.base_batch if self.lr_scaling == "linear" else 1.0
        return self.lr * scale


@dataclass
class TrainConfig:
    """A training run (config/train/*.yaml)."""

    arch: str | None = None         # architecture YAML (config/arch/NAME.yaml or a search result)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainParams = field(default_factory=TrainParams)
    output_dir: str = "runs/train"
    device_target: str = "CPU"
    distributed: bool = False       # data parallel under msrun / mpirun


# ----------------------------------------------------------------------------- factories

def resolve_arch(arch: Arch | str, info: DatasetInfo, params: TrainParams,
                 log: Callable[[str], None] | None = None) -> Arch:
    """The architecture to train: sized for the dataset (classes, input size) and with the
    recipe's activation/dropout overrides. Prints what it changed."""
    if isinstance(arch, str):
        arch = load_arch(arch)
    changes = {}
    if arch.num_classes != info.num_classes:
        changes["num_classes"] = info.num_classes
    if arch.input_size != info.image_size:
        changes["input_size"] = info.image_size
    if params.dropout is not None and params.dropout != arch.dropout:
        changes["dropout"] = params.dropout
    conv = arch.conventions
    if params.activation is not None and params.activation != conv.activation:
        conv = dataclasses.replace(conv, activation=params.activation)
        changes["activation"] = params.activation
    if not changes:
        return arch
    data = arch.to_dict()
    data.update({k: v for k, v in changes.items() if k != "activation"})
    data["conventions"] = {k: getattr(conv, k) for k in conv.__dataclass_fields__}
    new = arch_from_dict(data, where=f"architecture '{arch.name}'")
    if log:
        log(f"architecture {arch.name}: " + ", ".join(f"{k} {getattr(arch, k, None) if k != 'activation' else arch.conventions.activation} -> {v}"
                                                       for k, v in changes.items()))
    return new


def create_dataset(cfg: TrainConfig, split: str, *, epoch: int = 0, start_batch: int = 0,
                   shard: tuple[int, int] | None = None):
    """(dataset, batches per epoch) of one epoch of ``split``; training: shuffled, augmented,
    per-device batch, full batches only; eval: every image, in order."""
    p = cfg.train
    if split == "train":
        size = shard[1] if shard else 1
        per_device = p.batch_size // size
        data = make_dataset(cfg.data, "train", per_device, augment=True, shuffle=True, seed=p.seed,
                            epoch=epoch, start_batch=start_batch, shard=shard, drop_remainder=True)
        return data, steps_per_epoch(cfg, shard)
    batch = p.eval_batch_size or p.batch_size
    info = dataset_info(cfg.data)
    return make_dataset(cfg.data, "eval", batch), num_batches(info.eval_size, batch, False)


def steps_per_epoch(cfg: TrainConfig, shard: tuple[int, int] | None = None) -> int:
    p = cfg.train
    size = shard[1] if shard else 1
    n = len(sample_order(np.arange(dataset_info(cfg.data).train_size), shard=shard))
    full = n // (p.batch_size // size)
    if full < 1:
        raise ConfigError(f"train.batch_size {p.batch_size} is larger than the training split "
                          f"({n} images per device)")
    return min(full, p.steps_per_epoch or full)


def create_model(arch: Arch):
    from src.childnet import ChildNet
    return ChildNet(arch)


def use_sync_batchnorm(net, make=None) -> int:
    """Replace every ``nn.BatchNorm2d`` of ``net`` by a BatchNorm whose statistics are taken
    over the global batch (``nn.SyncBatchNorm``: GPU and Ascend only), keeping the parameter
    names and values, so checkpoints stay loadable into the plain net (eval, export).
    ``make(bn)`` builds the replacement (tests pass a stand-in). Returns how many it replaced."""
    import mindspore.nn as nn

    if make is None:
        def make(bn):
            return nn.SyncBatchNorm(bn.num_features, eps=bn.eps, momentum=1.0 - bn.momentum)
    done = 0
    for _, cell in list(net.cells_and_names()):
        for attr, child in list(cell.name_cells().items()):
            if not isinstance(child, nn.BatchNorm2d):
                continue
            new = make(child)
            if isinstance(cell, (nn.CellList, nn.SequentialCell)):
                cell[int(attr)] = new
            else:
                setattr(cell, attr, new)
            for key in ("gamma", "beta", "moving_mean", "moving_variance"):
                old_p, new_p = getattr(child, key), getattr(new, key)
                new_p.set_data(old_p.data.copy())
                new_p.name = old_p.name  # after setattr, which prefixes names afresh
            done += 1
    return done


def create_loss(p: TrainParams):
    import mindspore.nn as nn
    return nn.CrossEntropyLoss(label_smoothing=p.label_smoothing)


def lr_at(p: TrainParams, step: int, steps_per_epoch: int) -> float:
    """Learning rate of global step ``step`` (0-based): linear warm-up, then cosine/constant."""
    peak = p.peak_lr
    total = p.epochs * steps_per_epoch
    warm = int(round(p.warmup_epochs * steps_per_epoch))
    if step < warm:
        return peak * (step + 1) / warm
    if p.schedule == "constant":
        return peak
    t = (step - warm) / max(1, total - warm)
    return p.min_lr + 0.5 * (peak - p.min_lr) * (1.0 + math.cos(math.pi * min(1.0, t)))


def create_optimizer(net, p: TrainParams):
    """SGD with momentum; the learning rate is a Parameter the loop sets every step."""
    import mindspore as ms
    import mindspore.nn as nn

    params = net.trainable_params()
    if p.decay_bn_bias:
        groups = [{"params": params, "weight_decay": p.weight_decay}]
    else:
        decay = [q for q in params if q.ndim > 1]
        rest = [q for q in params if q.ndim <= 1]
        groups = [{"params": decay, "weight_decay": p.weight_decay},
                  {"params": rest, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    groups.append({"order_params": params})
    return nn.Momentum(groups, learning_rate=ms.Tensor(p.peak_lr, ms.float32), momentum=p.momentum,
                       use_nesterov=p.nesterov)


def _graph_helpers():
    import mindspore.ops as ops

    unscale = ops.MultitypeFuncGraph("unscale")

    @unscale.register("Tensor", "Tensor")
    def _unscale(scale, grad):
        return grad / ops.cast(scale, grad.dtype)

    ema = ops.MultitypeFuncGraph("ema")

    @ema.register("Tensor", "Tensor", "Tensor")
    def _ema(decay, avg, value):
        return ops.assign(avg, avg * decay + (1.0 - decay) * ops.cast(value, avg.dtype))

    return unscale, ema


def TrainStep(net, loss_fn, optimizer, *, loss_scale: float = 1.0, dynamic: bool = False,
              ema_decay: float | None = None, scale_window: int = 1000):
    """One training step as a single graph: forward, scaled backward, gradient all-reduce
    (data parallel), overflow check, SGD update, EMA update. Returns (loss, grads_finite).

    With ``dynamic`` the loss scale halves on overflow (the step is skipped) and doubles after
    ``scale_window`` good steps (MindSpore's DynamicLossScaleManager rule).
    """
    import mindspore as ms
    import mindspore.nn as nn
    import mindspore.ops as ops
    from mindspore import Parameter, ParameterTuple, Tensor
    from mindspore.amp import all_finite
    from mindspore.communication import get_group_size

    unscale, ema_op = _graph_helpers()

    class _TrainStep(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.network = nn.WithLossCell(net, loss_fn)
            self.network.set_grad()
            self.optimizer = optimizer
            self.weights = optimizer.parameters
            self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
            self.hyper_map = ops.HyperMap()
            self.scale = Parameter(Tensor(float(loss_scale), ms.float32), name="loss_scale",
                                   requires_grad=False)
            self.good_steps = Parameter(Tensor(0, ms.int32), name="loss_scale_good_steps",
                                        requires_grad=False)
            self.dynamic = dynamic
            self.window = scale_window
            self.reducer = None
            mode = ms.get_auto_parallel_context("parallel_mode")
            if mode in (ms.ParallelMode.DATA_PARALLEL, ms.ParallelMode.HYBRID_PARALLEL):
                self.reducer = nn.DistributedGradReducer(self.weights, mean=True)
                self.loss_sum = ops.AllReduce()  # the loss logged: the global batch's mean
                self.inv_devices = 1.0 / get_group_size()
            self.use_ema = ema_decay is not None
            if self.use_ema:
                self.model_params = ParameterTuple(list(net.get_parameters()))
                self.ema_params = self.model_params.clone("ema", init="same")
                self.ema_decay = float(ema_decay)
                self.ema_updates = Parameter(Tensor(0.0, ms.float32), name="ema_updates",
                                             requires_grad=False)

        def _adjust_scale(self, finite):
            one = ops.ones_like(self.scale)
            good = ops.select(finite, self.good_steps + 1, ops.zeros_like(self.good_steps))
            grow = good >= self.window
            scale = ops.select(finite, ops.select(grow, self.scale * 2.0, self.scale),
                               ops.maximum(self.scale * 0.5, one))
            good = ops.select(grow, ops.zeros_like(good), good)
            return ops.depend(ops.assign(self.scale, scale), ops.assign(self.good_steps, good))

        def construct(self, x, y, lr):
            # the learning rate is an input: set_data on the optimizer's Parameter between
            # steps is not seen by a compiled graph of a grouped optimizer
            loss = ops.depend(self.network(x, y), ops.assign(self.optimizer.learning_rate, lr))
            sens = ops.ones_like(loss) * ops.cast(self.scale, loss.dtype)
            grads = self.grad(self.network, self.weights)(x, y, sens)
            if self.reducer is not None:
                grads = self.reducer(grads)
                loss = self.loss_sum(loss) * self.inv_devices
            grads = self.hyper_map(ops.partial(unscale, self.scale), grads)
            finite = all_finite(grads)
            if self.dynamic:
                loss = ops.depend(loss, self._adjust_scale(finite))
            if finite:
                loss = ops.depend(loss, self.optimizer(grads))
                if self.use_ema:
                    n = self.ema_updates + 1.0
                    loss = ops.depend(loss, ops.assign(self.ema_updates, n))
                    # warm-up of the decay (TF's num_updates rule): early averages follow fast
                    decay = ops.minimum(self.ema_decay, (1.0 + n) / (10.0 + n))
                    loss = ops.depend(loss, self.hyper_map(ops.partial(ema_op, decay),
                                                           self.ema_params, self.model_params))
            return loss, finite

    return _TrainStep()


# ----------------------------------------------------------------------------- evaluation

def evaluate(net, data_cfg: DataConfig, batch_size: int,
             shard: tuple[int, int] | None = None) -> dict[str, float]:
    """Top-1/top-5 (%) and cross-entropy over every image of the eval split.

    The last partial batch is padded to ``batch_size`` (so the compiled graph is reused) and
    only its real images are counted. images_per_s excludes the first call (graph compile).
    ``shard=(rank, size)`` (data parallel): each rank evaluates every size-th image and the
    counts are summed over the ranks, so every rank returns the whole split's figures.
    """
    import mindspore as ms

    net.set_train(False)
    indices = None
    if shard is not None:
        indices = np.arange(dataset_info(data_cfg).eval_size)[shard[0]::shard[1]]
    data = make_dataset(data_cfg, "eval", batch_size, indices=indices)
    n = c1 = c5 = 0
    loss_sum = 0.0
    t0 = time.perf_counter()
    compiled = False
    for x, y in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
        b = len(y)
        if b < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - b,) + x.shape[1:], x.dtype)])
        if not compiled:  # compile outside the timing
            net(ms.Tensor(x)).asnumpy()
            compiled, t0 = True, time.perf_counter()
        logits = net(ms.Tensor(x)).asnumpy()[:b].astype(np.float64)
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        loss_sum += float((lse - logits[np.arange(b), y]).sum())
        top = np.argsort(-logits, axis=1, kind="stable")[:, :5]
        c1 += int((top[:, 0] == y).sum())
        c5 += int((top == y[:, None]).any(axis=1).sum())
        n += b
    seconds = time.perf_counter() - t0
    if shard is not None:
        import mindspore.ops as ops
        # float32 (AllReduce takes no float64): counts stay exact below 2**24 images
        total = ops.AllReduce()(ms.Tensor(np.array([n, c1, c5, loss_sum], np.float32))).asnumpy()
        n, c1, c5 = (int(round(float(v))) for v in total[:3])
        loss_sum = float(total[3])  # seconds stay this rank's (CPU AllReduce only sums)
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss_sum / n, "images": n,
            "seconds": seconds, "images_per_s": n / seconds if seconds > 0 else float("nan")}


def network_params(params: dict, extra: dict) -> dict:
    """The weights to evaluate/export from a training checkpoint: the EMA copy when the run
    kept one, else the trained weights; keyed by the network's own parameter names."""
    names = extra.get("network")
    if not isinstance(names, list):  # not a training checkpoint: plain network weights
        return params
    src = "ema." if extra.get("ema") else ""
    missing = [n for n in names if src + n not in params]
    if missing:
        raise CheckpointError(f"training checkpoint lacks {len(missing)} network weights "
                              f"({', '.join(missing[:3])}); it is damaged")
    return {n: params[src + n] for n in names}


def _by_name(cell) -> dict:
    """Parameters of a Cell keyed by their own names (what checkpoints store)."""
    return {q.name: q for _, q in cell.parameters_and_names()}


def _copy_weights(dst, src: dict) -> None:
    import mindspore as ms

    for name, p in dst.parameters_dict().items():
        p.set_data(ms.Tensor(src[name].asnumpy()))


def arch_of_checkpoint(extra: dict, path: str) -> Arch:
    record = extra.get("arch")
    if not isinstance(record, dict):
        raise CheckpointError(f"checkpoint '{path}' holds no architecture record; give --arch FILE")
    return arch_from_dict(record, where=f"architecture record of '{path}'")


def load_network(ckpt: str, arch_path: str | None = None):
    """(net in eval mode, arch, extra) from a training checkpoint; the architecture is the
    checkpoint's own record unless ``arch_path`` is given. Mismatches raise CheckpointError."""
    from src.checkpoint import load_into

    params, extra = load_checkpoint(ckpt)
    stored = extra.get("arch")
    trained = f" (trained as '{stored['name']}')" if isinstance(stored, dict) and \
        isinstance(stored.get("name"), str) else ""
    if arch_path:
        arch = load_arch(arch_path)
        if isinstance(stored, dict):  # keep the trained head size and input size
            arch = _like(arch, stored)
        network = f"the network of --arch '{arch_path}' ('{arch.name}')"
    else:
        arch = arch_of_checkpoint(extra, ckpt)
        network = f"its own architecture record ('{arch.name}')"
    net = create_model(arch)
    load_into(net, network_params(params, extra), strict=True,
              where=f"checkpoint '{ckpt}'{trained}", network=network)
    net.set_train(False)
    return net, arch, extra


def _like(arch: Arch, stored: dict) -> Arch:
    """``arch`` with the stored record's classes/input size/activation, as training sized it."""
    data = arch.to_dict()
    for key in ("num_classes", "input_size"):
        if key in stored:
            data[key] = stored[key]
    if isinstance(stored.get("conventions"), dict) and "activation" in stored["conventions"]:
        data["conventions"] = {**data["conventions"],
                               "activation": stored["conventions"]["activation"]}
    return arch_from_dict(data, where=f"architecture '{arch.name}'")


# ----------------------------------------------------------------------------- checkpoints

def list_checkpoints(output_dir: str, unreadable: list[str] | None = None) -> list[tuple[str, dict]]:
    """[(path, extra)] of this project's training checkpoints in ``output_dir``, oldest first
    (by the global step stored inside). Unreadable ``.ckpt`` files are skipped; their paths
    are appended to ``unreadable`` when a list is given."""
    found = []
    if not os.path.isdir(output_dir):
        return found
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if not name.endswith(".ckpt") or name.startswith(".") or not os.path.isfile(path):
            continue
        try:
            _, extra = load_checkpoint(path)
        except CheckpointError:
            if unreadable is not None:
                unreadable.append(path)
            continue
        if extra.get("format") == CKPT_FORMAT:
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


def check_resumable(stored: dict, cfg: TrainConfig) -> None:
    """Raise ConfigError if ``cfg`` changes what the stored run computes."""
    a, b = flatten(stored), flatten(to_dict(cfg))
    diff = [k for k in sorted(set(a) | set(b)) if k not in RESUME_MAY_CHANGE and a.get(k) != b.get(k)]
    if diff:
        shown = "; ".join(f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}" for k in diff[:3])
        raise ConfigError(f"--resume with a different configuration ({shown}); resume with the "
                          f"settings of the run, or start a new one in another --output_dir "
                          f"(may change on resume: {', '.join(RESUME_MAY_CHANGE)})")


# ----------------------------------------------------------------------------- logging, plot

class RunLog:
    """``train_log.jsonl``: one JSON object per line (events: start, step, compile, eval,
    checkpoint, stop)."""

    def __init__(self, path: str, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def reset(self, keep_until_step: int | None = None) -> None:
        """Start afresh, or (resume) drop records after the checkpoint's global step."""
        if not self.enabled:
            return
        lines = []
        if keep_until_step is not None and os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a kill
                    if rec.get("global_step", 0) <= keep_until_step:
                        lines.append(json.dumps(rec))
        atomic_write_text(self.path, "".join(ln + "\n" for ln in lines))

    def write(self, **rec) -> None:
        if not self.enabled:
            return
        rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
               for k, v in rec.items()}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()


read_log = read_jsonl  # the one JSON-lines reader


def plot_log(log_path: str, png_path: str) -> str | None:
    """Loss and accuracy curves of a run (PNG), from its JSONL log."""
    from src.context import pyplot
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    recs = read_log(log_path)
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


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ----------------------------------------------------------------------------- the loop

class _Stop:
    """SIGTERM/SIGINT -> finish the current step, checkpoint, exit."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def pin(self) -> None:
        """Put our handlers back: MindSpore installs a SIGINT handler of its own (it raises
        SIGTERM) once the first step has run."""
        for sig in self._old:
            signal.signal(sig, self._handle)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(cfg: TrainConfig, *, resume_from: str | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Train ``cfg`` (optionally continuing ``resume_from``); returns a summary dict with
    ``exit_code`` 0 when finished, 128+signal when stopped by SIGTERM/SIGINT (checkpoint saved).
    A NaN/inf loss raises DivergedError (the last good checkpoint stays)."""
    import mindspore as ms

    from src.context import setup_context

    t_start = time.time()
    p = cfg.train
    ctx = setup_context(cfg.device_target, "graph", distributed=cfg.distributed)
    rank, size = ctx["rank"], ctx["group_size"]
    shard = (rank, size) if size > 1 else None
    main = rank == 0
    if p.batch_size % size:
        raise ConfigError(f"train.batch_size {p.batch_size} must be divisible by the number of "
                          f"devices ({size})")
    amp_level = p.amp_level
    if ctx["device_target"] == "CPU" and amp_level != "O0":
        log(f"amp_level {amp_level} -> O0: mixed precision is not supported on CPU")
        amp_level = "O0"

    info = dataset_info(cfg.data)
    extra_in: dict = {}
    params_in: dict = {}
    if resume_from:
        params_in, extra_in = load_checkpoint(resume_from)
        if extra_in.get("format") != CKPT_FORMAT:
            raise CheckpointError(f"'{resume_from}' is not a training checkpoint of this project")
        check_resumable(extra_in["config"], cfg)
        arch = arch_of_checkpoint(extra_in, resume_from)
        if cfg.arch and cfg.arch != extra_in["config"].get("arch"):  # same net, other path?
            other = resolve_arch(cfg.arch, info, p)
            if other.to_dict() != arch.to_dict():
                raise ConfigError(f"--resume: architecture '{cfg.arch}' is not the one the run "
                                  f"trains ('{arch.name}', stored in {resume_from}); leave "
                                  f"--arch out or start a new run in another --output_dir")
    else:
        if not cfg.arch:
            raise ConfigError("no architecture: give --arch FILE (e.g. config/arch/fbnet_b.yaml or "
                              "a search result) or 'arch:' in the config")
        arch = resolve_arch(cfg.arch, info, p, log)

    spe = steps_per_epoch(cfg, shard)
    total_steps = p.epochs * spe
    os.makedirs(cfg.output_dir, exist_ok=True)
    runlog = RunLog(os.path.join(cfg.output_dir, LOG_NAME), enabled=main)
    ms.set_seed(p.seed)
    net = create_model(arch)
    if p.sync_bn and size > 1:
        if ctx["device_target"] == "CPU":
            raise ConfigError("train.sync_bn needs GPU or Ascend (MindSpore's SyncBatchNorm has "
                              "no CPU kernel); set train.sync_bn=false on CPU")
        log(f"sync_bn: {use_sync_batchnorm(net)} BatchNorm layers normalise over the global batch")
    if amp_level != "O0":
        net = ms.amp.auto_mixed_precision(net, amp_level)
    opt = create_optimizer(net, p)
    use_scale = amp_level != "O0"
    step_cell = TrainStep(net, create_loss(p), opt, loss_scale=p.loss_scale if use_scale else 1.0,
                          dynamic=use_scale and p.dynamic_loss_scale,
                          ema_decay=p.ema_decay if p.ema else None)
    step_cell.set_train()
    eval_net = create_model(arch)
    eval_net.set_train(False)
    eval_batch = p.eval_batch_size or p.batch_size

    state_names = [n for n in _by_name(step_cell) if n != "learning_rate"]
    network_names = list(eval_net.parameters_dict())  # the weights eval/export load
    if resume_from:
        own = _by_name(step_cell)
        check_fit(f"checkpoint '{resume_from}'", {n: tuple(v.shape) for n, v in params_in.items()},
                  {n: tuple(own[n].shape) for n in state_names})
        not_loaded, _ = ms.load_param_into_net(step_cell, params_in, strict_load=True)
        not_loaded = [n for n in not_loaded if n != "learning_rate"]  # set every step
        if not_loaded:
            raise CheckpointError(f"checkpoint '{resume_from}' did not load: {not_loaded[:3]}")
        epoch, epoch_step = int(extra_in["epoch"]), int(extra_in["epoch_step"])
        global_step = int(extra_in["global_step"])
        if int(extra_in["steps_per_epoch"]) != spe:
            raise ConfigError(f"--resume: the run had {extra_in['steps_per_epoch']} steps per epoch, "
                              f"this configuration gives {spe}")
        best = {"top1": extra_in.get("best_top1"), "epoch": extra_in.get("best_epoch")}
        if epoch_step >= spe:
            epoch, epoch_step = epoch + 1, 0
        runlog.reset(keep_until_step=global_step)
        log(f"resumed from {resume_from}: epoch {epoch}, step {epoch_step}/{spe} "
            f"(global step {global_step})")
        was, now = flatten(extra_in["config"]), flatten(to_dict(cfg))
        changed = {k: (was.get(k), now.get(k)) for k in RESUME_LR_KEYS if was.get(k) != now.get(k)}
        if changed:
            log("learning rate changed on resume: " + ", ".join(
                f"{k} {a:g} -> {b:g}" if isinstance(a, (int, float)) and isinstance(b, (int, float))
                else f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
                + f"; the schedule continues at global step {global_step} with the new values")
        runlog.write(event="resume", global_step=global_step, ckpt=os.path.basename(resume_from),
                     **({"lr_changed": {k: list(v) for k, v in changed.items()}} if changed else {}))
    else:
        existing = [pe for pe in list_checkpoints(cfg.output_dir) if main]
        if existing:
            raise CheckpointError(f"'{cfg.output_dir}' already holds training checkpoints (e.g. "
                                  f"{os.path.basename(existing[-1][0])}); add --resume to continue "
                                  f"that run, or choose another --output_dir")
        epoch, epoch_step, global_step = 1, 0, 0
        best = {"top1": None, "epoch": None}
        runlog.reset()
    if main:
        save_config(cfg, os.path.join(cfg.output_dir, CONFIG_NAME))
        from src.space.space import arch_to_yaml
        atomic_write_text(os.path.join(cfg.output_dir, ARCH_NAME), arch_to_yaml(arch))
    from src.resource import count
    counts = count(arch)
    n_params = sum(int(q.size) for q in net.trainable_params())
    log(f"training {arch.name}: {n_params / 1e6:.2f}M params, {counts['flops'] / 1e6:.1f}M FLOPs "
        f"at {arch.input_size}x{arch.input_size}; {info.name}: {info.train_size} train / "
        f"{info.eval_size} eval images; {p.epochs} epochs x {spe} steps of {p.batch_size} "
        f"(peak lr {p.peak_lr:g}); device {ctx['device_target']}"
        + (f", {size} devices" if size > 1 else ""))
    runlog.write(event="start", global_step=global_step, arch=arch.name, params=n_params,
                 flops=counts["flops"], epochs=p.epochs, steps_per_epoch=spe,
                 batch_size=p.batch_size, peak_lr=p.peak_lr, resumed=bool(resume_from))

    kept: list[str] = [path for path, ex in list_checkpoints(cfg.output_dir)
                       if not ex.get("best")] if main else []
    last_eval: dict | None = None

    def save(reason: str, best_copy: bool = False) -> str | None:
        """Write the training state; ``best_copy`` writes {arch}_best.ckpt instead."""
        if not main:
            return None
        extra = {"format": CKPT_FORMAT, "epoch": epoch, "epoch_step": epoch_step,
                 "global_step": global_step, "steps_per_epoch": spe, "best_top1": best["top1"],
                 "best_epoch": best["epoch"], "ema": bool(p.ema), "arch": arch.to_dict(),
                 "config": to_dict(cfg), "reason": reason,
                 "network": network_names,
                 "eval": last_eval if last_eval and last_eval.get("global_step") == global_step
                 else None, "best": best_copy}
        own = _by_name(step_cell)
        state = {n: own[n].asnumpy() for n in state_names}
        bad = [n for n, a in state.items() if not np.isfinite(a).all()]
        if bad:  # e.g. BN statistics that overflowed while the loss was still finite
            last = kept[-1] if kept else "none (no checkpoint was written yet)"
            runlog.write(event="stop", reason="diverged", epoch=epoch, epoch_step=epoch_step,
                         global_step=global_step)
            raise DivergedError(
                f"non-finite values in {len(bad)} tensors (e.g. '{bad[0]}') at epoch {epoch} "
                f"step {epoch_step} (global step {global_step}); training stopped; the last good "
                f"checkpoint is {last}; {resume_command(cfg, kept[-1] if kept else None)}")
        name = f"{arch.name}_best.ckpt" if best_copy else f"{arch.name}-{epoch}_{epoch_step}.ckpt"
        path = os.path.join(cfg.output_dir, name)
        save_checkpoint(path, state, extra)
        if best_copy:
            return path
        if path in kept:
            kept.remove(path)
        kept.append(path)
        while len(kept) > p.ckpt_keep:
            old = kept.pop(0)
            try:
                os.remove(old)
            except OSError:
                pass
        runlog.write(event="checkpoint", epoch=epoch, epoch_step=epoch_step,
                     global_step=global_step, ckpt=name, reason=reason)
        return path

    def run_eval() -> dict:
        nonlocal last_eval
        own = _by_name(step_cell)
        src = {n: own[("ema." + n) if p.ema else n] for n in eval_net.parameters_dict()}
        _copy_weights(eval_net, src)
        r = evaluate(eval_net, cfg.data, eval_batch, shard=shard)
        last_eval = {**r, "epoch": epoch, "global_step": global_step}
        return r

    def stopped(signum: int) -> dict:
        name = signal.Signals(signum).name
        path = kept[-1] if epoch_step == spe and kept else save(name)
        log(f"stopped by {name} at epoch {epoch} step {epoch_step}/{spe} (global step "
            f"{global_step}); saved {path}; continue with --resume")
        runlog.write(event="stop", reason=name, global_step=global_step,
                     ckpt=os.path.basename(path) if path else None)
        return {"exit_code": 128 + signum, "global_step": global_step, "ckpt": path,
                "stopped_by": name}

    t_steps: list[float] = []   # wall time of every step of this process
    compile_reported = False
    with _Stop() as stop:
        while epoch <= p.epochs:
            data, _ = create_dataset(cfg, "train", epoch=epoch - 1, start_batch=epoch_step,
                                     shard=shard)
            t_epoch = time.perf_counter()
            loss_acc, loss_n = 0.0, 0
            for x, y in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
                if epoch_step >= spe:
                    break
                lr_now = lr_at(p, global_step, spe)
                t0 = time.perf_counter()
                loss, finite = step_cell(ms.Tensor(x), ms.Tensor(y), ms.Tensor(lr_now, ms.float32))
                loss_v = float(loss.asnumpy())
                finite_v = bool(finite.asnumpy())
                t_steps.append(time.perf_counter() - t0)
                stop.pin()
                if not math.isfinite(loss_v) or (not finite_v and not use_scale):
                    last = kept[-1] if kept else "none (no checkpoint was written yet)"
                    runlog.write(event="stop", reason="diverged", epoch=epoch,
                                 epoch_step=epoch_step + 1, global_step=global_step + 1,
                                 loss=loss_v)
                    raise DivergedError(
                        f"loss is {loss_v} (gradients {'finite' if finite_v else 'not finite'}) "
                        f"at epoch {epoch} step {epoch_step + 1} (global step {global_step + 1}); "
                        f"training stopped; the last good checkpoint is {last}; "
                        f"{resume_command(cfg, kept[-1] if kept else None)}")
                epoch_step += 1
                global_step += 1
                loss_acc += loss_v
                loss_n += 1
                if global_step % p.log_every == 0 or epoch_step == spe or len(t_steps) == 1:
                    later = t_steps[1:]
                    per_step = float(np.mean(later[-50:])) if later else t_steps[0]
                    eta = _fmt_time(per_step * (total_steps - global_step)) if later \
                        else "after compile"
                    log(f"epoch {epoch}/{p.epochs} step {epoch_step}/{spe} loss {loss_v:.4f} "
                        f"lr {lr_now:.4g} {p.batch_size / per_step:.1f} img/s ETA {eta}")
                    runlog.write(event="step", epoch=epoch, epoch_step=epoch_step,
                                 global_step=global_step, loss=loss_v, lr=lr_now,
                                 images_per_s=p.batch_size / per_step)
                if not compile_reported and (len(t_steps) >= 6 or global_step == total_steps):
                    compile_reported = True
                    first, rest = t_steps[0], t_steps[1:]
                    med = float(np.median(rest)) if rest else float("nan")
                    graphs = len(step_cell.compile_cache)
                    log(f"compile: step 1 took {first:.2f} s (graph compile + step), steps "
                        f"2..{len(t_steps)} {med:.3f} s median; compiled training graphs: "
                        f"{graphs}" + (" (no recompiles)" if graphs == 1 else " (RECOMPILED)"))
                    runlog.write(event="compile", global_step=global_step, first_step_s=first,
                                 later_step_s=med, graphs=graphs)
                if p.ckpt_every and global_step % p.ckpt_every == 0 and epoch_step < spe:
                    save("interval")
                if size > 1:  # a signal seen by one device stops all after this step
                    stop.signum = agree_stop(stop.signum)
                if stop.signum is not None:
                    break
            if epoch_step < spe:
                if stop.signum is not None:
                    return stopped(stop.signum)
                raise HourNASError(f"the training data ran out at epoch {epoch} step "
                                   f"{epoch_step}/{spe}")
            # end of epoch: validate, checkpoint
            msg = (f"epoch {epoch}/{p.epochs} done in {time.perf_counter() - t_epoch:.1f} s, "
                   f"mean loss {loss_acc / max(1, loss_n):.4f}")
            if epoch % p.val_interval == 0 or epoch == p.epochs:
                r = run_eval()
                improved = best["top1"] is None or r["top1"] > best["top1"]
                if improved:
                    best = {"top1": r["top1"], "epoch": epoch}
                msg += (f"; eval top-1 {r['top1']:.2f}% top-5 {r['top5']:.2f}% loss "
                        f"{r['loss']:.4f} over {r['images']} images, {r['images_per_s']:.0f} "
                        f"img/s (best {best['top1']:.2f}% at epoch {best['epoch']})")
                path = save("epoch")
                if improved:
                    save("best", best_copy=True)
                runlog.write(event="eval", epoch=epoch, global_step=global_step,
                             ckpt=os.path.basename(path) if path else None,
                             **{k: r[k] for k in ("top1", "top5", "loss", "images")})
                if main:
                    plot_log(runlog.path, os.path.join(cfg.output_dir, PLOT_NAME))
            else:
                save("epoch")
            log(msg)
            if size > 1:
                stop.signum = agree_stop(stop.signum)
            if stop.signum is not None:
                return stopped(stop.signum)
            if epoch == p.epochs:
                break
            epoch += 1
            epoch_step = 0
    wall = time.time() - t_start
    later = t_steps[1:]
    summary = {"exit_code": 0, "arch": arch.name, "epochs": p.epochs, "global_step": global_step,
               "best_top1": best["top1"], "best_epoch": best["epoch"],
               "last": last_eval, "ckpt": kept[-1] if kept else None,
               "best_ckpt": os.path.join(cfg.output_dir, f"{arch.name}_best.ckpt"),
               "wall_s": wall, "rank": rank, "devices": size,
               "weights_sha256": params_digest(net.trainable_params()),
               "train_images_per_s": (p.batch_size / float(np.mean(later))) if later else None,
               "output_dir": cfg.output_dir}
    runlog.write(event="done", global_step=global_step, wall_s=wall, best_top1=best["top1"])
    log(f"done in {_fmt_time(wall)}: best top-1 {best['top1']:.2f}% (epoch {best['epoch']}); "
        f"outputs in {cfg.output_dir}")
    return summary
