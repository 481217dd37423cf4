"""Algorithm 1 of the paper: search the vital blocks, solve space proposals, search the bulb.

``run_search(cfg, output_dir, resume, facts)`` is what ``search.py`` calls; it reads as the
algorithm, one named function per step:

====================  ==========================  ==========================================
Algorithm 1           here                        what
====================  ==========================  ==========================================
lines 1-2             ``search_vital``            S_vital (vital layers only) and θ_vital
lines 3-10            ``train_stage``             the bilevel loop (``src.search.loop``)
line 11               ``fix_vital_ops``           the most probable op per vital layer
line 13 (Eqs. 5-7)    ``solve_stage2_proposals``  m proposals Θ for the targets
lines 14-22 (Eqs. 8-9)  ``search_nonvital``       Π and Θ of the non-vital layers, CE + α·T
line 23               ``src.search.outputs``      the best proposal and op per layer
====================  ==========================  ==========================================

A run's position is ``SearchRun.state`` (``src.search.state.SearchState``). The whole state
is saved atomically every ``ckpt_every`` steps and at stage starts and ends; a resumed run
skips the stages it finished and continues the current one at its position, and ends with the
same architecture as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from src.checkpoint import remove_stale_temps
from src.runlog import log
from src.config import save_config
from src.data import dataset_info, search_split
from src.errors import HourNASError
from src.proposal import check_feasible, solve_proposals
from src.resource import OBJECTIVES, ResourceTable, resource_table
from src.rundir import CONFIG_FILE, SEARCH_LOG_FILE, SEARCH_STATE_FILE, lock_output_dir
from src.sampler import GumbelNoise, TauSchedule
from src.search.config import SearchConfig
from src.search.derive import ranked_choices
from src.runlog import JsonLog, StopSignals, up_to_step
from src.search.hooks import (StepLogger, every_n_steps_checkpoint,
                              keep_signal_handlers, stop_on_signal)
from src.search.loop import Stage, bilevel_loop
from src.search.outputs import derive_architecture, write_outputs
from src.search.state import (SearchState, load_state, restore_state,
                              save_state, saved_proposals)
from src.space.space import Space, load_space

# ----------------------------------------------------------------------------- Algorithm 1


def run_search(cfg: SearchConfig, output_dir: str, resume: bool, facts: dict) -> dict:
    """Algorithm 1; ``resume`` continues the run in ``output_dir`` from its checkpoint."""
    run = SearchRun(cfg, output_dir, facts)
    saved = run.start(resume)      # the checkpoint a resumed run continues from, else None
    state, vital = run.state, None
    with run.signals:              # SIGTERM / SIGINT: save after the step, raise Stopped
        if state.stage == "vital":
            fixed = {}
            if run.p.vital_priori:  # (without it: one stage over all layers, Table 4)
                # lines 1-10: θ_vital in the minimal supernet S_vital
                vital = search_vital(run, saved)
                saved = None
                # line 11: the most important op of every vital layer
                fixed = fix_vital_ops(run, vital)
            state.enter_nonvital(fixed)
        fixed = state.vital_ops()
        layers = run.stage2_layers()
        table = run.full_table(layers, fixed)
        # line 13: m space proposals Θ for the targets (Eq. 7), the vital ops fixed
        proposals = (solve_stage2_proposals(run, table) if saved is None
                     else saved_proposals(run, saved, layers))
        # lines 14-22: Π and Θ of the non-vital layers, loss CE + α·T (Eqs. 8-9)
        stage2 = search_nonvital(run, layers, fixed, table, proposals, saved, vital)
    # line 23: the best proposal and its best op per layer, within the targets
    derived = derive_architecture(run, stage2, fixed)
    return write_outputs(run, stage2, derived)


def search_vital(run: SearchRun, saved: tuple | None) -> Stage:
    """Lines 1-10: the vital layers in S_vital (non-vital residual layers removed)."""
    space = run.space
    vital = space.vital_layers()
    keep = [i for i in range(len(space.layers))
            if i in vital or not space.layers[i].searchable and space.vital[i]]
    stage = build_stage(run, "vital", vital, {}, keep, None, None, run.p.epochs_vital)
    start_or_restore(run, stage, saved)
    train_stage(run, stage)
    return stage


def fix_vital_ops(run: SearchRun, stage: Stage) -> dict[int, int]:
    """Line 11: the most probable op per vital layer; if that leaves the targets out of reach
    of the non-vital layers, the most probable vital choice that keeps them reachable."""
    space, vital = run.space, run.space.vital_layers()
    _, probs = stage.arch.probabilities()
    feasible = _reachable(run, vital, probs.shape[1])
    chosen, method = [int(o) for o in probs.argmax(axis=1)], "argmax"
    if not feasible(chosen):
        chosen = next((c for c in ranked_choices(np.log(probs + 1e-12), limit=20000)
                       if feasible(c)), None)
        if chosen is None:
            raise HourNASError("no vital-layer choice leaves the targets reachable; widen "
                               "the targets or search without the vital priori")
        method = "most probable that keeps the targets reachable"
    run.state.vital_report = {
        "layers": [space.layers[i].label for i in vital],
        "ops": [space.layers[i].ops[o].name for i, o in zip(vital, chosen)],
        "probabilities": probs.round(4).tolist(), "method": method}
    log(f"stage 1 fixed the vital layers ({method}): " + ", ".join(
        f"{space.layers[i].label}={space.layers[i].ops[o].name} "
        f"(p {probs[k, o]:.2f})" for k, (i, o) in enumerate(zip(vital, chosen))))
    log(f"vital-op probabilities softmax(θ) (uniform: {1 / probs.shape[1]:.3f}): " + "; ".join(
        f"{space.layers[i].label} " + " ".join(f"{p:.2f}" for p in probs[k])
        for k, i in enumerate(vital)))
    return {i: o for i, o in zip(vital, chosen)}


def _reachable(run: SearchRun, vital: list[int], num_ops: int):
    """Whether a vital choice leaves every target within the non-vital layers' range."""
    nonvital = run.space.nonvital_layers()
    vtab = run.full_table(vital, {i: 0 for i in nonvital})
    rest = run.full_table(nonvital, {i: 0 for i in vital})
    objs = run.objectives
    # vtab.base counts the non-vital layers at op 0: swap that for their reachable range.
    op0 = {o: float(rest.table[o][:, 0].sum()) for o in objs}
    lo = {o: float(rest.table[o].min(axis=1).sum()) - op0[o] for o in objs}
    hi = {o: float(rest.table[o].max(axis=1).sum()) - op0[o] for o in objs}
    eye = np.eye(num_ops)

    def feasible(choice) -> bool:
        cost = vtab.cost(eye[choice])
        return all(cost[o] + lo[o] <= run.targets[o] <= cost[o] + hi[o] for o in objs)
    return feasible


def solve_stage2_proposals(run: SearchRun, table: ResourceTable) -> np.ndarray:
    """Line 13: m space proposals θ_1..θ_m for the targets (Eqs. 5-7, ``solve_proposals``),
    over the searched layers with the vital ones fixed: the same table, and so the same M_i,
    as stage 2's regulariser T."""
    check_feasible(table, run.targets)
    t0 = time.perf_counter()
    props = solve_proposals(table, run.targets, run.cfg.proposal)
    run.state.proposals_report = {"solve_seconds": time.perf_counter() - t0,
                                  "m": int(props.theta.shape[0])}
    return props.theta


def search_nonvital(run: SearchRun, layers: list[int], fixed: dict[int, int],
                    table: ResourceTable, proposals: np.ndarray, saved: tuple | None,
                    vital: Stage | None) -> Stage:
    """Lines 14-22: Π and Θ (initialised with the proposals) of the non-vital layers, from
    stage 1's weights for the shared parts. A finished search derives again from its state."""
    name = "nonvital" if run.p.vital_priori else "single"
    stage = build_stage(run, name, layers, fixed, None, proposals, table, run.p.epochs_nvital)
    stage.warmup = run.p.warmup_nvital
    if saved is None and vital is not None:
        carry_vital_weights(run, vital, stage)
    start_or_restore(run, stage, saved)
    if run.state.stage == "done":  # killed while writing the outputs: derive again
        log("the search had finished; writing its outputs again from its final state")
        return stage
    train_stage(run, stage)
    run.state.stage = "done"
    save_state(run, stage)
    return stage


# ----------------------------------------------------------------------------- a stage


def train_stage(run: SearchRun, stage: Stage) -> None:
    """The bilevel loop of one stage with its hooks: log, checkpoints, stop signals."""
    logger = StepLogger(run, stage)
    logger.start()
    bilevel_loop(run, stage, hooks=(keep_signal_handlers(run), logger,
                                    every_n_steps_checkpoint(run, stage),
                                    stop_on_signal(run, stage)))
    logger.end()


def build_stage(run: SearchRun, name: str, searched: list[int], fixed: dict[int, int],
                keep: list[int] | None, proposals: np.ndarray | None,
                reg_table: ResourceTable | None, epochs: int) -> Stage:
    """The supernet over ``searched`` (``fixed`` ops elsewhere), θ (or Π/Θ from
    ``proposals``), SGD for the weights, Adam for the architecture, and the executor; with
    ``reg_table`` the architecture loss is CE + α·T(Π, Θ) (``src.proposal.resource_loss``)."""
    from src.context import set_seed
    from src.search.step import EXECUTORS, ArchParams, HostAdam, SparseSGD
    from src.supernet import Supernet

    p = run.p
    set_seed(p.seed)  # every stage's supernet starts from the seed, resumed or not
    net = Supernet(run.space, searched, fixed, keep)
    net.set_train(True)
    num_ops = len(run.space.layers[searched[0]].ops)
    arch = ArchParams(len(net.searched), num_ops, proposals, sampler=p.sampler)
    sgd = SparseSGD(list(net.trainable_params()), p.w_momentum, p.w_weight_decay)
    shapes = {k: v.shape for k, v in arch.values().items()}
    adam = HostAdam(shapes, p.arch_lr_of(name), weight_decay=p.arch_weight_decay)
    reg = resource_regulariser(run, reg_table) if reg_table is not None else None
    executor = EXECUTORS[run.executor_name](net, arch, sgd, reg=reg,
                                            alpha=p.alpha if reg else 0.0,
                                            grad_mean=run.grad_mean)
    return Stage(name, net, arch, sgd, adam, executor, reg_table, epochs)


def resource_regulariser(run: SearchRun, table: ResourceTable):
    """T(A) of Eq. 6 on stage 2's sample A (Eq. 9), with the proposal solver's arrays and
    M_i (``src.proposal.objective_arrays``): one definition for both."""
    import mindspore as ms
    from src.proposal import objective_arrays, resource_loss

    tables, base, targets, maxima = (ms.Tensor(a) for a in objective_arrays(
        table, run.targets).as_float32())

    def reg(a):
        return resource_loss(a, tables, base, targets, maxima)
    return reg


def start_or_restore(run: SearchRun, stage: Stage, saved: tuple | None) -> None:
    """A resumed stage continues from the checkpoint; a new one starts at its first step
    and is saved at once."""
    if saved is not None:
        restore_state(run, stage, saved)
        return
    run.state.begin_stage()
    save_state(run, stage)


def carry_vital_weights(run: SearchRun, vital: Stage, stage: Stage) -> None:
    """Stage-1 weights of the stem, the vital layers' chosen ops, head and classifier."""
    import mindspore as ms
    old = {p.name: p.asnumpy() for p in vital.net.get_parameters()}
    pos_old = {i: k for k, i in enumerate(vital.net.keep)}
    chosen = run.state.vital_ops()
    net, moved = stage.net, 0
    for p in net.get_parameters():
        name = p.name
        if name.startswith("layers."):
            parts = name.split(".")
            i = int(parts[1])
            if i not in pos_old or i in net.searched:
                continue
            o = chosen.get(i)
            rest = ".".join(parts[2:])
            src = f"layers.{pos_old[i]}.candidates.{o}.{rest}" if o is not None else \
                f"layers.{pos_old[i]}.{rest}"
        else:
            src = name
        if src in old and old[src].shape == tuple(p.shape):
            p.set_data(ms.Tensor(old[src]))
            moved += 1
    log(f"stage 2 starts from stage 1's weights for {moved} tensors (stem, vital ops, head)")


# ----------------------------------------------------------------------------- the run


def prepare_space(cfg: SearchConfig) -> tuple[Space, SearchConfig]:
    """The space of the run, its classes and input size matched to the dataset, and the
    config with the input size it runs at (a copy: the caller's stays as loaded)."""
    space = load_space(cfg.space, cfg.width_mult)
    if cfg.data.image_size is None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, image_size=space.input_size))
    info = dataset_info(cfg.data)
    if info.image_size != space.input_size:
        raise HourNASError(f"data.image_size {info.image_size} differs from the space's input "
                           f"size {space.input_size} (FLOPs are counted at the space's size); "
                           f"set data.image_size={space.input_size}")
    if info.num_classes != space.num_classes:
        space.num_classes = info.num_classes
    space.in_channels = info.channels
    return space, cfg


def objective_tables(cfg: SearchConfig, space: Space) -> dict | None:
    """Extra objectives measured elsewhere (latency), as full (layers x ops) arrays."""
    if "latency" not in cfg.proposal.targets:
        return None
    from src.latency import load_latency_table
    if not cfg.proposal.latency_table:
        raise HourNASError("a latency target needs proposal.latency_table (a file written by "
                           "benchmarks/latency_table.py)")
    return {"latency": load_latency_table(cfg.proposal.latency_table, space)}


def search_targets(cfg: SearchConfig) -> dict[str, float]:
    valid = OBJECTIVES + ("latency",)
    for k in cfg.proposal.targets:
        if k not in valid:
            raise HourNASError(f"unknown objective '{k}' in proposal.targets; valid: "
                               f"{', '.join(valid)}")
    return {k: float(v) for k, v in cfg.proposal.targets.items()}


def executor_name(cfg: SearchConfig, device_target: str) -> str:
    from src.search.step import default_executor
    if cfg.search.sampler != "gumbel_max":
        return "allpath"
    if cfg.search.executor == "auto":
        return default_executor(device_target)
    return cfg.search.executor


class SearchRun:
    """One search run in one output folder: its config, space, targets, data splits, rank,
    host generators, position (``state``), log and signal handlers."""

    def __init__(self, cfg: SearchConfig, output_dir: str, facts: dict):
        self.space, self.cfg = prepare_space(cfg)
        self.out, self.facts, self.p = output_dir, facts, self.cfg.search
        self.targets = search_targets(self.cfg)
        self.objectives = tuple(self.targets)
        self.extra_tables = objective_tables(self.cfg, self.space)
        self.rank, self.group_size = facts.get("rank", 0), facts.get("group_size", 1)
        self.is_main = self.rank == 0
        if self.p.batch_size % self.group_size:
            raise HourNASError(f"search.batch_size {self.p.batch_size} is the global batch and must "
                               f"be divisible by the number of ranks ({self.group_size})")
        self.rank_batch = self.p.batch_size // self.group_size  # this rank's part of a batch
        self.shard = (self.rank, self.group_size) if self.group_size > 1 else None
        self.rank_log = None
        if self.group_size > 1:
            from src.search.distributed import RankLog
            self.rank_log = RankLog(output_dir, self.rank)
        self.grad_mean = None  # data parallel: src.search.distributed.GradMean, from start()
        self.state = SearchState()
        self.saved_step: int | None = None  # global step of the last checkpoint
        self.noise = GumbelNoise(self.p.seed)
        self.tau = TauSchedule(self.p.tau, self.p.tau_decay, self.p.tau_min)
        self.w_idx, self.a_idx = search_split(self.cfg.data, self.p.val_fraction, self.p.seed)
        self.executor_name = executor_name(self.cfg, facts.get("device_target", "CPU"))
        self.log = JsonLog(self.path(SEARCH_LOG_FILE), enabled=self.is_main)  # search_log.jsonl
        self.signals = StopSignals()

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def full_table(self, layers: list[int], fixed: dict[int, int]) -> ResourceTable:
        return resource_table(self.space, layers=layers, fixed=fixed,
                              objectives=self.objectives, extra_tables=self.extra_tables)

    def stage2_layers(self) -> list[int]:
        """Stage 2 searches the non-vital layers (every searchable one without the priori)."""
        space = self.space
        return space.nonvital_layers() if self.p.vital_priori else list(space.searchable)

    def steps_per_epoch(self) -> int:
        n = len(self.w_idx) // self.p.batch_size  # = per-rank shard // per-rank batch
        if n < 1:
            raise HourNASError(f"the weight split has {len(self.w_idx)} samples, fewer than "
                               f"one batch of {self.p.batch_size}; lower search.batch_size")
        return min(n, self.p.steps_per_epoch) if self.p.steps_per_epoch else n

    def check_batches(self) -> None:
        """Both splits hold at least one batch (checked before anything is written)."""
        self.steps_per_epoch()
        if len(self.a_idx) < self.p.batch_size:
            raise HourNASError(f"the architecture split has {len(self.a_idx)} samples, fewer "
                               f"than one batch of {self.p.batch_size}; lower search.batch_size")

    def start(self, resume: bool) -> tuple[dict, dict] | None:
        """Check the folder, then load its checkpoint (``resume``) or start a new run.
        Returns the loaded checkpoint (params, extra), or None."""
        check_feasible(self.full_table(list(self.space.searchable), {}), self.targets)
        saved = load_state(self) if resume else None
        if resume and saved is None:
            raise HourNASError(f"--resume: no search checkpoint in '{self.out}' "
                               f"({SEARCH_STATE_FILE} is missing)")
        if not resume and os.path.exists(self.path(SEARCH_STATE_FILE)):
            raise HourNASError(f"'{self.out}' already holds a search ({SEARCH_STATE_FILE}); pass "
                               f"--resume to continue it or choose another --output_dir")
        self.check_batches()
        data = self.cfg.data
        if data.augment or data.cutout:
            log("note: the search reads its training images unaugmented; data.augment and "
                "data.cutout apply to retraining (train.py), not to the search")
        if self.is_main:  # every check is done: the first write is the folder's lock
            lock_output_dir(self.out, "search")
        os.makedirs(self.out, exist_ok=True)
        if self.is_main:
            remove_stale_temps(self.out)  # left by a run killed while writing
        if saved is not None:
            self.state = SearchState.from_checkpoint(saved[1]["state"], self.path(SEARCH_STATE_FILE))
            self.saved_step = self.state.global_step
            self.noise.set_state(saved[1]["noise"])
            self.log.reset(keep=up_to_step(self.state.global_step))
            log(f"resuming {self.state.stage} stage at epoch {self.state.epoch + 1} step "
                f"{self.state.step} (global step {self.state.global_step})")
        else:
            self.log.reset()
            if self.is_main:
                save_config(self.cfg, self.path(CONFIG_FILE))
        if self.group_size > 1:
            from src.search.distributed import GradMean
            self.grad_mean = GradMean(self.group_size)
            self.rank_log.start(self.state.global_step if saved is not None else None)
            self.grad_mean.barrier()  # every rank has checked the folder before rank 0 writes
        return saved
