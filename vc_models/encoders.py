"""Text encoder, image encoder, projector and VAE as ComfyUI objects, sized from the tensors.

The OpenCLIP layouts of the checkpoint are converted to ComfyUI's own CLIP / CLIP-vision
implementations at load time, so core nodes (CLIP Text Encode, CLIP Vision loaders, VAE Decode)
interoperate with what the VideoCrafter loader returns.
"""
import json
import os
import tempfile

import torch

import comfy.clip_vision
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models_base
import comfy.utils
from comfy.text_encoders import sd2_clip

from .memory_model import plain_decode_bytes
from .projector import ImageProjector, ProjectorConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _count_layers(sd, prefix):
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


# ---------------------------------------------------------------- text
def text_config(text_sd):
    """HF-style CLIPTextModel config for ComfyUI's implementation, from OpenCLIP text tensors."""
    width = text_sd["token_embedding.weight"].shape[1]
    return {
        "hidden_act": "gelu",
        "hidden_size": width,
        "intermediate_size": text_sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": text_sd["positional_embedding"].shape[0],
        "model_type": "clip_text_model",
        "num_attention_heads": width // 64,
        "num_hidden_layers": _count_layers(text_sd, "transformer.resblocks."),
        "projection_dim": text_sd["text_projection"].shape[1] if "text_projection" in text_sd else width,
        "vocab_size": text_sd["token_embedding.weight"].shape[0],
        "bos_token_id": 0, "eos_token_id": 49407, "pad_token_id": 1,
    }


class OpenClipTextEncoder(comfy.sd1_clip.SDClipModel):
    """OpenCLIP text tower, penultimate layer then ln_final, as VideoCrafter's FrozenOpenCLIPEmbedder."""

    def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
        super().__init__(device=device, layer="hidden", layer_idx=-2,
                         textmodel_json_config=model_options["videocrafter_text_config"], dtype=dtype,
                         special_tokens={"start": 49406, "end": 49407, "pad": 0},
                         return_projected_pooled=True, model_options=model_options)


def build_text_encoder(text_sd):
    """ComfyUI CLIP (SD2 tokenizer, clip_h slot) from `cond_stage_model.model.` tensors (prefix stripped)."""
    config = text_config(text_sd)
    target = comfy.supported_models_base.ClipTarget(sd2_clip.SD2Tokenizer, sd2_clip.SD2ClipModel)
    params = sum(v.numel() for v in text_sd.values())
    clip = comfy.sd.CLIP(target, parameters=params,
                         model_options={"clip_h_class": OpenClipTextEncoder, "videocrafter_text_config": config})
    sd = comfy.utils.clip_text_transformers_convert({f"clip_h.{k}": v for k, v in text_sd.items()}, "clip_h.", "clip_h.transformer.")
    missing, _ = clip.load_sd(sd, full_model=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise ValueError(f"Text encoder tensors missing: {missing[:5]}")
    return clip


# ---------------------------------------------------------------- image
def vision_config(visual_sd):
    """HF-style CLIPVisionModel config from OpenCLIP `visual.` tensors (prefix stripped)."""
    width = visual_sd["conv1.weight"].shape[0]
    patch = visual_sd["conv1.weight"].shape[-1]
    grid = int(round((visual_sd["positional_embedding"].shape[0] - 1) ** 0.5))
    return {
        "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu",
        "hidden_size": width,
        "image_size": grid * patch,
        "intermediate_size": visual_sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model",
        "num_attention_heads": width // 64,
        "num_channels": visual_sd["conv1.weight"].shape[1],
        "num_hidden_layers": _count_layers(visual_sd, "transformer.resblocks."),
        "patch_size": patch,
        "projection_dim": visual_sd["proj"].shape[1] if "proj" in visual_sd else width,
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
    }


def build_clip_vision(visual_sd):
    """ComfyUI ClipVisionModel from `embedder.model.visual.` tensors (prefix stripped)."""
    config = vision_config(visual_sd)
    fd, path = tempfile.mkstemp(suffix=".json", prefix="videocrafter_clip_vision_")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        clip_vision = comfy.clip_vision.ClipVisionModel(path)  # ComfyUI reads its config from a file
    finally:
        os.remove(path)
    sd = comfy.clip_vision.convert_to_transformers({f"visual.{k}": v for k, v in visual_sd.items()}, "visual.")
    missing, _ = clip_vision.load_sd(sd)
    if missing:
        raise ValueError(f"CLIP vision tensors missing: {missing[:5]}")
    return clip_vision


def clip_pixels(image, size):
    """The original preprocessing: IMAGE [B,H,W,3] in 0..1 -> [-1,1] -> kornia bicubic resize
    (align_corners, antialias) to size x size -> back to 0..1 -> CLIP mean/std."""
    import kornia
    x = image.movedim(-1, 1).float() * 2.0 - 1.0
    x = kornia.geometry.resize(x, (size, size), interpolation="bicubic", align_corners=True, antialias=True)
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def image_tokens(clip_vision, image):
    """All patch tokens (class + grid) of the last block, before the post-layernorm: [B, 257, W]."""
    comfy.model_management.load_model_gpu(clip_vision.patcher)
    pixels = clip_pixels(image.to(clip_vision.load_device), clip_vision.image_size)
    out = clip_vision.model(pixel_values=pixels, intermediate_output=-2)
    return out[0].float()


class ImageProjectorModel:
    """The projector with its own ModelPatcher, so model management places and offloads it; `family`: the
    checkpoint's (`vc_models.families`), which the conditioning nodes ask how the image conditions the model."""

    def __init__(self, projector_sd, family):
        self.family = family
        config = ProjectorConfig.from_state_dict(projector_sd)
        load_device = comfy.model_management.text_encoder_device()
        offload_device = comfy.model_management.text_encoder_offload_device()
        self.model = ImageProjector(config, dtype=torch.float32, device=offload_device,
                                    operations=comfy.ops.manual_cast)
        missing, unexpected = self.model.load_state_dict(projector_sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"Projector tensors do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.model.eval()
        self.patcher = comfy.model_patcher.ModelPatcher(self.model, load_device=load_device, offload_device=offload_device)

    def __call__(self, tokens):
        comfy.model_management.load_model_gpu(self.patcher)
        with torch.no_grad():
            return self.model(tokens.to(self.patcher.load_device, torch.float32)).float()


# ---------------------------------------------------------------- VAE
def vae_config(vae_sd):
    """Stable Diffusion VAE ddconfig and embed_dim from the tensors."""
    ch = vae_sd["encoder.conv_in.weight"].shape[0]
    levels = _count_layers(vae_sd, "encoder.down.")
    ch_mult = [vae_sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(levels)]
    ddconfig = {
        "double_z": True,
        "z_channels": vae_sd["decoder.conv_in.weight"].shape[1],
        "resolution": 256,
        "in_channels": vae_sd["encoder.conv_in.weight"].shape[1],
        "out_ch": vae_sd["decoder.conv_out.weight"].shape[0],
        "ch": ch,
        "ch_mult": ch_mult,
        "num_res_blocks": _count_layers(vae_sd, "encoder.down.0.block."),
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    return {"params": {"ddconfig": ddconfig, "embed_dim": vae_sd["post_quant_conv.weight"].shape[1]}}


def build_vae(vae_sd):
    vae = comfy.sd.VAE(sd=vae_sd, config=vae_config(vae_sd))
    vae.memory_used_decode = plain_decode_bytes  # measured (vc_models/memory_model.py), not core's SD guess
    return vae
