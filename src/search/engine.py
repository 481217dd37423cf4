"""Algorithm 1 of the paper: search the vital blocks, solve space proposals, search the bulb.

``run_search(cfg, output_dir, resume)`` is what ``search.py`` calls. The whole state (stage,
weights and their momenta, θ / Π / Θ and their Adam moments, τ, step, the host noise
generator, the data positions) is saved atomically every ``ckpt_every`` steps and at stage
ends, so an interrupted run resumes to the same architecture as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from src.checkpoint import (atomic_write, atomic_write_text, check_fit, load_checkpoint,
                            remove_stale_temps, save_checkpoint)
from src.cli import log
from src.config import flatten, format_size, save_config, to_dict
from src.data import dataset_info, make_dataset, search_split
from src.errors import CheckpointError, HourNASError, Stopped
from src.proposal import check_feasible, solve_proposals
from src.resource import OBJECTIVES, ResourceTable, count, resource_table
from src.sampler import GumbelNoise, TauSchedule
from src.search.config import SearchConfig, lower_lr_command, lr_changes
from src.search.derive import derive, relative_errors
from src.space.space import Space, arch_to_yaml, load_space

STATE_FILE = "search_state.ckpt"
LOG_FILE = "search_log.jsonl"
STAGE_ACCURACY_STEPS = 20  # a stage's "learned" figure: mean accuracy of its last steps
# Config keys a resumed search may change: they do not change what it computes.
# The learning rates may change too (the log says so): a diverged run continues with lower ones.
RESUME_MAY_CHANGE = ("output_dir", "device_target", "data.path", "data.num_workers",
                     "search.log_every", "search.ckpt_every", "search.w_lr", "search.arch_lr")


# ----------------------------------------------------------------------------- set-up


def prepare_space(cfg: SearchConfig) -> Space:
    """The space of the run, its classes and input size matched to the dataset."""
    space = load_space(cfg.space, cfg.width_mult)
    if cfg.data.image_size is None:
        cfg.data.image_size = space.input_size
    info = dataset_info(cfg.data)
    if info.image_size != space.input_size:
        raise HourNASError(f"data.image_size {info.image_size} differs from the space's input "
                           f"size {space.input_size} (FLOPs are counted at the space's size); "
                           f"set data.image_size={space.input_size}")
    if info.num_classes != space.num_classes:
        space.num_classes = info.num_classes
    return space


def objective_tables(cfg: SearchConfig, space: Space) -> dict | None:
    """Extra objectives measured elsewhere (latency), as full (layers x ops) arrays."""
    if "latency" not in cfg.proposal.targets:
        return None
    from src.latency import load_latency_table
    if not cfg.proposal.latency_table:
        raise HourNASError("a latency target needs proposal.latency_table (a file written by "
                           "benchmarks/latency_table.py)")
    return {"latency": load_latency_table(cfg.proposal.latency_table, space)}


def _targets(cfg: SearchConfig) -> dict[str, float]:
    valid = OBJECTIVES + ("latency",)
    for k in cfg.proposal.targets:
        if k not in valid:
            raise HourNASError(f"unknown objective '{k}' in proposal.targets; valid: "
                               f"{', '.join(valid)}")
    return {k: float(v) for k, v in cfg.proposal.targets.items()}


def _fmt(obj: str, v: float) -> str:
    return f"{v:.3f} ms" if obj == "latency" else format_size(v)


# ----------------------------------------------------------------------------- the run state


@dataclass
class StageState:
    """Where a run is. Saved inside the checkpoint as JSON (no pickle)."""

    stage: str = "vital"          # vital | nonvital | done
    epoch: int = 0
    step: int = 0                 # step within the epoch
    global_step: int = 0          # across stages: drives τ
    stage_step: int = 0           # steps done in this stage: drives the cosine lr
    val_epoch: int = 0
    val_pos: int = 0
    vital_choices: dict = field(default_factory=dict)   # layer index (str) -> op index
    vital_report: dict = field(default_factory=dict)
    proposals_report: dict = field(default_factory=dict)
    stage_seconds: dict = field(default_factory=dict)
    stage_accuracy: dict = field(default_factory=dict)  # stage -> mean a_acc / w_acc at its end


class Interrupted(Exception):
    pass


class SearchRun:
    """One search run in one output folder."""

    def __init__(self, cfg: SearchConfig, output_dir: str, facts: dict):
        self.cfg, self.out, self.facts = cfg, output_dir, facts
        self.p = cfg.search
        self.space = prepare_space(cfg)
        self.targets = _targets(cfg)
        self.extra_tables = objective_tables(cfg, self.space)
        self.objectives = tuple(self.targets)
        self.rank = facts.get("rank", 0)
        self.group_size = facts.get("group_size", 1)
        self.is_main = self.rank == 0
        if self.p.batch_size % self.group_size:
            raise HourNASError(f"search.batch_size {self.p.batch_size} is the global batch and must "
                               f"be divisible by the number of ranks ({self.group_size})")
        self.rank_batch = self.p.batch_size // self.group_size  # this rank's part of a batch
        self.rank_log = None
        if self.group_size > 1:
            from src.search.distributed import RankLog
            self.rank_log = RankLog(output_dir, self.rank)
        self.state = StageState()
        self.noise = GumbelNoise(self.p.seed)
        self.tau = TauSchedule(self.p.tau, self.p.tau_decay, self.p.tau_min)
        self.w_idx, self.a_idx = search_split(cfg.data, self.p.val_fraction, self.p.seed)
        self.executor_name = self._executor_name()
        self._stop_signal = None
        # a live progress bar on a terminal; plain lines (log_every) everywhere
        self._bar = self.is_main and sys.stderr.isatty()

    # -- helpers ----------------------------------------------------------------------

    def _executor_name(self) -> str:
        from src.search.step import default_executor
        if self.p.sampler != "gumbel_max":
            return "allpath"
        if self.p.executor == "auto":
            return default_executor(self.facts.get("device_target", "CPU"))
        return self.p.executor

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def full_table(self, layers: list[int], fixed: dict[int, int]) -> ResourceTable:
        return resource_table(self.space, layers=layers, fixed=fixed, objectives=self.objectives,
                              extra_tables=self.extra_tables)

    def steps_per_epoch(self) -> int:
        n = len(self.w_idx) // self.p.batch_size  # = per-rank shard // per-rank batch
        if n < 1:
            raise HourNASError(f"the weight split has {len(self.w_idx)} samples, fewer than "
                               f"one batch of {self.p.batch_size}; lower search.batch_size")
        return min(n, self.p.steps_per_epoch) if self.p.steps_per_epoch else n

    def _log_record(self, rec: dict) -> None:
        if self.is_main:
            with open(self.path(LOG_FILE), "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    def _truncate_log(self, global_step: int) -> None:
        path = self.path(LOG_FILE)
        if not (self.is_main and os.path.exists(path)):
            return
        keep = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut by the interruption
                if rec.get("global_step", -1) < global_step or rec.get("event"):
                    keep.append(json.dumps(rec))
        atomic_write_text(path, "".join(k + "\n" for k in keep))

    # -- signals ----------------------------------------------------------------------

    def _on_signal(self, signum, _frame):
        self._stop_signal = signum

    def _install_signals(self):
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def _pin_signals(self):
        """Put our handlers back: MindSpore's PyNative runtime installs a C-level SIGINT
        handler of its own at its first op (it turns Ctrl-C into SIGTERM)."""
        for s in getattr(self, "_old", {}):
            signal.signal(s, self._on_signal)

    def _restore_signals(self):
        for s, h in getattr(self, "_old", {}).items():
            signal.signal(s, h)

    # -- checkpoints ------------------------------------------------------------------

    def save(self, net, sgd, arch, adam) -> None:
        if not self.is_main:
            return
        params = {p.name: p.asnumpy() for p in net.get_parameters()}
        params.update({m.name: m.asnumpy() for m in sgd.moments.values()})
        values = arch.values()
        bad = [n for n, a in params.items() if not np.isfinite(a).all()] + \
              [n for n, a in values.items() if not np.isfinite(a).all()]
        if bad:  # never overwrite the last good state with a diverged one
            raise HourNASError(
                f"non-finite values in {len(bad)} tensors (e.g. '{bad[0]}') at {self.state.stage} "
                f"global step {self.state.global_step}; not saved: the last good state stays in "
                f"{self.path(STATE_FILE)}; " + lower_lr_command(
                    self.cfg, self.out, ("search.arch_lr",) if all(
                        n in values for n in bad) else ("search.w_lr",)))
        extra = {
            "kind": "hournas-search",
            "space": self.space.name,
            "config": to_dict(self.cfg),
            "state": self.state.__dict__,
            "noise": self.noise.state(),
            "arch": dict(values),
            "adam": adam.state(),
            "keep": net.keep,
            "searched": net.searched,
        }
        save_checkpoint(self.path(STATE_FILE), params, extra)
        self._saved_step = self.state.global_step

    def load_state(self) -> tuple[dict, dict] | None:
        path = self.path(STATE_FILE)
        if not os.path.exists(path):
            return None
        params, extra = load_checkpoint(path)
        if extra.get("kind") != "hournas-search":
            raise HourNASError(f"'{path}' is not a search checkpoint")
        if extra.get("space") != self.space.name:
            raise HourNASError(f"checkpoint '{path}' is from space '{extra.get('space')}', this "
                               f"run searches '{self.space.name}'; use another --output_dir")
        for key in ("state", "noise", "arch", "adam"):
            if not isinstance(extra.get(key), dict):
                raise CheckpointError(f"search checkpoint '{path}' lacks its '{key}' record "
                                      f"(damaged or from another version); start a new search "
                                      f"in another --output_dir")
        stored = extra.get("config")
        if isinstance(stored, dict):
            a, b = flatten(stored), flatten(to_dict(self.cfg))
            diff = [k for k in sorted(set(a) | set(b))
                    if k not in RESUME_MAY_CHANGE and a.get(k) != b.get(k)]
            if diff:
                shown = "; ".join(f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}"
                                  for k in diff[:3])
                raise HourNASError(f"--resume with a different configuration ({shown}); resume "
                                   f"with the run's settings ({self.path('config.yaml')}) or "
                                   f"start a new search in another --output_dir (may change on "
                                   f"resume: {', '.join(RESUME_MAY_CHANGE)})")
            changed = lr_changes(a, b)
            if changed:
                log("learning rate changed on resume: " + ", ".join(
                    f"{k} {v[0]!r} -> {v[1]!r}" for k, v in changed.items()) + "; the search "
                    "continues from the saved state with the new values")
        return params, extra

    # -- the bilevel loop -------------------------------------------------------------

    def _val_batches(self):
        """Endless stream over the architecture split (20%), resumable by (epoch, pos)."""
        bs = self.rank_batch
        shard = (self.rank, self.group_size) if self.group_size > 1 else None
        if len(self.a_idx) < self.p.batch_size:
            raise HourNASError(f"the architecture split has {len(self.a_idx)} samples, fewer "
                               f"than one batch of {self.p.batch_size}; lower search.batch_size")
        while True:
            data = make_dataset(self.cfg.data, "train", bs, indices=self.a_idx, shuffle=True,
                                seed=self.p.seed + 1, epoch=self.state.val_epoch,
                                start_batch=self.state.val_pos, shard=shard, drop_remainder=True)
            for x, y in data.create_tuple_iterator(num_epochs=1):
                self.state.val_pos += 1
                yield x, y
            self.state.val_epoch += 1
            self.state.val_pos = 0

    def run_stage(self, stage: str, net, arch, executor, sgd, adam, epochs: int) -> None:
        import mindspore as ms  # noqa: F401  (context already set up)

        steps = self.steps_per_epoch()
        total = epochs * steps
        bs = self.rank_batch
        shard = (self.rank, self.group_size) if self.group_size > 1 else None
        val = self._val_batches()
        th_shape, pi_shape = arch.noise_shapes
        t_stage = t_last = time.perf_counter()
        done_at_start = self.state.stage_step
        label = {"vital": "stage 1/2 (vital layers)",
                 "nonvital": "stage 2/2 (non-vital layers)",
                 "single": "single stage (all layers)"}[stage]
        log(f"{label}: {len(net.searched)} searched layers, {epochs} epoch(s) x {steps} steps, "
            f"batch {self.p.batch_size}" + (f" ({bs} per rank)" if self.group_size > 1 else "")
            + f", executor {executor.name}")
        while self.state.epoch < epochs:
            if self.state.step >= steps:  # saved right at an epoch's end
                self.state.epoch += 1
                self.state.step = 0
                continue
            data = make_dataset(self.cfg.data, "train", bs, indices=self.w_idx, shuffle=True,
                                seed=self.p.seed, epoch=self.state.epoch,
                                start_batch=self.state.step, shard=shard, drop_remainder=True)
            it = data.create_tuple_iterator(num_epochs=1)
            while self.state.step < steps:
                x, y = next(it)
                t0 = time.perf_counter()
                tau = self.tau.value(self.state.global_step)
                lr = 0.5 * self.p.w_lr * (1 + math.cos(math.pi * self.state.stage_step / total))
                # Weight step on the 80% split: a path sampled from the current distributions.
                gw_t = self.noise.sample(th_shape)
                gw_p = self.noise.sample(pi_shape) if pi_shape else None
                proposal, indices = arch.host_path(gw_t, gw_p, tau)
                if executor.name == "allpath":
                    a_np = arch(ms.Tensor(gw_t), ms.Tensor(gw_p) if gw_p is not None else None,
                                ms.Tensor(tau, ms.float32)).asnumpy()
                    w_loss, w_acc = executor.weight_step(x, y, a_np, lr)
                else:
                    w_loss, w_acc = executor.weight_step(x, y, indices, lr)
                # Architecture step on the 20% split, with fresh noise.
                xv, yv = next(val)
                ga_t = self.noise.sample(th_shape)
                ga_p = self.noise.sample(pi_shape) if pi_shape else None
                a_prop, a_indices = arch.host_path(ga_t, ga_p, tau)
                res = executor.arch_step(xv, yv, ga_t, ga_p, tau, a_indices)
                grads = res["grads"]
                if executor.grad_mean is not None:
                    grads = executor.grad_mean.arrays(grads)
                arch.assign(adam.step(arch.values(), grads))
                if not (math.isfinite(w_loss) and math.isfinite(res["loss"])):
                    raise HourNASError(
                        f"non-finite loss at {stage} epoch {self.state.epoch + 1} step "
                        f"{self.state.step + 1} (global step {self.state.global_step + 1}; "
                        f"weight loss {w_loss}, architecture loss {res['loss']}); the last good "
                        f"state is in {self.path(STATE_FILE)} (global step "
                        f"{self._saved_step}); " + lower_lr_command(
                            self.cfg, self.out, ("search.w_lr",) if not math.isfinite(w_loss)
                            else ("search.arch_lr",)))
                self.state.step += 1
                self.state.global_step += 1
                self.state.stage_step += 1
                dt = time.perf_counter() - t0
                cost = self._path_cost(net, indices)
                rec = {"stage": stage, "epoch": self.state.epoch, "step": self.state.step,
                       "global_step": self.state.global_step, "tau": tau, "lr": lr,
                       "w_loss": w_loss, "w_acc": w_acc, "a_loss": res["loss"],
                       "a_ce": res["ce"], "a_reg": res["reg"], "a_acc": res["acc"],
                       "path": indices, "proposal": proposal, "entropy": self._entropy(arch),
                       **({"pi": arch.probabilities()[0].round(5).tolist()}
                          if arch.use_proposals else {}),
                       "step_seconds": dt, **{f"path_{k}": v for k, v in cost.items()}}
                self._pin_signals()  # before the step is logged as done
                self._log_record(rec)
                if self.rank_log is not None:
                    self.rank_log.write(stage=stage, global_step=self.state.global_step,
                                        path=indices, proposal=proposal, a_path=a_indices,
                                        a_proposal=a_prop)
                done = self.state.stage_step - done_at_start
                now = time.perf_counter()
                # counted step by step, so a checkpoint holds the time spent so far
                self.state.stage_seconds[stage] = self.state.stage_seconds.get(stage, 0.0) + \
                    (now - t_last)
                t_last = now
                el = now - t_stage
                eta = el / max(done, 1) * (total - self.state.stage_step)
                if self._bar:
                    _progress_bar(stage, self.state.stage_step, total, el / max(done, 1), eta)
                if self.state.stage_step % self.p.log_every == 0 or self.state.stage_step == total:
                    if self._bar:
                        sys.stderr.write("\r\033[K")
                    log(f"[{stage}] epoch {self.state.epoch + 1}/{epochs} step "
                        f"{self.state.step}/{steps} | {el / max(done, 1):.2f} s/step | ETA "
                        f"{_hms(eta)} | w_loss {w_loss:.3f} acc {w_acc:.2f} | a_loss "
                        f"{res['loss']:.3f} reg {res['reg']:.4f} | tau {tau:.4f}")
                if self.state.stage_step % self.p.ckpt_every == 0:
                    self.save(net, sgd, arch, adam)
                if executor.grad_mean is not None:  # data parallel: all ranks stop together
                    self._stop_signal = executor.grad_mean.agree_stop(self._stop_signal)
                if self._stop_signal is not None:
                    self.save(net, sgd, arch, adam)
                    raise Interrupted()
            self.state.epoch += 1
            self.state.step = 0
        self.state.stage_accuracy[stage] = self._stage_accuracy(stage)
        acc = self.state.stage_accuracy[stage]
        if acc:
            log(f"[{stage}] learned: over its last {acc['steps']} steps the supernet's "
                f"architecture-step accuracy is {acc['a_acc']:.2f} and its weight-step "
                f"accuracy {acc['w_acc']:.2f} (chance {1 / self.space.num_classes:.2f})")
        if self.rank_log is not None:
            from src.search.distributed import arch_digest, weights_digest
            self.rank_log.write(event="stage_end", stage=stage, global_step=self.state.global_step,
                                weights_sha256=weights_digest(net),
                                arch_sha256=arch_digest(arch.values()))

    def _stage_accuracy(self, stage: str, last: int = STAGE_ACCURACY_STEPS) -> dict:
        """Mean accuracies of the stage's last steps, from the log (so a resumed stage counts
        its steps before the resume too); rank 0 only (it holds the log)."""
        from src.jsonlog import read_jsonl
        if not (self.is_main and os.path.exists(self.path(LOG_FILE))):
            return {}
        recs = [r for r in read_jsonl(self.path(LOG_FILE))
                if r.get("stage") == stage and "a_acc" in r][-last:]
        if not recs:
            return {}
        return {"steps": len(recs), "a_acc": float(np.mean([r["a_acc"] for r in recs])),
                "w_acc": float(np.mean([r["w_acc"] for r in recs]))}

    def _path_cost(self, net, indices) -> dict:
        tab = getattr(self, "_cur_table", None)
        if tab is None:
            return {}
        onehot = np.zeros(tab.table[self.objectives[0]].shape)
        onehot[np.arange(len(indices)), indices] = 1
        return tab.cost(onehot)

    @staticmethod
    def _entropy(arch) -> float:
        _, p = arch.probabilities()
        return float(-(p * np.log(p + 1e-12)).sum(axis=-1).mean())

    # -- stages -----------------------------------------------------------------------

    def build(self, searched: list[int], fixed: dict[int, int], keep: list[int] | None,
              proposals: np.ndarray | None, reg_table: ResourceTable | None):
        import mindspore as ms
        from src.proposal import objective_arrays, resource_loss
        from src.search.step import EXECUTORS, ArchParams, HostAdam, SparseSGD
        from src.supernet import Supernet

        ms.set_seed(self.p.seed)
        net = Supernet(self.space, searched, fixed, keep)
        net.set_train(True)
        num_ops = len(self.space.layers[searched[0]].ops)
        arch = ArchParams(len(net.searched), num_ops, proposals, sampler=self.p.sampler)
        sgd = SparseSGD(list(net.trainable_params()), self.p.w_momentum, self.p.w_weight_decay)
        shapes = {k: v.shape for k, v in arch.values().items()}
        adam = HostAdam(shapes, self.p.arch_lr, weight_decay=self.p.arch_weight_decay)
        reg = None
        if reg_table is not None:
            # the same arrays (and M_i) as the proposal solver: src.proposal.objective_arrays
            tables, base, targets, maxima = (ms.Tensor(a) for a in objective_arrays(
                reg_table, self.targets).as_float32())

            def reg(a):
                return resource_loss(a, tables, base, targets, maxima)
        executor = EXECUTORS[self.executor_name](net, arch, sgd, reg=reg,
                                                 alpha=self.p.alpha if reg else 0.0,
                                                 grad_mean=self._grad_mean())
        return net, arch, sgd, adam, executor

    def restore(self, net, sgd, arch, adam, params: dict, extra: dict) -> None:
        """Load a saved state after checking every name and shape against this run's."""
        import mindspore as ms
        where = f"search checkpoint '{self.path(STATE_FILE)}'"
        hint = ("; the space or the config changed since it was written: resume with the "
                "same ones, or start a new search in another --output_dir")
        own = {p.name: p for p in net.get_parameters()}
        own.update({m.name: m for m in sgd.moments.values()})
        values = arch.values()
        adam_state = extra["adam"]
        try:
            check_fit(where, {n: tuple(p.shape) for n, p in params.items()},
                      {n: tuple(p.shape) for n, p in own.items()})
            saved = {k: np.asarray(v) for k, v in extra["arch"].items()}
            check_fit(f"{where} (architecture parameters)",
                      {k: v.shape for k, v in saved.items()},
                      {k: v.shape for k, v in values.items()})
            for part in ("m", "v"):
                check_fit(f"{where} (architecture optimizer '{part}')",
                          {k: np.shape(v) for k, v in adam_state[part].items()},
                          {k: v.shape for k, v in values.items()})
        except CheckpointError as e:
            raise CheckpointError(f"{e}{hint}") from None
        except (KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{where} has a malformed architecture optimizer state "
                                  f"({type(e).__name__}: {e}){hint}") from None
        for name, p in own.items():
            p.set_data(ms.Tensor(params[name].asnumpy()))
        arch.assign(saved)
        adam.set_state(adam_state)
        self.noise.set_state(extra["noise"])

    def vital_stage(self, resume: tuple | None) -> dict[int, int]:
        space = self.space
        vital = space.vital_layers()
        keep = [i for i in range(len(space.layers)) if i in vital or not space.layers[i].searchable
                and space.vital[i]]
        net, arch, sgd, adam, ex = self.build(vital, {}, keep, None, None)
        self._cur_table = None  # S_vital has no non-vital layers: no whole-net cost to log
        if resume is not None:
            self.restore(net, sgd, arch, adam, *resume)
        else:
            self.state.epoch = self.state.step = self.state.stage_step = 0
            self.save(net, sgd, arch, adam)
        self.run_stage("vital", net, arch, ex, sgd, adam, self.p.epochs_vital)
        _, probs = arch.probabilities()
        choices = self._fix_vital(vital, probs)
        self.vital_weights = {p.name: p.asnumpy() for p in net.get_parameters()}
        self.vital_keep = keep
        return choices

    def _fix_vital(self, vital: list[int], probs: np.ndarray) -> dict[int, int]:
        """Most probable op per vital layer; if that leaves the targets out of reach of the
        non-vital layers, the most probable vital choice that keeps them reachable."""
        nonvital = self.space.nonvital_layers()
        vtab = self.full_table(vital, {i: 0 for i in nonvital})
        rest = self.full_table(nonvital, {i: 0 for i in vital})
        objs = self.objectives
        # vtab.base counts the non-vital layers at op 0: swap that for their reachable range.
        op0 = {o: float(rest.table[o][:, 0].sum()) for o in objs}
        lo = {o: float(rest.table[o].min(axis=1).sum()) - op0[o] for o in objs}
        hi = {o: float(rest.table[o].max(axis=1).sum()) - op0[o] for o in objs}
        eye = np.eye(probs.shape[1])

        def feasible(choice):
            cost = vtab.cost(eye[choice])
            return all(cost[o] + lo[o] <= self.targets[o] <= cost[o] + hi[o] for o in objs)

        argmax = [int(o) for o in probs.argmax(axis=1)]
        chosen, method = argmax, "argmax"
        if not feasible(argmax):
            chosen = next((c for c in _ranked_choices(np.log(probs + 1e-12), limit=20000)
                           if feasible(c)), None)
            if chosen is None:
                raise HourNASError("no vital-layer choice leaves the targets reachable; widen "
                                   "the targets or search without the vital priori")
            method = "most probable that keeps the targets reachable"
        self.state.vital_report = {
            "layers": [self.space.layers[i].label for i in vital],
            "ops": [self.space.layers[i].ops[o].name for i, o in zip(vital, chosen)],
            "probabilities": probs.round(4).tolist(), "method": method}
        log(f"stage 1 fixed the vital layers ({method}): " + ", ".join(
            f"{self.space.layers[i].label}={self.space.layers[i].ops[o].name} "
            f"(p {probs[k, o]:.2f})" for k, (i, o) in enumerate(zip(vital, chosen))))
        log(f"vital-op probabilities softmax(θ) (uniform: {1 / probs.shape[1]:.3f}): " + "; ".join(
            f"{self.space.layers[i].label} " + " ".join(f"{p:.2f}" for p in probs[k])
            for k, i in enumerate(vital)))
        return {i: o for i, o in zip(vital, chosen)}

    def nonvital_stage(self, fixed: dict[int, int], resume: tuple | None) -> None:
        space = self.space
        searched = space.nonvital_layers() if self.p.vital_priori else list(space.searchable)
        table = self.full_table(searched, fixed)
        self._cur_table = table
        if resume is None:
            check_feasible(table, self.targets)
            t0 = time.perf_counter()
            props = solve_proposals(table, self.targets, self.cfg.proposal)
            self.state.proposals_report = {"solve_seconds": time.perf_counter() - t0,
                                           "m": int(props.theta.shape[0])}
            theta0 = props.theta
        else:
            theta0 = np.asarray(resume[1]["arch"].get("theta"))
            want = (len(searched), max(len(space.layers[i].ops) for i in searched))
            if theta0.ndim != 3 or theta0.shape[1:] != want:
                raise CheckpointError(
                    f"search checkpoint '{self.path(STATE_FILE)}' holds proposals θ of shape "
                    f"{theta0.shape}, this search needs (m, {want[0]}, {want[1]}); the space or "
                    f"the config changed since it was written: resume with the same ones, or "
                    f"start a new search in another --output_dir")
        net, arch, sgd, adam, ex = self.build(searched, fixed, None, theta0, table)
        if resume is not None:
            self.restore(net, sgd, arch, adam, *resume)
        else:
            self._carry_weights(net)
            self.state.epoch = self.state.step = self.state.stage_step = 0
            self.state.val_epoch = self.state.val_pos = 0
            self.save(net, sgd, arch, adam)
        stage = "nonvital" if self.p.vital_priori else "single"
        if self.state.stage == "done":  # killed while writing the outputs: derive again
            log("the search had finished; writing its outputs again from its final state")
        else:
            self.run_stage(stage, net, arch, ex, sgd, adam, self.p.epochs_nvital)
        self.final_arch = arch
        self.final_table = table
        self.final_net = net
        self.final_sgd, self.final_adam = sgd, adam

    def _carry_weights(self, net) -> None:
        """Stage-1 weights of the stem, the vital layers' chosen ops, head and classifier."""
        old = getattr(self, "vital_weights", None)
        if not old:
            return
        import mindspore as ms
        pos_old = {i: k for k, i in enumerate(self.vital_keep)}
        moved = 0
        for p in net.get_parameters():
            name = p.name
            if name.startswith("layers."):
                parts = name.split(".")
                i = int(parts[1])
                if i not in pos_old or i in net.searched:
                    continue
                o = self.vital_choices_idx.get(i)
                rest = ".".join(parts[2:])
                src = f"layers.{pos_old[i]}.candidates.{o}.{rest}" if o is not None else \
                    f"layers.{pos_old[i]}.{rest}"
            else:
                src = name
            if src in old and old[src].shape == tuple(p.shape):
                p.set_data(ms.Tensor(old[src]))
                moved += 1
        log(f"stage 2 starts from stage 1's weights for {moved} tensors (stem, vital ops, head)")

    def _grad_mean(self):
        if self.group_size <= 1:
            return None
        from src.search.distributed import GradMean
        return GradMean(self.group_size)

    # -- the whole run ----------------------------------------------------------------

    def run(self, resume: bool) -> dict:
        space = self.space
        full = self.full_table(list(space.searchable), {})
        check_feasible(full, self.targets)
        loaded = self.load_state() if resume else None
        if resume and loaded is None:
            raise HourNASError(f"--resume: no search checkpoint in '{self.out}' "
                               f"({STATE_FILE} is missing)")
        if not resume and os.path.exists(self.path(STATE_FILE)):
            raise HourNASError(f"'{self.out}' already holds a search ({STATE_FILE}); pass "
                               f"--resume to continue it or choose another --output_dir")
        self._saved_step = None
        os.makedirs(self.out, exist_ok=True)
        if self.is_main:
            remove_stale_temps(self.out)  # left by a run killed while writing
        if loaded is not None:
            params, extra = loaded
            try:
                self.state = StageState(**extra["state"])
            except TypeError as e:
                raise CheckpointError(f"search checkpoint '{self.path(STATE_FILE)}' has a "
                                      f"malformed run state ({e}); start a new search in "
                                      f"another --output_dir") from None
            self._saved_step = self.state.global_step
            self.noise.set_state(extra["noise"])
            self._truncate_log(self.state.global_step + 1)
            log(f"resuming {self.state.stage} stage at epoch {self.state.epoch + 1} step "
                f"{self.state.step} (global step {self.state.global_step})")
        else:
            if self.is_main and os.path.exists(self.path(LOG_FILE)):
                os.remove(self.path(LOG_FILE))
            if self.is_main:
                save_config(self.cfg, self.path("config.yaml"))
        if self.rank_log is not None:
            self.rank_log.start(self.state.global_step if loaded is not None else None)
            # every rank has checked the folder before rank 0 writes its first checkpoint
            self._grad_mean().barrier()
        self._install_signals()
        try:
            fixed: dict[int, int] = {}
            if self.p.vital_priori:
                if self.state.stage == "vital":
                    self.vital_choices_idx = {}
                    fixed = self.vital_stage(loaded)
                    loaded = None
                    self.vital_choices_idx = fixed
                    self.state.vital_choices = {str(k): v for k, v in fixed.items()}
                    self.state.stage = "nonvital"
                    self.state.epoch = self.state.step = self.state.stage_step = 0
                else:
                    fixed = {int(k): v for k, v in self.state.vital_choices.items()}
                    self.vital_choices_idx = fixed
            else:  # validate() requires epochs_vital >= 1 with the vital priori
                self.vital_choices_idx = {}
                if self.state.stage == "vital":
                    self.state.stage = "nonvital"
            if self.state.stage in ("nonvital", "done"):
                finished = self.state.stage == "done"
                self.nonvital_stage(fixed, loaded)
                if not finished:
                    self.state.stage = "done"
                    self.save(self.final_net, self.final_sgd, self.final_arch, self.final_adam)
        except Interrupted:
            name = signal.Signals(self._stop_signal).name
            raise Stopped(self._stop_signal, f"stopped by {name} at {self.state.stage} global "
                          f"step {self.state.global_step}: state saved in "
                          f"{self.path(STATE_FILE)}; continue with --resume") from None
        finally:
            self._restore_signals()
        return self.finish(fixed)

    def finish(self, fixed: dict[int, int]) -> dict:
        space, arch, table = self.space, self.final_arch, self.final_table
        pi, probs = arch.probabilities()
        if pi is not None:
            j = int(np.argmax(pi))
            log_probs = np.log(probs[j] + 1e-12)
        else:
            j = None
            log_probs = np.log(probs + 1e-12)
        d = derive(log_probs, table, self.targets, self.p.tolerance, self.p.beam)
        if not d.within and pi is not None:
            # the most probable proposal cannot meet the targets: try the others by Π
            for jj in np.argsort(-pi):
                dd = derive(np.log(probs[jj] + 1e-12), table, self.targets, self.p.tolerance,
                            self.p.beam)
                if dd.within:
                    d, j = dd, int(jj)
                    d.method += f" (proposal {j})"
                    break
        choices = dict(fixed)
        for k, i in enumerate(table.layers):
            choices[i] = d.choices[k]
        full_choices = [choices[i] for i in space.searchable]
        achieved = count(space.arch(full_choices))
        achieved = {o: float(achieved[o]) if o in achieved else d.cost[o]
                    for o in self.objectives}
        rel = relative_errors(achieved, self.targets)
        meta = {"targets": self.targets, "achieved": achieved,
                "relative_error": {k: round(v, 5) for k, v in rel.items()},
                "seed": self.p.seed, "derivation": d.method, "proposal": j,
                "vital_priori": self.p.vital_priori, "sampler": self.p.sampler}
        name = f"hournas_{self.space.name}"
        arch_rec = space.arch(full_choices, name=name, meta=meta)
        summary = {
            "arch": self.path("arch.yaml"), "space": space.name, "targets": self.targets,
            "achieved": achieved, "relative_error": rel, "within_tolerance": d.within,
            "tolerance": self.p.tolerance, "derivation": d.method, "proposal": j,
            "stage_seconds": self.state.stage_seconds,
            "stage_accuracy": self.state.stage_accuracy, "vital": self.state.vital_report,
            "proposals": self.state.proposals_report, "executor": self.executor_name,
            "ops": [op.name for op in arch_rec.ops], "blocks": arch_rec.block_strings(),
            "params": int(count(arch_rec)["params"]), "flops": int(count(arch_rec)["flops"]),
        }
        if self.is_main:
            atomic_write_text(self.path("arch.yaml"),
                              f"# Searched by HourNAS in {space.name}\n" + arch_to_yaml(arch_rec))
            atomic_write_text(self.path("summary.json"), json.dumps(summary, indent=2) + "\n")
            atomic_write(self.path("arch_params.npz"),
                         lambda tmp: np.savez(tmp, **{k: v for k, v in arch.values().items()}))
            try:
                from src.search.plots import plot_search
                plot_search(self.out, space, self.targets)
            except ImportError:
                pass
        if self.rank_log is not None:
            from src.search.distributed import arch_digest, weights_digest
            self.rank_log.write(event="done", global_step=self.state.global_step,
                                ops=summary["ops"], weights_sha256=weights_digest(self.final_net),
                                arch_sha256=arch_digest(arch.values()))
        if not d.within:
            log(f"warning: no architecture within ±{self.p.tolerance:.0%} of every target was "
                f"found; taking the most probable one nearest to them")
        log(f"derived ({d.method}): params {format_size(achieved.get('params', 0))}, "
            f"FLOPs {format_size(achieved.get('flops', 0))} for targets " + ", ".join(
                f"{k} {_fmt(k, v)} ({rel[k]:+.2%})" for k, v in self.targets.items()))
        return summary


def _ranked_choices(log_probs: np.ndarray, limit: int):
    """Choices in decreasing probability (best-first over a product of per-row orders)."""
    import heapq
    order = np.argsort(-log_probs, axis=1)
    rows = log_probs.shape[0]
    start = (0,) * rows
    score = lambda r: float(sum(log_probs[i, order[i, r[i]]] for i in range(rows)))
    heap = [(-score(start), start)]
    seen = {start}
    n = 0
    while heap and n < limit:
        _, ranks = heapq.heappop(heap)
        n += 1
        yield [int(order[i, ranks[i]]) for i in range(rows)]
        for i in range(rows):
            if ranks[i] + 1 < log_probs.shape[1]:
                nxt = ranks[:i] + (ranks[i] + 1,) + ranks[i + 1:]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (-score(nxt), nxt))


def _progress_bar(stage: str, done: int, total: int, per_step: float, eta: float) -> None:
    width = 30
    fill = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{stage}] |{'#' * fill}{'.' * (width - fill)}| {done}/{total} "
                     f"{per_step:.2f} s/step ETA {_hms(eta)}")
    sys.stderr.flush()


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_search(cfg: SearchConfig, output_dir: str, resume: bool, facts: dict) -> dict:
    run = SearchRun(cfg, output_dir, facts)
    return run.run(resume)
