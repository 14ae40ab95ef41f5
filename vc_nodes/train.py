"""VideoCrafter Train (every family the trainer trains) and VideoCrafter Train I2V (the two-stage VideoCrafter1
image-to-video graph): the trainer as nodes, the same core as scripts/vc_train.py."""
import logging
import os
from dataclasses import fields

import numpy as np
import torch

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..vc_train.config import TrainConfig, STAGES, FINETUNE_LAYERS, PRECISIONS, COND_FRAMES, ADAPTERS
from ..vc_models.video_size import SIZE_MULTIPLE
from ..vc_train.lora import TARGET_GROUPS
from ..vc_train.trainer import Trainer, Callbacks, RunOutputs, check_before_loading
from ..vc_models.training_gate import training_entry
from ..vc_train.comfy_models import VideoCrafterTrainingModels, free_memory_for_training, layout_unet
from .loader import FOLDER, checkpoint_names, checkpoint_path, files_named
from .safe_paths import absolute_paths_allowed, resolve_input_path, plain_file_name

log = logging.getLogger("vc_train")
NONE = "none"
SAVE_TO = ("checkpoints", "output")


def _clip_vision_names():
    return [NONE] + folder_paths.get_filename_list("clip_vision")


def _resolve_data_path(path):
    """Inside ComfyUI's input folder (see safe_paths)."""
    if not path.strip():
        raise ValueError("Set 'data' to a folder of videos (stage 'images': of images) with .txt captions, or a "
                         ".csv/.jsonl list.")
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


def refuse_undeclared(node_class, options):
    """ComfyUI hands a node every linked input of a prompt, declared or not: a link to a TrainConfig field the node
    does not offer (video_root, sample_image, output_dir...) would set it. Refused, naming the inputs."""
    declared = {name for _, name, _ in INPUTS}
    undeclared = sorted(set(options) - declared)
    if undeclared:
        raise ValueError(f"{node_class.define_schema().display_name} has no input(s) {undeclared}: remove "
                         f"those links from the prompt (its inputs are {sorted(declared)}).")


def refuse_shadowing(cfg, models_folder):
    """A result the node writes into a model folder must be the only file of its name the loaders list: another
    file of that name in another folder would shadow it, or be shadowed by it. Refused before training."""
    outputs = RunOutputs(cfg)
    kinds = ("loras",) if models_folder == "loras" else (FOLDER, "checkpoints")
    for stage, _ in cfg.stage_plan():
        target = outputs.paths[outputs.stage_output[stage]]
        name = os.path.basename(target)
        others = [path for path in files_named(name, kinds) if os.path.realpath(path) != os.path.realpath(target)]
        if others:
            raise ValueError(f"output_name {cfg.name!r} would write {target}, but the loaders also list {others[0]} "
                             "under that name (one of the two would load in place of the other): choose another "
                             "output_name, or move that file.")


def pil_to_image(img):
    """PIL RGB -> ComfyUI IMAGE [1, H, W, 3] in 0..1."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]


class TrainingNode(io.ComfyNode):
    """What the two training nodes share: they differ in their schema (id, names, the stages offered). Each
    declares its own schema on a class of its own: ComfyUI caches a node's description on its class."""
    STAGE_CHOICES = STAGES
    # what a node dropped fresh shows: the stage most of its models train, and a name without a family in it
    DEFAULT_STAGE = "videos"
    DEFAULT_OUTPUT_NAME = "videocrafter_trained"

    @classmethod
    def execute(cls, ckpt_name, output_name, clip_vision_name=NONE, save_to="checkpoints", **options):
        """`options`: the TrainConfig fields among the inputs; a field a prompt leaves out keeps its default."""
        refuse_undeclared(cls, options)
        unique_id = cls.hidden.unique_id if cls.hidden is not None else None  # the node's id, for its progress text
        name = plain_file_name(output_name, "output_name", cls.DEFAULT_OUTPUT_NAME)
        run_dir = os.path.join(folder_paths.get_output_directory(), "videocrafter_training", name)
        # a LoRA goes where core's Load LoRA lists them, a checkpoint where the loader does
        models_folder = "loras" if options.get("adapter") == "lora" else "checkpoints"
        ckpt_dir = folder_paths.get_folder_paths(models_folder)[0] if save_to == "checkpoints" else run_dir
        clip_vision = folder_paths.get_full_path("clip_vision", clip_vision_name) if clip_vision_name != NONE else ""
        options.update(data=_resolve_data_path(options.get("data", "")),
                       projector_file=_resolve_projector_file(options.get("projector_file", "")),
                       # the files a data list names stay inside the input folder too (unless the owner allowed more)
                       data_roots=() if absolute_paths_allowed() else (folder_paths.get_input_directory(),))
        cfg = TrainConfig(**options, checkpoint=checkpoint_path(ckpt_name), clip_vision=clip_vision or "",
                          device=str(comfy.model_management.get_torch_device()), output_dir=run_dir,
                          checkpoint_dir=ckpt_dir, name=name)
        if save_to == "checkpoints":
            refuse_shadowing(cfg, models_folder)
        entry = training_entry(cfg.checkpoint)  # the model from the file's layout: a refused model fails here
        if cfg.stage not in cls.STAGE_CHOICES:
            raise ValueError(f"This node trains the stages {list(cls.STAGE_CHOICES)}; use 'VideoCrafter Train' for "
                             f"stage {cfg.stage!r}.")
        check_before_loading(cfg, entry, layout_unet)  # a plan or data the model cannot train, a refused resume or an existing
        # result fail before any model loads
        free_memory_for_training()
        # ComfyUI runs nodes under torch.inference_mode(): tensors made there can never join autograd,
        # so the models are built and trained outside it
        with torch.inference_mode(False), torch.enable_grad():
            models = VideoCrafterTrainingModels.from_files(cfg.checkpoint, cfg.clip_vision, cfg.projector_file, cfg.seed)
            trainer = Trainer(cfg, models, NodeProgress(cfg.total_steps(), unique_id))
            try:
                result = trainer.run()
            finally:
                del models, trainer
                free_memory_for_training()  # model management still holds the encoders this run loaded
        last = result.outputs.get("lora") or result.outputs.get("checkpoint") or result.outputs.get("projector_file") or ""
        return io.NodeOutput(pil_to_image(result.loss_curve), last)


class VideoCrafterTrain(TrainingNode):
    @classmethod
    def define_schema(cls):
        return train_schema(
            cls, "VideoCrafterTrain", "VideoCrafter Train",
            "Trains the model of ckpt_name in the stages its family has: VideoCrafter2 / VideoCrafter1 "
            "text-to-video 'videos' (the UNet, or its temporal layers, on video clips) then 'images' (the "
            "spatial layers on an image folder, VideoCrafter2's scheme); DynamiCrafter 256/512/1024 and the "
            "512 interpolation model 'videos' (UNet and image projector, the original objective); "
            "VideoCrafter1 image-to-video 'projector' / 'finetune' / 'both'. A stage the model does not have "
            "is refused naming those it has. Resumes from its last saved state.")


class VideoCrafterTrainI2V(TrainingNode):
    """The VideoCrafter1 image-to-video graph's node (train_i2v.json and graphs saved with it): its stages only."""
    STAGE_CHOICES = ("projector", "finetune", "both")
    DEFAULT_STAGE = "both"
    DEFAULT_OUTPUT_NAME = "videocrafter_i2v_trained"

    @classmethod
    def define_schema(cls):
        return train_schema(
            cls, "VideoCrafterTrainI2V", "VideoCrafter Train I2V (two-stage)",
            "Trains VideoCrafter1 image-to-video in the paper's two stages: 'projector' trains the image "
            "projector and the image key/value matrices with the video model frozen; 'finetune' trains the "
            "UNet with projector and text encoder fixed. Starts from an I2V checkpoint, or a T2V "
            "(VideoCrafter2) checkpoint plus a CLIP vision file. Resumes from its last saved state. "
            "'VideoCrafter Train' trains the other families.")


def train_schema(node_class, node_id, display_name, description):
    """The schema both training nodes share: the inputs of INPUTS (the stages `node_class` offers), two outputs."""
    return io.Schema(
        node_id=node_id,
        display_name=display_name,
        category="VideoCrafter/training",
        description=description,
        inputs=[_node_input(name, options, node_class, section == "optional") if name in CONFIG_FIELDS
                else NODE_ONLY[name](node_class, section == "optional") for section, name, options in INPUTS],
        outputs=[
            io.Image.Output(display_name="loss_curve", tooltip=(
                "The loss curve so far (raw and smoothed; a red line where a stage starts).")),
            io.String.Output(display_name="result_path", tooltip=(
                "The file the last stage wrote: the full checkpoint, or the projector file after stage 'projector'.")),
        ],
        hidden=[io.Hidden.unique_id],
        is_output_node=True,
    )


CONFIG_FIELDS = {f.name: f for f in fields(TrainConfig)}
WIDGET_TYPES = {int: io.Int, float: io.Float, bool: io.Boolean, str: io.String}
CHOICES = {"finetune_layers": FINETUNE_LAYERS, "precision": PRECISIONS, "cond_frame": COND_FRAMES, "adapter": ADAPTERS}
STEPS = {"min": 0, "max": 10**7}
SIZE = {"min": SIZE_MULTIPLE, "max": 2048, "step": SIZE_MULTIPLE}
RATE = {"min": 0.0, "max": 1.0, "step": 1e-6, "round": False}
PROBABILITY = {"min": 0.0, "max": 1.0, "step": 0.01}


def _node_input(name, options, node_class, optional):
    """A TrainConfig field as a widget: its type and default from the dataclass, range and tooltip from INPUTS."""
    options = dict(options)
    default = options.pop("default", CONFIG_FIELDS[name].default)
    if name == "stage":
        return io.Combo.Input(name, options=list(node_class.STAGE_CHOICES), default=node_class.DEFAULT_STAGE,
                              optional=optional, **options)
    if name in CHOICES:
        return io.Combo.Input(name, options=list(CHOICES[name]), default=default, optional=optional, **options)
    return WIDGET_TYPES[CONFIG_FIELDS[name].type].Input(name, default=default, optional=optional, **options)


# inputs that are not TrainConfig fields (the node maps them onto fields itself)
NODE_ONLY = {
    "ckpt_name": lambda node_class, optional: io.Combo.Input(
        "ckpt_name", options=checkpoint_names(), optional=optional, tooltip=(
            "Start point, the model to train: VideoCrafter2 / VideoCrafter1 text-to-video (alone: stages "
            "videos/images; with clip_vision_name: upgraded to image-to-video), DynamiCrafter 256/512/1024 or 512 "
            "interpolation, VideoCrafter1 I2V. ToonCrafter and T2V-Turbo are refused (the originals define no such "
            "training).")),
    "output_name": lambda node_class, optional: io.String.Input(
        "output_name", default=node_class.DEFAULT_OUTPUT_NAME, optional=optional, tooltip=(
            "Name of the results: <name>.safetensors (stage 2: a checkpoint, or a LoRA in models/loras), "
            "<name>_projector.safetensors (stage 1), and the run folder output/videocrafter_training/<name> "
            "(states, loss_log.csv, loss_curve.png). A plain name, no folders.")),
    "clip_vision_name": lambda node_class, optional: io.Combo.Input(
        "clip_vision_name", options=_clip_vision_names(), default=NONE, optional=optional, tooltip=(
            "OpenCLIP ViT-H-14 vision file from models/clip_vision: upgrades a text-to-video ckpt_name to "
            "image-to-video (stages projector/finetune). Leave 'none' otherwise.")),
    "save_to": lambda node_class, optional: io.Combo.Input(
        "save_to", options=list(SAVE_TO), default="checkpoints", optional=optional, tooltip=(
            "Where the results go: models/checkpoints (ready for the loader; a LoRA: models/loras, ready for Load "
            "LoRA) or the run folder in the output directory.")),
}

# (section, name, widget options) in the node's widget order (saved workflows depend on it); names
# that are TrainConfig fields take their type and default from it
INPUTS = [
    ("required", "ckpt_name", None),
    ("required", "data", {"default": "videocrafter_train", "tooltip": "A folder of videos with same-name .txt "
     "captions, or a .csv/.jsonl of (path, caption) rows (WebVid style); stage 'images': a folder of images with "
     "captions. Relative paths are inside ComfyUI's input folder (absolute paths only where the server allows them)."}),
    ("required", "stage", {"tooltip": "VideoCrafter1 I2V: projector (stage 1), finetune (stage 2), both (1 then 2). "
     "Text-to-video: videos (finetune_layers of the UNet on clips), images (the spatial layers on an image folder). "
     "DynamiCrafter: videos. Each runs finetune_steps at finetune_lr (projector: projector_steps, projector_lr)."}),
    ("required", "projector_steps", {**STEPS, "tooltip": "Optimizer steps of stage 1 (projector + image key/value)."}),
    ("required", "finetune_steps", {**STEPS, "tooltip": "Optimizer steps of the UNet stage (finetune, videos, "
     "images)."}),
    ("required", "finetune_layers", {"tooltip": "UNet layers the finetune / videos stage trains: all (DynamiCrafter: "
     "with its image projector), temporal layers only, spatial layers only, or the cross-attention only."}),
    ("required", "projector_lr", {**RATE, "tooltip": "AdamW learning rate of stage 1."}),
    ("required", "finetune_lr", {**RATE, "tooltip": "AdamW learning rate of the UNet stage."}),
    ("required", "batch_size", {"min": 1, "max": 256, "tooltip": "Videos per micro-step."}),
    ("required", "grad_accum", {"min": 1, "max": 1024, "tooltip": "Micro-steps per optimizer step (effective "
     "batch = batch_size x grad_accum)."}),
    ("required", "frames", {"min": 1, "max": 128, "tooltip": "Frames per training clip."}),
    ("required", "frame_stride", {"min": 1, "max": 64, "tooltip": "Take every n-th source frame; the fps "
     "condition is the video's fps / stride (DynamiCrafter 512/1024: fs = fps // stride; 256: fs = the stride)."}),
    ("required", "width", {**SIZE, "tooltip": "Training width, a multiple of 64; videos are resized and "
     "centre-cropped."}),
    ("required", "height", {**SIZE, "tooltip": "Training height, a multiple of 64; videos are resized and "
     "centre-cropped."}),
    ("required", "precision", {"tooltip": "Autocast precision. auto: bf16 (or fp16) on a GPU, fp32 on the CPU. "
     "Frozen weights are kept in it on a GPU."}),
    ("required", "output_name", None),
    ("required", "seed", {"min": 0, "max": 2**31 - 1, "control_after_generate": True, "tooltip": "Seeds data "
     "order, clip positions, noise, timesteps and condition dropout."}),
    ("optional", "clip_vision_name", None),
    ("optional", "projector_file", {"tooltip": "Optional stage-1 result applied on top of ckpt_name before "
     "training, e.g. to run stage 2 after a separate stage 1: a file name in models/checkpoints or "
     "models/videocrafter (or a path in the input folder)."}),
    ("optional", "cond_frame", {"tooltip": "Conditioning image: the first frame of the clip (as at inference) or "
     "a random frame of it (DynamiCrafter's rand_cond_frame). Interpolation: first (and the last frame)."}),
    ("optional", "text_dropout", {**PROBABILITY, "tooltip": "Probability of training a sample with the empty "
     "prompt (classifier-free guidance)."}),
    ("optional", "image_dropout", {**PROBABILITY, "tooltip": "Probability of replacing the conditioning image by "
     "an all-zero image (in [-1,1]; what the sampler's negative uses) before CLIP and the projector. DynamiCrafter "
     "draws once as the original: text dropped below 2x text_dropout, image from image_dropout to 3x it."}),
    ("optional", "gradient_checkpointing", {"tooltip": "Recompute UNet blocks in the backward pass: far less "
     "memory, ~30% slower."}),
    ("optional", "cache_latents", {"tooltip": "Encode every video and its conditioning image once (each video "
     "then always gives the same clip). For small datasets: the cache is kept in memory."}),
    ("optional", "save_every", {**STEPS, "tooltip": "Save a resumable training state every n steps (0: only at "
     "stage ends)."}),
    ("optional", "keep_states", {"min": 1, "max": 100, "tooltip": "How many of the newest training states of the "
     "run to keep."}),
    ("optional", "save_fp16", {"tooltip": "Write the final checkpoint in float16."}),
    ("optional", "sample_every", {**STEPS, "tooltip": "Write a preview video every n steps to the run folder's "
     "samples/ (0: never): the first clip's caption and conditioning frame(s), the model's own sampler, cfg 12."}),
    ("optional", "sample_steps", {"min": 1, "max": 1000, "tooltip": "DDIM steps of the preview videos."}),
    ("optional", "save_to", None),
    ("optional", "resume", {"tooltip": "Continue the newest run of this output_name's run folder (e.g. after an "
     "interrupt); refused if its checkpoint, stages or data changed. Off: a new run beside the earlier ones (their "
     "states are kept)."}),
    ("optional", "overwrite", {"tooltip": "Replace result files of the same name that another run or model wrote. "
     "Off: such a name is refused before training starts."}),
    ("optional", "adapter", {"tooltip": "What the finetune stage trains: none = the UNet weights of finetune_layers "
     "(a full checkpoint); lora = LoRA adapters beside the frozen UNet, written to models/loras for core 'Load LoRA "
     "(model only)' (use a larger finetune_lr, e.g. 1e-4). The preview videos then show base | base + LoRA."}),
    ("optional", "lora_rank", {"min": 1, "max": 1024, "tooltip": "LoRA rank (at most min(inputs, outputs) of every "
     "targeted layer)."}),
    ("optional", "lora_alpha", {"min": 0.001, "max": 4096.0, "step": 0.001, "round": False, "tooltip": "LoRA alpha: "
     "the adapter's output is scaled by alpha / rank."}),
    ("optional", "lora_dropout", {"min": 0.0, "max": 0.99, "step": 0.01, "tooltip": "Dropout on the adapters' "
     "input during training."}),
    ("optional", "lora_targets", {"tooltip": "Comma-separated layer groups that get adapters: "
     + "; ".join(f"{k} = {v}" for k, v in TARGET_GROUPS.items()) + "."}),
]


NODES = [VideoCrafterTrain, VideoCrafterTrainI2V]
