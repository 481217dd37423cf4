"""The two-stage search through the real CLI, on a tiny space and the built-in digits."""
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from src.resource import resource_table
from src.space.space import load_arch, load_space
from tests.e2e.helpers import ROOT, cli_env, last_json, run_cli

CONFIG = "tests/fixtures/tiny_search.yaml"


def _search(out, *extra, timeout=600):
    return run_cli("search.py", "--config", CONFIG, "--output_dir", str(out), "--json", *extra,
                   timeout=timeout)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    proc = _search(out)
    return out, last_json(proc.stdout), proc


def test_search_writes_a_retrainable_architecture(full_run):
    out, summary, proc = full_run
    for name in ("arch.yaml", "summary.json", "config.yaml", "search_log.jsonl",
                 "search_state.ckpt", "search_theta.png", "search_progress.png"):
        assert os.path.getsize(out / name) > 0, name
    arch = load_arch(str(out / "arch.yaml"))
    assert arch.meta["targets"] == summary["targets"]
    assert set(summary["stage_seconds"]) == {"vital", "nonvital"}
    assert f"python train.py --arch {out / 'arch.yaml'}" in proc.stdout + proc.stderr
    assert summary["params"] == int(summary["achieved"]["params"])


def test_stage2_respects_stage1_vital_ops(full_run):
    out, summary, _ = full_run
    space = load_space("tests/fixtures/tiny_space.yaml")
    arch = load_arch(str(out / "arch.yaml"))
    vital = space.vital_layers()
    assert summary["vital"]["layers"] == [space.layers[i].label for i in vital]
    assert [arch.layers[i].ops[0].name for i in vital] == summary["vital"]["ops"]
    log = [json.loads(line) for line in open(out / "search_log.jsonl")]
    stage1 = [r for r in log if r["stage"] == "vital"]
    stage2 = [r for r in log if r["stage"] == "nonvital"]
    assert len(stage1) == 4 and len(stage2) == 4
    assert all(len(r["path"]) == len(vital) for r in stage1)
    assert all(len(r["path"]) == len(space.nonvital_layers()) for r in stage2)


def test_derivation_meets_targets_when_possible(full_run):
    out, summary, _ = full_run
    space = load_space("tests/fixtures/tiny_space.yaml")
    cfg = yaml.safe_load(open(ROOT + "/" + CONFIG))
    tol = cfg["search"]["tolerance"]
    fixed = {i: space.op_index(i, op) for i, op in zip(space.vital_layers(),
                                                        summary["vital"]["ops"])}
    table = resource_table(space, layers=space.nonvital_layers(), fixed=fixed)
    eye = np.eye(4)
    exists = any(all(abs(c - summary["targets"][k]) / summary["targets"][k] <= tol
                     for k, c in table.cost(eye[list(ch)]).items())
                 for ch in itertools.product(range(4), repeat=len(space.nonvital_layers())))
    assert exists, "fixture targets should be reachable"
    assert summary["within_tolerance"]
    for k, err in summary["relative_error"].items():
        assert abs(err) <= tol, (k, err)


def _kill_during(out, stage, step, extra=()):
    """Start a search and SIGKILL it once its log shows `stage` at `step`."""
    cmd = [sys.executable, os.path.join(ROOT, "search.py"), "--config", CONFIG,
           "--output_dir", str(out), *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = out / "search_log.jsonl"
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError("the search finished before it could be killed")
            if log.exists():
                recs = [json.loads(x) for x in open(log).read().splitlines() if x.strip()]
                if any(r.get("stage") == stage and r.get("step", 0) >= step for r in recs):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return
            time.sleep(0.05)
        raise AssertionError("timed out waiting for the kill point")
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("stage,step", [("vital", 2), ("nonvital", 3)])
def test_resume_after_sigkill_is_exact(full_run, tmp_path, stage, step):
    ref_out, ref, _ = full_run
    out = tmp_path / "killed"
    _kill_during(out, stage, step)
    summary = last_json(_search(out, "--resume").stdout)
    assert summary["ops"] == ref["ops"]
    a = np.load(ref_out / "arch_params.npz")
    b = np.load(out / "arch_params.npz")
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key
    # the log has one record per step, as an uninterrupted run's
    log = [json.loads(x) for x in open(out / "search_log.jsonl")]
    assert [r["global_step"] for r in log] == list(range(1, 9))


def test_no_vital_priori_single_stage(tmp_path):
    summary = last_json(_search(tmp_path, "--no-vital-priori").stdout)
    assert set(summary["stage_seconds"]) == {"single"}
    assert summary["vital"] == {}
    log = [json.loads(x) for x in open(tmp_path / "search_log.jsonl")]
    assert all(len(r["path"]) == 7 for r in log)


def test_gumbel_softmax_all_path_ablation(tmp_path):
    summary = last_json(_search(tmp_path, "--set", "search.sampler=gumbel_softmax").stdout)
    assert summary["executor"] == "allpath"
    assert load_arch(str(tmp_path / "arch.yaml")).meta["sampler"] == "gumbel_softmax"


def test_resume_without_checkpoint_and_existing_run(tmp_path, full_run):
    proc = run_cli("search.py", "--config", CONFIG, "--output_dir", str(tmp_path / "none"),
                   "--resume", check=False)
    assert proc.returncode == 2 and "no search checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("search.py", "--config", CONFIG, "--output_dir", str(full_run[0]), check=False)
    assert proc.returncode == 2 and "already holds a search" in proc.stderr


def test_infeasible_target_names_range(tmp_path):
    proc = run_cli("search.py", "--config", CONFIG, "--output_dir", str(tmp_path),
                   "--set", "proposal.targets.flops=50M", check=False)
    assert proc.returncode == 2
    assert "feasible" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "search_state.ckpt")


def test_compiled_candidates_search_equals_the_eager_one(full_run, tmp_path):
    """search.executor=graph (compiled candidates) through the whole two-stage search: the
    same architecture, θ/Π/Θ and learned accuracies as the default (eager) run, to the bit."""
    ref, ref_summary, _ = full_run
    assert ref_summary["executor"] == "eager"
    summary = last_json(_search(tmp_path, "--set", "search.executor=graph").stdout)
    assert summary["executor"] == "graph"
    assert summary["ops"] == ref_summary["ops"]
    assert summary["stage_accuracy"] == ref_summary["stage_accuracy"]
    a, b = np.load(ref / "arch_params.npz"), np.load(tmp_path / "arch_params.npz")
    assert a.files == b.files
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key
