"""Train a network from an architecture file (a reference net or a search result).

    python train.py --arch config/arch/fbnet_b.yaml                      # digits, built in
    python train.py --arch ARCH.yaml --config config/train/cifar10.yaml --data_path DIR
    python train.py --arch ARCH.yaml --output_dir runs/x --resume        # continue exactly
    bash scripts/run_distribute_train_gpu.sh 8 ARCH.yaml config/train/imagenet.yaml runs/x DIR
                                        # data parallel: msrun ... train.py ... --distributed

The default recipe (no --config) is config/train/digits.yaml. Outputs in --output_dir:
checkpoints {arch}-{epoch}_{step}.ckpt and {arch}_best.ckpt, config.yaml (resolved), arch.yaml,
train_log.jsonl, train_curves.png (rank 0 writes them; --batch_size is the global batch,
split over the devices). Exit codes: 0 done, 2 bad input or a diverged loss,
130/143 stopped by SIGINT/SIGTERM after saving a checkpoint.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from src.interrupt import exit_on_interrupt  # noqa: E402

exit_on_interrupt()  # before the heavy imports: Ctrl-C while they load is one line

from src.cli import common_parser, emit_json, log, overrides_from_args, run_main  # noqa: E402
from src.config import load_config  # noqa: E402


def parser():
    p = common_parser(__doc__)
    p.add_argument("--arch", metavar="FILE", help="architecture YAML (config key arch)")
    p.add_argument("--epochs", type=int, metavar="N", help="config key train.epochs")
    p.add_argument("--batch_size", type=int, metavar="B", help="global batch (train.batch_size)")
    p.add_argument("--verify-data", dest="verify_data", action="store_true",
                   help="decode every image of the dataset first (in parallel, progress "
                        "on stderr); one error names the broken ones (by default a large image "
                        "folder is checked on a random sample)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in the output folder")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel worker under msrun/mpirun (config key distributed; "
                        "see scripts/ and docs/distributed.md)")
    return p


def main(args) -> int:
    from src.checkpoint import check_output_dir
    from src.context import set_seed, setup_context
    from src.train.checkpoints import latest_checkpoint
    from src.train.config import TrainConfig
    from src.train.loop import train

    overrides = overrides_from_args(args, TrainConfig)
    if args.arch:
        overrides.insert(0, f"arch={json.dumps(args.arch)}")
    if args.distributed:
        overrides.insert(0, "distributed=true")
    for flag, key in (("epochs", "train.epochs"), ("batch_size", "train.batch_size")):
        if getattr(args, flag) is not None:
            overrides.insert(0, f"{key}={getattr(args, flag)}")
    cfg = load_config(TrainConfig, args.config, overrides)
    check_output_dir(cfg.output_dir)
    if args.verify_data:
        from src.data import verify_dataset
        verify_dataset(cfg.data, log)
    resume_from = None
    if args.resume:
        resume_from, extra = latest_checkpoint(cfg.output_dir)  # its metadata only
        # what the command does not say comes from the run being continued (whether the
        # command changes what the run computes is checked where the checkpoint is loaded)
        cfg = load_config(TrainConfig, args.config, overrides, base=extra["config"])
    # the process-wide set-up is the entry point's (src/context.py), as in search.py
    facts = setup_context(cfg.device_target, cfg.train.mode, distributed=cfg.distributed)
    set_seed(cfg.train.seed)
    result = train(cfg, facts, resume_from=resume_from, log=log)
    if args.json:
        emit_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, parser=parser()))
