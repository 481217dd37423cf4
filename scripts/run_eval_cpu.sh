#!/usr/bin/env bash
# Evaluation of a training checkpoint on one CPU device. See docs/distributed.md.
#   bash scripts/run_eval_cpu.sh CKPT [DATA_PATH] [-- eval.py options]
set -euo pipefail
DEVICE_TARGET=CPU
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
eval_main "$@"
