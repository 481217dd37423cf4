"""Process-wide set-up in one place: device target, execution mode, CPU threads,
distributed init, the MindSpore seed, the matplotlib backend.

Nothing else in the project sets device state. ``setup_context`` is idempotent:
a second call with the same target returns the same facts (and may change the mode).
"""
from __future__ import annotations

import os
import platform
from typing import Any

from src.errors import DeviceError

DEVICE_TARGETS = ("CPU", "GPU", "Ascend")
MODES = ("graph", "pynative")
_WHY = {"GPU": "MindSpore could not load its GPU back end (it needs an NVIDIA GPU with CUDA 11.x and cuDNN)",
        "Ascend": "MindSpore could not load its Ascend back end (it needs an Ascend NPU with CANN)"}

_state: dict[str, Any] = {}  # facts of the first setup_context call in this process
_threads_set: list[int] = []  # threads_num may be called once per process
_blocking_set: list[bool] = []  # launch_blocking, once per process (CPU)


def _normalize_target(device_target: str) -> str:
    for t in DEVICE_TARGETS:
        if str(device_target).lower() == t.lower():
            return t
    raise DeviceError(f"unknown device target '{device_target}'; valid: {', '.join(DEVICE_TARGETS)}")


def device_available(device_target: str) -> tuple[bool, str]:
    """(available, reason) for a back end, without logging or touching device state."""
    target = _normalize_target(device_target)
    if target == "CPU":
        return True, ""
    try:  # what hal.is_available() asks, minus its warning log lines
        from mindspore._c_expression import MSContext

        ctx = MSContext.get_instance()
        supported, plugin_error = ctx.is_pkg_support_device(target), ctx.load_plugin_error()
    except (ImportError, AttributeError):
        import mindspore as ms

        supported, plugin_error = ms.hal.is_available(target), ""
    if supported:
        return True, ""
    lines = [ln.strip() for ln in plugin_error.splitlines() if target.lower() in ln.lower()]
    return False, _WHY[target] + (f" ({lines[0]})" if lines else "")


def set_mode(mode: str) -> None:
    """Switch execution mode: 'graph' (jit, the trainer) or 'pynative' (eager, the search)."""
    import mindspore as ms

    if mode not in MODES:
        raise DeviceError(f"unknown execution mode '{mode}'; valid: {', '.join(MODES)}")
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    if _state:
        _state["mode"] = mode


def context_facts() -> dict[str, Any]:
    """The facts of this process's ``setup_context`` (empty before it ran)."""
    return dict(_state)


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _set_threads(n: int) -> int:
    """Pin the CPU op thread count once per process; later calls keep the first value."""
    if _threads_set:
        return _threads_set[0]
    from mindspore.device_context.cpu import op_tuning

    op_tuning.threads_num(int(n))
    _threads_set.append(int(n))
    return int(n)


def _launch_blocking() -> None:
    """CPU: run PyNative ops synchronously. MindSpore's asynchronous launch thread spins on one
    of the cores, and its depthwise-conv weight gradient has a slow path there
    (docs/search_engine.md). Once per process,
    after the device and the thread count are set."""
    if _blocking_set:
        return
    import mindspore as ms

    ms.runtime.launch_blocking()
    _blocking_set.append(True)


def _init_distributed() -> tuple[int, int, int]:
    """init() the collective backend; returns (rank, group_size, local workers)."""
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    launched = any(k in os.environ for k in ("MS_ROLE", "RANK_TABLE_FILE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))
    if not launched:
        raise DeviceError("distributed run requested but this process was not started by a launcher; "
                          "start it with msrun (e.g. msrun --worker_num=2 --local_worker_num=2 "
                          "--master_port=8118 --join=True train.py ...) or mpirun")
    try:
        init()
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise DeviceError(f"distributed init failed: {first}") from e
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    rank, size = get_rank(), get_group_size()
    try:  # works on CPU (mccl) under msrun; if not, assume every worker is on this host
        from mindspore.communication import get_local_rank_size

        local_n = int(get_local_rank_size())
    except Exception:
        local_n = size
    return rank, size, max(1, local_n)


def setup_context(device_target: str = "CPU", mode: str = "graph", device_id: int | None = None,
                  threads: int | None = None, distributed: bool = False) -> dict[str, Any]:
    """Set device, mode, CPU threads and (optionally) data-parallel init. Returns facts:
    device_target, device_id, mode, rank, group_size, threads (None off CPU)."""
    import mindspore as ms

    target = _normalize_target(device_target)
    if mode not in MODES:
        raise DeviceError(f"unknown execution mode '{mode}'; valid: {', '.join(MODES)}")
    if _state:
        if target != _state["device_target"] or distributed != _state["distributed"]:
            raise DeviceError(
                f"the device context is already set up for {_state['device_target']}"
                f"{' (distributed)' if _state['distributed'] else ''}; it cannot change to {target}"
                f"{' (distributed)' if distributed else ''} within one process")
        set_mode(mode)
        return dict(_state)

    ok, reason = device_available(target)
    if not ok:
        raise DeviceError(f"device target '{target}' is not available here: {reason}; use --device_target CPU")
    if target == "CPU" and platform.machine().lower() in ("x86_64", "amd64"):
        # bundled oneDNN otherwise uses reference convs on AVX-512 CPUs (5-60x slower)
        os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    if device_id is None and distributed and target != "CPU":
        # msrun negotiates the device of each worker itself; mpirun says only the local rank
        for key in ("DEVICE_ID", "OMPI_COMM_WORLD_LOCAL_RANK"):
            if key in os.environ:
                device_id = int(os.environ[key])
                break
    try:
        ms.set_device(target, device_id)
    except (RuntimeError, ValueError) as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise DeviceError(f"device target '{target}' could not be set: {first}; use --device_target CPU") from e
    set_mode(mode)

    rank, size, local_n = 0, 1, 1
    if distributed:
        rank, size, local_n = _init_distributed()
    used_threads = None
    if target == "CPU":
        if threads is None:
            threads = max(1, _cpu_count() // local_n)
        if threads < 1:
            raise DeviceError(f"threads must be >= 1, got {threads}")
        used_threads = _set_threads(threads)
        _launch_blocking()
    _state.update(device_target=target, device_id=device_id, mode=mode, rank=rank, group_size=size,
                  threads=used_threads, distributed=distributed)
    return dict(_state)


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display): every plot of the
    project gets it here, so the backend is chosen in one place."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def set_seed(seed: int) -> None:
    """Seed MindSpore's weight initialisers and in-graph random ops (``ms.set_seed``): the
    entry points call it (train.py before the network is built; the search before each
    stage's supernet), never the library's loops. Host-side randomness (data order, Gumbel
    noise, proposals) has its own seeded numpy generators."""
    import mindspore as ms

    ms.set_seed(int(seed))


def seed_data_pipeline(seed: int) -> None:
    """Seed the random image ops (crops, flips, CutOut) of the next MindSpore dataset
    pipeline built in this process (``ds.config.set_seed``: process-wide; a pipeline reads it
    when it is built). src/data/pipeline.py calls it just before building each augmenting
    CIFAR-10 / ImageNet pipeline, with a seed derived from (seed, epoch, start_batch), so the
    value is per pipeline and the entry points cannot set it once."""
    import mindspore.dataset as ds

    ds.config.set_seed(int(seed))


_allreduce: list = []  # one AllReduce primitive per process, made on first use


def agree_stop(signum: int | None) -> int | None:
    """Data parallel: the stop signal (SIGTERM/SIGINT) every rank acts on after this step.

    A signal seen by any rank stops all of them after the same step (rank 0 then checkpoints
    that step); a rank that saw none takes the others' signal number. One small AllReduce
    (sum: the only reduction CPU collectives offer); call it on every rank at the same point.
    """
    import mindspore as ms
    import mindspore.ops as ops
    import numpy as np

    if not _allreduce:
        _allreduce.append(ops.AllReduce())
    local = np.array([0.0 if signum is None else 1.0, float(signum or 0)], np.float32)
    total = _allreduce[0](ms.Tensor(local)).asnumpy()
    if total[0] == 0:
        return None
    return signum if signum is not None else int(round(float(total[1] / total[0])))
