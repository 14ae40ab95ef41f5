"""VideoCrafter FPS Conditioning: the frame rate the UNet is told the video has."""
import node_helpers

from ..vc_models.model_base import FPS_KEY


class VideoCrafterFPSConditioning:
    CATEGORY = "VideoCrafter/conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "apply"
    DESCRIPTION = ("Sets the fps condition of VideoCrafter1-1024, VideoCrafter2 and I2V (more fps: smaller motion "
                   "between frames). Without this node the model's default is used: 28 for text-to-video, 8 for "
                   "image-to-video. VideoCrafter1-512 has no fps condition and ignores it.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "Positive conditioning."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative conditioning (gets the same fps, as the original)."}),
            "fps": ("INT", {"default": 28, "min": 1, "max": 120, "tooltip":
                            "Frame rate the motion is generated for: the papers use 28 (T2V) and 8 (I2V)."}),
        }}

    def apply(self, positive, negative, fps):
        values = {FPS_KEY: fps}
        return (node_helpers.conditioning_set_values(positive, values),
                node_helpers.conditioning_set_values(negative, values))


NODE_CLASS_MAPPINGS = {"VideoCrafterFPSConditioning": VideoCrafterFPSConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoCrafterFPSConditioning": "VideoCrafter FPS Conditioning"}
