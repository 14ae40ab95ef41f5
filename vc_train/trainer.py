"""The training loop of every family the trainer trains, shared by the node and the command line.

`train(cfg, models)` takes the model glue (`TrainingModels`, built with ComfyUI by
`vc_models/training.py`), runs the stage plan with resume, gradient accumulation, autocast,
data parallelism and checkpointing, and returns the written files and the loss history. What a batch is and what
the loss is per family is `vc_train/families.py`'s.
"""
import contextlib
import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch

from . import stages
from . import lora as lora_adapters
from . import sharding
from .config import TrainConfig
from ..vc_models.atomic_file import atomic_write, refuse_existing, write_safetensors
from ..vc_models.training_gate import training_entry
from ..vc_models.process_memory import peak_rss_bytes
from .data import VideoDataset, ImageDataset, SampleStream, list_training_items, DatasetError, dataset_digest
from .distributed import Distributed
from .families import Batch, objective_for, check_plan
from .objective import NoiseSchedule, step_generator
from .plot import render_loss_curve
from .resume import resume_changes
from .state import StateStore, new_run_id, write_loss_csv, write_json, write_video

log = logging.getLogger("vc_train")


class TrainingModels(Protocol):
    """What the trainer needs from the model glue. Encoders are frozen and run without grad."""
    unet: torch.nn.Module          # parameter names == checkpoint keys minus "model.diffusion_model."
    projector: object              # torch.nn.Module (names == checkpoint keys minus "image_proj_model.") or None
    alphas_cumprod: torch.Tensor
    scale_arr: object              # tensor or None
    schedule_roots: tuple          # stored (sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod), each tensor or None
    latent_channels: int
    train_stages: tuple            # the stages the model accepts (its registry entry's)
    family: str                    # the registry family: "t2v" | "i2v" | "dynamicrafter"
    parameterization: str          # "eps" | "v"
    interpolation: bool            # DynamiCrafter's interp_mode (start and end frame conditioned)
    fs_is_frame_stride: bool       # DynamiCrafter 256: fs is the frame stride
    default_fps: int               # the fps condition of the `images` stage's one-frame clips
    model_id: str                  # the registry id of the model training starts from

    def unet_parameter_kinds(self) -> dict: ...            # name -> "temporal" | "spatial"
    def original_parameter(self, full_name) -> torch.Tensor: ...  # float32 CPU value as loaded
    def encode_text(self, captions) -> torch.Tensor: ...   # [B, 77, C]
    def encode_video(self, frames) -> torch.Tensor: ...    # [T, H, W, 3] 0..1 -> [C, T, h, w] model space
    def image_tokens(self, images) -> torch.Tensor: ...    # [B, H, W, 3] 0..1 -> [B, 257, W]
    def projector_file_tensors(self, trained) -> dict: ...        # trained: {"unet.…"/"projector.…": fp32}
    def checkpoint_tensors(self, trained, dtype) -> dict: ...     # the whole checkpoint
    def sample_video(self, caption, image, end_image, fps, frames, height, width, **sampling) -> torch.Tensor: ...


class Callbacks:
    """Hooks for the host (the node's progress bar and interrupt, the CLI's log)."""

    def check_interrupt(self):
        """Raise to stop: the trainer saves a state and re-raises."""

    def is_interrupt(self, error):
        """True for the host's stop request raised inside a step (e.g. by its model loading)."""
        return isinstance(error, KeyboardInterrupt)

    def on_step(self, step, total, loss, samples_per_sec):
        pass


@dataclass
class TrainResult:
    step: int
    history: list
    loss_curve: object                      # PIL image
    outputs: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def resolve_device(cfg, dist_local_rank=0):
    if cfg.device != "auto":
        return torch.device(cfg.device)
    if torch.cuda.is_available():
        return torch.device("cuda", dist_local_rank)
    return torch.device("cpu")


def autocast_dtype(cfg, device):
    if cfg.precision == "fp32" or (cfg.precision == "auto" and device.type == "cpu"):
        return None
    if cfg.precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]


RUN_METADATA_KEY = "videocrafter_train_run"  # in the results' safetensors metadata: which run wrote them


class RunOutputs:
    """Where a run's files go, and which results it owns: each result records the run that wrote it, and a
    run replaces only its own earlier results (a resumed run), anything else only with cfg.overwrite."""

    def __init__(self, cfg):
        self.cfg = cfg
        ckpt_dir = cfg.checkpoint_dir or cfg.output_dir
        self.paths = {
            "projector_file": os.path.join(ckpt_dir, f"{cfg.name}_projector.safetensors"),
            "checkpoint": os.path.join(ckpt_dir, f"{cfg.name}.safetensors"),
            "lora": os.path.join(ckpt_dir, f"{cfg.name}.safetensors"),
            "loss_csv": os.path.join(cfg.output_dir, "loss_log.csv"),
            "loss_curve": os.path.join(cfg.output_dir, "loss_curve.png"),
            "summary": os.path.join(cfg.output_dir, "summary.json"),
            "states": os.path.join(cfg.output_dir, "states"),
        }
        # the result each stage writes: a LoRA run's finetune stage writes the LoRA instead of a checkpoint
        self.stage_output = {"projector": "projector_file",
                             **{stage: "lora" if cfg.adapter == "lora" else "checkpoint" for stage in stages.UNET_STAGES}}

    @staticmethod
    def owner(path):
        """The run id recorded in a result file, or None (another model, or not the trainer's)."""
        try:
            from safetensors import safe_open
            with safe_open(path, "pt") as f:
                metadata = f.metadata() or {}
        except Exception:
            return None
        return metadata.get(RUN_METADATA_KEY)

    def may_replace(self, path, run_id):
        return self.cfg.overwrite or (run_id is not None and self.owner(path) == run_id)

    def refuse_foreign(self, run_id):
        """Refuse before training when a result of the stage plan exists and is not run `run_id`'s (None: a new run)."""
        for stage, _ in self.cfg.stage_plan():
            path = self.paths[self.stage_output[stage]]
            if os.path.exists(path) and not self.may_replace(path, run_id):
                refuse_existing(path, "The training result")

    def write_result(self, stage, tensors, step, run_id, model_id, extra_meta=None):
        """The stage's result file, marked as run `run_id`'s; returns (output key, path)."""
        key = self.stage_output[stage]
        path = self.paths[key]
        meta = {"step": str(step), "stage": stage, "format": f"videocrafter-{model_id}", **(extra_meta or {}),
                RUN_METADATA_KEY: run_id}
        return key, write_safetensors(tensors, path, meta, overwrite=self.may_replace(path, run_id))

    def existing_results(self, run_id):
        """{output key: path} of run `run_id`'s result files on disk (also those an earlier, resumed session of it
        wrote); an unrelated file that happens to have a result's name is not one (a projector-only run named like
        an existing checkpoint reported that checkpoint as its result)."""
        return {key: self.paths[key] for key in self.stage_output.values()
                if os.path.exists(self.paths[key]) and self.owner(self.paths[key]) == run_id}


def resume_refusal(path, meta, changes):
    return (f"Cannot resume the training run in {os.path.dirname(path)} (state at step {meta['step']}): "
            f"{'; '.join(changes)}. Restore these settings to continue that run, or set resume to false "
            "to start a new run (the earlier run's states are kept).")


def check_before_loading(cfg, entry=None, layout_unet=None):
    """The checks that need no model, run before the (slow) model loading: a model the trainer refuses, a plan
    or data that do not fit the model, a LoRA rank a targeted layer cannot take, a resume that would mix two
    trainings and results that would replace an existing file are refused here. `entry`: the checkpoint's registry
    entry (read from the file if None); `layout_unet(path)`: (UNet on the meta device, parameter kinds), the glue's
    (vc_models.training.layout_unet), for the LoRA layer sizes."""
    check_plan(cfg, entry or training_entry(cfg.checkpoint))
    if cfg.adapter == "lora" and layout_unet is not None:
        lora_adapters.targeted_layers(*layout_unet(cfg.checkpoint), cfg.lora_rank, cfg.lora_targets)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's
    outputs = RunOutputs(cfg)
    store = StateStore(outputs.paths["states"])
    path = store.latest() if cfg.resume else None
    run_id = None
    if path:
        _, _, meta = StateStore.load(path, weights=False)
        changes = resume_changes(meta, cfg, dataset=None, world_size=world_size)
        if changes:
            raise ValueError(resume_refusal(path, meta, changes))
        run_id = store.run_of(path)
    if cfg.sharding == "fsdp":  # after the resume check: a sharded state names the world size it needs
        sharding.refuse_single_process(world_size)
    outputs.refuse_foreign(run_id)


def noise_schedule(models):
    """The training schedule of the models' checkpoint (its precise square roots where it has them)."""
    return NoiseSchedule(models.alphas_cumprod, models.scale_arr, *models.schedule_roots)


def _named_trainable_modules(models, adapter=None):
    out = {}
    for prefix, module in (("unet", models.unet), ("projector", models.projector)):
        for name, p in (module.named_parameters() if module is not None else ()):
            out[f"{prefix}.{name}"] = p
    if adapter is not None:
        out.update({f"lora.{name}": p for name, p in adapter.named_adapter_parameters().items()})
    return out


def weights_digest(params, names):
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        h.update(params[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Trainer:
    def __init__(self, cfg: TrainConfig, models: TrainingModels, callbacks=None, dist=None):
        self.cfg, self.models = cfg, models
        self.callbacks = callbacks or Callbacks()
        self.device = resolve_device(cfg, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = dist or Distributed.from_env(self.device.type)
        self.amp_dtype = autocast_dtype(cfg, self.device)
        # frozen weights in half precision only where it pays (GPU); the CPU keeps float32. Sharded: float32
        # shards (1/N of the memory), gathered block by block in the autocast dtype
        sharded = cfg.sharding == "fsdp"
        half_frozen = self.amp_dtype and self.device.type == "cuda" and not sharded
        self.frozen_dtype = self.amp_dtype if half_frozen else torch.float32
        self.sharder = None
        if sharded:
            self.sharder = sharding.Sharding(self.device, self.dist.world_size,
                                     self.amp_dtype if self.device.type == "cuda" else None)
        self.sharded = False  # the UNet is sharded (at the first stage's placement)
        self.run_outputs = RunOutputs(cfg)
        self.paths = self.run_outputs.paths
        self.store = StateStore(self.paths["states"], cfg.keep_states)
        self.schedule = noise_schedule(models)
        self.objective = objective_for(models, self.schedule, cfg)
        self.kinds = models.unet_parameter_kinds()
        # a LoRA run: adapters beside the UNet (a rank no targeted layer allows is refused here, before training)
        self.adapter = (lora_adapters.LoraAdapters(models.unet, self.kinds, cfg.lora_rank, cfg.lora_alpha,
                                                   cfg.lora_dropout, cfg.lora_targets, cfg.seed)
                        if cfg.adapter == "lora" else None)
        self.params = _named_trainable_modules(models, self.adapter)
        self.projector_names = [n for n, _ in models.projector.named_parameters()] if models.projector is not None else []
        self.plan = cfg.stage_plan()
        if not self.plan:
            raise ValueError("Nothing to train: the stage plan has no steps (projector_steps / finetune_steps are 0)")
        refused = [stage for stage, _ in self.plan if stage not in models.train_stages]
        if refused:
            raise ValueError(f"This model trains the stages {list(models.train_stages)} only; the plan asks for {refused}.")
        self.state_names = self._state_names()
        self.frozen_master = {}  # fp32 CPU values of state parameters while held frozen in half precision
        self.text_cache, self.clip_cache = {}, {}
        self.history, self.step = [], 0
        self.epoch0_samples = []
        self.step_times = []
        self.outputs = {}
        self.interrupt = None  # the exception the host's check_interrupt raised, if it did

    # ------------------------------------------------------------ which parameters train
    def _stage_names(self, stage):
        """Sorted full names the stage updates: with a LoRA adapter, a UNet stage trains only the adapters (the
        `images` stage those of spatial layers, as it trains the spatial layers of a full finetune)."""
        if stage in stages.UNET_STAGES and self.adapter is not None:
            names = sorted(f"lora.{n}" for n in self.adapter.named_adapter_parameters()
                           if stage != "images" or self.kinds.get(n.rsplit(".lora_", 1)[0] + ".weight") != "temporal")
            if not names:
                raise ValueError(f"lora_targets {self.cfg.lora_targets!r} select no spatial layer: the 'images' stage "
                                 "trains spatial layers only (add attn1, attn2 or ff)")
            return names
        return stages.trainable_names(stage, self.kinds, self.projector_names, self.cfg.finetune_layers)

    def _state_names(self):
        if self.adapter is None:
            return stages.state_names(self.plan, self.kinds, self.projector_names, self.cfg.finetune_layers)
        others = [(stage, n) for stage, n in self.plan if stage not in stages.UNET_STAGES]
        names = stages.state_names(others, self.kinds, self.projector_names, self.cfg.finetune_layers) if others else []
        return sorted(set(names).union(*(self._stage_names(stage) for stage, _ in self.plan if stage in stages.UNET_STAGES)))

    # ------------------------------------------------------------ data
    def _build_dataset(self):
        cfg, dist = self.cfg, self.dist
        # an error on any rank reaches every rank at the next collective step: all fail together
        if cfg.stage == "images":
            items = dist.on_main(lambda: list_training_items(cfg))
            dataset = ImageDataset(items, cfg.height, cfg.width, self.models.default_fps)
        else:
            items = dist.on_main(lambda: list_training_items(cfg))
            dataset = VideoDataset(items, cfg.frames, cfg.frame_stride, cfg.height, cfg.width, cfg.cond_frame)
        if cfg.probe_videos:
            # every rank opens its share of the videos; all ranks then keep the same items
            mine = range(dist.rank, len(dataset.items), dist.world_size)
            shares = dist.on_all(lambda: dataset.probe_indices(mine))
            self.probed_by_rank = [len(share) for share in shares]
            dataset.apply_probe([r for share in shares for r in share], cfg.data)
        elif not dataset.items:
            raise DatasetError(f"No training videos found in {cfg.data}")
        self.dataset_info = {"videos": len(dataset.items), "digest": dataset_digest(dataset.items)}
        self.dataset = dataset
        self.stream = SampleStream(len(dataset), cfg.seed, self.dist.rank, self.dist.world_size)

    def _text(self, captions):
        if not self.cfg.cache_text:
            return self.models.encode_text(captions).float()
        missing = [c for c in dict.fromkeys(captions) if c not in self.text_cache]
        if missing:
            for caption, emb in zip(missing, self.models.encode_text(missing).float().cpu()):
                self.text_cache[caption] = emb
        return torch.stack([self.text_cache[c] for c in captions])

    def _clip(self, index, generator):
        """(latent [C,T,h,w], image tokens [257,W] or None, clip) of a dataset item (the clip without its frames)."""
        if self.cfg.cache_latents and index in self.clip_cache:
            return self.clip_cache[index]
        if self.cfg.cache_latents:  # a cached item keeps one clip: drawn from its own seed
            generator = step_generator(self.cfg.seed, "cache", index)
        try:
            clip = self.dataset.load(index, generator)
        except Exception as e:  # a video that broke after probing: skip it, keep counting
            self.dataset.skipped["failed_at_load"] += 1
            log.warning("Skipping %s: %s: %s", self.dataset.items[index].path, type(e).__name__, e)
            return None
        with torch.no_grad():
            latent = self.models.encode_video(clip.frames).float().cpu()
            tokens = self.models.image_tokens(clip.cond_image[None])[0].float().cpu() if self.objective.uses_image else None
        clip.frames = clip.cond_image = None  # only the latent is kept (and cached)
        item = (latent, tokens, clip)
        if self.cfg.cache_latents:
            self.clip_cache[index] = item
        return item

    def _check_interrupt(self):
        try:
            self.callbacks.check_interrupt()
        except BaseException as error:
            self.interrupt = error  # the host's stop request, whatever type it raises
            raise

    def _is_interrupt(self, error):
        return error is self.interrupt or self.callbacks.is_interrupt(error)

    @contextlib.contextmanager
    def _state_kept_if_interrupted(self, stage, message, rollback=None):
        """On the host's stop request inside the block: undo the unfinished step (`rollback`), save the training
        state and the logs, then let the stop go on. Any other error passes through untouched."""
        try:
            yield
        except BaseException as error:
            if self._is_interrupt(error):
                if rollback is not None:
                    rollback()
                log.info(message)
                self._save_state(stage)
                self._write_logs()
            raise

    def _batch(self, generator):
        items, failures = [], 0
        while len(items) < self.cfg.batch_size:
            epoch, index = self.stream.take(1)[0]
            item = self._clip(index, generator)
            if item is None:
                failures += 1
                # as many failures in a row as there are videos: the data cannot feed a step
                if failures >= len(self.dataset):
                    raise DatasetError(
                        f"{failures} videos in a row failed to load from {self.cfg.data} (skipped so far: "
                        f"{dict(self.dataset.skipped)}); see the warnings above for each file. "
                        "Check the files decode (or turn probe_videos on to skip broken ones upfront).")
                self._check_interrupt()  # decoding can be slow: Cancel is honoured between videos
                continue
            items.append(item)
            if epoch == 0:
                self.epoch0_samples.append(index)
        clips = [i[2] for i in items]
        return Batch(latents=torch.stack([i[0] for i in items]), context=self._text([c.caption for c in clips]),
                     fps=torch.tensor([c.fps for c in clips], dtype=torch.float32),
                     frame_stride=torch.tensor([c.frame_stride for c in clips]),
                     image_tokens=torch.stack([i[1] for i in items]) if self.objective.uses_image else None,
                     cond_index=torch.tensor([c.cond_index for c in clips]))

    # ------------------------------------------------------------ model placement
    def _set_stage(self, stage):
        names = set(self._stage_names(stage))
        in_state = set(self.state_names)
        for name, p in self.params.items():
            trainable = name in names
            if not self.sharded:  # sharded parameters were placed once, before sharding, in float32
                self._place(name, p, trainable, in_state)
            p.requires_grad_(trainable)
            p.grad = None
        if not self.sharded:
            for buf_owner in (self.models.unet, self.models.projector, self.adapter):
                if buf_owner is not None:
                    buf_owner.to(self.device)
        if self.sharder is not None and not self.sharded:
            self.sharder.shard(self.models.unet)  # replaces the UNet's parameters by their shards
            self.sharded = True
            self.params = _named_trainable_modules(self.models, self.adapter)
        for module in (self.models.unet, self.models.projector):
            if module is not None:
                module.train()  # the temporal convolutions carry dropout 0.1, as the original
        self.models.unet.gradient_checkpointing = self.cfg.gradient_checkpointing
        self.trainable = [self.params[n] for n in sorted(names)]
        self.projector_trainable = any(n.startswith("projector.") for n in names)
        cfg = self.cfg
        lr = cfg.projector_lr if stage == "projector" else cfg.finetune_lr
        self.lr = lr
        self.optimizer = torch.optim.AdamW(self.trainable, lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                           weight_decay=cfg.weight_decay,
                                           # foreach over hundreds of sharded tensors: a first step of minutes (CPU)
                                           foreach=not self.sharded)
        self.scaler = torch.amp.GradScaler("cuda") if (self.amp_dtype == torch.float16 and self.device.type == "cuda") else None

    def _place(self, name, p, trainable, in_state):
        """Trained parameters in float32 on the device, frozen ones in the frozen dtype (exact values of those a
        state holds kept aside)."""
        if trainable and name in self.frozen_master:
            p.data = self.frozen_master.pop(name).to(self.device, torch.float32)
        elif trainable and p.dtype != torch.float32:
            # held in half precision and never trained: take the full-precision original
            p.data = self.models.original_parameter(name).to(self.device, torch.float32)
        elif not trainable and p.dtype != self.frozen_dtype:
            if name in in_state:  # keep its exact value for states and exports
                self.frozen_master[name] = p.detach().float().cpu().clone()
            p.data = p.data.to(self.device, self.frozen_dtype)
        else:
            p.data = p.data.to(self.device)

    # ------------------------------------------------------------ state
    def _state_weights(self):
        """fp32 CPU values of every parameter the plan may change (exact even while held in half precision).
        Sharded: the full values on every rank (a collective: every rank calls it)."""
        return {n: sharding.full_value(self.frozen_master.get(n, self.params[n]).detach()).float().cpu()
                for n in self.state_names}

    def _weights_for_main(self):
        """The state weights on rank 0 (None elsewhere); every rank takes part in gathering sharded ones."""
        return self._state_weights() if (self.dist.is_main or self.sharded) else None

    def _save_state(self, stage):
        weights = self._weights_for_main()
        optimizer = self.optimizer.state_dict()
        tmp = None
        if self.sharded:  # each rank writes its optimizer shards into the state rank 0 then completes
            tmp = self.dist.on_main(lambda: self.store.begin(self.step))
            self.store.write_rank_part(tmp, self.dist.rank, sharding.local_optimizer_state(optimizer))
            self.dist.barrier()
            optimizer = None
        if self.dist.is_main:
            optimizer_state = {"optimizer": optimizer, "stage": stage,
                               "scaler": self.scaler.state_dict() if self.scaler else None,
                               "torch_rng": torch.get_rng_state()}
            meta = {"step": self.step, "stage": stage, "stream": self.stream.state_dict(),
                    "seed": self.cfg.seed, "world_size": self.dist.world_size, "history": self.history,
                    "config": self.cfg.as_dict(), "skipped": dict(self.dataset.skipped),
                    "dataset": self.dataset_info}
            path = self.store.save(self.step, weights, optimizer_state, meta, tmp)
            log.info("Saved training state %s", path)
        self.dist.barrier()

    def _find_run(self):
        """(state path or None, run id): the newest run's latest state when resuming, else a new run.
        A state whose run had another plan or data is refused, naming what changed."""
        path = self.store.latest() if self.cfg.resume else None
        if not path:
            run_id = new_run_id()
        else:
            _, _, meta = StateStore.load(path, weights=False)
            changes = resume_changes(meta, self.cfg, self.dataset_info, self.dist.world_size)
            if changes:
                raise ValueError(resume_refusal(path, meta, changes))
            run_id = self.store.run_of(path)
        self.run_outputs.refuse_foreign(run_id if path else None)
        return path, run_id

    def _resume(self):
        path, self.store.run_id = self.dist.on_main(self._find_run)
        log.info("Training run %s in %s", self.store.run_id, self.store.folder)
        if not path:
            return None
        weights, optimizer_state, meta = StateStore.load(path)
        missing = [n for n in self.state_names if n not in weights]
        if missing:
            raise ValueError(f"Training state {path} does not fit this configuration (missing {missing[:3]}); "
                             "use another output_dir or resume: false")
        with torch.no_grad():
            for name, value in weights.items():
                if name in self.params:
                    self.params[name].data = value.to(self.params[name].dtype)
        if self.sharder is not None:
            optimizer_state["optimizer"] = StateStore.load_rank_part(path, self.dist.rank)
        self.step = meta["step"]
        self.history = [r for r in meta["history"] if r["step"] <= self.step]
        self.stream.load_state_dict(meta["stream"])
        if meta.get("world_size", 1) != self.dist.world_size:
            log.warning("Resuming a %d-rank state on %d ranks: the data order changes", meta["world_size"], self.dist.world_size)
        log.info("Resumed from %s at step %d", path, self.step)
        return optimizer_state

    # ------------------------------------------------------------ outputs
    def _write_stage_output(self, stage):
        weights = self._weights_for_main()
        if not self.dist.is_main:
            return
        extra_meta = None
        if stage == "projector":
            tensors = self.models.projector_file_tensors(weights)
        elif self.adapter is not None:
            tensors = self._lora_tensors(weights, torch.float16 if self.cfg.save_fp16 else torch.float32)
            cfg = self.cfg
            extra_meta = lora_adapters.metadata(self.models.model_id, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout,
                                                cfg.lora_targets, self.step, len(self.dataset))
        else:
            dtype = torch.float16 if self.cfg.save_fp16 else torch.float32
            tensors = self.models.checkpoint_tensors(weights, dtype)
        key, path = self.run_outputs.write_result(stage, tensors, self.step, self.store.run_id, self.models.info.variant,
                                                  extra_meta)
        self.outputs[key] = path
        log.info("Wrote %s output at step %d", stage, self.step)

    def _lora_tensors(self, weights, dtype=torch.float32):
        """The adapters' values among the state `weights` in the LoRA file's format (core Load LoRA's keys)."""
        values = {n[len("lora."):]: v for n, v in weights.items() if n.startswith("lora.")}
        return lora_adapters.export_tensors(values, self.cfg.lora_alpha, dtype)

    def _sample_condition(self):
        """The preview videos' conditions, fixed for the whole run: caption, image [H, W, 3] 0..1 (the first dataset
        clip's conditioning frame, or `sample_image`), end image (its last frame: interpolation), the fps condition."""
        cfg = self.cfg
        clip = self.dataset.load(0, step_generator(cfg.seed, "sample"))
        image, caption = clip.cond_image, cfg.sample_prompt or clip.caption
        if cfg.sample_image:
            import numpy as np
            from PIL import Image
            from .data import resize_center_crop
            with Image.open(cfg.sample_image) as img:
                pixels = torch.from_numpy(np.asarray(img.convert("RGB")).copy())
            image = resize_center_crop(pixels[None], cfg.height, cfg.width)[0]
        fps = float(self.objective.fps_condition(torch.tensor([clip.fps]), torch.tensor([clip.frame_stride]))[0])
        end_image = clip.frames[-1] if self.models.interpolation else None
        return dict(caption=caption, image=image, end_image=end_image, fps=fps), clip.fps

    def _write_sample(self):
        if not self.dist.is_main:
            return
        cfg = self.cfg
        if not hasattr(self, "sample_condition"):
            self.sample_condition = self._sample_condition()
        condition, video_fps = self.sample_condition
        self.models.unet.eval()
        try:
            # a LoRA run: base model | base + LoRA side by side, same seed
            lora = self._lora_tensors(self._state_weights()) if self.adapter else None
            frames = self.models.sample_video(frames=cfg.frames, height=cfg.height, width=cfg.width, lora=lora,
                                              steps=cfg.sample_steps, cfg=cfg.sample_cfg, seed=cfg.seed, **condition)
        finally:
            self.models.unet.train()
        path = os.path.join(cfg.output_dir, "samples", f"step_{self.step:08d}.mp4")
        self.outputs["last_sample"] = write_video(path, frames, video_fps)
        log.info("Wrote sample %s", path)

    def _stage_starts(self):
        starts, at = [], 0
        for _, n in self.plan:
            starts.append(at)
            at += n
        return starts[1:]

    def loss_curve(self):
        return render_loss_curve([r["step"] for r in self.history], [r["loss"] for r in self.history],
                                 self._stage_starts(), title=f"{self.cfg.name}: loss")

    def _write_logs(self):
        if self.dist.is_main:
            write_loss_csv(self.paths["loss_csv"], self.history)
            image = self.loss_curve()
            atomic_write(self.paths["loss_curve"], lambda tmp: image.save(tmp, format="PNG"))

    # ------------------------------------------------------------ the loop
    def _train_step(self, stage):
        cfg, models = self.cfg, self.models
        key_step = 0 if cfg.overfit_batch else self.step
        total_loss = 0.0
        for micro in range(cfg.grad_accum):
            g = step_generator(cfg.seed, key_step, self.dist.rank, micro)
            if cfg.overfit_batch:
                self.stream.epoch, self.stream.offset, self.stream._shard = 0, 0, None
            batch = self._batch(g)
            draws = self.objective.draw(batch.latents.shape[0], batch.latents.shape, g)
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))  # the model's own dropout
            terms = self.objective.terms(models.unet, models.projector, batch, draws, self.empty_text,
                                         self.zero_image_tokens, self.device, self.amp_dtype, self.projector_trainable)
            loss = terms.loss / cfg.grad_accum
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            total_loss += loss.item()
        if self.sharded:  # the shards' gradients arrive averaged (reduce-scatter); the rest is replicated
            self.dist.average_gradients(sharding.replicated(self.trainable))
        else:
            self.dist.average_gradients(self.trainable)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if cfg.max_grad_norm > 0 and self.sharded:
            sharding.clip_grad_norm(self.trainable, cfg.max_grad_norm)
        elif cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.dist.mean(total_loss, self.device if self.device.type == "cuda" else "cpu")

    def _unconditional_inputs(self):
        with torch.no_grad():
            self.empty_text = self.models.encode_text([""]).float().cpu()[0]
            self.zero_image_tokens = None
            if self.objective.uses_image:
                grey = torch.full((1, self.cfg.height, self.cfg.width, 3), 0.5)  # all-zero image in [-1, 1]
                self.zero_image_tokens = self.models.image_tokens(grey).float().cpu()[0]

    def run(self):
        cfg = self.cfg
        self._build_dataset()
        self._unconditional_inputs()
        optimizer_state = self._resume()
        total = cfg.total_steps()
        stage_end = 0
        for stage, steps in self.plan:
            stage_start, stage_end = stage_end, stage_end + steps
            if self.step >= stage_end:
                if self.step == stage_end and not os.path.exists(self.paths[self.run_outputs.stage_output[stage]]):
                    # stopped between the stage's last step and its result: the state holds that result
                    self._write_stage_output(stage)
                continue
            self._set_stage(stage)
            if optimizer_state is not None and optimizer_state["stage"] == stage and self.step > stage_start:
                saved = optimizer_state["optimizer"]
                if self.sharded:
                    saved = sharding.sharded_optimizer_state(saved, self.trainable)
                self.optimizer.load_state_dict(saved)
                if self.scaler and optimizer_state.get("scaler"):
                    self.scaler.load_state_dict(optimizer_state["scaler"])
            optimizer_state = None
            while self.step < stage_end:
                with self._state_kept_if_interrupted(stage, f"Interrupted at step {self.step}: saving the training state"):
                    self._check_interrupt()
                started = time.perf_counter()
                stream_state, samples_seen = self.stream.state_dict(), len(self.epoch0_samples)

                def back_to_the_last_full_step():  # stopped inside the step, before the optimizer moved
                    self.stream.load_state_dict(stream_state)
                    del self.epoch0_samples[samples_seen:]
                    self.optimizer.zero_grad(set_to_none=True)

                with self._state_kept_if_interrupted(
                        stage, f"Interrupted during step {self.step + 1}: saving the state of step {self.step}",
                        rollback=back_to_the_last_full_step):
                    loss = self._train_step(stage)
                elapsed = time.perf_counter() - started
                self.step += 1
                self.step_times.append(elapsed)
                sps = cfg.batch_size * cfg.grad_accum * self.dist.world_size / max(elapsed, 1e-9)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"Loss is {loss} at step {self.step}: lower the learning rate "
                                             "or use bf16/fp32 precision")
                if self.step % max(1, cfg.log_every) == 0 or self.step == stage_end:
                    self.history.append({"step": self.step, "stage": stage, "loss": loss, "lr": self.lr,
                                         "samples_per_sec": round(sps, 4)})
                # stopped after a full step (e.g. during a preview video): keep the steps since the last state
                with self._state_kept_if_interrupted(stage, f"Interrupted after step {self.step}: saving the training state"):
                    self.callbacks.on_step(self.step, total, loss, sps)
                    if cfg.sample_every and self.step % cfg.sample_every == 0:
                        self._write_sample()
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < stage_end:
                    self._save_state(stage)
                    self._write_logs()
            # the stage's steps are kept; a resume writes the result
            with self._state_kept_if_interrupted(stage, f"Interrupted while writing the {stage} result: saving the training state"):
                self._write_stage_output(stage)
            self._save_state(stage)
            self._write_logs()
        return self._finish()

    def _finish(self):
        digests = self.dist.gather(weights_digest(self._state_weights(), self.state_names))
        optimizer_bytes = self.dist.gather(sharding.optimizer_state_bytes(self.optimizer.state_dict())
                                           if hasattr(self, "optimizer") else 0)
        samples = self.dist.gather(sorted(self.epoch0_samples))
        timed = self.step_times[1:] or self.step_times
        per_step = sum(timed) / len(timed) if timed else float("nan")
        rss_mb = peak_rss_bytes() / 2**20
        summary = {
            "step": self.step, "world_size": self.dist.world_size, "device": str(self.device),
            "samples_per_sec": (self.cfg.batch_size * self.cfg.grad_accum * self.dist.world_size / per_step
                                if timed else None),
            "peak_rss_mb_rank0": round(rss_mb, 1),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if self.device.type == "cuda" else None,
            "rank_weight_sha256": digests, "epoch0_indices_by_rank": samples,
            "sharding": self.cfg.sharding, "optimizer_state_bytes_by_rank": optimizer_bytes,
            "dataset_size": len(self.dataset), "skipped": dict(self.dataset.skipped),
            "probed_by_rank": getattr(self, "probed_by_rank", None), "run_id": self.store.run_id,
            "outputs": {k: v for k, v in self.outputs.items()},
        }
        if self.dist.is_main:
            self.outputs["loss_csv"], self.outputs["loss_curve"] = self.paths["loss_csv"], self.paths["loss_curve"]
            self.outputs = {**self.run_outputs.existing_results(self.store.run_id), **self.outputs}
            summary["outputs"] = dict(self.outputs)
            self.outputs["summary"] = write_json(self.paths["summary"], summary)
        return TrainResult(step=self.step, history=self.history, loss_curve=self.loss_curve(),
                           outputs=self.outputs, summary=summary)


def train(cfg, models, callbacks=None, dist=None):
    return Trainer(cfg, models, callbacks, dist).run()
