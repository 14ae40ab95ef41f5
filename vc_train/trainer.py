"""The training loop of every family the trainer trains, shared by the node and the command line.

`train(cfg, models)` takes the model glue (`TrainingModels`, built with ComfyUI by `vc_train/comfy_models.py`), runs
the stage plan with resume, gradient accumulation, autocast, data parallelism and checkpointing, and returns the
written files and the loss history. The loop is `Trainer`'s; its parts are the data (`batches.py`), where the
parameters live (`placement.py`), one stage's optimizer (`optimization.py`), states and resume (`run_states.py`,
`resume.py`), the run's files (`outputs.py`) and previews (`previews.py`). What a batch is and what the loss is per family is `vc_train/families.py`'s.
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

from . import lora as lora_adapters
from . import sharding
from .batches import TrainingBatches
from .config import TrainConfig
from ..vc_models.training_gate import training_entry
from ..vc_models.process_memory import peak_rss_bytes
from .distributed import Distributed
from .families import objective_for, check_plan
from .noise import NoiseSchedule, step_generator
from .optimization import StageOptimizer
from .outputs import RunOutputs, lora_file_tensors
from .placement import Placement, resolve_device
from .previews import Previews
from .resume import state_to_resume
from .run_states import RunStates
from .state import StateStore

log = logging.getLogger("vc_train")


class TrainingModels(Protocol):
    """What the trainer needs from the model glue. Encoders are frozen and run without grad."""
    unet: torch.nn.Module          # parameter names == checkpoint keys minus "model.diffusion_model."
    projector: object              # torch.nn.Module (names == checkpoint keys minus "image_proj_model.") or None
    alphas_cumprod: torch.Tensor
    scale_arr: object              # tensor or None
    schedule_roots: tuple          # stored (sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod), each tensor or None
    latent_channels: int
    family: object                 # the checkpoint's family (vc_models.families): it builds the objective
    parameterization: str          # "eps" | "v"
    interpolation: bool            # DynamiCrafter's interp_mode (start and end frame conditioned)
    default_fps: int               # the fps condition of the `images` stage's one-frame clips
    model_id: str                  # the registry id of the model training starts from
    info: object                   # its CheckpointInfo (the results' format names its variant)

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


def check_before_loading(cfg, entry=None, layout_unet=None):
    """The checks that need no model, run before the (slow) model loading: a model the trainer refuses, a plan
    or data that do not fit the model, a LoRA rank a targeted layer cannot take, a resume that would mix two
    trainings and results that would replace an existing file are refused here. `entry`: the checkpoint's registry
    entry (read from the file if None); `layout_unet(path)`: (UNet on the meta device, parameter kinds), the glue's
    (vc_train.comfy_models.layout_unet), for the LoRA layer sizes."""
    check_plan(cfg, entry or training_entry(cfg.checkpoint))
    if cfg.adapter == "lora" and layout_unet is not None:
        lora_adapters.targeted_layers(*layout_unet(cfg.checkpoint), cfg.lora_rank, cfg.lora_targets)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's
    outputs = RunOutputs(cfg)
    path = state_to_resume(cfg, StateStore(outputs.paths["states"]), world_size=world_size)
    if cfg.sharding == "fsdp":  # after the resume check: a sharded state names the world size it needs
        sharding.refuse_single_process(world_size)
    outputs.refuse_foreign(StateStore.run_of(path) if path else None)


def noise_schedule(models):
    """The training schedule of the models' checkpoint (its precise square roots where it has them)."""
    return NoiseSchedule(models.alphas_cumprod, models.scale_arr, *models.schedule_roots)


def weights_digest(params, names):
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        h.update(params[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Trainer:
    """The loop over the stage plan: optimizer steps, gradient accumulation, interrupts, states and results at
    their steps. Its parts: `batches` (the data), `placement` (where the parameters live and which train),
    `optimization` (the stage's optimizer), `states` (the run's states and its resume), `outputs` (results, logs,
    summary), `previews`. The stage gate and the resume check ran in `check_before_loading` before the models
    loaded (the front ends call it); the resume check runs once more with the data read."""

    def __init__(self, cfg: TrainConfig, models: TrainingModels, callbacks=None, dist=None):
        self.cfg, self.models = cfg, models
        self.callbacks = callbacks or Callbacks()
        self.device = resolve_device(cfg, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = dist or Distributed.from_env(self.device.type)
        self.plan = cfg.stage_plan()
        if not self.plan:
            raise ValueError("Nothing to train: the stage plan has no steps (projector_steps / finetune_steps are 0)")
        self.objective = objective_for(models, noise_schedule(models), cfg)
        self.placement = Placement(cfg, models, self.device, self.dist.world_size, self.plan)
        self.outputs = RunOutputs(cfg)
        self.states = RunStates(cfg, self.outputs, self.dist)
        self.batches = TrainingBatches(cfg, models, self.dist, self.objective.uses_image, self._check_interrupt)
        self.previews = Previews(cfg, models, self.objective, self.batches)
        self.step, self.history, self.step_times = 0, [], []
        self.optimization = None        # the current stage's StageOptimizer (None before the first stage)
        self.projector_trainable = False  # the current stage trains the projector
        self.interrupt = None  # the exception the host's check_interrupt raised, if it did

    # ------------------------------------------------------------ interrupts
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

    # ------------------------------------------------------------ stages, states, files
    def _set_stage(self, stage):
        trainable, self.projector_trainable = self.placement.set_stage(stage)
        self.optimization = StageOptimizer(self.cfg, stage, trainable, self.device, self.placement.amp_dtype,
                                           self.dist, self.placement.sharded)

    def _save_state(self, stage):
        self.states.save(self.step, stage, self.placement.weights_for_main(self.dist.is_main),
                         self.optimization.optimizer, self.optimization.scaler, self.batches, self.history,
                         self.placement.sharded)

    def _resume(self):
        """The optimizer state of the state this run continues (None: a new run), its weights, step, history and
        data position taken."""
        path = self.states.begin_run(self.batches.dataset_info)
        if not path:
            return None
        weights, optimizer_state, meta = self.states.load(path, self.placement.state_names)
        self.placement.load_weights(weights)
        self.step = meta["step"]
        self.history = [r for r in meta["history"] if r["step"] <= self.step]
        self.batches.stream.load_state_dict(meta["stream"])
        return optimizer_state

    def _write_stage_output(self, stage):
        weights = self.placement.weights_for_main(self.dist.is_main)
        if self.dist.is_main:
            self.outputs.write_stage_result(stage, self.models, weights, self.step, self.states.run_id,
                                            len(self.batches.dataset))
            log.info("Wrote %s output at step %d", stage, self.step)

    def _write_sample(self):
        if self.dist.is_main:
            # a LoRA run: base model | base + LoRA side by side, same seed
            lora = (lora_file_tensors(self.placement.state_weights(), self.cfg.lora_alpha)
                    if self.placement.adapter else None)
            self.outputs.written["last_sample"] = self.previews.write(self.step, lora)

    def _write_logs(self):
        if self.dist.is_main:
            self.outputs.write_logs(self.history)

    # ------------------------------------------------------------ the loop
    def _train_step(self, stage):
        cfg, models, batches = self.cfg, self.models, self.batches
        key_step = 0 if cfg.overfit_batch else self.step
        total_loss = 0.0
        for micro in range(cfg.grad_accum):
            g = step_generator(cfg.seed, key_step, self.dist.rank, micro)
            if cfg.overfit_batch:
                batches.stream.restart()
            batch = batches.next_batch(g)
            draws = self.objective.draw(batch.latents.shape[0], batch.latents.shape, g)
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))  # the model's own dropout
            terms = self.objective.terms(models.unet, models.projector, batch, draws, batches.empty_text,
                                         batches.zero_image_tokens, self.device, self.placement.amp_dtype,
                                         self.projector_trainable)
            loss = terms.loss / cfg.grad_accum
            self.optimization.backward(loss)
            total_loss += loss.item()
        self.optimization.step()
        return self.dist.mean(total_loss, self.device if self.device.type == "cuda" else "cpu")

    def run(self):
        cfg = self.cfg
        self.batches.build()
        optimizer_state = self._resume()
        total = cfg.total_steps()
        stage_end = 0
        for stage, steps in self.plan:
            stage_start, stage_end = stage_end, stage_end + steps
            if self.step >= stage_end:
                if self.step == stage_end and not self.outputs.has_result(stage):
                    # stopped between the stage's last step and its result: the state holds that result
                    self._write_stage_output(stage)
                continue
            self._set_stage(stage)
            if optimizer_state is not None and optimizer_state["stage"] == stage and self.step > stage_start:
                self.optimization.load(optimizer_state)
            optimizer_state = None
            while self.step < stage_end:
                with self._state_kept_if_interrupted(stage, f"Interrupted at step {self.step}: saving the training state"):
                    self._check_interrupt()
                started = time.perf_counter()
                position = self.batches.position()

                def back_to_the_last_full_step():  # stopped inside the step, before the optimizer moved
                    self.batches.rewind_to(position)
                    self.optimization.zero_grad()

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
                    self.history.append({"step": self.step, "stage": stage, "loss": loss, "lr": self.optimization.lr,
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
        placement, batches, dist = self.placement, self.batches, self.dist
        digests = dist.gather(weights_digest(placement.state_weights(), placement.state_names))
        optimizer_bytes = dist.gather(sharding.optimizer_state_bytes(self.optimization.optimizer.state_dict())
                                      if self.optimization is not None else 0)
        samples = dist.gather(sorted(batches.epoch0_samples))
        timed = self.step_times[1:] or self.step_times
        per_step = sum(timed) / len(timed) if timed else float("nan")
        rss_mb = peak_rss_bytes() / 2**20
        summary = {
            "step": self.step, "world_size": dist.world_size, "device": str(self.device),
            "samples_per_sec": (self.cfg.batch_size * self.cfg.grad_accum * dist.world_size / per_step
                                if timed else None),
            "peak_rss_mb_rank0": round(rss_mb, 1),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if self.device.type == "cuda" else None,
            "rank_weight_sha256": digests, "epoch0_indices_by_rank": samples,
            "sharding": self.cfg.sharding, "optimizer_state_bytes_by_rank": optimizer_bytes,
            "dataset_size": len(batches.dataset), "skipped": dict(batches.dataset.skipped),
            "probed_by_rank": batches.probed_by_rank, "run_id": self.states.run_id,
            "outputs": dict(self.outputs.written),
        }
        outputs = self.outputs.write_summary(summary, self.states.run_id) if dist.is_main else dict(self.outputs.written)
        return TrainResult(step=self.step, history=self.history, loss_curve=self.outputs.loss_curve(self.history),
                           outputs=outputs, summary=summary)


def train(cfg, models, callbacks=None, dist=None):
    return Trainer(cfg, models, callbacks, dist).run()
