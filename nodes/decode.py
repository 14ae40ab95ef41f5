"""VideoCrafter VAE Decode: each frame through the SD VAE, a bounded number of frames at a time."""
import torch

import comfy.model_management
import comfy.utils


class VideoCrafterVAEDecode:
    CATEGORY = "VideoCrafter/latent"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("Frames [videos x frames, H, W, 3], the frames of each video consecutive: feed Create Video / "
                       "Save Animated WEBP / VideoHelperSuite's Video Combine directly.",)
    FUNCTION = "decode"
    DESCRIPTION = "Decodes a video latent frame by frame (VideoCrafter has no temporal VAE)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT", {"tooltip": "The video latent from a sampler."}),
            "vae": ("VAE", {"tooltip": "The VAE from Load VideoCrafter Checkpoint (the SD VAE)."}),
            "frames_per_batch": ("INT", {"default": 8, "min": 1, "max": 1024, "tooltip":
                                         "Frames decoded together: lower it if you run out of memory, raise it for speed."}),
        }}

    def decode(self, samples, vae, frames_per_batch=8):
        latent = samples["samples"]
        if latent.ndim == 4:  # a single-frame latent from an image node
            latent = latent.unsqueeze(2)
        if latent.ndim != 5:
            raise ValueError(f"Expected a video latent [B, 4, frames, h, w]; got shape {list(latent.shape)}.")
        b, c, t, h, w = latent.shape
        frames = latent.transpose(1, 2).reshape(b * t, c, h, w)
        images = None
        pbar = comfy.utils.ProgressBar(b * t)
        for start in range(0, b * t, frames_per_batch):
            comfy.model_management.throw_exception_if_processing_interrupted()
            decoded = vae.decode(frames[start:start + frames_per_batch])
            decoded = decoded.reshape(-1, *decoded.shape[-3:])
            if images is None:
                images = torch.empty((b * t, *decoded.shape[1:]), dtype=decoded.dtype, device=decoded.device)
            images[start:start + decoded.shape[0]] = decoded
            pbar.update(decoded.shape[0])
        return (images,)


NODE_CLASS_MAPPINGS = {"VideoCrafterVAEDecode": VideoCrafterVAEDecode}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoCrafterVAEDecode": "VideoCrafter VAE Decode"}
