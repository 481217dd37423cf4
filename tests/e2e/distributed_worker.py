"""Test helper: run search.py and/or train.py in one process with BatchNorm made batch-free.

    python tests/e2e/distributed_worker.py OUT_DIR ARCH [--distributed]
    msrun --worker_num=2 ... tests/e2e/distributed_worker.py OUT_DIR ARCH --distributed

Every ``nn.BatchNorm2d`` normalises with its running statistics (``use_batch_statistics=
False``): an affine map whose output for a sample does not depend on the other samples of the
batch. Then the mean of two ranks' gradients over half batches is the full-batch gradient, and
a 2-rank run must equal a single-process run up to float32 rounding; with batch statistics
(the real nets) each rank normalises over its own half batch and the runs differ by more than
rounding (docs/distributed.md). Runs the tiny search into OUT_DIR/search, then trains ARCH a few
steps into OUT_DIR/train, through the real entry points (search.main, train.main).
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
os.chdir(ROOT)

SEARCH = ["--config", "tests/fixtures/tiny_search.yaml", "--json"]
TRAIN = ["--epochs", "1", "--batch_size", "16", "--set", "data.image_size=16",
         "--set", "train.steps_per_epoch=4", "--set", "train.log_every=1",
         "--set", "train.warmup_epochs=0", "--set", "train.lr=0.2",
         "--set", "train.base_batch=16", "--json"]


def batch_free_batchnorm() -> None:
    import mindspore.nn as nn

    init = nn.BatchNorm2d.__init__

    def patched(self, *args, **kwargs):
        kwargs["use_batch_statistics"] = False
        init(self, *args, **kwargs)

    nn.BatchNorm2d.__init__ = patched


def run(module, argv: list[str]) -> None:
    code = module.run_main(module.main, argv=argv, parser=module.parser())
    if code:
        raise SystemExit(code)


def main() -> int:
    out, arch, *rest = sys.argv[1:]
    dist = ["--distributed"] if "--distributed" in rest else []
    batch_free_batchnorm()
    import search
    import train
    run(search, SEARCH + ["--output_dir", os.path.join(out, "search")] + dist)
    run(train, TRAIN + ["--arch", arch, "--output_dir", os.path.join(out, "train")] + dist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
