"""Whether a saved training state may be continued with the current configuration.

A state belongs to a run: its start point, stage plan and data. Continuing it with another
checkpoint, other layers, another clip size or another dataset would silently mix two trainings,
so those changes are refused, with a message naming each change. Step counts of the stage the
state is in (and of later stages) may change: extending a run is the usual reason to resume.
"""
import os

from .config import TrainConfig
from .state import StateStore

# fields that define what a run trains on and how its data and noise are drawn
PLAN_FIELDS = ("checkpoint", "clip_vision", "projector_file", "finetune_layers", "seed", "batch_size",
               "grad_accum", "overfit_batch", "adapter", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets",
               "sharding")
DATA_FIELDS = ("data", "video_root", "frames", "frame_stride", "height", "width", "cond_frame")


def _stage_changes(saved, cfg, step, stage):
    old, new = saved.stage_plan(), cfg.stage_plan()
    old_names, new_names = [s for s, _ in old], [s for s, _ in new]
    if stage not in new_names or new_names[:len(old_names)] != old_names[:len(new_names)]:
        return [f"stages {old_names} -> {new_names}"]
    changes, at = [], 0
    for (name, steps), (_, old_steps) in zip(new, old):
        if name == stage:
            if at + steps < step:
                changes.append(f"{name}_steps {old_steps} -> {steps}, but the state is at step {step} "
                               f"(the {name} stage would end at {at + steps})")
            break
        if steps != old_steps:  # a finished stage of the run: its length is history
            changes.append(f"{name}_steps {old_steps} -> {steps} (the state is past that stage)")
        at += steps
    return changes


def resume_changes(meta, cfg, dataset, world_size=1):
    """[description of each change] between the state's run (`meta` of a saved state) and `cfg` +
    `dataset` ({"videos": usable count, "digest": dataset_digest}, None before the data is read) on
    `world_size` ranks; empty when it may be resumed."""
    saved_values = dict(meta.get("config") or {})
    saved = TrainConfig.from_dict({k: v for k, v in saved_values.items() if k in TrainConfig.__dataclass_fields__})
    changes = [f"{name} {getattr(saved, name)!r} -> {getattr(cfg, name)!r}"
               for name in PLAN_FIELDS + DATA_FIELDS if getattr(saved, name) != getattr(cfg, name)]
    changes += _stage_changes(saved, cfg, meta["step"], meta["stage"])
    saved_ranks = meta.get("world_size", 1)
    if cfg.sharding == "fsdp" and saved.sharding == "fsdp" and saved_ranks != world_size:
        changes.append(f"world size {saved_ranks} -> {world_size} (a sharded state holds one optimizer shard per "
                       f"rank: resume it with torchrun --nproc_per_node {saved_ranks})")
    old_data = meta.get("dataset")
    if dataset is not None and old_data and old_data.get("digest") != dataset["digest"]:
        changes.append(f"the usable videos or their captions ({old_data.get('videos')} -> {dataset['videos']} videos)")
    return changes


def resume_refusal(path, meta, changes):
    return (f"Cannot resume the training run in {os.path.dirname(path)} (state at step {meta['step']}): "
            f"{'; '.join(changes)}. Restore these settings to continue that run, or set resume to false "
            "to start a new run (the earlier run's states are kept).")


def state_to_resume(cfg, store, dataset=None, world_size=1):
    """The state this run continues: the newest run's latest state in `store` when `cfg.resume`, else None (a new
    run). A state whose run had another plan or data is refused, naming each change (`resume_changes`). The one
    decision, asked before the models load (`dataset` None: not read yet) and again when the run starts."""
    path = store.latest() if cfg.resume else None
    if path:
        _, _, meta = StateStore.load(path, weights=False)
        changes = resume_changes(meta, cfg, dataset, world_size)
        if changes:
            raise ValueError(resume_refusal(path, meta, changes))
    return path
