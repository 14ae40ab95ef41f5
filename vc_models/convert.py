"""Convert a released VideoCrafter `.ckpt` into `.safetensors` (optionally fp16). No ComfyUI imports."""
import os

import torch

from .atomic_file import write_safetensors, refuse_existing
from .checkpoint import inspect_checkpoint, inspect_turbo_unet, is_bare_turbo_unet, turbo_unet_info
from .checkpoint_file import load_state_dict, SCHEDULE_KEYS, DERIVED_SCHEDULE_KEYS


def convert_checkpoint(src, dst, fp16=False, overwrite=False):
    """Read `src` (any layout the loader reads), check it is VideoCrafter, write `dst` as safetensors.
    An existing `dst` is replaced only with overwrite=True (checked before the slow read).

    fp16 halves floating-point weights; the noise-schedule buffers stay float32. Buffers derived
    from the schedule are dropped (the loader recomputes them). Returns the detected CheckpointInfo.
    """
    if not overwrite:
        refuse_existing(dst, "The output file")
    sd = load_state_dict(src)
    if is_bare_turbo_unet(sd):
        # a released T2V-Turbo UNet (bare state dict): the same keys, for the turbo UNet loader
        info = turbo_unet_info(inspect_turbo_unet(sd, os.path.basename(src))[1], os.path.basename(src))
        out = safetensors_tensors(sd, fp16=fp16, keep_schedule=False)
    else:
        info = inspect_checkpoint(sd, os.path.basename(src))
        out = safetensors_tensors(sd, fp16=fp16)
    write_safetensors(out, dst, metadata={"videocrafter_variant": info.variant}, overwrite=overwrite)
    return info


def safetensors_tensors(sd, fp16=False, keep_schedule=True):
    """The tensors of a loaded checkpoint as safetensors stores them: buffers derived from the noise
    schedule dropped (the loader recomputes them), with `fp16` floating-point weights halved but the
    schedule buffers (betas, alphas_cumprod, scale_arr) kept in float32 unless `keep_schedule` is False."""
    out = {}
    for key, value in sd.items():
        if key in DERIVED_SCHEDULE_KEYS:
            continue
        if fp16 and value.is_floating_point() and not (keep_schedule and key in SCHEDULE_KEYS):
            value = value.to(torch.float16)
        # tensors of a pickle may share storage; safetensors wants each on its own
        out[key] = value.clone() if not value.is_contiguous() or value.untyped_storage().nbytes() != value.nbytes else value
    return out
