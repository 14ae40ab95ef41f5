"""Image conditioning shared by the inference nodes and the trainer's previews.

VideoCrafter1 I2V and DynamiCrafter both cross-attend to the projected CLIP tokens of the image
and use, for the negative, the projection of an all-zero image in the model's [-1, 1] range
(mid-grey in ComfyUI's [0, 1]). DynamiCrafter also concatenates the image's VAE latent to the
noisy latent: its family lays the key frames out (`vc_models.families.DynamiCrafter.image_latent`).
"""
import torch

import comfy.utils

from .encoders import image_tokens
from .families import DYNAMICRAFTER_MODES

# the DynamiCrafter Conditioning node's modes, as saved graphs hold them
MODES = DYNAMICRAFTER_MODES


def projected_image_tokens(clip_vision, project, images):
    """(tokens [B, N, D], negative tokens [1, N, D]): `project` (the checkpoint's projector, any
    callable on CLIP patch tokens) applied to the images' tokens and to those of a mid-grey image."""
    images = images[..., :3]
    tokens = project(image_tokens(clip_vision, images))
    grey = torch.full_like(images[:1], 0.5)
    return tokens, project(image_tokens(clip_vision, grey))


def projector_token_count(projector):
    return projector.model.config.num_queries


def fit_images(images, width, height):
    """IMAGE [B, H, W, C] -> [B, height, width, 3], scaled to cover and centre-cropped as core's
    image-to-video nodes do."""
    images = images[..., :3]
    if images.shape[1:3] == (height, width):
        return images
    return comfy.utils.common_upscale(images.movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)
