"""The training gate: which models the trainer trains, decided once from the family's stages
(`vc_models.families.Family.trainable`, `train_refusal`). The node, the command line and the trainer ask here.

No ComfyUI imports: it reads the file's layout only (no weights), so it runs before any model loads.
"""
import os

from . import registry
from .checkpoint import inspect_checkpoint, is_bare_turbo_unet
from .checkpoint_file import CheckpointError, read_layout


def refuse_untrainable(entry, name):
    """The trainer runs the stages of the entry's family; a model whose family has none (ToonCrafter, T2V-Turbo)
    is refused, saying why (`train_refusal`)."""
    family = entry.family
    if not family.trainable:
        trainable = ", ".join(e.description for e in registry.MODELS if e.family.trainable)
        why = f": {family.train_refusal}" if family.train_refusal else ""
        raise CheckpointError(f"{name} is a {entry.description} checkpoint: the trainer does not train this "
                              f"model{why}. Start from one of: {trainable}.")


def training_entry(path):
    """The registry entry of a training start point from the file's layout alone (no weights read, so before any
    model loads); a model the trainer refuses (`refuse_untrainable`) or an unknown file is a CheckpointError."""
    name = os.path.basename(path)
    layout = read_layout(path)
    if is_bare_turbo_unet(layout):  # a UNet alone: the model released as one (its family decides, not its tensors)
        refuse_untrainable(next(e for e in registry.MODELS if e.release is not None and e.release.bare_unet), name)
    entry = inspect_checkpoint(layout, name).entry
    refuse_untrainable(entry, name)
    return entry
