"""VideoCrafter Train I2V: the two-stage image-to-video trainer as a node (same core as scripts/vc_train.py)."""
import logging
import os

import numpy as np
import torch

import comfy.model_management
import comfy.utils
import folder_paths

from ..vc_train.config import TrainConfig, STAGES, FINETUNE_LAYERS, PRECISIONS, COND_FRAMES, SIZE_MULTIPLE
from ..vc_train.trainer import Trainer, Callbacks, check_before_loading
from ..vc_models.training import VideoCrafterTrainingModels, free_memory_for_training
from .loader import FOLDER, checkpoint_names, checkpoint_path
from .safe_paths import resolve_input_path, plain_file_name

log = logging.getLogger("vc_train")
NONE = "none"
SAVE_TO = ("checkpoints", "output")


def _clip_vision_names():
    return [NONE] + folder_paths.get_filename_list("clip_vision")


def _resolve_data_path(path):
    """Inside ComfyUI's input folder (see safe_paths)."""
    if not path.strip():
        raise ValueError("Set 'data' to a folder of videos with .txt captions, or a .csv/.jsonl list.")
    return resolve_input_path(path, [folder_paths.get_input_directory()], "data")


def _resolve_projector_file(path):
    """A projector file under models/checkpoints, models/videocrafter or the input folder ('' for none)."""
    if not path.strip():
        return ""
    roots = folder_paths.get_folder_paths("checkpoints") + folder_paths.get_folder_paths(FOLDER)
    return resolve_input_path(path, roots + [folder_paths.get_input_directory()], "projector_file")


class NodeProgress(Callbacks):
    """Progress bar (and loss text) on the node; ComfyUI's interrupt stops training after a state save."""

    def __init__(self, total, node_id):
        self.bar = comfy.utils.ProgressBar(total, node_id=node_id)
        self.node_id = node_id

    def check_interrupt(self):
        comfy.model_management.throw_exception_if_processing_interrupted()

    def is_interrupt(self, error):
        # ComfyUI's own loaders (VAE, CLIP vision) also raise it when the user interrupts mid-step
        return isinstance(error, (comfy.model_management.InterruptProcessingException, KeyboardInterrupt))

    def on_step(self, step, total, loss, samples_per_sec):
        self.bar.update_absolute(step, total)
        text = f"step {step}/{total}  loss {loss:.4f}  {samples_per_sec:.2f} samples/s"
        log.info(text)
        try:
            from server import PromptServer
            if self.node_id is not None and PromptServer.instance is not None:
                PromptServer.instance.send_progress_text(text, self.node_id)
        except Exception:  # progress text is a nicety (older frontends, no server in scripts)
            pass


def pil_to_image(img):
    """PIL RGB -> ComfyUI IMAGE [1, H, W, 3] in 0..1."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]


class VideoCrafterTrainI2V:
    CATEGORY = "VideoCrafter/training"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("loss_curve", "result_path")
    OUTPUT_TOOLTIPS = ("The loss curve so far (raw and smoothed; a red line where the finetune stage starts).",
                       "The file the last stage wrote: the full I2V checkpoint, or the projector file after stage 'projector'.")
    OUTPUT_NODE = True
    FUNCTION = "train"
    DESCRIPTION = ("Trains VideoCrafter1 image-to-video in the paper's two stages: 'projector' trains the image "
                   "projector and the image key/value matrices with the video model frozen; 'finetune' trains the "
                   "UNet with projector and text encoder fixed. Starts from an I2V checkpoint, or a T2V "
                   "(VideoCrafter2) checkpoint plus a CLIP vision file. Resumes from its last saved state.")

    @classmethod
    def INPUT_TYPES(cls):
        d = TrainConfig()
        return {
            "required": {
                "ckpt_name": (checkpoint_names(), {"tooltip": "Start point: a VideoCrafter1 I2V checkpoint (continue "
                              "training) or a text-to-video one (VideoCrafter2) together with clip_vision_name."}),
                "data": ("STRING", {"default": "videocrafter_train", "tooltip": "A folder of videos with same-name "
                         ".txt captions, or a .csv/.jsonl of (path, caption) rows (WebVid style). Relative paths "
                         "are inside ComfyUI's input folder (absolute paths only where the server allows them)."}),
                "stage": (list(STAGES), {"default": "both", "tooltip": "projector: stage 1 only; finetune: stage 2 "
                          "only; both: stage 1 then stage 2."}),
                "projector_steps": ("INT", {"default": d.projector_steps, "min": 0, "max": 10**7, "tooltip":
                                    "Optimizer steps of stage 1 (projector + image key/value)."}),
                "finetune_steps": ("INT", {"default": d.finetune_steps, "min": 0, "max": 10**7, "tooltip":
                                   "Optimizer steps of stage 2 (UNet finetuning)."}),
                "finetune_layers": (list(FINETUNE_LAYERS), {"default": d.finetune_layers, "tooltip":
                                    "UNet layers stage 2 trains: all, temporal layers only, spatial layers only, "
                                    "or the cross-attention only."}),
                "projector_lr": ("FLOAT", {"default": d.projector_lr, "min": 0.0, "max": 1.0, "step": 1e-6,
                                 "round": False, "tooltip": "AdamW learning rate of stage 1."}),
                "finetune_lr": ("FLOAT", {"default": d.finetune_lr, "min": 0.0, "max": 1.0, "step": 1e-6,
                                "round": False, "tooltip": "AdamW learning rate of stage 2."}),
                "batch_size": ("INT", {"default": d.batch_size, "min": 1, "max": 256, "tooltip":
                               "Videos per micro-step."}),
                "grad_accum": ("INT", {"default": d.grad_accum, "min": 1, "max": 1024, "tooltip":
                               "Micro-steps per optimizer step (effective batch = batch_size x grad_accum)."}),
                "frames": ("INT", {"default": d.frames, "min": 1, "max": 128, "tooltip": "Frames per training clip."}),
                "frame_stride": ("INT", {"default": d.frame_stride, "min": 1, "max": 64, "tooltip":
                                 "Take every n-th source frame; the fps condition is the video's fps / stride."}),
                "width": ("INT", {"default": d.width, "min": SIZE_MULTIPLE, "max": 2048, "step": SIZE_MULTIPLE,
                          "tooltip": "Training width, a multiple of 64; videos are resized and centre-cropped."}),
                "height": ("INT", {"default": d.height, "min": SIZE_MULTIPLE, "max": 2048, "step": SIZE_MULTIPLE,
                           "tooltip": "Training height, a multiple of 64; videos are resized and centre-cropped."}),
                "precision": (list(PRECISIONS), {"default": d.precision, "tooltip": "Autocast precision. auto: bf16 "
                              "(or fp16) on a GPU, fp32 on the CPU. Frozen weights are kept in it on a GPU."}),
                "output_name": ("STRING", {"default": "videocrafter_i2v_trained", "tooltip": "Name of the results: "
                                "<name>.safetensors (stage 2), <name>_projector.safetensors (stage 1), and the run "
                                "folder output/videocrafter_training/<name> (states, loss_log.csv, loss_curve.png). A plain name, no folders."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": True, "tooltip":
                         "Seeds data order, clip positions, noise, timesteps and condition dropout."}),
            },
            "optional": {
                "clip_vision_name": (_clip_vision_names(), {"default": NONE, "tooltip": "OpenCLIP ViT-H-14 vision "
                                     "file from models/clip_vision; needed when ckpt_name is text-to-video."}),
                "projector_file": ("STRING", {"default": "", "tooltip": "Optional stage-1 result applied on top of "
                                   "ckpt_name before training, e.g. to run stage 2 after a separate stage 1: a file "
                                   "name in models/checkpoints or models/videocrafter (or a path in the input folder)."}),
                "cond_frame": (list(COND_FRAMES), {"default": d.cond_frame, "tooltip": "Conditioning image: the first "
                               "frame of the clip (as at inference) or a random frame of it."}),
                "text_dropout": ("FLOAT", {"default": d.text_dropout, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                 "Probability of training a sample with the empty prompt (classifier-free guidance)."}),
                "image_dropout": ("FLOAT", {"default": d.image_dropout, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "Probability of replacing the conditioning image by an all-zero image "
                                  "(in [-1,1]; what the sampler's negative uses) before CLIP and the projector."}),
                "gradient_checkpointing": ("BOOLEAN", {"default": d.gradient_checkpointing, "tooltip":
                                           "Recompute UNet blocks in the backward pass: far less memory, ~30% slower."}),
                "cache_latents": ("BOOLEAN", {"default": d.cache_latents, "tooltip": "Encode every video and its "
                                  "conditioning image once (each video then always gives the same clip). For small "
                                  "datasets: the cache is kept in memory."}),
                "save_every": ("INT", {"default": d.save_every, "min": 0, "max": 10**7, "tooltip":
                               "Save a resumable training state every n steps (0: only at stage ends)."}),
                "keep_states": ("INT", {"default": d.keep_states, "min": 1, "max": 100, "tooltip":
                                "How many of the newest training states to keep."}),
                "save_fp16": ("BOOLEAN", {"default": d.save_fp16, "tooltip": "Write the final checkpoint in float16."}),
                "sample_every": ("INT", {"default": d.sample_every, "min": 0, "max": 10**7, "tooltip":
                                 "Write a preview video every n steps to the run folder's samples/ (0: never): "
                                 "the first video's caption and first frame, faithful DDIM, cfg 12."}),
                "sample_steps": ("INT", {"default": d.sample_steps, "min": 1, "max": 1000, "tooltip":
                                 "DDIM steps of the preview videos."}),
                "save_to": (list(SAVE_TO), {"default": "checkpoints", "tooltip": "Where the results go: "
                            "models/checkpoints (ready for the loader) or the run folder in the output directory."}),
                "resume": ("BOOLEAN", {"default": True, "tooltip": "Continue the newest run of this output_name's "
                           "run folder (e.g. after an interrupt); refused if its checkpoint, stages or data changed. "
                           "Off: a new run beside the earlier ones (their states are kept)."}),
                "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace result files of the same name that "
                              "another run or model wrote. Off: such a name is refused before training starts."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def train(self, ckpt_name, data, stage, projector_steps, finetune_steps, finetune_layers, projector_lr,
              finetune_lr, batch_size, grad_accum, frames, frame_stride, width, height, precision, output_name,
              seed, clip_vision_name=NONE, projector_file="", cond_frame="first", text_dropout=0.05,
              image_dropout=0.05, gradient_checkpointing=True, cache_latents=False, save_every=500, keep_states=2,
              save_fp16=True, sample_every=0, sample_steps=25, save_to="checkpoints", resume=True, overwrite=False,
              unique_id=None):
        name = plain_file_name(output_name, "output_name", "videocrafter_i2v_trained")
        run_dir = os.path.join(folder_paths.get_output_directory(), "videocrafter_training", name)
        ckpt_dir = folder_paths.get_folder_paths("checkpoints")[0] if save_to == "checkpoints" else run_dir
        clip_vision = folder_paths.get_full_path("clip_vision", clip_vision_name) if clip_vision_name != NONE else ""
        device = comfy.model_management.get_torch_device()
        cfg = TrainConfig(
            checkpoint=checkpoint_path(ckpt_name), clip_vision=clip_vision or "", projector_file=_resolve_projector_file(projector_file),
            data=_resolve_data_path(data), frames=frames, frame_stride=frame_stride, height=height, width=width,
            cond_frame=cond_frame, stage=stage, projector_steps=projector_steps, finetune_steps=finetune_steps,
            finetune_layers=finetune_layers, projector_lr=projector_lr, finetune_lr=finetune_lr,
            batch_size=batch_size, grad_accum=grad_accum, text_dropout=text_dropout, image_dropout=image_dropout,
            precision=precision, gradient_checkpointing=gradient_checkpointing, cache_latents=cache_latents,
            device=str(device), seed=seed, output_dir=run_dir, checkpoint_dir=ckpt_dir, name=name,
            save_every=save_every, keep_states=keep_states, save_fp16=save_fp16, resume=resume,
            sample_every=sample_every, sample_steps=sample_steps, overwrite=overwrite)
        check_before_loading(cfg)  # a refused resume or an existing result fails before any model loads
        free_memory_for_training()
        # ComfyUI runs nodes under torch.inference_mode(): tensors made there can never join autograd,
        # so the models are built and trained outside it
        with torch.inference_mode(False), torch.enable_grad():
            models = VideoCrafterTrainingModels.from_files(cfg.checkpoint, cfg.clip_vision, cfg.projector_file, seed)
            trainer = Trainer(cfg, models, NodeProgress(cfg.total_steps(), unique_id))
            try:
                result = trainer.run()
            finally:
                del models, trainer
                free_memory_for_training()  # model management still holds the encoders this run loaded
        last = result.outputs.get("checkpoint") or result.outputs.get("projector_file") or ""
        return (pil_to_image(result.loss_curve), last)


NODE_CLASS_MAPPINGS = {"VideoCrafterTrainI2V": VideoCrafterTrainI2V}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoCrafterTrainI2V": "VideoCrafter Train I2V (two-stage)"}
