#!/usr/bin/env bash
# The GPU check, made to run on a bare, offline CUDA machine (../shared/gpu/README.md: CUDA PyTorch and common
# packages, no network, at most 64 MiB travels with a checkout). Everything else travels in gpu_bundle/ (git-ignored;
# carry it with the checkout):
#
#   scripts/gpu_check.sh --prepare [--original DIR]   # here, with the package index: fill gpu_bundle/ (the 0.33 host
#                                                     # tree, the wheels the GPU box lacks, comfy-kitchen without its
#                                                     # compiled kernels, a headless frontend stub, the key layouts; with
#                                                     # --original, the original VideoCrafter code for its UNet timing)
#   scripts/gpu_check.sh                              # on the GPU box: set up from gpu_bundle/ in $GPU_CHECK_WORK
#                                                     # (default /tmp/videocrafter_gpu_check), then every step
#   scripts/gpu_check.sh --cpu-dry-run                # every step on this machine's CPU at tiny sizes (CI runs it)
#   scripts/gpu_check.sh --cpu-dry-run --from-bundle  # the same, set up from gpu_bundle/ as on the GPU box (a
#                                                     # Python 3.12 with only what that box has: the recipe, tried)
#
# The steps (scripts/gpu_check.py, in order of importance, each with its own time limit, all within
# GPU_CHECK_DEADLINE_S, default 470 s): VideoCrafter2 at the released size per weight dtype (bf16, fp16, fp32, fp8:
# seconds per CFG step, UNet calls per step, peak above the weights beside the memory model), a whole 16-frame
# video (50 steps + decode) and the same capped to 8 GB, the memory targets (DynamiCrafter 512 under 8 GB,
# ToonCrafter 512 with its dual-reference decode under 10 GB, VideoCrafter1 576x1024 under 12 GB), a real server on the shipped vc2_t2v_512 graph (wall time,
# peak VRAM, dynamic VRAM), tests/test_gpu.py, 64 frames, 576x1024, the original's UNet (fp32, fp16 autocast, fp16
# with its xformers path). Results: one JSON line per step in $OUT/gpu_check.jsonl (OUT=${GPU_CHECK_OUT:-output/gpu_check}),
# the target ratios last; each step's log beside it. Exit status 0 when every step passed or was skipped with a reason.
#
# Otherwise (no gpu_bundle/ on the GPU box; the dry run without --from-bundle) the check uses this machine's Python
# ($PYTHON, default python3) and host ($COMFYUI_PATH, or the one scripts/setup_host.sh built for that Python).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUNDLE=$ROOT/gpu_bundle
WORK=${GPU_CHECK_WORK:-/tmp/videocrafter_gpu_check}
export GPU_CHECK_WORK=$WORK  # scripts/gpu_check.py's server step keeps its released-size checkpoint there
OUT=${GPU_CHECK_OUT:-$ROOT/output/gpu_check}
PY=${PYTHON:-python3}
HOST_TARBALL=comfyui-0.33.0.tar.xz
# what ComfyUI 0.33 needs that the GPU box lacks (../shared/gpu/README.md)
WHEELS="alembic Mako SQLAlchemy av blake3 comfy-aimdo simpleeval torchsde trampoline pydantic pydantic_core
        pydantic-settings annotated-types typing-inspection python-dotenv"
PLATFORM="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64"

MODE=gpu
ORIGINAL=""
FROM_BUNDLE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) MODE=prepare ;;
    --cpu-dry-run) MODE=dry ;;
    --from-bundle) FROM_BUNDLE=1 ;;
    --original) ORIGINAL=$2; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (--prepare [--original DIR], --cpu-dry-run [--from-bundle])" >&2; exit 2 ;;
  esac
  shift
done

pin() {  # the version ComfyUI 0.33's requirements pin for a package, as name==version (or the bare name)
  local line
  line=$(tar -xJOf "$BUNDLE/$HOST_TARBALL" ComfyUI/requirements.txt 2>/dev/null | grep -i "^$1==" | head -1)
  echo "${line:-$1}"
}

prepare() {
  local shared=${VIDEOCRAFTER_SHARED:-$ROOT/../shared}
  mkdir -p "$BUNDLE/wheels" "$BUNDLE/site" "$BUNDLE/reference/keys"
  cp "$shared/hosts/$HOST_TARBALL" "$BUNDLE/" || { echo "no $shared/hosts/$HOST_TARBALL" >&2; return 1; }
  local layout  # the released key layouts the full-size steps draw random weights for (0.7 MB)
  for layout in t2v_512_v2.0 t2v_1024_v1.0 dynamicrafter_512_v1.0 tooncrafter_512; do
    cp "$shared/reference/keys/$layout.keys.tsv" "$BUNDLE/reference/keys/" || return 1
  done
  local names=() name
  for name in $WHEELS; do names+=("$(pin "$name")"); done
  # shellcheck disable=SC2086
  "$PY" -m pip download --no-deps --only-binary=:all: $PLATFORM -d "$BUNDLE/wheels" "${names[@]}" || return 1
  # comfy-kitchen: its Python files only (the compiled CUDA/HIP kernels are 230 MB; it falls back to triton/eager)
  local kitchen
  kitchen=$(mktemp -d)
  # shellcheck disable=SC2086
  "$PY" -m pip download --no-deps --only-binary=:all: $PLATFORM -d "$kitchen" "$(pin comfy-kitchen)" || return 1
  "$PY" - "$kitchen" "$BUNDLE/site" <<'EOF' || return 1
import glob, re, sys, zipfile
source, target = sys.argv[1:]
for wheel in glob.glob(source + "/*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if not re.search(r"backends/(cuda|hip)/_C[^/]*\.so$", name):
                z.extract(name, target)
EOF
  rm -rf "$kitchen"
  # a headless frontend: the server checks the package and its version, and serves no UI here
  local frontend
  frontend=$(pin comfyui-frontend-package); frontend=${frontend#*==}
  mkdir -p "$BUNDLE/site/comfyui_frontend_package/static" "$BUNDLE/site/comfyui_frontend_package-$frontend.dist-info"
  : > "$BUNDLE/site/comfyui_frontend_package/__init__.py"
  echo "<!doctype html><title>headless</title>" > "$BUNDLE/site/comfyui_frontend_package/static/index.html"
  printf 'Metadata-Version: 2.1\nName: comfyui-frontend-package\nVersion: %s\n' "$frontend" \
    > "$BUNDLE/site/comfyui_frontend_package-$frontend.dist-info/METADATA"
  : > "$BUNDLE/site/comfyui_frontend_package-$frontend.dist-info/RECORD"
  if [ -n "$ORIGINAL" ]; then
    mkdir -p "$BUNDLE/original"
    cp -r "$ORIGINAL/lvdm" "$ORIGINAL/configs" "$ORIGINAL/utils" "$BUNDLE/original/" || return 1
  fi
  du -sh "$BUNDLE"
  local kib
  kib=$(du -sk "$BUNDLE" | cut -f1)
  if [ "$kib" -gt $((56 * 1024)) ]; then
    echo "gpu_bundle/ is $((kib / 1024)) MiB: with the checkout it may pass the 64 MiB that travels" >&2
  fi
}

setup_from_bundle() {  # the host tree and the missing packages, from gpu_bundle/, into $WORK
  mkdir -p "$WORK"
  if [ -z "${COMFYUI_PATH:-}" ]; then
    if [ ! -f "$WORK/host/ComfyUI/main.py" ]; then
      mkdir -p "$WORK/host" && tar -xJf "$BUNDLE/$HOST_TARBALL" -C "$WORK/host" || return 1
    fi
    export COMFYUI_PATH=$WORK/host/ComfyUI
    ln -sfn "$ROOT" "$COMFYUI_PATH/custom_nodes/ComfyUI-VideoCrafter"
  fi
  if [ ! -f "$WORK/site/.complete" ]; then
    if compgen -G "$BUNDLE/wheels/*.whl" >/dev/null; then
      "$PY" -m pip install --quiet --no-index --no-deps --target "$WORK/site" "$BUNDLE"/wheels/*.whl || return 1
    fi
    cp -r "$BUNDLE/site/." "$WORK/site/" && touch "$WORK/site/.complete"
  fi
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  export VIDEOCRAFTER_REFERENCE=${VIDEOCRAFTER_REFERENCE:-$BUNDLE/reference}
  export VIDEOCRAFTER_SMOKE_DIR=${VIDEOCRAFTER_SMOKE_DIR:-$WORK/smoke}
  [ -d "$BUNDLE/original" ] && [ -z "$ORIGINAL" ] && ORIGINAL=$BUNDLE/original
  return 0
}

case "$MODE" in
  prepare) prepare; exit $? ;;
  gpu)
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
      echo "No CUDA GPU here (nvidia-smi finds none). --cpu-dry-run runs every step on the CPU." >&2
      exit 3
    fi
    nvidia-smi -L ;;
esac
if [ "$MODE" = gpu ] || [ "$FROM_BUNDLE" = 1 ]; then
  if [ -d "$BUNDLE" ]; then
    setup_from_bundle || { echo "setting up from gpu_bundle/ failed" >&2; exit 4; }
  elif [ "$FROM_BUNDLE" = 1 ]; then
    echo "no gpu_bundle/: run scripts/gpu_check.sh --prepare first" >&2; exit 4
  fi
fi
args=(--out "$OUT" --deadline-s "${GPU_CHECK_DEADLINE_S:-470}")
[ "$MODE" = dry ] && args+=(--cpu-dry-run)
[ -n "$ORIGINAL" ] && args+=(--original "$ORIGINAL")
exec "$PY" "$ROOT/scripts/gpu_check.py" "${args[@]}"
