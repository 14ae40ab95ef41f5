"""VideoCrafter VAE Decode: each frame through the SD VAE, a bounded number of frames at a time; ToonCrafter's
dual-reference decoder with the key frames the latent carries (or the optional images)."""
import torch

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..vc_models.conditioning import fit_images
from ..vc_models.dualref_vae import CHUNK_FRAMES, KEY_FRAMES_KEY, DualRefVAE


def key_frames_for(latent_dict, batch, height, width, start_image=None, end_image=None):
    """[B, 2, H, W, 3] start and end frames of each video for ToonCrafter's decoder: the connected images
    (one for all videos or one per video) or those DynamiCrafter Conditioning put in the LATENT."""
    if (start_image is None) != (end_image is None):
        raise ValueError("Connect both start_image and end_image (ToonCrafter's decoder looks at both key frames), "
                         "or neither to use those the LATENT carries from DynamiCrafter Conditioning.")
    if start_image is not None:
        pair = []
        for name, images in (("start_image", start_image), ("end_image", end_image)):
            if images.shape[0] not in (1, batch):
                raise ValueError(f"{name} holds {images.shape[0]} images for {batch} videos: give one or one per video.")
            pair.append(fit_images(images, width, height).expand(batch, -1, -1, -1))
        return torch.stack(pair, dim=1)
    frames = latent_dict.get(KEY_FRAMES_KEY)
    if frames is None:
        raise ValueError(
            "This is ToonCrafter's VAE, whose decoder looks at the two key frames, but the LATENT carries none: "
            "sample from the latent of 'DynamiCrafter Conditioning' (mode interpolate or loop), or connect "
            "start_image and end_image to this node.")
    if frames.shape[0] != batch:
        raise ValueError(f"The LATENT holds {batch} videos but key frames for {frames.shape[0]}: it was batched or cut "
                         "after DynamiCrafter Conditioning; connect start_image and end_image instead.")
    return fit_images(frames.flatten(0, 1), width, height).unflatten(0, (batch, 2))


class VideoCrafterVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoCrafterVAEDecode",
            display_name="VideoCrafter VAE Decode",
            category="VideoCrafter/latent",
            description=("Decodes a video latent frame by frame (VideoCrafter has no temporal VAE). With ToonCrafter's "
                         "VAE, its dual-reference decoder: 16 frames at a time, looking at the start and end key "
                         "frames."),
            inputs=[
                io.Latent.Input("samples", tooltip="The video latent from a sampler."),
                io.Vae.Input("vae", tooltip=(
                    "The VAE from Load VideoCrafter Checkpoint (the SD VAE, or ToonCrafter's).")),
                io.Int.Input("frames_per_batch", default=8, min=1, max=1024, tooltip=(
                    "Frames decoded together: lower it if you run out of memory, raise it for speed. ToonCrafter's "
                    f"decoder always takes {CHUNK_FRAMES} (as trained).")),
                io.Image.Input("start_image", optional=True, tooltip=(
                    "ToonCrafter only: the start key frame, when the LATENT does not come from DynamiCrafter "
                    "Conditioning (which passes its key frames along).")),
                io.Image.Input("end_image", optional=True, tooltip=(
                    "ToonCrafter only: the end key frame (see start_image).")),
            ],
            outputs=[io.Image.Output(tooltip=(
                "Frames [videos x frames, H, W, 3], the frames of each video consecutive: feed Create Video / Save "
                "Animated WEBP / VideoHelperSuite's Video Combine directly."))],
        )

    @classmethod
    def execute(cls, samples, vae, frames_per_batch=8, start_image=None, end_image=None):
        return io.NodeOutput(decode_video(samples, vae, frames_per_batch, start_image, end_image))


def decode_video(samples, vae, frames_per_batch=8, start_image=None, end_image=None):
    """VideoCrafter VAE Decode's IMAGE of the LATENT `samples` (the key-frame node decodes its segments with it)."""
    latent = samples["samples"]
    if latent.ndim == 4:  # a single-frame latent from an image node
        latent = latent.unsqueeze(2)
    if latent.ndim != 5:
        raise ValueError(f"Expected a video latent [B, 4, frames, h, w]; got shape {list(latent.shape)}.")
    b, c, t, h, w = latent.shape
    pbar = comfy.utils.ProgressBar(b * t)
    if isinstance(vae, DualRefVAE):
        key_frames = key_frames_for(samples, b, h * vae.upscale_ratio, w * vae.upscale_ratio, start_image, end_image)
        return vae.decode_video(latent, key_frames, pbar.update)
    if start_image is not None or end_image is not None:
        raise ValueError("start_image / end_image are read by ToonCrafter's decoder only; this VAE decodes each "
                         "frame on its own. Disconnect them, or load the ToonCrafter checkpoint.")
    frames = latent.transpose(1, 2).reshape(b * t, c, h, w)
    images = None
    for start in range(0, b * t, frames_per_batch):
        comfy.model_management.throw_exception_if_processing_interrupted()
        decoded = vae.decode(frames[start:start + frames_per_batch])
        decoded = decoded.reshape(-1, *decoded.shape[-3:])
        if images is None:
            images = torch.empty((b * t, *decoded.shape[1:]), dtype=decoded.dtype, device=decoded.device)
        images[start:start + decoded.shape[0]] = decoded
        pbar.update(decoded.shape[0])
    return images


NODES = [VideoCrafterVAEDecode]
