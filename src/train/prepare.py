"""Everything before a training run's first step, as one ``Run``: devices, architecture, the
network and its compiled step, the resumed position (or a fresh start), the saved config and
the opening log line."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from src.checkpoint import atomic_write_text, check_fit, load_checkpoint
from src.config import save_config, to_dict
from src.context import agree_stop
from src.data import DatasetInfo, dataset_info
from src.errors import CheckpointError, ConfigError
from src.evaluate import arch_of_checkpoint, by_name
from src.rundir import ARCH_FILE, CONFIG_FILE, TRAIN_LOG_FILE, lock_output_dir
from src.runlog import JsonLog, config_changes, describe_changes, up_to_step
from src.space.space import Arch
from src.train.checkpoints import is_training_checkpoint, list_checkpoints, state_names
from src.train.config import RESUME_LR_KEYS, TrainConfig, check_resumable
from src.train.factory import (create_loss, create_model, create_optimizer, resolve_arch,
                               steps_per_epoch, use_sync_batchnorm)

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
    """What the loop and its callbacks share, built whole by ``prepare_run``."""

    cfg: TrainConfig
    facts: dict                 # src.context.setup_context's
    log: Callable[[str], None]
    resume_from: str | None
    arch: Arch
    spe: int                    # steps per epoch
    amp_level: str
    net: object                 # the network the step trains
    step_cell: object           # TrainStep
    eval_net: object            # a second network the weights are copied into to validate
    runlog: JsonLog
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
        return shard_of(self.facts)

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


def shard_of(facts: dict) -> tuple[int, int] | None:
    """(rank, size) of a data-parallel run, else None."""
    return (facts["rank"], facts["group_size"]) if facts["group_size"] > 1 else None


def _amp_level(cfg: TrainConfig, facts: dict, log: Callable[[str], None]) -> str:
    """The mixed-precision level the run uses (O0 on CPU); checks the batch splits evenly."""
    p = cfg.train
    if p.batch_size % facts["group_size"]:
        raise ConfigError(f"train.batch_size {p.batch_size} must be divisible by the number of "
                          f"devices ({facts['group_size']})")
    if facts["device_target"] == "CPU" and p.amp_level != "O0":
        log(f"amp_level {p.amp_level} -> O0: mixed precision is not supported on CPU")
        return "O0"
    return p.amp_level


def _choose_arch(cfg: TrainConfig, info: DatasetInfo, resume_from: str | None,
                 log: Callable[[str], None]) -> tuple[Arch, dict, dict]:
    """(arch, params, extra): the architecture to train and the tensors and metadata of the
    checkpoint resumed (read here, once), else empty."""
    if not resume_from:
        if not cfg.arch:
            raise ConfigError("no architecture: give --arch FILE (e.g. config/arch/fbnet_b.yaml or "
                              "a search result) or 'arch:' in the config")
        return resolve_arch(cfg.arch, info, cfg.train, log), {}, {}
    params, extra = load_checkpoint(resume_from)
    if not is_training_checkpoint(extra):
        raise CheckpointError(f"'{resume_from}' is not a training checkpoint of this project")
    check_resumable(extra["config"], cfg)
    arch = arch_of_checkpoint(extra, resume_from)
    if cfg.arch and cfg.arch != extra["config"].get("arch"):  # same net, other path?
        other = resolve_arch(cfg.arch, info, cfg.train)
        if other.to_dict() != arch.to_dict():
            raise ConfigError(f"--resume: architecture '{cfg.arch}' is not the one the run "
                              f"trains ('{arch.name}', stored in {resume_from}); leave "
                              f"--arch out or start a new run in another --output_dir")
    return arch, params, extra


def _build(cfg: TrainConfig, arch: Arch, facts: dict, amp_level: str,
           log: Callable[[str], None]) -> tuple[object, object, object]:
    """(net, step_cell, eval_net): the network, the compiled step and the validation copy
    (weights seeded by the entry point: src.context.set_seed)."""
    import mindspore as ms

    from src.train.step import TrainStep

    p, use_scale = cfg.train, amp_level != "O0"
    net = create_model(arch)
    if p.sync_bn and facts["group_size"] > 1:
        if facts["device_target"] == "CPU":
            raise ConfigError("train.sync_bn needs GPU or Ascend (MindSpore's SyncBatchNorm has "
                              "no CPU kernel); set train.sync_bn=false on CPU")
        log(f"sync_bn: {use_sync_batchnorm(net)} BatchNorm layers normalise over the "
            f"global batch")
    if use_scale:
        net = ms.amp.auto_mixed_precision(net, amp_level)
    step_cell = TrainStep(net, create_loss(p), create_optimizer(net, p),
                          loss_scale=p.loss_scale if use_scale else 1.0,
                          dynamic=use_scale and p.dynamic_loss_scale,
                          ema_decay=p.ema_decay if p.ema else None)
    step_cell.set_train()
    eval_net = create_model(arch)
    eval_net.set_train(False)
    return net, step_cell, eval_net


def _restore(run: Run, params: dict, extra: dict) -> None:
    """Load the checkpoint into the step and continue where it was written."""
    import mindspore as ms

    own, where = by_name(run.step_cell), run.resume_from
    check_fit(f"checkpoint '{where}'", {n: tuple(v.shape) for n, v in params.items()},
              {n: tuple(own[n].shape) for n in state_names(run.step_cell)})
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
        save_config(cfg, run.path(CONFIG_FILE))
        atomic_write_text(run.path(ARCH_FILE), arch_to_yaml(arch))
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
    amp_level = _amp_level(cfg, facts, log)
    info = dataset_info(cfg.data)
    arch, params, extra = _choose_arch(cfg, info, resume_from, log)
    spe = steps_per_epoch(cfg, shard_of(facts))
    main = facts["rank"] == 0
    if main:  # every check on the inputs is done: the first write is the folder's lock
        lock_output_dir(cfg.output_dir, "training")
    os.makedirs(cfg.output_dir, exist_ok=True)
    net, step_cell, eval_net = _build(cfg, arch, facts, amp_level, log)
    run = Run(cfg, facts, log, resume_from, arch, spe, amp_level, net, step_cell, eval_net,
              JsonLog(os.path.join(cfg.output_dir, TRAIN_LOG_FILE), enabled=main))
    if resume_from:
        _restore(run, params, extra)
    else:
        _start_fresh(run)
    _announce(run, info)
    return run
