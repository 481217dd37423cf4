"""End-to-end: analyze.py's subcommands as a user runs them (subprocess, tiny inputs)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from src.resource import profile
from src.space.space import load_arch
from tests.analysis_fixtures import TINY_ARCH, make_synthetic_run
from tests.e2e.helpers import last_json, run_cli


def test_hourglass_cli(tmp_path):
    out = tmp_path / "a.png"
    proc = run_cli("analyze.py", "hourglass", "--arch", "config/arch/fbnet_a.yaml", "--output",
               str(out), "--json")
    assert out.stat().st_size > 10_000
    data = last_json(proc)
    rows = profile(load_arch("config/arch/fbnet_a.yaml"))
    assert data["params"] == [r.params for r in rows] and data["vital"] == [r.vital for r in rows]
    assert "wrote" in proc.stderr  # human lines go to stderr under --json


def test_report_cli(tmp_path):
    make_synthetic_run(str(tmp_path / "run"), steps_vital=10, steps_nonvital=20,
                       with_files=("config.yaml", "search_log.jsonl", "summary.json"))
    proc = run_cli("analyze.py", "report", "--run", str(tmp_path / "run"), "--json")
    facts = last_json(proc)
    page = Path(facts["report"]).read_text(encoding="utf-8")
    assert facts["report"] == str(tmp_path / "run" / "report.html")
    assert sorted(facts["missing"]) == ["arch.yaml", "arch_params.npz"]
    assert page.count('<img src="data:image/png;base64,') == len(facts["images"]) >= 5
    assert "2.80M" in page and "120.00M" in page


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint written by train.py itself (its real format), briefly trained."""
    folder = tmp_path_factory.mktemp("train")
    arch = folder / "tiny.yaml"
    arch.write_text(yaml.safe_dump(TINY_ARCH, sort_keys=False))
    proc = run_cli("train.py", "--arch", str(arch), "--epochs", "1", "--output_dir",
               str(folder / "out"), "--set", "data.image_size=16", "--set",
               "train.steps_per_epoch=8", "--json")
    return last_json(proc)["best_ckpt"]


def test_importance_cli_on_a_train_py_checkpoint(checkpoint, tmp_path):
    out = tmp_path / "imp"
    proc = run_cli("analyze.py", "importance", "--ckpt", checkpoint, "--p", "0.5", "1.0",
               "--seeds", "1", "--max_images", "100", "--output_dir", str(out), "--json")
    result = last_json(proc)
    names = {"importance.json", "importance.csv", "importance_p0.5.png", "importance_p1.png",
             "importance_all.png"}
    assert names <= set(os.listdir(out))
    assert result["rows"] == 7 * 2  # stem, 5 layers, head x 2 probabilities
    assert set(result["summary"]) == {"0.5", "1", "all_p"}
    table = json.loads((out / "importance.json").read_text())
    assert table["images"] == 100 and table["dataset"] == "digits"
    assert "vital blocks hurt" in proc.stderr


def test_importance_cli_errors_are_one_line(tmp_path):
    proc = run_cli("analyze.py", "importance", "--ckpt", str(tmp_path / "none.ckpt"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: checkpoint")
    proc = run_cli("analyze.py", "importance", "--ckpt", "x.ckpt", "--p", "1.5", check=False)
    assert proc.returncode == 2 and "outside (0, 1]" in proc.stderr


def test_ablations_dry_run_lists_the_commands(tmp_path):
    proc = run_cli("analyze.py", "ablations", "--set-name", "sampler", "--dry-run",
               "--retrain-epochs", "2", "--output_dir", str(tmp_path), "--set",
               "search.steps_per_epoch=2")
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4
    assert "config/ablation/m8.yaml" in lines[0] and "search.steps_per_epoch=2" in lines[0]
    assert "config/ablation/gumbel_softmax.yaml" in lines[2]
    assert "train.py" in lines[1] and "--epochs 2" in lines[1]


def test_ablations_run_one_tiny_config(tmp_path):
    """The runner around the real search.py: one tiny config, one step per stage."""
    proc = run_cli("analyze.py", "ablations", "--configs", "no_vital_priori", "--output_dir",
               str(tmp_path), "--set", "search.steps_per_epoch=1", "--set",
               "search.epochs_nvital=1", "--set", "proposal.report_samples=100", "--json",
               check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = last_json(proc)
    (row,) = result["rows"]
    assert (row["config"], row["m"], row["vital_priori"], row["status"]) == \
        ("no_vital_priori", 8, False, "ok")
    assert row["target_params"] == 150e3 and abs(row["params_error"]) < 0.05
    assert row["stage1_vital_s"] is None and row["stage2_s"] > 0
    assert "| no_vital_priori | 8 | no |" in (tmp_path / "ablations.md").read_text()
