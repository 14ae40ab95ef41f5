#!/usr/bin/env python3
"""Jobs per minute of vc_batch on Ray over 1 vs N workers, each launching its own ComfyUI.

    python scripts/benchmark_batch.py --comfyui /path/to/ComfyUI \
        --comfyui-args "--cpu --extra-model-paths-config /path/to/tiny_models.yaml" \
        --checkpoint tiny_t2v_v2.safetensors --jobs 12 --workers 1 3

Runs the same table of tiny text-to-video jobs (128x64, 4 frames, 2 steps unless told otherwise)
once per worker count, in a fresh output folder each time, and prints one line per run.  The
clock starts when the first worker reports ready and stops at the last job done, so ComfyUI's
start-up is not counted.  Expect roughly linear scaling up to the CPU cores (or GPUs) there are.
Needs Ray (pip install -r requirements-cluster.txt).
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "scripts", "vc_batch.py")


def write_table(path, n, checkpoint, steps, frames):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "prompt", "seed", "checkpoint", "width", "height", "frames", "steps"])
        for i in range(n):
            w.writerow([f"b{i:03d}", f"a red ball number {i}", i, checkpoint, 128, 64, frames, steps])


def run(table, out, workers, args):
    cmd = [sys.executable, CLI, table, "--out", out, "--ray", "local", "--workers", str(workers),
           "--cpus-per-worker", "1", "--comfyui", args.comfyui, "--comfyui-args", args.comfyui_args,
           "--no-progress", "--poll-interval", "0.2"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    first_ready = last_done = None
    done = 0
    for line in proc.stderr:
        now = time.monotonic()
        if line.startswith("worker ") and first_ready is None:
            first_ready = now
        elif line.startswith("done "):
            done, last_done = done + 1, now
        elif line.startswith(("FAILED", "error", "giving up")):
            sys.stderr.write(line)
    proc.wait()
    if proc.returncode != 0 or first_ready is None or not done:
        raise SystemExit(f"the batch over {workers} worker(s) failed (exit {proc.returncode})")
    return done, last_done - first_ready


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", required=True, help="ComfyUI folder with this pack in custom_nodes")
    p.add_argument("--comfyui-args", default="--cpu", help="arguments of every launched ComfyUI (model paths, --cpu)")
    p.add_argument("--checkpoint", default="tiny_t2v_v2.safetensors", help="ckpt_name of the jobs")
    p.add_argument("--jobs", type=int, default=12)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 3])
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vc_batch_bench") as tmp:
        table = os.path.join(tmp, "jobs.csv")
        write_table(table, args.jobs, args.checkpoint, args.steps, args.frames)
        base = None
        for workers in args.workers:
            done, seconds = run(table, os.path.join(tmp, f"out{workers}"), workers, args)
            rate = done * 60.0 / seconds
            base = base or rate / workers
            print(f"{workers} worker(s): {done} jobs in {seconds:.1f}s = {rate:.1f} jobs/min "
                  f"({rate / base:.2f}x one worker's rate)", flush=True)


if __name__ == "__main__":
    main()
