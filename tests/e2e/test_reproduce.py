"""scripts/run_reproduce_*.sh: the CPU variant runs a row end to end (tiny_digits: the tiny
space, 4 search steps a stage, 4 training steps) and then skips what is done; the GPU and
Ascend variants' --dry-run checks the inputs and prints exactly the commands they would run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from src.resource import count
from src.space.space import load_arch
from tests.e2e.helpers import HANG, ROOT, cli_env, wait_until

NOTE = "[scripts/run_reproduce_cpu.sh]"


def reproduce(target: str, *args, check: bool = True, timeout: int = HANG, **env_extra):
    env = {**cli_env(), **env_extra}
    proc = subprocess.run(["bash", f"scripts/run_reproduce_{target}.sh", *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"run_reproduce_{target}.sh {args} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def ran(proc) -> list[str]:
    """The stages the script ran, from its notes on stderr."""
    stages = ("search", "train", "eval", "export", "summary")
    return [ln.split()[1][:-1] for ln in proc.stderr.splitlines()
            if ln.startswith(NOTE + " ") and ln.split()[1][:-1] in stages and ln.split()[1][-1] == ":"]


# ----------------------------------------------------------------------------- CPU, for real

def pid_of(script: str, out_dir: Path) -> int:
    """The process running ``python .../SCRIPT ... OUT_DIR ...`` (from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if any(a.endswith(script) for a in args) and str(out_dir) in args:
            return int(entry.name)
    raise AssertionError(f"no {script} process for {out_dir}")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The CPU chain of tiny_digits, stopped by SIGTERM in the search (after its first
    checkpoint), then the same command again: it resumes the search and runs the rest."""
    out = tmp_path_factory.mktemp("repro") / "tiny"
    first = subprocess.Popen(["bash", "scripts/run_reproduce_cpu.sh", "1", "tiny_digits", str(out)],
                             cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_until(first, (out / "search" / "search_state.ckpt").exists)
    os.kill(pid_of("search.py", out / "search"), signal.SIGTERM)
    _, err = first.communicate(timeout=HANG)
    return out, (first.returncode, err), reproduce("cpu", 1, "tiny_digits", out)


def test_cpu_variant_stops_with_the_stages_code_and_resumes(tiny_run):
    out, (code, err), proc = tiny_run
    assert code == 143  # the search's own exit code after SIGTERM (state saved)
    assert "stopped in the search stage (exit code 143); run the same command again" in err
    assert ran(subprocess.CompletedProcess([], code, "", err)) == ["search"]  # nothing after it
    assert f"search: continuing from {out}/search/search_state.ckpt" in proc.stderr
    assert f"search_cpu.sh 1 tests/fixtures/tiny_search.yaml {out}/search -- --resume" in proc.stderr
    assert (out / "search" / "log" / "search.command").read_text().strip().endswith("--resume")
    assert (out / "search" / "summary.json").is_file()


def test_cpu_variant_runs_the_chain_end_to_end(tiny_run):
    out, _, proc = tiny_run
    assert ran(proc) == ["search", "train", "eval", "export", "summary"]
    s = json.loads((out / "reproduce_summary.json").read_text())
    arch = load_arch(str(out / "search" / "arch.yaml"))
    assert (s["experiment"], s["devices"], s["device_target"]) == ("tiny_digits", 1, "CPU")
    assert (s["params"], s["flops"]) == (count(arch)["params"], count(arch)["flops"])
    search = json.loads((out / "search" / "summary.json").read_text())
    assert s["search"]["seconds"] == pytest.approx(sum(search["stage_seconds"].values()))
    assert s["search"]["device_hours"] == pytest.approx(s["search"]["seconds"] / 3600)
    assert s["search"]["ops"] == search["ops"] == [op.name for op in arch.ops]
    # the top-1 is eval.py's over all 360 eval images of the trained best checkpoint
    ev = json.loads((out / "train" / "log" / "eval.log").read_text().strip().splitlines()[-1])
    assert ev["ckpt"] == s["best_ckpt"] == str(out / "train" / f"{arch.name}_best.ckpt")
    assert (s["top1"], s["top5"], s["eval_images"]) == (ev["top1"], ev["top5"], 360)
    train_log = [json.loads(ln) for ln in (out / "train" / "train_log.jsonl").read_text().splitlines()]
    assert train_log[-1]["event"] == "done" and train_log[-1]["global_step"] == 4
    assert s["mindir"] == str(out / "export" / f"{arch.name}.mindir") and Path(s["mindir"]).is_file()
    assert s["paper"] is None
    # the stages went through the launchers: one process each, logs under the output folder
    for stage in ("search", "train"):
        assert (out / stage / "log" / f"{stage}.command").read_text().startswith("python ")
    md = (out / "reproduce_summary.md").read_text().splitlines()
    assert md[-1].startswith("| tiny_digits | — | 1 x CPU | ") and md[-1] in proc.stdout


def test_cpu_variant_skips_what_exists_and_redoes_what_is_missing(tiny_run):
    out, _, _ = tiny_run
    ckpt = out / "train" / "hournas_tiny_best.ckpt"
    before = ckpt.stat().st_mtime_ns
    again = reproduce("cpu", 1, "tiny_digits", out)
    assert ran(again) == ["summary"]
    for stage in ("search", "train", "eval", "export"):
        assert f"{stage}: done (" in again.stderr
    assert ckpt.stat().st_mtime_ns == before
    for f in (out / "export").iterdir():
        f.unlink()
    third = reproduce("cpu", 1, "tiny_digits", out)
    assert ran(third) == ["export", "summary"]
    assert (out / "export" / "hournas_tiny.mindir").is_file()


# ----------------------------------------------------------------------------- dry runs

@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    """An ImageNet-layout folder: 2 classes, one decodable image each in train/ and val/."""
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("imagenet")
    for split in ("train", "val"):
        for c in ("n01440764", "n01443537"):
            (root / split / c).mkdir(parents=True)
            cv2.imwrite(str(root / split / c / "a.JPEG"), np.full((8, 8, 3), 127, np.uint8))
    return root


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    """A CIFAR-10 binary folder of the right sizes (sparse files of zeros: label 0)."""
    root = tmp_path_factory.mktemp("cifar")
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        with open(root / name, "wb") as f:
            f.truncate(3073 * 10000)
    return root


def test_gpu_dry_run_prints_every_command_of_a_fresh_run(imagenet, tmp_path):
    out = tmp_path / "fbnet_b"
    proc = reproduce("gpu", 8, "fbnet_b_imagenet", imagenet, out, "--dry-run")
    ckpt = f"{out}/train/hournas_fbnet_imagenet_best.ckpt"
    assert proc.stdout.splitlines() == [
        f"bash scripts/run_search_gpu.sh 8 config/search/fbnet_imagenet_fbnetc.yaml {out}/search "
        f"{imagenet}",
        f"bash scripts/run_distribute_train_gpu.sh 8 {out}/search/arch.yaml "
        f"config/train/imagenet.yaml {out}/train {imagenet}",
        f"bash scripts/run_eval_gpu.sh {ckpt} {imagenet} -- --json",
        f"python export.py --ckpt {ckpt} --file_format MINDIR --output_dir {out}/export "
        f"--device_target GPU --json",
        f"python -m src.reproduce summary fbnet_b_imagenet --device_target GPU --devices 8 "
        f"--output_dir {out} --data_path {imagenet}"]
    assert "HourNAS-FBNetSS-B (Table 1)" in proc.stderr
    assert not out.exists()  # a dry run writes nothing


def test_dry_run_resumes_and_skips_by_what_exists(imagenet, tmp_path):
    out = tmp_path / "effnet"
    (out / "search").mkdir(parents=True)
    (out / "search" / "arch.yaml").write_text((Path(ROOT) / "config/arch/hournas_f.yaml").read_text())
    (out / "search" / "summary.json").write_text("{}")
    (out / "train").mkdir()
    (out / "train" / "hournas_f-3_2502.ckpt").write_bytes(b"")
    proc = reproduce("ascend", 8, "efficientnet_f_imagenet", imagenet, out, "--dry-run")
    ckpt = f"{out}/train/hournas_f_best.ckpt"  # the name of the searched arch.yaml
    assert proc.stdout.splitlines() == [
        f"bash scripts/run_distribute_train_ascend.sh 8 {out}/search/arch.yaml "
        f"config/train/imagenet_efficientnet.yaml {out}/train {imagenet} -- --resume",
        f"bash scripts/run_eval_ascend.sh {ckpt} {imagenet} -- --json",
        f"python export.py --ckpt {ckpt} --file_format MINDIR --output_dir {out}/export "
        f"--device_target Ascend --json",
        f"python -m src.reproduce summary efficientnet_f_imagenet --device_target Ascend "
        f"--devices 8 --output_dir {out} --data_path {imagenet}"]
    assert "search: done (" in proc.stderr and "train: continuing from" in proc.stderr


def test_ascend_dry_run_of_a_cifar_row_on_one_device(cifar, tmp_path):
    out = tmp_path / "m4"
    (out / "search").mkdir(parents=True)
    (out / "search" / "search_state.ckpt").write_bytes(b"")
    proc = reproduce("ascend", 1, "fbnet_cifar10_m4", cifar, out, "--dry-run")
    lines = proc.stdout.splitlines()
    assert lines[:2] == [
        f"bash scripts/run_search_ascend.sh 1 config/ablation/full/m4.yaml {out}/search {cifar} "
        f"-- --resume",
        f"bash scripts/run_standalone_train_ascend.sh {out}/search/arch.yaml "
        f"config/train/cifar10.yaml {out}/train {cifar}"]
    assert len(lines) == 5 and lines[2].startswith("bash scripts/run_eval_ascend.sh ")


@pytest.mark.parametrize("case, args, env, message", [
    ("unknown row", [8, "fbnet_z_imagenet", "{data}", "{out}"], {},
     "error: unknown experiment 'fbnet_z_imagenet'"),
    ("no data", [8, "fbnet_a_imagenet", "{out}"], {}, "needs DATA_PATH: ImageNet's folder"),
    ("data not a folder", [8, "fbnet_a_imagenet", "{out}/nope", "{out}"], {},
     "DATA_PATH '{out}/nope' is not a directory"),
    ("wrong data", [8, "fbnet_cifar10", "{data}", "{out}"], {}, "CIFAR-10 folder"),
    ("batch", [3, "fbnet_a_imagenet", "{data}", "{out}"], {},
     "search.batch_size 256 (a global batch) does not divide over 3 devices"),
    ("options after --", [8, "fbnet_a_imagenet", "{data}", "{out}", "--", "--resume"], {},
     "no options go after '--'"),
    ("launcher", [8, "fbnet_a_imagenet", "{data}", "{out}"], {"LAUNCHER": "slurm"},
     "LAUNCHER must be msrun or mpirun"),
])
def test_dry_run_checks_the_inputs(imagenet, tmp_path, case, args, env, message):
    out = tmp_path / "o"
    fill = lambda a: str(a).format(data=imagenet, out=out)  # noqa: E731
    proc = reproduce("gpu", *map(fill, args), "--dry-run", check=False, **env)
    assert proc.returncode == 2, (case, proc.stderr)
    err = proc.stderr.splitlines()
    assert fill(message) in proc.stderr, (case, proc.stderr)
    assert err[-1].startswith("usage: bash scripts/run_reproduce_gpu.sh DEVICE_NUM EXPERIMENT")
    assert proc.stdout == "" and not out.exists()


def test_a_real_run_checks_the_device_first(tmp_path):
    from src.context import device_available

    # a back end this machine lacks (no machine has both), so the run must not start
    missing = next(t for t in ("GPU", "Ascend") if not device_available(t)[0])
    script = missing.lower()
    out = tmp_path / "o"
    proc = reproduce(script, 1, "tiny_digits", out, check=False)
    assert proc.returncode == 2
    assert f"device target '{missing}' is not available here" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"usage: bash scripts/run_reproduce_{script}.sh ")
    assert proc.stdout == "" and not out.exists()
