"""config/reproduce.yaml and src/reproduce.py: every row's configs load, the paper's figures are
the paper's, the stage decisions (skip / resume / new), the commands, the input checks and the
summary."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from src.config import load_config
from src.errors import HourNASError
from src.reproduce import (MD_HEADER, ROOT, STAGES, ReproduceRun, check_run, get_experiment, load_configs,
                           load_table, stage_command, stage_state, summarize)
from src.resource import count
from src.search.config import SearchConfig
from src.space.space import load_arch
from src.train.config import TrainConfig

TABLE = load_table()
# the paper's table rows, verbatim from its text (the whole text is not part of the project)
PAPER = Path(ROOT) / "tests" / "fixtures" / "hournas_paper_tables.txt"
TINY_ARCH = """\
name: hournas_tiny
input_size: 16
num_classes: 10
stem: {c: 8, k: 3, s: 1}
blocks: [ir_r1_k3_s2_e3_c16, skip_r1_s2_c24, ir_r1_k3_s1_e1_c24]
head: 32
"""


def test_the_table_has_every_reproducible_row_of_the_paper():
    rows = {e.paper.row for e in TABLE.values() if e.paper}
    assert rows == {"HourNAS-FBNetSS-A", "HourNAS-FBNetSS-B", "HourNAS-EFBNetSS-C",
                    "HourNAS-EFBNetSS-D", "HourNAS-MnasNetSS-E", "HourNAS-EfficientNetSS-F",
                    "HourNAS-FBNetSS-G", "HourNAS-EFBNetSS-H", "HourNAS-FBNetSS-I",
                    *(f"HourNAS (m={m})" for m in (1, 2, 4, 8, 16))}
    assert {"fbnet_b_imagenet", "efficientnet_f_imagenet", "fbnet_cifar10"} <= set(TABLE)


@pytest.mark.parametrize("name", list(TABLE))
def test_every_rows_configs_exist_and_load(name):
    exp = TABLE[name]
    for path in (exp.search, exp.train):
        assert (Path(ROOT) / path).is_file(), path
    search = load_config(SearchConfig, os.path.join(ROOT, exp.search))
    train = load_config(TrainConfig, os.path.join(ROOT, exp.train))
    assert search.data.name == train.data.name
    assert load_configs(exp)[0].space == search.space
    if exp.paper is None:  # not the paper's: the built-in digits, or Fashion-MNIST with the
        # dataset's own published table beside it
        assert search.data.name in ("digits", "fashion_mnist")
        assert bool(exp.published) == (search.data.name == "fashion_mnist")
        return
    want = "cifar10" if exp.paper.table == 2 else "imagenet"
    assert search.data.name == want and search.space.endswith(want)
    # the paper's search settings (Sec. 4.1) in every paper row
    s, p = search.search, search.proposal
    assert (s.epochs_vital, s.epochs_nvital, s.w_lr, s.arch_lr, s.tau, s.tau_decay, s.alpha) == \
        (1, 1, 0.1, 0.01, 5.0, 0.9999, 5.0)
    assert p.m == (int(re.search(r"m=(\d+)", exp.paper.row).group(1)) if exp.paper.table == 2
                   else 8)
    assert s.vital_priori == (exp.paper.table != 4)
    assert s.sampler == ("gumbel_softmax" if exp.paper.table == 5 else "gumbel_max")
    if exp.paper.table != 2:  # the targets of the baseline each ImageNet row is compared with
        space = search.space.split("_")[0]
        large = exp.paper.row[-1] in "BD"
        want_targets = {"fbnet": (5.5e6, 375e6) if large else (4.8e6, 295e6),
                        "efbnet": (5.5e6, 375e6) if large else (4.8e6, 295e6),
                        "mnasnet": (3.9e6, 312e6), "efficientnet": (5.3e6, 390e6)}[space]
        assert (p.targets["params"], p.targets["flops"]) == want_targets
        assert train.train.activation == ("swish" if space == "efficientnet" else "relu")


def _paper_rows(text: str) -> dict[tuple[int, str], list[float]]:
    """{(table, model): [numbers]} of the paper's Tables 1, 2, 4 and 5 as extracted to text."""
    def num(cell: str) -> float | None:
        return None if cell == "-" else float(cell)

    rows, table = {}, None
    for line in text.splitlines():
        m = re.match(r"^Table (\d+)\.", line)
        if m:
            table = int(m.group(1))
            continue
        cells = line.split("\t")
        if table in (1, 4, 5) and len(cells) == 8 and cells[2] == "ImageNet":
            rows[(table, re.sub(r" \(.*\)$", "", cells[0]))] = [num(c) for c in cells[3:]]
        elif table == 2 and len(cells) == 4 and cells[0].startswith("HourNAS"):
            rows[(2, cells[0])] = [num(c) for c in cells[1:]]
    return rows


def test_the_paper_figures_are_the_papers_cited_by_table():
    rows = _paper_rows(PAPER.read_text(encoding="utf-8"))
    assert len(rows) > 20  # the extraction found the tables
    for name, exp in TABLE.items():
        p = exp.paper
        if p is None:
            continue
        assert (p.table, p.row) in rows, (name, p.row, p.table)
        got = rows[(p.table, p.row)]
        if p.table == 2:  # Test Error, Params, Search Cost
            assert [p.test_error, p.params_m, p.search_gpu_days] == got, name
        else:             # Search Cost, Params, FLOPs, Top-1, Top-5
            assert [p.search_gpu_days, p.params_m, p.flops_m, p.top1, p.top5] == got, name


def test_unknown_experiment_names_the_valid_ones():
    with pytest.raises(HourNASError, match=r"unknown experiment 'fbnet_b_imagnet' \(did you mean "
                                           r"'fbnet_b_imagenet'\?\); valid: fbnet_a_imagenet, "):
        get_experiment("fbnet_b_imagnet")


# ----------------------------------------------------------------------------- stages

def run_of(tmp_path, name="tiny_digits", **kw) -> ReproduceRun:
    return ReproduceRun(name, TABLE[name], str(tmp_path / "out"), **kw)


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_fresh_run_starts_every_stage(tmp_path):
    run = run_of(tmp_path, "fbnet_b_imagenet", device_target="GPU", devices=8,
                 data_path="/data/imagenet")
    out = run.out
    assert [stage_state(run, s)[0] for s in STAGES] == ["new"] * 5
    assert [stage_command(run, s) for s in STAGES] == [
        ["bash", "scripts/run_search_gpu.sh", "8", "config/search/fbnet_imagenet_fbnetc.yaml",
         f"{out}/search", "/data/imagenet"],
        ["bash", "scripts/run_distribute_train_gpu.sh", "8", f"{out}/search/arch.yaml",
         "config/train/imagenet.yaml", f"{out}/train", "/data/imagenet"],
        ["bash", "scripts/run_eval_gpu.sh", f"{out}/train/hournas_fbnet_imagenet_best.ckpt",
         "/data/imagenet", "--", "--json"],
        ["python", "export.py", "--ckpt", f"{out}/train/hournas_fbnet_imagenet_best.ckpt",
         "--file_format", "MINDIR", "--output_dir", f"{out}/export", "--device_target", "GPU",
         "--json"],
        ["python", "-m", "src.reproduce", "summary", "fbnet_b_imagenet", "--device_target", "GPU",
         "--devices", "8", "--output_dir", out, "--data_path", "/data/imagenet"]]


def test_one_device_trains_standalone_and_the_digits_rows_take_no_data(tmp_path):
    run = run_of(tmp_path, "digits", device_target="Ascend", devices=1)
    assert stage_command(run, "search")[:3] == ["bash", "scripts/run_search_ascend.sh", "1"]
    assert stage_command(run, "train") == [
        "bash", "scripts/run_standalone_train_ascend.sh", f"{run.out}/search/arch.yaml",
        "config/train/digits.yaml", f"{run.out}/train"]
    # the default search's name: hournas_{space at width 0.25}
    assert stage_command(run, "eval")[2].endswith("/hournas_fbnet_cifar10_w0.25_best.ckpt")


def test_search_resumes_from_its_state_and_is_skipped_when_derived(tmp_path):
    run = run_of(tmp_path)
    write(Path(run.path("search", "search_state.ckpt")))
    assert stage_state(run, "search")[0] == "resume"
    assert stage_command(run, "search")[-2:] == ["--", "--resume"]
    write(Path(run.path("search", "arch.yaml")), TINY_ARCH.replace("hournas_tiny", "hournas_x"))
    assert stage_state(run, "search")[0] == "resume"  # arch.yaml alone: not finished
    write(Path(run.path("search", "summary.json")), "{}")
    assert stage_state(run, "search")[0] == "done"
    assert run.arch_name() == "hournas_x"  # once searched, the file's name counts


def test_training_resumes_from_a_periodic_checkpoint_and_is_done_when_logged(tmp_path):
    run = run_of(tmp_path)
    write(Path(run.path("train", "hournas_tiny_best.ckpt")))  # a best checkpoint alone: new
    write(Path(run.path("train", "other-1_4.ckpt")))           # another net's: not ours
    assert stage_state(run, "train")[0] == "new"
    write(Path(run.path("train", "hournas_tiny-1_4.ckpt")))
    assert stage_state(run, "train")[0] == "resume"
    assert stage_command(run, "train")[-2:] == ["--", "--resume"]
    log = Path(run.path("train", "train_log.jsonl"))
    write(log, json.dumps({"event": "stop", "reason": "SIGTERM"}) + "\n")
    assert stage_state(run, "train")[0] == "resume"
    log.write_text(log.read_text() + json.dumps({"event": "done", "global_step": 4}) + "\n")
    assert stage_state(run, "train")[0] == "done"


def test_eval_counts_only_a_result_for_the_current_best_checkpoint(tmp_path):
    run = run_of(tmp_path)
    ckpt = write(Path(run.best_ckpt()))
    log = Path(run.path("train", "log", "eval.log"))
    res = {"top1": 50.0, "top5": 90.0, "images": 360, "ckpt": str(ckpt)}
    write(log, "[scripts/run_eval_cpu.sh] python eval.py ...\n" + json.dumps(
        {**res, "ckpt": "/elsewhere/hournas_tiny_best.ckpt"}) + "\n")
    assert stage_state(run, "eval")[0] == "new"
    write(log, "progress\n" + json.dumps(res) + "\n")
    assert stage_state(run, "eval")[0] == "done"
    os.utime(ckpt, (os.path.getmtime(log) + 10,) * 2)  # retrained after the evaluation
    assert stage_state(run, "eval")[0] == "new"


def test_export_is_done_when_the_mindir_is_newer_than_the_checkpoint(tmp_path):
    run = run_of(tmp_path)
    ckpt = write(Path(run.best_ckpt()))
    mindir = write(Path(run.path("export", "hournas_tiny.mindir")))
    assert stage_state(run, "export")[0] == "done"
    os.utime(ckpt, (os.path.getmtime(mindir) + 10,) * 2)
    assert stage_state(run, "export")[0] == "new"
    assert stage_state(run, "summary")[0] == "new"  # always rewritten


# ----------------------------------------------------------------------------- input checks

def test_check_run_wants_the_data_a_row_needs(tmp_path):
    with pytest.raises(HourNASError, match="needs DATA_PATH: ImageNet's folder"):
        check_run(run_of(tmp_path, "fbnet_a_imagenet"))
    with pytest.raises(HourNASError, match="needs DATA_PATH: CIFAR-10's folder"):
        check_run(run_of(tmp_path, "fbnet_cifar10_m4"))
    with pytest.raises(HourNASError, match="runs on the built-in digits set; give no DATA_PATH"):
        check_run(run_of(tmp_path, "tiny_digits", data_path=str(tmp_path)))
    with pytest.raises(HourNASError, match="ImageNet folder .* has no 'train/' subfolder"):
        check_run(run_of(tmp_path, "mnasnet_e_imagenet", data_path=str(tmp_path)))
    check_run(run_of(tmp_path, "tiny_digits"))  # fine: creates nothing
    assert not (tmp_path / "out").exists()


def test_check_run_wants_a_device_count_that_divides_the_global_batches(tmp_path):
    with pytest.raises(HourNASError, match=r"search.batch_size 8 \(a global batch\) does not "
                                           r"divide over 3 devices"):
        check_run(run_of(tmp_path, "tiny_digits", devices=3))


def test_check_run_wants_a_writable_output_folder(tmp_path):
    write(tmp_path / "out")  # a file
    with pytest.raises(HourNASError, match="output folder .* is a file"):
        check_run(run_of(tmp_path, "tiny_digits"))


# ----------------------------------------------------------------------------- summary

def test_summary_compares_with_the_paper(tmp_path):
    run = run_of(tmp_path, "fbnet_cifar10", device_target="GPU", devices=4, data_path="/d")
    arch = write(Path(run.path("search", "arch.yaml")), TINY_ARCH)
    write(Path(run.path("search", "summary.json")), json.dumps(
        {"stage_seconds": {"vital": 1800.0, "nonvital": 5400.0}, "targets": {"params": 2.8e6},
         "within_tolerance": True, "ops": ["k3_e1"]}))
    ckpt = write(Path(run.best_ckpt()))
    write(Path(run.path("train", "log", "eval.log")),
          json.dumps({"top1": 96.5, "top5": 99.9, "images": 10000, "ckpt": str(ckpt)}) + "\n")
    s = summarize(run)
    assert s["search"]["seconds"] == 7200.0
    assert s["search"]["device_hours"] == pytest.approx(8.0)  # 2 h x 4 devices
    counted = count(load_arch(str(arch)))
    assert (s["params"], s["flops"]) == (counted["params"], counted["flops"])
    assert (s["top1"], s["top5"], s["eval_images"]) == (96.5, 99.9, 10000)
    assert s["paper"]["top1"] == pytest.approx(96.61)  # Table 2: 100 - 3.39
    assert s["paper"]["search_gpu_hours"] == pytest.approx(2.4)
    assert s["delta"]["top1"] == pytest.approx(96.5 - 96.61)
    assert s["delta"]["flops_m"] is None and s["delta"]["top5"] is None  # Table 2 has neither
    assert json.loads(Path(run.path("reproduce_summary.json")).read_text()) == s
    md = Path(run.path("reproduce_summary.md")).read_text().splitlines()
    assert md[:2] == MD_HEADER.splitlines()
    cells = [c.strip() for c in md[2].strip("|").split("|")]
    assert len(cells) == len(md[0].strip("|").split("|"))
    assert cells[:4] == ["fbnet_cifar10", "HourNAS (m=8) (Table 2)", "4 x GPU",
                         "8.00 (paper: 2.4 = 0.1 GPU-days)"]
    assert cells[4].endswith("(2.8M)") and cells[6] == "96.50 (96.61)" and cells[7] == "99.90"


def test_summary_sets_the_published_table_under_ours(tmp_path):
    """A row with `published:` figures (Fashion-MNIST's benchmark table): the summary lists
    them under our result, in the JSON and the Markdown."""
    run = run_of(tmp_path, "fashion_mnist", device_target="CPU", data_path="/d")
    write(Path(run.path("search", "arch.yaml")), TINY_ARCH)
    write(Path(run.path("search", "summary.json")), json.dumps({"stage_seconds": {"vital": 60.0}}))
    ckpt = write(Path(run.best_ckpt()))
    write(Path(run.path("train", "log", "eval.log")),
          json.dumps({"top1": 90.25, "top5": 99.0, "images": 10000, "ckpt": str(ckpt)}) + "\n")
    s = summarize(run)
    assert s["paper"] is None and "delta" not in s
    published = {f["model"]: f for f in s["published"]}
    assert published["Google AutoML"]["top1"] == 93.9
    assert published["DenseNet-BC"]["params_m"] == 0.768
    md = Path(run.path("reproduce_summary.md")).read_text()
    assert "Published figures on the same data (the benchmark table of Fashion-MNIST's README" in md
    assert "| **ours: fashion_mnist** |" in md and "| **90.25** |" in md
    assert "| Google AutoML (24 compute hours) | — | 93.9 |" in md
    assert md.count("\n| ") == 3 + len(s["published"])  # our row, header, rule, theirs


def test_summary_without_a_search_result_is_an_error(tmp_path):
    with pytest.raises(HourNASError, match="no search result"):
        summarize(run_of(tmp_path))


# ----------------------------------------------------------------------------- docs/reproduce.md

DOC = Path(ROOT) / "docs" / "reproduce.md"
COMMAND = re.compile(r"`bash scripts/run_reproduce_(gpu|ascend|cpu)\.sh (\d+) ([a-z0-9_]+) "
                     r"(?:(\S+) )?(\S+)`")


def doc_rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `([a-z0-9_]+)` \|", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in line.strip().strip("|").split("|")]
    return rows


def test_docs_table_has_a_row_per_experiment_with_the_papers_figures_and_configs():
    rows = doc_rows()
    assert list(rows) == list(TABLE)
    for name, exp in TABLE.items():
        cells = rows[name]
        assert len(cells) == 10, name
        paper_row, cost, params, flops, acc, configs, command, estimate, yours = cells[1:]
        assert configs == f"`{exp.search}`; `{exp.train}`", name
        assert estimate and yours == "", name  # an estimate, and a column for users' results
        m = COMMAND.fullmatch(command)
        assert m and m.group(3) == name, (name, command)
        p = exp.paper
        if p is None:
            assert (paper_row, cost, params, flops, acc) == ("not a paper row",) + ("—",) * 4
            # no DATA_PATH: built in, or where Debian's package puts Fashion-MNIST
            assert m.group(4) is None
            assert m.group(1) == "cpu" or exp.published, name
            continue
        assert paper_row == f"{p.row}, Table {p.table}"
        assert cost == f"{p.search_gpu_days:.1f} GPU-days"
        assert params == f"{p.params_m:g}M"
        assert flops == (f"{p.flops_m:g}M" if p.flops_m is not None else "—")
        if p.table == 2:
            assert acc == f"{p.top1_pct:.2f} (error {p.test_error:g}) / —"
        else:
            assert acc == f"{p.top1:.1f} / {p.top5:.1f}"
        assert m.group(4) is not None  # a DATA_PATH


def test_the_documented_commands_pass_the_input_checks(tmp_path):
    """Each row's command from docs/reproduce.md, with its DATA_PATH replaced by a small folder
    of the same layout: the checks the script runs first (configs, data, device count) pass."""
    import cv2
    import numpy as np

    from tests.fashion_fixtures import write_fashion_mnist

    imagenet, cifar = tmp_path / "imagenet", tmp_path / "cifar"
    for split in ("train", "val"):
        for c in ("n0", "n1"):  # a classifier needs two classes
            (imagenet / split / c).mkdir(parents=True)
            cv2.imwrite(str(imagenet / split / c / "a.JPEG"), np.zeros((8, 8, 3), np.uint8))
    cifar.mkdir()
    for f in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        with open(cifar / f, "wb") as fh:
            fh.truncate(3073 * 10000)
    fashion = str(tmp_path / "fashion")
    write_fashion_mnist(fashion, n_train=100, n_test=20)
    for name, cells in doc_rows().items():
        target, devices, _, data, out = COMMAND.fullmatch(cells[7]).groups()
        if data is not None:
            data = str(imagenet if "imagenet" in data else cifar)
        elif TABLE[name].published:  # the documented command reads Debian's package; a
            data = fashion             # machine without it gives DATA_PATH (as here)
        run = ReproduceRun(name, TABLE[name], str(tmp_path / out), target, int(devices), data)
        check_run(run)
        assert stage_command(run, "search")[1] == f"scripts/run_search_{target}.sh"


def test_readme_quick_start_links_the_reproduction_page():
    readme = (Path(ROOT) / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "docs/reproduce.md" in quick
