"""The real ComfyUI (the host `make setup` prepared) inside a test process, on the CPU.

The boot logic lives in scripts/comfy_boot.py (the command-line tools use it too).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import comfy_boot  # noqa: E402
from comfy_boot import (REPO, GOLDEN, KEYS, PACK_MODULE, REFERENCE, HAVE_REFERENCE, REFERENCE_MISSING,  # noqa: E402,F401
                        SMOKE_DIR, comfyui_path, pack)


def boot():
    """Import ComfyUI as its main.py would, CPU only; returns the pack module (loaded once)."""
    return comfy_boot.boot(cpu=True)
