"""Stage-1 training results: a small safetensors with the projector and the image key/value
matrices under their full checkpoint names, applied on top of a checkpoint's state dict.

No ComfyUI imports (the loader node and the trainer both use it).
"""
import os

from .checkpoint_file import PROJECTOR_PREFIX, UNET_PREFIX, CheckpointError, check_dtypes

IMAGE_KV_SUFFIXES = (".attn2.to_k_ip.weight", ".attn2.to_v_ip.weight")


def is_projector_file_key(key):
    return key.startswith(PROJECTOR_PREFIX) or (key.startswith(UNET_PREFIX) and key.endswith(IMAGE_KV_SUFFIXES))


def apply_projector_file(sd, path):
    """Patch a raw checkpoint state dict (before `inspect_checkpoint`) with a stage-1 file, in place.

    The checkpoint must already have image cross-attention of the same shapes (an I2V checkpoint,
    or the trainer's converted T2V one); returns `sd`.
    """
    import safetensors.torch
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No projector file at {path}")
    name = os.path.basename(path)
    again = "Copy it again, or run stage 'projector' of VideoCrafter Train I2V again to write it."
    try:
        patch = safetensors.torch.load_file(path, device="cpu")
    except Exception as e:  # safetensors' own errors (header too small, ...) name no file
        raise CheckpointError(f"Could not read the projector file {name} ({os.path.getsize(path)} bytes): "
                              f"{type(e).__name__}: {e}. It is damaged or truncated. {again}") from e
    check_dtypes(patch, name, "projector weights", again)
    foreign = sorted(k for k in patch if not is_projector_file_key(k))
    if foreign or not any(k.startswith(PROJECTOR_PREFIX) for k in patch):
        raise ValueError(f"{name} is not a VideoCrafter projector file (expected only 'image_proj_model.*' and "
                         f"'*.attn2.to_k_ip/to_v_ip' tensors; found e.g. {foreign[:3] or sorted(patch)[:3]}).")
    missing = sorted(k for k in patch if k.startswith(UNET_PREFIX) and k not in sd)
    if missing:
        raise ValueError(f"{name} carries image cross-attention weights the checkpoint has no place for "
                         f"(e.g. {missing[0]}): apply it to an image-to-video checkpoint.")
    mismatched = [k for k in patch if k in sd and tuple(sd[k].shape) != tuple(patch[k].shape)]
    if mismatched:
        k = mismatched[0]
        raise ValueError(f"{name} does not fit this checkpoint: {k} is {list(patch[k].shape)} in the file and "
                         f"{list(sd[k].shape)} in the checkpoint (trained for another model size).")
    for key in [k for k in sd if k.startswith(PROJECTOR_PREFIX)]:
        del sd[key]  # the file's projector replaces the checkpoint's whole, even if its depth differs
    for key, value in patch.items():
        sd[key] = value
    return sd
