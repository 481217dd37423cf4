"""Measure a latency lookup table (layer x candidate op, ms) for a space on this device.

    python benchmarks/latency_table.py --space fbnet_cifar10 [--device_target GPU] [--json]

Writes ``runs/latency/<space>_<device>.json`` (or ``--output``); a search config uses it with
``proposal.latency_table: PATH`` and ``proposal.targets.latency: <ms>``. The latency objective is
the sum of the layers' entries (stem, head and classifier are constant and reported apart).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.cli import common_parser, emit_json, log, run_main  # noqa: E402


def main(args) -> int:
    from src.context import setup_context
    from src.latency import default_path, load_latency_table, measure_latency_table, \
        save_latency_table
    from src.resource import resource_table
    from src.space.space import load_space

    facts = setup_context(args.device_target or "CPU", mode="pynative")
    space = load_space(args.space, args.width_mult)
    path = args.output or default_path(space.name, facts["device_target"])
    log(f"measuring {space.name} on {facts['device_target']}: {len(space.layers)} layers, "
        f"batch {args.batch}, warm-up {args.warmup}, median of {args.repeats}")
    data = measure_latency_table(space, warmup=args.warmup, repeats=args.repeats,
                                 batch=args.batch, log=log)
    save_latency_table(data, path)
    table = resource_table(space, extra_tables={"latency": load_latency_table(path, space)},
                           objectives=("params", "flops", "latency"))
    lo, hi = table.bounds()["latency"]
    log(f"wrote {path} in {data['measure_seconds']:.1f} s; latency objective (sum of layers) "
        f"{lo:.3f} .. {hi:.3f} ms; stem+head+classifier {data['fixed_ms']:.3f} ms (not included)")
    emit_json({"path": path, "space": space.name, "device_target": facts["device_target"],
               "latency_range_ms": [lo, hi], "fixed_ms": data["fixed_ms"],
               "measure_seconds": data["measure_seconds"]}) if args.json else None
    return 0


def parser():
    p = common_parser(__doc__)
    p.add_argument("--space", default="fbnet_cifar10", help="space name or YAML path")
    p.add_argument("--width_mult", type=float, default=1.0, help="narrow the space (e.g. 0.25)")
    p.add_argument("--output", metavar="PATH", help="file to write (default runs/latency/...)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    return p


if __name__ == "__main__":
    sys.exit(run_main(main, parser=parser()))
