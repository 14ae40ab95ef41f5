"""vc_batch: run VideoCrafter (or any ComfyUI API workflow) over a table of jobs through a
running ComfyUI server's HTTP API.  A pure client: it never imports torch or comfy.

    python scripts/vc_batch.py jobs.csv --server http://127.0.0.1:8188 --out runs/batch1

See docs/batch.md.
"""
__version__ = "0.1.0"
