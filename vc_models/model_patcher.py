"""Building the MODEL of a VideoCrafter UNet the way core builds one: dtypes and devices from model management,
core's patcher class, the pack's patches installed, then the weights."""
import logging

import torch

import comfy.model_management
import comfy.model_patcher

from . import core_patches, video_control
from .model_base import VideoCrafterModelConfig


# weight dtypes computed in bf16 on a CPU with bf16 instructions (see build_model_patcher)
BF16_COMPUTE_WEIGHTS = (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)


def cpu_computes_bf16(device):
    """True on a CPU whose oneDNN has native bf16 kernels (AVX512-BF16 or AMX)."""
    if torch.device(device).type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def core_model_patcher_class():
    """The ModelPatcher class core gives its own models now: ComfyUI 0.33 has `CoreModelPatcher`, which its
    main.py swaps for the dynamic-VRAM `ModelPatcherDynamic` on a GPU with comfy-aimdo; 0.3.x has only ModelPatcher."""
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def build_model_patcher(info, unet_sd, alphas_cumprod, scale_arr, weight_dtype=None, disable_dynamic=False):
    """The MODEL for a VideoCrafter UNet, built the way core loads a checkpoint (comfy.sd.load_state_dict_guess_config
    of both hosts): dtypes and devices from model management, the config's get_model, core's patcher class
    (dynamic VRAM on 0.33; the plain ModelPatcher with `disable_dynamic`, as core's loaders take it), then the
    weights, loaded straight to the GPU when model management says so."""
    config = VideoCrafterModelConfig(info, alphas_cumprod, scale_arr)
    load_device = comfy.model_management.get_torch_device()
    params = sum(v.numel() for v in unet_sd.values())
    stored = next(iter(unet_sd.values())).dtype
    unet_dtype = weight_dtype or comfy.model_management.unet_dtype(
        model_params=params, supported_dtypes=config.supported_inference_dtypes, weight_dtype=stored)
    manual_cast = comfy.model_management.unet_manual_cast(unet_dtype, load_device, config.supported_inference_dtypes)
    if unet_dtype in BF16_COMPUTE_WEIGHTS and manual_cast is not None and cpu_computes_bf16(load_device):
        # ComfyUI assumes bf16 is slow on every CPU; with AVX512-BF16/AMX oneDNN runs it about
        # twice as fast as fp32, so a user who asked for bf16 (or fp8) weights gets bf16 compute there
        # (fp8 weights are cast per layer to bf16 by comfy.ops, as core does on a GPU).
        manual_cast = None if unet_dtype == torch.bfloat16 else torch.bfloat16
    config.set_inference_dtype(unet_dtype, manual_cast)
    initial_device = comfy.model_management.unet_inital_load_device(params, unet_dtype)
    model = config.get_model(unet_sd, device=initial_device)
    patcher_class = comfy.model_patcher.ModelPatcher if disable_dynamic else core_model_patcher_class()
    patcher = patcher_class(model, load_device=load_device, offload_device=comfy.model_management.unet_offload_device())
    core_patches.install(patcher)
    video_control.install(patcher)
    dynamic = getattr(patcher, "is_dynamic", lambda: False)()  # 0.3.x patchers are never dynamic
    model.load_model_weights(unet_sd, assign=dynamic)
    logging.info("VideoCrafter: %s, UNet weights %s (compute %s)%s", info.description, unet_dtype,
                 manual_cast or unet_dtype, ", dynamic VRAM" if dynamic else "")
    if initial_device != torch.device("cpu"):
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    return patcher
