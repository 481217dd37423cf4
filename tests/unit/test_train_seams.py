"""The seams of the training wing (src/train/), in process and fast: ``CheckpointManager``
(keep-N, the best copy apart, the metadata, the non-finite guard, rank 0 only), listing a run's
checkpoints (``list_checkpoints`` / ``latest_checkpoint``), the progress reports
(``StateMonitor``, ``plot_log``) and corners of the learning-rate schedule (``lr_at``).

The end-to-end tests (tests/e2e/test_train_eval_export.py) prove the same through the CLI,
slowly; these pin each seam on its own with a real ``Run`` (``prepare_run`` on the tiny
fixtures: well under a second) or a small stand-in. Expectations come from the rules the code
documents (file names, what a checkpoint stores, which steps report), worked out by hand.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import struct
from types import SimpleNamespace

import numpy as np
import pytest

from src.checkpoint import load_checkpoint, read_checkpoint_extra, save_checkpoint
from src.config import load_config, to_dict
from src.errors import CheckpointError
from src.evaluate import by_name
from src.rundir import KIND_KEY, SEARCH_KIND, TRAIN_KIND, TRAIN_LOG_FILE
from src.runlog import JsonLog
from src.train.checkpoints import CheckpointManager, latest_checkpoint, list_checkpoints
from src.train.config import DivergedError, TrainConfig, TrainParams, check_resumable
from src.train.factory import lr_at
from src.train.monitor import StateMonitor, plot_log
from src.train.prepare import Position, prepare_run

TINY_TRAIN = "tests/fixtures/tiny_train.yaml"
TINY_ARCH = "tests/fixtures/tiny_arch.yaml"
MAIN = {"rank": 0, "group_size": 1, "device_target": "CPU"}


def make_run(folder, *overrides: str, facts: dict | None = None):
    """A real ``Run`` of the tiny architecture on digits at 16x16 (4 steps of 32 an epoch),
    writing into ``folder`` (fresh per test: prepare_run locks it for the process)."""
    cfg = load_config(TrainConfig, TINY_TRAIN,
                      [f"arch={TINY_ARCH}", f"output_dir={folder}", *overrides])
    lines: list[str] = []
    run = prepare_run(cfg, facts or MAIN, None, lines.append)
    run.lines = lines  # what it logged (Run is a plain dataclass)
    return run


def at(run, epoch: int, epoch_step: int, global_step: int) -> None:
    run.pos.epoch, run.pos.epoch_step, run.pos.global_step = epoch, epoch_step, global_step


def ckpts_on_disk(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".ckpt"))


def log_records(run, event: str | None = None) -> list[dict]:
    with open(run.runlog.path, encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    return [r for r in recs if event is None or r["event"] == event]


def set_param(run, name: str, value) -> np.ndarray:
    import mindspore as ms

    own = by_name(run.step_cell)[name]
    data = np.broadcast_to(np.asarray(value, np.float32), own.shape).copy()
    own.set_data(ms.Tensor(data))
    return data


# ============================================================================ CheckpointManager


def test_keeps_the_newest_n_periodic_checkpoints_and_the_best_copy_apart(tmp_path):
    out = tmp_path / "run"
    run = make_run(out, "train.ckpt_keep=2", "train.epochs=3")
    assert run.spe == 4
    ckpt = CheckpointManager(run)
    assert ckpt.kept == [] and ckpt.last is None

    at(run, 1, 2, 2)
    p12 = ckpt.save("interval")
    at(run, 1, 4, 4)
    p14 = ckpt.save("epoch")
    best = ckpt.save("best", best_copy=True)
    assert (os.path.basename(p12), os.path.basename(p14), os.path.basename(best)) == \
        ("tiny-1_2.ckpt", "tiny-1_4.ckpt", "tiny_best.ckpt")
    # two periodic ones and the best copy: the best copy does not count against keep=2
    assert ckpts_on_disk(out) == ["tiny-1_2.ckpt", "tiny-1_4.ckpt", "tiny_best.ckpt"]
    assert ckpt.kept == [p12, p14] and ckpt.last == p14

    at(run, 2, 2, 6)
    p22 = ckpt.save("interval")
    assert ckpts_on_disk(out) == ["tiny-1_4.ckpt", "tiny-2_2.ckpt", "tiny_best.ckpt"]
    at(run, 2, 4, 8)
    p24 = ckpt.save("interval")
    p24_again = ckpt.save("epoch")  # the same position written twice is kept once
    assert p24_again == p24
    assert ckpts_on_disk(out) == ["tiny-2_2.ckpt", "tiny-2_4.ckpt", "tiny_best.ckpt"]
    assert ckpt.kept == [p22, p24] and ckpt.last == p24
    assert read_checkpoint_extra(p24)["reason"] == "epoch"  # the later write replaced it

    # one log record per periodic write, none for the best copy
    assert [(r["ckpt"], r["reason"], r["global_step"]) for r in log_records(run, "checkpoint")] \
        == [("tiny-1_2.ckpt", "interval", 2), ("tiny-1_4.ckpt", "epoch", 4),
            ("tiny-2_2.ckpt", "interval", 6), ("tiny-2_4.ckpt", "interval", 8),
            ("tiny-2_4.ckpt", "epoch", 8)]

    # a manager built over the folder (a resumed run) finds them by their metadata, oldest
    # first, the best copy apart; train.ckpt_keep may shrink on resume: the next write prunes
    again = CheckpointManager(run)
    assert again.kept == [p22, p24] and again.last == p24
    run.cfg.train.ckpt_keep = 1
    at(run, 3, 2, 10)
    p32 = again.save("interval")
    assert ckpts_on_disk(out) == ["tiny-3_2.ckpt", "tiny_best.ckpt"]
    assert again.kept == [p32]


def test_a_checkpoint_holds_the_state_and_the_metadata_a_resume_needs(tmp_path):
    out = tmp_path / "run"
    run = make_run(out, "train.epochs=3")
    ckpt = CheckpointManager(run)
    own = by_name(run.step_cell)
    assert "learning_rate" in own  # an input set every step: never stored
    w = set_param(run, "stem.conv.weight",
                  np.random.default_rng(1).standard_normal(own["stem.conv.weight"].shape))
    mean = set_param(run, "stem.bn.moving_mean", 0.25)

    # the end of epoch 2 of 4 steps: global step 8
    ev = {"top1": 40.0, "top5": 90.0, "loss": 1.5, "images": 360, "epoch": 2, "global_step": 8}
    run.pos = Position(epoch=2, epoch_step=4, global_step=8, best_top1=40.0, best_epoch=2,
                       last_eval=ev)
    path = ckpt.save("epoch")
    best = ckpt.save("best", best_copy=True)

    params, extra = load_checkpoint(path)
    assert set(params) == set(own) - {"learning_rate"}
    assert np.array_equal(params["stem.conv.weight"].asnumpy(), w)
    assert np.array_equal(params["stem.bn.moving_mean"].asnumpy(), mean)
    assert extra[KIND_KEY] == TRAIN_KIND == "hournas-train"
    assert os.path.basename(path) == "tiny-2_4.ckpt"
    assert (extra["epoch"], extra["epoch_step"], extra["global_step"]) == (2, 4, 8)
    assert extra["steps_per_epoch"] == 4
    assert (extra["best_top1"], extra["best_epoch"]) == (40.0, 2)
    assert extra["ema"] is False and extra["best"] is False and extra["reason"] == "epoch"
    assert extra["arch"] == run.arch.to_dict() and extra["arch"]["name"] == "tiny"
    assert extra["config"] == to_dict(run.cfg) and extra["config"]["train"]["epochs"] == 3
    assert extra["network"] == list(run.eval_net.parameters_dict())  # what eval/export load
    assert "stem.bn.moving_mean" in extra["network"]
    assert extra["eval"] == ev

    _, best_extra = load_checkpoint(best)
    assert best_extra["best"] is True and best_extra["reason"] == "best"
    assert {k: v for k, v in best_extra.items() if k not in ("best", "reason")} == \
        {k: v for k, v in extra.items() if k not in ("best", "reason")}
    assert ckpt.last == path  # the best copy is never the one to resume from

    # an interval checkpoint after the validation carries no stale evaluation
    at(run, 3, 2, 10)
    assert read_checkpoint_extra(ckpt.save("interval"))["eval"] is None


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_state_is_never_written_and_the_error_says_how_to_resume(tmp_path, bad):
    out = tmp_path / "run"
    run = make_run(out, "train.epochs=2", "train.min_lr=0.05")  # lr 0.2 (tiny_train.yaml)
    ckpt = CheckpointManager(run)
    at(run, 1, 4, 4)
    good = ckpt.save("epoch")
    best = ckpt.save("best", best_copy=True)
    before = {n: (out / n).read_bytes() for n in ckpts_on_disk(out)}
    n_log = len(log_records(run))

    set_param(run, "stem.bn.moving_variance", bad)  # e.g. BN statistics that overflowed
    for best_copy in (False, True):  # the same file name again: it must stay as it was
        with pytest.raises(DivergedError) as e:
            ckpt.save("epoch", best_copy=best_copy)
        msg = str(e.value)
        assert "non-finite values in 1 tensors (e.g. 'stem.bn.moving_variance')" in msg
        assert "at epoch 1 step 4 (global step 4)" in msg
        assert f"the last good checkpoint is {good}" in msg
        # a tenth of lr 0.2; min_lr 0.05 would exceed it, so it comes down to 0.02 too
        assert msg.endswith(f"python train.py --output_dir {shlex.quote(str(out))} --resume "
                            f"--set train.lr=0.02 --set train.min_lr=0.02")
    assert {n: (out / n).read_bytes() for n in sorted(os.listdir(out))
            if n.endswith(".ckpt") or ".tmp" in n} == before  # no temp file left either
    assert ckpt.kept == [good] and os.path.isfile(best)
    stops = log_records(run)[n_log:]
    assert [(r["event"], r["reason"], r["global_step"]) for r in stops] == \
        [("stop", "diverged", 4)] * 2

    # the command it words is a resume the run accepts
    sets = msg.split("--resume ")[1].split("--set ")[1:]
    lowered = load_config(TrainConfig, TINY_TRAIN,
                          [f"arch={TINY_ARCH}", f"output_dir={out}", "train.epochs=2",
                           "train.min_lr=0.05"] + [s.strip() for s in sets])
    assert (lowered.train.lr, lowered.train.min_lr) == (0.02, 0.02)
    check_resumable(read_checkpoint_extra(good)["config"], lowered)


def test_a_divergence_before_any_checkpoint_says_to_start_again(tmp_path):
    run = make_run(tmp_path / "run")
    ckpt = CheckpointManager(run)
    set_param(run, "stem.conv.weight", math.inf)
    at(run, 1, 1, 1)
    with pytest.raises(DivergedError) as e:
        ckpt.save("interval")
    msg = str(e.value)
    assert "the last good checkpoint is none (no checkpoint was written yet)" in msg
    assert "start again with a lower learning rate (--set train.lr=0.02) in a new --output_dir" \
        in msg
    assert ckpts_on_disk(tmp_path / "run") == []


def test_ranks_other_than_0_write_nothing(tmp_path):
    out = tmp_path / "run"
    main = make_run(out, facts={"rank": 0, "group_size": 2, "device_target": "CPU"})
    at(main, 1, 4, 4)
    written = CheckpointManager(main).save("epoch")
    files = {n: (out / n).read_bytes() for n in os.listdir(out) if not n.startswith(".")}
    assert os.path.basename(written) in files and TRAIN_LOG_FILE in files

    # rank 1 of the same data-parallel run, in the same folder (it takes no lock)
    other = make_run(out, facts={"rank": 1, "group_size": 2, "device_target": "CPU"})
    assert not other.main
    ckpt = CheckpointManager(other)
    assert ckpt.kept == [] and ckpt.last is None  # rank 0's checkpoints are not its own
    at(other, 1, 4, 4)
    assert ckpt.save("epoch") is None
    assert ckpt.save("best", best_copy=True) is None
    at(other, 1, 2, 2)
    assert ckpt.save("interval") is None
    assert {n: (out / n).read_bytes() for n in os.listdir(out) if not n.startswith(".")} == files


# ============================================================================ listing


def _train_ckpt(path, global_step: int, **extra) -> str:
    tag = extra.pop("tag", {KIND_KEY: TRAIN_KIND})
    return save_checkpoint(str(path), {"w": np.full(3, global_step, np.float32)},
                           {**tag, "global_step": global_step, **extra})


def test_listing_orders_by_the_stored_step_and_skips_what_is_not_a_training_checkpoint(tmp_path):
    d = tmp_path
    # names that sort otherwise than the steps inside (file names are for people only)
    a = _train_ckpt(d / "a.ckpt", 30)
    b = _train_ckpt(d / "b.ckpt", 10, tag={"format": "hournas-train-1"})  # before the kind key
    c = _train_ckpt(d / "c.ckpt", 20)
    best = _train_ckpt(d / "0_best.ckpt", 40, best=True)
    # not this project's training checkpoints: skipped without complaint (a plain MindSpore
    # file: test_a_foreign_mindspore_checkpoint_is_skipped_not_unreadable)
    save_checkpoint(str(d / "search_state.ckpt"), {"w": np.ones(2, np.float32)},
                    {KIND_KEY: SEARCH_KIND, "global_step": 99})         # a search state
    save_checkpoint(str(d / "weights.ckpt"), {"w": np.ones(2, np.float32)}, {"note": "x"})
    (d / ".a.0123abcd.tmp.ckpt").write_bytes(b"cut short by a kill")   # a hidden temp file
    (d / "dir.ckpt").mkdir()
    (d / "notes.txt").write_text("not a checkpoint")

    unreadable: list[str] = []
    found = list_checkpoints(str(d), unreadable)
    assert [p for p, _ in found] == [b, c, a, best]
    assert [ex["global_step"] for _, ex in found] == [10, 20, 30, 40]
    assert unreadable == []
    # the best copy is never the one to resume from, even at the highest step
    path, extra = latest_checkpoint(str(d))
    assert (path, extra["global_step"]) == (a, 30)

    # a best copy written at the same step as a periodic one sorts after it
    same = _train_ckpt(d / "1_best.ckpt", 30, best=True)
    os.remove(best)
    assert [p for p, _ in list_checkpoints(str(d))] == [b, c, a, same]
    assert latest_checkpoint(str(d))[0] == a


def test_a_foreign_mindspore_checkpoint_is_skipped_not_unreadable(tmp_path):
    import mindspore as ms

    good = _train_ckpt(tmp_path / "net-1_4.ckpt", 4)
    plain = str(tmp_path / "pretrained.ckpt")  # e.g. weights a user copied into the folder
    ms.save_checkpoint([{"name": "w", "data": ms.Tensor(np.ones(2, np.float32))}], plain)
    assert read_checkpoint_extra(plain) == {}  # "a plain MindSpore checkpoint: no metadata"
    assert latest_checkpoint(str(tmp_path))[0] == good
    unreadable: list[str] = []
    assert [p for p, _ in list_checkpoints(str(tmp_path), unreadable)] == [good]
    assert unreadable == []


def test_latest_checkpoint_refuses_a_folder_without_a_resumable_one(tmp_path):
    assert list_checkpoints(str(tmp_path / "missing")) == []
    with pytest.raises(CheckpointError, match="no training checkpoint in"):
        latest_checkpoint(str(tmp_path / "missing"))
    _train_ckpt(tmp_path / "net_best.ckpt", 8, best=True)  # only the best copy
    save_checkpoint(str(tmp_path / "search_state.ckpt"), {"w": np.ones(2, np.float32)},
                    {KIND_KEY: SEARCH_KIND, "global_step": 9})
    with pytest.raises(CheckpointError) as e:
        latest_checkpoint(str(tmp_path))
    assert f"no training checkpoint in '{tmp_path}'" in str(e.value)


def test_unreadable_checkpoints_stop_the_resume_and_name_the_newest_readable_one(tmp_path):
    d = tmp_path
    good = _train_ckpt(d / "net-1_4.ckpt", 4)
    _train_ckpt(d / "net-1_2.ckpt", 2)
    data = open(good, "rb").read()
    (d / "net-1_6.ckpt").write_bytes(data[: len(data) // 2])   # cut short
    (d / "net-1_8.ckpt").write_bytes(b"\x00garbage" * 50)      # not a MindSpore file at all

    unreadable: list[str] = []
    assert [p for p, _ in list_checkpoints(str(d), unreadable)] == \
        [str(d / "net-1_2.ckpt"), good]
    assert sorted(unreadable) == [str(d / "net-1_6.ckpt"), str(d / "net-1_8.ckpt")]
    with pytest.raises(CheckpointError) as e:
        latest_checkpoint(str(d))
    msg = str(e.value)
    assert "is unreadable" in msg and "(and 1 more)" in msg
    assert f"the newest readable one is '{good}' (global step 4)" in msg

    # nothing readable left: no older checkpoint to offer
    for name in ("net-1_2.ckpt", "net-1_4.ckpt"):
        os.remove(d / name)
    with pytest.raises(CheckpointError) as e:
        latest_checkpoint(str(d))
    assert "no readable training checkpoint is left: start a new run" in str(e.value)
    assert "newest readable" not in str(e.value)


# ============================================================================ StateMonitor


class _Log(list):
    def __call__(self, msg: str) -> None:
        self.append(msg)


def fake_run(tmp_path, *, spe: int, epochs: int, log_every: int, batch: int = 32, graphs: int = 1):
    """The parts of a ``Run`` the monitor reads."""
    cfg = SimpleNamespace(train=SimpleNamespace(log_every=log_every, epochs=epochs,
                                                batch_size=batch, mode="graph"))
    return SimpleNamespace(cfg=cfg, spe=spe, total_steps=spe * epochs, pos=Position(),
                           log=_Log(), runlog=JsonLog(str(tmp_path / TRAIN_LOG_FILE)),
                           step_cell=SimpleNamespace(compile_cache=list(range(graphs))))


def drive(run, monitor, losses, seconds, lr: float = 0.1):
    """What the loop does for each step: time it, count it, report it."""
    pos = run.pos
    for loss, s in zip(losses, seconds):
        monitor.clock.add(s)
        pos.epoch_step += 1
        pos.global_step += 1
        monitor.step_end(loss, lr)


def records(run, event):
    return [json.loads(x) for x in open(run.runlog.path, encoding="utf-8")
            if json.loads(x)["event"] == event]


def test_monitor_reports_every_log_every_steps_each_epochs_last_and_the_first(tmp_path):
    run = fake_run(tmp_path, spe=5, epochs=2, log_every=3)
    monitor = StateMonitor(run)
    # step 1 compiles (2 s); later steps take 0.5 s: 32 images / 0.5 s = 64 img/s
    times = [2.0] + [0.5] * 9
    drive(run, monitor, [1.0, 0.9, 0.8, 0.7, 0.6], times[:5])
    run.pos.epoch, run.pos.epoch_step = 2, 0
    drive(run, monitor, [0.5, 0.4, 0.3, 0.2, 0.1], times[5:])

    # global steps 3, 6, 9 (every 3rd), 5 and 10 (each epoch's last), 1 (the first)
    steps = records(run, "step")
    assert [(r["epoch"], r["epoch_step"], r["global_step"]) for r in steps] == \
        [(1, 1, 1), (1, 3, 3), (1, 5, 5), (2, 1, 6), (2, 4, 9), (2, 5, 10)]
    assert [r["loss"] for r in steps] == [1.0, 0.8, 0.6, 0.5, 0.2, 0.1]
    assert steps[0]["images_per_s"] == pytest.approx(32 / 2.0)       # only the first step ran
    assert all(r["images_per_s"] == pytest.approx(64.0) and r["lr"] == 0.1 for r in steps[1:])
    lines = [m for m in run.log if m.startswith("epoch ")]
    assert len(lines) == 6
    assert lines[0] == "epoch 1/2 step 1/5 loss 1.0000 lr 0.1 16.0 img/s ETA after compile"
    # 7 steps left at 0.5 s: 3.5 s
    assert lines[1] == "epoch 1/2 step 3/5 loss 0.8000 lr 0.1 64.0 img/s ETA 0:00:03"
    assert lines[-1].startswith("epoch 2/2 step 5/5 loss 0.1000") and \
        lines[-1].endswith("ETA 0:00:00")

    # the compile report: once, after the 6th step
    comp = records(run, "compile")
    assert len(comp) == 1
    assert comp[0] == {"event": "compile", "global_step": 6, "first_step_s": 2.0,
                       "later_step_s": 0.5, "graphs": 1}
    report = [m for m in run.log if m.startswith("compile:")]
    assert report == ["compile: step 1 took 2.00 s (graph compile + step), steps 2..6 0.500 s "
                      "median; compiled training graphs: 1 (no recompiles)"]
    assert monitor.images_per_s() == pytest.approx(64.0)


def test_a_resumed_monitor_reports_its_first_step_and_the_epoch_mean_loss(tmp_path):
    run = fake_run(tmp_path, spe=10, epochs=3, log_every=100)
    run.pos = Position(epoch=2, epoch_step=3, global_step=13)  # resumed mid-epoch
    monitor = StateMonitor(run)
    assert monitor.images_per_s() is None
    monitor.epoch_begin()
    drive(run, monitor, [0.4], [1.0])
    assert [r["global_step"] for r in records(run, "step")] == [14]  # the first step of the process
    drive(run, monitor, [0.2, 0.3], [0.25, 0.25])
    assert [r["global_step"] for r in records(run, "step")] == [14]  # 15, 16: nothing due
    msg = monitor.epoch_message()
    assert msg.startswith("epoch 2/3 done in ") and msg.endswith("mean loss 0.3000")
    assert monitor.images_per_s() == pytest.approx(32 / 0.25)

    monitor.epoch_begin()  # the next epoch's mean starts afresh
    run.pos.epoch, run.pos.epoch_step = 3, 0
    drive(run, monitor, [1.0, 2.0], [0.25, 0.25])
    assert monitor.epoch_message().endswith("mean loss 1.5000")


def test_a_short_run_reports_the_compile_at_its_last_step_and_says_when_it_recompiled(tmp_path):
    run = fake_run(tmp_path, spe=4, epochs=1, log_every=1, graphs=2)
    monitor = StateMonitor(run)
    drive(run, monitor, [1.0, 1.0, 1.0], [3.0, 0.2, 1.1])
    assert records(run, "compile") == []  # 3 steps of 4: not yet
    drive(run, monitor, [1.0], [0.3])
    comp = records(run, "compile")
    assert len(comp) == 1 and comp[0]["global_step"] == 4 and comp[0]["graphs"] == 2
    assert comp[0]["later_step_s"] == pytest.approx(0.3)  # the median of 0.2, 1.1 and 0.3
    assert comp[0]["first_step_s"] == 3.0
    assert [m for m in run.log if m.startswith("compile:")][0].endswith(
        "compiled training graphs: 2 (RECOMPILED)")


def test_a_one_step_run_reports_its_compile_without_a_median(tmp_path):
    """One step has nothing to compare with: said in words, null in the log (not nan)."""
    run = fake_run(tmp_path, spe=1, epochs=1, log_every=1)
    monitor = StateMonitor(run)
    drive(run, monitor, [1.0], [2.5])
    comp = records(run, "compile")
    assert len(comp) == 1 and comp[0]["later_step_s"] is None and comp[0]["first_step_s"] == 2.5
    assert [m for m in run.log if m.startswith("compile:")] == [
        "compile: step 1 took 2.50 s (graph compile + step), no later step to compare (a "
        "one-step run); compiled training graphs: 1 (no recompiles)"]


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_plot_log_draws_the_curves_or_nothing(tmp_path):
    log = JsonLog(str(tmp_path / "log.jsonl"))
    log.reset()
    log.write(event="start", global_step=0)
    png = tmp_path / "curves.png"
    assert plot_log(log.path, str(png)) is None and not png.exists()
    log.write(event="step", epoch=1, epoch_step=1, global_step=1, loss=math.nan, lr=0.1)
    assert plot_log(log.path, str(png)) is None and not png.exists()  # a null loss is no point
    assert plot_log(str(tmp_path / "missing.jsonl"), str(png)) is None

    for s, loss in ((2, 2.1), (3, 1.9), (4, 1.7)):
        log.write(event="step", epoch=1, epoch_step=s, global_step=s, loss=loss, lr=0.1)
    log.write(event="eval", epoch=1, global_step=4, loss=1.8, top1=35.0, top5=80.0, images=360)
    assert plot_log(log.path, str(png)) == str(png)
    assert _png_size(png) == (1100, 420)  # figsize 11 x 4.2 inches at 100 dpi
    assert [n for n in os.listdir(tmp_path) if ".tmp" in n] == []


# ============================================================================ lr_at corners
# (tests/unit/test_trainer.py covers warm-up into cosine, linear scaling and the constant
# schedule without warm-up)


def test_cosine_floor_end_and_a_grown_run():
    p = TrainParams(epochs=2, lr=0.1, min_lr=0.02, batch_size=64, base_batch=64, warmup_epochs=0)
    spe = 10
    assert lr_at(p, 0, spe) == pytest.approx(0.1)          # no warm-up: the peak at once
    assert lr_at(p, 10, spe) == pytest.approx(0.06)        # half way: (0.1 + 0.02) / 2
    assert lr_at(p, 19, spe) > 0.02                        # the last step is above the floor
    assert lr_at(p, 20, spe) == pytest.approx(0.02)        # the floor after the last step
    assert lr_at(p, 35, spe) == pytest.approx(0.02)        # and stays there
    # train.epochs may grow on resume: the curve is recomputed for the new length
    longer = TrainParams(epochs=4, lr=0.1, min_lr=0.02, batch_size=64, base_batch=64,
                         warmup_epochs=0)
    assert lr_at(longer, 10, spe) == pytest.approx(0.02 + 0.04 * (1 + math.cos(math.pi / 4)))


def test_warmup_corners():
    spe = 4
    # warm-up over the whole run (allowed: warmup_epochs <= epochs): a ramp to the peak
    whole = TrainParams(epochs=2, lr=0.2, batch_size=64, base_batch=64, warmup_epochs=2)
    assert [lr_at(whole, s, spe) for s in range(8)] == pytest.approx(
        [0.2 * k / 8 for k in range(1, 9)])
    # constant schedule after a warm-up: the ramp, then the peak; min_lr plays no part
    const = TrainParams(epochs=3, lr=0.2, min_lr=0.1, batch_size=64, base_batch=64,
                        warmup_epochs=1, schedule="constant")
    assert [lr_at(const, s, spe) for s in range(6)] == pytest.approx(
        [0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    assert lr_at(const, 11, spe) == pytest.approx(0.2)
    # a fractional warm-up is rounded to whole steps: 0.7 x 4 = 2.8 -> 3 steps
    frac = TrainParams(epochs=2, lr=0.3, batch_size=64, base_batch=64, warmup_epochs=0.7)
    assert [lr_at(frac, s, spe) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert lr_at(frac, 3, spe) == pytest.approx(0.3)       # cosine starts at the peak
    # less than half a step of warm-up is none
    tiny = TrainParams(epochs=2, lr=0.3, batch_size=64, base_batch=64, warmup_epochs=0.1)
    assert lr_at(tiny, 0, spe) == pytest.approx(0.3)
