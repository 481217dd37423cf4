#!/usr/bin/env bash
# HourNAS search on DEVICE_NUM CPU worker processes (tests, small runs; 1 op thread per worker when they share the cores): msrun (LAUNCHER=mpirun as the fallback), or plain
# python for one. search.batch_size is the global batch. See docs/distributed.md.
#   bash scripts/run_search_cpu.sh DEVICE_NUM CONFIG OUTPUT_DIR [DATA_PATH] [-- search.py options]
set -euo pipefail
DEVICE_TARGET=CPU
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
search_main "$@"
