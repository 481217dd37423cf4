"""End-to-end: analyze.py compare on tiny configs (tests/fixtures/tiny_compare.yaml), as a user
runs it: searched and random networks retrained alike, the table, the picture, the supernet
ranking; a second run skips what is done and redoes only what is missing."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from src.resource import count
from src.space.space import load_arch
from tests.e2e.helpers import last_json, run_cli

CONFIG = "tests/fixtures/tiny_compare.yaml"


def test_compare_end_to_end_and_its_resume(tiny_search_run, tmp_path):
    out = tmp_path / "cmp"
    config = CONFIG
    reference, _, _ = tiny_search_run  # the seed-0 search of the config: reused, not rerun
    shutil.copytree(reference, out / "search" / "seed0")

    proc = run_cli("analyze.py", "compare", "--config", str(config), "--output_dir", str(out),
                   "--jobs", "2", "--json")
    result = last_json(proc.stdout)
    nets = {n["name"]: n for n in result["nets"]}
    assert sorted(nets) == ["random_01", "random_02", "searched_s0", "vital_01", "vital_02"]
    targets = json.loads((out / "search" / "seed0" / "summary.json").read_text())["targets"]
    for n in nets.values():  # every net retrained, counted with the one counter, same size
        assert n["top1"] is not None and 0 <= n["top1"] <= 100 and n["epochs"] == 1
        arch = load_arch(n["arch"])
        c = count(arch)
        assert (n["params"], n["flops"]) == (c["params"], c["flops"])
        assert (n["skips"], n["grouped"]) == (sum(o.is_skip for o in arch.ops),
                                              sum(o.g > 1 for o in arch.ops))
        if n["group"] != "searched":
            assert all(abs(c[k] / t - 1) <= 0.05 + 1e-9 for k, t in targets.items())
    assert sorted(n["rank"] for n in nets.values()) == [1, 2, 3, 4, 5]
    assert set(result["groups"]) == {"searched", "random", "random_vital"}
    # the supernet of seed 0 scores its own result and the nets drawn with its vital ops
    assert {"searched_s0", "vital_01", "vital_02"} <= set(result["kendall_tau"]["0"]["nets"])
    assert "search seed0" not in proc.stderr  # the finished search was reused
    assert "(core " in proc.stderr  # two steps at once, each on its own core
    for name in ("compare.md", "compare.csv", "compare.json", "compare.png"):
        assert (out / name).stat().st_size > 100
    assert "| searched_s0 | searched |" in (out / "compare.md").read_text(encoding="utf-8")

    assert not any(result["pending"].values())
    assert "Not finished" not in (out / "compare.md").read_text(encoding="utf-8")

    shutil.rmtree(out / "train" / "random_02")  # lost: only that one is done again
    report = run_cli("analyze.py", "compare", "--config", str(config), "--output_dir", str(out),
                     "--report", "--json")  # where it stands, nothing run
    assert " -> " not in report.stderr
    partial = last_json(report.stdout)
    assert partial["pending"] == {"search": 0, "random": 0, "train": 1}
    assert [n["name"] for n in partial["nets"] if n["top1"] is None] == ["random_02"]
    assert not (out / "train" / "random_02").exists()
    assert "Not finished** (steps left: train 1)" in (out / "compare.md").read_text("utf-8")
    again = run_cli("analyze.py", "compare", "--config", str(config), "--output_dir", str(out),
                    "--json")
    started = [ln for ln in again.stderr.splitlines() if " -> " in ln]
    assert len(started) == 1 and "train random_02 ->" in started[0]
    assert "[1/1] train random_02 done" in again.stderr
    redone = {n["name"]: n for n in last_json(again.stdout)["nets"]}
    assert redone["random_02"]["top1"] == nets["random_02"]["top1"]  # same seed, same result
    assert redone["searched_s0"]["top1"] == nets["searched_s0"]["top1"]


def test_report_before_any_search_is_an_error(tmp_path):
    proc = run_cli("analyze.py", "compare", "--config", CONFIG, "--output_dir",
                   str(tmp_path / "none"), "--report", check=False)
    assert proc.returncode == 2
    assert "error: nothing to report" in proc.stderr and "without --report" in proc.stderr
    assert not (tmp_path / "none").exists()


def test_archs_from_retrains_an_earlier_comparisons_networks_with_another_recipe(
        tiny_search_run, tmp_path):
    first = tmp_path / "first"
    reference, _, _ = tiny_search_run
    shutil.copytree(reference, first / "search" / "seed0")
    config = tmp_path / "draws.yaml"  # the earlier comparison: only its search and draws
    config.write_text(open(CONFIG, encoding="utf-8").read().replace("random_vital: 2",
                                                                    "random_vital: 0"))
    draw = run_cli("search.py", "--config", "tests/fixtures/tiny_search.yaml", "--strategy",
                   "random", "--num_archs", "2", "--output_dir", str(first / "random"),
                   "--set", "search.seed=100", "--json")
    assert draw.returncode == 0
    longer = tmp_path / "longer.yaml"
    recipe = tmp_path / "train2.yaml"
    text = open("tests/fixtures/tiny_train.yaml", encoding="utf-8").read()
    assert "epochs: 1" in text
    recipe.write_text(text.replace("epochs: 1", "epochs: 2").replace(
        "../../config/", os.path.abspath("config") + "/"))
    longer.write_text(config.read_text(encoding="utf-8").replace(
        "tests/fixtures/tiny_train.yaml", str(recipe)) + f"archs_from: {first}\n")
    out = tmp_path / "longer"
    early = run_cli("analyze.py", "compare", "--config", str(longer), "--output_dir", str(out),
                    "--report", check=False)   # nothing retrained here yet
    assert early.returncode == 2 and "has been retrained here yet" in early.stderr
    assert not out.exists()
    proc = run_cli("analyze.py", "compare", "--config", str(longer), "--output_dir", str(out),
                   "--json")
    nets = {n["name"]: n for n in last_json(proc.stdout)["nets"]}
    assert sorted(nets) == ["random_01", "random_02", "searched_s0"]
    assert all(n["epochs"] == 2 and n["top1"] is not None for n in nets.values())
    assert all(n["arch"].startswith(str(first)) for n in nets.values())  # the same files
    assert not (out / "search").exists() and not (out / "random").exists()  # nothing redone
    assert " -> " + str(out / "train") in proc.stderr
    page = (out / "compare.md").read_text(encoding="utf-8")
    assert f"networks of {first}" in page and f"top-1 in {first} (%)" in page
    # the earlier comparison retrained nothing: no top-1 there, no agreement to report
    assert all(n["source_top1"] is None for n in nets.values())
    assert last_json(proc.stdout)["recipes"] is None

    lacking = tmp_path / "lacking.yaml"   # it asks for draws the earlier one never made
    lacking.write_text(longer.read_text(encoding="utf-8").replace("random_vital: 0",
                                                                  "random_vital: 2"))
    bad = run_cli("analyze.py", "compare", "--config", str(lacking), "--output_dir",
                  str(tmp_path / "bad"), check=False)
    assert bad.returncode == 2
    assert f"error: archs_from '{first}' lacks what this comparison retrains: random_vital" \
        in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_the_networks_of_the_searchs_other_proposals_are_retrained_beside_it(
        tiny_search_run, tmp_path):
    """proposals: true: each of seed 0's m proposals gives its own arg-max network (one net per
    distinct architecture; the derived one is the searched net), retrained alike, with Π's
    probability in the table and Π's choice ranked among them."""
    reference, summary, _ = tiny_search_run
    out = tmp_path / "props"
    shutil.copytree(reference, out / "search" / "seed0")
    config = tmp_path / "props.yaml"
    config.write_text(open(CONFIG, encoding="utf-8").read().replace("random: 2", "random: 0")
                      .replace("random_vital: 2", "random_vital: 0") + "proposals: true\n")
    proc = run_cli("analyze.py", "compare", "--config", str(config), "--output_dir", str(out),
                   "--jobs", "2", "--json")
    result = last_json(proc.stdout)
    recs = json.loads((out / "proposals" / "proposals.json").read_text())["proposals"]
    assert [r["proposal"] for r in recs] == [0, 1, 2, 3]  # the tiny search's m = 4
    assert sum(r["pi"] for r in recs) == pytest.approx(1.0)
    chosen = [r for r in recs if r["same_as"] == "searched_s0"]
    assert summary["proposal"] in [r["proposal"] for r in chosen]  # Π's pick is the derived net
    nets = {n["name"]: n for n in result["nets"]}
    distinct = {f"proposal_{r['proposal']}" for r in recs if r["same_as"] is None}
    assert set(nets) == {"searched_s0"} | distinct
    ops = {}
    for r in recs:   # each file is its proposal's arg-max on the stage-2 layers, vital ops fixed
        arch = load_arch(str(out / "proposals" / r["file"]))
        names = tuple(o.name for o in arch.ops)
        assert (names == tuple(summary["ops"])) == (r["same_as"] == "searched_s0")
        assert (r["same_as"] is not None) == (names in ops.values() or
                                              names == tuple(summary["ops"]))
        ops[r["proposal"]] = names
    assert nets["searched_s0"]["pi"] == pytest.approx(sum(r["pi"] for r in chosen))
    assert all(n["top1"] is not None and n["epochs"] == 1 for n in nets.values())
    assert f"[{len(nets)}/{len(nets)}] train" in proc.stderr  # counted once they were written
    choice = result["proposals"]
    assert choice["n"] == len(nets) and 1 <= choice["chosen_rank"] <= len(nets)
    assert choice["best_top1"] == max(n["top1"] for n in nets.values())
    assert "Π's choice among the" in (out / "compare.md").read_text(encoding="utf-8")
    assert not any(result["pending"].values())
    # seed 0's supernet can score every proposal's net (they keep its vital ops)
    if len(nets) >= 3:
        assert set(result["kendall_tau"]["0"]["nets"]) == set(nets)
