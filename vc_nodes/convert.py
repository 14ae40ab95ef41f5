"""VideoCrafter Checkpoint To Safetensors: convert a released .ckpt once, load it faster and safer after."""
import os

import folder_paths

from ..vc_models.convert import convert_checkpoint
from .loader import checkpoint_names, checkpoint_path
from .safe_paths import plain_file_name


class VideoCrafterCheckpointToSafetensors:
    CATEGORY = "VideoCrafter/loaders"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_NODE = True
    FUNCTION = "convert"
    DESCRIPTION = ("Writes a .safetensors copy of a VideoCrafter/DynamiCrafter checkpoint, or of a released T2V-Turbo "
                   "UNet (.pt, kept with its own keys for the Turbo UNet Loader), into models/checkpoints.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (checkpoint_names(), {"tooltip": "The released model.ckpt (or T2V-Turbo unet_*.pt) to convert."}),
            "fp16": ("BOOLEAN", {"default": True, "tooltip": "Store weights in fp16 (half the size; what the model runs in on GPUs)."}),
            "output_name": ("STRING", {"default": "videocrafter.safetensors",
                                       "tooltip": "File name to write in models/checkpoints (.safetensors is added if "
                                                  "missing); a plain name, no folders."}),
        }, "optional": {
            "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace a file of the same name. Off: an existing "
                                      "file is refused before anything is read."}),
        }}

    def convert(self, ckpt_name, fp16, output_name, overwrite=False):
        name = plain_file_name(output_name, "output_name", "videocrafter.safetensors")
        if not name.endswith(".safetensors"):
            name += ".safetensors"
        dst = os.path.join(folder_paths.get_folder_paths("checkpoints")[0], name)
        info = convert_checkpoint(checkpoint_path(ckpt_name), dst, fp16=fp16, overwrite=overwrite)
        return {"ui": {"text": [f"{info.description} -> {dst}"]}, "result": (dst,)}


NODE_CLASS_MAPPINGS = {"VideoCrafterCheckpointToSafetensors": VideoCrafterCheckpointToSafetensors}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoCrafterCheckpointToSafetensors": "VideoCrafter Checkpoint To Safetensors"}
