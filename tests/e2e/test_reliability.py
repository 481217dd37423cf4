"""Reliability, round 3, through the real CLIs and scripts: a stop through a launch script keeps
its save, one run per output folder, the reproduction runner passes a stop on, the divergence
advice names the rate that diverged, and an interrupt outside a run's loop is one line.

The bad inputs of round 3 (names that would leave the output folder, checks before the first
write, seeds and τ out of range, duplicate ops) are cases of ``test_bad_inputs.py``.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import fixture_text
from tests.e2e.helpers import HANG, ROOT, cli_env, records, run_cli, wait_until

SEARCH_CFG = "tests/fixtures/tiny_search.yaml"
TRAIN_CFG = "tests/fixtures/tiny_train.yaml"


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=HANG)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out, err


def _script(*args: str) -> subprocess.Popen:
    """A launch script in a session of its own, as a terminal would run it (its process group
    takes the signal, as with Ctrl+C)."""
    return subprocess.Popen(["bash", *args], cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


# ----------------------------------------------------------------------------- stops

@pytest.mark.parametrize("job,sig", [("search", signal.SIGTERM), ("train", signal.SIGINT)])
def test_a_stop_through_the_script_saves_and_resumes_where_it_stopped(tmp_path, job, sig):
    """The group signal reaches the job, its log's tee outlives it, the job saves; the same
    script with -- --resume continues from the saved step."""
    out = tmp_path / "run"
    if job == "search":
        args = ["scripts/run_search_cpu.sh", "1", SEARCH_CFG, str(out)]
        log = out / "search_log.jsonl"
    else:
        arch = tmp_path / "tiny.yaml"
        arch.write_text(fixture_text("tiny_arch.yaml"))
        args = ["scripts/run_standalone_train_cpu.sh", str(arch), TRAIN_CFG, str(out)]
        log = out / "train_log.jsonl"
    proc = _script(*args)
    wait_until(proc, lambda: any(r.get("global_step", 0) >= 1 and r.get("event") != "start"
                               for r in records(log)))
    os.killpg(proc.pid, sig)
    rc, stdout, stderr = _finish(proc)
    # a SIGINT that lands inside a MindSpore graph step arrives as SIGTERM (MindSpore's own
    # guard raises it): the run saves all the same and exits 143
    codes = {130: "SIGINT", 143: "SIGTERM"} if sig == signal.SIGINT else {143: "SIGTERM"}
    assert rc in codes, stdout + stderr
    assert "Traceback" not in stdout + stderr and "BrokenPipe" not in stdout + stderr
    assert f"stopped by {codes[rc]}" in stdout, stdout
    assert "the job stopped" in stderr and "--resume" in stderr, stderr
    saved = [ln for ln in stdout.splitlines() if "saved" in ln]
    assert saved, stdout  # the stop message names what it saved
    launcher_log = (out / "log" / f"{job}.log").read_text()
    assert saved[-1] in launcher_log  # the tee kept the job's last line

    rc, stdout, stderr = _finish(_script(*args, "--", "--resume"))
    assert rc == 0, stdout + stderr
    assert "resum" in stdout, stdout  # "resuming ... (global step N)" / "resumed from ..."
    if job == "search":
        steps = [r["global_step"] for r in records(log) if "w_loss" in r]
        assert steps and len(steps) == len(set(steps)), steps  # each step once
    else:
        assert (out / "tiny_best.ckpt").is_file()


def test_the_reproduction_runner_passes_a_sigterm_on_and_waits(tmp_path):
    """A SIGTERM to the runner's PID alone stops the stage it runs (which saves); nothing of the
    stage goes on after the runner exits, and the plan says the search resumes."""
    out = tmp_path / "rep"
    proc = subprocess.Popen(["bash", "scripts/run_reproduce_cpu.sh", "1", "tiny_digits", str(out)],
                            cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = out / "search" / "search_log.jsonl"
    wait_until(proc, lambda: any(r.get("global_step", 0) >= 1 for r in records(log)))
    proc.send_signal(signal.SIGTERM)  # the runner alone, not its group
    rc, stdout, stderr = _finish(proc)
    assert rc == 143, stdout + stderr
    assert "stopped in the search stage" in stderr and "run the same command again" in stderr
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout
    assert not left.strip(), f"processes still running in {out}: {left}"
    assert (out / "search" / "search_state.ckpt").is_file()
    proc = subprocess.run([sys.executable, "-m", "src.reproduce", "plan", "tiny_digits",
                           "--device_target", "CPU", "--output_dir", str(out)], cwd=ROOT,
                          env=cli_env(), capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split()[:2] == ["search", "resume"], proc.stdout


# ----------------------------------------------------------------------------- one run per folder

def test_two_searches_into_one_folder_one_runs_the_other_is_refused(tmp_path):
    out = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "search.py", "--config", SEARCH_CFG,
                               "--set", f"search.seed={seed}", "--output_dir", str(out)],
                              cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (0, 1)]
    results = [p.communicate(timeout=HANG) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    winner = [seed for seed, r in zip((0, 1), results) if r[2] == 0][0]
    loser = [r for r in results if r[2] == 2][0]
    errors = [ln for ln in loser[1].splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, loser[1]
    assert ("is in use by process" in errors[0] or "already holds a search" in errors[0]), errors
    from src.config import read_yaml
    assert read_yaml(str(out / "config.yaml"))["search"]["seed"] == winner
    steps = [r["global_step"] for r in records(out / "search_log.jsonl") if "w_loss" in r]
    assert steps and len(steps) == len(set(steps)), steps
    assert not (out / ".hournas.lock").exists()  # released at the winner's exit


def test_a_lock_held_by_a_live_process_names_it_and_a_dead_ones_is_taken_over(tmp_path):
    out = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from src.rundir import lock_output_dir; "
                               f"lock_output_dir({str(out)!r}); print('held', flush=True); "
                               "time.sleep(600)"],
                              cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = run_cli("search.py", "--config", SEARCH_CFG, "--output_dir", str(out), check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            f"error: output folder '{out}' is in use by process {holder.pid} (a run); wait for "
            f"it to end, stop it, or choose another --output_dir")
    finally:
        holder.kill()  # SIGKILL: its lock file stays, naming a dead process
        holder.wait()
    assert (out / ".hournas.lock").read_text().split()[0] == str(holder.pid)
    proc = run_cli("search.py", "--config", SEARCH_CFG, "--stage", "proposals",
                   "--output_dir", str(out), check=False)
    assert proc.returncode == 0, proc.stderr
    assert (out / "proposals_report.json").is_file()


# ----------------------------------------------------------------------------- divergence

def test_the_divergence_advice_names_the_weights_rate_when_the_weights_diverged(tmp_path):
    out = tmp_path / "div"
    proc = run_cli("search.py", "--config", SEARCH_CFG, "--set", "search.w_lr=1e6",
                   "--output_dir", str(out), check=False)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: non-finite") and "--set search.w_lr=100000" in line, line
    assert "arch_lr" not in line, line


# ----------------------------------------------------------------------------- interrupts

def test_ctrl_c_during_start_up_is_one_line_and_writes_nothing(tmp_path):
    """At a random moment of the first second, while Python and MindSpore load (importing
    MindSpore alone takes ~1.5 s on an idle core here; the first training step comes after
    ~1.7 s at the earliest): exit 130, one line."""
    delay = random.Random().uniform(0.1, 1.0)
    out = tmp_path / "t"
    proc = subprocess.Popen([sys.executable, "train.py", "--arch",
                             str(Path(ROOT) / "tests/fixtures/tiny_arch.yaml"),
                             "--output_dir", str(out)], cwd=ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=HANG)
    assert proc.returncode == 130, (delay, stdout, stderr)
    assert stderr.strip().splitlines() == ["error: interrupted"], (delay, stderr)
    assert not out.exists(), delay


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A real training checkpoint of the tiny net (2 steps)."""
    w = tmp_path_factory.mktemp("ckpt")
    arch = w / "tiny.yaml"
    arch.write_text(fixture_text("tiny_arch.yaml"))
    run_cli("train.py", "--arch", str(arch), "--config", TRAIN_CFG, "--set",
            "train.steps_per_epoch=2", "--output_dir", str(w / "train"))
    return w / "train" / "tiny_best.ckpt"


def test_ctrl_c_during_export_is_one_line_and_removes_the_staging_folder(tiny_ckpt, tmp_path):
    temp = tmp_path / "temp"
    temp.mkdir()
    env = dict(cli_env(), TMPDIR=str(temp))
    proc = subprocess.Popen([sys.executable, "export.py", "--ckpt", str(tiny_ckpt),
                             "--file_format", "both", "--output_dir", str(tmp_path / "x")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_until(proc, lambda: any(p.name.startswith("hournas_export_") for p in temp.iterdir()))
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=HANG)
    # 130; 143 when the Ctrl+C lands inside a MindSpore call, whose guard raises SIGTERM
    assert proc.returncode in (130, 143), stdout + stderr
    assert stderr.strip().splitlines()[-1] in ("error: interrupted", "error: stopped by SIGTERM")
    assert "Traceback" not in stderr and "Fatal Python error" not in stderr, stderr
    assert list(temp.iterdir()) == []


def test_a_closed_stdout_does_not_fail_the_command():
    proc = subprocess.Popen([sys.executable, "search.py", "--stage", "describe"], cwd=ROOT,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader went away before the command printed
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=HANG) == 0, stderr
    assert stderr == "", stderr


def test_the_reproduce_cli_gives_one_error_line():
    proc = subprocess.run([sys.executable, "-m", "src.reproduce", "bogus"], cwd=ROOT,
                          env=cli_env(), capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: argument cmd: invalid choice: 'bogus' (choose from 'list', 'check', 'command', "
        "'plan', 'summary') (see python -m src.reproduce --help)"]
