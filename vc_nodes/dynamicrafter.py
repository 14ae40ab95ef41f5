"""DynamiCrafter Conditioning: start (and end) image -> image tokens, concat latent and fs in both conditionings."""
import torch

import comfy.model_management
import node_helpers
from comfy_api.latest import io

from ..vc_models import conditioning as image_cond
from ..vc_models.dualref_vae import KEY_FRAMES_KEY
from ..vc_models.families import ANIMATE, INTERPOLATE, LOOP
from ..vc_models.families import CONCAT_LATENT_KEY, FPS_KEY, IMAGE_TOKENS_KEY
from ..vc_models.video_size import SIZE_MULTIPLE
from .latent import validate_size
from .loader import MissingImageComponents, Projector


def _batch_to(tensor, batch_size, what):
    """One item for every video, or exactly one per video."""
    if tensor.shape[0] == batch_size:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch_size, *tensor.shape[1:])
    raise ValueError(f"{what} holds {tensor.shape[0]} images but batch_size is {batch_size}: "
                     "give one image for all videos or one per video.")


class DynamiCrafterConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DynamiCrafterConditioning",
            display_name="DynamiCrafter Conditioning",
            category="VideoCrafter/conditioning",
            description=("DynamiCrafter image animation: the image's CLIP tokens through the projector (16 per frame) "
                         "for the cross-attentions and its VAE latent beside the noise. 'i2v' animates start_image; "
                         "'interpolate' goes from start_image to end_image; 'loop' returns to start_image (drop the "
                         "last frame when saving); ToonCrafter interpolates the same way (fs 10). Sample with cfg 7.5, "
                         "eta 1, 'videocrafter_ddim' and 'videocrafter_trailing' (512/1024) or 'videocrafter_uniform' "
                         "(256)."),
            inputs=[
                io.Conditioning.Input("positive", tooltip="The prompt's conditioning (CLIP Text Encode)."),
                io.Conditioning.Input("negative", tooltip=(
                    "The negative conditioning; the original uses the empty prompt.")),
                io.Vae.Input("vae", tooltip=(
                    "The VAE from Load VideoCrafter Checkpoint (a DynamiCrafter checkpoint).")),
                io.ClipVision.Input("clip_vision", tooltip=(
                    "The image encoder from Load VideoCrafter Checkpoint (a DynamiCrafter checkpoint).")),
                Projector.Input("projector", tooltip=(
                    "The projector from Load VideoCrafter Checkpoint (a DynamiCrafter checkpoint).")),
                io.Image.Input("start_image", tooltip=(
                    "The first frame: one image for every video, or one per video of the batch. Other sizes are "
                    "scaled and centre-cropped to width x height.")),
                io.Combo.Input("mode", options=list(image_cond.MODES), default=ANIMATE, tooltip=(
                    "i2v: animate start_image. interpolate: frames from start_image to end_image (the 512 "
                    "interpolation model). loop: a video that ends where it starts (interpolation model).")),
                io.Int.Input("width", default=512, min=SIZE_MULTIPLE, max=4096, step=SIZE_MULTIPLE, tooltip=(
                    "Video width, a multiple of 64: 256 (DynamiCrafter 256), 512 (512) or 1024 (1024) as trained.")),
                io.Int.Input("height", default=320, min=SIZE_MULTIPLE, max=4096, step=SIZE_MULTIPLE, tooltip=(
                    "Video height, a multiple of 64: 256, 320 or 576 as trained.")),
                io.Int.Input("length", default=16, min=1, max=1024, tooltip=(
                    "Frames. The models are trained on 16 (one group of image tokens per frame); other lengths "
                    "make every frame attend to all image tokens, as the original does.")),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Videos generated at once."),
                io.Int.Input("fs", default=24, min=1, max=1000, tooltip=(
                    "Motion condition. 512/1024: the clip's fps it was trained on (512: 15-30, default 24; 1024: "
                    "5-15, default 10; lower = more motion). 256: the frame stride (1-6, default 3; higher = more "
                    "motion). Interpolation: 5. ToonCrafter: 10 (5-30, smaller = larger motion).")),
                io.Image.Input("end_image", optional=True, tooltip=(
                    "The last frame for mode 'interpolate' (leave unconnected otherwise).")),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip=(
                    "The prompt's conditioning with the image tokens, the image latent and fs.")),
                io.Conditioning.Output(display_name="negative", tooltip=(
                    "The negative with the same image latent and the tokens of a mid-grey (all-zero) image, as the "
                    "original.")),
                io.Latent.Output(display_name="latent", tooltip=(
                    "An empty video latent of the requested size for the sampler; for interpolate / loop it also "
                    "carries the key frames, which ToonCrafter's decoder (VideoCrafter VAE Decode) needs.")),
            ],
        )

    @classmethod
    def validate_inputs(cls, width, height, length, batch_size):
        return validate_size(cls, width, height, length, batch_size, frames_name="length")

    @classmethod
    def execute(cls, positive, negative, vae, clip_vision, projector, start_image, mode, width, height, length,
                batch_size, fs, end_image=None):
        return io.NodeOutput(*conditioning_and_latent(positive, negative, vae, clip_vision, projector, start_image, mode,
                                                      width, height, length, batch_size, fs, end_image))


def conditioning_and_latent(positive, negative, vae, clip_vision, projector, start_image, mode, width, height, length,
                            batch_size, fs, end_image=None):
    """DynamiCrafter Conditioning's (positive, negative, latent) (the key-frame node conditions its segments with it)."""
    valid = validate_size(DynamiCrafterConditioning, width, height, length, batch_size, frames_name="length")
    if valid is not True:
        raise ValueError(valid)
    for component in (clip_vision, projector):
        if isinstance(component, MissingImageComponents):
            raise ValueError(component.error("DynamiCrafter Conditioning",
                                              "a DynamiCrafter checkpoint (dynamicrafter_256/512/1024[_interp])"))
    if not projector.family.concat_latent:  # the family says which node conditions on its image
        raise ValueError(
            f"This projector makes {image_cond.projector_token_count(projector)} image tokens: it belongs to a "
            f"{projector.family.name} checkpoint, not DynamiCrafter. Load a DynamiCrafter checkpoint "
            f"(dynamicrafter_256/512/1024[_interp]), or use '{projector.family.image_node}' for it.")
    if start_image is None or start_image.ndim != 4 or start_image.shape[0] == 0:
        raise ValueError("DynamiCrafter Conditioning needs a start_image (IMAGE [B, H, W, 3]); got none.")
    if mode == ANIMATE and end_image is not None:
        raise ValueError("An end_image is connected but mode is 'i2v', which only uses start_image. Set mode to "
                         "'interpolate' (with the DynamiCrafter 512 interpolation model) or disconnect end_image.")
    if mode == INTERPOLATE and (end_image is None or end_image.shape[0] == 0):
        raise ValueError("Mode 'interpolate' needs an end_image: connect the last frame's image "
                         "(or use mode 'loop' to return to start_image).")
    if mode == LOOP and end_image is not None:
        raise ValueError("Mode 'loop' ends on start_image: disconnect end_image (or use mode 'interpolate').")

    comfy.model_management.throw_exception_if_processing_interrupted()
    start = _batch_to(image_cond.fit_images(start_image, width, height), batch_size, "start_image")
    end = None if end_image is None else _batch_to(image_cond.fit_images(end_image, width, height), batch_size, "end_image")
    # encode each distinct image once: a single image for all videos is expanded afterwards
    unique_start = start[:1] if start_image.shape[0] == 1 else start
    tokens, uncond = image_cond.projected_image_tokens(clip_vision, projector, unique_start)
    unique_end = None if end is None else (end[:1] if end_image.shape[0] == 1 else end)
    latent = projector.family.encode_image_latent(vae, unique_start, unique_end, mode, length)
    tokens = _batch_to(tokens.cpu(), batch_size, "start_image")
    latent = _batch_to(latent.cpu(), batch_size, "start_image").contiguous()
    uncond = uncond.cpu().expand(batch_size, -1, -1)
    shared = {CONCAT_LATENT_KEY: latent, FPS_KEY: fs}
    positive = node_helpers.conditioning_set_values(positive, {**shared, IMAGE_TOKENS_KEY: tokens})
    negative = node_helpers.conditioning_set_values(negative, {**shared, IMAGE_TOKENS_KEY: uncond})
    empty = torch.zeros([batch_size, 4, length, height // 8, width // 8],
                        device=comfy.model_management.intermediate_device())
    latent_out = {"samples": empty}
    if mode != ANIMATE:  # ToonCrafter's decoder looks at the key frames (VideoCrafter VAE Decode takes them from here)
        latent_out[KEY_FRAMES_KEY] = torch.stack([start, start if end is None else end], dim=1).cpu()
    return positive, negative, latent_out


NODES = [DynamiCrafterConditioning]
