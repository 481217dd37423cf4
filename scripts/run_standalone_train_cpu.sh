#!/usr/bin/env bash
# Training on one CPU device (plain python, no launcher). See docs/distributed.md.
#   bash scripts/run_standalone_train_cpu.sh ARCH CONFIG OUTPUT_DIR [DATA_PATH] [-- train.py options]
set -euo pipefail
DEVICE_TARGET=CPU
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
train_main standalone "$@"
