#!/usr/bin/env bash
# Training on one Ascend device (plain python, no launcher). See docs/distributed.md.
#   bash scripts/run_standalone_train_ascend.sh ARCH CONFIG OUTPUT_DIR [DATA_PATH] [-- train.py options]
set -euo pipefail
DEVICE_TARGET=Ascend
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
train_main standalone "$@"
