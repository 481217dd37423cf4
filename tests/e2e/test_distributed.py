"""Data parallel on 2 CPU workers under msrun (127.0.0.1), through scripts/run_*_cpu.sh.

* the scripts fail fast with a usage line (exit 2) and return the job's exit code;
* the search (tiny space, digits, 4 steps a stage): both ranks sample the same paths (their
  per-rank logs), end with bit-identical weights and architecture parameters and derive the
  same architecture; rank 0 alone writes it; SIGTERM stops both ranks after the same step and
  a resumed run ends bit-identical to an uninterrupted one;
* training (a tiny net, 4 steps): both ranks hold bit-identical weights, rank 0 writes the
  checkpoints, the sharded evaluation counts every image once;
* with batch-free BatchNorm (tests/e2e/distributed_worker.py), the 2-rank search and training
  equal the single-process ones on the full batch within float32 rounding. With real
  BatchNorm they cannot: each rank normalises over its half batch (docs/distributed.md).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.checkpoint import load_checkpoint
from src.data import sample_order
from src.space.space import load_arch
from tests.conftest import fixture_text
from tests.e2e.helpers import HANG, ROOT, cli_env, records, wait_until

CONFIG = "tests/fixtures/tiny_search.yaml"
TINY_ARCH = fixture_text("tiny_arch_mixed.yaml")
# 4 steps of a global batch of 16 (8 per rank)
TRAIN = ["--epochs", "1", "--batch_size", "16", "--set", "data.image_size=16",
         "--set", "train.steps_per_epoch=4", "--set", "train.log_every=1",
         "--set", "train.warmup_epochs=0", "--set", "train.lr=0.2",
         "--set", "train.base_batch=16", "--json"]
SCRIPTS = sorted(p.name for p in (Path(ROOT) / "scripts").glob("run_*.sh"))
# float32 rounding between a 2-rank step (two half-batch gradients, averaged) and the
# single-process full-batch step, after 8 search steps or 4 training steps (measured: 4e-9
# weights, 1.2e-7 on θ of magnitude 3.5); a missing mean or a wrong shard moves them by 1e-3
ATOL, RTOL = 1e-6, 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra) -> dict:
    e = cli_env()
    e["MASTER_PORT"] = str(free_port())
    e.update(extra)
    return e


def script(name: str, *args, check: bool = True, timeout: int = HANG, **env_extra):
    proc = subprocess.run(["bash", f"scripts/{name}", *map(str, args)], cwd=ROOT,
                          env=env(**env_extra), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {args} exited {proc.returncode}\nstdout:\n"
                             f"{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def worker_json(log_dir: Path, rank: int) -> dict:
    """The --json line a worker printed (msrun keeps each worker's output in worker_R.log)."""
    lines = (log_dir / f"worker_{rank}.log").read_text().splitlines()
    return json.loads(next(ln for ln in reversed(lines) if ln.startswith("{")))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_rank(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "rank"} for r in records]


def weights(ckpt: Path) -> dict[str, np.ndarray]:
    """Trained weights of a checkpoint (no optimizer moments, no BatchNorm statistics)."""
    params, _ = load_checkpoint(str(ckpt))
    out = {}
    for k, v in params.items():
        a = v.asnumpy()
        if a.dtype.kind == "f" and not any(s in k for s in ("moment", "moving", "ema")) \
                and k not in ("learning_rate", "loss_scale"):
            out[k] = a
    return out


def assert_close(a: dict, b: dict, what: str) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for k in a:
        diff = np.abs(a[k].astype(np.float64) - b[k])
        assert np.all(diff <= ATOL + RTOL * np.abs(a[k])), (what, k, float(diff.max()))
        worst = max(worst, float(diff.max()))
    return worst


# ----------------------------------------------------------------------------- no launcher

def test_rank_shards_of_a_batch_are_the_single_process_batch():
    idx = np.arange(1000) * 7
    order = sample_order(idx, shuffle=True, seed=3, epoch=1)
    for size, batch in ((2, 16), (4, 64), (8, 8)):
        shards = [sample_order(idx, shuffle=True, seed=3, epoch=1, shard=(r, size))
                  for r in range(size)]
        per = batch // size
        for k in range(len(order) // batch):
            ranks = np.concatenate([s[k * per:(k + 1) * per] for s in shards])
            assert sorted(ranks.tolist()) == sorted(order[k * batch:(k + 1) * batch].tolist())


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_fail_fast_with_a_usage_line(name, tmp_path):
    runs = [script(name, check=False),                               # no arguments
            script(name, "x", "y", "z", "w", "v", "u", check=False),  # too many / not a number
            script(name, "--json", check=False)]                     # option before --
    for proc in runs:
        assert proc.returncode == 2, (name, proc.stderr)
        err = proc.stderr.splitlines()
        assert err[0].startswith("error: ") and err[-1].startswith(f"usage: bash scripts/{name} ")
        assert proc.stdout == ""
    help_ = script(name, "--help")
    assert help_.stdout.startswith(f"usage: bash scripts/{name} ")


def test_scripts_check_paths_and_device_count(tmp_path):
    proc = script("run_search_cpu.sh", "0", CONFIG, tmp_path, check=False)
    assert proc.returncode == 2 and "DEVICE_NUM must be a whole number >= 1, got '0'" in proc.stderr
    proc = script("run_search_cpu.sh", "2", "nope.yaml", tmp_path, check=False)
    assert proc.returncode == 2 and "CONFIG 'nope.yaml' is not a file" in proc.stderr
    proc = script("run_search_cpu.sh", "2", CONFIG, tmp_path, tmp_path / "nope", check=False)
    assert proc.returncode == 2 and "DATA_PATH" in proc.stderr and "is not a directory" in proc.stderr
    proc = script("run_search_cpu.sh", "2", CONFIG, tmp_path, check=False, LAUNCHER="slurm")
    assert proc.returncode == 2 and "LAUNCHER must be msrun or mpirun" in proc.stderr
    assert not (tmp_path / "log").exists()  # nothing ran


def test_search_batch_is_global_and_must_split_evenly(tmp_path):
    from src.config import load_config
    from src.errors import HourNASError
    from src.search.config import SearchConfig
    from src.search.engine import SearchRun

    cfg = load_config(SearchConfig, CONFIG, ["search.batch_size=7"])
    with pytest.raises(HourNASError, match=r"search.batch_size 7 is the global batch and must "
                                           r"be divisible by the number of ranks \(2\)"):
        SearchRun(cfg, str(tmp_path), {"rank": 1, "group_size": 2})
    cfg = load_config(SearchConfig, CONFIG)  # batch 8: 4 per rank, as many steps as 1 rank
    two = SearchRun(cfg, str(tmp_path), {"rank": 1, "group_size": 2})
    one = SearchRun(cfg, str(tmp_path), {"rank": 0, "group_size": 1})
    assert (two.rank_batch, one.rank_batch) == (4, 8)
    assert two.steps_per_epoch() == one.steps_per_epoch()
    assert two.rank_log is not None and one.rank_log is None


def test_rank_log_truncates_to_the_resumed_step(tmp_path):
    from src.search.distributed import RankLog

    log = RankLog(str(tmp_path), 1)
    log.start(None)
    for step in (1, 2, 3):
        log.write(stage="vital", global_step=step, path=[step])
    log.write(event="done", global_step=3)
    with open(log.path, "a") as f:
        f.write('{"rank": 1, "stage": "vit')           # a line cut by a kill
    log.start(2)
    assert read_jsonl(tmp_path / "search_paths_rank1.jsonl") == [
        {"rank": 1, "stage": "vital", "global_step": s, "path": [s]} for s in (1, 2)]
    log.start(None)
    assert (tmp_path / "search_paths_rank1.jsonl").read_text() == ""


# ----------------------------------------------------------------------------- the search

@pytest.fixture(scope="module")
def search2(tmp_path_factory):
    out = tmp_path_factory.mktemp("search2")
    proc = script("run_search_cpu.sh", 2, CONFIG, out, "--", "--json")
    return out, proc


def test_two_rank_search_writes_one_architecture(search2):
    out, proc = search2
    assert "msrun --worker_num=2 --local_worker_num=2" in proc.stdout
    assert (out / "log" / "search.command").read_text().startswith("msrun ")
    for name in ("arch.yaml", "summary.json", "search_state.ckpt", "search_log.jsonl",
                 "config.yaml", "search_paths_rank0.jsonl", "search_paths_rank1.jsonl",
                 "log/search.log", "log/worker_0.log", "log/worker_1.log"):
        assert (out / name).is_file(), name
    summaries = [worker_json(out / "log", r) for r in (0, 1)]
    assert summaries[0]["ops"] == summaries[1]["ops"]
    arch = load_arch(str(out / "arch.yaml"))
    assert [layer.ops[0].name for layer in arch.layers] == summaries[0]["ops"]
    for r in (0, 1):
        assert f"rank {r} of 2" in (out / "log" / f"worker_{r}.log").read_text()
    log = read_jsonl(out / "search_log.jsonl")      # rank 0's, once per step
    assert [r["global_step"] for r in log if "path" in r] == list(range(1, 9))


def test_ranks_sample_the_same_paths_and_end_identical(search2):
    out, _ = search2
    r0 = read_jsonl(out / "search_paths_rank0.jsonl")
    r1 = read_jsonl(out / "search_paths_rank1.jsonl")
    assert {r["rank"] for r in r0} == {0} and {r["rank"] for r in r1} == {1}
    assert without_rank(r0) == without_rank(r1)     # paths, proposals, digests, ops
    steps = [r for r in r0 if "path" in r]
    assert [r["global_step"] for r in steps] == list(range(1, 9))
    assert {r["stage"] for r in steps} == {"vital", "nonvital"}
    ends = [r for r in r0 if r.get("event") == "stage_end"]
    assert [e["stage"] for e in ends] == ["vital", "nonvital"]
    done = r0[-1]
    assert done["event"] == "done"
    assert done["ops"] == worker_json(out / "log", 0)["ops"]
    # rank 0's search log shows the same paths as the per-rank logs
    log = [r for r in read_jsonl(out / "search_log.jsonl") if "path" in r]
    assert [r["path"] for r in log] == [r["path"] for r in steps]


def _workers(out: Path) -> list[int]:
    """Process ids of the msrun workers (MS_ROLE=MS_WORKER) of the run writing to ``out``."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(out).encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if b"MS_ROLE=MS_WORKER" in f.read().split(b"\0"):
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_sigterm_stops_both_ranks_and_resume_ends_as_uninterrupted(search2, tmp_path):
    ref, _ = search2
    out = tmp_path / "run"
    proc = subprocess.Popen(["bash", "scripts/run_search_cpu.sh", "2", CONFIG, str(out)],
                            cwd=ROOT, env=env(MS_NODE_TIMEOUT="5"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    log1 = out / "search_paths_rank1.jsonl"
    try:
        if wait_until(proc, lambda: any(r.get("stage") == "nonvital" for r in records(log1))):
            pids = _workers(out)
            assert len(pids) == 2
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
        rc = proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rc == 128 + signal.SIGTERM                     # the workers' code, not msrun's 1
    r0, r1 = (read_jsonl(out / f"search_paths_rank{r}.jsonl") for r in (0, 1))
    assert without_rank(r0) == without_rank(r1)           # both stopped after the same step
    stopped_at = r0[-1]["global_step"]
    assert 5 <= stopped_at < 8
    for r in (0, 1):
        assert f"stopped by SIGTERM at nonvital global step {stopped_at}" in \
            (out / "log" / f"worker_{r}.log").read_text()

    script("run_search_cpu.sh", 2, CONFIG, out, "--", "--resume")
    want = without_rank(read_jsonl(ref / "search_paths_rank0.jsonl"))
    for r in (0, 1):   # every rank resumed from rank 0's checkpoint, bit for bit
        assert without_rank(read_jsonl(out / f"search_paths_rank{r}.jsonl")) == want
    assert (out / "arch.yaml").read_text() == (ref / "arch.yaml").read_text()


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def arch_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "tiny.yaml"
    path.write_text(TINY_ARCH)
    return path


def test_two_rank_training_and_eval(arch_file, tmp_path):
    out = tmp_path / "train2"
    script("run_distribute_train_cpu.sh", 2, arch_file, "config/train/digits.yaml", out,
           "--", *TRAIN)
    s0, s1 = worker_json(out / "log", 0), worker_json(out / "log", 1)
    assert (s0["rank"], s1["rank"], s0["devices"]) == (0, 1, 2)
    assert s0["global_step"] == s1["global_step"] == 4
    assert s0["weights_sha256"] == s1["weights_sha256"]           # bit-identical weights
    assert s0["last"] == {**s1["last"], "seconds": s0["last"]["seconds"],
                          "images_per_s": s0["last"]["images_per_s"]}
    assert s0["last"]["images"] == 360                             # each image counted once
    ckpts = sorted(p.name for p in out.glob("*.ckpt"))
    assert ckpts == ["tiny-1_4.ckpt", "tiny_best.ckpt"]            # rank 0's, once
    start = next(r for r in read_jsonl(out / "train_log.jsonl") if r["event"] == "start")
    assert (start["batch_size"], start["steps_per_epoch"], start["peak_lr"]) == (16, 4, 0.2)

    ev = script("run_eval_cpu.sh", out / "tiny-1_4.ckpt", "--", "--json")
    res = json.loads(ev.stdout.strip().splitlines()[-1])
    assert res["images"] == 360
    assert res["top1"] == pytest.approx(s0["last"]["top1"], abs=1e-9)
    assert res["loss"] == pytest.approx(s0["last"]["loss"], rel=1e-5)
    assert (out / "log" / "eval.log").is_file()


def test_standalone_training_script_runs_one_process(arch_file, tmp_path):
    out = tmp_path / "train1"
    proc = script("run_standalone_train_cpu.sh", arch_file, "config/train/digits.yaml", out,
                  "--", *TRAIN[:-1], "--set", "train.steps_per_epoch=2", "--json")
    assert (out / "log" / "train.command").read_text().startswith("python ")
    assert "msrun" not in proc.stdout
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (res["exit_code"], res["devices"], res["global_step"]) == (0, 1, 2)
    assert (out / "tiny-1_2.ckpt").is_file() and (out / "log" / "train.log").is_file()


# ----------------------------------------------------------------------------- = single process

@pytest.fixture(scope="module")
def batch_free(arch_file, tmp_path_factory):
    """The tiny search and 4 training steps with batch-free BatchNorm: single process, then 2
    ranks under msrun (the same entry points, --distributed)."""
    one = tmp_path_factory.mktemp("bf1")
    two = tmp_path_factory.mktemp("bf2")
    worker = os.path.join(ROOT, "tests", "e2e", "distributed_worker.py")
    e = env()
    subprocess.run([sys.executable, worker, str(one), str(arch_file)], cwd=ROOT, env=e,
                   check=True, capture_output=True, timeout=HANG)
    proc = subprocess.run(["msrun", "--worker_num=2", "--local_worker_num=2",
                           "--master_addr=127.0.0.1", f"--master_port={e['MASTER_PORT']}",
                           f"--log_dir={two / 'log'}", "--join=True", worker, str(two),
                           str(arch_file), "--distributed"], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return one, two


def test_two_rank_search_equals_single_process(batch_free):
    one, two = batch_free
    single = [r for r in read_jsonl(one / "search" / "search_log.jsonl") if "path" in r]
    ranks = [r for r in read_jsonl(two / "search" / "search_paths_rank0.jsonl") if "path" in r]
    assert [(r["stage"], r["path"], r["proposal"]) for r in single] == \
        [(r["stage"], r["path"], r["proposal"]) for r in ranks]
    assert without_rank(read_jsonl(two / "search" / "search_paths_rank0.jsonl")) == \
        without_rank(read_jsonl(two / "search" / "search_paths_rank1.jsonl"))
    assert (one / "search" / "arch.yaml").read_text() == (two / "search" / "arch.yaml").read_text()
    a1 = dict(np.load(one / "search" / "arch_params.npz"))
    a2 = dict(np.load(two / "search" / "arch_params.npz"))
    assert_close(a1, a2, "architecture parameters")
    assert_close(weights(one / "search" / "search_state.ckpt"),
                 weights(two / "search" / "search_state.ckpt"), "search weights")


def test_two_rank_training_equals_single_process(batch_free):
    one, two = batch_free
    w1 = weights(one / "train" / "tiny-1_4.ckpt")
    w2 = weights(two / "train" / "tiny-1_4.ckpt")
    assert_close(w1, w2, "training weights")
    s0, s1 = worker_json(two / "log", 0), worker_json(two / "log", 1)
    assert s0["weights_sha256"] == s1["weights_sha256"]
    loss1 = [r["loss"] for r in read_jsonl(one / "train" / "train_log.jsonl") if r["event"] == "step"]
    loss2 = [r["loss"] for r in read_jsonl(two / "train" / "train_log.jsonl") if r["event"] == "step"]
    assert len(loss1) == 4 and loss2 == pytest.approx(loss1, rel=RTOL, abs=ATOL)  # global mean
