"""Telling what a VideoCrafter checkpoint holds: its UNet configuration and its `vc_models.registry` entry.

No ComfyUI imports: the trainer and the command-line tools use this too. Reading files is
`vc_models.checkpoint_file`'s.
"""
import dataclasses
import re
from dataclasses import dataclass

from . import registry
from .checkpoint_file import (CheckpointError, UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX, VISION_PREFIX, PROJECTOR_PREFIX,
                              check_dtypes, check_schedule, rename_legacy_keys, split_components)
from .unet_config import UNetConfig, HEAD_DIM
from .motionctrl import motion_control_fields, motion_controls

# T2V-Turbo's guidance-scale embedding; its UNets ship as bare state dicts (`torch.save(unet.state_dict())`,
# no prefix) used with the VideoCrafter2 checkpoint's text encoder and VAE.
TURBO_KEY = "time_cond_proj.weight"


def is_bare_turbo_unet(sd):
    """A T2V-Turbo UNet alone: its guidance-scale embedding without the full checkpoint's UNet prefix."""
    return TURBO_KEY in sd and not any(k.startswith(UNET_PREFIX) for k in sd)


SD_UNET_HINT = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
# ToonCrafter's dual-reference VAE decoder: temporal ResBlocks (`time_stack`, `mix_factor`), the key-frame
# refinement (`attn_refinement`) and the temporal output conv (`conv_out.time_mix_conv`)
DUALREF_DECODER_MARKS = (".time_stack.", ".mix_factor", "attn_refinement.", "conv_out.time_mix_conv.")


@dataclass(frozen=True)
class CheckpointInfo:
    """A detected model: its registry entry and the UNet configuration read from the tensors."""
    entry: registry.ModelEntry
    unet: UNetConfig

    @property
    def variant(self):
        return self.entry.id

    @property
    def description(self):
        return self.entry.description

    @property
    def parameterization(self):
        return self.entry.parameterization

    @property
    def zero_snr(self):
        return self.entry.zero_snr


def describe_found(sd):
    prefixes = sorted({k.split(".")[0] for k in sd})[:8]
    return f"{len(sd)} tensors with top-level names {prefixes}"


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
    max_rel, head_dim = 16, min(HEAD_DIM, mc)  # a UNet narrower than a head (the tiny MotionCtrl) has one per layer
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
        head_dim=head_dim,
        guidance_embed_dim=unet_sd[TURBO_KEY].shape[1] if TURBO_KEY in unet_sd else 0,
        motion_guidance="motion_cond_proj.weight" in unet_sd,
        **motion_control_fields(unet_sd, len(channel_mult)),
    )


def has_dualref_decoder(vae_sd):
    """True when the VAE tensors (prefix `first_stage_model.` stripped) hold a dual-reference decoder's layers."""
    return any(k.startswith("decoder.") and any(m in k for m in DUALREF_DECODER_MARKS) for k in vae_sd)


def _value(tensor):
    """A stored tensor's values, or None for tensors without data (meta tensors of layout checks)."""
    return None if tensor is None or tensor.is_meta else tensor.double()


def checkpoint_features(sd, cfg, name=""):
    """The `registry.Features` of a state dict whose UNet has configuration `cfg`."""
    alphas = _value(sd.get("alphas_cumprod"))
    scale = _value(sd.get("scale_arr"))
    return registry.Features(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, image_cross_attention=cfg.image_cross_attention,
        temporal_conv=cfg.temporal_conv, has_scale_arr="scale_arr" in sd,
        scale_floor=scale[-1].item() if scale is not None else None,
        zero_snr_terminal=alphas is not None and alphas[-1].item() < 1e-6,
        guidance_embed=cfg.guidance_embed_dim > 0, motion_guidance=cfg.motion_guidance, file_name=name,
        dualref_decoder=has_dualref_decoder(k[len(VAE_PREFIX):] for k in sd if k.startswith(VAE_PREFIX)),
        motion_controls=motion_controls(cfg))


def detect_entry(features, cfg, name):
    """CheckpointInfo of the registry entry `features` match; CheckpointError naming what was found otherwise."""
    entry = registry.detect(features)
    if entry is None and features.concat_latent and not features.image_cross_attention:
        raise CheckpointError(f"{name} has a UNet with {features.in_channels} input channels (a concatenated image "
                              "latent) but no image cross-attention: not a DynamiCrafter checkpoint this pack knows.")
    if entry is None:
        raise CheckpointError(f"{name} is a VideoCrafter-like UNet ({features}) that matches no model this pack "
                              "knows (vc_models/registry.py).")
    if features.dualref_decoder and not entry.family.dual_reference:
        known = [e.description for e in registry.MODELS if e.family.dual_reference]
        raise CheckpointError(f"{name} has a dual-reference VAE decoder (ToonCrafter's) but a {entry.description} UNet; "
                              f"the models with that decoder ({', '.join(known)}) have DynamiCrafter 512's UNet "
                              "(v-prediction, scale_arr floor 0.7).")
    return CheckpointInfo(entry=entry, unet=dataclasses.replace(cfg, **dict(entry.unet_switches)))


def inspect_checkpoint(sd, name="checkpoint"):
    """Detect the model of a full checkpoint; raise CheckpointError naming what was found otherwise."""
    rename_legacy_keys(sd)
    parts = split_components(sd)
    unet = parts[UNET_PREFIX]
    expected = ("expected a VideoCrafter checkpoint: UNet under 'model.diffusion_model.' with temporal "
                "layers, SD VAE under 'first_stage_model.', OpenCLIP text under 'cond_stage_model.model.'")
    if "input_blocks.0.0.weight" not in unet:
        if is_bare_turbo_unet(sd):
            raise CheckpointError(f"{name} is a T2V-Turbo UNet alone (no VAE or text encoder): load the VideoCrafter2 "
                                  "checkpoint here and this file with 'VideoCrafter Turbo UNet Loader' on its MODEL.")
        raise CheckpointError(f"{name} is not a VideoCrafter checkpoint: found {describe_found(sd)}; {expected}.")
    is_video = any(".temopral_conv." in k or "relative_position_k" in k for k in unet) or \
        any(k.startswith("input_blocks.1.2.") for k in unet)
    if not is_video:
        hint = " It looks like an image (Stable Diffusion) checkpoint: load it with the core 'Load Checkpoint' node." \
            if SD_UNET_HINT in sd or "cond_stage_model.transformer.text_model.embeddings.position_ids" in sd else ""
        raise CheckpointError(f"{name} has a UNet without temporal layers, so it is not a VideoCrafter model.{hint} ({expected})")
    missing = [p for p in (VAE_PREFIX, TEXT_PREFIX) if not parts[p]]
    if missing:
        raise CheckpointError(f"{name} has a VideoCrafter UNet but no tensors under {missing}; {expected}.")
    check_schedule(sd, name)
    check_dtypes(sd, name)
    cfg = infer_unet_config(unet)
    if cfg.image_cross_attention and (not parts[PROJECTOR_PREFIX] or
                                      not any(k.startswith("visual.") for k in parts[VISION_PREFIX])):
        raise CheckpointError(f"{name} has image cross-attention but lacks the image projector ('image_proj_model.') "
                              "or the CLIP vision tower ('embedder.model.visual.'): an incomplete image-to-video checkpoint.")
    return detect_entry(checkpoint_features(sd, cfg, name), cfg, name)


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
        raise CheckpointError(f"{name} is not a UNet: found {describe_found(sd)}; {expected}.")
    check_dtypes(unet, name)
    if TURBO_KEY not in unet:
        raise CheckpointError(
            f"{name} is a UNet without the guidance-scale embedding ('time_cond_proj'), so it is not a T2V-Turbo "
            f"UNet; {expected}. A full VideoCrafter checkpoint loads with 'Load VideoCrafter Checkpoint' alone.")
    try:
        cfg = infer_unet_config(unet)
    except (KeyError, StopIteration, IndexError) as e:
        raise CheckpointError(f"{name} has 'time_cond_proj' but an incomplete UNet (missing {e}); {expected}.") from e
    return unet, cfg


def turbo_unet_info(cfg, name="UNet file"):
    """The CheckpointInfo of a T2V-Turbo UNet with configuration `cfg` (from `inspect_turbo_unet`): no schedule
    buffers travel with it (its model samples on the plain schedule, as the distillation ran)."""
    return detect_entry(checkpoint_features({}, cfg, name), cfg, name)
