"""search.py --stage proposals, run as a user would: a subprocess on a shipped config."""
import json
import os
import sys

import numpy as np

from tests.e2e.helpers import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "config", "search", "fbnet_cifar10.yaml")
SMALL = ["--set", "proposal.iterations=300", "--set", "proposal.report_samples=1000",
         "--set", "proposal.report_taus=[1.0,0.1]"]


def test_proposals_stage_writes_files_and_json(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("search.py", "--config", CONFIG, "--stage", "proposals", "--output_dir", out,
                   "--json", "--set", "proposal.targets.params=2.5M",
                   "--set", "proposal.targets.flops=250M", *SMALL)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["targets"] == {"params": 2.5e6, "flops": 250e6}
    assert summary["feasible"] is True and summary["final_tau"] == 0.1
    assert summary["m"] == 8 and summary["solve_seconds"] > 0
    for key in ("within_5pct", "within_2pct"):
        assert set(summary[key]) == {"params", "flops"}
        assert all(0.0 <= v <= 1.0 for v in summary[key].values())
    assert summary["within_5pct_all"] >= 0.5  # 300 iterations: most samples already on target
    assert summary["diversity"]["distinct_architectures"] > 1
    for name in ("proposals.npz", "proposals_report.json", "proposals.png", "config.yaml"):
        assert (out / name).is_file(), name
    with np.load(out / "proposals.npz", allow_pickle=False) as z:
        assert z["theta"].shape == (8, 22, 9)
    report = json.loads((out / "proposals_report.json").read_text())
    assert [r["tau"] for r in report["reports"]] == [1.0, 0.1]
    assert len(report["argmax_architectures"]) == 8
    sys.path.insert(0, ROOT)
    from src.config import load_config
    from src.search.config import SearchConfig
    saved = load_config(SearchConfig, str(out / "config.yaml"))
    assert saved.proposal.targets == {"params": 2.5e6, "flops": 250e6}
    assert saved.proposal.iterations == 300 and saved.output_dir == str(out)
    assert "Traceback" not in proc.stderr


def test_infeasible_target_is_one_error_line_with_the_range(tmp_path):
    proc = run_cli("search.py", "--config", CONFIG, "--stage", "proposals", "--output_dir",
                   tmp_path / "x", "--set", "proposal.targets.flops=10M", *SMALL, check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: target flops 10.00M is below the space's minimum 53.03M")
    assert "(feasible: 53.03M .. 509.13M)" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x" / "proposals.npz").exists()


def test_stage_describe_lists_the_layers():
    proc = run_cli("search.py", "--config", CONFIG, "--stage", "describe", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["space"] == "fbnet_cifar10"
    assert info["vital"] == ["L2", "L6", "L10", "L14", "L18", "L22"]
    assert len(info["searchable"]) == 22
