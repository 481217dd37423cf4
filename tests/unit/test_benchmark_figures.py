"""The benchmarks' figures from their workers' answers: peak resident memory per worker
(benchmarks/harness.peak_rss_gb), per executor in search_step.summarize and per framework in
train_step.figures, and the quotients they print."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import search_step, train_step
from benchmarks.harness import peak_rss_gb, rss_gb


def test_peak_rss_is_the_high_water_mark():
    now = rss_gb()
    assert peak_rss_gb() >= now > 0  # Linux: /proc/self/status is there
    block = np.ones(2**28 // 8)  # 256 MiB, touched
    during = peak_rss_gb()
    del block
    assert during >= now + 0.2  # the block counted once it was resident
    assert peak_rss_gb() >= now + 0.2  # and the mark stays when it is freed


def _row(w, a, peak):
    return {"weight_s": w, "arch_s": a, "peak_rss_gb": peak}


def test_search_step_reports_each_executors_peak_and_its_quotients():
    spec = {"space": "s", "width": 0.25, "batch": 8}
    ready = {"layers": 2, "ops": 3, "params": 10, "warmup_s": {"eager": 1.0, "graph": 9.0}}
    # repeat 0 is untimed; the peak is the worker's over all of them
    answers = [{"eager": _row(9, 9, 1.0), "graph": _row(9, 9, 2.0)},
               {"eager": _row(1.0, 0.5, 1.2), "graph": _row(2.0, 1.0, 3.0)},
               {"eager": _row(1.0, 0.5, 1.1), "graph": _row(2.0, 1.0, 3.6)}]
    torch_answers = [{"pytorch": _row(9, 9, 0.5)}, {"pytorch": _row(0.5, 0.25, 0.6)},
                     {"pytorch": _row(0.5, 0.25, 0.6)}]
    out = search_step.summarize(spec, ready, answers, torch_answers, "eager", [1.0])
    assert out["executors"]["eager"]["peak_rss_gb"] == 1.2
    assert out["executors"]["graph"]["peak_rss_gb"] == 3.6
    assert out["pytorch"]["peak_rss_gb"] == 0.6
    assert out["rss_vs_eager_per_executor"] == {"eager": 1.0, "graph": 3.0}
    assert out["rss_vs_pytorch_per_executor"] == {"eager": 2.0, "graph": 6.0}
    assert out["vs_pytorch"] == 2.0 and out["vs_pytorch_per_executor"]["graph"] == 4.0


def test_train_step_figures_take_the_median_step_and_the_peak():
    ready = {"framework": "mindspore", "threads": 2}
    answers = [{"times": [0.5, 0.1], "peak_rss_gb": 1.5},
               {"times": [0.2], "peak_rss_gb": 1.75}]
    f = train_step.figures(ready, answers, batch=4)
    assert f["step_s"] == 0.2 and f["images_per_s"] == pytest.approx(20.0)
    assert f["timed_steps"] == 3 and f["peak_rss_gb"] == 1.75 and f["threads"] == 2
    assert "framework" not in f


def test_search_step_sizes_take_a_batch_of_the_callers():
    assert search_step.size_spec("full") == {"space": "fbnet_cifar10", "width": 1.0, "batch": 64}
    assert search_step.size_spec("full", 2)["batch"] == 2
    default = search_step.size_spec("default")
    assert search_step.size_spec("default", 1) == dict(default, batch=1) != default
    with pytest.raises(SystemExit, match="unknown size 'huge'"):
        search_step.size_spec("huge")
