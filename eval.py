"""Evaluate a trained checkpoint over every image of the eval split, or profile an architecture.

    python eval.py --ckpt runs/train/fbnet_b_best.ckpt                 # top-1, top-5, loss
    python eval.py --ckpt CKPT --data_path DIR --json                  # CIFAR-10 / ImageNet
    python eval.py --arch config/arch/fbnet_b.yaml --profile [--json]  # params, FLOPs, layers
    python eval.py --arch config/arch/fbnet_c.yaml --format timm [--json]  # for timm's builder

The architecture and the data settings come from the checkpoint (its stored architecture record
and config) unless --arch / --data_path / --set data.KEY=VALUE say otherwise. top1 and top5 are
percentages; images/second excludes the one-off graph compile.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from src.interrupt import exit_on_interrupt  # noqa: E402

exit_on_interrupt()  # before the heavy imports: Ctrl-C while they load is one line

from src.cli import common_parser, emit_json, log, overrides_from_args, run_main  # noqa: E402
from src.config import format_size, load_config  # noqa: E402
from src.errors import HourNASError  # noqa: E402


def parser():
    p = common_parser(__doc__)
    p.add_argument("--ckpt", metavar="PATH", help="training checkpoint (.ckpt)")
    p.add_argument("--arch", metavar="FILE", help="architecture YAML (default: the checkpoint's)")
    p.add_argument("--batch_size", type=int, metavar="N",
                   help="eval batch (default: the training run's eval batch)")
    p.add_argument("--verify-data", dest="verify_data", action="store_true",
                   help="decode every image of the dataset first (in parallel, progress "
                        "on stderr); one error names the broken ones (by default a large image "
                        "folder is checked on a random sample)")
    p.add_argument("--profile", action="store_true",
                   help="print params/FLOPs per layer of --arch; no checkpoint or data needed")
    p.add_argument("--format", choices=("timm",), dest="format",
                   help="print --arch as block strings for another tool: timm (the EfficientNet "
                        "builder's arch_def, or an error naming what timm cannot express)")
    return p


def export_format(args) -> int:
    from src.resource import count
    from src.space.blockstr import timm_arch_def, timm_snippet
    from src.space.space import load_arch

    if not args.arch:
        raise HourNASError("--format timm needs --arch FILE (e.g. config/arch/fbnet_c.yaml)")
    arch = load_arch(args.arch)
    out = timm_arch_def(arch)
    total = count(arch)
    if args.json:
        emit_json({"arch": arch.name, "format": args.format, "params": total["params"], **out})
        return 0
    log(timm_snippet(arch, out).rstrip())
    log(f"# same network as ours: {total['params']:,} params, {format_size(total['flops'])} "
        f"FLOPs at {arch.input_size}x{arch.input_size}")
    return 0


def profile(args) -> int:
    from src.resource import count
    from src.resource import profile as layer_rows
    from src.space.space import load_arch

    if not args.arch:
        raise HourNASError("--profile needs --arch FILE (e.g. config/arch/fbnet_b.yaml)")
    arch = load_arch(args.arch)
    rows = layer_rows(arch)
    total = count(arch)
    if args.json:
        emit_json({"arch": arch.name, "input_size": arch.input_size,
                   "num_classes": arch.num_classes, "params": total["params"],
                   "flops": total["flops"],
                   "layers": [{"name": r.name, "op": r.op, "c_in": r.c_in, "c_out": r.c_out,
                               "stride": r.stride, "out": r.h_out, "params": r.params,
                               "flops": r.flops, "vital": r.vital} for r in rows]})
        return 0
    log(f"{arch.name}: {format_size(total['params'])} params, {format_size(total['flops'])} FLOPs "
        f"(multiply-adds) at {arch.input_size}x{arch.input_size}, {arch.num_classes} classes")
    head = f"{'name':<11}{'op':<14}{'c_in->c_out':>13}{'stride':>7}{'output':>10}" \
           f"{'params':>10}{'FLOPs':>10}  vital"
    log(head)
    log("-" * len(head))
    for r in rows:
        log(f"{r.name:<11}{r.op:<14}{f'{r.c_in}->{r.c_out}':>13}{r.stride:>7}"
            f"{f'{r.h_out}x{r.h_out}':>10}{format_size(r.params):>10}{format_size(r.flops):>10}"
            f"  {'*' if r.vital else ''}")
    log("vital (*): on every input->output path (no shortcut around it); the paper's hourglass neck")
    return 0


def main(args) -> int:
    if args.format:
        return export_format(args)
    if args.profile:
        return profile(args)
    if not args.ckpt:
        raise HourNASError("give --ckpt PATH (or --arch FILE --profile)")
    from src.checkpoint import load_checkpoint, require_training_checkpoint
    from src.context import setup_context
    from src.data import dataset_info
    from src.evaluate import evaluate, load_network
    from src.train.config import TrainConfig

    if args.batch_size is not None and args.batch_size < 1:
        raise HourNASError(f"--batch_size must be >= 1, got {args.batch_size}")
    _, extra = load_checkpoint(args.ckpt)
    require_training_checkpoint(args.ckpt, extra)
    overrides = overrides_from_args(args, TrainConfig)
    stored = extra.get("config") if isinstance(extra.get("config"), dict) else {}
    cfg = load_config(TrainConfig, args.config, overrides, base=stored)
    if args.verify_data:
        from src.data import verify_dataset
        verify_dataset(cfg.data, log)
    setup_context(cfg.device_target, "graph")
    net, arch, extra = load_network(args.ckpt, args.arch)
    channels = dataset_info(cfg.data).channels
    if channels != arch.in_channels:
        raise HourNASError(f"{arch.name} takes {arch.in_channels}-channel images but "
                           f"{cfg.data.name} has {channels}-channel ones; evaluate it on a "
                           f"dataset like the one it was trained on")
    batch = args.batch_size or cfg.train.eval_batch_size or cfg.train.batch_size
    r = evaluate(net, cfg.data, batch)
    log(f"{arch.name} on {cfg.data.name} eval split: top-1 {r['top1']:.2f}%  top-5 "
        f"{r['top5']:.2f}%  loss {r['loss']:.4f}  over {r['images']} images  "
        f"({r['images_per_s']:.1f} images/s, batch {batch})")
    if args.json:
        emit_json({**r, "arch": arch.name, "ckpt": args.ckpt, "dataset": cfg.data.name,
                   "batch_size": batch, "ema": bool(extra.get("ema"))})
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, parser=parser()))
