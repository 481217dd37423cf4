#!/usr/bin/env bash
# Data-parallel training on DEVICE_NUM CPU worker processes (tests, small runs; 1 op thread per worker when they share the cores): msrun (LAUNCHER=mpirun as the fallback).
# train.batch_size is the global batch; rank 0 writes checkpoints. See docs/distributed.md.
#   bash scripts/run_distribute_train_cpu.sh DEVICE_NUM ARCH CONFIG OUTPUT_DIR [DATA_PATH] [-- train.py options]
set -euo pipefail
DEVICE_TARGET=CPU
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
train_main distribute "$@"
