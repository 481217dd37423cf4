# Shared by the scripts/run_*.sh launchers (sourced, never run on its own): argument checks
# with a usage line, and one launch function.
#
# Environment:
#   LAUNCHER     msrun (default) | mpirun: the launcher of a multi-device job
#   MASTER_ADDR  msrun scheduler address (default 127.0.0.1)
#   MASTER_PORT  msrun scheduler port (default 8118); two jobs on one host need two ports
#
# A job of one device runs `python ENTRY.py ...` directly; more devices run
# `msrun --worker_num=N --local_worker_num=N ... --join=True ENTRY.py ... --distributed`
# (or `mpirun -n N python ENTRY.py ... --distributed`), in the foreground. The script's exit
# code is the job's: the entry point's own code for one device; for msrun the code of the
# first worker that failed (msrun itself only says 1), 130 after Ctrl+C.
# Logs: OUTPUT_DIR/log/ (the launcher's output in NAME.log, msrun's worker_R.log per rank).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="scripts/$(basename "$0")"

usage_error() {  # usage_error MESSAGE: the problem and the usage line on stderr, exit 2
  echo "error: $1" >&2
  echo "usage: bash $SCRIPT $USAGE" >&2
  exit 2
}

# split_args ARGS...: positional arguments before `--` into POS, the rest into EXTRA
split_args() {
  POS=()
  EXTRA=()
  while (($#)); do
    case "$1" in
      --) shift; EXTRA=("$@"); return ;;
      -h|--help) echo "usage: bash $SCRIPT $USAGE"; echo "$HELP"; exit 0 ;;
      -*) usage_error "unexpected option '$1' before '--' (options for the Python entry point go after --)" ;;
      *) POS+=("$1"); shift ;;
    esac
  done
}

check_count() {  # check_count MIN MAX
  if (( ${#POS[@]} < $1 || ${#POS[@]} > $2 )); then
    usage_error "expected $1$( (( $2 > $1 )) && echo "-$2") arguments before '--', got ${#POS[@]}"
  fi
}

check_devices() {  # check_devices VALUE: a whole number >= 1
  if ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
    usage_error "DEVICE_NUM must be a whole number >= 1, got '$1'"
  fi
}

check_file() {  # check_file NAME VALUE
  [[ -f $2 ]] || usage_error "$1 '$2' is not a file"
}

check_dir() {  # check_dir NAME VALUE
  [[ -d $2 ]] || usage_error "$1 '$2' is not a directory"
}

abs() { realpath -m -- "$1"; }

# check_device: a GPU/Ascend job on a machine without that device stops here with one error
# line, before msrun starts workers (whose failure would add msrun's own traceback). A probe
# that cannot run at all (no python/mindspore) is left to the job to report.
check_device() {
  [[ ${DEVICE_TARGET:-CPU} == CPU ]] && return 0
  local why rc=0
  why=$(cd "$ROOT" && GLOG_v=3 python -c 'import sys
from src.context import device_available
ok, why = device_available(sys.argv[1])
print(why)
sys.exit(0 if ok else 3)' "$DEVICE_TARGET" 2>/dev/null) || rc=$?
  if (( rc == 3 )); then
    local cpu_script=${SCRIPT/_${DEVICE_TARGET,,}.sh/_cpu.sh}
    usage_error "device target '$DEVICE_TARGET' is not available here: ${why:-no $DEVICE_TARGET back end}; run on a machine with one, or use $cpu_script"
  fi
}

# run_job NAME DEVICES OUTPUT_DIR ENTRY.py ARGS...: build one command, run it in the foreground
# from the repository root, keep its exit code.
run_job() {
  local name=$1 devices=$2 out=$3
  shift 3
  local log_dir="$out/log"
  local cmd=()
  if (( devices == 1 )); then
    cmd=(python "$@")
  else
    case "${LAUNCHER:-msrun}" in
      msrun)
        cmd=(msrun "--worker_num=$devices" "--local_worker_num=$devices"
             "--master_addr=${MASTER_ADDR:-127.0.0.1}" "--master_port=${MASTER_PORT:-8118}"
             "--log_dir=$log_dir" --join=True "$@" --distributed) ;;
      mpirun)
        cmd=(mpirun -n "$devices" --output-filename "$log_dir/mpirun" --merge-stderr-to-stdout
             python "$@" --distributed) ;;
      *) usage_error "LAUNCHER must be msrun or mpirun, got '${LAUNCHER}'" ;;
    esac
  fi
  check_device
  command -v "${cmd[0]}" >/dev/null ||
    usage_error "'${cmd[0]}' is not on PATH ($( [[ ${cmd[0]} == msrun ]] && echo "it comes with mindspore" || echo "install it or use LAUNCHER=msrun"))"
  mkdir -p "$log_dir" 2>/dev/null ||
    usage_error "cannot create the log folder '$log_dir': a part of OUTPUT_DIR '$out' is a file, or it is not writable; choose another OUTPUT_DIR"
  cd "$ROOT"
  printf '%q ' "${cmd[@]}" > "$log_dir/$name.command"
  echo >> "$log_dir/$name.command"
  echo "[$SCRIPT] $(cat "$log_dir/$name.command")"
  echo "[$SCRIPT] logs: $log_dir/"
  local rc=0 stopped=0
  # A stop (Ctrl+C, a SIGTERM to the process group) reaches the job, which saves its state and
  # exits 130/143; this script waits for that, and the log's tee, which ignores the signals,
  # keeps the job's last lines (a tee that died first would break the job's output mid-save).
  trap 'stopped=130' INT
  trap 'stopped=143' TERM
  "${cmd[@]}" 2>&1 | tee_log "$log_dir/$name.log" || rc=$?
  trap - INT TERM
  if (( stopped )) && (( rc == 1 )) && [[ ${cmd[0]} == msrun ]]; then
    rc=$stopped  # msrun says 1 for workers that a signal stopped
  elif (( rc != 0 )) && [[ ${cmd[0]} == msrun ]]; then
    # msrun exits 1 for any failed worker; its log names the worker's own exit code
    local code
    code=$(grep -o 'exit with exception\. Error code: -\?[0-9]*' "$log_dir/$name.log" |
           head -n 1 | grep -o -- '-\?[0-9]*$' || true)
    if [[ -n $code && $code != 0 ]]; then
      (( code < 0 )) && code=$(( 128 - code ))  # killed by signal N: 128 + N, as a shell says
      rc=$code
    fi
  fi
  if (( rc == 130 || rc == 143 )); then
    local again=""
    [[ $name == eval ]] || again="; add -- --resume to the same command to continue where it stopped"
    echo "[$SCRIPT] the job stopped (exit code $rc)$again; logs: $log_dir/" >&2
  elif (( rc != 0 )); then
    job_error "$log_dir/$name.log"
    echo "[$SCRIPT] the job failed with exit code $rc; logs: $log_dir/" >&2
  fi
  return "$rc"
}

# tee_log FILE: tee stdin to stdout and FILE, deaf to SIGINT/SIGTERM: it ends when the job's
# output does, so the job's stop message and exit code are never cut off
tee_log() {
  (trap '' INT TERM; exec tee "$1")
}

# job_error LOG: the job's own error line (it went to the log through stdout) on stderr too
job_error() {
  local line
  line=$(grep -a '^error: ' "$1" | tail -n 1 || true)
  [[ -n $line ]] && echo "$line" >&2
  return 0
}

# The three kinds of job. DEVICE_TARGET is set by the calling script (CPU, GPU or Ascend).

search_main() {
  USAGE="DEVICE_NUM CONFIG OUTPUT_DIR [DATA_PATH] [-- search.py options]"
  HELP="Runs a HourNAS search (search.py) on DEVICE_NUM $DEVICE_TARGET devices (data parallel:
search.batch_size is the global batch). DATA_PATH: CIFAR-10 or ImageNet folder (not needed for
the built-in digits). Example: bash $SCRIPT 2 tests/fixtures/tiny_search.yaml runs/s -- --json"
  split_args "$@"
  check_count 3 4
  check_devices "${POS[0]}"
  check_file CONFIG "${POS[1]}"
  local args=("$ROOT/search.py" --config "$(abs "${POS[1]}")" --output_dir "$(abs "${POS[2]}")"
              --device_target "$DEVICE_TARGET")
  if (( ${#POS[@]} == 4 )); then
    check_dir DATA_PATH "${POS[3]}"
    args+=(--data_path "$(abs "${POS[3]}")")
  fi
  run_job search "${POS[0]}" "$(abs "${POS[2]}")" "${args[@]}" "${EXTRA[@]}"
}

train_main() {  # train_main distribute|standalone ARGS...
  local kind=$1
  shift
  if [[ $kind == distribute ]]; then
    USAGE="DEVICE_NUM ARCH CONFIG OUTPUT_DIR [DATA_PATH] [-- train.py options]"
  else
    USAGE="ARCH CONFIG OUTPUT_DIR [DATA_PATH] [-- train.py options]"
  fi
  HELP="Trains an architecture file (train.py) on $DEVICE_TARGET with a recipe (config/train/*.yaml);
train.batch_size is the global batch (split over the devices) and the learning rate is scaled
from it (train.lr_scaling). Continue a stopped run with: -- --resume"
  split_args "$@"
  local devices=1
  if [[ $kind == distribute ]]; then
    check_count 4 5
    check_devices "${POS[0]}"
    devices=${POS[0]}
    POS=("${POS[@]:1}")
  else
    check_count 3 4
  fi
  check_file ARCH "${POS[0]}"
  check_file CONFIG "${POS[1]}"
  local args=("$ROOT/train.py" --arch "$(abs "${POS[0]}")" --config "$(abs "${POS[1]}")"
              --output_dir "$(abs "${POS[2]}")" --device_target "$DEVICE_TARGET")
  if (( ${#POS[@]} == 4 )); then
    check_dir DATA_PATH "${POS[3]}"
    args+=(--data_path "$(abs "${POS[3]}")")
  fi
  run_job train "$devices" "$(abs "${POS[2]}")" "${args[@]}" "${EXTRA[@]}"
}

eval_main() {
  USAGE="CKPT [DATA_PATH] [-- eval.py options]"
  HELP="Evaluates a training checkpoint (eval.py) on $DEVICE_TARGET over every image of the eval
split; the log goes to the checkpoint's folder (log/eval.log)."
  split_args "$@"
  check_count 1 2
  check_file CKPT "${POS[0]}"
  local args=("$ROOT/eval.py" --ckpt "$(abs "${POS[0]}")" --device_target "$DEVICE_TARGET")
  if (( ${#POS[@]} == 2 )); then
    check_dir DATA_PATH "${POS[1]}"
    args+=(--data_path "$(abs "${POS[1]}")")
  fi
  run_job eval 1 "$(dirname "$(abs "${POS[0]}")")" "${args[@]}" "${EXTRA[@]}"
}
