"""Faults a long run meets, through the real CLIs on the tiny space and the built-in digits:
a NaN/inf loss, a checkpoint write killed part-way, a full disk, SIGTERM/SIGINT, and a
kill-and-resume at a random step compared exactly with an uninterrupted run.

The kill points are random; set HOURNAS_FAULT_SEED to replay one (the seed is in every
assertion message).
"""
from __future__ import annotations

import os
import random
import re
import resource
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from src.checkpoint import load_checkpoint, remove_stale_temps
from tests.conftest import fixture_text
from tests.e2e.helpers import HANG, ROOT, cli_env, last_json, records, run_cli, wait_until

CONFIG = "tests/fixtures/tiny_search.yaml"
STEPS = 8  # global steps of the tiny search: 4 in each stage
SEED = int(os.environ.get("HOURNAS_FAULT_SEED", random.SystemRandom().randrange(10**6)))
TINY_ARCH = fixture_text("tiny_arch.yaml")


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def _state_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    params, extra = load_checkpoint(str(path))
    return {n: p.asnumpy() for n, p in params.items()}, extra


def _signal_search_at(out: Path, sig: int, global_step: int) -> subprocess.CompletedProcess:
    """Run the tiny search; send ``sig`` once its log reaches ``global_step``."""
    out.mkdir(parents=True)
    with open(out.parent / f"{out.name}.stderr", "w+") as err:
        proc = subprocess.Popen([sys.executable, "search.py", "--config", CONFIG,
                                 "--output_dir", str(out)], cwd=ROOT, env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            if wait_until(proc, lambda: any(r.get("global_step", 0) >= global_step
                                            for r in records(out / "search_log.jsonl")),
                          poll=0.02):
                proc.send_signal(sig)
            proc.wait(timeout=HANG)
        finally:
            if proc.poll() is None:
                proc.kill()
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "", err.read())


@pytest.fixture(scope="module")
def reference(tiny_search_run) -> tuple[Path, dict]:
    """One uninterrupted search of the seed every interrupted one is compared with (the
    session's tiny search, tests/conftest.py)."""
    out, summary, _ = tiny_search_run
    return out, summary


def _assert_same_search(out: Path, ref: Path, summary: dict, ref_summary: dict, why: str):
    """Same architecture, same θ/Π, same final weights and momenta, bit for bit."""
    assert summary["ops"] == ref_summary["ops"], why
    assert (out / "arch.yaml").read_text() == (ref / "arch.yaml").read_text(), why
    with np.load(out / "arch_params.npz", allow_pickle=False) as a, \
            np.load(ref / "arch_params.npz", allow_pickle=False) as b:
        assert a.files == b.files
        for k in a.files:
            assert np.array_equal(a[k], b[k]), (k, why)
    got, extra = _state_arrays(out / "search_state.ckpt")
    want, ref_extra = _state_arrays(ref / "search_state.ckpt")
    assert extra["state"]["stage"] == "done" and sorted(got) == sorted(want), why
    for name in want:
        assert np.array_equal(got[name], want[name]), (name, why)
    assert extra["adam"]["t"] == ref_extra["adam"]["t"] and extra["noise"] == ref_extra["noise"]
    steps = [r["global_step"] for r in records(out / "search_log.jsonl")]
    assert steps == list(range(1, STEPS + 1)), why
    assert _temps(out) == [], why


# ----------------------------------------------------------------------------- signals

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_state_exits_and_resume_is_exact(reference, tmp_path, sig):
    step = random.Random(f"{SEED}-{int(sig)}").randint(1, STEPS - 2)  # both stages
    why = f"{sig.name} after global step {step} (HOURNAS_FAULT_SEED={SEED})"
    out = tmp_path / "run"
    proc = _signal_search_at(out, sig, step)
    assert proc.returncode == 128 + sig, f"{why}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, why
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"stopped by {sig.name} at ") and "--resume" in last, last
    _, extra = _state_arrays(out / "search_state.ckpt")  # loadable, and where the log says
    saved = extra["state"]["global_step"]
    assert step <= saved <= STEPS and f"global step {saved}" in last, (saved, why)
    assert max(r["global_step"] for r in records(out / "search_log.jsonl")) == saved, why
    assert _temps(out) == [] and not (out / "arch.yaml").exists(), why

    resumed = last_json(run_cli("search.py", "--config", CONFIG, "--output_dir", str(out),
                                "--resume", "--json").stdout)
    _assert_same_search(out, reference[0], resumed, reference[1], why)


@pytest.mark.parametrize("stage,first,last", [("vital", 1, STEPS // 2 - 1),
                                               ("nonvital", STEPS // 2 + 1, STEPS - 2)])
def test_sigkill_at_a_random_step_then_resume_is_exact(reference, tmp_path, stage, first, last):
    """SIGKILL (no handler runs) anywhere in each stage, even inside a checkpoint write."""
    step = random.Random(f"{SEED}-kill-{stage}").randint(first, last)
    why = f"SIGKILL in the {stage} stage after global step {step} (HOURNAS_FAULT_SEED={SEED})"
    out = tmp_path / "run"
    proc = _signal_search_at(out, signal.SIGKILL, step)
    assert proc.returncode == -signal.SIGKILL, f"{why}\n{proc.stderr}"
    resumed = last_json(run_cli("search.py", "--config", CONFIG, "--output_dir", str(out),
                                "--resume", "--json").stdout)
    _assert_same_search(out, reference[0], resumed, reference[1], why)


# ----------------------------------------------------------------------------- NaN / inf

def test_search_nan_stops_naming_the_step_and_keeps_the_last_good_state(tmp_path):
    # w_lr=30 is finite for two steps and overflows at the third (found by a scan; 1e30 fails
    # at step 1, before any state but the initial one exists)
    out = tmp_path / "run"
    proc = run_cli("search.py", "--config", CONFIG, "--output_dir", str(out),
                   "--set", "search.w_lr=30", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    m = re.match(r"error: non-finite loss at vital epoch 1 step (\d+) \(global step (\d+); "
                 r"weight loss (\S+), architecture loss (\S+)\); the last good state is in "
                 r"(\S+) \(global step (\d+)\)", err)
    assert m, err
    step, kept = int(m.group(2)), int(m.group(6))
    assert not all(np.isfinite(float(m.group(i).rstrip(","))) for i in (3, 4)), err
    assert step >= 2 and kept == step - 1, err
    assert m.group(5) == str(out / "search_state.ckpt")
    params, extra = _state_arrays(out / "search_state.ckpt")
    assert extra["state"]["global_step"] == kept
    assert all(np.isfinite(a).all() for a in params.values())
    assert all(np.isfinite(np.asarray(v)).all() for v in extra["arch"].values())
    assert _temps(out) == [] and not (out / "arch.yaml").exists()
    # the message ends with the command that continues with a lower lr; --resume accepts it
    cmd = err.split("continue from it with a lower learning rate: ", 1)[1]
    assert cmd == (f"python search.py --config {out / 'config.yaml'} --output_dir {out} "
                   f"--resume --set search.w_lr=3"), cmd
    again = subprocess.run([sys.executable, *shlex.split(cmd)[1:]], cwd=ROOT, env=cli_env(),
                           capture_output=True, text=True, timeout=HANG)
    assert "learning rate changed on resume: search.w_lr 30.0 -> 3.0" in again.stdout, \
        again.stdout + again.stderr
    assert f"resuming vital stage at epoch 1 step {kept}" in again.stdout
    assert "different configuration" not in again.stderr


def test_training_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    arch = tmp_path / "tiny.yaml"
    arch.write_text(TINY_ARCH)
    out = tmp_path / "run"
    # lr 1e4 (no warm-up) diverges after a few finite steps; a checkpoint after every step
    proc = run_cli("train.py", "--arch", str(arch), "--epochs", "1", "--batch_size", "32",
                   "--set", "data.image_size=16", "--set", "train.steps_per_epoch=8",
                   "--set", "train.ckpt_every=1", "--set", "train.warmup_epochs=0",
                   "--set", "train.lr=1e4", "--output_dir", str(out), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    m = re.search(r"at epoch 1 step (\d+) \(global step (\d+)\); training stopped; the last "
                  r"good checkpoint is (\S+);", err)
    assert m, err
    step, ckpt = int(m.group(2)), Path(m.group(3))
    assert step >= 2, err
    params, extra = _state_arrays(ckpt)
    assert extra["global_step"] == step - 1
    assert all(np.isfinite(a).all() for a in params.values())
    assert _temps(out) == []


# ----------------------------------------------------------------------------- writes

WRITER = textwrap.dedent("""\
    import sys, time
    import numpy as np
    import mindspore as ms
    from src.checkpoint import atomic_write, save_checkpoint

    path, mode = sys.argv[1], sys.argv[2]
    save_checkpoint(path, {"w": np.full(1000, 1.0, np.float32)}, {"gen": 1})
    print("saved 1", flush=True)
    if mode == "partial":          # killed half-way through writing the new file
        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(open(path, "rb").read()[:3000])
                f.flush()
            print("writing", flush=True)
            time.sleep(120)
        atomic_write(path, write)
    elif mode == "complete":       # killed with the new file complete, before fsync + rename
        def write(tmp):
            ms.save_checkpoint([{"name": "w", "data": ms.Tensor(np.full(1000, 2.0, np.float32))}],
                               tmp)
            print("writing", flush=True)
            time.sleep(120)
        atomic_write(path, write)
    else:                          # 16 MB checkpoints back to back, killed at a random moment
        big = np.zeros(4_000_000, np.float32)
        gen = 2
        while True:
            big[:] = gen
            save_checkpoint(path, {"w": big}, {"gen": gen})
            print(f"saved {gen}", flush=True)
            gen += 1
""")


def _writer(tmp_path: Path, mode: str) -> subprocess.Popen:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "state.ckpt"), mode],
                            cwd=ROOT, env={**cli_env(), "PYTHONPATH": ROOT},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


@pytest.mark.parametrize("mode", ["partial", "complete"])
def test_checkpoint_write_killed_midway_keeps_the_previous_one(tmp_path, mode):
    proc = _writer(tmp_path, mode)
    try:
        assert proc.stdout.readline().strip() == "saved 1"
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait()
    params, extra = _state_arrays(tmp_path / "state.ckpt")
    assert extra["gen"] == 1 and np.all(params["w"] == 1.0)
    left = _temps(tmp_path)
    assert len(left) == 1 and left[0].startswith(".state.")  # what a kill cannot clean up
    assert remove_stale_temps(str(tmp_path)) == left and _temps(tmp_path) == []


def test_checkpoint_writes_killed_at_random_moments_stay_loadable(tmp_path):
    rng = random.Random(f"{SEED}-writes")
    for attempt in range(2):
        proc = _writer(tmp_path, "loop")
        seen = 0
        try:
            assert proc.stdout.readline().strip() == "saved 1"
            time.sleep(rng.uniform(0.05, 1.0))
        finally:
            proc.send_signal(signal.SIGKILL)
            rest, _ = proc.communicate()
            lines = [ln for ln in rest.splitlines() if ln.startswith("saved ")]
            seen = int(lines[-1].split()[1]) if lines else 1
        params, extra = _state_arrays(tmp_path / "state.ckpt")
        why = f"attempt {attempt}, last reported gen {seen} (HOURNAS_FAULT_SEED={SEED})"
        assert extra["gen"] in (seen, seen + 1), why   # the last complete one (or the next)
        assert np.all(params["w"] == float(extra["gen"])), why
        remove_stale_temps(str(tmp_path))


# ----------------------------------------------------------------------------- a full disk

def test_full_disk_keeps_the_last_state_and_resume_is_exact(reference, tmp_path):
    """A file-size limit (ulimit -f) stands in for a full disk: the stage-1 states fit, the
    larger stage-2 state does not. The run stops with one clear line, the last stage-1 state
    stays loadable, and --resume on a roomier disk ends exactly as the uninterrupted run."""
    limit = (reference[0] / "search_state.ckpt").stat().st_size * 3 // 4

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "search.py", "--config", CONFIG, "--output_dir",
                           str(out)], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                          timeout=HANG, preexec_fn=small_disk)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith(f"error: writing '{out / 'search_state.ckpt'}' failed: File too large")
    assert "the previous file is kept" in err
    _, extra = _state_arrays(out / "search_state.ckpt")
    assert extra["state"]["stage"] == "vital" and extra["state"]["global_step"] == STEPS // 2
    assert _temps(out) == []
    resumed = last_json(run_cli("search.py", "--config", CONFIG, "--output_dir", str(out),
                                "--resume", "--json").stdout)
    _assert_same_search(out, reference[0], resumed, reference[1], "full disk at stage 2")


# ----------------------------------------------------------------------------- safe loading

def test_no_unsafe_loader_on_any_load_path():
    """Configs, architectures and spaces go through yaml.safe_load (or a SafeLoader
    subclass), checkpoints through protobuf + JSON, .npz with allow_pickle=False."""
    unsafe = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib|cloudpickle)\b|"
                        r"\bpickle\.loads?\(|allow_pickle\s*=\s*True|yaml\.(unsafe_|full_)?load\(|"
                        r"yaml\.(Unsafe|Full)?Loader\b|torch\.load\(")
    found = []
    files = sorted(Path(ROOT).glob("*.py")) + sorted(Path(ROOT, "src").glob("**/*.py"))
    for path in files:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if unsafe.search(code) or ("np.load(" in code and "allow_pickle=False" not in code):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert found == []
