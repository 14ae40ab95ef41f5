#!/usr/bin/env python3
"""The GPU check's steps, in order of importance, each in its own process with its own time limit, under one
deadline; one JSON line per step (status, seconds, the measurements) in OUT/gpu_check.jsonl and each step's log
in OUT/<step>.log. scripts/gpu_check.sh prepares the machine and calls this; see it for the usage.

  gpu_check.py --out DIR [--deadline-s 470] [--original DIR]     # on a CUDA GPU, released sizes
  gpu_check.py --out DIR --cpu-dry-run                            # every step on the CPU, tiny sizes (CI)

No ComfyUI import here: the steps are scripts/benchmark.py runs, a real server on the shipped vc2_t2v_512 graph
(started by scripts/comfy_server.py) and the suite's GPU tests.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

RELEASED = dict(width=512, height=320, frames=16)
TINY = dict(width=128, height=64, frames=4)
# the targets the check reports against (issue 25): ratio or limit per measurement
TARGETS = {"bf16_vs_original_fp16_xformers": 2.0}
# the memory targets: a whole 16-frame video (50 steps + decode, bf16) of the model at its released size, run on
# a GPU capped to this many GB: (step name, benchmark --model, size, cap)
CAPPED_VIDEOS = [
    ("video_16_bf16_cap_8gb", "vc2_t2v_512", RELEASED, 8),
    ("video_16_dc_512_bf16_cap_8gb", "dc_512", RELEASED, 8),
    ("video_16_toon_512_bf16_cap_10gb", "toon_512", RELEASED, 10),
    ("video_16_vc1_1024_bf16_cap_12gb", "vc1_t2v_1024", dict(width=1024, height=576, frames=16), 12),
]


def benchmark(dry, *options, sizes=None, steps=4):
    """The benchmark command for a step: released VC2 size with random weights on the GPU, or the tiny model on
    the CPU at tiny sizes for the dry run."""
    size = TINY if dry else (sizes or RELEASED)
    cmd = [sys.executable, os.path.join(HERE, "benchmark.py"), "--width", str(size["width"]),
           "--height", str(size["height"]), "--frames", str(size["frames"]), "--steps", str(1 if dry else steps)]
    cmd += [] if dry else ["--full-size", "--gpu"]
    return cmd + list(options)


def steps(args):
    """(name, time limit s, command, folder) in order of importance."""
    dry = args.cpu_dry_run
    video = "2" if dry else "50"
    out = [
        ("unet_step_bf16", 45, benchmark(dry, "--weight-dtype", "bf16")),
        ("unet_step_fp16", 45, benchmark(dry, "--weight-dtype", "fp16")),
        ("unet_step_fp32", 45, benchmark(dry, "--comfy-args", "--use-pytorch-cross-attention --force-fp32")),
        ("unet_step_fp8", 45, benchmark(dry, "--weight-dtype", "fp8_e4m3fn")),
        ("video_16_bf16", 60, benchmark(dry, "--weight-dtype", "bf16", "--video-steps", video, steps=1)),
    ] + [
        (name, 60 if size is RELEASED else 100,
         benchmark(dry, "--model", model, "--weight-dtype", "bf16", "--video-steps", video, "--vram-cap-gb", str(cap),
                   sizes=size, steps=1))
        for name, model, size, cap in CAPPED_VIDEOS
    ] + [
        ("server_vc2_t2v_512", 100, [sys.executable, os.path.abspath(__file__), "--server-step", "--out", args.out]
         + (["--cpu-dry-run"] if dry else [])),
        ("gpu_tests", 150, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-s", "-m", "gpu",
                            "test_gpu.py"], os.path.join(REPO, "tests")),
        ("frames_64_bf16", 40, benchmark(dry, "--weight-dtype", "bf16", sizes=dict(RELEASED, frames=64), steps=2)),
        ("size_576x1024_bf16", 40, benchmark(dry, "--weight-dtype", "bf16",
                                             sizes=dict(width=1024, height=576, frames=16), steps=2)),
    ]
    for mode in ("fp32", "fp16_autocast", "fp16_xformers"):
        out.append((f"original_unet_{mode}", 60, benchmark(dry, "--original", args.original or "",
                                                           "--original-mode", mode, "--original-only")))
    return [step if len(step) == 4 else step + (REPO,) for step in out]


def run_step(name, limit, command, folder, out_dir):
    """Run one step; its log in out_dir/<name>.log; returns the JSON record (status, seconds, RESULT lines)."""
    log_path = os.path.join(out_dir, f"{name}.log")
    start = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # a step killed at its limit leaves its log up to that point
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, timeout=limit, env=env)
            status = "ok" if proc.returncode == 0 else f"failed ({proc.returncode})"
        except subprocess.TimeoutExpired:
            status = "timeout"
    with open(log_path, errors="replace") as log:
        text = log.read()
    lines = text.splitlines()
    results = [json.loads(line[len("RESULT "):]) for line in lines if line.startswith("RESULT ")]
    # a step that cannot run here says why ("STEP-SKIPPED reason"); a pytest step whose tests all skipped, too
    skipped = [line[len("STEP-SKIPPED "):] for line in lines if line.startswith("STEP-SKIPPED ")]
    summary = [line for line in lines if re.search(r"^=* ?\d+ (passed|skipped|failed)", line)]
    if summary:
        counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|skipped|failed|errors?)", summary[-1])}
        results.append({"pytest": counts})
        if not counts.get("passed") and counts.get("skipped"):
            skipped += [line.split(": ", 1)[-1] for line in lines if line.startswith("SKIPPED [")] or ["all skipped"]
    record = {"step": name, "status": "skipped" if status == "ok" and skipped else status,
              "seconds": round(time.time() - start, 1), "limit_s": limit, "results": results}
    if skipped:
        record["reason"] = skipped[0]
    if status != "ok":
        record["log_tail"] = text[-1500:]
    return record


def ratios(records):
    """The target ratios the measurements allow (absent when a step did not run)."""
    by_step = {r["step"]: r for r in records}

    def first(step, key):
        record = by_step.get(step)
        values = [res[key] for res in (record or {}).get("results", []) if key in res]
        return values[0] if record and record["status"] == "ok" and values else None
    out = {}
    ours, original = first("unet_step_bf16", "seconds_per_step"), first("original_unet_fp16_xformers", "seconds_per_step")
    if ours and original:
        out["bf16_vs_original_fp16_xformers"] = {"ratio": original / ours, "target": TARGETS["bf16_vs_original_fp16_xformers"]}
    for name, model, _, cap in CAPPED_VIDEOS:
        if name in by_step:
            peak = first(name, "video_peak_bytes")
            out[f"{model}_16_frames_within_{cap}gb"] = {"ok": by_step[name]["status"] == "ok",
                                                        "peak_gib": peak and peak / 1024 ** 3, "target_gb": cap}
    return out


def server_step(args):
    """The shipped vc2_t2v_512 graph in a real server (as a user starts one: main.py, on the GPU), with its
    checkpoint file written at the released size (random weights) or, dry, the tiny model under that name; prints
    RESULT with the prompt's wall time and the peak memory seen (GPU: nvidia-smi's memory.used; dry: the server's
    RSS), and whether the MODEL got dynamic VRAM."""
    import psutil
    from comfy_server import ComfyServer, load_workflow, run_prompt, fill_inputs
    import comfy_boot
    dry = args.cpu_dry_run
    # its model folder holds a released-size checkpoint (2.8 GB): in the work folder, not among the results
    root = os.path.join(os.environ.get("GPU_CHECK_WORK") or args.out, "server")
    workflow = load_workflow("vc2_t2v_512")
    name = workflow["1"]["inputs"]["ckpt_name"]

    class Server(ComfyServer):
        def command(self):
            return [a for a in super().command() if dry or a != "--cpu"]
    server = Server(root, checkpoints=())
    path = os.path.join(server.models_dir, "checkpoints", name)
    if dry:
        fill_inputs(workflow, {**TINY, "steps": 2})
        if not os.path.lexists(path):
            os.symlink(os.path.join(comfy_boot.GOLDEN, "tiny_t2v_v2.safetensors"), path)
    elif not os.path.exists(path):
        import safetensors.torch
        import benchmark
        safetensors.torch.save_file(benchmark.full_size_state_dict("t2v_512_v2.0"), path)
    peak = {"bytes": 0}
    stop = threading.Event()

    def used():
        if dry:
            procs = [psutil.Process(server.proc.pid)] + psutil.Process(server.proc.pid).children(recursive=True)
            return sum(p.memory_info().rss for p in procs)
        query = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                               capture_output=True, text=True)
        return int(query.stdout.split()[0]) * 1024 ** 2

    def poll():
        while not stop.is_set():
            try:
                peak["bytes"] = max(peak["bytes"], used())
            except Exception:
                pass
            time.sleep(0.2)
    server.start()
    try:
        idle = used()
        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        start = time.time()
        entry = run_prompt(server, workflow, timeout=600)
        seconds = time.time() - start
        stop.set()
        watcher.join()
        log = server.log_tail(400_000)
    finally:
        server.stop()
    ok = entry["status"]["status_str"] == "success"
    print("RESULT " + json.dumps({"prompt_seconds": seconds, "peak_bytes": peak["bytes"], "idle_bytes": idle,
                                  "success": ok, "dynamic_vram": "dynamic VRAM" in log,
                                  "size": {k: workflow["5"]["inputs"][k] for k in ("width", "height", "frames")},
                                  "steps": workflow["6"]["inputs"]["steps"]}))
    if not ok:
        print(log[-4000:])
        return 1
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cpu-dry-run", action="store_true")
    parser.add_argument("--deadline-s", type=float, default=470, help="the whole check's deadline (the dry run: 3x)")
    parser.add_argument("--original", default=None, help="a folder holding the original VideoCrafter code")
    parser.add_argument("--only", default=None, help="comma-separated step names to run (default: all)")
    parser.add_argument("--server-step", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    args.out = os.path.abspath(args.out)
    if args.server_step:
        return server_step(args)
    # the dry run checks that every step runs, not how fast: a shared CPU gets 3x each limit
    slack = 3 if args.cpu_dry_run else 1
    end = time.time() + slack * args.deadline_s
    import comfy_boot
    if not comfy_boot.HAVE_REFERENCE:  # the tiny models the dry run and tests/test_gpu.py sample
        comfy_boot.ensure_smoke_models()
    results_path = os.path.join(args.out, "gpu_check.jsonl")
    records = []
    failed = False
    with open(results_path, "w") as results:
        for name, limit, command, folder in steps(args):
            if args.only and name not in args.only.split(","):
                continue
            left = end - time.time()
            if left < 10:
                record = {"step": name, "status": "not run (deadline)", "limit_s": limit}
            else:
                limit = min(slack * limit, left)
                print(f"== {name} (limit {limit:.0f} s)", flush=True)
                record = run_step(name, limit, command, folder, args.out)
            records.append(record)
            failed |= record["status"] not in ("ok", "skipped")
            results.write(json.dumps(record) + "\n")
            results.flush()
            print(json.dumps({k: v for k, v in record.items() if k != "log_tail"}), flush=True)
        summary = {"step": "targets", "dry_run": args.cpu_dry_run, "ratios": ratios(records)}
        results.write(json.dumps(summary) + "\n")
    print(json.dumps(summary))
    print(f"results: {results_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
