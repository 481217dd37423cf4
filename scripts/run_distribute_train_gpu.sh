#!/usr/bin/env bash
# Data-parallel training on DEVICE_NUM GPUs: msrun (LAUNCHER=mpirun as the fallback).
# train.batch_size is the global batch; rank 0 writes checkpoints. See docs/distributed.md.
#   bash scripts/run_distribute_train_gpu.sh DEVICE_NUM ARCH CONFIG OUTPUT_DIR [DATA_PATH] [-- train.py options]
set -euo pipefail
DEVICE_TARGET=GPU
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
train_main distribute "$@"
