"""Reading VideoCrafter checkpoint files and telling what they hold.

No ComfyUI imports: the trainer and the command-line tools use this too.
"""
import os
import re
import zipfile
from dataclasses import dataclass, field

import torch

from .unet_config import UNetConfig, HEAD_DIM

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


VARIANTS = {
    "vc1_t2v_512": "VideoCrafter1 text-to-video 320x512",
    "vc1_t2v_1024": "VideoCrafter1 text-to-video 576x1024",
    "vc2_t2v_512": "VideoCrafter2 text-to-video 320x512",
    "vc1_i2v_512": "VideoCrafter1 image-to-video 320x512",
    "turbo_v2_mg": "T2V-Turbo-v2 (VideoCrafter2 distilled, motion guidance) 320x512",
    "turbo_v2_nomg": "T2V-Turbo-v2 (VideoCrafter2 distilled, no motion guidance) 320x512",
    "dc_256": "DynamiCrafter image animation 256x256",
    "dc_512": "DynamiCrafter image animation 320x512",
    "dc_1024": "DynamiCrafter image animation 576x1024",
    "dc_512_interp": "DynamiCrafter interpolation 320x512",
    "toon_512": "ToonCrafter cartoon interpolation 320x512 (dual-reference decoder)",
}

# Sampling defaults of the original inference scripts, per variant: (height, width, fps)
VARIANT_DEFAULTS = {
    "vc1_t2v_512": (320, 512, 28),
    "vc1_t2v_1024": (576, 1024, 28),
    "vc2_t2v_512": (320, 512, 28),
    "vc1_i2v_512": (320, 512, 8),
    "turbo_v2_mg": (320, 512, 16),
    "turbo_v2_nomg": (320, 512, 16),
    # DynamiCrafter: the third value is the fs condition (frame stride for 256, fps for 512/1024)
    "dc_256": (256, 256, 3),
    "dc_512": (320, 512, 24),
    "dc_1024": (576, 1024, 10),
    "dc_512_interp": (320, 512, 5),
    "toon_512": (320, 512, 10),
}

DYNAMICRAFTER_VARIANTS = ("dc_256", "dc_512", "dc_1024", "dc_512_interp", "toon_512")

# ToonCrafter (Doubiiu/ToonCrafter): DynamiCrafter 512 interpolation with a VAE decoder that looks at the
# two key frames. Its file is DynamiCrafter 512's layout plus decoder tensors only it has.
TOONCRAFTER_VARIANT = "toon_512"
TOONCRAFTER_DECODER_MARKS = (".time_stack.", ".mix_factor", "attn_refinement.", "conv_out.time_mix_conv.")
# the original's scripts/run.sh (also the Gradio defaults)
TOONCRAFTER_SAMPLING = {"width": 512, "height": 320, "frames": 16, "steps": 50, "eta": 1.0, "cfg": 7.5, "fs": 10,
                        "scheduler": "videocrafter_trailing", "guidance_rescale": 0.7}


def has_dualref_decoder(vae_sd):
    """True when the VAE tensors (prefix `first_stage_model.` stripped) hold ToonCrafter's dual-reference
    decoder: temporal ResBlocks (`time_stack`, `mix_factor`), the key-frame refinement (`attn_refinement`)
    or the temporal output conv (`conv_out.time_mix_conv`)."""
    return any(k.startswith("decoder.") and any(m in k for m in TOONCRAFTER_DECODER_MARKS) for k in vae_sd)
# The DynamiCrafter Resampler emits `num_queries x video_length` tokens (16 x 16); frame i of a
# 16-frame latent cross-attends to tokens 16i..16i+15. The split is not visible in the tensors.
DYNAMICRAFTER_TOKENS_PER_FRAME = 16
# The released 256 file names the frame-stride embedding as below; the original loader renames it.
LEGACY_KEY_RENAMES = {UNET_PREFIX + "framestride_embed.": UNET_PREFIX + "fps_embedding."}


@dataclass
class CheckpointInfo:
    variant: str
    unet: UNetConfig
    has_scale_arr: bool
    is_i2v: bool
    default_height: int
    default_width: int
    default_fps: int
    notes: list = field(default_factory=list)
    parameterization: str = "eps"  # "v" for DynamiCrafter 512/1024
    zero_snr: bool = False  # the stored schedule ends at alphas_cumprod == 0

    @property
    def description(self):
        return VARIANTS[self.variant]

    @property
    def is_dynamicrafter(self):
        return self.variant in DYNAMICRAFTER_VARIANTS

    @property
    def is_tooncrafter(self):
        return self.variant == TOONCRAFTER_VARIANT


def _describe_found(sd):
    prefixes = sorted({k.split(".")[0] for k in sd})[:8]
    return f"{len(sd)} tensors with top-level names {prefixes}"


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


_BLOCK = re.compile(r"^input_blocks\.(\d+)\.")


def infer_unet_config(unet_sd):
    """Every UNet hyper-parameter from the tensors (tiny test models and released ones alike)."""
    conv_in = unet_sd["input_blocks.0.0.weight"]
    mc = conv_in.shape[0]
    blocks = sorted({int(m.group(1)) for k in unet_sd for m in [_BLOCK.match(k)] if m})
    channel_mult, attention_levels, res_per_level = [], set(), []
    level, count = 0, 0
    for i in blocks[1:]:
        if f"input_blocks.{i}.0.op.weight" in unet_sd:
            res_per_level.append(count)
            level, count = level + 1, 0
            continue
        out_ch = unet_sd[f"input_blocks.{i}.0.in_layers.2.weight"].shape[0]
        if count == 0:
            channel_mult.append(out_ch // mc)
        count += 1
        if f"input_blocks.{i}.1.proj_in.weight" in unet_sd:
            attention_levels.add(level)
    res_per_level.append(count)
    if len(set(res_per_level)) != 1:
        raise CheckpointError(f"Uneven residual blocks per level {res_per_level}: not a VideoCrafter UNet.")

    first_attn = next(k[:-len("transformer_blocks.0.attn2.to_k.weight")] for k in sorted(unet_sd)
                      if k.endswith("transformer_blocks.0.attn2.to_k.weight") and k.startswith("input_blocks."))
    context_dim = unet_sd[first_attn + "transformer_blocks.0.attn2.to_k.weight"].shape[1]
    depth = len({k for k in unet_sd if k.startswith(first_attn + "transformer_blocks.")
                 for k in [k[len(first_attn + "transformer_blocks."):].split(".")[0]]})
    spatial_index = int(first_attn.rstrip(".").split(".")[-1])
    temporal_prefix = first_attn[: -len(f"{spatial_index}.")] + f"{spatial_index + 1}."
    temporal_attention = temporal_prefix + "proj_in.weight" in unet_sd
    temporal_depth = len({k[len(temporal_prefix + "transformer_blocks."):].split(".")[0] for k in unet_sd
                          if k.startswith(temporal_prefix + "transformer_blocks.")}) or 1
    use_linear = unet_sd[first_attn + "proj_in.weight"].ndim == 2

    rel_keys = [k for k in unet_sd if k.endswith("relative_position_k.embeddings_table")]
    relative_position = bool(rel_keys)
    max_rel, head_dim = 16, HEAD_DIM
    if rel_keys:
        table = unet_sd[rel_keys[0]]
        max_rel, head_dim = (table.shape[0] - 1) // 2, table.shape[1]

    init_heads = 0
    if "init_attn.0.proj_in.weight" in unet_sd:
        init_heads = unet_sd["init_attn.0.proj_in.weight"].shape[0] // head_dim

    ip_keys = [k for k in unet_sd if k.endswith("attn2.to_k_ip.weight")]
    return UNetConfig(
        in_channels=conv_in.shape[1],
        out_channels=unet_sd["out.2.weight"].shape[0],
        model_channels=mc,
        channel_mult=tuple(channel_mult),
        num_res_blocks=res_per_level[0],
        attention_levels=tuple(sorted(attention_levels)),
        context_dim=context_dim,
        transformer_depth=depth,
        temporal_transformer_depth=temporal_depth,
        use_linear=use_linear,
        temporal_conv=any(".temopral_conv." in k for k in unet_sd),
        temporal_attention=temporal_attention,
        relative_position=relative_position,
        max_relative_position=max_rel,
        init_attn_heads=init_heads,
        fps_cond="fps_embedding.0.weight" in unet_sd,
        image_cross_attention=bool(ip_keys),
        image_context_dim=unet_sd[ip_keys[0]].shape[1] if ip_keys else context_dim,
        image_attention_alpha=any(k.endswith("attn2.alpha") for k in unet_sd),
        # DynamiCrafter: the image latent rides on the input channels beside the noisy latent
        image_tokens_per_frame=DYNAMICRAFTER_TOKENS_PER_FRAME if conv_in.shape[1] > unet_sd["out.2.weight"].shape[0] else 0,
        head_dim=head_dim,
        guidance_embed_dim=unet_sd["time_cond_proj.weight"].shape[1] if "time_cond_proj.weight" in unet_sd else 0,
        motion_guidance="motion_cond_proj.weight" in unet_sd,
    )


SD_UNET_HINT = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"


def _value(tensor):
    """A stored tensor's values, or None for tensors without data (meta tensors of layout checks)."""
    return None if tensor is None or tensor.is_meta else tensor.double()


def inspect_checkpoint(sd, name="checkpoint"):
    """Detect the VideoCrafter variant; raise CheckpointError naming what was found otherwise."""
    rename_legacy_keys(sd)
    parts = split_components(sd)
    unet = parts[UNET_PREFIX]
    expected = ("expected a VideoCrafter checkpoint: UNet under 'model.diffusion_model.' with temporal "
                "layers, SD VAE under 'first_stage_model.', OpenCLIP text under 'cond_stage_model.model.'")
    if "input_blocks.0.0.weight" not in unet:
        if "time_cond_proj.weight" in sd:  # TURBO_KEY: a bare T2V-Turbo UNet
            raise CheckpointError(f"{name} is a T2V-Turbo UNet alone (no VAE or text encoder): load the VideoCrafter2 "
                                  "checkpoint here and this file with 'VideoCrafter Turbo UNet Loader' on its MODEL.")
        raise CheckpointError(f"{name} is not a VideoCrafter checkpoint: found {_describe_found(sd)}; {expected}.")
    is_video = any(".temopral_conv." in k or "relative_position_k" in k for k in unet) or \
        any(k.startswith("input_blocks.1.2.") for k in unet)
    if not is_video:
        hint = " It looks like an image (Stable Diffusion) checkpoint: load it with the core 'Load Checkpoint' node." \
            if SD_UNET_HINT in sd or "cond_stage_model.transformer.text_model.embeddings.position_ids" in sd else ""
        raise CheckpointError(f"{name} has a UNet without temporal layers, so it is not a VideoCrafter model.{hint} ({expected})")
    missing = [p for p in (VAE_PREFIX, TEXT_PREFIX) if not parts[p]]
    if missing:
        raise CheckpointError(f"{name} has a VideoCrafter UNet but no tensors under {missing}; {expected}.")
    cfg = infer_unet_config(unet)
    is_i2v = cfg.image_cross_attention
    if is_i2v and (not parts[PROJECTOR_PREFIX] or not any(k.startswith("visual.") for k in parts[VISION_PREFIX])):
        raise CheckpointError(f"{name} has image cross-attention but lacks the image projector ('image_proj_model.') "
                              "or the CLIP vision tower ('embedder.model.visual.'): an incomplete image-to-video checkpoint.")
    has_scale = "scale_arr" in sd
    parameterization, zero_snr = "eps", False
    if cfg.in_channels > cfg.out_channels:
        if not is_i2v:
            raise CheckpointError(f"{name} has a UNet with {cfg.in_channels} input channels (a concatenated image latent) "
                                  "but no image cross-attention: not a DynamiCrafter checkpoint this pack knows.")
        # DynamiCrafter 512/1024 were trained with v-prediction on a zero-terminal-SNR schedule, 256 with eps;
        # the stored schedule tells them apart (its last alphas_cumprod is exactly 0), scale_arr's floor 512 from 1024
        alphas = _value(sd.get("alphas_cumprod"))
        scale = _value(sd.get("scale_arr"))
        # without stored values (a layout check on meta tensors) the released pairing holds: scale_arr <=> v
        zero_snr = alphas[-1].item() < 1e-6 if alphas is not None else has_scale
        parameterization = "v" if zero_snr else "eps"
        if has_scale or zero_snr:
            variant = "dc_1024" if scale is not None and scale[-1].item() < 0.5 else "dc_512"
            if variant == "dc_512" and "interp" in name.lower():
                variant = "dc_512_interp"  # same tensors as dc_512; only the file name and defaults differ
        else:
            variant = "dc_256"
        if has_dualref_decoder(parts[VAE_PREFIX]):
            if variant not in ("dc_512", "dc_512_interp"):
                raise CheckpointError(f"{name} has ToonCrafter's dual-reference VAE decoder but a {VARIANTS[variant]} "
                                      "UNet; ToonCrafter's UNet is DynamiCrafter 512's (v-prediction, scale_arr 0.7).")
            variant = TOONCRAFTER_VARIANT
    elif is_i2v:
        variant = "vc1_i2v_512"
    elif cfg.temporal_conv:
        variant = "vc2_t2v_512"
    elif has_scale:
        variant = "vc1_t2v_1024"
    else:
        variant = "vc1_t2v_512"
    h, w, fps = VARIANT_DEFAULTS[variant]
    if not cfg.fps_cond:
        fps = 0
    return CheckpointInfo(variant=variant, unet=cfg, has_scale_arr=has_scale, is_i2v=is_i2v,
                          default_height=h, default_width=w, default_fps=fps,
                          parameterization=parameterization, zero_snr=zero_snr)


def noise_schedule(sd, timesteps=1000, linear_start=0.00085, linear_end=0.012):
    """(alphas_cumprod [T] float64, scale_arr [T] float64 or None) from the checkpoint buffers."""
    if "alphas_cumprod" in sd:
        alphas_cumprod = sd["alphas_cumprod"].double()
    else:
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    scale = sd.get("scale_arr")
    if scale is not None:
        scale = scale.double()[: alphas_cumprod.shape[0]]
    return alphas_cumprod, scale


# T2V-Turbo-v2 ships bare UNet state dicts (`torch.save(unet.state_dict())`, no prefix) used with the
# VideoCrafter2 checkpoint's text encoder and VAE.
TURBO_KEY = "time_cond_proj.weight"


def inspect_turbo_unet(sd, name="UNet file"):
    """(UNet state dict without prefix, UNetConfig) of a T2V-Turbo UNet file; CheckpointError otherwise.

    Accepts the released bare state dict and copies whose keys carry the full checkpoint's
    `model.diffusion_model.` prefix."""
    if any(k.startswith(UNET_PREFIX) for k in sd):
        unet = split_components(sd)[UNET_PREFIX]
    else:
        unet = sd
    expected = ("expected a T2V-Turbo UNet (unet_mg.pt / unet_no_mg.pt from jiachenli-ucsb/T2V-Turbo-v2, or a "
                ".safetensors with the same keys): the VideoCrafter2 UNet plus 'time_cond_proj.weight'")
    if "input_blocks.0.0.weight" not in unet or "out.2.weight" not in unet:
        raise CheckpointError(f"{name} is not a UNet: found {_describe_found(sd)}; {expected}.")
    if TURBO_KEY not in unet:
        raise CheckpointError(
            f"{name} is a UNet without the guidance-scale embedding ('time_cond_proj'), so it is not a T2V-Turbo "
            f"UNet; {expected}. A full VideoCrafter checkpoint loads with 'Load VideoCrafter Checkpoint' alone.")
    try:
        cfg = infer_unet_config(unet)
    except (KeyError, StopIteration, IndexError) as e:
        raise CheckpointError(f"{name} has 'time_cond_proj' but an incomplete UNet (missing {e}); {expected}.") from e
    return unet, cfg


def turbo_unet_info(cfg):
    """The CheckpointInfo of a T2V-Turbo UNet with configuration `cfg` (from `inspect_turbo_unet`): the
    VideoCrafter2 text-to-video model on the plain schedule (no scale_arr), eps prediction."""
    variant = "turbo_v2_mg" if cfg.motion_guidance else "turbo_v2_nomg"
    h, w, fps = VARIANT_DEFAULTS[variant]
    return CheckpointInfo(variant=variant, unet=cfg, has_scale_arr=False, is_i2v=False,
                          default_height=h, default_width=w, default_fps=fps)
