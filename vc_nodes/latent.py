"""Empty VideoCrafter Latent: the 5-D noise canvas [B, 4, T, H/8, W/8]."""
import torch

import comfy.model_management
from comfy_api.latest import io

from ..vc_models.memory_model import latent_refusal
from ..vc_models.video_size import SIZE_MULTIPLE, multiple_error


def size_error(name, value, low, high):
    """The message for a width/height the UNet cannot take, or None."""
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{name} must be a whole number of pixels, got {value!r}."
    if not low <= value <= high:
        return f"{name} {value} is outside {low}..{high}."
    return multiple_error(name, value)


def validate_size(node_class, width, height, frames=None, batch_size=None, frames_name="frames"):
    """validate_inputs of a node that makes a video latent: the multiple-of-64 rule and, because naming an input in
    validate_inputs makes ComfyUI skip its own min/max check of it, the declared ranges; then whether the latent
    (and the copies sampling makes of it) fits this machine's RAM at all. A value linked from another node is None
    at validation time; the node checks it when it arrives."""
    spec = node_class.INPUT_TYPES()["required"]
    for name, value in (("width", width), ("height", height)):
        error = size_error(name, value, spec[name][1]["min"], spec[name][1]["max"]) if value is not None else None
        if error:
            return error
    for name, value in ((frames_name, frames), ("batch_size", batch_size)):
        low, high = spec[name][1]["min"], spec[name][1]["max"]
        if value is not None and not low <= value <= high:
            return f"{name} {value} is outside {low}..{high}."
    if None not in (width, height, frames, batch_size):
        refusal = latent_refusal(batch_size, frames, height // 8, width // 8)
        if refusal:
            return refusal
    return True


class EmptyVideoCrafterLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmptyVideoCrafterLatent",
            display_name="Empty VideoCrafter Latent",
            category="VideoCrafter/latent",
            description=("An empty video latent. The released models are trained at 320x512 (VC1/VC2/I2V) and "
                         "576x1024 (VC1-1024), 16 frames."),
            inputs=[
                io.Int.Input("width", default=512, min=SIZE_MULTIPLE, max=4096, step=SIZE_MULTIPLE,
                             tooltip="Video width in pixels, a multiple of 64 (512 or 1024 as trained)."),
                io.Int.Input("height", default=320, min=SIZE_MULTIPLE, max=4096, step=SIZE_MULTIPLE,
                             tooltip="Video height in pixels, a multiple of 64 (320 or 576 as trained)."),
                io.Int.Input("frames", default=16, min=1, max=1024, tooltip="Number of frames; the models are trained on 16."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Videos generated at once."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def validate_inputs(cls, width, height, frames, batch_size):
        return validate_size(cls, width, height, frames, batch_size)

    @classmethod
    def execute(cls, width, height, frames, batch_size=1):
        valid = cls.validate_inputs(width=width, height=height, frames=frames, batch_size=batch_size)
        if valid is not True:
            raise ValueError(valid)
        latent = torch.zeros([batch_size, 4, frames, height // 8, width // 8],
                             device=comfy.model_management.intermediate_device())
        return io.NodeOutput({"samples": latent})


NODES = [EmptyVideoCrafterLatent]
