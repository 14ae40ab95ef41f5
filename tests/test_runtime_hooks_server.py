"""The runtime hooks newer ComfyUI relies on, through a real server on this host.

- Core hook conditioning: a LoRA as a hook (core Create Hook LoRA (MO) + Cond Pair Set Props) on the pack's MODEL
  samples what the same LoRA loaded on the MODEL (core LoraLoaderModelOnly) samples; the plain MODEL differs.
- The MODEL's `cached_patcher_init` rebuilds it: a deep clone as a device-selection node makes it (0.33:
  core `ModelPatcher.deepclone_multigpu`; older hosts: clone + the factory) samples the same latent, with the
  LoRA patches carried; the non-dynamic delegate hook conditioning samples on with dynamic VRAM (the factory with
  `disable_dynamic=True`: 0.33 `clone(disable_dynamic=True, force_deepcopy=True)`) samples the hooked LoRA the same.
- The memory estimate changes with the attention kind the caller names (`memory_efficient_attention`).

The deep clone and the estimate are driven by a small test-only node package given to the server through its
extra_model_paths `custom_nodes` (a CPU server has no second device for core's device-selection nodes to clone
onto, and core's samplers do not yet pass the attention kind on these hosts).
"""
import json
import os

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from server_util import GOLDEN, ComfyServer, run_prompt

MODEL_FILE = "tiny_t2v_v2.safetensors"
LORA_FILE = "tiny_t2v_v2_random_lora.safetensors"
UNET = "model.diffusion_model."
SAME = 1e-5  # relative L2 between two ways of sampling the same weights
CHANGED = 1e-3  # ... that a LoRA must move the latent by

PROBE_NODES = '''
import inspect
import json


def _fresh(model, **kwargs):
    init = model.cached_patcher_init
    fresh = init[0](*init[1], **kwargs)
    return fresh[init[2]] if len(init) > 2 else fresh


def _onto(model, fresh):
    """`model`'s patches and options on the freshly built model (what core's clone(model_override=...) does)."""
    clone = model.clone()
    clone.model = fresh.model
    for name in ("backup", "object_patches_backup", "hook_backup", "backup_buffers"):
        if hasattr(clone, name):
            setattr(clone, name, {})
    if hasattr(clone, "pinned"):
        clone.pinned = set()
    return clone


class VCProbeDeepClone:
    CATEGORY = "testing"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "mode": (["device_selection", "non_dynamic_delegate"],)}}

    def run(self, model, mode):
        if getattr(model, "cached_patcher_init", None) is None:
            raise RuntimeError("the MODEL has no cached_patcher_init")
        if mode == "device_selection":
            if hasattr(model, "deepclone_multigpu"):
                clone, path = model.deepclone_multigpu(new_load_device=model.load_device), "deepclone_multigpu"
            else:
                clone, path = _onto(model, _fresh(model)), "clone + cached_patcher_init"
        elif "disable_dynamic" in inspect.signature(model.clone).parameters:
            clone = model.clone(disable_dynamic=True, force_deepcopy=True)
            path = "clone(disable_dynamic=True, force_deepcopy=True)"
        else:
            clone, path = _onto(model, _fresh(model, disable_dynamic=True)), "clone + cached_patcher_init(disable_dynamic)"
        report = {"path": path, "new_model": clone.model is not model.model, "patcher": type(clone).__name__,
                  "carries_init": getattr(clone, "cached_patcher_init", None) is not None,
                  "patches": len(clone.patches)}
        return {"ui": {"text": [json.dumps(report)]}, "result": (clone,)}


class VCProbeMemoryEstimate:
    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "frames": ("INT", {"default": 16}),
                             "height": ("INT", {"default": 40}), "width": ("INT", {"default": 64})}}

    def run(self, model, frames, height, width):
        import comfy.ldm.modules.attention as attention
        shape = [2, 4, frames, height, width]
        estimates = {str(kind): model.model.memory_required(shape, memory_efficient_attention=kind)
                     for kind in (None, True, False)}
        estimates["pytorch_function"] = model.model.memory_required(
            shape, memory_efficient_attention=attention.attention_pytorch)
        report = {"host_attention": attention.optimized_attention.__name__, "estimates": estimates}
        return {"ui": {"text": [json.dumps(report)]}}


NODE_CLASS_MAPPINGS = {"VCProbeDeepClone": VCProbeDeepClone, "VCProbeMemoryEstimate": VCProbeMemoryEstimate}
'''


def random_lora(path, rank=4, seed=0):
    """A generic-format LoRA (`diffusion_model.<module>.lora_up/lora_down.weight`, the keys core's LoRA loading maps
    for this UNet) on every attention projection of the tiny model, spatial and temporal."""
    generator = torch.Generator().manual_seed(seed)
    lora = {}
    with safe_open(os.path.join(GOLDEN, MODEL_FILE), "pt") as f:
        for key in f.keys():
            if key.startswith(UNET) and ".attn" in key and key.endswith(("to_q.weight", "to_k.weight", "to_v.weight")):
                out_features, in_features = f.get_slice(key).get_shape()
                module = "diffusion_model." + key[len(UNET):-len(".weight")]
                lora[module + ".lora_down.weight"] = torch.randn(rank, in_features, generator=generator) * 0.3
                lora[module + ".lora_up.weight"] = torch.randn(out_features, rank, generator=generator) * 0.3
    assert lora
    safetensors.torch.save_file(lora, path)


@pytest.fixture(scope="module")
def server(module_tmp):
    root = module_tmp("runtime_server")
    nodes_dir = root / "test_custom_nodes"
    os.makedirs(nodes_dir / "videocrafter_runtime_probe")
    (nodes_dir / "videocrafter_runtime_probe" / "__init__.py").write_text(PROBE_NODES)
    srv = ComfyServer(root, extra_folders={"loras": "loras", "custom_nodes": str(nodes_dir)})
    os.makedirs(os.path.join(srv.models_dir, "loras"))
    random_lora(os.path.join(srv.models_dir, "loras", LORA_FILE))
    srv.start()
    yield srv
    srv.stop()


def workflow(model_chain=(), hooked=False):
    """The tiny VideoCrafter2 through core CLIP Text Encode, the fps conditioning and core KSampler into SaveLatent.
    model_chain: nodes applied to the MODEL in order ("lora": LoraLoaderModelOnly; "device_selection" /
    "non_dynamic_delegate": the probe's deep clones); hooked: the LoRA as a hook on both conditionings."""
    wf = {
        "1": {"class_type": "VideoCrafterCheckpointLoader", "inputs": {"ckpt_name": MODEL_FILE, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red ball bouncing"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "VideoCrafterFPSConditioning", "inputs": {"positive": ["2", 0], "negative": ["3", 0], "fps": 8}},
        "5": {"class_type": "EmptyVideoCrafterLatent", "inputs": {"width": 128, "height": 64, "frames": 4, "batch_size": 1}},
    }
    model = ["1", 0]
    for index, step in enumerate(model_chain):
        node = f"m{index}"
        if step == "lora":
            wf[node] = {"class_type": "LoraLoaderModelOnly",
                        "inputs": {"model": model, "lora_name": LORA_FILE, "strength_model": 1.0}}
        else:
            wf[node] = {"class_type": "VCProbeDeepClone", "inputs": {"model": model, "mode": step}}
        model = [node, 0]
    positive, negative = ["4", 0], ["4", 1]
    if hooked:
        wf["h1"] = {"class_type": "CreateHookLoraModelOnly", "inputs": {"lora_name": LORA_FILE, "strength_model": 1.0}}
        wf["h2"] = {"class_type": "PairConditioningSetProperties", "inputs": {
            "positive_NEW": positive, "negative_NEW": negative, "strength": 1.0, "set_cond_area": "default",
            "hooks": ["h1", 0]}}
        positive, negative = ["h2", 0], ["h2", 1]
    wf["6"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": 11, "steps": 3, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal",
        "positive": positive, "negative": negative, "latent_image": ["5", 0], "denoise": 1.0}}
    wf["7"] = {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "runtime/latent"}}
    return wf


def sampled(server, wf):
    """(the saved latent, the probe reports of the run)."""
    entry = run_prompt(server, wf, timeout=300)
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log_tail())
    reports = [json.loads(text) for out in entry["outputs"].values() for text in out.get("text", [])]
    files = [f for out in entry["outputs"].values() for f in out.get("latents", [])]
    assert len(files) == 1, entry["outputs"]
    path = os.path.join(server.output_dir, files[0]["subfolder"], files[0]["filename"])
    return safetensors.torch.load_file(path)["latent_tensor"], reports


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture(scope="module")
def reference(server):
    """The latents sampled without and with the LoRA loaded on the MODEL."""
    return {"plain": sampled(server, workflow())[0], "lora": sampled(server, workflow(["lora"]))[0]}


def test_a_lora_hook_on_the_conditioning_samples_the_loaded_lora(server, reference):
    assert rel(reference["lora"], reference["plain"]) > CHANGED
    hooked, _ = sampled(server, workflow(hooked=True))
    assert rel(hooked, reference["lora"]) < SAME, rel(hooked, reference["lora"])


def test_a_device_selection_deep_clone_rebuilds_the_model(server, reference):
    """The deep clone owns a new model built by the MODEL's cached_patcher_init; with the LoRA patches carried it
    samples what the LoRA'd MODEL samples."""
    latent, (report,) = sampled(server, workflow(["lora", "device_selection"]))
    assert report["new_model"] and report["carries_init"] and report["patches"] > 0, report
    assert rel(latent, reference["lora"]) < SAME, (rel(latent, reference["lora"]), report)


def test_the_non_dynamic_delegate_samples_hook_conditioning(server, reference):
    """What hook conditioning samples on with dynamic VRAM (core builds it from cached_patcher_init with
    disable_dynamic=True): a plain ModelPatcher on a new model, sampling the hooked LoRA as the loaded LoRA."""
    latent, (report,) = sampled(server, workflow(["non_dynamic_delegate"], hooked=True))
    assert report["new_model"] and report["patcher"] == "ModelPatcher" and report["carries_init"], report
    assert rel(latent, reference["lora"]) < SAME, (rel(latent, reference["lora"]), report)


def test_the_memory_estimate_changes_with_the_attention_kind(server):
    wf = {"1": {"class_type": "VideoCrafterCheckpointLoader", "inputs": {"ckpt_name": MODEL_FILE, "weight_dtype": "default"}},
          "2": {"class_type": "VCProbeMemoryEstimate", "inputs": {"model": ["1", 0], "frames": 16, "height": 40, "width": 64}}}
    entry = run_prompt(server, wf)
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log_tail())
    (report,) = [json.loads(t) for out in entry["outputs"].values() for t in out.get("text", [])]
    estimates = report["estimates"]
    # fused kernels hold no score matrix: the estimate without one is the smaller, and an SDPA function is fused
    assert estimates["True"] < estimates["False"], report
    assert estimates["pytorch_function"] == estimates["True"], report
    # None: the server's own selection (--cpu: core's sub-quadratic attention, a non-fused one)
    host_is_fused = report["host_attention"] not in ("attention_sub_quad", "attention_split", "attention_basic")
    assert estimates["None"] == estimates["True" if host_is_fused else "False"], report
