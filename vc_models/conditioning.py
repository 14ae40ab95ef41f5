"""Image conditioning shared by the inference nodes and the trainer's previews.

VideoCrafter1 I2V and DynamiCrafter both cross-attend to the projected CLIP tokens of the image
and use, for the negative, the projection of an all-zero image in the model's [-1, 1] range
(mid-grey in ComfyUI's [0, 1]). DynamiCrafter also concatenates the image's VAE latent to the
noisy latent: the start frame repeated (image animation), or start and end frames with zeros
between (interpolation, loops).
"""
import torch

import comfy.utils

from .registry import DYNAMICRAFTER_TOKENS_PER_FRAME
from .encoders import image_tokens

MODES = ("i2v", "interpolate", "loop")


def projected_image_tokens(clip_vision, project, images):
    """(tokens [B, N, D], negative tokens [1, N, D]): `project` (the checkpoint's projector, any
    callable on CLIP patch tokens) applied to the images' tokens and to those of a mid-grey image."""
    images = images[..., :3]
    tokens = project(image_tokens(clip_vision, images))
    grey = torch.full_like(images[:1], 0.5)
    return tokens, project(image_tokens(clip_vision, grey))


def projector_token_count(projector):
    return projector.model.config.num_queries


def is_dynamicrafter_projector(projector):
    """DynamiCrafter's Resampler emits one group of 16 tokens per trained frame (256); VideoCrafter1 I2V's 16."""
    return projector_token_count(projector) > DYNAMICRAFTER_TOKENS_PER_FRAME


def fit_images(images, width, height):
    """IMAGE [B, H, W, C] -> [B, height, width, 3], scaled to cover and centre-cropped as core's
    image-to-video nodes do."""
    images = images[..., :3]
    if images.shape[1:3] == (height, width):
        return images
    return comfy.utils.common_upscale(images.movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)


def concat_latent(vae, start, end, mode, frames):
    """The VAE-space latent [B, 4, T, h, w] DynamiCrafter concatenates to the noise: for 'i2v' the start
    frame's latent on every frame; for 'interpolate' / 'loop' the start (and end) frame's latent on the
    first and last frame, zeros between (a loop ends on its start image)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    z_start = vae.encode(start).float()  # [B, 4, h, w], the posterior mean
    if mode == "i2v":
        return z_start.unsqueeze(2).repeat(1, 1, frames, 1, 1)
    z_end = z_start if mode == "loop" else vae.encode(end).float()
    batch = max(z_start.shape[0], z_end.shape[0])
    latent = torch.zeros((batch, z_start.shape[1], frames, *z_start.shape[2:]), dtype=z_start.dtype)
    latent[:, :, 0] = z_start
    if frames > 1:
        latent[:, :, -1] = z_end
    return latent
