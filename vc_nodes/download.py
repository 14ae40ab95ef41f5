"""VideoCrafter Model Downloader: fetch a released model once, as the fp16 .safetensors the shipped workflows load."""
import os

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..vc_models import registry
from ..vc_models.download import fetch_model
from .loader import FOLDER  # registers models/videocrafter


def model_folder(kind=FOLDER):
    """The first (default) folder ComfyUI knows for models of `kind` (models/videocrafter, models/controlnet)."""
    return folder_paths.get_folder_paths(kind)[0]


class ByteProgress:
    """huggingface_hub's byte counts -> ComfyUI's progress bar; checks for interrupts as bytes arrive
    (an interrupted download keeps its .part file and resumes on the next run)."""

    def __init__(self):
        self.bar = None

    def __call__(self, done, total):
        comfy.model_management.throw_exception_if_processing_interrupted()
        if total <= 0:
            return
        if self.bar is None:
            self.bar = comfy.utils.ProgressBar(total)
        self.bar.update_absolute(done, total)


class VideoCrafterModelDownloader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        released = registry.downloads()
        listing = "; ".join(f"{e.id}: {e.description} -> models/{e.release.folder}/{e.release.file_name}" for e in released)
        return io.Schema(
            node_id="VideoCrafterModelDownloader",
            display_name="VideoCrafter Model Downloader",
            category="VideoCrafter/loaders",
            description=("Downloads a released VideoCrafter / DynamiCrafter / T2V-Turbo model from Hugging Face once "
                         "(resumable, progress in the bar and the terminal), checks it, and converts it to an fp16 "
                         ".safetensors in models/videocrafter (ControlNets: models/controlnet) under the name the "
                         "shipped workflows load. Files already there are not downloaded again. Press R (refresh) "
                         "afterwards so the loaders list it."),
            inputs=[
                io.Combo.Input("model", options=[e.id for e in released], default=released[0].id,
                               tooltip=f"Which released model to fetch. {listing}."),
                io.Boolean.Input("delete_pickle", default=False, tooltip=(
                    "Delete the released .ckpt/.pt after conversion (saves its size on disk). Off: it is kept in "
                    "models/videocrafter/originals/.")),
            ],
            outputs=[
                io.String.Output(display_name="file_name", tooltip=(
                    "The .safetensors name as the loaders list it (what the shipped workflows load).")),
                io.String.Output(display_name="path", tooltip="Full path of the .safetensors."),
            ],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, model, delete_pickle):
        # run again when the file was removed or replaced since the last run
        released = {e.id: e.release for e in registry.downloads()}
        path = os.path.join(model_folder(released[model].folder), released[model].file_name) if model in released else ""
        return os.path.getmtime(path) if os.path.isfile(path) else "missing"

    @classmethod
    def execute(cls, model, delete_pickle):
        folder = model_folder(next(e.release.folder for e in registry.downloads() if e.id == model))
        result = fetch_model(model, folder, delete_pickle=delete_pickle, progress=ByteProgress())
        name = os.path.basename(result.path)
        state = "downloaded and converted" if result.downloaded else ("converted" if result.converted else "already present")
        return io.NodeOutput(name, result.path, ui={"text": [f"{name}: {state} ({result.path})"]})


NODES = [VideoCrafterModelDownloader]
