#!/usr/bin/env python3
"""Seconds per CFG step and peak memory of the VideoCrafter UNet inside ComfyUI.

  python scripts/benchmark.py                       # tiny golden weights, CPU, 320x512, 16 frames
  python scripts/benchmark.py --full-size --gpu     # random weights at the released VC2 size on a GPU
  python scripts/benchmark.py --turbo               # + seconds per video: VC2 50 steps + CFG vs T2V-Turbo 4/8/16
  python scripts/benchmark.py --model dc_512        # a DynamiCrafter 512 CFG step (tiny_dc_512 weights, CPU)
  python scripts/benchmark.py --model toon_512 --full-size --gpu --video-steps 50 --vram-cap-gb 10
                                                    # a whole ToonCrafter video (dual-reference decode) under 10 GB
  python scripts/benchmark.py --freenoise-memory    # peak memory per frame: 32 and 64 frames FreeNoise vs 16 plain
  python scripts/benchmark.py --caches              # core EasyCache / LazyCache on a 50-step video vs uncached
  python scripts/benchmark.py --toon-decode         # ToonCrafter's decoder beside the plain VAE, 16 frames
  python scripts/benchmark.py --full-size --weight-dtype bf16 --compile   # + core TorchCompileModel (inductor) speed-up

Each measured step is one classifier-free-guidance step of the VideoCrafter KSampler (positive and
negative batched into one UNet call by ComfyUI). Prints one line of numbers per run.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import comfy_boot  # noqa: E402


def noise_schedule():
    """The pack's `vc_models/noise_schedule.py` (torch only), read without booting ComfyUI: the original's process
    uses it too."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("vc_noise_schedule",
                                                  os.path.join(comfy_boot.REPO, "vc_models", "noise_schedule.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def full_size_state_dict(layout="t2v_512_v2.0", weights_device=None):
    """Random weights with the released layout (shapes from ../shared/reference/keys), stored in fp16 as most
    released files are (the model casts them to its weight dtype on load), and the schedule buffers of a release.
    weights_device "meta": the weights as shapes only (what detection reads; the tests check that in seconds)."""
    import torch
    sd = {}
    # drawn on the GPU when there is one (1.4 billion values: seconds there, a minute on a CPU); the same values in
    # every process of one machine, so the pack and the original get the same weights
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator(device).manual_seed(0)
    with open(os.path.join(comfy_boot.KEYS, f"{layout}.keys.tsv")) as f:
        for line in f:
            name, shape, _ = line.rstrip("\n").split("\t")
            dims = [int(d) for d in shape.strip("[]").split(",") if d.strip()]
            if weights_device == "meta" and "." in name:  # a weight (the top-level buffers are drawn as values)
                sd[name] = torch.empty(dims, dtype=torch.float16, device="meta")
            else:
                sd[name] = (torch.randn(dims, generator=generator, device=device) * 0.02).half().cpu() if dims \
                    else torch.tensor(1.0)
    # a release's schedule buffers (the loader refuses random ones); the v-prediction models' ends at zero SNR
    # (how the pack tells DynamiCrafter 512 from 256)
    scale = (0.7, sd["scale_arr"].numel()) if "scale_arr" in sd else None
    sd.update(noise_schedule().release_buffers(scale, zero_terminal_snr=layout.startswith(("dynamicrafter", "tooncrafter"))))
    return sd


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=None, help="checkpoint (default: the tiny VC2, or tiny DynamiCrafter 512, golden weights)")
    parser.add_argument("--model", default="vc2_t2v_512", choices=sorted(BENCH_MODELS),
                        help="the model sampled, with its shipped graph's conditioning and the registry's cfg and "
                             "scheduler: VideoCrafter2 (default), VideoCrafter1 1024, DynamiCrafter 512 (DynamiCrafter "
                             "Conditioning from one image), ToonCrafter 512 (two key frames, dual-reference decode)")
    parser.add_argument("--full-size", action="store_true", help="random weights at the --model's released size")
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default: --cpu)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="measured steps (after one warm-up step)")
    parser.add_argument("--weight-dtype", default="default")
    parser.add_argument("--no-cfg", action="store_true",
                        help="cfg 1: core skips the negative, so each step is one batch-1 UNet call (the memory of batch 1)")
    parser.add_argument("--weight-dtypes", default=None,
                        help="comma-separated weight dtypes (e.g. default,bf16,fp8_e4m3fn): one run each, in its own "
                             "process (peaks do not mix), other options passed through; a summary line at the end")
    parser.add_argument("--turbo", action="store_true",
                        help="also time T2V-Turbo-v2 (one UNet pass per LCM step, cfg 1) on the same weights and print "
                             "seconds per video: VideoCrafter2 50 steps + CFG vs turbo 4 / 8 / 16 steps")
    parser.add_argument("--turbo-unet", default=None,
                        help="a T2V-Turbo UNet file (default: the tiny MG turbo UNet built from the reference data)")
    parser.add_argument("--comfy-args", default="--use-pytorch-cross-attention",
                        help="ComfyUI options, as you would start ComfyUI with (attention choice etc.)")
    parser.add_argument("--freenoise", action="store_true", help="sample through VideoCrafter FreeNoise (window 16, stride 4)")
    parser.add_argument("--freenoise-memory", action="store_true",
                        help="one line: sampling memory per frame of 64 frames with FreeNoise vs 16 frames plain "
                             "(each in its own process; other options pass through)")
    parser.add_argument("--caches", action="store_true",
                        help="one line each for core EasyCache and LazyCache (default settings) on a 50-step video: "
                             "fraction of UNet passes skipped, wall time and relative L2 of the latent vs uncached")
    parser.add_argument("--video-steps", type=int, default=0,
                        help="also sample a whole video (this many DDIM steps with CFG, then VideoCrafter VAE Decode) and "
                             "print its wall time and the pipeline's peak memory above the loaded model")
    parser.add_argument("--vram-cap-gb", type=float, default=0,
                        help="with --gpu: the run as on a card of this many GB: ComfyUI is told (--reserve-vram of the "
                             "rest) and the CUDA allocator capped (set_per_process_memory_fraction)")
    parser.add_argument("--compile", action="store_true",
                        help="also run the MODEL through core TorchCompileModel (inductor) and print its compile time, "
                             "seconds per CFG step compiled vs eager (same harness, same steps), the speed-up and the "
                             "relative L2 of the compiled latent vs the eager one")
    parser.add_argument("--original", default=None,
                        help="with --full-size: a folder holding the original VideoCrafter code (a clone of "
                             "AILab-CVC/VideoCrafter); its UNet is timed on the same random weights beside the pack's")
    parser.add_argument("--original-mode", default="fp32", choices=ORIGINAL_MODES,
                        help="how the original's UNet runs: fp32 (as its inference script), fp16_autocast (fp32 weights "
                             "under fp16 autocast; bf16 on a CPU), fp16_xformers (that, with its xformers path for the "
                             "spatial attention; torch SDPA stands in for xformers where it is not installed)")
    parser.add_argument("--original-only", action="store_true",
                        help="with --original: time only the original's UNet (prints SKIPPED when its code is absent)")
    parser.add_argument("--run-original", default=None, help=argparse.SUPPRESS)  # the child process of --original
    parser.add_argument("--profile-blocks", action="store_true",
                        help="torch.profiler over one released-width block of each type (spatial transformer, temporal "
                             "transformer, ResBlock with temporal conv) on the CFG batch, CPU, --weight-dtype (bf16 default)")
    parser.add_argument("--memory-model", action="store_true",
                        help="the UNet memory model's estimate beside the activation peak counted at the released widths "
                             "(meta device, no weights: seconds), batch 1 and 2, 16 and 64 frames, fp32 and bf16")
    parser.add_argument("--toon-decode", action="store_true",
                        help="ToonCrafter's dual-reference decode beside the plain SD decode of the same 16 frames: "
                             "seconds and peak RSS with the tiny weights (CPU), and the activation peak of the released "
                             "widths in fp16 (counted on the meta device, attention as a fused kernel)")
    args = parser.parse_args()
    if args.run_original:
        args.original = args.run_original
        return run_original(args)
    if args.original_only:
        return original_benchmark(args)
    if args.memory_model:
        return memory_model_table(args)
    if args.profile_blocks:
        return profile_blocks(args)
    if args.toon_decode:
        return toon_decode_benchmark(args)
    if args.turbo and args.full_size and not args.turbo_unet:
        parser.error("--turbo with --full-size needs --turbo-unet (a released T2V-Turbo UNet file)")
    if args.freenoise_memory:
        return compare_freenoise_memory()
    if args.weight_dtypes:
        return compare_weight_dtypes(args.weight_dtypes.split(","))

    vram_cap = apply_vram_cap(args)
    pack = comfy_boot.boot(cpu=not args.gpu, extra_args=args.comfy_args.split())
    import torch
    import comfy.model_management as mm
    import nodes as core
    loader = comfy_boot.pack("vc_models.loader")
    ckpt = comfy_boot.pack("vc_models.checkpoint")
    if args.ckpt:
        bundle = loader.load_videocrafter(args.ckpt, args.weight_dtype)
        label = os.path.basename(args.ckpt)
        if bundle.info.entry.id not in BENCH_MODELS:
            raise SystemExit(f"{args.ckpt} is {bundle.info.entry.description}; the benchmark samples "
                             f"{', '.join(sorted(BENCH_MODELS))}")
        args.model = bundle.info.entry.id
    else:
        built = BENCH_MODELS[args.model]
        sd = full_size_state_dict(built.layout) if args.full_size else built.tiny_state_dict()
        bundle = loader.build_bundle(sd, ckpt.inspect_checkpoint(sd, f"{args.model}.safetensors"),
                                     loader.WEIGHT_DTYPES[args.weight_dtype])
        del sd  # the loaded model holds its own copy: this one would hide the sampling peak in the RSS
        release_freed_memory()
        label = BENCH_MODELS[args.model].label + (" full size, random weights" if args.full_size else " tiny weights")
        if bundle.info.entry.id != args.model:
            raise SystemExit(f"the weights built for {args.model} were detected as {bundle.info.entry.id}")
    bench, entry = BENCH_MODELS[args.model], bundle.info.entry
    (pos,) = core.CLIPTextEncode().encode(bundle.clip, "a corgi running on the beach")
    (neg,) = core.CLIPTextEncode().encode(bundle.clip, "")
    cfg, scheduler = entry.defaults.cfg, entry.defaults.scheduler
    if bench.image_mode:
        image = torch.linspace(0, 1, args.width).view(1, 1, -1, 1).expand(1, args.height, args.width, 3).contiguous()
        end_image = image.flip(2) if bench.key_frames == 2 else None
        pos, neg, latent = pack.vc_nodes.NODE_CLASSES["DynamiCrafterConditioning"].execute(
            pos, neg, bundle.vae, bundle.clip_vision, bundle.projector, image, bench.image_mode, args.width,
            args.height, args.frames, 1, entry.defaults.fps, end_image=end_image)
    else:
        (latent,) = pack.vc_nodes.NODE_CLASSES["EmptyVideoCrafterLatent"].execute(args.width, args.height, args.frames, 1)
    if args.no_cfg:
        cfg = 1.0
    sampler = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"]

    model = bundle.model
    if args.freenoise:
        (model,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterFreeNoise"].execute(model, 16, 4, True)
        label += " + FreeNoise 16/4"

    import comfy.utils
    import comfy.patcher_extension
    stamps = []  # (wall, process CPU seconds) at each finished step
    comfy.utils.set_progress_bar_global_hook(
        lambda value, total, preview=None, node_id=None: stamps.append((time.perf_counter(), time.process_time())))
    unet_batches = []  # the batch of every UNet call: CFG batched by core is one call of batch 2 per step

    def count_calls(executor, x, *a, **k):
        unet_batches.append(x.shape[0])
        return executor(x, *a, **k)
    sampled_model = model
    model = model.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "benchmark_calls", count_calls)
    mm.load_models_gpu([model])
    baseline = reset_peak_memory(torch)
    start = time.perf_counter()
    sampler.execute(model, pos, neg, latent, seed=0, steps=args.steps + 1, cfg=cfg,
                   sampler_name="videocrafter_ddim", scheduler=scheduler, eta=1.0, denoise=1.0)
    total = time.perf_counter() - start
    sampling_peak = peak_memory(torch) - baseline
    timed = len(stamps) - 1
    per_step = (stamps[-1][0] - stamps[0][0]) / timed if timed else total
    cpu_per_step = (stamps[-1][1] - stamps[0][1]) / timed if timed else float("nan")
    shape = list(latent["samples"].shape)
    call_batch = max(unet_batches)
    estimate = bundle.model.model.memory_required([call_batch] + shape[1:])
    rss_gb = comfy_boot.pack("vc_models.process_memory").peak_rss_bytes() / 1024 ** 3
    gpu = f", peak GPU memory {torch.cuda.max_memory_allocated() / 1024 ** 3:.2f} GB" if torch.cuda.is_available() else ""
    load = load_average()
    print(f"{label} [{args.comfy_args}]: {args.width}x{args.height}x{args.frames}, batch 1 {'without' if args.no_cfg else 'with'} CFG, device {mm.get_torch_device()}, "
          f"weights {bundle.model.model.get_dtype()} (compute {bundle.model.model.manual_cast_dtype or bundle.model.model.get_dtype()}), "
          f"{torch.get_num_threads()} threads, load average {load}: sampled {len(stamps)} steps ({timed} timed after the "
          f"first), UNet calls of batch {unet_batches}: {per_step:.3f} s per CFG step ({cpu_per_step:.1f} CPU s), "
          f"peak RSS {rss_gb:.2f} GB{gpu}, sampling peak {sampling_peak / 1024 ** 3:.2f} GiB above the loaded model "
          f"({sampling_peak / args.frames / 1024 ** 2:.1f} MiB per frame); memory model for the batch-{call_batch} call "
          f"{estimate / 1024 ** 3:.2f} GiB ({(estimate / max(sampling_peak, 1) - 1) * 100:+.0f}% off the measured peak)")
    print("RESULT " + json.dumps({"frames": args.frames, "width": args.width, "height": args.height,
                                  "device": str(mm.get_torch_device()), "sampling_peak_bytes": sampling_peak,
                                  "seconds_per_step": per_step, "cpu_seconds_per_step": cpu_per_step,
                                  "estimate_bytes": estimate, "call_batch": call_batch,
                                  "unet_calls_per_step": len(unet_batches) / max(len(stamps), 1),
                                  "weights": args.weight_dtype, "vram_cap_gb": vram_cap}))
    if args.video_steps:
        video_benchmark(args, pack, bundle, sampled_model, pos, neg, latent, cfg, scheduler, label, vram_cap)
    if args.full_size and args.model == "vc2_t2v_512":  # the original's UNet is timed on VideoCrafter2 only
        original_benchmark(args)
    if args.turbo:
        turbo_benchmark(args, pack, bundle, pos, neg, latent, per_step, label)
    if args.caches:
        cache_benchmark(args, pack, model, pos, neg, latent, cfg, scheduler, label)
    if args.compile:
        compile_benchmark(args, pack, sampled_model, pos, neg, latent, cfg, scheduler, label)


ORIGINAL_UNET = os.path.join("lvdm", "modules", "networks", "openaimodel3d.py")
ORIGINAL_MODES = ("fp32", "fp16_autocast", "fp16_xformers")


def load_average():
    """The 1/5/15-minute load averages (how busy the machine was: shared CPUs inflate wall times); Windows has none."""
    return ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def original_benchmark(args):
    """The original VideoCrafter2 UNet (its public code in the folder --original names) on the same random weights
    and latent size, in its own process so the peaks do not mix; a message when the folder is not there."""
    if not args.original or not os.path.isfile(os.path.join(args.original, ORIGINAL_UNET)):
        print(f"original: skipped (no {ORIGINAL_UNET} under --original {args.original!r}: clone "
              "https://github.com/AILab-CVC/VideoCrafter into a folder and name it)")
        print(f"STEP-SKIPPED the original's code is not here (--original {args.original!r})")
        return 0
    run = subprocess.run([sys.executable, os.path.abspath(__file__), "--run-original", args.original,
                          "--width", str(args.width), "--height", str(args.height), "--frames", str(args.frames),
                          "--steps", str(args.steps), "--weight-dtype", args.weight_dtype,
                          "--original-mode", args.original_mode] + (["--gpu"] if args.gpu else []) +
                         (["--full-size"] if args.full_size else []), text=True)
    if run.returncode:
        print(f"original: failed (exit {run.returncode}, see above)")
    return run.returncode


def install_sdpa_as_xformers():
    """Where xformers is not installed, a stand-in `xformers.ops.memory_efficient_attention` computing the same
    thing with torch SDPA, so the original takes its xformers path (its spatial attentions; [B*heads, N, d] inputs)."""
    import types
    import torch
    try:
        import xformers.ops  # noqa: F401
        return "xformers"
    except ImportError:
        pass

    def memory_efficient_attention(q, k, v, attn_bias=None, op=None):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
    ops = types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = memory_efficient_attention
    package = types.ModuleType("xformers")
    package.ops = ops
    sys.modules.update({"xformers": package, "xformers.ops": ops})
    return "torch SDPA standing in for xformers"


def run_original(args):
    """One DDIM CFG step as the original's sampler makes it (cond and uncond as two batch-1 UNet calls), timed
    over --steps steps after a warm-up one, as --original-mode says (fp32 / fp16 autocast / + its xformers path;
    fp32: weights in --weight-dtype, default fp32, autocast off); on the GPU with --gpu."""
    import contextlib
    import importlib
    import torch
    import yaml
    attention = "its own attention (xformers absent)" if args.original_mode != "fp16_xformers" else install_sdpa_as_xformers()
    try:
        import cv2  # noqa: F401  (the original's utils import it for image files; the UNet never calls it)
    except ImportError:
        import types
        sys.modules["cv2"] = types.ModuleType("cv2")
    sys.path.insert(0, os.path.abspath(args.original))
    with open(os.path.join(args.original, "configs", "inference_t2v_512_v2.0.yaml")) as f:
        unet_config = yaml.safe_load(f)["model"]["params"]["unet_config"]
    module, name = unet_config["target"].rsplit(".", 1)
    params = dict(unet_config["params"], use_checkpoint=False)
    device = torch.device("cuda" if args.gpu and torch.cuda.is_available() else "cpu")
    dtype = {"default": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.weight_dtype]
    if args.original_mode != "fp32":
        dtype = torch.float32  # autocast casts per op from fp32 weights, as the original's fp16 inference does
    autocast = contextlib.nullcontext() if args.original_mode == "fp32" else \
        torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)
    if not args.full_size:  # a tiny UNet of the same code (the GPU check's CPU dry run): its own random init
        params.update(model_channels=64, num_res_blocks=1, channel_mult=[1, 1, 2, 2])
    unet = getattr(importlib.import_module(module), name)(**params).to(dtype).eval()
    if args.full_size:
        sd = full_size_state_dict("t2v_512_v2.0")
        prefix = "model.diffusion_model."
        unet.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, strict=True)
        del sd
    release_freed_memory()
    unet.to(device)
    h, w = args.height // 8, args.width // 8
    x = torch.randn(1, 4, args.frames, h, w, dtype=dtype, device=device)
    contexts = [torch.randn(1, 77, 1024, dtype=dtype, device=device) for _ in range(2)]
    t = torch.full((1,), 999, dtype=torch.long, device=device)
    fps = torch.full((1,), 8, dtype=torch.long, device=device)
    baseline = reset_peak_memory(torch)
    stamps = []
    with torch.no_grad(), autocast:
        for _ in range(args.steps + 1):
            for context in contexts:
                unet(x, t, context=context, fps=fps)
            if device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append((time.perf_counter(), time.process_time()))
    peak = peak_memory(torch) - baseline
    per_step = (stamps[-1][0] - stamps[0][0]) / args.steps
    cpu = (stamps[-1][1] - stamps[0][1]) / args.steps
    print(f"original VideoCrafter2 UNet ({'released size' if args.full_size else 'tiny widths'}), random weights {dtype}, {args.original_mode} ({attention}) on {device}: "
          f"{args.width}x{args.height}x{args.frames}, {torch.get_num_threads()} threads, load average {load_average()}: "
          f"{per_step:.3f} s per CFG step ({cpu:.1f} CPU s, two batch-1 calls), peak {peak / 1024 ** 3:.2f} GiB above the "
          f"loaded model")
    print("RESULT " + json.dumps({"original_mode": args.original_mode, "attention": attention, "device": str(device),
                                  "seconds_per_step": per_step, "peak_bytes": peak, "frames": args.frames,
                                  "width": args.width, "height": args.height}))


def seconds_per_step(sampler, model, pos, neg, latent, steps, cfg, sampler_name, scheduler):
    """Mean seconds between progress-bar updates over `steps` measured steps, after one warm-up step."""
    import comfy.utils
    stamps = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None: stamps.append(time.perf_counter()))
    sampler.execute(model, pos, neg, latent, seed=0, steps=steps + 1, cfg=cfg, sampler_name=sampler_name,
                   scheduler=scheduler, eta=0.0, denoise=1.0)
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def turbo_benchmark(args, pack, bundle, pos, neg, latent, cfg_step, label):
    """Seconds per video from per-step timings: VC2 = 50 CFG steps (two UNet passes, batched), turbo = one pass
    per LCM step (cfg 1 skips the negative). Full videos are estimated, not run: step cost does not depend on t."""
    import tempfile
    import tiny_turbo
    turbo = comfy_boot.pack("vc_models.turbo")
    with tempfile.TemporaryDirectory() as folder:
        path = args.turbo_unet or tiny_turbo.write_tiny_turbo_files(folder)["mg"][0]
        model = turbo.load_turbo_model(bundle.model, path, comfy_boot.pack("vc_models.loader").WEIGHT_DTYPES[args.weight_dtype])
    sampler = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"]
    # a 3-step turbo schedule with one warm-up step: 2 measured single passes
    turbo_step = seconds_per_step(sampler, model, pos, neg, latent, 2, 1.0, "videocrafter_lcm", "videocrafter_turbo")
    vc2 = 50 * cfg_step
    videos = ", ".join(f"turbo {n} steps {n * turbo_step:.1f} s ({vc2 / (n * turbo_step):.1f}x)" for n in (4, 8, 16))
    print(f"{label} + T2V-Turbo-v2 UNet: {args.width}x{args.height}x{args.frames}, seconds per video (from per-step "
          f"timings: {cfg_step:.3f} s per CFG step, {turbo_step:.3f} s per turbo pass): VideoCrafter2 50 steps + CFG "
          f"{vc2:.1f} s; {videos}")


def cache_benchmark(args, pack, model, pos, neg, latent, cfg, scheduler, label, steps=50):
    """Core EasyCache / LazyCache at their defaults against the same 50-step video uncached. UNet passes are
    counted by a DIFFUSION_MODEL wrapper inside the caches' own, so a skipped pass is not counted."""
    import comfy.patcher_extension
    from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode
    sampler = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"]

    def run(patched):
        passes = []

        def count(executor, *a, **k):
            passes.append(1)
            return executor(*a, **k)
        counted = patched.clone()
        counted.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "benchmark_count", count)
        start = time.perf_counter()
        (out,) = sampler.execute(counted, pos, neg, latent, seed=0, steps=steps, cfg=cfg, sampler_name="videocrafter_ddim",
                                scheduler=scheduler, eta=1.0, denoise=1.0)
        return out["samples"], len(passes), time.perf_counter() - start

    reference, reference_passes, reference_time = run(model)
    for node in (EasyCacheNode, LazyCacheNode):
        result = node.execute(model, reuse_threshold=0.2, start_percent=0.15, end_percent=0.95, verbose=False)
        samples, passes, seconds = run(result.result[0] if hasattr(result, "result") else result[0])
        error = ((samples - reference).norm() / reference.norm()).item()
        print(f"{node.__name__[:-4]} on {label}: {args.width}x{args.height}x{args.frames}, {steps} steps with CFG: skipped "
              f"{1 - passes / reference_passes:.0%} of UNet passes ({passes}/{reference_passes} run), {seconds:.1f} s vs "
              f"{reference_time:.1f} s uncached ({reference_time / seconds:.2f}x), relative L2 vs uncached {error:.3f}")


def apply_vram_cap(args):
    """--vram-cap-gb on a GPU: the GB the run is capped to (ComfyUI reserves the rest of the card, the allocator
    refuses beyond the cap), or None (no cap asked, or no CUDA GPU: the option is then reported as not applied)."""
    if not args.vram_cap_gb:
        return None
    import torch
    if not (args.gpu and torch.cuda.is_available()):
        print(f"--vram-cap-gb {args.vram_cap_gb}: not applied (no CUDA GPU in use)")
        return None
    total = torch.cuda.get_device_properties(0).total_memory
    cap = args.vram_cap_gb * 1024 ** 3
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
    args.comfy_args += f" --reserve-vram {max(0.0, (total - cap) / 1024 ** 3):.3f}"
    return args.vram_cap_gb


def video_benchmark(args, pack, bundle, model, pos, neg, latent, cfg, scheduler, label, vram_cap):
    """A whole video as a user makes one: --video-steps DDIM steps with CFG, then VideoCrafter VAE Decode; wall
    time of each part (GPU synchronised) and the peak memory of the whole pipeline above the loaded model."""
    import torch
    import comfy.model_management as mm

    def synchronized():
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()
    sampler = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"]
    baseline = reset_peak_memory(torch)
    start = synchronized()
    (samples,) = sampler.execute(model, pos, neg, latent, seed=0, steps=args.video_steps, cfg=cfg,
                                sampler_name="videocrafter_ddim", scheduler=scheduler, eta=1.0, denoise=1.0)
    sampled = synchronized()
    (images,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterVAEDecode"].execute(samples, bundle.vae)
    done = synchronized()
    peak = peak_memory(torch) - baseline
    cap = f", capped to {vram_cap:g} GB" if vram_cap else ""
    print(f"whole video on {label}: {args.width}x{args.height}x{args.frames}, {args.video_steps} steps with CFG + decode on "
          f"{mm.get_torch_device()}{cap}: {done - start:.1f} s ({sampled - start:.1f} s sampling, {done - sampled:.1f} s "
          f"decoding), peak {peak / 1024 ** 3:.2f} GiB above the loaded model, {tuple(images.shape)} frames")
    print("RESULT " + json.dumps({"video_seconds": done - start, "sampling_seconds": sampled - start,
                                  "decode_seconds": done - sampled, "video_peak_bytes": peak, "video_steps": args.video_steps,
                                  "frames": args.frames, "width": args.width, "height": args.height,
                                  "vram_cap_gb": vram_cap, "finite": bool(torch.isfinite(images).all())}))


def compile_benchmark(args, pack, model, pos, neg, latent, cfg, scheduler, label):
    """Core TorchCompileModel (inductor) on the MODEL: the first sampled step compiles (timed apart), then seconds per
    CFG step compiled against eager in the same harness, and how far the compiled latent is from the eager one.
    Attention that reads the free memory inside each call (core's sub-quadratic, the CPU default) breaks the graph
    at every attention: keep --comfy-args --use-pytorch-cross-attention (the default here) to compile one graph."""
    import torch
    from comfy_extras.nodes_torch_compile import TorchCompileModel
    sampler = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"]
    result = TorchCompileModel.execute(model, "inductor")
    (compiled,) = result.result if hasattr(result, "result") else result

    def final_latent(patched, steps):
        (out,) = sampler.execute(patched, pos, neg, latent, seed=0, steps=steps, cfg=cfg, sampler_name="videocrafter_ddim",
                                scheduler=scheduler, eta=0.0, denoise=1.0)
        return out["samples"]
    start = time.perf_counter()
    final_latent(compiled, 1)  # compiles
    compile_seconds = time.perf_counter() - start
    eager = seconds_per_step(sampler, model, pos, neg, latent, args.steps, cfg, "videocrafter_ddim", scheduler)
    fast = seconds_per_step(sampler, compiled, pos, neg, latent, args.steps, cfg, "videocrafter_ddim", scheduler)
    reference, ours = final_latent(model, 2), final_latent(compiled, 2)
    error = ((ours - reference).float().norm() / reference.float().norm()).item()
    print(f"TorchCompileModel (inductor) on {label} [{args.comfy_args}]: {args.width}x{args.height}x{args.frames}, "
          f"weights {model.model.get_dtype()}, {torch.get_num_threads()} threads, load average {load_average()}: first "
          f"step (compiling) {compile_seconds:.1f} s; {fast:.3f} s per CFG step compiled vs {eager:.3f} s eager: "
          f"speed-up {eager / fast:.2f}x; relative L2 of the 2-step latent vs eager {error:.2e}")
    print("RESULT " + json.dumps({"compile_seconds": compile_seconds, "seconds_per_step_compiled": fast,
                                  "seconds_per_step_eager": eager, "speedup": eager / fast, "relative_l2": error}))


def release_freed_memory():
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise), so the RSS baseline
    of a measurement is what is live."""
    import ctypes
    import gc
    gc.collect()
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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


def compare_weight_dtypes(weight_dtypes):
    """One benchmark process per weight dtype; their lines as they come, then one summary line."""
    passthrough = []
    skip = False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg in ("--weight-dtypes", "--weight-dtype"):
            skip = True
        elif not arg.startswith(("--weight-dtypes=", "--weight-dtype=")):
            passthrough.append(arg)
    results = {}
    for dtype in weight_dtypes:
        run = subprocess.run([sys.executable, os.path.abspath(__file__), *passthrough, "--weight-dtype", dtype],
                             capture_output=True, text=True)
        lines = run.stdout.splitlines()
        print("\n".join(l for l in lines if not l.startswith("RESULT ")), flush=True)
        if run.returncode:
            print(f"{dtype}: failed (exit {run.returncode}): {run.stderr[-2000:]}")
            continue
        results[dtype] = json.loads(next(l for l in lines if l.startswith("RESULT "))[len("RESULT "):])
    print("weights: " + "; ".join(f"{d} {r['seconds_per_step']:.2f} s per CFG step, sampling peak "
                                  f"{r['sampling_peak_bytes'] / 1024 ** 3:.2f} GiB (memory model "
                                  f"{r['estimate_bytes'] / 1024 ** 3:.2f} GiB)" for d, r in results.items()))


def compare_freenoise_memory():
    """Each case in its own process (peaks do not mix): 16 frames plain, 32 and 64 frames with FreeNoise (window
    16, stride 4); with --full-size at the released size."""
    passthrough = [a for a in sys.argv[1:] if a != "--freenoise-memory"]
    results = {}
    cases = (("16 frames plain", ["--frames", "16"]), ("32 frames FreeNoise", ["--frames", "32", "--freenoise"]),
             ("64 frames FreeNoise", ["--frames", "64", "--freenoise"]))
    for name, extra in cases:
        run = subprocess.run([sys.executable, os.path.abspath(__file__), *passthrough, "--steps", "1", *extra],
                             capture_output=True, text=True, check=True)
        line = next(l for l in run.stdout.splitlines() if l.startswith("RESULT "))
        results[name] = json.loads(line[len("RESULT "):])
    per_frame = {k: v["sampling_peak_bytes"] / v["frames"] for k, v in results.items()}
    plain = per_frame["16 frames plain"]
    print("FreeNoise memory, sampling peak per frame generated (and s per CFG step): "
          + "; ".join(f"{name} {per_frame[name] / 1024 ** 2:.1f} MB (x{per_frame[name] / plain:.2f}, "
                      f"{r['seconds_per_step']:.2f} s)" for name, r in results.items()) + " (target: x <= 1.5)")


# the released ToonCrafter / SD VAE ddconfig (the tiny models shrink ch to 32 and the res blocks to 1)
RELEASED_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def activation_peak(forward, grad=False):
    """Peak bytes of the tensors `forward` (on meta tensors) keeps alive at once: every op output counted while a
    reference to it lives (views and in-place results are not new memory). grad=True: with autograd, so a
    `forward` that also runs the backward pass counts what the graph saves and the gradients it makes."""
    import weakref
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        live = peak = 0

        def free(self, n):
            self.live -= n

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not any(r.alias_info is not None for r in func._schema.returns):
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        n = t.numel() * t.element_size()
                        self.live += n
                        self.peak = max(self.peak, self.live)
                        weakref.finalize(t, self.free, n)
            return out

    counter = LiveBytes()
    with torch.set_grad_enabled(grad), counter:
        forward()
    return counter.peak


class BenchModel:
    """A model the benchmark samples: its released layout (../shared/reference/keys), its tiny weights for the CPU,
    and how its shipped graph conditions it (a text prompt alone, or DynamiCrafter Conditioning in `image_mode`,
    two key frames for interpolation)."""

    def __init__(self, label, layout, tiny, image_mode=None, key_frames=1):
        self.label, self.layout, self.tiny, self.image_mode, self.key_frames = label, layout, tiny, image_mode, key_frames

    def tiny_state_dict(self):
        import safetensors.torch
        import smoke_model  # scripts/, beside this one
        if self.layout == "tooncrafter_512":  # the reference ships its decoder as a delta over tiny_dc_512
            return smoke_model.tiny_toon_state_dict(comfy_boot.GOLDEN)
        return safetensors.torch.load_file(os.path.join(comfy_boot.GOLDEN, self.tiny))


# keyed by the registry's model ids; cfg, scheduler and fps are the registry's defaults for that id
BENCH_MODELS = {
    "vc2_t2v_512": BenchModel("VC2 T2V", "t2v_512_v2.0", "tiny_t2v_v2.safetensors"),
    "vc1_t2v_1024": BenchModel("VC1 T2V 1024", "t2v_1024_v1.0", "tiny_t2v_v1.safetensors"),
    "dc_512": BenchModel("DynamiCrafter 512", "dynamicrafter_512_v1.0", "tiny_dc_512.safetensors", image_mode="i2v"),
    "toon_512": BenchModel("ToonCrafter 512", "tooncrafter_512", None, image_mode="interpolate", key_frames=2),
}


def released_unet_config(layout="t2v_512_v2.0"):
    """The UNet configuration of a released layout, read from its key shapes (../shared/reference/keys) alone."""
    import torch
    ckpt = comfy_boot.pack("vc_models.checkpoint")
    prefix = "model.diffusion_model."
    sd = {}
    with open(os.path.join(comfy_boot.KEYS, f"{layout}.keys.tsv")) as f:
        for line in f:
            name, shape, _ = line.rstrip("\n").split("\t")
            if name.startswith(prefix):
                sd[name[len(prefix):]] = torch.empty([int(d) for d in shape.strip("[]").split(",") if d.strip()], device="meta")
    return ckpt.infer_unet_config(sd)


def unet_inputs(config, input_shape, device="meta", dtype=None):
    """(x, timesteps, context, extra kwargs) of one UNet call on `input_shape` [B, C, T, h, w] (C: the noisy latent's)."""
    import torch
    b, _, t, h, w = input_shape
    kw = dict(device=device, dtype=dtype)
    extra = {}
    if config.fps_cond:
        extra["fps"] = torch.full((b,), 8.0, **kw)
    if config.image_cross_attention:
        tokens = config.image_tokens_per_frame * t if config.image_tokens_per_frame else 16
        extra["image_context"] = torch.zeros(b, tokens, config.image_context_dim, **kw)
    return (torch.zeros(b, config.in_channels, t, h, w, **kw), torch.full((b,), 500.0, **kw),
            torch.zeros(b, 77, config.context_dim, **kw), extra)


def counted_unet_peak(config, input_shape, dtype):
    """Activation peak (bytes) of one released-width UNet call counted on the meta device, attention as a fused
    kernel (its output only): what the memory model is derived from and checked against."""
    import torch
    from comfy.ldm.modules import attention as comfy_attention
    unet = comfy_boot.pack("vc_models.unet")
    fused, comfy_attention.optimized_attention = comfy_attention.optimized_attention, \
        lambda q, k, v, heads, *a, **kw: torch.empty_like(q)
    try:
        with torch.device("meta"):
            net = unet.VideoCrafterUNet(config, dtype=dtype)
        x, timesteps, context, extra = unet_inputs(config, input_shape, dtype=dtype)
        return activation_peak(lambda: net(x, timesteps, context, transformer_options={}, **extra))
    finally:
        comfy_attention.optimized_attention = fused


def memory_model_table(args):
    """The memory model's estimate beside the counted activation peak of one UNet call at the released widths, for
    each released UNet layout, batch 1 and 2 (CFG), 16 and 64 frames, fp32 and bf16, fused attention."""
    import torch
    comfy_boot.boot(cpu=True, extra_args=["--use-pytorch-cross-attention"])
    memory_model = comfy_boot.pack("vc_models.memory_model")
    h, w = args.height // 8, args.width // 8
    for layout in ("t2v_512_v2.0", "t2v_512_v1.0", "i2v_512_v1.0", "dynamicrafter_512_v1.0"):
        config = released_unet_config(layout)
        for dtype in (torch.float32, torch.bfloat16):
            cells = []
            for frames in (16, 64):
                for batch in (1, 2):
                    shape = (batch, 4, frames, h, w)
                    counted = counted_unet_peak(config, shape, dtype)
                    estimate = memory_model.unet_activation_bytes(config, shape, dtype)
                    cells.append(f"{frames}f b{batch} {estimate / 2 ** 30:.2f}/{counted / 2 ** 30:.2f} GiB "
                                 f"({estimate / counted - 1:+.0%})")
            print(f"{layout} {args.width}x{args.height} {str(dtype)[6:]}: estimate/counted " + "; ".join(cells), flush=True)


def profile_blocks(args):
    """torch.profiler over one block of each type at the released level-0 width (320 channels, heads of 64, context
    1024) on the CFG batch (2 x --frames frames at --width x --height), random weights in --weight-dtype (default
    bf16), CPU: the ops where the time and the allocated bytes go, per block."""
    import torch
    from torch.profiler import profile, ProfilerActivity
    comfy_boot.boot(cpu=True, extra_args=args.comfy_args.split())
    unet = comfy_boot.pack("vc_models.unet")
    dtype = {"default": torch.bfloat16, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.weight_dtype]
    channels, frames, h, w = 320, args.frames, args.height // 8, args.width // 8
    blocks = {
        "spatial transformer": unet.SpatialTransformer(channels, channels // 64, 64, 1, 1024, dtype=dtype),
        "temporal transformer": unet.TemporalTransformer(channels, channels // 64, 64, 1, dtype=dtype),
        "ResBlock + temporal conv": unet.VideoResBlock(channels, 4 * channels, channels, temporal_conv=True, dtype=dtype),
    }
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the layout the UNet itself picks when it samples on the CPU
        layout = unet.activation_format(torch.device("cpu"))
    x = torch.randn(2 * frames, channels, h, w, generator=generator).to(dtype).contiguous(memory_format=layout)
    context = torch.randn(2 * frames, 77, 1024, generator=generator).to(dtype)
    emb = torch.randn(2 * frames, 4 * channels, generator=generator).to(dtype)
    calls = {"spatial transformer": lambda b: b(x, context, transformer_options={}),
             "temporal transformer": lambda b: b(x, frames, transformer_options={}),
             "ResBlock + temporal conv": lambda b: b(x, emb, frames)}
    for name, block in blocks.items():
        block.eval()  # no dropout, as ComfyUI runs the UNet
        for p in block.parameters():
            p.data = (torch.randn(p.shape, generator=generator) * 0.02).to(dtype)
        with torch.no_grad():
            calls[name](block)  # warm-up (oneDNN primitive creation)
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                start = time.perf_counter()
                calls[name](block)
                seconds = time.perf_counter() - start
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in ops)
        top = "; ".join(f"{e.key} {e.self_cpu_time_total / total:.0%} ({e.count}x, "
                        f"{max(e.self_cpu_memory_usage, 0) / 2 ** 20:.0f} MiB)" for e in ops[:8])
        print(f"{name}, {str(dtype)[6:]}, [{2 * frames}, {channels}, {h}, {w}]: {seconds:.2f} s; self CPU time and "
              f"bytes allocated by op: {top}", flush=True)


def released_activation_peaks(frames, height, width):
    """(ToonCrafter, plain SD) decoder activation peaks in bytes for one chunk of `frames` at the released widths,
    fp16. Attention runs as fused kernels do on a GPU (output only, no score matrix)."""
    import torch
    from comfy.ldm.modules import attention as comfy_attention
    from comfy.ldm.modules.diffusionmodules import model as sd_vae
    dualref = comfy_boot.pack("vc_models.dualref_vae")
    fused, comfy_attention.optimized_attention = comfy_attention.optimized_attention, \
        lambda q, k, v, heads, *a, **kw: torch.empty_like(q)
    try:
        with torch.device("meta"):
            toon = dualref.DualRefDecoder((2, 3), **RELEASED_VAE).half()
            plain = sd_vae.Decoder(**RELEASED_VAE).half()
        for decoder in (toon, plain):
            decoder.mid.attn_1.optimized_attention = lambda q, k, v: torch.empty_like(q)
        z = torch.empty(frames, 4, height // 8, width // 8, device="meta", dtype=torch.float16)
        channels = [RELEASED_VAE["ch"] * m for m in RELEASED_VAE["ch_mult"]] + [RELEASED_VAE["ch"]]
        sizes = [(height >> i, width >> i) for i in range(4)] + [(height, width)]
        reference = [torch.empty(1, 2, c, h, w, device="meta", dtype=torch.float16) for c, (h, w) in zip(channels, sizes)]
        return activation_peak(lambda: toon(z, reference, frames)), activation_peak(lambda: plain(z))
    finally:
        comfy_attention.optimized_attention = fused


def toon_decode_benchmark(args):
    """Two lines: the tiny ToonCrafter's decode (16-frame chunk + the 14-frame re-decode for the middle frames)
    beside the plain SD decode of the same latent, seconds and peak RSS above the loaded VAEs (CPU, fp32); and the
    activation peak per 16-frame chunk at the released widths in fp16."""
    import torch
    pack = comfy_boot.boot(cpu=True, extra_args=args.comfy_args.split())
    ckpt = comfy_boot.pack("vc_models.checkpoint")
    ckpt_file = comfy_boot.pack("vc_models.checkpoint_file")
    dualref = comfy_boot.pack("vc_models.dualref_vae")
    encoders = comfy_boot.pack("vc_models.encoders")
    import smoke_model  # scripts/, beside this one (a fixture built on the booted pack)
    sd = smoke_model.tiny_toon_state_dict(comfy_boot.GOLDEN)
    vae_sd = ckpt_file.split_components(sd)[ckpt_file.VAE_PREFIX]
    toon = dualref.DualRefVAE(vae_sd)
    plain = encoders.build_vae({k: v for k, v in vae_sd.items() if not ckpt.has_dualref_decoder({k: v})})
    frames, h, w = 16, args.height, args.width
    latent = torch.randn(1, 4, frames, h // 8, w // 8, generator=torch.Generator().manual_seed(0))
    key_frames = torch.rand(1, 2, h, w, 3, generator=torch.Generator().manual_seed(1))
    decode = pack.vc_nodes.NODE_CLASSES["VideoCrafterVAEDecode"]
    results = {}
    for name, run in (("ToonCrafter", lambda: toon.decode_video(latent, key_frames)),
                      ("plain SD (VideoCrafter VAE Decode, 8 frames per batch)",
                       lambda: decode.execute({"samples": latent}, plain, 8))):
        baseline = reset_peak_memory(torch)
        start = time.perf_counter()
        run()
        results[name] = (time.perf_counter() - start, (peak_memory(torch) - baseline) / 1024 ** 3)
    timings = "; ".join(f"{name} {s:.1f} s, peak RSS +{gb:.2f} GB" for name, (s, gb) in results.items())
    print(f"Decode of {frames} frames at {w}x{h}, tiny weights (ch 32), CPU fp32 ({torch.get_num_threads()} threads): "
          f"{timings}. ToonCrafter decodes its 16-frame chunk twice (the middle-frame paste).")
    toon_peak, plain_peak = released_activation_peaks(frames, h, w)
    print(f"Released widths (ch 128, 2 res blocks), fp16, one {frames}-frame chunk at {w}x{h}: activation peak "
          f"ToonCrafter {toon_peak / 1024 ** 3:.2f} GiB vs plain SD decoder {plain_peak / 1024 ** 3:.2f} GiB for the same "
          f"{frames} frames at once (+ the key frames' features, "
          f"{sum(2 * c * hh * ww for c, (hh, ww) in zip([128, 256, 512, 512, 128], [(h >> i, w >> i) for i in range(4)] + [(h, w)])) * 2 / 1024 ** 3:.2f} GiB)")


if __name__ == "__main__":
    main()
