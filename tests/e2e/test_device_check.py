"""benchmarks/device_check.sh: the exact commands of a GPU check and of the tiny CPU check
(--dry-run), the input checks, the tiny CPU chain for real (search, train, eval, export), and
the bookkeeping (a failed step, a skipped step, the time budget, SIGTERM) with a stand-in for
python that answers at once (PYTHON=...)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import HANG, ROOT, cli_env, wait_until

SCRIPT = "benchmarks/device_check.sh"


def check(*args, env_extra: dict | None = None, timeout: int = HANG):
    env = {**cli_env(), **(env_extra or {})}
    return subprocess.run(["bash", SCRIPT, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def summary(out: Path) -> dict:
    return json.loads((out / "device_check_summary.json").read_text())


def by_step(s: dict) -> dict:
    return {st["step"]: st for st in s["steps"]}


# ----------------------------------------------------------------------------- dry runs

def test_gpu_dry_run_prints_every_command(tmp_path):
    out = tmp_path / "dc"
    proc = check(out, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    ckpt = f"{out}/train/ARCH_best.ckpt"
    assert proc.stdout.splitlines() == [
        f"python search.py --device_target GPU --output_dir {out}/search "
        f"--set search.epochs_vital=1 --set search.epochs_nvital=1 --json",
        f"python train.py --arch {out}/search/arch.yaml --config config/train/digits.yaml "
        f"--device_target GPU --epochs 1 --output_dir {out}/train --set train.amp_level=O2 --json",
        f"python eval.py --ckpt {ckpt} --device_target GPU --json",
        f"python export.py --ckpt {ckpt} --file_format MINDIR --output_dir {out}/export "
        f"--device_target GPU --json",
        "python benchmarks/train_step.py --device_target GPU --amp_level O2 --steps 20 --json",
        "python benchmarks/search_step.py --json --device_target GPU --sizes default "
        "--repeats 3 --no_torch",
        "python benchmarks/search_step.py --json --device_target GPU --sizes full "
        "--repeats 3 --no_torch"]
    assert not out.exists()  # a dry run writes nothing


def test_tiny_cpu_dry_run_from_the_environment_with_skip(tmp_path):
    out = tmp_path / "dc"
    proc = check(out, "--tiny", "--dry-run", "--skip", "export",
                 env_extra={"DEVICE_TARGET": "cpu"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"python search.py --config tests/fixtures/tiny_search.yaml --device_target CPU "
        f"--output_dir {out}/search --json",
        f"python train.py --arch {out}/search/arch.yaml --config tests/fixtures/tiny_train.yaml "
        f"--device_target CPU --epochs 1 --output_dir {out}/train --set train.amp_level=O2 --json",
        f"python eval.py --ckpt {out}/train/ARCH_best.ckpt --device_target CPU --json",
        "python benchmarks/train_step.py --device_target CPU --amp_level O2 --steps 2 "
        "--round_steps 1 --batch_size 8 --image_size 16 --no_torch --json",
        "python benchmarks/search_step.py --json --device_target CPU --sizes default --repeats 1 "
        "--executors eager --allpath_repeats 0 --no_torch"]


def test_fashion_dry_run_adds_the_full_recipe_last(tmp_path):
    out, data = tmp_path / "dc", tmp_path / "fm"
    data.mkdir()
    proc = check(out, "--dry-run", "--fashion", data)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == (
        f"python train.py --config config/train/fashion_mnist_full.yaml --arch "
        f"config/arch/hournas_fashion_mnist.yaml --data_path {data} --device_target GPU "
        f"--output_dir {out}/fashion --set train.amp_level=O2 --json")


def test_tiny_fashion_step_for_real(tmp_path):
    """--fashion DIR: the searched Fashion-MNIST net retrained with the full recipe (--tiny:
    two steps), its last epoch's test top-1 in the summary."""
    from tests.fashion_fixtures import write_fashion_mnist

    data, out = tmp_path / "fm", tmp_path / "dc"
    write_fashion_mnist(data, n_train=64, n_test=40)
    proc = check(out, "--device_target", "CPU", "--tiny", "--fashion", data, "--skip",
                 "search,train,eval,export,train_step,search_step")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    s = summary(out)
    assert s["ok"] is True  # the steps left out, whose inputs are missing, are not failures
    assert {st["step"]: st["status"] for st in s["steps"]} == {
        **{n: "left out" for n in ("search", "train", "eval", "export", "train_step",
                                   "search_step")}, "fashion": "ok"}
    fashion = by_step(s)["fashion"]
    assert fashion["status"] == "ok" and fashion["figures"]["epochs"] == 1
    assert 0 <= fashion["figures"]["last_epoch_top1"] <= 100
    assert "in_channels 3 -> 1" not in (out / "log" / "fashion.log").read_text()  # already 1


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--fashion", "{out}/none"], "--fashion: '{out}/none' is not a folder"),
    (["--device_target", "TPU"], "device target must be GPU, CPU or Ascend, got 'TPU'"),
    (["--budget", "ten"], "--budget must be a whole number of seconds"),
    (["--skip", "train,nap"], "--skip: unknown step 'nap'"),
    (["{out}", "other"], "one OUTPUT_DIR only"),
    (["{full}", "--device_target", "CPU"], "is not empty; give a new folder"),
    (["{file}", "--device_target", "CPU"], "is a file"),
])
def test_input_checks(tmp_path, args, message):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("x")
    (tmp_path / "file").write_text("x")
    args = [a.format(out=tmp_path / "dc", full=tmp_path / "full", file=tmp_path / "file")
            for a in args]
    message = message.format(out=tmp_path / "dc")
    proc = check(*args)
    assert proc.returncode == 2
    assert f"error: {message}" in proc.stderr.splitlines()[0] or message in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("usage: bash benchmarks/device_check.sh")
    assert (tmp_path / "full" / "old.txt").exists()


def test_missing_device_stops_before_any_step(tmp_path):
    from src.context import device_available
    # the default target (GPU) where there is none; on a GPU machine, Ascend (no machine has both)
    missing = next(t for t in ("GPU", "Ascend") if not device_available(t)[0])
    out = tmp_path / "dc"
    proc = check(out, *(["--device_target", missing] if missing != "GPU" else []))
    assert proc.returncode == 2
    assert f"error: device target '{missing}' is not available here" in proc.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- CPU, for real

def test_tiny_cpu_chain(tmp_path):
    out = tmp_path / "dc"
    proc = check(out, "--device_target", "CPU", "--tiny", "--skip", "train_step,search_step")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    s = summary(out)
    assert s["ok"] is True  # the steps left out are not failures
    steps = by_step(s)
    assert [st["step"] for st in s["steps"]] == ["search", "train", "eval", "export",
                                                  "train_step", "search_step"]
    assert [st["status"] for st in s["steps"]] == ["ok"] * 4 + ["left out"] * 2
    assert set(steps["search"]["figures"]["stage_seconds"]) == {"vital", "nonvital"}
    ckpt = steps["train"]["figures"]["best_ckpt"]
    assert os.path.isfile(ckpt) and ckpt.startswith(str(out / "train"))
    assert 0 <= steps["eval"]["figures"]["top1"] <= 100
    assert os.path.isfile(steps["export"]["figures"]["file"])
    assert steps["export"]["figures"]["max_abs_diff"] <= 1e-4
    assert "amp_level O2 -> O0" in (out / "log" / "train.log").read_text()
    assert "device check on CPU (tiny): all steps passed" in proc.stdout
    for name in ("search", "train", "eval", "export"):
        assert (out / "log" / f"{name}.command").read_text().startswith("python ")


# ----------------------------------------------------------------------------- bookkeeping

FAKE = '''#!{python}
"""A stand-in for python: the script's own snippets run for real, the steps answer at once."""
import json, os, sys, time

args = sys.argv[1:]
if args[:1] == ["-c"]:  # the device probe: the device is there
    sys.exit(0)
if not args or not args[0].endswith(".py"):  # the summary
    os.execv({python!r}, [{python!r}] + args)


def opt(name):
    return args[args.index(name) + 1]


step = os.path.basename(args[0])[:-3]
if step == "search_step" and opt("--sizes") == "full":
    step = "search_step_full"
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps([step, os.getpid()] + args) + "\\n")
if step in os.environ.get("FAKE_SLEEP", "").split(","):
    time.sleep(120)
if step in os.environ.get("FAKE_FAIL", "").split(","):
    print("error: a fake failure", file=sys.stderr)
    sys.exit(3)
print(f"{{step}}: working", file=sys.stderr)
if step == "search":
    os.makedirs(opt("--output_dir"))
    arch = os.path.join(opt("--output_dir"), "arch.yaml")
    open(arch, "w").write("name: fake\\n")
    r = {{"stage_seconds": {{"vital": 1.5, "nonvital": 2.5}}, "executor": "graph", "arch": arch,
         "params": 1, "flops": 2}}
elif step == "train":
    os.makedirs(opt("--output_dir"))
    ckpt = os.path.join(opt("--output_dir"), "fake_best.ckpt")
    open(ckpt, "w").write("")
    r = {{"best_top1": 91.25, "train_images_per_s": 1234.5, "wall_s": 3.0, "best_ckpt": ckpt}}
elif step == "eval":
    r = {{"top1": 90.5, "top5": 99.0, "images_per_s": 5000.0, "images": 360}}
elif step == "export":
    os.makedirs(opt("--output_dir"))
    path = os.path.join(opt("--output_dir"), "fake.mindir")
    open(path, "w").write("")
    r = {{"files": {{"MINDIR": {{"path": path, "max_abs_diff": 0.0}}}}}}
elif step == "train_step":
    r = {{"mindspore": {{"images_per_s": 2000.0, "amp_level": "O2", "first_step_s": 30.0,
                        "step_s": 0.032, "peak_rss_gb": 1.5}}, "pytorch": None, "ratio": None,
         "load_avg_1min": [0.5]}}
else:
    r = {{"sizes": {{opt("--sizes"): {{"executors": {{"eager": {{"step_s": 0.5, "warmup_s": 1.0,
                                                           "peak_rss_gb": 0.8}},
                                                 "graph": {{"step_s": 0.25, "warmup_s": 60.0,
                                                           "peak_rss_gb": 6.4}}}},
                                    "default_executor": "graph", "ratio": None}}}}}}
print(json.dumps(r))
'''


@pytest.fixture
def fake(tmp_path):
    path = tmp_path / "fakepy"
    path.write_text(FAKE.format(python=sys.executable))
    path.chmod(0o755)
    calls = tmp_path / "calls.jsonl"

    def run(*args, **env):
        return check(tmp_path / "dc", *args,
                     env_extra={"PYTHON": str(path), "FAKE_CALLS": str(calls), **env})

    run.out = tmp_path / "dc"
    run.calls = lambda: [json.loads(ln) for ln in calls.read_text().splitlines()]
    return run


def test_all_steps_pass_and_the_summary_has_their_figures(fake):
    proc = fake()
    assert proc.returncode == 0, proc.stderr
    s = summary(fake.out)
    assert s["ok"] is True and s["device_target"] == "GPU" and s["tiny"] is False
    steps = by_step(s)
    assert list(steps) == ["search", "train", "eval", "export", "train_step", "search_step",
                           "search_step_full"]
    assert all(st["status"] == "ok" and st["exit_code"] == 0 and st["seconds"] >= 0
               for st in s["steps"])
    assert steps["search"]["figures"]["stage_seconds"] == {"vital": 1.5, "nonvital": 2.5}
    assert steps["train"]["figures"]["best_top1"] == 91.25
    assert steps["eval"]["figures"]["top1"] == 90.5
    assert steps["export"]["figures"]["file"] == str(fake.out / "export" / "fake.mindir")
    assert steps["train_step"]["figures"]["images_per_s"] == 2000.0
    assert steps["train_step"]["figures"]["amp_level"] == "O2"
    assert steps["train_step"]["figures"]["peak_rss_gb"] == 1.5
    assert steps["train_step"]["figures"]["pytorch_peak_rss_gb"] is None
    assert steps["search_step"]["figures"]["default"]["single_path_s"] == {"eager": 0.5,
                                                                          "graph": 0.25}
    assert steps["search_step_full"]["figures"]["full"]["warmup_s"]["graph"] == 60.0
    assert steps["search_step"]["figures"]["default"]["peak_rss_gb"] == {"eager": 0.8,
                                                                        "graph": 6.4}
    # eval and export got the checkpoint train.py wrote
    calls = {c[0]: c[2:] for c in fake.calls()}
    ckpt = str(fake.out / "train" / "fake_best.ckpt")
    assert calls["eval"][calls["eval"].index("--ckpt") + 1] == ckpt
    assert calls["export"][calls["export"].index("--ckpt") + 1] == ckpt
    # the table at the end, and each step's log, JSON and command
    assert "device check on GPU: all steps passed" in proc.stdout
    assert "search_step_full  ok       exit 0" in proc.stdout
    assert "search: working" in (fake.out / "log" / "search.log").read_text()
    assert json.loads((fake.out / "log" / "eval.json").read_text())["top5"] == 99.0


def test_a_failed_search_skips_what_needs_it_and_the_rest_runs(fake):
    proc = fake("--skip", "search_step_full", FAKE_FAIL="search")
    assert proc.returncode == 1
    steps = by_step(summary(fake.out))
    assert {n: (st["status"], st["exit_code"]) for n, st in steps.items()} == {
        "search": ("failed", 3), "train": ("skipped", None), "eval": ("skipped", None),
        "export": ("skipped", None), "train_step": ("ok", 0), "search_step": ("ok", 0),
        "search_step_full": ("left out", None)}
    assert "arch.yaml (the search did not finish)" in steps["train"]["note"]
    assert steps["search_step_full"]["note"] == "--skip"
    assert "error: a fake failure" in (fake.out / "log" / "search.log").read_text()
    assert "NOT all steps passed" in proc.stdout


def test_a_failed_eval_does_not_stop_export(fake):
    proc = fake("--skip", "train_step,search_step,search_step_full", FAKE_FAIL="eval")
    assert proc.returncode == 1
    steps = by_step(summary(fake.out))
    assert steps["eval"]["status"] == "failed" and steps["export"]["status"] == "ok"


def test_the_budget_stops_a_slow_step_and_skips_the_rest(fake):
    proc = fake("--budget", "8", FAKE_SLEEP="search")
    assert proc.returncode == 1
    steps = by_step(summary(fake.out))
    assert (steps["search"]["status"], steps["search"]["exit_code"]) == ("timeout", 124)
    # the budget less the time before the step (the device probe)
    assert re.fullmatch(r"stopped at the [5-8] s limit", steps["search"]["note"])
    assert steps["train"]["status"] == "skipped"
    for name in ("train_step", "search_step", "search_step_full"):
        assert steps[name]["status"] == "skipped"
        assert "budget" in steps[name]["note"]
    pid = fake.calls()[0][1]
    assert not Path(f"/proc/{pid}").exists()


def test_sigterm_stops_the_step_and_writes_the_summary(fake, tmp_path):
    calls = tmp_path / "calls.jsonl"
    env = {**cli_env(), "PYTHON": str(tmp_path / "fakepy"), "FAKE_CALLS": str(calls),
           "FAKE_SLEEP": "train"}
    proc = subprocess.Popen(["bash", SCRIPT, str(fake.out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = wait_until(proc, lambda: calls.exists() and any(c[0] == "train"
                                                                  for c in fake.calls()))
        assert started, "train.py never started"  # (the fake train.py is running)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=HANG)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    steps = by_step(summary(fake.out))
    assert list(steps) == ["search", "train"]
    assert steps["train"]["status"] == "interrupted"
    assert "the steps after train were not run" in stderr
    pid = [c for c in fake.calls() if c[0] == "train"][0][1]
    assert not Path(f"/proc/{pid}").exists()
