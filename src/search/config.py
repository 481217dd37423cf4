"""Typed schema of a search run (``config/search/*.yaml``), loaded by ``src.config``."""
from __future__ import annotations

from dataclasses import dataclass, field

from src.config import Seed, Size
from src.data import DataConfig
from src.errors import HourNASError
from src.rundir import CONFIG_FILE

SAMPLERS = ("gumbel_max", "gumbel_softmax", "softmax")
# Temperatures a search accepts: below TAU_LOW, logits / tau overflow float32 (a sampled
# path's weights turn to NaN at the first step); above TAU_HIGH every op is equally likely.
TAU_LOW, TAU_HIGH = 1e-3, 1e3


def check_tau(key: str, value: float | None, low: float = TAU_LOW) -> None:
    """A temperature (config key ``key``) within [low, TAU_HIGH] and finite."""
    import math
    if value is not None and not (math.isfinite(value) and low <= value <= TAU_HIGH):
        raise HourNASError(f"{key} must be a temperature in [{low:g}, {TAU_HIGH:g}], got "
                           f"{value!r}" + (" (below it, logits / tau overflow float32)"
                                           if math.isfinite(value) and 0 < value < low else ""))
# what search.executor may name (src.search.step.EXECUTORS maps the names to the classes;
# allpath is chosen by search.sampler=gumbel_softmax, not by name)
EXECUTOR_CHOICES = ("auto", "eager", "graph")
# Line 23's choice of proposal: Π's most probable (the paper), or the proposal whose network
# scores best on the final supernet over the architecture split (docs/results.md)
DERIVE_CHOICES = ("pi", "supernet")
ORTHOGONALITY = ("cosine", "paper")
# hournas: Algorithm 1. random: the baseline, architectures drawn uniformly among those that
# meet the same targets (src.search.random_baseline; no training)
STRATEGIES = ("hournas", "random")


@dataclass
class ProposalConfig:
    """Space proposals (Eqs. 5-9): m proposals solved for the resource targets.

    The solver (``src.proposal``) runs ``iterations`` Adam steps of Eq. 7 with G = ``sampler``
    at a temperature annealed geometrically from ``tau`` to ``tau_final`` (null: the lowest of
    ``report_taus``); set ``tau_final`` equal to ``tau`` for a fixed temperature.
    """

    m: int = 8
    iterations: int = 1000
    beta: float = 1e-2
    lr: float = 0.1
    sampler: str = "gumbel_softmax"
    tau: float = 5.0               # solver's starting temperature (the paper's search starts at 5.0)
    tau_final: float | None = None  # solver's final temperature; null = min(report_taus)
    init_std: float = 0.1          # θ_j ~ N(0, init_std^2): near-uniform, different per proposal
    orthogonality: str = "cosine"  # cosine: |cos| of per-layer-centred θ's; paper: |ΘΘᵀ - I| raw
    resolve: int = 2               # re-solves of proposals whose arg-max net misses a target by >5%
    seed: Seed = 0
    targets: dict[str, Size] = field(default_factory=lambda: {"params": 4.8e6, "flops": 295e6})
    latency_table: str | None = None
    report_samples: int = 10000
    report_taus: list[float] = field(default_factory=lambda: [5.0, 1.0, 0.5, 0.1])

    def validate(self) -> None:
        for key in ("m", "iterations", "report_samples"):
            if getattr(self, key) < 1:
                raise HourNASError(f"proposal.{key} must be >= 1, got {getattr(self, key)}")
        if self.sampler not in SAMPLERS:
            raise HourNASError(f"unknown proposal.sampler '{self.sampler}'; valid: "
                               f"{', '.join(SAMPLERS)}")
        if not self.targets:
            raise HourNASError("proposal.targets is empty; give at least one, e.g. params: 4.8M")
        check_tau("proposal.tau", self.tau)
        check_tau("proposal.tau_final", self.tau_final)
        if not self.report_taus:
            raise HourNASError("proposal.report_taus must be a non-empty list of temperatures")
        for i, t in enumerate(self.report_taus):
            check_tau(f"proposal.report_taus[{i}]", t)
        if self.init_std <= 0 or self.lr <= 0 or self.beta < 0 or self.resolve < 0:
            raise HourNASError("proposal.init_std and proposal.lr must be > 0, proposal.beta "
                               "and proposal.resolve >= 0")
        if self.orthogonality not in ORTHOGONALITY:
            raise HourNASError(f"unknown proposal.orthogonality '{self.orthogonality}'; valid: "
                               f"{', '.join(ORTHOGONALITY)}")


W_LR_SCHEDULES = ("cosine", "constant")


@dataclass
class SearchParams:
    """Algorithm 1: bilevel search of the vital layers, then of the non-vital ones."""

    epochs_vital: int = 1
    epochs_nvital: int = 1
    steps_per_epoch: int | None = None  # cap per epoch (tiny runs); None = the whole split
    batch_size: int = 64
    w_lr: float = 0.1
    w_lr_schedule: str = "cosine"    # the weights' lr over a stage: cosine (to 0) | constant
    w_momentum: float = 0.9
    w_weight_decay: float = 4e-5
    arch_lr: float = 0.01
    arch_lr_nvital: float | None = None  # θ's Adam lr in stage 2 (Π, Θ); null: arch_lr
    warmup_nvital: int = 0  # of epochs_nvital, the first ones train only the weights (θ frozen)
    arch_weight_decay: float = 0.0
    tau: float = 5.0
    tau_decay: float = 0.9999
    tau_min: float = 0.0
    alpha: float = 5.0
    sampler: str = "gumbel_max"
    executor: str = "auto"
    vital_priori: bool = True
    val_fraction: float = 0.2
    seed: Seed = 0
    log_every: int = 10
    ckpt_every: int = 50
    beam: int = 256
    tolerance: float = 0.02
    derive: str = "pi"                  # pi | supernet (DERIVE_CHOICES)
    strategy: str = "hournas"           # hournas | random (the baseline: no training)
    num_archs: int = 5                  # strategy random: how many architectures to draw
    random_fix_vital: str | None = None  # strategy random: an arch.yaml whose vital ops are kept

    def validate(self) -> None:
        if self.epochs_vital < 0:
            raise HourNASError(f"search.epochs_vital must be >= 0 (0: no vital stage, with "
                               f"--no-vital-priori), got {self.epochs_vital}")
        if self.vital_priori and self.epochs_vital < 1:
            raise HourNASError(f"search.epochs_vital must be >= 1 with the vital priori, got "
                               f"{self.epochs_vital}; or search without it (--no-vital-priori, "
                               f"search.vital_priori=false)")
        if self.epochs_nvital < 1:
            raise HourNASError(f"search.epochs_nvital must be >= 1, got {self.epochs_nvital}")
        if not 0 <= self.warmup_nvital < self.epochs_nvital:
            raise HourNASError(f"search.warmup_nvital (stage 2's first epochs that train only "
                               f"the weights) must be in [0, search.epochs_nvital - 1 = "
                               f"{self.epochs_nvital - 1}], got {self.warmup_nvital}")
        if self.batch_size < 1:
            raise HourNASError(f"search.batch_size must be >= 1, got {self.batch_size}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise HourNASError(f"search.steps_per_epoch must be >= 1 or null, got "
                               f"{self.steps_per_epoch}")
        for key in ("log_every", "ckpt_every", "beam"):
            if getattr(self, key) < 1:
                raise HourNASError(f"search.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("w_lr", "arch_lr"):
            if not getattr(self, key) > 0:
                raise HourNASError(f"search.{key} must be > 0, got {getattr(self, key)}")
        if self.arch_lr_nvital is not None and not self.arch_lr_nvital > 0:
            raise HourNASError(f"search.arch_lr_nvital must be > 0 or null (null: "
                               f"search.arch_lr in both stages), got {self.arch_lr_nvital}")
        if self.arch_lr_nvital is not None and not self.vital_priori:
            raise HourNASError("search.arch_lr_nvital is stage 2's θ lr; without the vital "
                               "priori the one stage uses search.arch_lr: set that instead")
        if not self.tolerance > 0:
            raise HourNASError(f"search.tolerance must be > 0 (e.g. 0.02 for ±2%), got "
                               f"{self.tolerance}")
        self._validate_strategy()
        if self.w_lr_schedule not in W_LR_SCHEDULES:
            raise HourNASError(f"unknown search.w_lr_schedule '{self.w_lr_schedule}'; valid: "
                               f"{', '.join(W_LR_SCHEDULES)}")
        if self.sampler not in SAMPLERS:
            raise HourNASError(f"unknown search.sampler '{self.sampler}'; valid: "
                               f"{', '.join(SAMPLERS)}")
        if self.derive not in DERIVE_CHOICES:
            raise HourNASError(f"unknown search.derive '{self.derive}'; valid: "
                               f"{', '.join(DERIVE_CHOICES)}")
        if self.executor not in EXECUTOR_CHOICES:
            raise HourNASError(f"unknown search.executor '{self.executor}'; valid: "
                               f"{', '.join(EXECUTOR_CHOICES)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise HourNASError(f"search.val_fraction must be in (0, 1), got {self.val_fraction}")
        check_tau("search.tau", self.tau)
        if self.tau_min != 0.0:  # 0: no floor (tau decays from search.tau)
            check_tau("search.tau_min", self.tau_min)
        if not 0.0 < self.tau_decay <= 1.0:
            raise HourNASError(f"search.tau_decay must be in (0, 1], got {self.tau_decay}")

    def arch_lr_key(self, stage: str) -> str:
        """The config key of θ's learning rate in ``stage`` (vital | nonvital | single)."""
        if stage == "nonvital" and self.arch_lr_nvital is not None:
            return "search.arch_lr_nvital"
        return "search.arch_lr"

    def arch_lr_of(self, stage: str) -> float:
        """θ's (Π, Θ's) Adam learning rate in ``stage``."""
        return getattr(self, self.arch_lr_key(stage).split(".", 1)[1])

    def _validate_strategy(self) -> None:
        if self.strategy not in STRATEGIES:
            raise HourNASError(f"unknown search.strategy '{self.strategy}'; valid: "
                               f"{', '.join(STRATEGIES)}")
        if self.num_archs < 1:
            raise HourNASError(f"search.num_archs (--num_archs) must be >= 1, got "
                               f"{self.num_archs}")
        if self.random_fix_vital is not None and not self.random_fix_vital.strip():
            raise HourNASError("search.random_fix_vital must be the path of an architecture "
                               "file (e.g. a search's arch.yaml) or null")


@dataclass
class SearchConfig:
    space: str = "fbnet_cifar10"
    width_mult: float = 1.0
    data: DataConfig = field(default_factory=DataConfig)
    search: SearchParams = field(default_factory=SearchParams)
    proposal: ProposalConfig = field(default_factory=ProposalConfig)
    output_dir: str = "runs/search"
    device_target: str = "CPU"


# Learning rates a resumed search may change (src.search.state.RESUME_MAY_CHANGE holds them):
# a diverged run continues from its last good state with a lower rate.
RESUME_LR_KEYS = ("search.w_lr", "search.arch_lr", "search.arch_lr_nvital")


def lower_lr_command(cfg: SearchConfig, output_dir: str, keys: tuple[str, ...]) -> str:
    """The command that continues a diverged search from its last good state with a tenth of
    the learning rates ``keys`` (dotted, of RESUME_LR_KEYS), from the run's own config.yaml."""
    import os
    import shlex

    sets = " ".join(f"--set {k}={getattr(cfg.search, k.split('.', 1)[1]) / 10:g}" for k in keys)
    config = shlex.quote(os.path.join(output_dir, CONFIG_FILE))
    return (f"continue from it with a lower learning rate: python search.py --config {config} "
            f"--output_dir {shlex.quote(output_dir)} --resume {sets}")
