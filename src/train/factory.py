"""The factories of a training run: the architecture sized for the data, the datasets, the
model, the loss, the learning-rate schedule and the optimizer."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from src.data import DatasetInfo, dataset_info, make_dataset, num_batches, sample_order
from src.errors import ConfigError
from src.runlog import cosine
from src.space.space import Arch, arch_from_dict, load_arch
from src.train.config import TrainConfig, TrainParams

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
