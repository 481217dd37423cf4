"""Training a standalone network from an architecture record, as a pipeline of factories:

    cfg   = load_config(TrainConfig, path, overrides)         # train.py
    arch  = resolve_arch(cfg, info)                           # record -> sized for the dataset
    data  = create_dataset(cfg, "train", epoch, start_batch)  # host-decided order (src.data)
    net   = create_model(arch)                                # src.childnet.ChildNet
    loss  = create_loss(cfg.train)
    opt   = create_optimizer(net, cfg.train)
    step  = TrainStep(net, loss, opt, ...)                    # src.train_step: one graph
    train(cfg, facts)                                         # the loop below

``train`` is a short loop (``train_epoch``, ``end_epoch``) with two callback objects,
``StateMonitor`` (progress, records, compile report, ETA) and ``CheckpointManager``; what it
shares with the search (log, stop signals, resume check, non-finite guard) is src.runlog.

Everything a resumed run needs (epoch, step, optimizer moments, EMA weights, loss scale, best
accuracy, the architecture record and the resolved config) is stored inside the checkpoint;
file names are for people only.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from src.rundir import lock_output_dir
from src.checkpoint import (atomic_write, atomic_write_text, check_fit, load_checkpoint,
                            save_checkpoint)
from src.config import Seed, save_config, to_dict
from src.context import agree_stop
from src.data import DataConfig, DatasetInfo, dataset_info, make_dataset, num_batches, sample_order
from src.errors import CheckpointError, ConfigError, HourNASError, Stopped
from src.jsonlog import read_jsonl
from src.runlog import (JsonLog, StepClock, StopSignals, check_resume_config, config_changes,
                        cosine, describe_changes, hms, nonfinite, params_digest, signal_name,
                        up_to_step)
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
                     "train.bn_recalibrate",
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
    lr: float = 0.1
    base_batch: int = 64
    lr_scaling: str = "linear"
    warmup_epochs: float = 1.0      # linear warm-up from lr/warmup_steps to lr
    schedule: str = "cosine"        # cosine (to min_lr) | constant
    min_lr: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 4e-5
    decay_bn_bias: bool = False     # weight decay on BN gamma/beta and biases too
    label_smoothing: float = 0.1
    ema: bool = False               # evaluate/export an exponential moving average of weights
    ema_decay: float = 0.9999
    amp_level: str = "O0"           # O0 (fp32; forced on CPU) | O1 | O2 | O3 (GPU/Ascend)
    loss_scale: float = 1024.0      # initial loss scale when amp_level != O0
    dynamic_loss_scale: bool = True
    activation: str | None = None   # replace the architecture's activation (e.g. swish)
    dropout: float | None = None    # replace the architecture's classifier dropout
    # BatchNorm statistics re-estimated before each validation from this many training batches
    # (not augmented) with the weights being validated, and kept in the checkpoint; 0: off.
    # The running averages lag weights that change fast: on the digits they read near chance
    # for half a run while the same weights scored 86-95% on batch statistics (docs/results.md).
    bn_recalibrate: int = 22
    val_interval: int = 1           # validate every N epochs (and after the last)
    log_every: int = 10             # progress line every N steps
    ckpt_every: int = 0             # also checkpoint every N steps (0: at epoch ends only)
    ckpt_keep: int = 3              # periodic checkpoints kept (the best one is kept apart)
    seed: Seed = 0
    sync_bn: bool = False           # data parallel on GPU/Ascend: BatchNorm over the global batch

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "base_batch", "val_interval", "log_every", "ckpt_keep"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if self.bn_recalibrate < 0:
            raise ConfigError(f"train.bn_recalibrate must be >= 0 (batches; 0 = off), got "
                              f"{self.bn_recalibrate}")
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
    """The architecture to train: sized for the dataset (classes, input size, input channels)
    and with the recipe's activation/dropout overrides. Prints what it changed."""
    if isinstance(arch, str):
        arch = load_arch(arch)
    changes = {}
    if arch.num_classes != info.num_classes:
        changes["num_classes"] = info.num_classes
    if arch.input_size != info.image_size:
        changes["input_size"] = info.image_size
    if arch.in_channels != info.channels:
        changes["in_channels"] = info.channels
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
    return cosine(peak, p.min_lr, (step - warm) / max(1, total - warm))


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
    """``arch`` with the stored record's classes/input size/input channels/activation, as
    training sized it."""
    data = arch.to_dict()
    data["in_channels"] = stored.get("in_channels", 3)  # a record stores it when it is not 3
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
    check_resume_config(stored, to_dict(cfg), RESUME_MAY_CHANGE,
                        "resume with the settings of the run, or start a new one in another "
                        "--output_dir")


# ----------------------------------------------------------------------------- logging, plot

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


# ----------------------------------------------------------------------------- the run

@dataclass
class Position:
    """Where a run is (stored in every checkpoint besides the tensors)."""

    epoch: int = 1              # 1-based
    epoch_step: int = 0         # steps done in this epoch
    global_step: int = 0        # steps done in the run
    best_top1: float | None = None
    best_epoch: int | None = None
    last_eval: dict | None = None   # the latest validation (with its epoch and global step)


@dataclass
class Run:
    """What the loop and its callbacks share, built once by ``prepare_run``."""

    cfg: TrainConfig
    facts: dict                 # src.context.setup_context's
    log: Callable[[str], None]
    resume_from: str | None
    arch: Arch | None = None
    spe: int = 0                # steps per epoch
    amp_level: str = "O0"
    net: object = None          # the network the step trains
    step_cell: object = None    # TrainStep
    eval_net: object = None     # a second network the weights are copied into to validate
    runlog: JsonLog | None = None
    pos: Position = field(default_factory=Position)

    @property
    def rank(self) -> int:
        return self.facts["rank"]

    @property
    def size(self) -> int:
        return self.facts["group_size"]

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        return (self.rank, self.size) if self.size > 1 else None

    @property
    def agree(self):
        """All ranks act on one stop signal (data parallel), else None."""
        return agree_stop if self.size > 1 else None

    @property
    def use_scale(self) -> bool:
        return self.amp_level != "O0"

    @property
    def total_steps(self) -> int:
        return self.cfg.train.epochs * self.spe

    def path(self, name: str) -> str:
        return os.path.join(self.cfg.output_dir, name)


def _check_devices(run: Run) -> None:
    p = run.cfg.train
    if p.batch_size % run.size:
        raise ConfigError(f"train.batch_size {p.batch_size} must be divisible by the number of "
                          f"devices ({run.size})")
    run.amp_level = p.amp_level
    if run.facts["device_target"] == "CPU" and run.amp_level != "O0":
        run.log(f"amp_level {run.amp_level} -> O0: mixed precision is not supported on CPU")
        run.amp_level = "O0"


def _choose_arch(run: Run, info: DatasetInfo) -> tuple[dict, dict]:
    """Set ``run.arch``; returns the (params, extra) of the checkpoint resumed, else ({}, {})."""
    cfg, resume_from = run.cfg, run.resume_from
    if not resume_from:
        if not cfg.arch:
            raise ConfigError("no architecture: give --arch FILE (e.g. config/arch/fbnet_b.yaml or "
                              "a search result) or 'arch:' in the config")
        run.arch = resolve_arch(cfg.arch, info, cfg.train, run.log)
        return {}, {}
    params, extra = load_checkpoint(resume_from)
    if extra.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"'{resume_from}' is not a training checkpoint of this project")
    check_resumable(extra["config"], cfg)
    run.arch = arch_of_checkpoint(extra, resume_from)
    if cfg.arch and cfg.arch != extra["config"].get("arch"):  # same net, other path?
        other = resolve_arch(cfg.arch, info, cfg.train)
        if other.to_dict() != run.arch.to_dict():
            raise ConfigError(f"--resume: architecture '{cfg.arch}' is not the one the run "
                              f"trains ('{run.arch.name}', stored in {resume_from}); leave "
                              f"--arch out or start a new run in another --output_dir")
    return params, extra


def _build(run: Run) -> None:
    """The network, the compiled step and the validation copy (weights seeded by the entry
    point: src.context.set_seed)."""
    import mindspore as ms

    from src.train_step import TrainStep

    p = run.cfg.train
    run.net = create_model(run.arch)
    if p.sync_bn and run.size > 1:
        if run.facts["device_target"] == "CPU":
            raise ConfigError("train.sync_bn needs GPU or Ascend (MindSpore's SyncBatchNorm has "
                              "no CPU kernel); set train.sync_bn=false on CPU")
        run.log(f"sync_bn: {use_sync_batchnorm(run.net)} BatchNorm layers normalise over the "
                f"global batch")
    if run.use_scale:
        run.net = ms.amp.auto_mixed_precision(run.net, run.amp_level)
    run.step_cell = TrainStep(run.net, create_loss(p), create_optimizer(run.net, p),
                              loss_scale=p.loss_scale if run.use_scale else 1.0,
                              dynamic=run.use_scale and p.dynamic_loss_scale,
                              ema_decay=p.ema_decay if p.ema else None)
    run.step_cell.set_train()
    run.eval_net = create_model(run.arch)
    run.eval_net.set_train(False)


def _state_names(step_cell) -> list[str]:
    """What a checkpoint stores of the step: every parameter but the lr (an input)."""
    return [n for n in _by_name(step_cell) if n != "learning_rate"]


def _restore(run: Run, params: dict, extra: dict) -> None:
    """Load the checkpoint into the step and continue where it was written."""
    import mindspore as ms

    own, where = _by_name(run.step_cell), run.resume_from
    check_fit(f"checkpoint '{where}'", {n: tuple(v.shape) for n, v in params.items()},
              {n: tuple(own[n].shape) for n in _state_names(run.step_cell)})
    not_loaded, _ = ms.load_param_into_net(run.step_cell, params, strict_load=True)
    not_loaded = [n for n in not_loaded if n != "learning_rate"]  # set every step
    if not_loaded:
        raise CheckpointError(f"checkpoint '{where}' did not load: {not_loaded[:3]}")
    if int(extra["steps_per_epoch"]) != run.spe:
        raise ConfigError(f"--resume: the run had {extra['steps_per_epoch']} steps per epoch, "
                          f"this configuration gives {run.spe}")
    pos = run.pos = Position(int(extra["epoch"]), int(extra["epoch_step"]),
                             int(extra["global_step"]), extra.get("best_top1"),
                             extra.get("best_epoch"))
    if pos.epoch_step >= run.spe:
        pos.epoch, pos.epoch_step = pos.epoch + 1, 0
    run.runlog.reset(keep=up_to_step(pos.global_step))
    run.log(f"resumed from {where}: epoch {pos.epoch}, step {pos.epoch_step}/{run.spe} "
            f"(global step {pos.global_step})")
    changed = config_changes(extra["config"], to_dict(run.cfg), RESUME_LR_KEYS)
    if changed:
        run.log(f"learning rate changed on resume: {describe_changes(changed)}; the schedule "
                f"continues at global step {pos.global_step} with the new values")
    run.runlog.write(event="resume", global_step=pos.global_step, ckpt=os.path.basename(where),
                     **({"lr_changed": {k: list(v) for k, v in changed.items()}} if changed else {}))


def _start_fresh(run: Run) -> None:
    existing = list_checkpoints(run.cfg.output_dir) if run.main else []
    if existing:
        raise CheckpointError(f"'{run.cfg.output_dir}' already holds training checkpoints (e.g. "
                              f"{os.path.basename(existing[-1][0])}); add --resume to continue "
                              f"that run, or choose another --output_dir")
    run.pos = Position()
    run.runlog.reset()


def _announce(run: Run, info: DatasetInfo) -> None:
    """config.yaml and arch.yaml (what runs), the opening log line and the start record."""
    from src.resource import count
    from src.space.space import arch_to_yaml

    cfg, p, arch = run.cfg, run.cfg.train, run.arch
    if run.main:
        save_config(cfg, run.path(CONFIG_NAME))
        atomic_write_text(run.path(ARCH_NAME), arch_to_yaml(arch))
    flops = count(arch)["flops"]
    n_params = sum(int(q.size) for q in run.net.trainable_params())
    run.log(f"training {arch.name}: {n_params / 1e6:.2f}M params, {flops / 1e6:.1f}M FLOPs "
            f"at {arch.input_size}x{arch.input_size}; {info.name}: {info.train_size} train / "
            f"{info.eval_size} eval images; {p.epochs} epochs x {run.spe} steps of "
            f"{p.batch_size} (peak lr {p.peak_lr:g}); device {run.facts['device_target']}"
            + (f", {run.size} devices" if run.size > 1 else ""))
    run.runlog.write(event="start", global_step=run.pos.global_step, arch=arch.name,
                     params=n_params, flops=flops, epochs=p.epochs, steps_per_epoch=run.spe,
                     batch_size=p.batch_size, peak_lr=p.peak_lr, resumed=bool(run.resume_from))


def prepare_run(cfg: TrainConfig, facts: dict, resume_from: str | None,
                log: Callable[[str], None]) -> Run:
    """Everything before the first step: devices, architecture, network and step, the resumed
    position (or a fresh start), the saved config and the opening log line."""
    run = Run(cfg, facts, log, resume_from)
    _check_devices(run)
    info = dataset_info(cfg.data)
    params, extra = _choose_arch(run, info)
    run.spe = steps_per_epoch(cfg, run.shard)
    if run.main:  # every check on the inputs is done: the first write is the folder's lock
        lock_output_dir(cfg.output_dir, "training")
    os.makedirs(cfg.output_dir, exist_ok=True)
    run.runlog = JsonLog(run.path(LOG_NAME), enabled=run.main)
    _build(run)
    if resume_from:
        _restore(run, params, extra)
    else:
        _start_fresh(run)
    _announce(run, info)
    return run


# ----------------------------------------------------------------------------- callbacks

class CheckpointManager:
    """Writes the training state ({arch}-{epoch}_{step}.ckpt, the last ``ckpt_keep`` kept;
    {arch}_best.ckpt apart) on rank 0, never a non-finite one, and words a divergence."""

    def __init__(self, run: Run):
        self.run = run
        self.state_names = _state_names(run.step_cell)
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
        return {"format": CKPT_FORMAT, "epoch": pos.epoch, "epoch_step": pos.epoch_step,
                "global_step": pos.global_step, "steps_per_epoch": run.spe,
                "best_top1": pos.best_top1, "best_epoch": pos.best_epoch,
                "ema": bool(run.cfg.train.ema), "arch": run.arch.to_dict(),
                "config": to_dict(run.cfg), "reason": reason, "network": self.network_names,
                "eval": ev if ev and ev.get("global_step") == pos.global_step else None,
                "best": best_copy}

    def _state(self) -> dict:
        own = _by_name(self.run.step_cell)
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
        name = (f"{run.arch.name}_best.ckpt" if best_copy
                else f"{run.arch.name}-{pos.epoch}_{pos.epoch_step}.ckpt")
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
        med = float(np.median(rest)) if rest else float("nan")
        graphs = len(self.run.step_cell.compile_cache)
        self.run.log(f"compile: step 1 took {first:.2f} s (graph compile + step), steps "
                     f"2..{len(self.clock)} {med:.3f} s median; compiled training graphs: "
                     f"{graphs}" + (" (no recompiles)" if graphs == 1 else " (RECOMPILED)"))
        self.run.runlog.write(event="compile", global_step=self.run.pos.global_step,
                              first_step_s=first, later_step_s=med, graphs=graphs)

    def epoch_message(self) -> str:
        pos, p = self.run.pos, self.run.cfg.train
        return (f"epoch {pos.epoch}/{p.epochs} done in {time.perf_counter() - self.t_epoch:.1f} "
                f"s, mean loss {self.loss_sum / max(1, self.loss_n):.4f}")

    def images_per_s(self) -> float | None:
        later = self.clock.later
        return self.run.cfg.train.batch_size / float(np.mean(later)) if later else None


# ----------------------------------------------------------------------------- the loop

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
    own = _by_name(run.step_cell)
    prefix = "ema." if p.ema else ""
    _copy_weights(run.eval_net, {n: own[prefix + n] for n in run.eval_net.parameters_dict()})
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
        plot_log(run.runlog.path, run.path(PLOT_NAME))
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
               "best_ckpt": run.path(f"{run.arch.name}_best.ckpt"), "wall_s": wall,
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
