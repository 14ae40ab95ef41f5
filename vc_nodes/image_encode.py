"""VideoCrafter Image Encode: CLIP patch tokens of the conditioning image through the projector."""
import node_helpers
from comfy_api.latest import io

from ..vc_models.conditioning import projected_image_tokens
from ..vc_models.families import IMAGE_TOKENS_KEY
from .loader import MissingImageComponents, Projector


class VideoCrafterImageEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoCrafterImageEncode",
            display_name="VideoCrafter Image Encode",
            category="VideoCrafter/conditioning",
            description=("Image-to-video conditioning: all 257 CLIP ViT-H patch tokens of the image, mapped by the "
                         "projector to 16 tokens that every cross-attention also attends to. The negative gets the "
                         "projection of an all-zero image, as the original."),
            inputs=[
                io.ClipVision.Input("clip_vision", tooltip=(
                    "The image encoder from Load VideoCrafter Checkpoint (an I2V checkpoint).")),
                Projector.Input("projector", tooltip=(
                    "The projector from Load VideoCrafter Checkpoint (an I2V checkpoint).")),
                io.Image.Input("image", tooltip=(
                    "The image the video starts from: one image, or one per video of the batch.")),
                io.Conditioning.Input("positive", tooltip="The prompt's conditioning (from CLIP Text Encode)."),
                io.Conditioning.Input("negative", tooltip="The negative conditioning (usually an empty prompt)."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, clip_vision, projector, image, positive, negative):
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
        return io.NodeOutput(positive, negative)


NODES = [VideoCrafterImageEncode]
