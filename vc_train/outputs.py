"""A run's files besides its states: the stage results (projector file, checkpoint or LoRA), the loss log and curve,
the summary. Only rank 0 writes them; every file goes through the pack's atomic writer."""
import os

import torch

from . import lora as lora_adapters
from . import stages
from ..vc_models.atomic_file import atomic_write, refuse_existing, write_safetensors
from .plot import render_loss_curve
from .state import write_json, write_loss_csv

RUN_METADATA_KEY = "videocrafter_train_run"  # in the results' safetensors metadata: which run wrote them


def lora_file_tensors(weights, alpha, dtype=torch.float32):
    """The adapters' values among the state `weights` ({"lora.…": tensor, …}) in the LoRA file's format (core Load
    LoRA's keys)."""
    values = {n[len("lora."):]: v for n, v in weights.items() if n.startswith("lora.")}
    return lora_adapters.export_tensors(values, alpha, dtype)


class RunOutputs:
    """Where a run's files go, which results it owns, and what this session wrote: each result records the run
    that wrote it, and a run replaces only its own earlier results (a resumed run), anything else only with
    cfg.overwrite."""

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
        self.written = {}  # {output key: path} of the files this session wrote (results, "last_sample")

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

    def has_result(self, stage):
        return os.path.exists(self.paths[self.stage_output[stage]])

    def write_result(self, stage, tensors, step, run_id, model_id, extra_meta=None):
        """The stage's result file, marked as run `run_id`'s; returns (output key, path)."""
        key = self.stage_output[stage]
        path = self.paths[key]
        meta = {"step": str(step), "stage": stage, "format": f"videocrafter-{model_id}", **(extra_meta or {}),
                RUN_METADATA_KEY: run_id}
        return key, write_safetensors(tensors, path, meta, overwrite=self.may_replace(path, run_id))

    def write_stage_result(self, stage, models, weights, step, run_id, dataset_size):
        """Stage `stage`'s result from the state `weights` (fp32, by full name): the projector file, a LoRA run's
        LoRA, or the whole checkpoint."""
        cfg = self.cfg
        dtype = torch.float16 if cfg.save_fp16 else torch.float32
        extra_meta = None
        if stage == "projector":
            tensors = models.projector_file_tensors(weights)
        elif cfg.adapter == "lora":
            tensors = lora_file_tensors(weights, cfg.lora_alpha, dtype)
            extra_meta = lora_adapters.metadata(models.model_id, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout,
                                                cfg.lora_targets, step, dataset_size)
        else:
            tensors = models.checkpoint_tensors(weights, dtype)
        key, path = self.write_result(stage, tensors, step, run_id, models.info.variant, extra_meta)
        self.written[key] = path

    def existing_results(self, run_id):
        """{output key: path} of run `run_id`'s result files on disk (also those an earlier, resumed session of it
        wrote); an unrelated file that happens to have a result's name is not one (a projector-only run named like
        an existing checkpoint reported that checkpoint as its result)."""
        return {key: self.paths[key] for key in self.stage_output.values()
                if os.path.exists(self.paths[key]) and self.owner(self.paths[key]) == run_id}

    def loss_curve(self, history):
        """The loss curve image of `history` ([{"step", "loss", …}]), a line where each later stage starts."""
        starts, at = [], 0
        for _, steps in self.cfg.stage_plan():
            starts.append(at)
            at += steps
        return render_loss_curve([r["step"] for r in history], [r["loss"] for r in history], starts[1:],
                                 title=f"{self.cfg.name}: loss")

    def write_logs(self, history):
        write_loss_csv(self.paths["loss_csv"], history)
        image = self.loss_curve(history)
        atomic_write(self.paths["loss_curve"], lambda tmp: image.save(tmp, format="PNG"))

    def write_summary(self, summary, run_id):
        """The summary file, its "outputs" every file of run `run_id`; returns {output key: path} of them all."""
        outputs = {**self.written, "loss_csv": self.paths["loss_csv"], "loss_curve": self.paths["loss_curve"]}
        outputs = {**self.existing_results(run_id), **outputs}
        summary["outputs"] = dict(outputs)
        outputs["summary"] = write_json(self.paths["summary"], summary)
        return outputs
