"""VideoCrafter Sketch Hint: sketch frames prepared for ToonCrafter's sketch encoder (a ControlNet)."""
from ..vc_models import registry
from ..vc_models.video_control import sketch_hint

_TOON = registry.entry("toon_512").defaults
_SKETCH = registry.controlnet_for("toon_512")


class VideoCrafterSketchHint:
    CATEGORY = "VideoCrafter/conditioning"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("hint",)
    OUTPUT_TOOLTIPS = ("Inverted grey sketches at the video size, one per frame: the image of 'Apply ControlNet'.",)
    FUNCTION = "prepare"
    DESCRIPTION = ("Sketch guidance for ToonCrafter: turns sketch frames (black lines on white) into the hints its "
                   f"sketch encoder was trained on, grey and inverted, scaled and center-cropped to the video size. "
                   f"Load the encoder ({_SKETCH.release.file_name}, downloader id '{_SKETCH.id}') with 'Load "
                   f"ControlNet Model' and apply it with 'Apply ControlNet' at strength {_SKETCH.strength} (the "
                   "original's control scale). Give one sketch per frame of the video, or one for all frames.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "sketches": ("IMAGE", {"tooltip": "Sketch frames, black lines on white: as many as the video has frames "
                                              "(e.g. from Load Video), or one image for every frame."}),
            "width": ("INT", {"default": _TOON.width, "min": 64, "max": 4096, "step": 8,
                              "tooltip": "The video's width (the sampler's latent width x 8)."}),
            "height": ("INT", {"default": _TOON.height, "min": 64, "max": 4096, "step": 8,
                               "tooltip": "The video's height (the sampler's latent height x 8)."}),
        }}

    def prepare(self, sketches, width, height):
        if sketches is None or sketches.ndim != 4 or sketches.shape[0] == 0:
            raise ValueError("VideoCrafter Sketch Hint needs sketch images (IMAGE [N,H,W,3]); got none.")
        return (sketch_hint(sketches, width, height),)


NODE_CLASS_MAPPINGS = {"VideoCrafterSketchHint": VideoCrafterSketchHint}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoCrafterSketchHint": "VideoCrafter Sketch Hint"}
