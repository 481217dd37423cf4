"""Tests for src/analysis: hourglass data and picture, block importance on a trained tiny net,
the search-run report, and the ablation configs and table."""
from __future__ import annotations

import csv
import io
import json
import os
import re

import numpy as np
import pytest

from src.analysis import ablation, report
from src.analysis.hourglass import hourglass_data, plot_hourglass
from src.analysis.importance import channel_mask, maskable_blocks
from src.config import format_size, read_yaml
from src.errors import HourNASError
from src.resource import profile
from src.space.space import load_arch
from tests.analysis_fixtures import (SYN_TARGETS, make_synthetic_run, tiny_arch,
                                     train_tiny_checkpoint)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- hourglass

@pytest.mark.parametrize("name", ["fbnet_a", "mobilenet_v2"])
def test_hourglass_png_and_its_data_are_the_profile(tmp_path, name):
    arch = load_arch(name)
    out = tmp_path / f"{name}.png"
    data = plot_hourglass(arch, str(out))
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10_000
    rows = profile(arch)
    assert data["name"] == [r.name for r in rows]
    assert data["params"] == [r.params for r in rows]
    assert data["flops"] == [r.flops for r in rows]
    assert data["vital"] == [r.vital for r in rows]
    assert data["op"] == [r.op for r in rows]


def test_hourglass_of_tiny_arch_marks_its_vital_layers():
    data = hourglass_data(tiny_arch())
    assert data["name"] == ["stem", "L1", "L2", "L3", "L4", "L5", "head", "classifier"]
    assert data["vital"] == [True, False, True, False, False, True, True, True]


# ----------------------------------------------------------------------------- importance

def test_channel_mask_is_seeded_and_respects_p():
    a = channel_mask(1000, 0.3, seed=0, block=2)
    assert a.dtype == np.float32 and set(np.unique(a)) <= {0.0, 1.0}
    assert np.array_equal(a, channel_mask(1000, 0.3, seed=0, block=2))
    assert not np.array_equal(a, channel_mask(1000, 0.3, seed=1, block=2))
    assert not np.array_equal(a, channel_mask(1000, 0.3, seed=0, block=3))
    assert abs((1 - a.mean()) - 0.3) < 0.05
    assert channel_mask(16, 1.0, seed=5, block=0).sum() == 0


def test_maskable_blocks_are_the_profile_without_classifier():
    arch = tiny_arch()
    blocks = maskable_blocks(arch)
    rows = [r for r in profile(arch) if r.name != "classifier"]
    assert [(b.name, b.vital, b.channels) for b in blocks] == \
        [(r.name, r.vital, r.c_out) for r in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("imp") / "tiny.ckpt")
    top1 = train_tiny_checkpoint(path, epochs=4)
    return path, top1


@pytest.fixture(scope="module")
def importance_result(trained):
    from src.analysis.importance import EvalSet, block_importance, eval_data_config, load_trained
    path, _ = trained
    net, arch, extra = load_trained(path)
    data_cfg = eval_data_config(arch, extra)
    assert (data_cfg.name, data_cfg.image_size) == ("digits", 16)
    return arch, block_importance(net, arch, EvalSet(data_cfg, 128), ps=(0.3, 1.0), seeds=2)


def test_tiny_net_is_trained(trained):
    assert trained[1] > 60.0  # digits, 10 classes: well above chance


def test_importance_table_rows_and_vital_flags(importance_result):
    arch, result = importance_result
    blocks = maskable_blocks(arch)
    assert len(result.rows) == len(blocks) * 2
    assert [(r.block, r.p) for r in result.rows] == [(b.name, p) for b in blocks for p in (0.3, 1.0)]
    vital = {r.name: r.vital for r in profile(arch)}
    assert all(r.vital == vital[r.block] for r in result.rows)
    assert all(len(r.top1_per_seed) == 2 for r in result.rows)
    for r in result.rows:
        assert r.drop_mean == pytest.approx(result.baseline_top1 - r.top1_mean)
        if r.p == 1.0:
            assert r.masked_fraction == 1.0
    assert result.baseline_top1 > 60.0


def test_importance_grows_with_p(importance_result):
    _, result = importance_result
    mean = {p: np.mean([r.drop_mean for r in result.rows if r.p == p]) for p in (0.3, 1.0)}
    assert mean[1.0] >= mean[0.3]
    # zeroing a whole block without a shortcut leaves the network at chance level
    stem = next(r for r in result.rows if r.block == "stem" and r.p == 1.0)
    assert stem.top1_mean < 25.0


def test_importance_graph_is_compiled_once(importance_result):
    _, result = importance_result
    t = result.timing
    # 1 intact + 7 blocks x (2 seeds at p=0.3 + 1 shared all-zero mask at p=1.0)
    assert t["evaluations"] <= 1 + 7 * 3
    assert t["eval_s_median"] < t["first_eval_s"]


def test_importance_outputs(tmp_path, importance_result):
    from src.analysis.importance import verdict_lines, write_importance
    _, result = importance_result
    paths = write_importance(result, str(tmp_path))
    for key in ("png_p0.3", "png_p1", "png_all"):
        assert open(paths[key], "rb").read(8) == PNG_MAGIC
    table = list(csv.DictReader(io.StringIO(open(paths["csv"]).read())))
    assert len(table) == len(result.rows)
    assert {row["vital"] for row in table} == {"True", "False"}
    data = json.load(open(paths["json"]))
    assert set(data["summary"]) == {"0.3", "1", "all_p"}
    assert data["summary"]["0.3"]["vital_blocks"] == 4
    assert data["summary"]["0.3"]["nonvital_blocks"] == 3
    lines = verdict_lines(result)
    assert len(lines) == 2 and all("vital blocks hurt" in ln for ln in lines)


def test_masked_net_with_ones_is_the_network_and_zeroed_stem_is_constant():
    import mindspore as ms

    from src.analysis.importance import MaskedNet
    from src.childnet import ChildNet
    from src.context import setup_context
    setup_context("CPU", "graph")
    arch = tiny_arch()
    net = ChildNet(arch)
    net.set_train(False)
    widths = [b.channels for b in maskable_blocks(arch)]
    masked = MaskedNet(net, widths)
    masked.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    ones = np.ones(sum(widths), np.float32)
    np.testing.assert_allclose(masked(x, ms.Tensor(ones)).asnumpy(), net(x).asnumpy(), atol=1e-6)
    no_stem = ones.copy()
    no_stem[:widths[0]] = 0
    out = masked(x, ms.Tensor(no_stem)).asnumpy()
    np.testing.assert_allclose(out, np.repeat(out[:1], 4, axis=0), atol=1e-5)
    with pytest.raises(HourNASError, match="block widths"):
        MaskedNet(net, widths[:-1])


# ----------------------------------------------------------------------------- report

def _images(page: str) -> list[str]:
    return re.findall(r'<img src="(data:image/png;base64,[A-Za-z0-9+/=]+)"', page)


def test_report_embeds_pictures_and_targets(tmp_path):
    facts = make_synthetic_run(str(tmp_path / "run"))
    path, info = report.build_report(str(tmp_path / "run"))
    page = open(path, encoding="utf-8").read()
    assert info["missing"] == [] and info["problems"] == []
    imgs = _images(page)
    # θ over time (2 stages), stage-1 θ, final θ + π, π over time, cloud, losses, hourglass
    assert len(imgs) == 8 == len(info["images"])
    assert all(len(i) > 5000 for i in imgs)
    assert not re.search(r'(src|href)="(http|//|file:)', page)  # nothing external
    for value in (format_size(SYN_TARGETS["params"]), format_size(SYN_TARGETS["flops"]),
                  format_size(facts["achieved"]["params"]), format_size(facts["achieved"]["flops"])):
        assert value in page
    assert info["targets"] == SYN_TARGETS


def test_report_says_what_is_missing(tmp_path):
    run = tmp_path / "run"
    make_synthetic_run(str(run), with_files=("config.yaml", "search_log.jsonl"))
    path, info = report.build_report(str(run), str(tmp_path / "r.html"))
    page = open(path, encoding="utf-8").read()
    assert sorted(info["missing"]) == ["arch.yaml", "arch_params.npz", "summary.json"]
    for name in info["missing"]:
        assert f"<code>{name}</code>" in page
    assert "Not available: arch_params.npz is missing" in page
    assert "Not available: arch.yaml is missing" in page
    assert len(_images(page)) == 5  # θ over time x2, π over time, cloud, losses
    # targets still come from config.yaml
    assert format_size(SYN_TARGETS["params"]) in page


def test_report_of_an_empty_folder_and_of_no_folder(tmp_path):
    path, info = report.build_report(str(tmp_path))
    page = open(path, encoding="utf-8").read()
    assert len(info["missing"]) == len(report.FILES) and not _images(page)
    with pytest.raises(HourNASError, match="does not exist"):
        report.build_report(str(tmp_path / "nope"))


# ----------------------------------------------------------------------------- ablations

def test_ablation_sets_and_configs():
    assert ablation.config_names("m") == ["m1", "m2", "m4", "m8", "m16"]
    assert ablation.config_names("all") == ["m1", "m2", "m4", "m8", "m16", "no_vital_priori",
                                            "gumbel_softmax"]
    with pytest.raises(HourNASError, match="valid: m, priori, sampler, all"):
        ablation.config_names("tau")
    expect = {"m1": (1, True, "gumbel_max"), "m2": (2, True, "gumbel_max"),
              "m4": (4, True, "gumbel_max"), "m8": (8, True, "gumbel_max"),
              "m16": (16, True, "gumbel_max"), "no_vital_priori": (8, False, "gumbel_max"),
              "gumbel_softmax": (8, True, "gumbel_softmax")}
    for name, (m, priori, sampler) in expect.items():
        for full, base in ((False, "../search/default.yaml"),
                           (True, "../../search/fbnet_cifar10.yaml")):
            data = read_yaml(ablation.config_path(name, full))
            assert data["_base_"] == base
            assert data["proposal"]["m"] == m
            assert data["search"]["vital_priori"] is priori
            assert data["search"]["sampler"] == sampler
            assert ("steps_per_epoch" in data["search"]) is not full  # tiny ones are cut short
    assert ablation.available_configs() == ablation.available_configs(full=True) == sorted(expect)


def test_ablation_configs_load_with_the_search_schema():
    from src.config import load_config
    from src.search.config import SearchConfig
    cfg = load_config(SearchConfig, ablation.config_path("no_vital_priori"))
    assert cfg.search.vital_priori is False and cfg.proposal.m == 8


def test_ablation_table_from_run_folders(tmp_path):
    rows = []
    for name, m in (("m1", 1), ("m8", 8)):
        facts = make_synthetic_run(str(tmp_path / name), m=m, steps_vital=5, steps_nonvital=5)
        row = ablation.read_row(name, str(tmp_path / name))
        row.search_wall_s = 50.0
        rows.append(row)
    rows.append(ablation.AblationRow(config="m16", status="search failed (exit 2): error: x"))
    md = ablation.table_markdown(rows, "t")
    assert "| m1 | 1 | yes | gumbel_max | 2.80M → " in md
    assert "| 12.5 | 30.2 | 50.0 |" in md
    assert "search failed (exit 2)" in md
    table = list(csv.DictReader(io.StringIO(ablation.table_csv(rows))))
    assert [r["config"] for r in table] == ["m1", "m8", "m16"]
    assert float(table[1]["achieved_flops"]) == pytest.approx(facts["achieved"]["flops"])
    assert table[0]["target_params"] == "2.8e+06" and table[2]["achieved_params"] == ""


def test_ablation_runner_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(ablation, "ROOT", str(tmp_path))  # a checkout without search.py
    with pytest.raises(ablation.AblationUnavailable, match="search.py is not in this checkout"):
        ablation.run_ablations("priori", str(tmp_path / "out"), log=lambda m: None)


def test_retraining_uses_the_search_data(tmp_path):
    (tmp_path / "config.yaml").write_text("space: x\ndata: {name: digits, image_size: 16, "
                                          "path: null}\n")
    assert ablation.same_data(str(tmp_path)) == ["--set", "data.name=digits",
                                                 "--set", "data.image_size=16"]
    assert ablation.same_data(str(tmp_path / "none")) == []


FAKE_SEARCH = '''
import json, os, sys
a = sys.argv
cfg, out = a[a.index("--config") + 1], a[a.index("--output_dir") + 1]
os.makedirs(out, exist_ok=True)
name = os.path.basename(cfg)[:-5]
if name == "gumbel_softmax":
    print("error: this one fails", file=sys.stderr)
    sys.exit(2)
open(os.path.join(out, "config.yaml"), "w").write(
    "proposal: {m: 8}\\nsearch: {vital_priori: true, sampler: gumbel_max}\\n"
    "data: {name: digits, image_size: 32}\\n")
open(os.path.join(out, "arch.yaml"), "w").write("name: x\\n")
json.dump({"targets": {"params": 150e3, "flops": 20e6}, "achieved": {"params": 151e3,
           "flops": 19e6}, "relative_error": {"params": 0.0067, "flops": -0.05},
           "stage_seconds": {"vital": 1.5, "nonvital": 2.5}},
          open(os.path.join(out, "summary.json"), "w"))
print(json.dumps({"args": a[1:]}))
'''
FAKE_TRAIN = '''
import json, sys
print("training ...")
print(json.dumps({"best_top1": 91.25, "args": sys.argv[1:]}))
'''


def test_ablation_runner_with_stand_in_entry_points(tmp_path, monkeypatch):
    """The runner's plumbing (commands, retraining, failures, table) without a real search."""
    (tmp_path / "search.py").write_text(FAKE_SEARCH)
    (tmp_path / "train.py").write_text(FAKE_TRAIN)
    (tmp_path / "config" / "search").mkdir(parents=True)
    (tmp_path / "config" / "search" / "default.yaml").write_text("space: x\n")
    monkeypatch.setattr(ablation, "ROOT", str(tmp_path))
    logs = []
    rows, paths = ablation.run_ablations("sampler", str(tmp_path / "out"), retrain_epochs=2,
                                         search_args=["--set", "a=1"], log=logs.append)
    ok, failed = rows
    assert (ok.config, ok.status, ok.retrain_top1, ok.retrain_epochs) == ("m8", "ok", 91.25, 2)
    assert ok.achieved == {"params": 151e3, "flops": 19e6} and ok.search_wall_s > 0
    assert failed.config == "gumbel_softmax"
    assert failed.status == "search failed (exit 2): error: this one fails"
    retrain_log = (tmp_path / "out" / "m8" / "retrain.out").read_text()
    assert "--epochs 2" in retrain_log and "data.image_size=32" in retrain_log
    assert "--set a=1" in (tmp_path / "out" / "m8" / "search.out").read_text()
    md = open(paths["markdown"]).read()
    assert "91.25 (2 ep)" in md and "search failed" in md
    # a finished search is kept with --reuse
    rows, _ = ablation.run_ablations("sampler", str(tmp_path / "out"), reuse=True,
                                     log=logs.append)
    assert any("reusing the finished search" in m for m in logs)
    assert rows[0].search_wall_s is None
    with pytest.raises(HourNASError, match="unknown ablation config 'm3'"):
        ablation.run_ablations("m", str(tmp_path / "out"), configs=["m3"])
