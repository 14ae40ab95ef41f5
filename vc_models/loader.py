"""`load_videocrafter`: one checkpoint file -> MODEL, CLIP, VAE (and for I2V CLIP_VISION + projector)."""
import gc
import logging
import os
from dataclasses import dataclass
from typing import Optional

import torch

import comfy.model_management

from . import checkpoint as ckpt
from . import checkpoint_file as ckpt_file
from .dualref_vae import DualRefVAE
from .encoders import build_text_encoder, build_clip_vision, build_vae, ImageProjectorModel
from .model_base import build_model_patcher
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
    sd = ckpt_file.load_state_dict(path)
    try:
        if projector_file:
            apply_projector_file(sd, projector_file)
        info = ckpt.inspect_checkpoint(sd, name)
        return build_bundle(sd, info, WEIGHT_DTYPES[weight_dtype])
    except Exception:
        sd = None
        gc.collect()
        comfy.model_management.soft_empty_cache()
        raise


def build_bundle(sd, info, weight_dtype=None):
    parts = ckpt_file.split_components(sd)
    alphas_cumprod, scale_arr = ckpt_file.noise_schedule(sd)
    model = build_model_patcher(info, parts[ckpt_file.UNET_PREFIX], alphas_cumprod, scale_arr, weight_dtype)
    clip = build_text_encoder(parts[ckpt_file.TEXT_PREFIX])
    vae = (DualRefVAE if info.entry.dualref_decoder else build_vae)(parts[ckpt_file.VAE_PREFIX])
    clip_vision = projector = None
    if info.is_i2v:
        visual = {k[len("visual."):]: v for k, v in parts[ckpt_file.VISION_PREFIX].items() if k.startswith("visual.")}
        clip_vision = build_clip_vision(visual)
        projector = ImageProjectorModel(parts[ckpt_file.PROJECTOR_PREFIX])
    logging.info("Loaded %s", info.description)
    return VideoCrafterBundle(info=info, model=model, clip=clip, vae=vae, clip_vision=clip_vision, projector=projector)
