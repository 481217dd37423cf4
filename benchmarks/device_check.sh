#!/usr/bin/env bash
# One prepared check of the project on an accelerator: a short real search on the built-in
# digits, retraining the result with mixed precision, eval, MINDIR export, the training-step
# and search-step benchmarks; every step timed, its exit code kept, one summary at the end.
#
#   bash benchmarks/device_check.sh [OUTPUT_DIR] [--device_target GPU|CPU|Ascend] [--tiny]
#                                   [--budget SECONDS] [--skip STEP,...] [--fashion DIR] [--dry-run]
#
# OUTPUT_DIR (default runs/device_check) must be new or empty. DEVICE_TARGET may also come from
# the environment (default GPU). --tiny uses the test fixtures' tiny search and recipe and the
# smallest benchmark settings (a smoke test of the script: under a minute on 2 CPU cores);
# --skip leaves out the named steps (status "left out", not a failure); --dry-run prints the commands (stdout, one a line; ARCH stands for the searched
# architecture's name), running none and writing nothing.
#
# Steps, in this order (the search -> train -> eval -> export chain first, so that its results
# are in even if the benchmarks run long):
#   search       python search.py (the built-in default search: digits, 1 + 1 epochs)
#   train        python train.py --arch OUTPUT_DIR/search/arch.yaml, config/train/digits.yaml,
#                1 epoch, train.amp_level=O2 (forced to O0 on CPU, with a log line)
#   eval         python eval.py --ckpt OUTPUT_DIR/train/ARCH_best.ckpt
#   export       python export.py (MINDIR, reloaded and checked) -> OUTPUT_DIR/export/
#   train_step   python benchmarks/train_step.py --amp_level O2 (PyTorch only if it has CUDA)
#   search_step  python benchmarks/search_step.py --sizes default --repeats 3 --no_torch
#   search_step_full  the same at --sizes full (apart, so a slow compile there loses only it)
#   fashion      with --fashion DIR (a Fashion-MNIST folder) only: the full Fashion-MNIST recipe
#                (config/train/fashion_mnist_full.yaml: 50 epochs of all 60k images, AMP O2)
#                on the searched net config/arch/hournas_fashion_mnist.yaml, its test top-1 at
#                the end (docs/results.md); give it the time: --budget 0, or --skip the others.
#                With --tiny: 1 epoch of 2 steps.
# Each step runs in the foreground with --json: stderr shown and kept in
# OUTPUT_DIR/log/STEP.log, the JSON result in OUTPUT_DIR/log/STEP.json, the command in
# OUTPUT_DIR/log/STEP.command. A failed step does not stop the check; a step whose input is
# missing (train without arch.yaml, eval/export without a checkpoint) is skipped.
#
# Time: --budget SECONDS (default 570) bounds the whole check: each step is stopped (timeout,
# status "timeout", exit 124) at its own cap (search 150 s, train 120, eval 60, export 60,
# train_step 90; the search-step benchmarks get what is left) or when the budget is spent;
# steps after that are skipped. --budget 0: no limits (e.g. a full-size run on CPU).
#
# Summary: OUTPUT_DIR/device_check_summary.json (rewritten after every step) and a table at the
# end: each step's status, exit code, seconds and key figures (single_path_s and warm-up per
# executor, search stage seconds, images/s, top-1, the export file). Exit code 0 when every step
# passed (or was left out with --skip), 1 otherwise, 2 for a usage error or a missing device.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="benchmarks/$(basename "$0")"
USAGE="[OUTPUT_DIR] [--device_target GPU|CPU|Ascend] [--tiny] [--budget SECONDS] [--skip STEP,...] [--fashion DIR] [--dry-run]"
STEPS="search train eval export train_step search_step search_step_full fashion"
PY=${PYTHON:-python}

usage_error() {  # usage_error MESSAGE: the problem and the usage line on stderr, exit 2
  echo "error: $1" >&2
  echo "usage: bash $SCRIPT $USAGE" >&2
  exit 2
}

note() { echo "[$SCRIPT] $*" >&2; }

# ----------------------------------------------------------------------------- arguments

OUT="" TARGET=${DEVICE_TARGET:-GPU} TINY=0 DRY=0 BUDGET=570 SKIP="" FASHION=""
while (($#)); do
  case "$1" in
    -h|--help) echo "usage: bash $SCRIPT $USAGE"; sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --device_target) (($# >= 2)) || usage_error "--device_target needs a value"; TARGET=$2; shift 2 ;;
    --device_target=*) TARGET=${1#*=}; shift ;;
    --budget) (($# >= 2)) || usage_error "--budget needs a value"; BUDGET=$2; shift 2 ;;
    --budget=*) BUDGET=${1#*=}; shift ;;
    --skip) (($# >= 2)) || usage_error "--skip needs a value"; SKIP+=",$2"; shift 2 ;;
    --skip=*) SKIP+=",${1#*=}"; shift ;;
    --fashion) (($# >= 2)) || usage_error "--fashion needs a folder"; FASHION=$2; shift 2 ;;
    --fashion=*) FASHION=${1#*=}; shift ;;
    --tiny) TINY=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -*) usage_error "unknown option '$1'" ;;
    *) [[ -z $OUT ]] || usage_error "one OUTPUT_DIR only, got '$OUT' and '$1'"; OUT=$1; shift ;;
  esac
done
case "${TARGET,,}" in
  cpu) TARGET=CPU ;; gpu) TARGET=GPU ;; ascend) TARGET=Ascend ;;
  *) usage_error "device target must be GPU, CPU or Ascend, got '$TARGET'" ;;
esac
for s in ${SKIP//,/ }; do
  [[ " $STEPS " == *" $s "* ]] || usage_error "--skip: unknown step '$s'; steps: ${STEPS// /, }"
done
[[ $BUDGET =~ ^[0-9]+$ ]] || usage_error "--budget must be a whole number of seconds (0: no limit), got '$BUDGET'"
if [[ -n $FASHION ]]; then
  [[ -d $FASHION ]] || usage_error "--fashion: '$FASHION' is not a folder (the four Fashion-MNIST idx files; apt-get install dataset-fashion-mnist puts them in /usr/share/datasets/fashion-mnist)"
  FASHION=$(realpath -- "$FASHION")
fi
OUT=$(realpath -m -- "${OUT:-runs/device_check}")
if (( ! DRY )); then
  if [[ -e $OUT && ! -d $OUT ]]; then
    usage_error "OUTPUT_DIR '$OUT' is a file"
  elif [[ -d $OUT ]] && [[ -n $(ls -A -- "$OUT") ]]; then
    usage_error "OUTPUT_DIR '$OUT' is not empty; give a new folder (a check starts from nothing)"
  fi
fi

# ----------------------------------------------------------------------------- the commands

T=(--device_target "$TARGET")
if (( TINY )); then
  SEARCH=("$PY" search.py --config tests/fixtures/tiny_search.yaml "${T[@]}"
          --output_dir "$OUT/search" --json)
  TRAIN_CONFIG=tests/fixtures/tiny_train.yaml
  TRAIN_STEP=("$PY" benchmarks/train_step.py "${T[@]}" --amp_level O2 --steps 2 --round_steps 1
              --batch_size 8 --image_size 16 --no_torch --json)
  SEARCH_STEP=("$PY" benchmarks/search_step.py --json "${T[@]}" --sizes default --repeats 1
               --executors eager --allpath_repeats 0 --no_torch)
  SEARCH_STEP_FULL=()
else
  SEARCH=("$PY" search.py "${T[@]}" --output_dir "$OUT/search" --set search.epochs_vital=1
          --set search.epochs_nvital=1 --json)
  TRAIN_CONFIG=config/train/digits.yaml
  TRAIN_STEP=("$PY" benchmarks/train_step.py "${T[@]}" --amp_level O2 --steps 20 --json)
  SEARCH_STEP=("$PY" benchmarks/search_step.py --json "${T[@]}" --sizes default --repeats 3
               --no_torch)
  SEARCH_STEP_FULL=("$PY" benchmarks/search_step.py --json "${T[@]}" --sizes full --repeats 3
                    --no_torch)
fi
FASHION_TRAIN=("$PY" train.py --config config/train/fashion_mnist_full.yaml
               --arch config/arch/hournas_fashion_mnist.yaml --data_path "$FASHION" "${T[@]}"
               --output_dir "$OUT/fashion" --set train.amp_level=O2 --json)
if (( TINY )); then
  FASHION_TRAIN+=(--epochs 1 --set train.steps_per_epoch=2 --set train.warmup_epochs=0
                  --set train.batch_size=16)
fi
# The run-folder names below (arch.yaml, {arch}_best.ckpt) are src/rundir.py's, spelled out here
# because this is a shell script; change them there and here together.
ARCH="$OUT/search/arch.yaml"
TRAIN=("$PY" train.py --arch "$ARCH" --config "$TRAIN_CONFIG" "${T[@]}" --epochs 1
       --output_dir "$OUT/train" --set train.amp_level=O2 --json)

best_ckpt() {  # the checkpoint train.py wrote (ARCH_best.ckpt), or nothing
  if (( DRY )); then echo "$OUT/train/ARCH_best.ckpt"; return; fi
  local f
  for f in "$OUT"/train/*_best.ckpt; do [[ -f $f ]] && { echo "$f"; return; }; done
  return 0
}
eval_cmd() { EVAL=("$PY" eval.py --ckpt "$1" "${T[@]}" --json); }
export_cmd() { EXPORT=("$PY" export.py --ckpt "$1" --file_format MINDIR --output_dir "$OUT/export"
                       "${T[@]}" --json); }

# ----------------------------------------------------------------------------- running

LOG="$OUT/log"
START=$EPOCHREALTIME
FAILED=0 INTERRUPTED=0 CHILD=""
trap 'INTERRUPTED=1; [[ -n $CHILD ]] && kill -TERM "$CHILD" 2>/dev/null' INT TERM

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

summarize() {  # writes device_check_summary.json; with "print", also the table on stdout
  "$PY" - "$OUT" "$TARGET" "$TINY" "${1:-}" <<'EOF'
import json, os, sys

out, target, tiny, show = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "print"
log = os.path.join(out, "log")


def result(step):
    try:
        with open(os.path.join(log, step + ".json")) as f:
            lines = [ln for ln in f.read().splitlines() if ln.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def r(v, nd=2):
    return round(v, nd) if isinstance(v, float) else v


def figures(step, j):
    if not j:
        return {}
    if step == "search":
        return {"stage_seconds": {k: r(v, 1) for k, v in (j.get("stage_seconds") or {}).items()},
                "executor": j.get("executor"), "arch": j.get("arch"),
                "params": j.get("params"), "flops": j.get("flops")}
    if step == "fashion":
        last = j.get("last") or {}
        return {"last_epoch_top1": r(last.get("top1")), "epochs": j.get("epochs"),
                "train_images_per_s": r(j.get("train_images_per_s"), 1), "wall_s": r(j.get("wall_s"), 1)}
    if step == "train":
        return {"best_top1": r(j.get("best_top1")), "train_images_per_s": r(j.get("train_images_per_s"), 1),
                "wall_s": r(j.get("wall_s"), 1), "best_ckpt": j.get("best_ckpt")}
    if step == "eval":
        return {"top1": r(j.get("top1")), "top5": r(j.get("top5")),
                "images_per_s": r(j.get("images_per_s"), 1), "images": j.get("images")}
    if step == "export":
        m = (j.get("files") or {}).get("MINDIR") or {}
        return {"file": m.get("path"), "max_abs_diff": m.get("max_abs_diff")}
    if step == "train_step":
        ms, pt = j.get("mindspore") or {}, j.get("pytorch") or {}
        return {"images_per_s": r(ms.get("images_per_s"), 1), "amp_level": ms.get("amp_level"),
                "first_step_s": r(ms.get("first_step_s"), 1), "step_s": r(ms.get("step_s"), 4),
                "pytorch_images_per_s": r(pt.get("images_per_s"), 1) if pt else None,
                "ratio": r(j.get("ratio")), "peak_rss_gb": ms.get("peak_rss_gb"),
                "pytorch_peak_rss_gb": pt.get("peak_rss_gb") if pt else None,
                "load_avg_1min": j.get("load_avg_1min")}
    if step.startswith("search_step"):
        return {size: {"single_path_s": {n: e.get("step_s") for n, e in s.get("executors", {}).items()},
                       "warmup_s": {n: e.get("warmup_s") for n, e in s.get("executors", {}).items()},
                       "peak_rss_gb": {n: e.get("peak_rss_gb") for n, e in s.get("executors", {}).items()},
                       "default_executor": s.get("default_executor"), "ratio": s.get("ratio")}
                for size, s in (j.get("sizes") or {}).items()}
    return {}


steps = []
try:
    with open(os.path.join(log, "steps.tsv")) as f:
        for line in f:
            name, rc, secs, status, why = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
            steps.append({"step": name, "status": status, "exit_code": int(rc) if rc else None,
                          "seconds": float(secs) if secs else None, "note": why or None,
                          "figures": figures(name, result(name))})
except OSError:
    pass
summary = {"device_target": target, "tiny": tiny, "output_dir": out,
           "ok": bool(steps) and all(s["status"] in ("ok", "left out") for s in steps), "steps": steps}
tmp = os.path.join(out, "device_check_summary.json.tmp")
with open(tmp, "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
os.replace(tmp, os.path.join(out, "device_check_summary.json"))
if show:
    print(f"\ndevice check on {target}{' (tiny)' if tiny else ''}: "
          f"{'all steps passed' if summary['ok'] else 'NOT all steps passed'}")
    for s in steps:
        secs = f"{s['seconds']:7.1f} s" if s["seconds"] is not None else "        -"
        rc = s["exit_code"] if s["exit_code"] is not None else "-"
        print(f"  {s['step']:<17} {s['status']:<8} exit {rc!s:<4} {secs}  "
              + (s["note"] or json.dumps(s["figures"], separators=(", ", ": "))))
    print(f"summary: {os.path.join(out, 'device_check_summary.json')}; logs: {log}/")
EOF
}

record() {  # record STEP EXIT_CODE SECONDS STATUS [NOTE]
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >> "$LOG/steps.tsv"
  [[ $4 == ok || $4 == "left out" ]] || FAILED=1
  summarize || note "could not write the summary (see above)"
}

skip() {  # skip STEP WHY (a step left out with --skip is only that, whatever its inputs)
  if [[ ,$SKIP, == *",$1,"* ]]; then
    note "$1: left out (--skip)"
    record "$1" "" "" "left out" "--skip"
    return 0
  fi
  note "$1: skipped: $2"
  record "$1" "" "" skipped "$2"
}

# step NAME CAP_SECONDS COMMAND...: run it in the foreground under the time limit, record it
step() {
  local name=$1 cap=$2
  shift 2
  local line
  line=$(printf '%q ' "$@")
  if [[ ,$SKIP, == *",$name,"* ]]; then
    if (( ! DRY )); then note "$name: left out (--skip)"; record "$name" "" "" "left out" "--skip"; fi
    return 0
  fi
  if (( DRY )); then echo "${line% }"; return 0; fi
  local limit=()
  if (( BUDGET > 0 )); then
    local left
    left=$(awk -v a="$START" -v b="$EPOCHREALTIME" -v B="$BUDGET" 'BEGIN { printf "%d", B - (b - a) }')
    (( cap == 0 || left < cap )) && cap=$left
    if (( cap < 5 )); then
      skip "$name" "the time budget (--budget $BUDGET) is spent"
      return 0
    fi
    limit=(timeout --signal=TERM --kill-after=15 "$cap")
  fi
  echo "${line% }" > "$LOG/$name.command"
  note "$name: ${line% }${limit:+ (limit ${cap} s)}"
  local t0=$EPOCHREALTIME rc=0
  # stdout (the --json result) to STEP.json; stderr (the progress) to the console and STEP.log.
  # In the background and waited for, so that Ctrl+C / SIGTERM (the trap) reaches it at once.
  "${limit[@]}" "$@" > "$LOG/$name.json" 2> >(tee "$LOG/$name.log" >&2) &
  CHILD=$!
  while kill -0 "$CHILD" 2>/dev/null; do wait "$CHILD" || true; done
  wait "$CHILD" || rc=$?
  CHILD=""
  wait || true  # bash >= 5.1: also the process substitution (tee writes its last lines)
  local secs status=ok
  secs=$(elapsed "$t0")
  if (( INTERRUPTED )); then
    status=interrupted
  elif (( rc == 124 && ${#limit[@]} )); then
    status=timeout
  elif (( rc != 0 )); then
    status=failed
  fi
  [[ $status == ok ]] || note "$name: $status (exit code $rc) after $secs s; log: $LOG/$name.log"
  record "$name" "$rc" "$secs" "$status" "$([[ $status == timeout ]] && echo "stopped at the ${cap} s limit")"
  if (( INTERRUPTED )); then
    note "interrupted: the steps after $name were not run"
    summarize print
    exit 130
  fi
}

if (( ! DRY )); then
  mkdir -p "$LOG" 2>/dev/null ||
    usage_error "cannot create the log folder '$LOG'; choose another OUTPUT_DIR"
  cd "$ROOT"
  if [[ $TARGET != CPU ]]; then  # a check without its device stops here, with the reason
    rc=0
    why=$(GLOG_v=3 "$PY" -c 'import sys
from src.context import device_available
ok, why = device_available(sys.argv[1])
print(why)
sys.exit(0 if ok else 3)' "$TARGET" 2>/dev/null) || rc=$?
    if (( rc == 3 )); then
      rmdir "$LOG" "$OUT" 2>/dev/null || true
      usage_error "device target '$TARGET' is not available here: ${why:-no $TARGET back end}; use --device_target CPU (with --tiny for a quick run)"
    fi
  fi
  export PYTHONUNBUFFERED=1 GLOG_v=${GLOG_v:-3}
  : > "$LOG/steps.tsv"
  note "device check on $TARGET$( ((TINY)) && echo " (tiny)"): $OUT$( ((BUDGET)) && echo "; budget $BUDGET s")"
else
  cd "$ROOT"
  note "dry run: the commands of a check on $TARGET$( ((TINY)) && echo " (tiny)"); ARCH: the searched architecture's name"
fi

step search 150 "${SEARCH[@]}"
if (( DRY )) || [[ -f $ARCH ]]; then
  step train 120 "${TRAIN[@]}"
else
  skip train "no $ARCH (the search did not finish)"
fi
CKPT=$(best_ckpt)
if [[ -n $CKPT ]]; then
  eval_cmd "$CKPT"
  step eval 60 "${EVAL[@]}"
  export_cmd "$CKPT"
  step export 60 "${EXPORT[@]}"
else
  skip eval "no checkpoint in $OUT/train (the training did not finish)"
  skip export "no checkpoint in $OUT/train (the training did not finish)"
fi
step train_step 90 "${TRAIN_STEP[@]}"
step search_step 0 "${SEARCH_STEP[@]}"
if (( ${#SEARCH_STEP_FULL[@]} )); then
  step search_step_full 0 "${SEARCH_STEP_FULL[@]}"
fi
if [[ -n $FASHION ]]; then
  step fashion 0 "${FASHION_TRAIN[@]}"
fi

if (( DRY )); then exit 0; fi
note "done in $(elapsed "$START") s"
summarize print
exit "$FAILED"
