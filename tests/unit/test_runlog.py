"""src/runlog.py: the run toolkit training and the search share (log, stop signals, resume
checks, non-finite guard, digests, cosine, h:mm:ss and ETA)."""
from __future__ import annotations

import json
import math
import os
import signal

import numpy as np
import pytest

from src.errors import ConfigError
from src.runlog import (JsonLog, StepClock, StopSignals, check_resume_config, config_changes,
                        cosine, describe_changes, digest, hms, nonfinite, params_digest,
                        signal_name, up_to_step)


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_log_writes_standard_json_and_stamps_every_record(tmp_path):
    log = JsonLog(str(tmp_path / "log.jsonl"), stamp={"rank": 1})
    log.reset()
    log.write(event="step", global_step=1, loss=float("nan"), lr=0.5)
    log.write(global_step=2, loss=float("inf"))
    text = (tmp_path / "log.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert _lines(log.path) == [{"rank": 1, "event": "step", "global_step": 1, "loss": None,
                                 "lr": 0.5}, {"rank": 1, "global_step": 2, "loss": None}]


@pytest.mark.parametrize("atomic", [True, False])
def test_reset_on_resume_keeps_what_the_caller_keeps_and_drops_a_cut_line(tmp_path, atomic):
    path = tmp_path / "log.jsonl"
    recs = [{"event": "start", "global_step": 0}] + [{"global_step": g} for g in range(1, 6)] \
        + [{"event": "note"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"global_step": 3, "lo')
    log = JsonLog(str(path), atomic=atomic)
    assert log.reset(keep=up_to_step(3)) == 5
    assert _lines(path) == recs[:4] + [{"event": "note"}]   # no global step: kept
    # the engine's rule: step records before a step, any event record
    assert log.reset(keep=lambda r: r.get("global_step", -1) < 2 or bool(r.get("event"))) == 3
    assert _lines(path) == [recs[0], recs[1], {"event": "note"}]
    log.reset()                                               # a new run: empty
    assert path.read_text() == ""
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_disabled_log_touches_nothing(tmp_path):
    log = JsonLog(str(tmp_path / "log.jsonl"), enabled=False)
    log.reset()
    log.write(event="step")
    assert log.reset(keep=up_to_step(1)) == 0
    assert os.listdir(tmp_path) == []


def test_stop_signals_set_a_flag_and_restore_the_old_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with StopSignals() as stop:
        assert stop.signum is None
        os.kill(os.getpid(), signal.SIGTERM)   # handled: the process goes on
        assert stop.signum == signal.SIGTERM
        signal.signal(signal.SIGINT, signal.SIG_DFL)   # what MindSpore's runtime does
        stop.pin()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT
    assert {s: signal.getsignal(s) for s in before} == before
    assert signal_name(signal.SIGTERM) == "SIGTERM"


def test_stop_signals_agree_across_ranks():
    stop = StopSignals()
    assert stop.agree(None) is None                      # one process: nothing to agree
    seen = []
    assert stop.agree(lambda s: seen.append(s) or signal.SIGTERM) == signal.SIGTERM
    assert seen == [None] and stop.signum == signal.SIGTERM


def test_resume_config_check_names_the_key_and_what_may_change():
    stored = {"a": {"lr": 0.1, "momentum": 0.9}, "out": "x", "epochs": 3}
    check_resume_config(stored, {"a": {"lr": 0.01, "momentum": 0.9}, "out": "y", "epochs": 3},
                        ("a.lr", "out"), "do this")
    with pytest.raises(ConfigError) as e:
        check_resume_config(stored, {"a": {"lr": 0.1, "momentum": 0.5}, "out": "x", "epochs": 4},
                            ("a.lr", "out"), "resume with the run's settings")
    assert str(e.value) == ("--resume with a different configuration (a.momentum: checkpoint "
                            "0.9, now 0.5; epochs: checkpoint 3, now 4); resume with the run's "
                            "settings (may change on resume: a.lr, out)")


def test_config_changes_and_their_log_line():
    a, b = {"t": {"lr": 30.0, "min_lr": 0.0}, "k": 1}, {"t": {"lr": 3.0, "min_lr": 0.0}, "k": 2}
    assert config_changes(a, b) == {"k": (1, 2), "t.lr": (30.0, 3.0)}
    changed = config_changes(a, b, keys=("t.lr", "t.min_lr"))
    assert changed == {"t.lr": (30.0, 3.0)}
    assert describe_changes(changed) == "t.lr 30.0 -> 3.0"
    assert config_changes(a, b, skip=("k",)) == {"t.lr": (30.0, 3.0)}


def test_nonfinite_names_the_bad_arrays():
    arrays = {"w": np.ones(3), "b": np.array([1.0, np.nan]), "s": np.float32(np.inf),
              "i": np.arange(3)}
    assert nonfinite(arrays) == ["b", "s"]
    assert nonfinite({"w": np.zeros((2, 2))}) == []


class _Param:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def asnumpy(self):
        return self.value


def test_digest_is_order_free_and_sees_every_bit_name_and_dtype():
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.float32)
    d = digest([("a", a), ("b", b)])
    assert d == digest([("b", b), ("a", a)])
    flipped = a.copy()
    flipped.view(np.uint32)[0, 0] ^= 1                      # one bit
    assert digest([("a", flipped), ("b", b)]) != d
    assert digest([("c", a), ("b", b)]) != d
    assert digest([("a", a.astype(np.float64)), ("b", b)]) != d
    assert digest([("a", a.reshape(3, 2)), ("b", b)]) != d
    assert params_digest([_Param("b", b), _Param("a", a)]) == d


def test_cosine():
    assert cosine(1.0, 0.0, 0.0) == 1.0
    assert cosine(1.0, 0.2, 0.5) == pytest.approx(0.6)
    assert cosine(1.0, 0.2, 1.0) == pytest.approx(0.2) and cosine(1.0, 0.2, 3.0) == \
        cosine(1.0, 0.2, 1.0)
    # the search's formula, to the bit
    w_lr, s, total = 0.05, 7, 40
    assert cosine(w_lr, 0.0, s / total) == 0.5 * w_lr * (1 + math.cos(math.pi * s / total))


def test_hms():
    assert hms(0) == "0:00:00" and hms(-5) == "0:00:00"
    assert hms(59.9) == "0:00:59" and hms(3725) == "1:02:05" and hms(36000) == "10:00:00"


def test_step_clock_keeps_the_first_step_apart():
    clock = StepClock(window=2)
    assert math.isnan(clock.per_step()) and clock.first is None
    clock.add(10.0)                                     # compile + step
    assert clock.per_step() == 10.0 and clock.eta(100) == "after compile"
    for s in (1.0, 2.0, 4.0):
        clock.add(s)
    assert len(clock) == 4 and clock.first == 10.0 and clock.later == [1.0, 2.0, 4.0]
    assert clock.per_step() == 3.0                      # the latest two later steps
    assert clock.eta(1200) == "1:00:00"
