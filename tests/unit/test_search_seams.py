"""The seams of the search wing (src/search/), in process and fast: the run state
(``SearchState``) and its checkpoint record, the resumable batch streams of the loop, the hooks
around it, and the whole-state checkpoint (save / load / restore) on a tiny real supernet.

The end-to-end resume tests (tests/e2e) prove the same properties through the CLI, slowly;
these pin each seam on its own. Expectations come from first principles (the host-decided
sample order, the rules the code documents) or from an uninterrupted reference computed here.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from types import SimpleNamespace

import numpy as np
import pytest

from src.checkpoint import load_checkpoint, save_checkpoint
from src.config import load_config
from src.data import DataConfig, sample_order, search_split
from src.data.digits import digits_arrays
from src.errors import CheckpointError, ConfigError, HourNASError, Stopped
from src.rundir import SEARCH_KIND, SEARCH_STATE_FILE
from src.runlog import JsonLog, StopSignals
from src.sampler import GumbelNoise
from src.search.config import SearchConfig, SearchParams
from src.search.hooks import (STAGE_ACCURACY_STEPS, StepLogger, check_finite_losses,
                              diverged_rate, every_n_steps_checkpoint, stop_on_signal)
from src.search.loop import Iteration, Stage, arch_batches, weight_batches
from src.search.state import (SearchState, check_finite_state, load_state, restore_state,
                              save_state)
from src.search.step import ArchParams, HostAdam, PathSample, SparseSGD, StepResult

TINY_SEARCH = "tests/fixtures/tiny_search.yaml"

# ============================================================================ SearchState


def test_state_starts_at_the_first_step_of_the_vital_stage():
    st = SearchState()
    assert st.stage == "vital"
    assert (st.epoch, st.step, st.global_step, st.stage_step, st.val_epoch, st.val_pos) == (0,) * 6
    for name in ("vital_choices", "vital_report", "proposals_report", "stage_seconds",
                 "stage_accuracy"):
        assert getattr(st, name) == {}
    # default_factory: two states never share a report dict
    other = SearchState()
    st.stage_seconds["vital"] = 1.0
    assert other.stage_seconds == {}


def test_advance_counts_one_iteration_in_every_step_counter_and_nothing_else():
    st = SearchState(stage="nonvital", epoch=2, step=3, global_step=40, stage_step=7,
                     val_epoch=5, val_pos=6)
    for _ in range(4):
        st.advance()
    assert (st.step, st.global_step, st.stage_step) == (3 + 4, 40 + 4, 7 + 4)
    # the epochs and the architecture stream's position belong to the streams, not to advance()
    assert (st.stage, st.epoch, st.val_epoch, st.val_pos) == ("nonvital", 2, 5, 6)


def test_begin_stage_and_enter_nonvital_reset_the_positions_but_keep_tau_and_reports():
    st = SearchState(epoch=1, step=2, global_step=30, stage_step=12, val_epoch=3, val_pos=4,
                     vital_report={"method": "argmax"}, stage_seconds={"vital": 5.0})
    st.enter_nonvital({6: 2, 3: 1})
    assert st.stage == "nonvital"
    assert (st.epoch, st.step, st.stage_step, st.val_epoch, st.val_pos) == (0,) * 5
    assert st.global_step == 30  # τ keeps decaying across stages
    assert st.vital_report == {"method": "argmax"} and st.stage_seconds == {"vital": 5.0}
    # JSON has string keys only: stored as strings, handed back as ints
    assert st.vital_choices == {"6": 2, "3": 1}
    assert st.vital_ops() == {6: 2, 3: 1}


def _busy_state() -> SearchState:
    """A state with every field away from its default (nested values included)."""
    st = SearchState()
    for _ in range(5):
        st.advance()
    st.enter_nonvital({3: 1, 6: 0})
    for _ in range(3):
        st.advance()
    st.epoch, st.val_epoch, st.val_pos = 1, 2, 1
    st.vital_report = {"layers": ["L4", "L7"], "ops": ["k3_e3", "k3_e1"],
                       "probabilities": [[0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]],
                       "method": "argmax"}
    st.proposals_report = {"solve_seconds": 0.123456789, "m": 4}
    st.stage_seconds = {"vital": 1.0 / 3.0, "nonvital": 2.5e-7}
    st.stage_accuracy = {"vital": {"steps": 4, "a_acc": 0.375, "w_acc": 0.1 + 0.2}}
    return st


def test_state_round_trips_through_a_checkpoints_extra_record(tmp_path):
    st = _busy_state()
    # the checkpoint's keys are the dataclass's field names (the docstring's promise)
    assert set(st.__dict__) == {f.name for f in dataclasses.fields(SearchState)}
    path = str(tmp_path / "state.ckpt")
    save_checkpoint(path, {"w": np.zeros(2, np.float32)}, {"state": st.__dict__})
    _, extra = load_checkpoint(path)
    back = SearchState.from_checkpoint(extra["state"], path)
    assert back == st
    assert back.vital_ops() == {3: 1, 6: 0}
    assert back.stage_seconds["vital"] == 1.0 / 3.0  # floats survive JSON to the bit
    back.advance()  # a live object, not a view of the record
    assert back.global_step == st.global_step + 1
    assert extra["state"]["global_step"] == st.global_step


def test_from_checkpoint_refuses_a_record_with_an_unknown_key():
    record = {**SearchState().__dict__, "lr_scale": 0.5}
    with pytest.raises(CheckpointError, match=r"'/x/search_state\.ckpt' has a malformed run state"
                                              r".*lr_scale.*another --output_dir"):
        SearchState.from_checkpoint(record, "/x/search_state.ckpt")


def test_from_checkpoint_refuses_a_record_that_is_not_a_mapping():
    with pytest.raises(CheckpointError, match="malformed run state"):
        SearchState.from_checkpoint(["vital", 0, 0], "/x/search_state.ckpt")


@pytest.mark.parametrize("key, value, says", [
    ("stage", "stage3", "stage 'stage3' is none of vital, nonvital, done"),
    ("global_step", "12", "global_step must be a whole number >= 0, got '12'"),
    ("epoch", 1.5, "epoch must be a whole number >= 0, got 1.5"),
    ("step", -1, "step must be a whole number >= 0, got -1"),
    ("val_pos", True, "val_pos must be a whole number >= 0, got True"),
    ("vital_choices", [1, 2], "vital_choices must be a mapping, got list"),
])
def test_from_checkpoint_refuses_a_value_of_the_wrong_type(key, value, says):
    record = {**_busy_state().__dict__, key: value}
    with pytest.raises(CheckpointError) as e:
        SearchState.from_checkpoint(record, "/x/search_state.ckpt")
    assert "'/x/search_state.ckpt' has a malformed run state (" + says + ")" in str(e.value)
    SearchState.from_checkpoint(_busy_state().__dict__, "p")  # the unchanged record loads


def test_from_checkpoint_fills_fields_an_older_record_lacks_with_their_defaults():
    record = dict(_busy_state().__dict__)
    del record["stage_accuracy"], record["proposals_report"]
    back = SearchState.from_checkpoint(record, "p")
    assert back.stage_accuracy == {} and back.proposals_report == {}
    assert back.global_step == record["global_step"] and back.stage == record["stage"]


# ============================================================================ batch streams

DATA = DataConfig(name="digits", image_size=16, augment=False)
BATCH = 8
N_W, N_A = 44, 27            # weight / architecture samples: 5 and 3 whole batches of 8
W_STEPS = N_W // BATCH       # 5
A_BATCHES = N_A // BATCH     # 3
SEED = 3


def _indices():
    w, a = search_split(DATA, 0.2, SEED)
    return w[:N_W], a[:N_A]


def _stream_run(state=None, *, steps=W_STEPS, shard=None, rank_batch=BATCH):
    """What weight_batches / arch_batches read of a SearchRun, and nothing more."""
    w_idx, a_idx = _indices()
    return SimpleNamespace(state=state or SearchState(),
                           p=SearchParams(batch_size=BATCH, seed=SEED),
                           cfg=SimpleNamespace(data=DATA), rank_batch=rank_batch, w_idx=w_idx,
                           a_idx=a_idx, shard=shard, steps_per_epoch=lambda: steps)


def _take_weights(run, epochs):
    """Drain the weight stream as the loop does (advance after each batch); the batches and
    the (epoch, step) a checkpoint written after each iteration would hold (index k: after k)."""
    batches, positions = [], [(run.state.epoch, run.state.step)]
    for x, y in weight_batches(run, epochs):
        batches.append((x.asnumpy(), y.asnumpy()))
        run.state.advance()
        positions.append((run.state.epoch, run.state.step))
    return batches, positions


def _take_arch(run, n):
    gen = arch_batches(run)
    batches, positions = [], [(run.state.val_epoch, run.state.val_pos)]
    for _ in range(n):
        x, y = next(gen)
        batches.append((x.asnumpy(), y.asnumpy()))
        positions.append((run.state.val_epoch, run.state.val_pos))
    return batches, positions


def _expected(indices, seed, epoch, k, batch=BATCH, shard=None):
    """Batch k of an epoch from first principles: the split's images at the host order."""
    order = sample_order(indices, shuffle=True, seed=seed, epoch=epoch, shard=shard)
    pick = order[k * batch:(k + 1) * batch]
    x, y = digits_arrays(DATA.size, "train")
    return x[pick], y[pick]


def _same(a, b) -> bool:
    return np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("steps", [W_STEPS, 3])  # 3: steps_per_epoch caps the epoch
def test_weight_stream_serves_the_seeded_order_epoch_by_epoch(steps):
    run = _stream_run(steps=steps)
    batches, _ = _take_weights(run, epochs=2)
    assert len(batches) == 2 * steps
    w_idx, _ = _indices()
    for i, got in enumerate(batches):
        epoch, k = divmod(i, steps)  # a capped epoch restarts at batch 0 of the next order
        want = _expected(w_idx, SEED, epoch, k)
        assert got[0].shape == (BATCH, 3, DATA.size, DATA.size) and got[0].dtype == np.float32
        assert _same(got, want), f"batch {i} (epoch {epoch}, step {k})"
    assert not _same(batches[0], batches[steps])  # each epoch has its own permutation
    assert (run.state.epoch, run.state.step) == (2, 0)


def test_weight_stream_resumed_at_every_saved_position_continues_the_uninterrupted_one():
    epochs = 2
    ref, positions = _take_weights(_stream_run(), epochs)
    assert len(positions) == len(ref) + 1
    assert positions[W_STEPS] == (0, W_STEPS)  # saved at an epoch's end: step == steps
    for k, (epoch, step) in enumerate(positions):
        got, _ = _take_weights(_stream_run(SearchState(epoch=epoch, step=step)), epochs)
        assert len(got) == len(ref) - k, f"resumed after iteration {k} at {(epoch, step)}"
        for j, (a, b) in enumerate(zip(got, ref[k:])):
            assert _same(a, b), f"resumed after iteration {k}: batch {j} differs"


def test_arch_stream_serves_the_seeded_order_of_its_own_split_endlessly():
    n = 3 * A_BATCHES + 1
    batches, positions = _take_arch(_stream_run(), n)
    _, a_idx = _indices()
    for i, got in enumerate(batches):
        epoch, k = divmod(i, A_BATCHES)
        assert _same(got, _expected(a_idx, SEED + 1, epoch, k)), f"batch {i}"
    # the position counts the batches served in the current epoch of the split
    assert positions[1] == (0, 1) and positions[A_BATCHES + 1] == (1, 1)
    assert positions[-1] == (3, 1)


def test_arch_stream_resumed_mid_epoch_continues_the_uninterrupted_one():
    n = 3 * A_BATCHES
    ref, positions = _take_arch(_stream_run(), n)
    mid_epoch = [k for k, (_, pos) in enumerate(positions[:-1]) if pos < A_BATCHES]
    assert len(mid_epoch) >= 2 * A_BATCHES
    for k in mid_epoch:
        val_epoch, val_pos = positions[k]
        got, _ = _take_arch(_stream_run(SearchState(val_epoch=val_epoch, val_pos=val_pos)), n - k)
        for j, (a, b) in enumerate(zip(got, ref[k:])):
            assert _same(a, b), f"resumed after {k} batches at {(val_epoch, val_pos)}: batch {j}"


def test_arch_stream_resumed_right_after_an_epochs_last_batch_continues():
    """A state saved right after an epoch's last architecture batch (val_pos == batches per
    epoch, val_epoch not yet advanced) resumes into the next epoch (was: start_batch refused)."""
    n = 2 * A_BATCHES + 1
    ref, positions = _take_arch(_stream_run(), n)
    k = A_BATCHES
    assert positions[k] == (0, A_BATCHES)  # what a checkpoint after this iteration holds
    got, _ = _take_arch(_stream_run(SearchState(val_epoch=0, val_pos=A_BATCHES)), n - k)
    for a, b in zip(got, ref[k:]):
        assert _same(a, b)


def test_data_parallel_shards_split_each_global_batch_between_the_ranks():
    """Shard (r, 2) with a per-rank batch of B/2: the ranks' k-th batches interleave into the
    single process's k-th batch (strided shards), for both streams."""
    half = BATCH // 2
    full_w, _ = _take_weights(_stream_run(), 1)
    full_a, _ = _take_arch(_stream_run(), A_BATCHES)
    for rank in (0, 1):
        w, _ = _take_weights(_stream_run(shard=(rank, 2), rank_batch=half), 1)
        a, _ = _take_arch(_stream_run(shard=(rank, 2), rank_batch=half), A_BATCHES)
        assert len(w) == len(full_w)
        for mine, whole in list(zip(w, full_w)) + list(zip(a, full_a)):
            assert _same(mine, (whole[0][rank::2], whole[1][rank::2]))


# ============================================================================ hooks


class _Param:
    def __init__(self, name, value):
        self.name, self.value = name, np.asarray(value, np.float32)

    def asnumpy(self):
        return self.value


def _fake_stage(weights_finite=True, arch_finite=True, name="nonvital"):
    w = np.ones((2, 3), np.float32)
    if not weights_finite:
        w[1, 2] = np.nan
    theta = np.zeros((3, 4))
    if not arch_finite:
        theta[0, 0] = np.inf
    params = [_Param("stem.conv.weight", np.ones(4)), _Param("layers.0.w", w)]
    net = SimpleNamespace(get_parameters=lambda: iter(params))
    arch = SimpleNamespace(values=lambda: {"theta": theta, "pi": np.zeros(2)})
    return SimpleNamespace(name=name, net=net, arch=arch)


W_LR, ARCH_LR = 0.3, 0.02


def _hook_run(tmp_path, state=None):
    return SimpleNamespace(state=state or SearchState(), cfg=SearchConfig(
        search=SearchParams(w_lr=W_LR, arch_lr=ARCH_LR)), out=str(tmp_path), saved_step=17,
        path=lambda n: os.path.join(str(tmp_path), n))


def _lowered(key):
    value = {"search.w_lr": W_LR, "search.arch_lr": ARCH_LR}[key]
    return f"--set {key}={value / 10:g}"


def test_finite_losses_pass_whatever_the_parameters_hold(tmp_path):
    # the guard looks at the losses; the parameters are only read to blame a rate
    assert check_finite_losses(_hook_run(tmp_path), _fake_stage(False, False), 2.3, 0.7) is None


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("w_loss, a_loss, weights_finite, arch_finite, rate", [
    (NAN, 1.0, True, True, "search.w_lr"),      # the weight step diverged
    (INF, NAN, True, False, "search.w_lr"),     # ... even with θ non-finite too
    (1.0, NAN, True, False, "search.arch_lr"),  # weights fine, θ not: the architecture rate
    (1.0, INF, False, False, "search.w_lr"),    # both non-finite: the weights went first
    (1.0, NAN, False, True, "search.w_lr"),     # the weight step broke the weights
    (1.0, -INF, True, True, "search.w_lr"),     # all finite: the arch loss used the new weights
])
def test_a_non_finite_loss_stops_the_run_and_names_the_rate_to_lower(
        tmp_path, w_loss, a_loss, weights_finite, arch_finite, rate):
    stage = _fake_stage(weights_finite, arch_finite)
    assert diverged_rate(stage, w_loss) == rate
    st = SearchState(stage="nonvital", epoch=1, step=4, global_step=23)
    other = "search.arch_lr" if rate == "search.w_lr" else "search.w_lr"
    with pytest.raises(HourNASError) as e:
        check_finite_losses(_hook_run(tmp_path, st), stage, w_loss, a_loss)
    msg = str(e.value)
    # the iteration that failed is the one after the state's position (1-based for people)
    assert "at nonvital epoch 2 step 5 (global step 24" in msg
    assert os.path.join(str(tmp_path), SEARCH_STATE_FILE) in msg and "global step 17" in msg
    assert _lowered(rate) in msg and other not in msg
    assert msg.count("--set ") == 1


def _logger_run(tmp_path, steps, log_every):
    return SimpleNamespace(state=SearchState(),
                           p=SearchParams(batch_size=BATCH, log_every=log_every),
                           log=JsonLog(str(tmp_path / "search_log.jsonl")), rank_log=None,
                           is_main=True, group_size=1, rank_batch=BATCH,
                           steps_per_epoch=lambda: steps,
                           space=SimpleNamespace(num_classes=10))


def _iteration(stage_name, k, w_acc, a_acc):
    path = PathSample(None, None, 1.0, None, [k % 4, (k + 1) % 4, 0])
    return Iteration(stage_name, tau=5.0 * 0.99 ** k, lr=0.1 / (k + 1), w_path=path,
                     w=StepResult(2.0 - 0.01 * k, w_acc), a_path=path,
                     a=StepResult(1.5, a_acc, ce=1.5, reg=0.0, grads={}), seconds=0.01)


def test_step_logger_writes_one_record_per_iteration_and_the_stage_accuracy(tmp_path, capsys):
    steps, log_every, num_ops = 25, 10, 4
    assert steps > STAGE_ACCURACY_STEPS  # the learned figure is over the last steps only
    run = _logger_run(tmp_path, steps, log_every)
    net = SimpleNamespace(searched=[3, 6, 7])
    stage = SimpleNamespace(name="vital", epochs=1, warmup=0, net=net, table=None,
                            arch=ArchParams(3, num_ops), executor=SimpleNamespace(name="eager"),
                            adam=SimpleNamespace(lr=0.03))
    run.log.reset()
    logger = StepLogger(run, stage)
    logger.start()
    rng = np.random.default_rng(0)
    w_accs, a_accs = rng.integers(0, 9, steps) / 8, rng.integers(0, 9, steps) / 8
    seconds = []
    for k in range(steps):
        run.state.advance()
        it = _iteration("vital", k, float(w_accs[k]), float(a_accs[k]))
        logger(it)
        seconds.append(run.state.stage_seconds["vital"])
    logger.end()
    out = capsys.readouterr().out
    assert "θ's lr 0.03, executor eager" in out  # the start line
    recs = [json.loads(line) for line in open(run.log.path, encoding="utf-8")]
    assert [r["global_step"] for r in recs] == list(range(1, steps + 1))
    assert [r["step"] for r in recs] == list(range(1, steps + 1))
    assert all(r["stage"] == "vital" and r["epoch"] == 0 for r in recs)
    assert [r["w_acc"] for r in recs] == w_accs.tolist()
    assert recs[3]["path"] == [3, 0, 0] and recs[3]["lr"] == 0.1 / 4
    # θ = 0: every op equally likely, the entropy is ln(num_ops)
    assert all(math.isclose(r["entropy"], math.log(num_ops), rel_tol=1e-9) for r in recs)
    # the stage's seconds grow step by step (a checkpoint holds the time so far)
    assert all(b >= a for a, b in zip(seconds, seconds[1:])) and seconds[-1] > 0
    # console: one line every log_every steps, and one at the stage's last step
    want = sorted({s for s in range(1, steps + 1) if s % log_every == 0} | {steps})
    lines = [ln for ln in out.splitlines() if ln.startswith("[vital] epoch")]
    assert [int(ln.split(" step ")[1].split("/")[0]) for ln in lines] == want
    assert "3 searched layers" in out
    acc = run.state.stage_accuracy["vital"]
    assert acc["steps"] == STAGE_ACCURACY_STEPS
    assert math.isclose(acc["a_acc"], float(np.mean(a_accs[-STAGE_ACCURACY_STEPS:])))
    assert math.isclose(acc["w_acc"], float(np.mean(w_accs[-STAGE_ACCURACY_STEPS:])))


# ============================================================================ the checkpoint


@pytest.fixture(scope="module")
def tiny():
    """The tiny search's config and space (tests/fixtures/tiny_search.yaml)."""
    from src.space.space import load_space
    cfg = load_config(SearchConfig, TINY_SEARCH)
    return cfg, load_space(cfg.space)


def _build_stage(space, proposals=None, seed=0):
    """Stage 1's parts on the tiny space (S_vital: the vital layers), every value randomised
    from ``seed`` so that two stages differ everywhere."""
    import mindspore as ms
    from src.supernet import Supernet

    vital = space.vital_layers()
    keep = [i for i in range(len(space.layers))
            if i in vital or not space.layers[i].searchable and space.vital[i]]
    net = Supernet(space, vital, {}, keep)
    num_ops = len(space.layers[vital[0]].ops)
    arch = ArchParams(len(net.searched), num_ops, proposals)
    sgd = SparseSGD(list(net.trainable_params()), 0.9, 4e-5)
    adam = HostAdam({k: v.shape for k, v in arch.values().items()}, 0.01)
    rng = np.random.default_rng(seed)
    for p in list(net.get_parameters()) + list(sgd.moments.values()):
        p.set_data(ms.Tensor(rng.standard_normal(p.shape).astype(np.float32)))
    values = {k: rng.standard_normal(v.shape) for k, v in arch.values().items()}
    arch.assign(values)
    for _ in range(2):
        adam.step(arch.values(), {k: rng.standard_normal(v.shape) for k, v in values.items()})
    return Stage("vital", net, arch, sgd, adam, None, None, 1)


def _ckpt_run(tmp_path, cfg, space, state=None, noise_seed=0):
    out = str(tmp_path)
    return SimpleNamespace(is_main=True, space=space, cfg=cfg, p=cfg.search,
                           state=state or SearchState(), noise=GumbelNoise(noise_seed), out=out,
                           path=lambda n: os.path.join(out, n), saved_step=None, group_size=1,
                           signals=StopSignals())


def _weights(stage):
    out = {p.name: p.asnumpy().copy() for p in stage.net.get_parameters()}
    out.update({m.name: m.asnumpy().copy() for m in stage.sgd.moments.values()})
    return out


@pytest.mark.parametrize("with_proposals", [False, True])
def test_save_load_restore_brings_back_every_bit_of_the_stage(tiny, tmp_path, with_proposals):
    cfg, space = tiny
    props = (np.random.default_rng(9).standard_normal((3, 2, 4)) if with_proposals else None)
    a = _build_stage(space, props, seed=1)
    run_a = _ckpt_run(tmp_path, cfg, space, _busy_state())
    run_a.noise.sample((5, 4))  # the host generator is mid-stream
    save_state(run_a, a)
    assert run_a.saved_step == run_a.state.global_step

    b = _build_stage(space, props, seed=2)
    run_b = _ckpt_run(tmp_path, cfg, space)
    before, want = _weights(b), _weights(a)
    assert set(before) == set(want)
    assert all(not np.array_equal(before[n], want[n]) for n in want)  # differ before restoring

    saved = load_state(run_b)
    assert saved is not None
    extra = saved[1]
    assert extra["kind"] == SEARCH_KIND and extra["space"] == space.name
    assert extra["keep"] == a.net.keep and extra["searched"] == a.net.searched
    restore_state(run_b, b, saved)
    got = _weights(b)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    va, vb = a.arch.values(), b.arch.values()
    assert set(va) == ({"theta", "pi"} if with_proposals else {"theta"})
    assert all(np.array_equal(va[k], vb[k]) for k in va)
    sa, sb = a.adam.state(), b.adam.state()
    assert sa["t"] == sb["t"] == 2
    assert all(np.array_equal(sa[part][k], sb[part][k]) for part in ("m", "v") for k in va)
    assert np.array_equal(run_a.noise.sample((7, 4)), run_b.noise.sample((7, 4)))
    assert SearchState.from_checkpoint(extra["state"], "p") == run_a.state


def test_load_state_finds_nothing_in_an_empty_folder(tiny, tmp_path):
    cfg, space = tiny
    assert load_state(_ckpt_run(tmp_path, cfg, space)) is None


@pytest.fixture
def saved_run(tiny, tmp_path):
    cfg, space = tiny
    stage = _build_stage(space, seed=1)
    run = _ckpt_run(tmp_path, cfg, space, _busy_state())
    save_state(run, stage)
    return run, stage


def test_load_state_refuses_a_checkpoint_of_another_space(saved_run):
    run, _ = saved_run
    other = SimpleNamespace(**{**run.__dict__, "space": SimpleNamespace(name="fbnet_cifar10")})
    with pytest.raises(HourNASError, match=r"from space 'tiny', this run searches 'fbnet_cifar10'"):
        load_state(other)


def test_load_state_refuses_a_changed_setting_that_changes_the_computation(saved_run):
    run, _ = saved_run
    cfg = dataclasses.replace(run.cfg, search=dataclasses.replace(run.cfg.search, batch_size=16))
    with pytest.raises(ConfigError, match=r"search\.batch_size: checkpoint 8, now 16"):
        load_state(SimpleNamespace(**{**run.__dict__, "cfg": cfg}))


def test_load_state_accepts_a_lower_learning_rate_and_says_so(saved_run, capsys):
    run, _ = saved_run
    w_lr = run.cfg.search.w_lr / 10
    cfg = dataclasses.replace(run.cfg, search=dataclasses.replace(run.cfg.search, w_lr=w_lr))
    params, extra = load_state(SimpleNamespace(**{**run.__dict__, "cfg": cfg}))
    assert extra["state"]["global_step"] == run.state.global_step and params
    out = capsys.readouterr().out
    assert "learning rate changed on resume" in out
    assert f"search.w_lr {run.cfg.search.w_lr!r} -> {w_lr!r}" in out


@pytest.mark.parametrize("damage, error, pattern", [
    ({"kind": "hournas-train"}, HourNASError, "is not a search checkpoint"),
    ({"adam": None}, CheckpointError, "lacks its 'adam' record"),
    ({"noise": [1, 2]}, CheckpointError, "lacks its 'noise' record"),
])
def test_load_state_refuses_a_damaged_or_foreign_checkpoint(saved_run, damage, error, pattern):
    run, _ = saved_run
    path = run.path(SEARCH_STATE_FILE)
    params, extra = load_checkpoint(path)
    extra.update(damage)
    save_checkpoint(path, {n: p.asnumpy() for n, p in params.items()},
                    {k: v for k, v in extra.items() if v is not None})
    with pytest.raises(error, match=pattern):
        load_state(run)


def test_restore_state_checks_everything_before_it_changes_anything(tiny, saved_run):
    run, _ = saved_run
    _, space = tiny
    saved = load_state(run)
    fresh = _build_stage(space, seed=5)
    before = _weights(fresh)
    wide = dataclasses.replace(fresh, arch=ArchParams(2, 3))  # θ of another shape
    with pytest.raises(CheckpointError,
                       match=r"architecture parameters.*theta.*space or the config"):
        restore_state(run, wide, saved)
    bad_adam = (saved[0], {**saved[1], "adam": {"t": 3}})  # no moments
    with pytest.raises(CheckpointError, match="malformed architecture optimizer state"):
        restore_state(run, fresh, bad_adam)
    after = _weights(fresh)
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_save_state_writes_nothing_on_ranks_other_than_0(tiny, tmp_path):
    cfg, space = tiny
    run = _ckpt_run(tmp_path, cfg, space)
    run.is_main = False
    save_state(run, _build_stage(space))
    assert not os.path.exists(run.path(SEARCH_STATE_FILE)) and run.saved_step is None


def test_a_diverged_state_is_never_saved_over_the_last_good_one(saved_run):
    run, stage = saved_run
    path = run.path(SEARCH_STATE_FILE)
    with open(path, "rb") as f:
        good = f.read()
    saved_step = run.saved_step
    param = next(p for p in stage.net.get_parameters() if p.name.startswith("layers."))
    value = param.asnumpy().copy()
    value.flat[0] = np.nan
    import mindspore as ms
    param.set_data(ms.Tensor(value))
    run.state.advance()
    with pytest.raises(HourNASError) as e:
        save_state(run, stage)
    msg = str(e.value)
    assert f"'{param.name}'" in msg and f"global step {run.state.global_step}" in msg
    assert _lowered_for(run, "search.w_lr") in msg and "search.arch_lr" not in msg
    with open(path, "rb") as f:
        assert f.read() == good
    assert run.saved_step == saved_step


def _lowered_for(run, key):
    return f"--set {key}={getattr(run.cfg.search, key.split('.', 1)[1]) / 10:g}"


@pytest.mark.parametrize("bad_in, rate", [
    ("theta", "search.arch_lr"),                  # only θ: the architecture rate
    ("pi", "search.arch_lr"),
    ("moment.stem.conv.weight", "search.w_lr"),   # an SGD momentum: the weights' rate
    ("stem.conv.weight", "search.w_lr"),
])
def test_check_finite_state_names_the_rate_of_what_diverged(tiny, tmp_path, bad_in, rate):
    cfg, space = tiny
    run = _ckpt_run(tmp_path, cfg, space, SearchState(stage="nonvital", global_step=9))
    params = {"stem.conv.weight": np.ones((2, 2)), "moment.stem.conv.weight": np.zeros((2, 2))}
    values = {"theta": np.zeros((3, 4)), "pi": np.zeros(2)}
    check_finite_state(run, params, values, "nonvital")  # all finite: nothing to say
    where = values if bad_in in values else params
    where[bad_in] = where[bad_in].copy()
    where[bad_in].flat[-1] = np.nan
    with pytest.raises(HourNASError) as e:
        check_finite_state(run, params, values, "nonvital")
    msg = str(e.value)
    other = "search.w_lr" if rate == "search.arch_lr" else "search.arch_lr"
    assert f"'{bad_in}'" in msg and "at nonvital global step 9" in msg
    assert _lowered_for(run, rate) in msg and other not in msg


def test_every_n_steps_checkpoint_saves_on_the_stages_step_count(saved_run):
    run, stage = saved_run
    os.remove(run.path(SEARCH_STATE_FILE))
    run.saved_step = None
    run.state = SearchState(stage="nonvital", global_step=4)  # stage 2 after 4 steps of stage 1
    every = 3
    run.p = dataclasses.replace(run.p, ckpt_every=every)
    hook = every_n_steps_checkpoint(run, stage)
    seen, last = [], None
    for _ in range(7):
        run.state.advance()
        hook(None)
        if run.state.stage_step % every == 0:  # the rule: the stage's own step count
            last = run.state.global_step
        seen.append((run.saved_step, last))
    assert all(got == want for got, want in seen) and last == 4 + 6
    _, extra = load_checkpoint(run.path(SEARCH_STATE_FILE))
    assert extra["state"]["stage_step"] == 6 and extra["state"]["global_step"] == 10


def test_stop_on_signal_saves_then_raises_stopped(saved_run):
    run, stage = saved_run
    os.remove(run.path(SEARCH_STATE_FILE))
    hook = stop_on_signal(run, stage)
    run.state.advance()
    assert hook(None) is None  # no signal: nothing happens
    assert not os.path.exists(run.path(SEARCH_STATE_FILE))
    run.signals.signum = signal.SIGTERM
    run.state.advance()
    with pytest.raises(Stopped) as e:
        hook(None)
    assert e.value.signum == signal.SIGTERM
    assert "SIGTERM" in str(e.value) and f"global step {run.state.global_step}" in str(e.value)
    _, extra = load_checkpoint(run.path(SEARCH_STATE_FILE))
    assert SearchState.from_checkpoint(extra["state"], "p") == run.state


# ----------------------------------------------------------------------------- θ's lr per stage


@pytest.mark.parametrize("nvital_lr, want", [(None, (0.02, 0.02, 0.02)),
                                             (0.005, (0.02, 0.005, 0.02))])
def test_stage_2_takes_its_own_arch_lr_when_one_is_set(tiny, nvital_lr, want):
    from src.search.engine import build_stage
    cfg, space = tiny
    p = dataclasses.replace(cfg.search, arch_lr=0.02, arch_lr_nvital=nvital_lr)
    run = SimpleNamespace(p=p, space=space, executor_name="eager", grad_mean=None)
    layers = space.vital_layers()
    got = tuple(build_stage(run, name, layers, {}, None, None, None, 1).adam.lr
                for name in ("vital", "nonvital", "single"))
    assert got == want


def test_arch_lr_nvital_must_be_positive():
    SearchParams(arch_lr_nvital=0.01).validate()
    with pytest.raises(HourNASError, match=r"search.arch_lr_nvital must be > 0 or null"):
        SearchParams(arch_lr_nvital=0.0).validate()


def test_a_diverged_stage_2_with_its_own_arch_lr_names_that_rate(tmp_path):
    stage = _fake_stage(True, False, name="nonvital")  # weights fine, Π / Θ not
    run = _hook_run(tmp_path, SearchState(stage="nonvital", global_step=5))
    run.cfg.search.arch_lr_nvital = 0.004
    with pytest.raises(HourNASError) as e:
        check_finite_losses(run, stage, 1.0, NAN)
    assert "--set search.arch_lr_nvital=0.0004" in str(e.value)
    vital = _fake_stage(True, False, name="vital")   # stage 1 keeps search.arch_lr
    with pytest.raises(HourNASError) as e:
        check_finite_losses(run, vital, 1.0, NAN)
    assert f"--set search.arch_lr={ARCH_LR / 10:g}" in str(e.value)
    assert "arch_lr_nvital" not in str(e.value)


@pytest.mark.parametrize("stage, rate", [("nonvital", "search.arch_lr_nvital"),
                                         ("vital", "search.arch_lr")])
def test_check_finite_state_names_the_rate_the_saved_stage_used(tiny, tmp_path, stage, rate):
    # the state may already say "done" at the last save: the stage saved decides the rate
    cfg, space = tiny
    cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, arch_lr_nvital=0.004))
    run = _ckpt_run(tmp_path, cfg, space, SearchState(stage="done", global_step=9))
    values = {"theta": np.full((3, 4), np.nan), "pi": np.zeros(2)}
    with pytest.raises(HourNASError) as e:
        check_finite_state(run, {"stem.conv.weight": np.ones(2)}, values, stage)
    assert _lowered_for(run, rate) in str(e.value)
    assert ("arch_lr_nvital" in str(e.value)) == (stage == "nonvital")


@pytest.mark.parametrize("warmup, ok", [(0, True), (2, True), (3, False), (-1, False)])
def test_warmup_nvital_leaves_stage_2_at_least_one_searching_epoch(warmup, ok):
    p = SearchParams(epochs_nvital=3, warmup_nvital=warmup)
    if ok:
        p.validate()
        return
    with pytest.raises(HourNASError, match=r"search.warmup_nvital .* must be in \[0, "
                                           r"search.epochs_nvital - 1 = 2\], got " + str(warmup)):
        p.validate()


def test_arch_lr_nvital_without_the_vital_priori_is_refused():
    with pytest.raises(HourNASError, match=r"without the vital priori the one stage uses "
                                           r"search.arch_lr"):
        SearchParams(arch_lr_nvital=0.01, vital_priori=False, epochs_vital=0).validate()
