"""VideoCrafter FPS Conditioning: the frame rate the UNet is told the video has."""
import node_helpers
from comfy_api.latest import io

from ..vc_models.families import FPS_KEY


class VideoCrafterFPSConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoCrafterFPSConditioning",
            display_name="VideoCrafter FPS Conditioning",
            category="VideoCrafter/conditioning",
            description=("Sets the fps condition of VideoCrafter1-1024, VideoCrafter2 and I2V (more fps: smaller motion "
                         "between frames). Without this node the model's default is used: 28 for text-to-video, 8 for "
                         "image-to-video. VideoCrafter1-512 has no fps condition and ignores it."),
            inputs=[
                io.Conditioning.Input("positive", tooltip="Positive conditioning."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (gets the same fps, as the original)."),
                io.Int.Input("fps", default=28, min=1, max=120, tooltip=(
                    "Frame rate the motion is generated for: the papers use 28 (T2V) and 8 (I2V).")),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, positive, negative, fps):
        values = {FPS_KEY: fps}
        return io.NodeOutput(node_helpers.conditioning_set_values(positive, values),
                             node_helpers.conditioning_set_values(negative, values))


NODES = [VideoCrafterFPSConditioning]
