"""T2V-Turbo-v2: a VideoCrafter2 MODEL whose UNet is replaced by a released turbo UNet file.

The turbo files are bare UNet state dicts (`unet_mg.pt`, `unet_no_mg.pt`, or `.safetensors` with the same
keys). Text encoder and VAE stay those of the VideoCrafter2 checkpoint the MODEL came from; the schedule
is the plain one without `scale_arr` (the distillation ran with it off) and carries LCM's boundary
condition (`model_sampling.ConsistencyModelSampling`).
"""
import gc
import logging
import os

import torch

import comfy.model_management

from . import checkpoint as ckpt
from .noise_schedule import TIMESTEPS, scaled_linear_betas
from .loader import read_checkpoint
from .model_base import VideoCrafterModel
from .model_patcher import build_model_patcher
from .model_reload import set_reload

# UNetConfig fields that only the turbo UNet adds: everything else must equal the base model's
TURBO_ONLY_FIELDS = ("guidance_embed_dim", "motion_guidance")


def turbo_alphas_cumprod(timesteps=TIMESTEPS):
    """The turbo scheduler's schedule: VideoCrafter's scaled-linear betas, computed in float32 as the
    original scheduler does (the checkpoint's stored buffer may be rounded to fp16), no scale_arr."""
    betas = scaled_linear_betas(timesteps, torch.float32)
    return torch.cumprod(1.0 - betas, dim=0).double()


def _architecture(cfg):
    return {k: v for k, v in cfg.as_dict().items() if k not in TURBO_ONLY_FIELDS}


def check_base_model(model_patcher, unet_name):
    """The CheckpointInfo of a MODEL that can take a turbo UNet (VideoCrafter2 T2V); ValueError otherwise."""
    base = getattr(model_patcher, "model", None)
    if not isinstance(base, VideoCrafterModel):
        raise ValueError(f"'{unet_name}' is a T2V-Turbo UNet for VideoCrafter2: connect the MODEL output of 'Load "
                         "VideoCrafter Checkpoint' loading the VideoCrafter2 checkpoint (videocrafter2_t2v_512), "
                         f"not a {type(base).__name__} model.")
    return base.info


def turbo_info(base_info, turbo_cfg, unet_name):
    """The turbo model's CheckpointInfo; ValueError when the base MODEL is not the VideoCrafter2 architecture.

    Judged by the UNet configuration, so any model of the family that is not VideoCrafter2 T2V (VideoCrafter1
    without temporal convolutions, I2V/DynamiCrafter with image cross-attention or 8 input channels) is refused."""
    base_cfg = base_info.unet
    if _architecture(base_cfg) != _architecture(turbo_cfg):
        diff = [f"{k} {getattr(base_cfg, k)} (turbo UNet: {getattr(turbo_cfg, k)})"
                for k in _architecture(base_cfg) if getattr(base_cfg, k) != getattr(turbo_cfg, k)]
        raise ValueError(
            f"'{unet_name}' is a T2V-Turbo-v2 UNet, distilled from VideoCrafter2, but the MODEL comes from a "
            f"{base_info.description} checkpoint, whose UNet differs ({', '.join(diff[:4])}). Load the VideoCrafter2 "
            "checkpoint (videocrafter2_t2v_512) with 'Load VideoCrafter Checkpoint' and connect its MODEL here.")
    return ckpt.turbo_unet_info(turbo_cfg, unet_name)


def load_turbo_model(model_patcher, path, weight_dtype=None):
    """A new MODEL: the turbo UNet from `path` on the plain schedule, for the VideoCrafter2 MODEL given.

    The input MODEL is left untouched and nothing of its UNet is copied: the new model holds only the
    turbo weights (ComfyUI's model management loads whichever of the two a sampler uses)."""
    name = os.path.basename(path)
    base_info = check_base_model(model_patcher, name)
    if model_patcher.patches or model_patcher.model_options.get("transformer_options"):
        logging.warning("VideoCrafter Turbo UNet Loader: the LoRA / model patches on the input MODEL belong to the "
                        "VideoCrafter2 UNet and are not carried over; apply them after this node.")
    return build_turbo_model(base_info, path, weight_dtype)


def build_turbo_model(base_info, path, weight_dtype=None, disable_dynamic=False):
    """The turbo MODEL from `path` for a base model of `base_info` (checked by load_turbo_model); also its
    `cached_patcher_init` (model_reload.set_reload)."""
    name = os.path.basename(path)
    sd = read_checkpoint(path)
    try:
        unet_sd, turbo_cfg = ckpt.inspect_turbo_unet(sd, name)
        info = turbo_info(base_info, turbo_cfg, name)
        patcher = build_model_patcher(info, unet_sd, turbo_alphas_cumprod(), None, weight_dtype,
                                      disable_dynamic=disable_dynamic)
    except Exception:
        sd = unet_sd = None
        gc.collect()
        comfy.model_management.soft_empty_cache()
        raise
    logging.info("T2V-Turbo: %s from %s", info.description, name)
    return set_reload(patcher, build_turbo_model, (base_info, path, weight_dtype))
