"""VideoCrafter Checkpoint To Safetensors: convert a released .ckpt once, load it faster and safer after."""
import os

import folder_paths
from comfy_api.latest import io

from ..vc_models.convert import convert_checkpoint
from .loader import checkpoint_names, checkpoint_path
from .safe_paths import plain_file_name


class VideoCrafterCheckpointToSafetensors(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoCrafterCheckpointToSafetensors",
            display_name="VideoCrafter Checkpoint To Safetensors",
            category="VideoCrafter/loaders",
            description=("Writes a .safetensors copy of a VideoCrafter/DynamiCrafter checkpoint, or of a released "
                         "T2V-Turbo UNet (.pt, kept with its own keys for the Turbo UNet Loader), into "
                         "models/checkpoints."),
            inputs=[
                io.Combo.Input("ckpt_name", options=checkpoint_names(), tooltip=(
                    "The released model.ckpt (or T2V-Turbo unet_*.pt) to convert.")),
                io.Boolean.Input("fp16", default=True, tooltip=(
                    "Store weights in fp16 (half the size; what the model runs in on GPUs).")),
                io.String.Input("output_name", default="videocrafter.safetensors", tooltip=(
                    "File name to write in models/checkpoints (.safetensors is added if missing); a plain name, no "
                    "folders.")),
                io.Boolean.Input("overwrite", default=False, optional=True, tooltip=(
                    "Replace a file of the same name. Off: an existing file is refused before anything is read.")),
            ],
            outputs=[io.String.Output(display_name="path")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, ckpt_name, fp16, output_name, overwrite=False):
        name = plain_file_name(output_name, "output_name", "videocrafter.safetensors")
        if not name.endswith(".safetensors"):
            name += ".safetensors"
        dst = os.path.join(folder_paths.get_folder_paths("checkpoints")[0], name)
        info = convert_checkpoint(checkpoint_path(ckpt_name), dst, fp16=fp16, overwrite=overwrite)
        return io.NodeOutput(dst, ui={"text": [f"{info.description} -> {dst}"]})


NODES = [VideoCrafterCheckpointToSafetensors]
