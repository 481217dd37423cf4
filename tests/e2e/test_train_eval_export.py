"""train.py -> eval.py -> export.py through the real CLI (subprocesses), on digits at 16x16 with
a tiny architecture: checkpoints, exact resume after SIGKILL, SIGTERM, errors, --profile."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.checkpoint import load_checkpoint
from src.resource import count
from src.space.space import load_arch
from tests.conftest import fixture_text
from tests.e2e.helpers import HANG, last_json, records, run_cli, wait_until

ROOT = Path(__file__).resolve().parents[2]
TINY = fixture_text("tiny_arch_mixed.yaml")
# 2 epochs x 8 steps of 32, a checkpoint every 3 steps (and at epoch ends), a log line per step
TRAIN = ["--epochs", "2", "--batch_size", "32", "--set", "data.image_size=16",
         "--set", "train.steps_per_epoch=8", "--set", "train.ckpt_every=3",
         "--set", "train.log_every=1", "--set", "train.lr=0.2", "--set", "train.ckpt_keep=10"]


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def losses(records) -> dict[int, float]:
    return {r["global_step"]: r["loss"] for r in records if r["event"] == "step"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def reference_run(tiny, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted run; the other tests compare against it."""
    out = tmp_path_factory.mktemp("run") / "ref"
    proc = run_cli("train.py", "--arch", tiny, *TRAIN, "--output_dir", out, "--json")
    return out, last_json(proc)


def test_train_eval_export(reference_run, tmp_path):
    run, summary = reference_run
    assert summary["exit_code"] == 0 and summary["global_step"] == 16
    for name in ("config.yaml", "arch.yaml", "train_curves.png", "tiny_best.ckpt"):
        assert (run / name).is_file(), name
    recs = read_log(run)
    compile_rec = next(r for r in recs if r["event"] == "compile")
    assert compile_rec["graphs"] == 1                       # no recompiles after step 1
    evals = [r for r in recs if r["event"] == "eval"]
    assert [e["epoch"] for e in evals] == [1, 2] and all(e["images"] == 360 for e in evals)
    last = evals[-1]
    ckpt = run / last["ckpt"]
    _, extra = load_checkpoint(str(ckpt))
    assert (extra["epoch"], extra["epoch_step"], extra["global_step"]) == (2, 8, 16)
    assert extra["arch"]["name"] == "tiny" and extra["config"]["train"]["lr"] == 0.2

    # eval.py over every image reports exactly what training logged for this checkpoint
    ev = last_json(run_cli("eval.py", "--ckpt", ckpt, "--json"))
    assert ev["images"] == 360
    assert ev["top1"] == pytest.approx(last["top1"], abs=1e-9)
    assert ev["top5"] == pytest.approx(last["top5"], abs=1e-9)
    assert ev["loss"] == pytest.approx(last["loss"], rel=1e-5)
    # the same with another batch (a partial last batch of 360 % 50 = 10 images)
    ev50 = last_json(run_cli("eval.py", "--ckpt", ckpt, "--batch_size", "50", "--json"))
    assert ev50["images"] == 360 and ev50["top1"] == pytest.approx(last["top1"], abs=1e-9)

    ex = last_json(run_cli("export.py", "--ckpt", ckpt, "--file_format", "both", "--batch_size", "3",
                       "--output_dir", tmp_path, "--json"))
    mindir, onnx = ex["files"]["MINDIR"], ex["files"]["ONNX"]
    assert Path(mindir["path"]) == tmp_path / "tiny.mindir" and os.path.getsize(mindir["path"]) > 0
    assert mindir["max_abs_diff"] <= 1e-4 and mindir["batch"] is None
    assert Path(onnx["path"]) == tmp_path / "tiny_b3.onnx" and os.path.getsize(onnx["path"]) > 0
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_pynative_mode_trains_the_same_net(tiny, reference_run, tmp_path):
    """train.mode: pynative (op by op, for nets whose compiled graph does not fit) computes
    what the compiled step does, to float rounding, and says it compiled nothing."""
    ref, _ = reference_run
    out = tmp_path / "run"
    proc = run_cli("train.py", "--arch", tiny, *TRAIN, "--set", "train.mode=pynative",
                   "--output_dir", out, "--json")
    assert last_json(proc)["global_step"] == 16
    assert "(PyNative, train.mode: op by op)" in proc.stderr + proc.stdout
    assert "compiled training graphs" not in proc.stderr + proc.stdout
    got, want = losses(read_log(out)), losses(read_log(ref))
    assert sorted(got) == sorted(want) == list(range(1, 17))
    # the first epoch agrees to rounding; at lr 0.2 the last bits grow over the second
    for step in range(1, 9):
        assert got[step] == pytest.approx(want[step], rel=1e-4), step
    assert got[16] == pytest.approx(want[16], rel=1e-2)
    _, extra = load_checkpoint(str(out / "tiny-2_8.ckpt"))
    assert extra["config"]["train"]["mode"] == "pynative"


def test_resume_after_sigkill_continues_exactly(tiny, reference_run, tmp_path):
    ref, _ = reference_run
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "train.py", "--arch", str(tiny), *TRAIN,
                             "--output_dir", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = out / "train_log.jsonl"
    try:
        if wait_until(proc, lambda: any(r.get("event") == "checkpoint" for r in records(log)),
                      poll=0.01):
            proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    before = read_log(out)
    saved = [r["global_step"] for r in before if r["event"] == "checkpoint"]
    done = max(r["global_step"] for r in before if r["event"] == "step")
    assert saved and saved[-1] < 16

    res = last_json(run_cli("train.py", "--arch", tiny, *TRAIN, "--output_dir", out, "--resume",
                        "--json"))
    assert res["exit_code"] == 0 and res["global_step"] == 16
    after = read_log(out)
    resume = next(r for r in after if r["event"] == "resume")
    assert resume["global_step"] == saved[-1]               # the last checkpoint written
    assert done - resume["global_step"] <= 3                 # lost at most ckpt_every steps
    # same batches, same updates: every step's loss equals the uninterrupted run's
    got, want = losses(after), losses(read_log(ref))
    assert sorted(got) == list(range(1, 17))
    for step in range(1, 17):
        assert got[step] == want[step], step
    evals = [r for r in after if r["event"] == "eval"]
    assert evals[-1]["top1"] == [r for r in read_log(ref) if r["event"] == "eval"][-1]["top1"]
    # and the final state is the uninterrupted run's, bit for bit
    a, _ = load_checkpoint(str(ref / "tiny-2_8.ckpt"))
    b, _ = load_checkpoint(str(out / "tiny-2_8.ckpt"))
    assert set(a) == set(b)
    for name in a:
        assert np.array_equal(a[name].asnumpy(), b[name].asnumpy()), name


def test_sigterm_saves_and_exits(tiny, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "train.py", "--arch", str(tiny), *TRAIN,
                             "--set", "train.ckpt_every=0", "--output_dir", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = out / "train_log.jsonl"
    if wait_until(proc, lambda: any(r.get("event") == "step" for r in records(log)), poll=0.01):
        proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=HANG)
    assert proc.returncode == 128 + signal.SIGTERM, text
    assert "stopped by SIGTERM" in text and "--resume" in text
    stop = [r for r in read_log(out) if r["event"] == "stop"][-1]
    _, extra = load_checkpoint(str(out / stop["ckpt"]))
    assert extra["global_step"] == stop["global_step"] >= 1


def test_checkpoint_of_another_architecture_is_a_clear_error(reference_run):
    run, _ = reference_run
    proc = run_cli("eval.py", "--ckpt", run / "tiny_best.ckpt", "--arch",
               "config/arch/fbnet_b.yaml", check=False)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: checkpoint") and "does not fit the network of --arch" in err
    assert "missing" in err and "Traceback" not in proc.stderr
    # resuming the run with another architecture is refused too (the run is left as it was)
    proc = run_cli("train.py", "--arch", "config/arch/fbnet_b.yaml", "--resume", "--output_dir", run,
               check=False)
    assert proc.returncode == 2 and "is not the one the run trains" in proc.stderr


def test_resume_without_checkpoint_is_exit_2(tiny, tmp_path):
    proc = run_cli("train.py", "--arch", tiny, "--resume", "--output_dir", tmp_path / "empty",
               check=False)
    assert proc.returncode == 2
    assert "no training checkpoint in" in proc.stderr and "Traceback" not in proc.stderr


def test_diverging_loss_stops_with_the_step(tiny, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train.py", "--arch", tiny, *TRAIN, "--set", "train.lr=1e30",
               "--set", "train.warmup_epochs=0", "--output_dir", out, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert "at epoch 1 step" in err and "last good checkpoint" in err
    stop = [r for r in read_log(out) if r["event"] == "stop"][-1]
    assert stop["reason"] == "diverged"


def test_profile_json_matches_the_counter():
    proc = run_cli("eval.py", "--arch", "config/arch/fbnet_b.yaml", "--profile", "--json")
    got = last_json(proc)
    want = count(load_arch("config/arch/fbnet_b.yaml"))
    assert (got["params"], got["flops"]) == (want["params"], want["flops"])
    assert len(got["layers"]) == 22 + 3 and got["layers"][0]["name"] == "stem"
    assert sum(r["flops"] for r in got["layers"]) == want["flops"]
    text = run_cli("eval.py", "--arch", "config/arch/fbnet_b.yaml", "--profile").stdout
    assert "4.86M params" in text and "306.21M FLOPs" in text


# ----------------------------------------------------------------------------- the other recipes

def write_imagenet(root: Path) -> Path:
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    for sub, n in (("train", 3), ("val", 2)):
        for c in ("n01", "n02", "n03"):
            (root / sub / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 256, size=(40 + 5 * i, 48, 3), dtype=np.uint8)
                cv2.imwrite(str(root / sub / c / f"{c}_{i}.JPEG"), img)
    return root


def test_cifar10_recipe_runs(tiny, cifar_dir, tmp_path):
    data = cifar_dir
    proc = run_cli("train.py", "--config", "config/train/cifar10.yaml", "--arch", tiny,
               "--data_path", data, "--epochs", "1", "--batch_size", "16",
               "--set", "data.image_size=16",
               "--set", "train.steps_per_epoch=3", "--set", "train.eval_batch_size=500",
               "--output_dir", tmp_path / "run", "--json")
    res = last_json(proc)
    assert res["exit_code"] == 0 and res["global_step"] == 3
    assert res["last"]["images"] == 10000                  # every test image
    _, extra = load_checkpoint(res["ckpt"])
    assert extra["config"]["data"]["cutout"] == 16 and extra["config"]["train"]["epochs"] == 1
    assert extra["config"]["train"]["weight_decay"] == 3e-4 and extra["arch"]["name"] == "tiny"


def test_imagenet_efficientnet_recipe_with_ema(tiny, tmp_path):
    data = write_imagenet(tmp_path / "imagenet")
    out = tmp_path / "run"
    proc = run_cli("train.py", "--config", "config/train/imagenet_efficientnet.yaml", "--arch", tiny,
               "--data_path", data, "--set", "data.image_size=32", "--set", "data.num_workers=1",
               "--epochs", "2", "--batch_size", "4", "--set", "train.warmup_epochs=1",
               "--output_dir", out, "--json")
    res = last_json(proc)
    text = proc.stdout + proc.stderr
    assert res["exit_code"] == 0 and res["global_step"] == 4  # 9 images // 4 = 2 steps x 2 epochs
    assert "amp_level O2 -> O0" in text and "activation relu -> swish" in text
    _, extra = load_checkpoint(res["ckpt"])
    assert extra["ema"] is True and extra["arch"]["conventions"]["activation"] == "swish"
    ev = last_json(run_cli("eval.py", "--ckpt", res["ckpt"], "--json"))
    assert ev["ema"] is True and ev["images"] == 6
    assert ev["top1"] == pytest.approx(res["last"]["top1"], abs=1e-9)
    assert ev["loss"] == pytest.approx(res["last"]["loss"], rel=1e-5)


def test_bn_recalibration_is_what_the_checkpoint_holds_and_eval_reports(reference_run, tiny,
                                                                        tmp_path):
    """train.bn_recalibrate (the digits recipe: 22 batches; the reference run uses it): the
    same training without it (0) has the same losses and trained weights, other BatchNorm
    statistics in its checkpoint, and eval.py reports what each run logged."""
    ref, ref_summary = reference_run
    out = tmp_path / "plain"
    proc = run_cli("train.py", "--arch", tiny, *TRAIN, "--set", "train.bn_recalibrate=0",
               "--output_dir", out, "--json")
    assert losses(read_log(out)) == losses(read_log(ref))  # training never reads the statistics
    plain, _ = load_checkpoint(str(out / "tiny_best.ckpt"))
    recal, _ = load_checkpoint(str(ref / "tiny_best.ckpt"))
    stats = [n for n in plain if n.endswith("moving_mean")]
    assert stats and any(not np.allclose(plain[n].asnumpy(), recal[n].asnumpy()) for n in stats)
    for run, summary in ((out, last_json(proc)), (ref, ref_summary)):
        ev = last_json(run_cli("eval.py", "--ckpt", run / "tiny_best.ckpt", "--json"))
        assert ev["top1"] == pytest.approx(summary["best_top1"], abs=1e-9)
