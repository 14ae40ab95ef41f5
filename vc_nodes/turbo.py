"""T2V-Turbo-v2: load the distilled UNet onto a VideoCrafter2 MODEL; its guidance / motion-guidance conditioning."""
import folder_paths
import node_helpers
from comfy_api.latest import io

from ..vc_models.loader import WEIGHT_DTYPES
from ..vc_models.families import (TURBO_GUIDANCE_KEY, TURBO_MOTION_KEY, TURBO_DEFAULT_GUIDANCE,
                                    TURBO_DEFAULT_MOTION)
from ..vc_models.turbo import load_turbo_model
from .loader import FOLDER

UNET_FOLDERS = (FOLDER, "diffusion_models")  # models/videocrafter, models/unet + models/diffusion_models


def turbo_unet_names():
    names = set()
    for folder in UNET_FOLDERS:
        names.update(n for n in folder_paths.get_filename_list(folder)
                     if n.lower().endswith((".pt", ".pth", ".safetensors", ".sft", ".ckpt")))
    return sorted(names)


def turbo_unet_path(name):
    for folder in UNET_FOLDERS:
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            return path
    raise FileNotFoundError(f"T2V-Turbo UNet '{name}' not found in models/{FOLDER}, models/unet or models/diffusion_models.")


class VideoCrafterTurboUNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoCrafterTurboUNetLoader",
            display_name="VideoCrafter Turbo UNet Loader",
            category="VideoCrafter/loaders",
            description=("T2V-Turbo-v2 (4-16 step VideoCrafter2): replaces the UNet of a VideoCrafter2 MODEL with a "
                         "released turbo UNet (unet_mg.pt / unet_no_mg.pt or a .safetensors conversion) on the plain "
                         "noise schedule it was distilled with. Keep the VideoCrafter2 CLIP and VAE. Sample with "
                         "sampler 'videocrafter_lcm', scheduler 'videocrafter_turbo', cfg 1 (one UNet pass per step)."),
            inputs=[
                io.Model.Input("model", tooltip=(
                    "The MODEL of 'Load VideoCrafter Checkpoint' on the VideoCrafter2 checkpoint "
                    "(videocrafter2_t2v_512); it is left unchanged.")),
                io.Combo.Input("unet_name", options=turbo_unet_names(), tooltip=(
                    "T2V-Turbo-v2 UNet from models/videocrafter or models/unet: unet_mg.pt (with motion guidance) "
                    "or unet_no_mg.pt as released (read with weights_only=True), or a .safetensors with the same "
                    "keys.")),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default", tooltip=(
                    "Precision the turbo UNet weights are kept in. 'default' lets ComfyUI choose for your device; "
                    "fp16/bf16 halve memory; fp8 quarters it at some quality cost.")),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip=(
                "The T2V-Turbo model: sample with 4-16 steps, sampler 'videocrafter_lcm', scheduler "
                "'videocrafter_turbo', cfg 1."))],
        )

    @classmethod
    def execute(cls, model, unet_name, weight_dtype="default"):
        if weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weight_dtype must be one of {list(WEIGHT_DTYPES)}, got {weight_dtype!r}")
        return io.NodeOutput(load_turbo_model(model, turbo_unet_path(unet_name), WEIGHT_DTYPES[weight_dtype]))


class VideoCrafterTurboConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        motion_gs, percentage = TURBO_DEFAULT_MOTION
        return io.Schema(
            node_id="VideoCrafterTurboConditioning",
            display_name="VideoCrafter Turbo Conditioning",
            category="VideoCrafter/conditioning",
            description=("T2V-Turbo-v2's guidance: the guidance scale the distilled UNet embeds (it replaces "
                         "classifier-free guidance: sample with cfg 1) and, for the MG model, the motion guidance "
                         "applied during the first 'percentage' of the steps. Without this node the original's "
                         "defaults are used (7.5; MG 0.05, 0.5)."),
            inputs=[
                io.Conditioning.Input("positive", tooltip=(
                    "Positive conditioning (CLIP Text Encode, FPS Conditioning).")),
                io.Conditioning.Input("negative", tooltip=(
                    "Negative conditioning: unused at cfg 1, gets the same values.")),
                io.Float.Input("guidance_scale", default=TURBO_DEFAULT_GUIDANCE, min=0.0, max=20.0, step=0.1,
                               round=0.01, tooltip=("Guidance scale embedded in the UNet (the original default 7.5); "
                                                    "higher follows the prompt more closely.")),
                io.Boolean.Input("motion_guidance", default=True, tooltip=(
                    "Motion guidance of the MG model (unet_mg). Switch off for the no-MG model (unet_no_mg), which "
                    "has no motion input.")),
                io.Float.Input("motion_gs", default=motion_gs, min=0.0, max=1.0, step=0.01, round=0.001, tooltip=(
                    "Motion guidance strength (the original default 0.05); more gives more motion.")),
                io.Float.Input("percentage", default=percentage, min=0.0, max=1.0, step=0.05, tooltip=(
                    "Share of the noise levels, from the noisiest, that get motion guidance (0.5: while timestep "
                    ">= 500), as the original.")),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, positive, negative, guidance_scale, motion_guidance, motion_gs, percentage):
        values = {TURBO_GUIDANCE_KEY: guidance_scale,
                  TURBO_MOTION_KEY: (motion_gs, percentage) if motion_guidance else None}
        return io.NodeOutput(node_helpers.conditioning_set_values(positive, values),
                             node_helpers.conditioning_set_values(negative, values))


NODES = [VideoCrafterTurboUNetLoader, VideoCrafterTurboConditioning]
