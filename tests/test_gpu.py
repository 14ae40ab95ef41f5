"""On a CUDA GPU (marked `gpu`: skipped without one; scripts/gpu_check.sh runs them where a GPU is lent).

Each case runs ComfyUI on the GPU in its own process (this session's in-process ComfyUI is on the CPU):
- fp16 / bf16 weights sample the tiny VideoCrafter2 model to a finite latent close to fp32 weights;
- a no-VRAM load (ComfyUI `--novram`, the far end of lowvram: weights stay in RAM and are cast to the GPU
  layer by layer) samples the same latent as a full load;
- a real server started as a user starts it (main.py, no --cpu) samples with the pack's MODEL; on ComfyUI 0.33
  with comfy-aimdo working that MODEL is a dynamic-VRAM patcher.
"""
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import comfy_host  # noqa: E402
from server_util import ComfyServer, http_json  # noqa: E402

CKPT = "tiny_t2v_v2.safetensors"
# relative L2 of the sampled latent against fp32 weights (4 DDIM steps, CFG 7.5, 128x64x4)
HALF_TOLERANCE = {"fp16": 2e-2, "bf16": 6e-2}

SAMPLE_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, {scripts!r})
    import comfy_boot
    pack = comfy_boot.boot(cpu=False, extra_args={extra!r})
    import nodes as core
    import comfy.model_management as mm
    loader, ckpt = comfy_boot.pack("vc_models.loader"), comfy_boot.pack("vc_models.checkpoint")
    files = comfy_boot.pack("vc_models.checkpoint_file")
    dtypes = {{"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}}
    report = {{"device": str(mm.get_torch_device())}}
    for name in {dtypes!r}:
        sd = files.load_state_dict({ckpt!r})
        bundle = loader.build_bundle(sd, ckpt.inspect_checkpoint(sd, "tiny_t2v_v2.safetensors"), dtypes[name])
        (pos,) = core.CLIPTextEncode().encode(bundle.clip, "a corgi running on the beach")
        (neg,) = core.CLIPTextEncode().encode(bundle.clip, "")
        (latent,) = pack.vc_nodes.NODE_CLASSES["EmptyVideoCrafterLatent"].execute(128, 64, 4, 1)
        (out,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"].execute(
            bundle.model, pos, neg, latent, seed=7, steps=4, cfg=7.5, sampler_name="videocrafter_ddim",
            scheduler="videocrafter_uniform", eta=1.0, denoise=1.0)
        patcher = bundle.model
        torch.save(out["samples"].float().cpu(), {out!r} + "." + name + ".pt")
        report[name] = {{"weights": str(patcher.model.get_dtype()), "load_device": str(patcher.load_device),
                         "loaded_bytes": patcher.loaded_size(), "model_bytes": patcher.model_size(),
                         "patcher": type(patcher).__name__}}
        del bundle, patcher
        mm.unload_all_models()
    print("RESULT " + json.dumps(report))
""")


def sample_on_gpu(tmp_path, dtypes, extra_args=()):
    """Sampled latents (name -> tensor) and the child's report, ComfyUI on the GPU with `extra_args`."""
    import torch
    out = str(tmp_path / "samples")
    script = SAMPLE_SCRIPT.format(scripts=os.path.join(comfy_host.REPO, "scripts"), extra=list(extra_args),
                                  dtypes=list(dtypes), ckpt=os.path.join(comfy_host.GOLDEN, CKPT), out=out)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert report["device"].startswith("cuda"), report
    return {name: torch.load(f"{out}.{name}.pt", weights_only=True) for name in dtypes}, report


def rel_l2(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.gpu
def test_half_precision_sampling_is_finite_and_close_to_fp32(tmp_path):
    import torch
    samples, report = sample_on_gpu(tmp_path, ["fp32", "fp16", "bf16"])
    assert report["fp16"]["weights"] == "torch.float16" and report["bf16"]["weights"] == "torch.bfloat16", report
    for name, tolerance in HALF_TOLERANCE.items():
        assert torch.isfinite(samples[name]).all(), name
        err = rel_l2(samples[name], samples["fp32"])
        print(f"{name} vs fp32: relative L2 {err:.2e} (tolerance {tolerance})")
        assert err < tolerance, (name, err)


@pytest.mark.gpu
def test_novram_load_samples_the_same_latent(tmp_path):
    full, _ = sample_on_gpu(tmp_path / "full", ["fp16"])
    low, report = sample_on_gpu(tmp_path / "low", ["fp16"], ["--novram"])
    info = report["fp16"]
    assert info["loaded_bytes"] < info["model_bytes"], info  # weights stayed off the GPU, cast per layer
    err = rel_l2(low["fp16"], full["fp16"])
    print(f"--novram vs full load: relative L2 {err:.2e}; {info['loaded_bytes']} of {info['model_bytes']} bytes on the GPU")
    assert err < 1e-3


class GpuServer(ComfyServer):
    """The server as a user starts it: main.py on the GPU (ComfyServer adds --cpu)."""

    def command(self):
        return [arg for arg in super().command() if arg != "--cpu"]


@pytest.mark.gpu
def test_server_on_the_gpu_samples_through_core_load_path(tmp_path):
    prompt = {
        "1": {"class_type": "VideoCrafterCheckpointLoader", "inputs": {"ckpt_name": CKPT, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a corgi", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyVideoCrafterLatent", "inputs": {"width": 128, "height": 64, "frames": 4, "batch_size": 1}},
        "5": {"class_type": "VideoCrafterKSampler", "inputs": {
            "seed": 1, "steps": 4, "cfg": 7.5, "sampler_name": "videocrafter_ddim", "scheduler": "videocrafter_uniform",
            "eta": 1.0, "denoise": 1.0, "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
            "latent_image": ["4", 0]}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "gpu_check/latent"}},
    }
    with GpuServer(tmp_path) as server:
        try:
            prompt_id = http_json(server.url + "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})["prompt_id"]
        except urllib.error.HTTPError as e:
            pytest.fail(f"prompt refused: {e.read()[:2000]}")
        deadline = time.time() + 240
        while time.time() < deadline:
            entry = http_json(f"{server.url}/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                break
            time.sleep(0.5)
        log = server.log_tail(200_000)
    assert entry and entry["status"]["status_str"] == "success", (entry, log[-4000:])
    assert "VideoCrafter: " in log and "UNet weights" in log, log[-4000:]
    if "DynamicVRAM support detected and enabled" in log:  # ComfyUI 0.33 with a working comfy-aimdo
        assert "dynamic VRAM" in log, "the pack's MODEL did not get core's dynamic-VRAM patcher:\n" + log[-4000:]
    print("dynamic VRAM: " + ("on" if "DynamicVRAM support detected and enabled" in log else "off (host or comfy-aimdo)"))
