"""Fashion-MNIST through the real CLI, on a tiny written folder (256 train / 64 test images,
gzipped): train.py gives the architecture a 1-channel stem and evaluates on the test images;
eval.py and export.py take 1-channel input (eval.py refuses 3-channel data); a truncated .gz
is one clear error, nothing written."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from src.checkpoint import load_checkpoint
from src.space.space import load_arch
from tests.e2e.helpers import last_json, run_cli
from tests.fashion_fixtures import write_fashion_mnist

TRAIN = ["--config", "tests/fixtures/tiny_train.yaml", "--arch", "tests/fixtures/tiny_arch.yaml",
         "--set", "data.name=fashion_mnist", "--epochs", "1", "--batch_size", "16",
         "--set", "train.steps_per_epoch=2", "--set", "train.eval_batch_size=64"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fashion")
    write_fashion_mnist(path, n_train=256, n_test=64)
    return path


def test_train_eval_export_with_a_one_channel_stem(folder, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train.py", *TRAIN, "--data_path", str(folder), "--output_dir", str(out),
                   "--json")
    summary = last_json(proc.stdout)
    assert summary["exit_code"] == 0 and summary["global_step"] == 2
    text = proc.stdout + proc.stderr
    assert "architecture tiny: in_channels 3 -> 1" in text, text
    assert "fashion_mnist: 256 train / 64 eval images" in text, text
    arch = load_arch(str(out / "arch.yaml"))
    assert (arch.in_channels, arch.input_size, arch.num_classes) == (1, 16, 10)
    params, extra = load_checkpoint(str(out / "tiny_best.ckpt"))
    stem = [k for k, v in params.items() if "stem" in k and len(v.shape) == 4]
    assert stem and params[stem[0]].shape == (8, 1, 3, 3), {k: params[k].shape for k in stem}
    assert extra["eval"]["images"] == 64                         # every test image

    ev = last_json(run_cli("eval.py", "--ckpt", str(out / "tiny_best.ckpt"), "--json").stdout)
    assert ev["images"] == 64 and ev["dataset"] == "fashion_mnist"
    assert ev["top1"] == pytest.approx(extra["eval"]["top1"], abs=1e-9)
    other = run_cli("eval.py", "--ckpt", str(out / "tiny_best.ckpt"), "--set", "data.name=digits",
                    check=False)
    assert other.returncode == 2 and other.stderr.strip().splitlines()[-1] == (
        "error: tiny takes 1-channel images but digits has 3-channel ones; evaluate it on a "
        "dataset like the one it was trained on"), other.stderr
    ex = last_json(run_cli("export.py", "--ckpt", str(out / "tiny_best.ckpt"), "--file_format",
                           "MINDIR", "--output_dir", str(tmp_path / "export"), "--json").stdout)
    assert ex["input"] == [None, 1, 16, 16]
    assert ex["files"]["MINDIR"]["max_abs_diff"] <= 1e-4


def test_truncated_gz_is_one_error_naming_the_file(folder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in os.listdir(folder):
        data = (folder / name).read_bytes()
        if name == "train-images-idx3-ubyte.gz":
            data = data[:len(data) // 2]
        (broken / name).write_bytes(data)
    before = sorted(os.listdir(broken))
    out = tmp_path / "out"
    proc = run_cli("train.py", *TRAIN, "--data_path", str(broken), "--output_dir", str(out),
                   check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert f"'{broken / 'train-images-idx3-ubyte.gz'}' is a truncated or corrupt gzip file" \
        in errors[0], errors[0]
    assert not out.exists() or not os.listdir(out)                # nothing written
    assert sorted(os.listdir(broken)) == before
