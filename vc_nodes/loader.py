"""Load VideoCrafter Checkpoint: one file -> MODEL, CLIP, VAE, CLIP_VISION and the I2V projector."""
import os

import folder_paths
from comfy_api.latest import io

from ..vc_models.checkpoint_file import LOADABLE_EXTENSIONS
from ..vc_models.loader import load_videocrafter, WEIGHT_DTYPES

FOLDER = "videocrafter"
if FOLDER not in folder_paths.folder_names_and_paths:
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER), is_default=True)
# ComfyUI registers a folder (here, or from extra_model_paths.yaml) with no extension filter, which lists
# every file: the downloader's `.part` / `.etag` and the atomic writer's `.partial` would be offered as models
_folders, _extensions = folder_paths.folder_names_and_paths[FOLDER]
folder_paths.folder_names_and_paths[FOLDER] = (_folders, set(_extensions) | LOADABLE_EXTENSIONS)

# the image projector a checkpoint loads, as a socket type (saved graphs name it VIDEOCRAFTER_PROJECTOR)
Projector = io.Custom("VIDEOCRAFTER_PROJECTOR")


class MissingImageComponents:
    """Stands in for CLIP_VISION / projector of a text-to-video checkpoint, so an image-to-video
    graph fed one fails with a message that names the checkpoint instead of a None error."""

    def __init__(self, description, ckpt_name):
        self.description = description
        self.ckpt_name = ckpt_name

    def error(self, node="VideoCrafter Image Encode", needs="the VideoCrafter1 image-to-video checkpoint (i2v_512_v1)"):
        """The message for `node`, which needs `needs`."""
        return (f"'{self.ckpt_name}' is a {self.description} checkpoint: it has no image encoder or projector. "
                f"Image-to-video needs {needs}; for text-to-video remove the '{node}' node.")


def checkpoint_names():
    names = set(folder_paths.get_filename_list("checkpoints")) | set(folder_paths.get_filename_list(FOLDER))
    return sorted(names)


def projector_file_names():
    return [n for n in checkpoint_names() if n.endswith("_projector.safetensors")]


def files_named(name, kinds=(FOLDER, "checkpoints")):
    """Every distinct file the folders of `kinds` hold under `name`, in the order ComfyUI searches them (the same
    file reached through two folders, or a symlink, counts once)."""
    name = os.path.relpath(os.path.join("/", name), "/")  # as folder_paths.get_full_path: no climbing out
    found = {}
    for kind in kinds:
        for folder in folder_paths.get_folder_paths(kind) if kind in folder_paths.folder_names_and_paths else []:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                found.setdefault(os.path.realpath(path), path)
    return list(found.values())


def checkpoint_path(name):
    """The one file named `name` in models/videocrafter and models/checkpoints; two different files of that name are
    refused (the first folder's used to load silently, e.g. a model shadowing a training result)."""
    paths = files_named(name)
    if not paths:
        raise FileNotFoundError(f"Checkpoint '{name}' not found in models/checkpoints or models/{FOLDER}.")
    if len(paths) > 1:
        raise ValueError(f"Two different files are named '{name}': {' and '.join(paths)}; which one would load "
                         "depends on the order of the model folders. Rename or move one of them.")
    return paths[0]


class VideoCrafterCheckpointLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoCrafterCheckpointLoader",
            display_name="Load VideoCrafter Checkpoint",
            category="VideoCrafter/loaders",
            description=("Loads a VideoCrafter1/VideoCrafter2 or DynamiCrafter checkpoint (.ckpt or .safetensors) and "
                         "detects its variant: VC1 T2V 512/1024, VC2 T2V 512, VC1 I2V 512, DynamiCrafter 256/512/1024 "
                         "(and the 512 interpolation model, by 'interp' in its file name), ToonCrafter 512 (by its "
                         "dual-reference VAE decoder)."),
            inputs=[
                io.Combo.Input("ckpt_name", options=checkpoint_names(), tooltip=(
                    "A VideoCrafter model.ckpt (as released) or a converted .safetensors, from models/checkpoints or "
                    "models/videocrafter.")),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default", tooltip=(
                    "Precision the UNet weights are kept in. 'default' lets ComfyUI choose for your device; "
                    "fp16/bf16 halve memory; fp8 quarters it at some quality cost. On a CPU with bf16 "
                    "instructions bf16 also computes in bf16, about twice as fast.")),
                io.Combo.Input("projector_file", options=["none"] + projector_file_names(), default="none",
                               optional=True, tooltip=(
                                   "A stage-1 result of VideoCrafter Train I2V (<name>_projector.safetensors): its "
                                   "projector and image key/value weights replace the checkpoint's. I2V checkpoints "
                                   "only.")),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip=(
                    "The 3D UNet denoiser (works with VideoCrafter KSampler and the core samplers).")),
                io.Clip.Output(display_name="clip", tooltip=(
                    "The OpenCLIP ViT-H text encoder: use with the core CLIP Text Encode.")),
                io.Vae.Output(display_name="vae", tooltip=(
                    "The Stable Diffusion VAE, decoding each frame; ToonCrafter's looks at the key frames (decode "
                    "with VideoCrafter VAE Decode).")),
                io.ClipVision.Output(display_name="clip_vision", tooltip=(
                    "Image-to-video only: the OpenCLIP ViT-H image encoder.")),
                Projector.Output(display_name="projector", tooltip=(
                    "Image-to-video only: the learned projector from CLIP image tokens to the 16 context tokens.")),
            ],
        )

    @classmethod
    def execute(cls, ckpt_name, weight_dtype="default", projector_file="none"):
        projector = checkpoint_path(projector_file) if projector_file and projector_file != "none" else None
        bundle = load_videocrafter(checkpoint_path(ckpt_name), weight_dtype, projector_file=projector)
        if bundle.info.unet.image_cross_attention:
            return io.NodeOutput(bundle.model, bundle.clip, bundle.vae, bundle.clip_vision, bundle.projector)
        missing = MissingImageComponents(bundle.info.description, ckpt_name)
        return io.NodeOutput(bundle.model, bundle.clip, bundle.vae, missing, missing)


NODES = [VideoCrafterCheckpointLoader]
