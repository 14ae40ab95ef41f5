"""Turning a text-to-video checkpoint (VideoCrafter2) into an image-to-video one for training:
image key/value matrices copied from the text ones, a fresh projector, and the OpenCLIP ViT-H
visual tower from a CLIP vision file, all under the released I2V key names."""
import math

import torch

from . import checkpoint as ckpt
from . import checkpoint_file as ckpt_file
from .projector import ImageProjector, ProjectorConfig
from .unet import VideoCrafterUNet
from .unet_config import UNetConfig

VISUAL_PREFIX = ckpt_file.VISION_PREFIX + "visual."


# ---------------------------------------------------------------- CLIP vision files
def hf_vision_to_openclip(sd):
    """ComfyUI/HF CLIPVisionModel keys (`vision_model.…`, `visual_projection.weight`) -> OpenCLIP
    `visual` keys (prefix-less), the inverse of comfy.clip_vision.convert_to_transformers."""
    out = {}
    top = {
        "vision_model.embeddings.class_embedding": "class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
        "vision_model.embeddings.position_embedding.weight": "positional_embedding",
        "vision_model.pre_layrnorm.weight": "ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "ln_pre.bias",
        "vision_model.post_layernorm.weight": "ln_post.weight",
        "vision_model.post_layernorm.bias": "ln_post.bias",
    }
    for hf, oc in top.items():
        if hf in sd:
            out[oc] = sd[hf]
    if "visual_projection.weight" in sd:
        out["proj"] = sd["visual_projection.weight"].transpose(0, 1).contiguous()
    block = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith("vision_model.encoder.layers.")})
    for i in layers:
        hf = f"vision_model.encoder.layers.{i}."
        oc = f"transformer.resblocks.{i}."
        for a, b in block.items():
            for kind in ("weight", "bias"):
                if hf + f"{a}.{kind}" in sd:
                    out[oc + f"{b}.{kind}"] = sd[hf + f"{a}.{kind}"]
        for kind in ("weight", "bias"):
            parts = [sd.get(hf + f"self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")]
            if all(p is not None for p in parts):
                out[oc + f"attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
    return out


def openclip_visual(sd, name="CLIP vision file"):
    """Prefix-less OpenCLIP visual tensors from a CLIP vision state dict in any of the layouts
    ComfyUI's models/clip_vision holds: OpenCLIP (`visual.…`, also under `embedder.model.`) or HF."""
    for prefix in (VISUAL_PREFIX, "visual.", "model.visual.", ""):
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if "conv1.weight" in sub and "transformer.resblocks.0.attn.in_proj_weight" in sub:
            return sub
    if "vision_model.embeddings.patch_embedding.weight" in sd:
        return hf_vision_to_openclip(sd)
    raise ckpt_file.CheckpointError(f"{name} holds no CLIP vision tower (no OpenCLIP 'visual.conv1.weight' "
                               "or HF 'vision_model.embeddings.patch_embedding.weight').")


# ---------------------------------------------------------------- projector
def fresh_projector_config(context_dim, vision_width):
    """The released I2V Resampler for full-size models (dim 1024, 12 heads of 64, 4 layers); smaller
    models get dim = context width, heads = width // 64, 2 layers."""
    if context_dim >= 1024:
        return ProjectorConfig(dim=context_dim, depth=4, heads=12, head_dim=64, num_queries=16,
                               embedding_dim=vision_width, output_dim=context_dim, ff_mult=4)
    return ProjectorConfig(dim=context_dim, depth=2, heads=max(1, context_dim // 64), head_dim=64, num_queries=16,
                           embedding_dim=vision_width, output_dim=context_dim, ff_mult=4)


def init_projector_weights(projector, generator):
    """The original Resampler's initialisation: latents ~ N(0,1)/sqrt(dim), Linear layers torch's
    default (kaiming-uniform weights, uniform bias), LayerNorm ones/zeros; drawn from `generator`."""
    with torch.no_grad():
        for module in projector.modules():
            if isinstance(module, torch.nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)  # kaiming_uniform(a=sqrt(5)) bound
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 2 * bound - bound)
                if module.bias is not None:
                    module.bias.copy_(torch.rand(module.bias.shape, generator=generator) * 2 * bound - bound)
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        dim = projector.latents.shape[-1]
        projector.latents.copy_(torch.randn(projector.latents.shape, generator=generator) / dim ** 0.5)
    return projector


# ---------------------------------------------------------------- the upgrade
def image_kv_keys(unet_config: UNetConfig):
    """Names (no prefix) of the image K/V matrices an I2V UNet of this shape has."""
    cfg = UNetConfig(**{**unet_config.as_dict(), "image_cross_attention": True,
                        "image_context_dim": unet_config.context_dim})
    with torch.device("meta"):
        model = VideoCrafterUNet(cfg, dtype=torch.float32)
    return sorted(k for k in model.state_dict() if k.endswith((".to_k_ip.weight", ".to_v_ip.weight")))


def upgrade_t2v_to_i2v(sd, clip_vision_sd, seed=0):
    """A new state dict: the T2V checkpoint plus image cross-attention (to_k_ip = copy of to_k,
    to_v_ip = copy of to_v), a freshly initialised projector and the visual tower under
    `embedder.model.visual.` in the OpenCLIP layout. `inspect_checkpoint` detects it as I2V."""
    info = ckpt.inspect_checkpoint(sd)
    if info.unet.image_cross_attention:
        return sd
    visual = openclip_visual(clip_vision_sd)
    out = dict(sd)
    for key in image_kv_keys(info.unet):
        source = key.replace(".to_k_ip.", ".to_k.").replace(".to_v_ip.", ".to_v.")
        out[ckpt_file.UNET_PREFIX + key] = sd[ckpt_file.UNET_PREFIX + source].clone()
    for key, value in visual.items():
        out[VISUAL_PREFIX + key] = value
    config = fresh_projector_config(info.unet.context_dim, visual["conv1.weight"].shape[0])
    with torch.device("cpu"):
        projector = ImageProjector(config, dtype=torch.float32)
    init_projector_weights(projector, torch.Generator().manual_seed(seed))
    for key, value in projector.state_dict().items():
        out[ckpt_file.PROJECTOR_PREFIX + key] = value.detach().clone()
    return out
