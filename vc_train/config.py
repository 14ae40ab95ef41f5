"""Training configuration: one dataclass, read from YAML (CLI) or built from node inputs."""
from dataclasses import dataclass, fields, asdict

from ..vc_models.video_size import multiple_error
from .lora import DEFAULT_TARGETS, validate_options as validate_lora_options

# VideoCrafter1 I2V: projector, finetune, both (projector then finetune); text-to-video and DynamiCrafter: videos
# (the UNet on video clips); text-to-video: images (the spatial layers on an image folder, VideoCrafter2's scheme)
STAGES = ("projector", "finetune", "both", "videos", "images")
FINETUNE_LAYERS = ("all", "temporal", "spatial", "cross_attention")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COND_FRAMES = ("first", "random")
ADAPTERS = ("none", "lora")
SHARDINGS = ("ddp", "fsdp")


@dataclass
class TrainConfig:
    # ---- start point
    checkpoint: str = ""            # the model to train: any family the trainer takes (docs/training.md)
    clip_vision: str = ""           # OpenCLIP ViT-H visual tower file: upgrades a text-to-video checkpoint to I2V
    projector_file: str = ""        # optional stage-1 result applied on top of `checkpoint`
    # ---- data
    data: str = ""                  # folder of videos (or images, stage images) + same-name .txt, or a .csv / .jsonl
    video_root: str = ""            # base folder for relative paths in a CSV/JSONL (default: its folder)
    # folders every data file (the folder, the list and each video it names) must lie in; empty: anywhere. The node
    # sets ComfyUI's input folder: a list uploaded there cannot make the trainer read files from elsewhere
    data_roots: tuple = ()
    frames: int = 16
    frame_stride: int = 4           # fps condition = clip fps / frame_stride
    height: int = 320
    width: int = 512
    cond_frame: str = "first"       # conditioning image: first sampled frame, or a random one (rand_cond_frame)
    probe_videos: bool = True       # open every video once at start to skip unreadable / too-short ones
    # ---- schedule
    # the model's stages: projector | finetune | both (VideoCrafter1 I2V, the default); videos (text-to-video,
    # DynamiCrafter); images (text-to-video)
    stage: str = "both"
    projector_steps: int = 1000
    finetune_steps: int = 1000      # steps of the UNet stage (finetune, videos, images)
    finetune_layers: str = "all"    # all | temporal | spatial | cross_attention (adapter none)
    # ---- what the finetune stage trains: the UNet weights (none) or LoRA adapters beside them (vc_train/lora.py)
    adapter: str = "none"           # none | lora
    lora_rank: int = 16
    lora_alpha: float = 16.0        # the adapter's output is scaled by lora_alpha / lora_rank
    lora_dropout: float = 0.0       # dropout on the adapter's input
    lora_targets: str = DEFAULT_TARGETS  # comma-separated groups of vc_train.lora.TARGET_GROUPS
    # ---- multi-process: ddp replicates the model (gradients averaged); fsdp shards parameters, gradients
    # and optimizer states per UNet block (torch FSDP2; full finetunes)
    sharding: str = "ddp"
    projector_lr: float = 1e-4
    finetune_lr: float = 1e-5
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0      # 0 disables clipping
    batch_size: int = 1             # per rank, per micro-step
    grad_accum: int = 1
    # classifier-free guidance dropout (the original's uncond_prob is 0.05)
    text_dropout: float = 0.05      # caption -> empty prompt embedding
    image_dropout: float = 0.05     # conditioning image -> all-zero image in [-1,1] (grey), then CLIP + projector
    # ---- efficiency
    precision: str = "auto"         # auto: bf16 autocast on a GPU that has it, else fp16; fp32 on the CPU
    gradient_checkpointing: bool = True
    cache_latents: bool = False     # encode each video (and its conditioning image) once; fixes its clip
    cache_text: bool = True         # text embeddings per caption, computed once
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    seed: int = 0
    overfit_batch: bool = False     # sanity check: every step reuses step 0's clips, noise, timesteps, dropout
    # ---- output
    output_dir: str = "output/videocrafter_train"
    checkpoint_dir: str = ""        # where the stage results go (default: output_dir)
    name: str = "videocrafter_trained"  # the results' file names (<name>.safetensors, <name>_projector.safetensors)
    save_every: int = 500           # training-state interval in optimizer steps (0: only at the end)
    keep_states: int = 2
    log_every: int = 1
    save_fp16: bool = True          # final checkpoint in float16
    sample_every: int = 0           # preview video every n steps (0: never); rank 0, <output_dir>/samples/
    sample_prompt: str = ""         # default: the caption of the first dataset video
    sample_image: str = ""          # image file; default: the first frame of the first dataset video
    sample_steps: int = 25          # DDIM steps of the preview (eta 1, the original's cfg 12)
    sample_cfg: float = 12.0
    resume: bool = True             # continue the newest run in output_dir/states (false: a new run beside it)
    overwrite: bool = False         # replace result files of the same name that another run or model wrote

    def __post_init__(self):
        self.validate()

    def validate(self):
        def choice(name, options):
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {list(options)}, got {getattr(self, name)!r}")
        choice("stage", STAGES)
        choice("finetune_layers", FINETUNE_LAYERS)
        choice("precision", PRECISIONS)
        choice("cond_frame", COND_FRAMES)
        choice("adapter", ADAPTERS)
        choice("sharding", SHARDINGS)
        if self.adapter == "lora":
            validate_lora_options(self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_targets)
            if self.sharding == "fsdp":
                raise ValueError("sharding 'fsdp' is for full finetunes (adapter none): a LoRA's trainable "
                                 "state is small, use sharding 'ddp'")
        if self.sharding == "fsdp" and self.sample_every:
            raise ValueError("sharding 'fsdp' writes no preview videos (each rank holds a shard of the UNet): "
                             "set sample_every to 0, or sample the result file")
        for name in ("frames", "frame_stride", "height", "width", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("height", "width"):
            error = multiple_error(name, getattr(self, name))
            if error:
                raise ValueError(error)
        if self.stage == "images" and self.finetune_layers not in ("all", "spatial"):
            raise ValueError(f"stage 'images' trains the spatial layers (VideoCrafter2's scheme); finetune_layers "
                             f"{self.finetune_layers!r} does not apply: set it to 'spatial' (or 'all')")
        for name in ("text_dropout", "image_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")

    def stage_plan(self):
        """[(stage name, steps)] in the order they run."""
        plan = []
        if self.stage in ("projector", "both"):
            plan.append(("projector", self.projector_steps))
        if self.stage in ("finetune", "both"):
            plan.append(("finetune", self.finetune_steps))
        if self.stage in ("videos", "images"):
            plan.append((self.stage, self.finetune_steps))
        return [(s, n) for s, n in plan if n > 0]

    def total_steps(self):
        return sum(n for _, n in self.stage_plan())

    def as_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown training options {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path, overrides=None):
        import yaml
        with open(path) as f:
            values = yaml.safe_load(f) or {}
        values.update(overrides or {})
        return cls.from_dict(values)
