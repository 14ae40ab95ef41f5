"""`load_videocrafter`: one checkpoint file -> MODEL, CLIP, VAE (and for I2V CLIP_VISION + projector)."""
import gc
import logging
import os
from dataclasses import dataclass
from typing import Optional

import torch

import comfy.model_management
import comfy.utils

from . import checkpoint as ckpt
from . import checkpoint_file as ckpt_file
from .dualref_vae import DualRefVAE
from .encoders import build_text_encoder, build_clip_vision, build_vae, ImageProjectorModel
from .model_patcher import build_model_patcher
from .model_reload import set_reload
from .projector_file import apply_projector_file

WEIGHT_DTYPES = {
    "default": None,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8_e4m3fn": torch.float8_e4m3fn,
}


@dataclass
class VideoCrafterBundle:
    info: ckpt.CheckpointInfo
    model: object
    clip: object
    vae: object
    clip_vision: Optional[object] = None
    projector: Optional[ImageProjectorModel] = None


def load_videocrafter(path, weight_dtype="default", projector_file=None):
    """Load every component of a VideoCrafter checkpoint; a bad file raises CheckpointError and
    leaves nothing loaded behind. `projector_file`: a stage-1 training result (projector and image
    key/value weights) applied on top of the checkpoint."""
    name = os.path.basename(path)
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {list(WEIGHT_DTYPES)}, got {weight_dtype!r}")
    sd = read_checkpoint(path)
    try:
        if projector_file:
            apply_projector_file(sd, projector_file)
        info = ckpt.inspect_checkpoint(sd, name)
        bundle = build_bundle(sd, info, WEIGHT_DTYPES[weight_dtype])
    except Exception:
        sd = None
        gc.collect()
        comfy.model_management.soft_empty_cache()
        raise
    set_reload(bundle.model, load_model_patcher, (path, weight_dtype, projector_file))
    return bundle


def read_checkpoint(path):
    """The checkpoint's tensors as `checkpoint_file.load_state_dict` gives them; a `.safetensors` is read through
    ComfyUI's `comfy.utils.load_torch_file`, so whatever the host's loading does applies (memory-mapped tensors;
    with dynamic VRAM on 0.33, comfy-aimdo's zero-copy file mapping, which the dynamic patcher then keeps as its
    weights). A file core cannot read is read by the pack's own reader, whose error names the file and the fix."""
    if not path.lower().endswith(".safetensors"):
        return ckpt_file.load_state_dict(path)  # .ckpt/.pt: the pack unwraps Lightning / DeepSpeed layouts itself
    try:
        sd = comfy.utils.load_torch_file(path, safe_load=True)
    except Exception:
        return ckpt_file.load_state_dict(path)
    return ckpt_file.rename_legacy_keys(dict(sd))


def load_model_patcher(path, weight_dtype="default", projector_file=None, disable_dynamic=False):
    """The MODEL of `load_videocrafter(path, weight_dtype, projector_file)` alone, built afresh (no text encoder,
    VAE or image encoder): the MODEL's `cached_patcher_init`, see model_reload.set_reload."""
    sd = read_checkpoint(path)
    if projector_file:
        apply_projector_file(sd, projector_file)
    info = ckpt.inspect_checkpoint(sd, os.path.basename(path))
    alphas_cumprod, scale_arr = ckpt_file.noise_schedule(sd)
    unet_sd = ckpt_file.split_components(sd)[ckpt_file.UNET_PREFIX]
    sd = None
    patcher = build_model_patcher(info, unet_sd, alphas_cumprod, scale_arr, WEIGHT_DTYPES[weight_dtype],
                                  disable_dynamic=disable_dynamic)
    return set_reload(patcher, load_model_patcher, (path, weight_dtype, projector_file))


def build_bundle(sd, info, weight_dtype=None):
    parts = ckpt_file.split_components(sd)
    alphas_cumprod, scale_arr = ckpt_file.noise_schedule(sd)
    model = build_model_patcher(info, parts[ckpt_file.UNET_PREFIX], alphas_cumprod, scale_arr, weight_dtype)
    clip = build_text_encoder(parts[ckpt_file.TEXT_PREFIX])
    vae = (DualRefVAE if info.entry.family.dual_reference else build_vae)(parts[ckpt_file.VAE_PREFIX])
    clip_vision = projector = None
    if info.unet.image_cross_attention:
        visual = {k[len("visual."):]: v for k, v in parts[ckpt_file.VISION_PREFIX].items() if k.startswith("visual.")}
        clip_vision = build_clip_vision(visual)
        projector = ImageProjectorModel(parts[ckpt_file.PROJECTOR_PREFIX], info.entry.family)
    logging.info("Loaded %s", info.description)
    return VideoCrafterBundle(info=info, model=model, clip=clip, vae=vae, clip_vision=clip_vision, projector=projector)
