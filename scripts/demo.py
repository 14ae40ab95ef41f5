#!/usr/bin/env python3
"""`make demo`: start ComfyUI headless with this pack, run the shipped T2V and I2V API workflows, and
write the videos to ./output/, printing paths and timings.

Without --ckpt it uses the tiny reference checkpoints from ../shared (a SMOKE MODEL: random tiny
weights, the frames are noise; sizes and steps are reduced so it takes a minute on a CPU). With
--ckpt path/to/model.ckpt it runs the workflow that fits that checkpoint at the papers' settings.
"""
import argparse
import json
import os
import shutil
import sys
import time
import urllib.error
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from server_util import ComfyServer, GOLDEN, http_json  # noqa: E402  (the same launcher the tests use)

SMOKE = {"vc2_t2v_512": "tiny_t2v_v2.safetensors", "vc1_i2v_512": "tiny_i2v_v1.safetensors",
         "dc_512": "tiny_dc_512.safetensors"}
SMOKE_SETTINGS = {"width": 256, "height": 128, "frames": 8, "length": 8, "steps": 10}  # length: DynamiCrafter's frames
START_IMAGE = "videocrafter_demo_start.png"


def is_image_to_video(path):
    """True for a VideoCrafter I2V checkpoint (it carries the image key/value projections)."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        with safe_open(path, "pt") as f:
            return any(".to_k_ip." in k for k in f.keys())
    import torch
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    sd = sd.get("state_dict", sd.get("module", sd))
    return any(".to_k_ip." in k for k in sd)


def unet_input_channels(path):
    """8 for DynamiCrafter (noise + image latent), 4 for VideoCrafter."""
    key = "model.diffusion_model.input_blocks.0.0.weight"
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        with safe_open(path, "pt") as f:
            return f.get_slice(key).get_shape()[1]
    import torch
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    sd = sd.get("state_dict", sd.get("module", sd))
    return next(v for k, v in sd.items() if k.endswith(key)).shape[1]


def fill(workflow, values):
    for node in workflow.values():
        for key in list(node["inputs"]):
            if key in values and not isinstance(node["inputs"][key], list):
                node["inputs"][key] = values[key]
    return workflow


def run(server, name, values):
    with open(os.path.join(ROOT, "workflows", "api", f"{name}.json")) as f:
        workflow = fill(json.load(f), values)
    start = time.time()
    try:
        prompt_id = http_json(server.url + "/prompt", {"prompt": workflow, "client_id": uuid.uuid4().hex})["prompt_id"]
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{name}: ComfyUI rejected the workflow: {e.read().decode()}")
    last = 0
    while True:
        entry = http_json(f"{server.url}/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            break
        if time.time() - last > 15:
            print(f"  {name}: running, {time.time() - start:.0f} s", flush=True)
            last = time.time()
        time.sleep(0.5)
    if entry["status"]["status_str"] != "success":
        raise SystemExit(f"{name} failed: {json.dumps(entry['status']['messages'])[-2000:]}")
    files = [f for out in entry["outputs"].values() for f in out.get("images", [])]
    saved = []
    os.makedirs(os.path.join(ROOT, "output"), exist_ok=True)
    for item in files:
        src = os.path.join(server.output_dir, item["subfolder"], item["filename"])
        dst = os.path.join(ROOT, "output", f"{name}_{item['filename']}")
        shutil.copy(src, dst)
        saved.append(dst)
    return saved, time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="a released VideoCrafter checkpoint (.ckpt or .safetensors)")
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default when one is present)")
    args = parser.parse_args()

    root = os.path.join(ROOT, ".demo")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    import torch
    extra = ["--use-pytorch-cross-attention"]
    server = ComfyServer(root, checkpoints=(), extra_args=extra)
    if not torch.cuda.is_available():
        print("No GPU: running ComfyUI on the CPU.")
    else:
        server.command = lambda base=server.command: [a for a in base() if a != "--cpu"]
    checkpoints = os.path.join(server.models_dir, "checkpoints")
    if args.ckpt:
        ckpt = os.path.abspath(args.ckpt)
        os.symlink(ckpt, os.path.join(checkpoints, os.path.basename(ckpt)))
        name = "vc1_i2v_512" if is_image_to_video(ckpt) else "vc2_t2v_512"
        if unet_input_channels(ckpt) == 8:
            name = "dc_512"  # DynamiCrafter (set width/height in the workflow for the 256/1024 models)
        jobs = {name: {"ckpt_name": os.path.basename(ckpt)}}
        print(f"{os.path.basename(ckpt)}: running {name} at the papers' settings (16 frames, 50 DDIM steps, cfg 12).")
    else:
        jobs = {}
        for name, tiny in SMOKE.items():
            os.symlink(os.path.join(GOLDEN, tiny), os.path.join(checkpoints, tiny))
            jobs[name] = {"ckpt_name": tiny, **SMOKE_SETTINGS}
        print("SMOKE MODEL: tiny random-weight checkpoints from ../shared — the videos are noise. "
              "Run `make demo CKPT=path/to/model.ckpt` with a released checkpoint for real videos.")
    shutil.copy(os.path.join(GOLDEN, "tiny_i2v_v1.case1.cond_image.png"), os.path.join(server.input_dir, START_IMAGE))
    for values in jobs.values():
        values["image"] = START_IMAGE

    started = time.time()
    server.start()
    print(f"ComfyUI is up at {server.url} after {time.time() - started:.1f} s (log: {server.log_path})")
    try:
        for name, values in jobs.items():
            saved, seconds = run(server, name, values)
            for path in saved:
                print(f"{name}: {path}  ({seconds:.1f} s)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
