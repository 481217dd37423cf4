"""The search state: where a run is, and its checkpoint (``search_state.ckpt``).

``SearchState`` is the position: the stage (``vital`` -> ``nonvital`` -> ``done``), the epoch
and step in it, the global step (τ), the positions of both data streams, and what finished
stages decided (vital ops, reports). Resuming means skipping the stages it has finished and
continuing the current one at its position: ``src.search.engine.run_search`` reads
``state.stage``, the loop reads the rest.

The checkpoint holds that state as JSON beside the supernet's weights and BN statistics, the
SGD momenta, θ or Π/Θ, their Adam moments and the host Gumbel generator's state: everything a
resumed run needs to end with the same bits as an uninterrupted one. It is written atomically
and never with non-finite values.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from src.checkpoint import check_fit, load_checkpoint, save_checkpoint
from src.rundir import SEARCH_KIND, SEARCH_STATE_FILE
from src.runlog import log
from src.config import to_dict
from src.errors import CheckpointError, HourNASError
from src.runlog import check_resume_config, config_changes, describe_changes, nonfinite
from src.search.config import RESUME_LR_KEYS, lower_lr_command

# Config keys a resumed search may change: they do not change what it computes.
# The learning rates may change too (the log says so): a diverged run continues with lower ones.
# The random baseline's keys never apply to a search (and checkpoints older than them lack them);
# search.derive changes only the derivation from the final state (a finished search resumed
# with another one derives again).
RESUME_MAY_CHANGE = ("output_dir", "device_target", "data.path", "data.num_workers",
                     "search.log_every", "search.ckpt_every", "search.w_lr", "search.arch_lr",
                     "search.arch_lr_nvital", "search.strategy", "search.num_archs",
                     "search.random_fix_vital", "search.derive")
_HINT = ("; the space or the config changed since it was written: resume with the same ones, "
         "or start a new search in another --output_dir")


STAGES = ("vital", "nonvital", "done")  # SearchState.stage (a run without the priori: nonvital)


@dataclass
class SearchState:
    """Where a run is. Saved inside the checkpoint as JSON (no pickle); the field names are
    the checkpoint's keys."""

    stage: str = "vital"          # vital | nonvital | done
    epoch: int = 0
    step: int = 0                 # step within the epoch
    global_step: int = 0          # across stages: drives τ
    stage_step: int = 0           # steps done in this stage: drives the cosine lr
    val_epoch: int = 0            # position in the architecture split's stream
    val_pos: int = 0
    vital_choices: dict = field(default_factory=dict)   # layer index (str) -> op index
    vital_report: dict = field(default_factory=dict)
    proposals_report: dict = field(default_factory=dict)
    stage_seconds: dict = field(default_factory=dict)
    stage_accuracy: dict = field(default_factory=dict)  # stage -> mean a_acc / w_acc at its end

    def begin_stage(self) -> None:
        """A stage starts at its first step (global_step and the reports carry on)."""
        self.epoch = self.step = self.stage_step = 0
        self.val_epoch = self.val_pos = 0

    def advance(self) -> None:
        """One iteration (a weight step and an architecture step) done."""
        self.step += 1
        self.global_step += 1
        self.stage_step += 1

    def enter_nonvital(self, vital_ops: dict[int, int]) -> None:
        """Stage 1 is over (or skipped: no vital priori); its choices are kept."""
        self.vital_choices = {str(k): v for k, v in vital_ops.items()}
        self.stage = "nonvital"
        self.begin_stage()

    def vital_ops(self) -> dict[int, int]:
        """The vital layers' fixed ops (layer index -> op index); empty without the priori."""
        return {int(k): v for k, v in self.vital_choices.items()}

    @classmethod
    def from_checkpoint(cls, record: dict, path: str) -> "SearchState":
        """The state a checkpoint recorded, its keys and value types checked (a damaged or
        hand-edited record stops the resume here, not steps later)."""
        try:
            state = cls(**record)
        except TypeError as e:
            state, problem = None, str(e)
        else:
            problem = state._type_problem()
        if problem:
            raise CheckpointError(f"search checkpoint '{path}' has a malformed run state "
                                  f"({problem}); start a new search in another --output_dir")
        return state

    def _type_problem(self) -> str | None:
        """What is wrong with the fields' values (None: nothing)."""
        from dataclasses import fields
        if self.stage not in STAGES:
            return f"stage {self.stage!r} is none of {', '.join(STAGES)}"
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (type(value) is not int or value < 0):
                return f"{f.name} must be a whole number >= 0, got {value!r}"
            if f.type == "dict" and not isinstance(value, dict):
                return f"{f.name} must be a mapping, got {type(value).__name__}"
        return None


def save_state(run, stage) -> None:
    """The whole state of ``run`` while ``stage`` trains, atomically (rank 0 writes)."""
    if not run.is_main:
        return
    net, sgd, arch = stage.net, stage.sgd, stage.arch
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    params.update({m.name: m.asnumpy() for m in sgd.moments.values()})
    values = arch.values()
    check_finite_state(run, params, values, stage.name)
    extra = {
        "kind": SEARCH_KIND,
        "space": run.space.name,
        "config": to_dict(run.cfg),
        "state": run.state.__dict__,
        "noise": run.noise.state(),
        "arch": dict(values),
        "adam": stage.adam.state(),
        "keep": net.keep,
        "searched": net.searched,
    }
    save_checkpoint(run.path(SEARCH_STATE_FILE), params, extra)
    run.saved_step = run.state.global_step


def check_finite_state(run, params: dict, values: dict, stage: str) -> None:
    """Never overwrite the last good state with a diverged one."""
    bad = nonfinite(params) + nonfinite(values)
    if bad:
        raise HourNASError(
            f"non-finite values in {len(bad)} tensors (e.g. '{bad[0]}') at {run.state.stage} "
            f"global step {run.state.global_step}; not saved: the last good state stays in "
            f"{run.path(SEARCH_STATE_FILE)}; " + lower_lr_command(
                run.cfg, run.out, (run.cfg.search.arch_lr_key(stage),) if all(
                    n in values for n in bad) else ("search.w_lr",)))


def load_state(run) -> tuple[dict, dict] | None:
    """The checkpoint in ``run``'s folder (params, extra), checked; None if there is none."""
    path = run.path(SEARCH_STATE_FILE)
    if not os.path.exists(path):
        return None
    params, extra = load_checkpoint(path)
    if extra.get("kind") != SEARCH_KIND:
        raise HourNASError(f"'{path}' is not a search checkpoint")
    if extra.get("space") != run.space.name:
        raise HourNASError(f"checkpoint '{path}' is from space '{extra.get('space')}', this "
                           f"run searches '{run.space.name}'; use another --output_dir")
    for key in ("state", "noise", "arch", "adam"):
        if not isinstance(extra.get(key), dict):
            raise CheckpointError(f"search checkpoint '{path}' lacks its '{key}' record "
                                  f"(damaged or from another version); start a new search "
                                  f"in another --output_dir")
    stored = extra.get("config")
    if isinstance(stored, dict):
        # a resumed run computes what the checkpoint's did: only RESUME_MAY_CHANGE may differ
        now = to_dict(run.cfg)
        check_resume_config(stored, now, RESUME_MAY_CHANGE, advice=(
            f"resume with the run's settings ({run.path('config.yaml')}) or start a new search "
            f"in another --output_dir"))
        changed = config_changes(stored, now, keys=RESUME_LR_KEYS)
        if changed:
            log(f"learning rate changed on resume: {describe_changes(changed)}; the search "
                f"continues from the saved state with the new values")
    return params, extra


def restore_state(run, stage, saved: tuple[dict, dict]) -> None:
    """Load a saved state into ``stage`` after checking every name and shape against it."""
    import mindspore as ms
    params, extra = saved
    where = f"search checkpoint '{run.path(SEARCH_STATE_FILE)}'"
    own = {p.name: p for p in stage.net.get_parameters()}
    own.update({m.name: m for m in stage.sgd.moments.values()})
    values = stage.arch.values()
    adam_state = extra["adam"]
    try:
        check_fit(where, {n: tuple(p.shape) for n, p in params.items()},
                  {n: tuple(p.shape) for n, p in own.items()})
        saved_arch = {k: np.asarray(v) for k, v in extra["arch"].items()}
        check_fit(f"{where} (architecture parameters)",
                  {k: v.shape for k, v in saved_arch.items()},
                  {k: v.shape for k, v in values.items()})
        for part in ("m", "v"):
            check_fit(f"{where} (architecture optimizer '{part}')",
                      {k: np.shape(v) for k, v in adam_state[part].items()},
                      {k: v.shape for k, v in values.items()})
    except CheckpointError as e:
        raise CheckpointError(f"{e}{_HINT}") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{where} has a malformed architecture optimizer state "
                              f"({type(e).__name__}: {e}){_HINT}") from None
    for name, p in own.items():
        p.set_data(ms.Tensor(params[name].asnumpy()))
    stage.arch.assign(saved_arch)
    stage.adam.set_state(adam_state)
    run.noise.set_state(extra["noise"])


def saved_proposals(run, saved: tuple[dict, dict], layers: list[int]) -> np.ndarray:
    """Stage 2's proposals Θ as the checkpoint holds them (a resumed stage 2 does not solve
    them again)."""
    theta = np.asarray(saved[1]["arch"].get("theta"))
    want = (len(layers), max(len(run.space.layers[i].ops) for i in layers))
    if theta.ndim != 3 or theta.shape[1:] != want:
        raise CheckpointError(
            f"search checkpoint '{run.path(SEARCH_STATE_FILE)}' holds proposals θ of shape "
            f"{theta.shape}, this search needs (m, {want[0]}, {want[1]}); the space or "
            f"the config changed since it was written: resume with the same ones, or "
            f"start a new search in another --output_dir")
    return theta
