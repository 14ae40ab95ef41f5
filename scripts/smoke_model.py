"""Tiny random-weight VideoCrafter checkpoints built from the pack's own modules (a SMOKE MODEL).

Same tiny architecture and key layout as the reference tiny models (`tiny_t2v_v1`, `tiny_t2v_v2`,
`tiny_i2v_v1` of ../shared/reference/golden: UNet 64 channels, mult 1,1,2,2, one res block; text CLIP
width 64, 3 layers; vision width 128, 2 layers; Resampler dim 64), so tests and `make demo` run on a
clone without the reference data. Random weights: the videos are noise; parity with the original is
what the reference goldens are for.

The UNet and the projector come from this pack's classes (parameter names are the released keys),
the VAE from ComfyUI's AutoencoderKL; the OpenCLIP text/vision towers, which the pack never builds in
their own layout (it converts them at load time), are listed here in OpenCLIP's layout.

A test fixture, not part of the pack: it reaches the pack's modules through comfy_boot.pack (importing it boots
ComfyUI on the CPU unless the caller booted it already). Used by scripts/make_smoke_models.py, benchmark.py,
demo.py and the tests.
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_boot  # noqa: E402  (scripts/, beside this module)

UNetConfig = comfy_boot.pack("vc_models.unet_config").UNetConfig
_layout = comfy_boot.pack("vc_models.checkpoint_file")
UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX, VISION_PREFIX, PROJECTOR_PREFIX = (
    _layout.UNET_PREFIX, _layout.VAE_PREFIX, _layout.TEXT_PREFIX, _layout.VISION_PREFIX, _layout.PROJECTOR_PREFIX)
_schedule = comfy_boot.pack("vc_models.noise_schedule")

TINY_UNET = dict(model_channels=64, channel_mult=(1, 1, 2, 2), num_res_blocks=1, attention_levels=(0, 1, 2),
                 context_dim=64, init_attn_heads=8, fps_cond=True, use_linear=True)
# name -> (UNet switches, scale_arr (base, length) or None, image-to-video)
SMOKE_MODELS = {
    "tiny_t2v_v1": (dict(relative_position=True), (0.3, 1000), False),   # shrinks VideoCrafter1 T2V 1024
    "tiny_t2v_v2": (dict(temporal_conv=True), (0.7, 1400), False),        # shrinks VideoCrafter2 T2V 512
    "tiny_i2v_v1": (dict(temporal_conv=True, image_cross_attention=True, image_context_dim=64), (0.7, 1400), True),
    # DynamiCrafter: 8 input channels (noise + image latent), 16 image tokens per frame (256 projector queries)
    "tiny_dc_256": (dict(temporal_conv=True, image_cross_attention=True, image_context_dim=64, in_channels=8,
                         image_attention_alpha=True), None, True),                  # eps, learned alpha
    "tiny_dc_512": (dict(temporal_conv=True, image_cross_attention=True, image_context_dim=64, in_channels=8),
                    (0.7, 1400), True),                                              # v, zero terminal SNR
}
# ToonCrafter: tiny_dc_512 with the dual-reference VAE decoder (fusion at levels 2 and 3, as released)
SMOKE_MODELS["tiny_toon_512"] = SMOKE_MODELS["tiny_dc_512"]
DUALREF_DECODER = {"tiny_toon_512": (2, 3)}
ZERO_TERMINAL_SNR = ("tiny_dc_512", "tiny_toon_512")  # v-prediction models: their stored schedule ends at alphas_cumprod 0
TEXT_WIDTH, TEXT_LAYERS, VOCAB, TEXT_TOKENS = 64, 3, 49408, 77
VISION_WIDTH, VISION_LAYERS, PATCH, GRID = 128, 2, 14, 16
VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
COND_IMAGE = "tiny_i2v_v1.case1.cond_image.png"  # the start image the tests and the demo feed


def _openclip_tower(width, layers):
    shapes = {}
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        shapes.update({p + "ln_1.weight": [width], p + "ln_1.bias": [width],
                       p + "attn.in_proj_weight": [3 * width, width], p + "attn.in_proj_bias": [3 * width],
                       p + "attn.out_proj.weight": [width, width], p + "attn.out_proj.bias": [width],
                       p + "ln_2.weight": [width], p + "ln_2.bias": [width],
                       p + "mlp.c_fc.weight": [4 * width, width], p + "mlp.c_fc.bias": [4 * width],
                       p + "mlp.c_proj.weight": [width, 4 * width], p + "mlp.c_proj.bias": [width]})
    return shapes


def _text_shapes():
    return {"token_embedding.weight": [VOCAB, TEXT_WIDTH], "positional_embedding": [TEXT_TOKENS, TEXT_WIDTH],
            "ln_final.weight": [TEXT_WIDTH], "ln_final.bias": [TEXT_WIDTH],
            "text_projection": [TEXT_WIDTH, TEXT_WIDTH], "logit_scale": []}


def _vision_shapes(with_text=True):
    shapes = {"visual." + k: v for k, v in _openclip_tower(VISION_WIDTH, VISION_LAYERS).items()}
    shapes.update({"visual.conv1.weight": [VISION_WIDTH, 3, PATCH, PATCH], "visual.class_embedding": [VISION_WIDTH],
                   "visual.positional_embedding": [GRID * GRID + 1, VISION_WIDTH],
                   "visual.ln_pre.weight": [VISION_WIDTH], "visual.ln_pre.bias": [VISION_WIDTH],
                   "visual.ln_post.weight": [VISION_WIDTH], "visual.ln_post.bias": [VISION_WIDTH],
                   "visual.proj": [VISION_WIDTH, TEXT_WIDTH]})
    if with_text:  # the released embedder carries a few unused text tensors of the OpenCLIP model (as the tiny reference)
        shapes.update(_text_shapes())
    return shapes


def _module_shapes(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def smoke_shapes(name):
    """{checkpoint key: shape} of one smoke model (no schedule buffers)."""
    import comfy.ldm.models.autoencoder
    VideoCrafterUNet = comfy_boot.pack("vc_models.unet").VideoCrafterUNet
    projector_module = comfy_boot.pack("vc_models.projector")
    ImageProjector, ProjectorConfig = projector_module.ImageProjector, projector_module.ProjectorConfig

    switches, _, i2v = SMOKE_MODELS[name]
    unet = VideoCrafterUNet(UNetConfig(**TINY_UNET, **switches), device="meta")
    shapes = {UNET_PREFIX + k: v for k, v in _module_shapes(unet).items()}
    with torch.device("meta"):
        vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=VAE_DDCONFIG, embed_dim=4)
        if name in DUALREF_DECODER:
            DualRefDecoder = comfy_boot.pack("vc_models.dualref_vae").DualRefDecoder
            vae.decoder = DualRefDecoder(DUALREF_DECODER[name], **VAE_DDCONFIG)
    shapes.update({VAE_PREFIX + k: v for k, v in _module_shapes(vae).items()})
    shapes.update({TEXT_PREFIX + k: v for k, v in {**_text_shapes(), **_openclip_tower(TEXT_WIDTH, TEXT_LAYERS)}.items()})
    if i2v:
        dynamicrafter = switches.get("in_channels", 4) == 8
        # the tiny DynamiCrafter references leave the embedder's unused text tensors out
        shapes.update({VISION_PREFIX + k: v for k, v in _vision_shapes(with_text=not dynamicrafter).items()})
        queries = 256 if dynamicrafter else 16  # DynamiCrafter: 16 image tokens per frame x 16 frames
        projector = ImageProjector(ProjectorConfig(dim=64, depth=2, heads=2, head_dim=64, num_queries=queries,
                                                   embedding_dim=VISION_WIDTH, output_dim=64, ff_mult=4), device="meta")
        shapes.update({PROJECTOR_PREFIX + k: v for k, v in _module_shapes(projector).items()})
    return shapes


def _uniform(shape, bound, gen):
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def _random(key, shapes, gen):
    """Values spread like the reference tiny models': PyTorch's default layer init (weights and biases
    uniform +-1/sqrt(fan_in)), norms at 1 +- 0.02, OpenCLIP-style embeddings, and small (not zero) weights where
    the original zero-initialises (`proj_out`), so every branch (the image cross-attention too) shapes the output."""
    shape = shapes[key]
    module, leaf = key.rsplit(".", 1) if "." in key else ("", key)
    if not shape:
        return torch.tensor(math.log(1 / 0.07))  # logit_scale
    if key.endswith(("class_embedding", "visual.positional_embedding", "latents")):
        return torch.randn(shape, generator=gen) / math.sqrt(shape[-1])
    if key.endswith(("token_embedding.weight", "positional_embedding")):
        return 0.02 * torch.randn(shape, generator=gen)
    if key.endswith(("in_proj_weight", "text_projection")):
        return torch.randn(shape, generator=gen) / math.sqrt(shape[-1])
    if key.endswith("in_proj_bias") or (key.startswith(UNET_PREFIX) and (
            "proj_out" in key or "temopral_conv.conv4.3." in key)):  # zero-initialised in the original
        return 0.02 * torch.randn(shape, generator=gen)
    weight = shapes.get(module + ".weight")
    if leaf == "weight" and len(shape) == 1:  # a norm's scale
        return 1.0 + 0.02 * torch.randn(shape, generator=gen)
    if leaf == "bias" and (weight is None or len(weight) == 1):  # a norm's shift
        return 0.02 * torch.randn(shape, generator=gen)
    fan_in = math.prod((weight if leaf == "bias" else shape)[1:]) or 1
    return _uniform(shape, 1 / math.sqrt(fan_in), gen)


def build_smoke_state_dict(name, seed=0):
    """A full tiny checkpoint {key: fp16 tensor} (schedule buffers fp32) with seeded random weights."""
    gen = torch.Generator().manual_seed(seed)
    shapes = smoke_shapes(name)
    sd = {k: _random(k, shapes, gen).to(torch.float16) for k in sorted(shapes)}
    sd.update(_schedule.release_buffers(SMOKE_MODELS[name][1], zero_terminal_snr=name in ZERO_TERMINAL_SNR))
    return sd


def tiny_toon_state_dict(golden):
    """The tiny ToonCrafter from folder `golden`: its smoke model there, else the reference's recipe (tiny_dc_512
    updated with the decoder delta `tiny_toon_512.delta.safetensors`)."""
    import safetensors.torch
    smoke = os.path.join(golden, "tiny_toon_512.safetensors")
    if os.path.exists(smoke):
        return safetensors.torch.load_file(smoke)
    sd = safetensors.torch.load_file(os.path.join(golden, "tiny_dc_512.safetensors"))
    sd.update(safetensors.torch.load_file(os.path.join(golden, "tiny_toon_512.delta.safetensors")))
    return sd


def write_cond_image(path):
    """A deterministic 128x64 start image (smooth colour gradient with a disc), as a PNG."""
    from PIL import Image
    y, x = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 128), indexing="ij")
    disc = (((x - 0.6) * 2) ** 2 + (y - 0.5) ** 2 < 0.08).float()
    rgb = torch.stack([x, y, 1 - x * (1 - disc)], -1).clamp(0, 1)
    Image.fromarray((rgb * 255).round().to(torch.uint8).numpy()).save(path)


def write_smoke_models(folder, names=tuple(SMOKE_MODELS)):
    """Writes `<name>.safetensors` for each smoke model and the start image into `folder`; returns the paths."""
    write_safetensors = comfy_boot.pack("vc_models.atomic_file").write_safetensors
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        path = os.path.join(folder, name + ".safetensors")
        if not os.path.exists(path):
            write_safetensors(build_smoke_state_dict(name, seed=i), path, metadata={"videocrafter_smoke_model": name})
        paths.append(path)
    image = os.path.join(folder, COND_IMAGE)
    if not os.path.exists(image):
        write_cond_image(image)
    return paths
