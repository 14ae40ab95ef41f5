"""VideoCrafter Sketch Hint: sketch frames prepared for ToonCrafter's sketch encoder (a ControlNet)."""
from comfy_api.latest import io

from ..vc_models import registry
from ..vc_models.video_control import sketch_hint

_TOON = registry.entry("toon_512").defaults
_SKETCH = registry.controlnet_for("toon_512")


class VideoCrafterSketchHint(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoCrafterSketchHint",
            display_name="VideoCrafter Sketch Hint",
            category="VideoCrafter/conditioning",
            description=("Sketch guidance for ToonCrafter: turns sketch frames (black lines on white) into the hints "
                         "its sketch encoder was trained on, grey and inverted, scaled and center-cropped to the video "
                         f"size. Load the encoder ({_SKETCH.release.file_name}, downloader id '{_SKETCH.id}') with "
                         f"'Load ControlNet Model' and apply it with 'Apply ControlNet' at strength {_SKETCH.strength} "
                         "(the original's control scale). Give one sketch per frame of the video, or one for all "
                         "frames."),
            inputs=[
                io.Image.Input("sketches", tooltip=(
                    "Sketch frames, black lines on white: as many as the video has frames (e.g. from Load Video), or "
                    "one image for every frame.")),
                io.Int.Input("width", default=_TOON.width, min=64, max=4096, step=8,
                             tooltip="The video's width (the sampler's latent width x 8)."),
                io.Int.Input("height", default=_TOON.height, min=64, max=4096, step=8,
                             tooltip="The video's height (the sampler's latent height x 8)."),
            ],
            outputs=[io.Image.Output(display_name="hint", tooltip=(
                "Inverted grey sketches at the video size, one per frame: the image of 'Apply ControlNet'."))],
        )

    @classmethod
    def execute(cls, sketches, width, height):
        if sketches is None or sketches.ndim != 4 or sketches.shape[0] == 0:
            raise ValueError("VideoCrafter Sketch Hint needs sketch images (IMAGE [N,H,W,3]); got none.")
        return io.NodeOutput(sketch_hint(sketches, width, height))


NODES = [VideoCrafterSketchHint]
