#!/usr/bin/env python3
"""Seconds per CFG step and peak memory of the VideoCrafter UNet inside ComfyUI.

  python scripts/benchmark.py                       # tiny golden weights, CPU, 320x512, 16 frames
  python scripts/benchmark.py --full-size --gpu     # random weights at the released VC2 size on a GPU
  python scripts/benchmark.py --freenoise-memory    # peak memory per frame: 64 frames FreeNoise vs 16 plain

Each measured step is one classifier-free-guidance step of the VideoCrafter KSampler (positive and
negative batched into one UNet call by ComfyUI). Prints one line of numbers per run.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import comfy_boot  # noqa: E402


def full_size_state_dict(layout="t2v_512_v2.0"):
    """Random weights with the released layout (shapes from ../shared/reference/keys)."""
    import torch
    sd = {}
    with open(os.path.join(comfy_boot.KEYS, f"{layout}.keys.tsv")) as f:
        for line in f:
            name, shape, _ = line.rstrip("\n").split("\t")
            dims = [int(d) for d in shape.strip("[]").split(",") if d.strip()]
            sd[name] = torch.randn(dims) * 0.02 if dims else torch.tensor(1.0)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    sd["alphas_cumprod"] = torch.cumprod(1 - betas, 0).float()
    if "scale_arr" in sd:
        sd["scale_arr"] = torch.cat([torch.linspace(1, 0.7, 400), torch.full((1000,), 0.7)])
    return sd


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=os.path.join(comfy_boot.GOLDEN, "tiny_t2v_v2.safetensors"))
    parser.add_argument("--full-size", action="store_true", help="random weights at the released VC2 T2V size")
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default: --cpu)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="measured steps (after one warm-up step)")
    parser.add_argument("--weight-dtype", default="default")
    parser.add_argument("--comfy-args", default="--use-pytorch-cross-attention",
                        help="ComfyUI options, as you would start ComfyUI with (attention choice etc.)")
    parser.add_argument("--freenoise", action="store_true", help="sample through VideoCrafter FreeNoise (window 16, stride 4)")
    parser.add_argument("--freenoise-memory", action="store_true",
                        help="one line: sampling memory per frame of 64 frames with FreeNoise vs 16 frames plain "
                             "(each in its own process; other options pass through)")
    args = parser.parse_args()
    if args.freenoise_memory:
        return compare_freenoise_memory()

    pack = comfy_boot.boot(cpu=not args.gpu, extra_args=args.comfy_args.split())
    import torch
    import comfy.model_management as mm
    import nodes as core
    loader = comfy_boot.pack("vc_models.loader")
    ckpt = comfy_boot.pack("vc_models.checkpoint")
    if args.full_size:
        sd = full_size_state_dict()
        bundle = loader.build_bundle(sd, ckpt.inspect_checkpoint(sd, "random VC2"), loader.WEIGHT_DTYPES[args.weight_dtype])
        label = "VC2 T2V full size, random weights"
    else:
        bundle = loader.load_videocrafter(args.ckpt, args.weight_dtype)
        label = os.path.basename(args.ckpt)
    (pos,) = core.CLIPTextEncode().encode(bundle.clip, "a corgi running on the beach")
    (neg,) = core.CLIPTextEncode().encode(bundle.clip, "")
    (latent,) = pack.NODE_CLASS_MAPPINGS["EmptyVideoCrafterLatent"]().generate(args.width, args.height, args.frames, 1)
    sampler = pack.NODE_CLASS_MAPPINGS["VideoCrafterKSampler"]()

    model = bundle.model
    if args.freenoise:
        (model,) = pack.NODE_CLASS_MAPPINGS["VideoCrafterFreeNoise"]().patch(model, 16, 4, True)
        label += " + FreeNoise 16/4"

    stamps = []
    import comfy.utils
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None: stamps.append(time.perf_counter()))
    baseline = reset_peak_memory(torch)
    start = time.perf_counter()
    sampler.sample(model, pos, neg, latent, seed=0, steps=args.steps + 1, cfg=12.0,
                   sampler_name="videocrafter_ddim", scheduler="videocrafter_uniform", eta=1.0, denoise=1.0)
    total = time.perf_counter() - start
    sampling_peak = peak_memory(torch) - baseline
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else total
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    gpu = f", peak GPU memory {torch.cuda.max_memory_allocated() / 1024 ** 3:.2f} GB" if torch.cuda.is_available() else ""
    print(f"{label} [{args.comfy_args}]: {args.width}x{args.height}x{args.frames}, batch 1 with CFG, device {mm.get_torch_device()}, "
          f"weights {bundle.model.model.get_dtype()}: {per_step:.3f} s per CFG step, peak RSS {rss_gb:.2f} GB{gpu}, "
          f"sampling peak {sampling_peak / 1024 ** 2:.0f} MB above the loaded model "
          f"({sampling_peak / args.frames / 1024 ** 2:.1f} MB per frame)")
    print("RESULT " + json.dumps({"frames": args.frames, "sampling_peak_bytes": sampling_peak, "seconds_per_step": per_step}))


def reset_peak_memory(torch):
    """Start a fresh high-water mark; returns the memory in use now (GPU bytes, or process RSS)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:  # Linux: "5" resets VmHWM, the peak RSS
        f.write("5")
    return _proc_status_bytes("VmRSS")


def peak_memory(torch):
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return _proc_status_bytes("VmHWM")


def _proc_status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def compare_freenoise_memory():
    """Each case in its own process (peaks do not mix): 16 frames plain, 64 frames with FreeNoise."""
    passthrough = [a for a in sys.argv[1:] if a != "--freenoise-memory"]
    results = {}
    for name, extra in (("plain", ["--frames", "16"]), ("freenoise", ["--frames", "64", "--freenoise"])):
        run = subprocess.run([sys.executable, os.path.abspath(__file__), *passthrough, "--steps", "1", *extra],
                             capture_output=True, text=True, check=True)
        line = next(l for l in run.stdout.splitlines() if l.startswith("RESULT "))
        results[name] = json.loads(line[len("RESULT "):])
    per_frame = {k: v["sampling_peak_bytes"] / v["frames"] for k, v in results.items()}
    print(f"FreeNoise memory: sampling peak per frame generated {per_frame['plain'] / 1024 ** 2:.1f} MB "
          f"(16 frames plain) vs {per_frame['freenoise'] / 1024 ** 2:.1f} MB (64 frames FreeNoise 16/4): "
          f"ratio {per_frame['freenoise'] / per_frame['plain']:.2f} (target <= 1.5); s per CFG step "
          f"{results['plain']['seconds_per_step']:.2f} vs {results['freenoise']['seconds_per_step']:.2f}")


if __name__ == "__main__":
    main()
