"""The schema of a training run (``config/train/*.yaml``), what a resumed run may change, and
the advice after a divergence."""
from __future__ import annotations

from dataclasses import dataclass, field

from src.config import Seed, to_dict
from src.context import MODES
from src.data import DataConfig
from src.errors import ConfigError, HourNASError
from src.runlog import check_resume_config
from src.space.plan import ACTIVATIONS

SCHEDULES = ("cosine", "constant")
LR_SCALINGS = ("linear", "none")
AMP_LEVELS = ("O0", "O1", "O2", "O3")
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
                     "data.num_workers", "data.path", "output_dir", "device_target",
                     "train.mode") + RESUME_LR_KEYS



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
    # graph: the step compiled as one graph (fastest on small nets). pynative: op by op, each
    # activation freed after its backward as in PyTorch: hournas_f_c10 at batch 64 peaked at
    # 3.3 GiB against graph mode's 7.1 (the graph allocates its whole memory plan at the first
    # step and keeps it), at ~1.2x its step time; the choice for a net that does not fit
    # (docs/train_eval_export.md). Same values either way, to float rounding.
    mode: str = "graph"

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
                           ("amp_level", AMP_LEVELS), ("mode", MODES)):
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



def check_resumable(stored: dict, cfg: TrainConfig) -> None:
    """Raise ConfigError if ``cfg`` changes what the stored run computes."""
    check_resume_config(stored, to_dict(cfg), RESUME_MAY_CHANGE,
                        "resume with the settings of the run, or start a new one in another "
                        "--output_dir")
