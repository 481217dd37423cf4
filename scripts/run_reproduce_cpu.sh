#!/usr/bin/env bash
# One row of config/reproduce.yaml end to end on DEVICE_NUM CPU worker processes (the digits
# rows: the chain in minutes, or seconds for tiny_digits, which the tests run): search, retrain,
# evaluate, export, summary. Each stage is skipped when its output exists and resumed when its
# state does; --dry-run prints the commands. See docs/reproduce.md.
#   bash scripts/run_reproduce_cpu.sh DEVICE_NUM EXPERIMENT [DATA_PATH] OUTPUT_DIR [--dry-run]
set -euo pipefail
DEVICE_TARGET=CPU
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/reproduce.sh"
reproduce_main "$@"
