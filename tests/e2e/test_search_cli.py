"""The two-stage search through the real CLI, on a tiny space and the built-in digits."""
import itertools
import json
import os

import numpy as np
import pytest
import yaml

from src.resource import resource_table
from src.space.space import load_arch, load_space
from tests.e2e.helpers import ROOT, last_json, run_cli

CONFIG = "tests/fixtures/tiny_search.yaml"


def _search(out, *extra):
    return run_cli("search.py", "--config", CONFIG, "--output_dir", str(out), "--json", *extra)


@pytest.fixture(scope="module")
def full_run(tiny_search_run):
    """The session's tiny search (tests/conftest.py): (folder, summary, process)."""
    return tiny_search_run


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


# Kill-and-resume (SIGKILL in each stage, SIGTERM, SIGINT, a full disk): tests/e2e/test_faults.py.


def test_no_vital_priori_single_stage(tmp_path, full_run):
    proc = _search(tmp_path, "--no-vital-priori", "--set", "data.augment=true")
    summary = last_json(proc.stdout)
    assert set(summary["stage_seconds"]) == {"single"}
    # a search never augments: it says so when the config asks for it (the reference run,
    # data.augment false, does not)
    note = "the search reads its training images unaugmented"
    assert note in proc.stdout + proc.stderr
    assert note not in full_run[2].stdout + full_run[2].stderr
    assert summary["vital"] == {}
    log = [json.loads(x) for x in open(tmp_path / "search_log.jsonl")]
    assert all(len(r["path"]) == 7 for r in log)


def test_stage_2_warm_up_trains_only_the_weights_then_searches(tmp_path, full_run):
    """search.warmup_nvital: stage 2's first epoch draws paths from the solved proposals with
    Π uniform and leaves Π, Θ as they were; the epochs after it search as usual."""
    proc = _search(tmp_path, "--set", "search.epochs_nvital=2", "--set", "search.warmup_nvital=1")
    summary = last_json(proc.stdout)
    assert "frozen in the first 1 epoch(s): warm-up" in proc.stdout + proc.stderr
    log = [json.loads(x) for x in open(tmp_path / "search_log.jsonl")]
    s2 = [r for r in log if r["stage"] == "nonvital"]
    warm, searched = [r for r in s2 if r["epoch"] == 0], [r for r in s2 if r["epoch"] == 1]
    assert len(warm) == len(searched) == 4
    assert all(r.get("warmup") is True and "a_loss" not in r for r in warm)
    assert all("a_loss" in r and "warmup" not in r for r in searched)
    m = len(warm[0]["pi"])
    assert all(r["pi"] == [round(1 / m, 5)] * m for r in warm)        # Π stays uniform
    assert len({r["entropy"] for r in warm}) == 1                     # Θ stays the proposals
    assert searched[-1]["pi"] != warm[-1]["pi"] and searched[-1]["entropy"] != warm[-1]["entropy"]
    # the weights did train in the warm-up: its paths are stage 2's, drawn from the proposals
    assert len({tuple(r["path"]) for r in warm}) > 1
    assert summary["ops"] != {} and os.path.exists(tmp_path / "arch.yaml")
    # stage 1 is the reference run's, bit for bit
    ref = [json.loads(x) for x in open(full_run[0] / "search_log.jsonl")]
    assert [r["w_loss"] for r in log if r["stage"] == "vital"] == \
        [r["w_loss"] for r in ref if r["stage"] == "vital"]


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


def test_supernet_scores_the_architectures_it_holds(tiny_search_run):
    """The final supernet of a search scores its own result and any architecture with the
    same vital ops on the architecture split, deterministically; another vital op: None."""
    from src.context import set_mode
    from src.search.supernet_eval import load_final_supernet, path_of, supernet_accuracy
    from src.space.space import load_arch

    out, _, _ = tiny_search_run
    derived = load_arch(str(out / "arch.yaml"))
    net, space, _, fixed = load_final_supernet(str(out))
    choices = space.choices_of(derived)
    assert fixed and all(choices[i] == o for i, o in fixed.items())
    assert path_of(net, space, fixed, derived) == [choices[i] for i in net.searched]
    vital = next(iter(fixed))
    other = list(choices)
    other[vital] = (choices[vital] + 1) % len(space.layers[vital].ops)
    nonvital = net.searched[0]
    same_vital = list(choices)
    same_vital[nonvital] = (choices[nonvital] + 1) % len(space.layers[nonvital].ops)
    archs = [derived, space.arch(other), space.arch(same_vital)]
    set_mode("pynative")
    try:
        first = supernet_accuracy(str(out), archs, batch_size=40)
        again = supernet_accuracy(str(out), archs[:1], batch_size=40)
    finally:
        set_mode("graph")
    assert first[1] is None
    assert 0.0 <= first[0] <= 1.0 and 0.0 <= first[2] <= 1.0 and again[0] == first[0]


def test_derive_by_the_supernet_rederives_a_finished_search(tiny_search_run, tmp_path):
    """search.derive=supernet on a finished search (--resume): each proposal's network is
    scored on the final supernet (as supernet_eval scores it) and the best one within the
    targets is taken; θ, Π and the weights are the run's own."""
    import shutil

    from src.context import set_mode
    from src.search.supernet_eval import proposal_archs, supernet_accuracy

    ref, ref_summary, _ = tiny_search_run
    assert ref_summary["derive"] == "pi" and ref_summary["proposal_scores"] is None
    out = tmp_path / "rederived"
    shutil.copytree(ref, out)
    summary = last_json(run_cli("search.py", "--config", str(out / "config.yaml"), "--output_dir",
                                str(out), "--resume", "--set", "search.derive=supernet",
                                "--json").stdout)
    scores = summary["proposal_scores"]
    assert summary["derive"] == "supernet" and [r["proposal"] for r in scores] == [0, 1, 2, 3]
    pool = [r for r in scores if r["within"]] or scores
    best = max(pool, key=lambda r: (r["supernet"], r["pi"]))
    assert summary["proposal"] == best["proposal"]
    assert "the supernet's best" in summary["derivation"]
    recs = proposal_archs(str(out))
    assert recs[best["proposal"]]["derived"]  # arch.yaml is that proposal's network
    assert [r["pi"] for r in recs] == pytest.approx([r["pi"] for r in scores])
    set_mode("pynative")
    try:
        again = supernet_accuracy(str(out), [r["arch"] for r in recs])
    finally:
        set_mode("graph")
    assert again == [r["supernet"] for r in scores]
    a, b = np.load(ref / "arch_params.npz"), np.load(out / "arch_params.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    bad = run_cli("search.py", "--config", CONFIG, "--output_dir", str(tmp_path / "x"), "--set",
                  "search.derive=best", check=False)
    assert bad.returncode == 2 and "unknown search.derive 'best'; valid: pi, supernet" in bad.stderr
