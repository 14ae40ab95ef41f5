#!/usr/bin/env bash
# The checks that need a CUDA GPU, on every supported host: the suite's GPU-marked tests (pytest -m gpu:
# fp16/bf16 sampling against fp32, a --novram load, a GPU server through core's load path / dynamic VRAM)
# and the full-size benchmark (scripts/benchmark.py --full-size --gpu: s per CFG step, UNet call batches, peak GPU
# memory above the weights beside the memory model's estimate), fp32 on every host, bf16 and fp8 weights too on
# the first. Under 10 minutes in all: each step has its own time limit.
#
#   scripts/gpu_check.sh              # both hosts, as `make setup` and `make setup HOST=0.33` built them
#   scripts/gpu_check.sh --dry-run    # print the commands, run nothing (works without a GPU or a host)
#   GPU_CHECK_HOSTS=0.33 scripts/gpu_check.sh          # one host
#   PYTHON_0_33=/opt/py/bin/python COMFYUI_PATH_0_33=/opt/ComfyUI scripts/gpu_check.sh   # a host built elsewhere
#
# Exit status 0 when every step of every host passed; the log of each step is in $GPU_CHECK_OUT (default
# output/gpu_check), with one summary line per step at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $arg (use --dry-run)" >&2; exit 2 ;;
  esac
done

HOSTS=${GPU_CHECK_HOSTS:-"0.3.75 0.33"}
OUT=${GPU_CHECK_OUT:-$ROOT/output/gpu_check}
TEST_LIMIT_S=${GPU_CHECK_TEST_LIMIT_S:-170}    # per host: pytest -m gpu
BENCH_LIMIT_S=${GPU_CHECK_BENCH_LIMIT_S:-100}  # per further host: one full-size benchmark
FIRST_BENCH_LIMIT_S=${GPU_CHECK_FIRST_BENCH_LIMIT_S:-150}  # the first host: three weight dtypes

# the venv and ComfyUI tree scripts/setup_host.sh gives each host (overridable per host)
host_venv() { case "$1" in 0.3.75) echo "$ROOT/.venv" ;; 0.33) echo "$ROOT/.venv-0.33" ;; *) return 1 ;; esac; }
host_tree() { case "$1" in 0.3.75) echo "$ROOT/.host/ComfyUI" ;; 0.33) echo "$ROOT/.host-0.33/ComfyUI" ;; esac; }

host_python() {
  local var="PYTHON_${1//./_}"
  if [ -n "${!var:-}" ]; then echo "${!var}"; else echo "$(host_venv "$1")/bin/python"; fi
}

host_comfyui() {
  local var="COMFYUI_PATH_${1//./_}" marker
  marker="$(host_venv "$1")/comfyui-path"
  if [ -n "${!var:-}" ]; then echo "${!var}"
  elif [ -f "$marker" ]; then cat "$marker"
  else host_tree "$1"; fi
}

SUMMARY=()
FAILED=0

step() {  # step NAME LIMIT_S DIR COMMAND...: run with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2 dir=$3; shift 3
  if [ "$DRY_RUN" = 1 ]; then
    printf '[dry-run] (cd %q && timeout %ss' "$dir" "$limit"; printf ' %q' "$@"; printf ')\n'
    return 0
  fi
  local log="$OUT/$name.log" start rc
  start=$(date +%s)
  echo "== $name (limit ${limit}s)"
  (cd "$dir" && timeout --kill-after=10 "$limit" "$@") >"$log" 2>&1
  rc=$?
  tail -n 15 "$log"
  local verdict="ok"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then verdict="TIMEOUT"; elif [ "$rc" != 0 ]; then verdict="FAILED ($rc)"; fi
  [ "$verdict" = ok ] || FAILED=1
  SUMMARY+=("$name: $verdict in $(( $(date +%s) - start ))s, log $log")
}

if [ "$DRY_RUN" = 0 ]; then
  mkdir -p "$OUT"
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "No CUDA GPU here (nvidia-smi finds none): these checks need one. --dry-run shows what they run." >&2
    exit 3
  fi
  nvidia-smi -L
fi

for host in $HOSTS; do
  if ! host_venv "$host" >/dev/null; then
    echo "unknown host $host (supported: 0.3.75 0.33)" >&2; FAILED=1; continue
  fi
  py=$(host_python "$host"); comfy=$(host_comfyui "$host")
  if [ "$DRY_RUN" = 0 ] && { [ ! -x "$py" ] || [ ! -f "$comfy/main.py" ]; }; then
    echo "host $host is not set up ($py, $comfy/main.py): run 'make setup HOST=$host' or set PYTHON_${host//./_} and COMFYUI_PATH_${host//./_}" >&2
    SUMMARY+=("$host: NOT SET UP"); FAILED=1; continue
  fi
  export COMFYUI_PATH=$comfy
  [ "$DRY_RUN" = 1 ] && echo "# host $host: COMFYUI_PATH=$comfy"
  step "$host-gpu-tests" "$TEST_LIMIT_S" "$ROOT/tests" "$py" -m pytest -q -p no:cacheprovider -rs -s -m gpu
  if [ "$host" = "${HOSTS%% *}" ]; then  # the first host: fp32, bf16 and fp8 weights (fp8 computes in bf16/fp16)
    step "$host-benchmark" "$FIRST_BENCH_LIMIT_S" "$ROOT" "$py" scripts/benchmark.py --full-size --gpu --steps 4 \
      --weight-dtypes default,bf16,fp8_e4m3fn
  else
    step "$host-benchmark" "$BENCH_LIMIT_S" "$ROOT" "$py" scripts/benchmark.py --full-size --gpu --steps 4
  fi
done

if [ "$DRY_RUN" = 0 ]; then
  echo "== summary"
  printf '%s\n' "${SUMMARY[@]}"
fi
exit "$FAILED"
