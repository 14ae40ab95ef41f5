#!/usr/bin/env python3
"""Batch generation through a running ComfyUI server's HTTP API.

    python scripts/vc_batch.py jobs.csv --server http://127.0.0.1:8188 --out runs/batch1

The repository root replaces this script's folder on sys.path, and only the `vc_batch` package
is imported from it (it never imports comfy or torch).  This folder must go: Ray gives its workers
the driver's sys.path, and there this very file `vc_batch.py` would shadow the `vc_batch` package.
See docs/batch.md.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from vc_batch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
