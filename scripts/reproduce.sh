# Sourced by scripts/run_reproduce_{gpu,ascend,cpu}.sh after common.sh (never run on its own):
# one paper row from config/reproduce.yaml, end to end, through the existing launchers.
#
#   search   scripts/run_search_T.sh         -> OUTPUT_DIR/search/arch.yaml, summary.json
#   train    scripts/run_{distribute,standalone}_train_T.sh -> OUTPUT_DIR/train/{arch}_best.ckpt
#   eval     scripts/run_eval_T.sh -- --json  -> OUTPUT_DIR/train/log/eval.log
#   export   python export.py                 -> OUTPUT_DIR/export/{arch}.mindir
#   summary  python -m src.reproduce summary  -> OUTPUT_DIR/reproduce_summary.{json,md}
#
# src/reproduce.py decides each stage: skipped when its output exists, resumed (-- --resume)
# when its state exists, else started; and builds its command. Running the same command again
# after a stop continues where the run stopped. --dry-run checks the inputs and prints the
# commands that would run (stdout, one a line), running none; it checks everything but the
# presence of the GPU/Ascend device.

reproduce_main() {
  USAGE="DEVICE_NUM EXPERIMENT [DATA_PATH] OUTPUT_DIR [--dry-run]"
  HELP="Reproduces one row of the paper on $DEVICE_TARGET: search, retraining with the paper's
recipe, evaluation, export, and a summary against the paper's figures
(OUTPUT_DIR/reproduce_summary.json and .md). EXPERIMENT: a row of config/reproduce.yaml
(python -m src.reproduce list); DATA_PATH: the ImageNet or CIFAR-10 folder the row needs (none
for the digits rows). Stages whose output exists are skipped; a stopped stage resumes. See
docs/reproduce.md."
  local dry_run=0 args=() a
  for a in "$@"; do
    if [[ $a == --dry-run ]]; then dry_run=1; else args+=("$a"); fi
  done
  split_args "${args[@]}"
  (( ${#EXTRA[@]} == 0 )) ||
    usage_error "no options go after '--': the settings are in the row's configs (config/reproduce.yaml)"
  check_count 3 4
  check_devices "${POS[0]}"
  local devices=${POS[0]} exp=${POS[1]} out data=()
  if (( ${#POS[@]} == 4 )); then
    check_dir DATA_PATH "${POS[2]}"
    data=(--data_path "$(abs "${POS[2]}")")
    out=$(abs "${POS[3]}")
  else
    out=$(abs "${POS[2]}")
  fi
  if (( devices > 1 )); then  # what run_job in common.sh will need, checked before any stage
    case "${LAUNCHER:-msrun}" in
      msrun|mpirun) ;;
      *) usage_error "LAUNCHER must be msrun or mpirun, got '${LAUNCHER}'" ;;
    esac
    command -v "${LAUNCHER:-msrun}" >/dev/null ||
      usage_error "'${LAUNCHER:-msrun}' is not on PATH (msrun comes with mindspore; or LAUNCHER=mpirun)"
  fi
  # the device itself (common.sh); a dry run may be made where the device is not, e.g. a login node
  (( dry_run )) || check_device
  cd "$ROOT"
  local run=("$exp" --device_target "$DEVICE_TARGET" --devices "$devices" --output_dir "$out"
             "${data[@]}")
  local rc=0
  python -m src.reproduce check "${run[@]}" || rc=$?
  if (( rc != 0 )); then
    (( rc == 2 )) && echo "usage: bash $SCRIPT $USAGE" >&2
    exit "$rc"
  fi
  local stage cmd line
  REPRODUCE_PLAN=$(mktemp)
  trap 'rm -f "$REPRODUCE_PLAN"' EXIT
  for stage in search train eval export summary; do
    python -m src.reproduce command "$stage" "${run[@]}" > "$REPRODUCE_PLAN"
    mapfile -d '' -t cmd < "$REPRODUCE_PLAN"
    (( ${#cmd[@]} )) || continue  # done: skipped (the note is on stderr)
    line=$(printf '%q ' "${cmd[@]}")
    if (( dry_run )); then
      echo "${line% }"
      continue
    fi
    echo "[$SCRIPT] $stage: ${line% }" >&2
    if [[ ${cmd[0]} == bash ]]; then  # a launcher: it logs under its output folder
      run_stage "${cmd[@]}" || rc=$?
    else
      mkdir -p "$out/log"
      STAGE_LOG="$out/log/$stage.log" run_stage bash -c \
        'set -o pipefail; "$@" 2>&1 | (trap "" INT TERM; exec tee "$STAGE_LOG")' bash "${cmd[@]}" ||
        rc=$?
    fi
    if (( rc == 130 || rc == 143 )); then
      echo "[$SCRIPT] stopped in the $stage stage (exit code $rc); run the same command again to continue where it stopped" >&2
      exit "$rc"
    elif (( rc == 2 )); then
      echo "[$SCRIPT] the $stage stage failed with exit code 2 (its error line above says what to fix); fix that, then run the same command again" >&2
      exit "$rc"
    elif (( rc != 0 )); then
      echo "[$SCRIPT] the $stage stage failed with exit code $rc (see its log under $out/); a rerun continues from the last saved state, but will likely fail the same way until the cause is fixed" >&2
      exit "$rc"
    fi
  done
  (( dry_run )) || echo "[$SCRIPT] done: $out/reproduce_summary.md" >&2
}

# run_stage CMD...: one stage in its own process group, waited for. A SIGINT or SIGTERM to
# this runner (Ctrl+C, or `kill PID` of the runner alone) is passed on to the whole stage,
# which saves its state and stops; the runner waits for that and exits with the stage's code.
# Without this, the stage would go on in the background and a rerun would meet it.
run_stage() {
  local pid rc=0
  setsid "$@" &
  pid=$!
  trap 'kill -INT -- -'"$pid"' 2>/dev/null || true' INT
  trap 'kill -TERM -- -'"$pid"' 2>/dev/null || true' TERM
  while :; do
    wait "$pid" && rc=0 || rc=$?
    kill -0 "$pid" 2>/dev/null || break  # still running: the wait was cut short by a signal
  done
  trap - INT TERM
  return "$rc"
}
