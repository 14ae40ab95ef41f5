#!/usr/bin/env python3
"""`make demo`: start ComfyUI headless with this pack, run the shipped T2V and I2V API workflows, and
write the videos to ./output/, printing paths and timings.

Without --ckpt/--model it uses tiny checkpoints: the reference ones from ../shared (or $VIDEOCRAFTER_REFERENCE),
else smoke models it generates from the pack's code (a SMOKE MODEL either way: random tiny weights, the frames
are noise; sizes and steps are reduced so it takes a minute on a CPU). With --ckpt path/to/model.ckpt it runs
the workflow that fits that checkpoint at the papers' settings; with --model ID (any id of
scripts/download_models.py --list but the T2V-Turbo UNets) it first downloads and converts the released model
into --models-dir (once; HF_ENDPOINT is honoured), then renders at the papers' settings.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_server import ComfyServer, GOLDEN, fill_inputs, http_json  # noqa: E402  (the same launcher the tests use)
import comfy_boot  # noqa: E402  (paths only; ComfyUI runs in the server process)
sys.path.insert(0, ROOT)  # vc_models without ComfyUI, as scripts/download_models.py
from vc_models import registry  # noqa: E402

SMOKE = ("tiny_t2v_v2.safetensors", "tiny_i2v_v1.safetensors", "tiny_dc_512.safetensors", "tiny_toon_512.safetensors")
# length: DynamiCrafter's frames
SMOKE_SETTINGS = {"width": 256, "height": 128, "frames": 8, "length": 8, "steps": 10}
QUICK_SETTINGS = {"width": 128, "height": 64, "frames": 4, "length": 4, "steps": 2}  # --quick: a plumbing check in seconds
START_IMAGE = "videocrafter_demo_start.png"


def workflow_for(entry):
    """(shipped workflow name, settings that differ from it) rendering a registry entry: its own graph, else the
    first of its family's (a T2V graph takes any T2V checkpoint) at the entry's size and frame-rate condition."""
    for e in [entry] + [e for e in registry.MODELS if e.family.shares_graphs_with(entry.family)]:
        base = next((w for w in e.workflows if not w.variation), None)
        if base is None:
            continue
        ours, theirs = entry.defaults, e.defaults
        rate = entry.family.rate_input
        settings = {k: v for k, v, w in (("width", ours.width, theirs.width), ("height", ours.height, theirs.height),
                                          (rate, ours.fps, theirs.fps)) if v != w}
        return base.name, settings
    raise SystemExit(f"No shipped workflow renders {entry.description}.")


def demo_models():
    """Released model ids `--model` renders on their own (a T2V-Turbo UNet needs its base checkpoint too)."""
    return sorted(e.id for e in registry.released() if not e.base_model)


def write_tiny_toon(path):
    """The reference's tiny ToonCrafter as one .safetensors (in a child process: this one stays free of ComfyUI)."""
    import subprocess
    code = ("import sys, comfy_boot, safetensors.torch; comfy_boot.boot(cpu=True); "
            "import smoke_model; sd = smoke_model.tiny_toon_state_dict(comfy_boot.GOLDEN); "
            "safetensors.torch.save_file(sd, sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, path], check=True, cwd=os.path.join(ROOT, "scripts"))


def detected_entry(path):
    """The registry entry of a checkpoint file, from its tensor names and schedule (no weights read)."""
    from vc_models.checkpoint import inspect_checkpoint
    from vc_models.checkpoint_file import read_layout
    return inspect_checkpoint(read_layout(path), os.path.basename(path)).entry


def run(server, name, values, out_dir):
    with open(os.path.join(ROOT, "workflows", "api", f"{name}.json")) as f:
        workflow = fill_inputs(json.load(f), values)
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
    os.makedirs(out_dir, exist_ok=True)
    for item in files:
        src = os.path.join(server.output_dir, item["subfolder"], item["filename"])
        dst = os.path.join(out_dir, f"{name}_{item['filename']}")
        shutil.copy(src, dst)
        saved.append(dst)
    return saved, time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="a released VideoCrafter checkpoint (.ckpt or .safetensors)")
    parser.add_argument("--model", choices=demo_models(),
                        help="download (once) and render a released model at the papers' settings")
    parser.add_argument("--models-dir", default=os.path.join(ROOT, "models", "videocrafter"),
                        help="where --model keeps the converted .safetensors (default ./models/videocrafter)")
    parser.add_argument("--quick", action="store_true",
                        help="with --ckpt/--model: 128x64, 4 frames, 2 steps instead of the papers' settings (checks the plumbing)")
    parser.add_argument("--out", default=os.path.join(ROOT, "output"), help="where the videos go (default ./output)")
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default when one is present)")
    args = parser.parse_args()
    if args.model:
        from vc_models.download import DownloadError, fetch_model
        try:
            args.ckpt = fetch_model(args.model, args.models_dir).path
        except DownloadError as e:
            raise SystemExit(f"error: {e}")

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
        name, settings = workflow_for(registry.entry(args.model) if args.model else detected_entry(ckpt))
        jobs = {name: {"ckpt_name": os.path.basename(ckpt), **settings, **(QUICK_SETTINGS if args.quick else {})}}
        settings = f"the --quick settings {QUICK_SETTINGS}" if args.quick else "the papers' settings (16 frames, 50 DDIM steps)"
        print(f"{os.path.basename(ckpt)}: running {name} at {settings}.")
    else:
        if not comfy_boot.HAVE_REFERENCE:
            print(f"{comfy_boot.REFERENCE_MISSING}: generating smoke models in {GOLDEN}")
            comfy_boot.ensure_smoke_models(GOLDEN)
        jobs = {}
        for tiny in SMOKE:
            path = os.path.join(checkpoints, tiny)
            if os.path.exists(os.path.join(GOLDEN, tiny)):
                os.symlink(os.path.join(GOLDEN, tiny), path)
            else:  # the reference's tiny ToonCrafter is tiny_dc_512 + a decoder delta: written out once per demo
                write_tiny_toon(path)
            name, _ = workflow_for(detected_entry(path))
            jobs[name] = {"ckpt_name": tiny, **SMOKE_SETTINGS}
        example = registry.released()[0]
        print("SMOKE MODEL: tiny random-weight checkpoints — the videos are noise. For a real video run "
              f"`make demo MODEL={example.id}` (downloads the released {example.description} once; "
              "scripts/download_models.py --list names the others) or `make demo CKPT=path/to/model.ckpt`.")
    if not os.path.exists(os.path.join(GOLDEN, "tiny_i2v_v1.case1.cond_image.png")):
        comfy_boot.ensure_smoke_models(GOLDEN)  # the start image comes with the smoke models
    shutil.copy(os.path.join(GOLDEN, "tiny_i2v_v1.case1.cond_image.png"), os.path.join(server.input_dir, START_IMAGE))
    for values in jobs.values():
        values["image"] = START_IMAGE

    started = time.time()
    server.start()
    print(f"ComfyUI is up at {server.url} after {time.time() - started:.1f} s (log: {server.log_path})")
    try:
        for name, values in jobs.items():
            saved, seconds = run(server, name, values, args.out)
            for path in saved:
                print(f"{name}: {path}  ({seconds:.1f} s)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
