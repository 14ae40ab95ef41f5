"""vc_batch: run VideoCrafter (or any ComfyUI API workflow) over a table of jobs through a
running ComfyUI server's HTTP API, or over several ComfyUI workers on Ray (optional).  A pure
client: it never imports torch or comfy.

    python scripts/vc_batch.py jobs.csv --server http://127.0.0.1:8188 --out runs/batch1
    python scripts/vc_batch.py jobs.csv --ray local --workers 2 --comfyui ~/ComfyUI --out runs/batch1

plan.py plans the jobs (tables: table.py, workflows: workflow.py, manifest: manifest.py);
runner.py runs them on one server (batch_server.py, server_events.py), ray_executor.py on Ray workers
(worker.py), both through client.py, with Ctrl-C in interrupts.py and the fetched files in outputs.py.

See docs/batch.md.
"""
__version__ = "0.1.0"
