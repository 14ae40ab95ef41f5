"""Reading VideoCrafter checkpoint files: the released layouts, unwrapped and renamed into one.

What a file holds is `vc_models.checkpoint`'s business. No ComfyUI imports: the trainer, the downloader and
the command-line tools use this too.
"""
import os
import zipfile

import torch

from .noise_schedule import TIMESTEPS, scaled_linear_betas

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."
VISION_PREFIX = "embedder.model."
PROJECTOR_PREFIX = "image_proj_model."
DEEPSPEED_PREFIX = "_forward_module."

# Keys the pack reads from a checkpoint but does not turn into parameters, in one place.
# - the schedule buffers other than betas/alphas_cumprod/scale_arr are all derived from those;
# - `embedder.model.` carries a whole OpenCLIP model, of which only the visual tower is used
#   (the I2V text conditioning comes from `cond_stage_model.`);
# - OpenCLIP's `logit_scale` (and an `attn_mask` buffer some exports carry).
DERIVED_SCHEDULE_KEYS = (
    "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)
SCHEDULE_KEYS = ("betas", "alphas_cumprod", "scale_arr")


def is_ignored_key(key):
    """True for checkpoint tensors the pack deliberately leaves unused."""
    if key in DERIVED_SCHEDULE_KEYS:
        return True
    if key.startswith(VISION_PREFIX):
        return not key[len(VISION_PREFIX):].startswith("visual.")
    if key.startswith(TEXT_PREFIX):
        return key[len(TEXT_PREFIX):] in ("logit_scale", "attn_mask")
    return False


class CheckpointError(ValueError):
    """A file that cannot be used as a VideoCrafter checkpoint; the message says why and what to do."""


# The released 256 file names the frame-stride embedding as below; the original loader renames it. MotionCtrl's
# object-motion adapter is released beside the UNet (`omcm.`); the pack's UNet owns it (vc_models/motionctrl.py).
LEGACY_KEY_RENAMES = {UNET_PREFIX + "framestride_embed.": UNET_PREFIX + "fps_embedding.",
                      "omcm.": UNET_PREFIX + "omcm."}


# the files load_state_dict reads: the model folders list only these
LOADABLE_EXTENSIONS = frozenset({".safetensors", ".ckpt", ".pt", ".pth"})


def load_state_dict(path):
    """Read a `.safetensors`, `.ckpt`/`.pt`/`.pth` (Lightning `state_dict` or DeepSpeed `module`).

    Pickles are read with `weights_only=True`. Returns a flat {name: tensor} in the released layout.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"No checkpoint file at {path}.")
    size = os.path.getsize(path)
    name = os.path.basename(path)
    lower = name.lower()
    try:
        if lower.endswith(".safetensors"):
            import safetensors.torch
            sd = safetensors.torch.load_file(path, device="cpu")
        else:
            if not zipfile.is_zipfile(path):
                raise CheckpointError(
                    f"{name} ({size} bytes) is not a complete PyTorch checkpoint (no zip directory: "
                    "truncated download or a legacy pickle). Download it again; expected a VideoCrafter "
                    "model.ckpt or a .safetensors.")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            sd = _unwrap(obj, name)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors/zip/pickle errors: say what the file is
        raise CheckpointError(
            f"Could not read {name} ({size} bytes): {type(e).__name__}: {e}. The file is damaged or truncated "
            "(download it again) or is not a checkpoint.") from e
    return rename_legacy_keys(sd)


def _unwrap(obj, name):
    if isinstance(obj, dict):
        for key in ("state_dict", "module"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{name} holds no tensor dictionary (expected {{'state_dict': ...}} or {{'module': ...}}).")
    if any(k.startswith(DEEPSPEED_PREFIX) for k in obj):
        obj = {k[len(DEEPSPEED_PREFIX):] if k.startswith(DEEPSPEED_PREFIX) else k: v for k, v in obj.items()}
    return obj


def rename_legacy_keys(sd):
    """The released names that differ from the layout the pack builds (DynamiCrafter 256's
    `framestride_embed.*` is `fps_embedding.*`), renamed in place; returns sd."""
    for old, new in LEGACY_KEY_RENAMES.items():
        for key in [k for k in sd if k.startswith(old)]:
            sd[new + key[len(old):]] = sd.pop(key)
    return sd


def split_components(sd):
    """{prefix: sub-state-dict without prefix} for the UNet, VAE, text, vision and projector."""
    out = {p: {} for p in (UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX, VISION_PREFIX, PROJECTOR_PREFIX)}
    for k, v in sd.items():
        for p in out:
            if k.startswith(p):
                out[p][k[len(p):]] = v
                break
    return out


# the dtypes of safetensors headers (safe_open's get_dtype) the layout reader keeps on its meta tensors
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
                      "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
REDOWNLOAD = "The file is damaged or not a VideoCrafter checkpoint: download (or convert) it again."


def check_dtypes(sd, name, what="weights", fix="Use the released file or a .safetensors converted from it."):
    """Every tensor the pack uses is floating point (fp32, fp16, bf16, fp8); CheckpointError naming the file, a
    tensor and `fix` otherwise (an int8-quantised copy loaded without an error and sampled black frames)."""
    for key, value in sd.items():
        if not value.dtype.is_floating_point and not is_ignored_key(key):
            raise CheckpointError(f"{name}: tensor {key} is {str(value.dtype).replace('torch.', '')}; VideoCrafter "
                                  f"{what} are floating point (fp32, fp16, bf16 or fp8), and integer-quantised files "
                                  f"are not supported. {fix}")


def check_schedule(sd, name):
    """The noise-schedule buffers a checkpoint carries (values read; meta tensors are left alone): alphas_cumprod of
    TIMESTEPS values in (0, 1] decreasing (a zero-terminal-SNR schedule ends at 0), betas of as many in (0, 1],
    scale_arr of at least as many positive values. CheckpointError naming the file and the buffer otherwise."""
    def bad(key, why):
        return CheckpointError(f"{name}: its noise schedule '{key}' {why}. {REDOWNLOAD}")
    for key in SCHEDULE_KEYS:
        value = sd.get(key)
        if value is None or value.is_meta:
            continue
        if not value.dtype.is_floating_point:
            raise bad(key, f"is {str(value.dtype).replace('torch.', '')}, not floating point")
        if value.ndim != 1 or (value.numel() < TIMESTEPS if key == "scale_arr" else value.numel() != TIMESTEPS):
            raise bad(key, f"has shape {list(value.shape)}; the models of this family have {TIMESTEPS} timesteps")
        v = value.double()
        if not bool(torch.isfinite(v).all()):
            raise bad(key, "holds NaN or infinite values")
        if key == "scale_arr" and not bool((v > 0).all()):
            raise bad(key, "holds values that are not positive")
        if key != "scale_arr":
            # a zero-terminal-SNR schedule ends at 0 (in fp16 its last few values may all round to 0)
            low = v >= 0 if key == "alphas_cumprod" else v > 0
            if not bool((low & (v <= 1)).all()) or v[0] <= 0:
                raise bad(key, f"holds values outside (0, 1] (from {v.min().item():.4g} to {v.max().item():.4g})")
        if key == "alphas_cumprod" and not (bool((v[1:] <= v[:-1]).all()) and v[0] > v[-1]):
            raise bad(key, "does not decrease from timestep to timestep")


def noise_schedule(sd):
    """(alphas_cumprod [T] float64, scale_arr [T] float64 or None) from the checkpoint buffers."""
    if "alphas_cumprod" in sd:
        alphas_cumprod = sd["alphas_cumprod"].double()
    else:
        betas = scaled_linear_betas()
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    scale = sd.get("scale_arr")
    if scale is not None:
        scale = scale.double()[: alphas_cumprod.shape[0]]
    return alphas_cumprod, scale


def read_layout(path):
    """The names and shapes of a `.safetensors` as meta tensors, the schedule buffers with their values: enough
    for `vc_models.checkpoint.inspect_checkpoint` without reading the weights. Other formats load whole."""
    if not path.lower().endswith(".safetensors"):
        return load_state_dict(path)
    from safetensors import safe_open
    sd = {}
    with safe_open(path, "pt") as f:
        for key in f.keys():
            if key in SCHEDULE_KEYS:
                sd[key] = f.get_tensor(key)
            else:
                piece = f.get_slice(key)
                sd[key] = torch.empty(piece.get_shape(), dtype=SAFETENSORS_DTYPES.get(piece.get_dtype(), torch.uint8),
                                      device="meta")
    return rename_legacy_keys(sd)
