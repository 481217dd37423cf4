"""Latency as a third objective: a measured lookup table, layer x candidate op, in milliseconds.

Every layer's candidate is built as the same ``src.ops.Block`` the supernet and the child net
use (from ``space.layers[i].plan(op, space.conventions)``), compiled with ``ms.jit`` and timed
on the current MindSpore device at batch 1: ``warmup`` untimed runs, then the median of
``repeats`` timed ones (each ends with a host copy of the output, so asynchronous devices are
timed to completion). Identical blocks (same plan) are measured once.

The latency of an architecture is the **sum of its layers' entries** (FBNet's lookup-table
model); stem, head and classifier are the same for every architecture, so they are measured
once, stored as ``fixed_ms`` and left out of the objective: a latency target is a target for the
layers' sum (``benchmarks/latency_table.py`` prints its feasible range).

Files are JSON, one per space and device (``<space>_<device>.json``); ``resource_table(...,
extra_tables={'latency': load_latency_table(path, space)})`` turns one into an objective.
"""
from __future__ import annotations

import json
import os
import platform
import time

import numpy as np

from src.errors import HourNASError
from src.space.space import Space

FORMAT = "hournas-latency-table"
DEFAULT_DIR = os.path.join("runs", "latency")


def default_path(space_name: str, device_target: str, cache_dir: str = DEFAULT_DIR) -> str:
    return os.path.join(cache_dir, f"{space_name}_{device_target}.json")


def _time_cell(cell, shape: tuple, warmup: int, repeats: int) -> float:
    """Median forward time (ms) of a Cell under ms.jit, batch given by ``shape``."""
    import mindspore as ms

    cell.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))

    def forward(inp):
        return cell(inp)

    fn = ms.jit(forward)
    for _ in range(max(1, warmup)):  # the first run compiles
        fn(x).asnumpy()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x).asnumpy()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _layer_key(layer) -> dict:
    """What a layer's entries depend on: shape and candidate ops."""
    return {"label": layer.label, "c_in": layer.c_in, "c_out": layer.c_out,
            "stride": layer.stride, "h_in": layer.h_in, "ops": [o.name for o in layer.ops]}


def measure_latency_table(space: Space, warmup: int = 3, repeats: int = 20, batch: int = 1,
                          log=None) -> dict:
    """Measure every layer x candidate op of ``space`` on the current device; returns the
    file's content (see :func:`save_latency_table`)."""
    import mindspore as ms

    from src.ops import Block, Classifier, ConvBNAct
    if repeats < 1 or batch < 1:
        raise HourNASError(f"latency measurement needs repeats >= 1 and batch >= 1, got "
                           f"repeats={repeats}, batch={batch}")
    device = ms.get_context("device_target")
    conv = space.conventions
    cache: dict[str, float] = {}
    rows = []
    t_start = time.perf_counter()
    for i, layer in enumerate(space.layers):
        row = []
        for op in layer.ops:
            plan = layer.plan(op, conv)
            key = repr(plan)
            if key not in cache:
                cache[key] = _time_cell(Block(plan), (batch, layer.c_in, layer.h_in, layer.h_in),
                                        warmup, repeats)
            row.append(cache[key])
        rows.append(row)
        if log:
            log(f"  {layer.label}: " + ", ".join(f"{v:.3f}" for v in row) + " ms")
    # stem, head and classifier: the same in every architecture, kept apart (see module doc)
    plan = space.net_plan()
    stem = plan.stem
    fixed_ms = _time_cell(ConvBNAct(stem), (batch, stem.cin, space.input_size, space.input_size),
                          warmup, repeats)
    last_h = plan.head.h_out if plan.head is not None else None
    if plan.head is not None:
        fixed_ms += _time_cell(ConvBNAct(plan.head), (batch, plan.head.cin, last_h, last_h),
                               warmup, repeats)
    if last_h is None:
        last = space.layers[-1]
        last_h = -(-last.h_in // last.stride)
    fixed_ms += _time_cell(Classifier(plan.fc_in, plan.num_classes),
                           (batch, plan.fc_in, last_h, last_h), warmup, repeats)
    return {
        "format": FORMAT, "space": space.name, "device_target": device,
        "host": platform.node(), "batch": batch, "warmup": warmup, "repeats": repeats,
        "unit": "ms", "statistic": "median",
        "layers": [_layer_key(layer) for layer in space.layers],
        "table_ms": rows, "fixed_ms": fixed_ms,
        "measure_seconds": time.perf_counter() - t_start,
    }


def save_latency_table(data: dict, path: str) -> str:
    from src.checkpoint import atomic_write_text
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    return atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def read_latency_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise HourNASError(f"latency table '{path}' not found; write one with "
                           f"'python benchmarks/latency_table.py --space SPACE'")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise HourNASError(f"latency table '{path}' is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise HourNASError(f"'{path}' is not a latency table (format '{FORMAT}' expected)")
    return data


def load_latency_table(path: str, space: Space) -> np.ndarray:
    """The table of ``path`` as a (num_layers, max_ops) float array for ``space`` (NaN where a
    layer has fewer ops); the file must have been measured for this space's layers and ops."""
    data = read_latency_file(path)
    found = data.get("layers", [])
    if data.get("space") != space.name or found != [_layer_key(la) for la in space.layers]:
        raise HourNASError(f"latency table '{path}' was measured for space "
                           f"'{data.get('space')}' and does not match the layers and ops of "
                           f"space '{space.name}'; measure one for it with "
                           f"'python benchmarks/latency_table.py --space {space.name}'")
    width = max(len(layer.ops) for layer in space.layers)
    out = np.full((len(space.layers), width), np.nan)
    for i, row in enumerate(data["table_ms"]):
        if len(row) != len(space.layers[i].ops):
            raise HourNASError(f"latency table '{path}': layer {space.layers[i].label} has "
                               f"{len(row)} entries for {len(space.layers[i].ops)} ops")
        out[i, :len(row)] = row
    return out


def latency_table(space: Space, device_target: str | None = None, cache_dir: str = DEFAULT_DIR,
                  refresh: bool = False, **measure_kw) -> tuple[str, np.ndarray]:
    """The cached table for (space, device) -- measured and written on first use.

    Returns (path, array as :func:`load_latency_table`). ``refresh`` measures again.
    """
    import mindspore as ms
    device = device_target or ms.get_context("device_target")
    path = default_path(space.name, device, cache_dir)
    if refresh or not os.path.isfile(path):
        save_latency_table(measure_latency_table(space, **measure_kw), path)
    return path, load_latency_table(path, space)
