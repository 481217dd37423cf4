"""benchmarks/train_step.py: both frameworks in their own worker, timed in alternating rounds,
first step apart, the twin's parameter count checked; without PyTorch, that half is skipped
(and the test checks that it says so)."""
from __future__ import annotations

import importlib.util

import pytest

from tests.e2e.helpers import last_json, run_cli

SMALL = ("--steps", "3", "--round_steps", "2", "--batch_size", "4", "--image_size", "16",
         "--json")


def test_rounds_alternate_and_every_step_is_counted():
    r = last_json(run_cli("benchmarks/train_step.py", *SMALL).stdout)
    assert r["rounds"] == 2 and len(r["load_avg_1min"]) == 2
    if importlib.util.find_spec("torch") is None:  # not in requirements.txt: optional
        assert r["pytorch"] is None and r["ratio"] is None
        assert r["pytorch_skipped"] == "skipped (not installed; pip install torch to compare)"
        frameworks = ("mindspore",)
    else:
        frameworks = ("mindspore", "pytorch")
    for fw in frameworks:
        f = r[fw]
        assert f["timed_steps"] == 3 and f["threads"] == r["threads"]
        assert f["images_per_s"] == pytest.approx(4 / f["step_s"])
        assert f["first_step_s"] > 0 and f["warmup_s"] > 0
        assert f["peak_rss_gb"] > 0.1  # each worker's own high-water mark
    assert r["mindspore"]["graphs"] == 1 and r["mindspore"]["amp_level"] == "O0"
    if "pytorch" in frameworks:
        assert r["pytorch"]["params"] == r["params"]  # the twin is the same network
        assert r["ratio"] == pytest.approx(r["mindspore"]["images_per_s"] /
                                           r["pytorch"]["images_per_s"])
        assert r["rss_ratio"] == pytest.approx(r["mindspore"]["peak_rss_gb"] /
                                               r["pytorch"]["peak_rss_gb"])


def test_without_torch_that_half_is_skipped():
    proc = run_cli("benchmarks/train_step.py", *SMALL, "--no_torch", "--amp_level", "O2")
    r = last_json(proc.stdout)
    assert r["pytorch"] is None and r["ratio"] is None and r["rss_ratio"] is None
    assert r["pytorch_skipped"] == "skipped (--no_torch)"
    assert r["mindspore"]["amp_level"] == "O0"  # mixed precision is not supported on CPU
    assert "amp_level O2 -> O0" in proc.stderr


def test_a_worker_that_cannot_start_is_one_error_line():
    from src.context import device_available
    # a back end this machine lacks (no machine has both)
    missing = next(t for t in ("GPU", "Ascend") if not device_available(t)[0])
    proc = run_cli("benchmarks/train_step.py", "--device_target", missing, "--steps", "1",
                   check=False)
    assert proc.returncode == 2
    assert f"error: device target '{missing}' is not available here" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: a benchmark worker ended (exit 2); its error is above")


def test_depthwise_gradients_are_timed_side_by_side():
    """--depthwise native,kernel: a worker of each kind; the kernel one holds
    DepthwiseConv2d's, the native one none, and the ratio is theirs."""
    r = last_json(run_cli("benchmarks/train_step.py", "--steps", "2", "--round_steps", "1",
                          "--batch_size", "2", "--image_size", "32", "--no_torch",
                          "--threads", "1", "--depthwise", "native,kernel", "--json").stdout)
    native, kernel = r["depthwise"]["native"], r["depthwise"]["kernel"]
    assert native["depthwise_cells"] == 0 and kernel["depthwise_cells"] > 0
    assert native["threads"] == kernel["threads"] == r["threads"] == 1
    assert native["timed_steps"] == kernel["timed_steps"] == 2
    assert r["vs_first"] == {"kernel": pytest.approx(kernel["images_per_s"]
                                                     / native["images_per_s"])}


def test_modes_are_timed_side_by_side():
    """--mode graph,pynative: a worker of each, labelled by mode; the op-by-op one compiles
    no graph."""
    r = last_json(run_cli("benchmarks/train_step.py", "--steps", "2", "--round_steps", "1",
                          "--batch_size", "2", "--image_size", "16", "--no_torch",
                          "--threads", "1", "--mode", "graph,pynative", "--json").stdout)
    graph, pynative = r["depthwise"]["graph"], r["depthwise"]["pynative"]
    assert (graph["mode"], graph["graphs"]) == ("graph", 1)
    assert (pynative["mode"], pynative["graphs"]) == ("pynative", 0)
    assert r["mindspore"] == pynative and pynative["timed_steps"] == 2
    assert r["vs_first"] == {"pynative": pytest.approx(pynative["images_per_s"]
                                                       / graph["images_per_s"])}
    proc = run_cli("benchmarks/train_step.py", "--mode", "graph,eager", check=False)
    assert proc.returncode == 2 and "expected one or more distinct of graph, pynative" in proc.stderr


def test_depthwise_kinds_are_checked():
    proc = run_cli("benchmarks/train_step.py", "--depthwise", "native,fast", check=False)
    assert proc.returncode == 2 and "expected one or more distinct of auto" in proc.stderr


def test_depthwise_benchmark_checks_and_times_both():
    r = last_json(run_cli("benchmarks/depthwise.py", "--sizes", "16", "--channels", "4",
                          "--kernels", "3", "--strides", "1,2", "--repeats", "1",
                          "--batch_size", "2", "--threads", "1", "--json").stdout)
    assert r["mode"] == "graph" and r["threads"] == 1
    assert [(row["size"], row["stride"]) for row in r["rows"]] == [(16, 1), (16, 2)]
    for row in r["rows"]:
        assert row["native_ms"] > 0 and row["banded_ms"] > 0
        assert row["speedup"] == pytest.approx(row["native_ms"] / row["banded_ms"])
        assert row["kernel_ms"] > 0  # g++ is part of the set-up: the kernel is timed too
        assert row["kernel_speedup"] == pytest.approx(row["native_ms"] / row["kernel_ms"])
        assert row["grad_rel_err"] < 1e-4
