"""VideoCrafter Image Encode: CLIP patch tokens of the conditioning image through the projector."""
import node_helpers

from ..vc_models.conditioning import projected_image_tokens
from ..vc_models.model_base import IMAGE_TOKENS_KEY
from .loader import MissingImageComponents, PROJECTOR_TYPE


class VideoCrafterImageEncode:
    CATEGORY = "VideoCrafter/conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "encode"
    DESCRIPTION = ("Image-to-video conditioning: all 257 CLIP ViT-H patch tokens of the image, mapped by the "
                   "projector to 16 tokens that every cross-attention also attends to. The negative gets the "
                   "projection of an all-zero image, as the original.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_vision": ("CLIP_VISION", {"tooltip": "The image encoder from Load VideoCrafter Checkpoint (an I2V checkpoint)."}),
            "projector": (PROJECTOR_TYPE, {"tooltip": "The projector from Load VideoCrafter Checkpoint (an I2V checkpoint)."}),
            "image": ("IMAGE", {"tooltip": "The image the video starts from: one image, or one per video of the batch."}),
            "positive": ("CONDITIONING", {"tooltip": "The prompt's conditioning (from CLIP Text Encode)."}),
            "negative": ("CONDITIONING", {"tooltip": "The negative conditioning (usually an empty prompt)."}),
        }}

    def encode(self, clip_vision, projector, image, positive, negative):
        for component in (clip_vision, projector):
            if isinstance(component, MissingImageComponents):
                raise ValueError(component.error())
        if image is None or image.ndim != 4 or image.shape[0] == 0:
            raise ValueError("VideoCrafter Image Encode needs an image (IMAGE [B,H,W,3]); got none.")
        if projector.family.concat_latent:  # the family says which node conditions on its image
            raise ValueError(f"This is a {projector.family.name} checkpoint's projector: it also needs the image's "
                             f"latent beside the noise. Use '{projector.family.image_node}' instead of 'VideoCrafter "
                             "Image Encode'.")
        tokens, uncond = projected_image_tokens(clip_vision, projector, image)
        positive = node_helpers.conditioning_set_values(positive, {IMAGE_TOKENS_KEY: tokens.cpu()})
        negative = node_helpers.conditioning_set_values(negative, {IMAGE_TOKENS_KEY: uncond.expand(tokens.shape[0], -1, -1).cpu()})
        return (positive, negative)


NODE_CLASS_MAPPINGS = {"VideoCrafterImageEncode": VideoCrafterImageEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoCrafterImageEncode": "VideoCrafter Image Encode"}
