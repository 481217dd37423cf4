#!/usr/bin/env bash
# One row of the paper (config/reproduce.yaml) end to end on DEVICE_NUM Ascend NPUs: search, retrain,
# evaluate, export, summary against the paper's figures. Each stage is skipped when its output
# exists and resumed when its state does; --dry-run prints the commands. See docs/reproduce.md.
#   bash scripts/run_reproduce_ascend.sh DEVICE_NUM EXPERIMENT [DATA_PATH] OUTPUT_DIR [--dry-run]
set -euo pipefail
DEVICE_TARGET=Ascend
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/reproduce.sh"
reproduce_main "$@"
