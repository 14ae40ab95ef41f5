"""Calling the pack's MODEL and ComfyUI's nodes in-process the way a graph does (tests that import ComfyUI)."""
import os

import torch

import comfy_host


def model_output(model, conditioning, x_t, t):
    """One UNet call as ComfyUI's samplers make it (sigma in, denoised out, the MODEL's transformer_options, e.g.
    context windows), at integer timestep `t` on the original's x_t; returns the raw output recovered from the
    denoised estimate: eps, or v for v-prediction."""
    base = model.model
    ms = base.model_sampling
    sigma = ms.sigmas[t].reshape(1)
    x = x_t / ms.input_scale(sigma).reshape(1, 1, 1, 1, 1)
    conds = base.extra_conds(cross_attn=conditioning[0][0], noise=x, device=torch.device("cpu"), **conditioning[0][1])
    kwargs = {k: v.process_cond(batch_size=x.shape[0], device=torch.device("cpu"), area=None).cond
              for k, v in conds.items()}
    with torch.no_grad():
        denoised = base.apply_model(x, sigma, transformer_options=model.model_options.get("transformer_options", {}),
                                    **kwargs)
    return ms.model_output_from_denoised(sigma, denoised, x)


def run_node(node, *args):
    """A core node class run on positional inputs: nodes of the new API return NodeOutput, older ones tuples."""
    result = node.execute(*args) if hasattr(node, "execute") else getattr(node(), node.FUNCTION)(*args)
    return result.result if hasattr(result, "result") else result


def controlnet_network(unet_config, hint_channels=3, model_channels=None):
    """ComfyUI's own ControlNet network (comfy.cldm) at a VideoCrafter UNet configuration's sizes."""
    import comfy.cldm.cldm
    cfg = unet_config
    levels = range(len(cfg.channel_mult))
    return comfy.cldm.cldm.ControlNet(
        image_size=32, in_channels=cfg.out_channels, model_channels=model_channels or cfg.model_channels,
        hint_channels=hint_channels, num_res_blocks=cfg.num_res_blocks, channel_mult=cfg.channel_mult,
        num_head_channels=cfg.head_dim, use_spatial_transformer=True, context_dim=cfg.context_dim,
        transformer_depth=[cfg.transformer_depth if level in cfg.attention_levels else 0
                           for level in levels for _ in range(cfg.num_res_blocks)],
        transformer_depth_middle=cfg.transformer_depth, use_linear_in_transformer=cfg.use_linear)


def random_controlnet(unet_config, hint_channels=3, seed=0, model_channels=None, prefix="control_model."):
    """A random SD-layout ControlNet state dict (`control_model.` keys as the released SD ControlNets store them;
    `prefix` "" for the bare keys of ToonCrafter's sketch encoder, a cldm ControlNet's own state dict) sized to a VideoCrafter UNet's configuration (`model_channels` overrides its width):
    the blocks of ComfyUI's own ControlNet at those sizes, zero convolutions not zero so the residuals are not."""
    net = controlnet_network(unet_config, hint_channels, model_channels)
    generator = torch.Generator().manual_seed(seed)
    return {prefix + k: torch.randn(v.shape, generator=generator) * (0.05 if v.ndim > 1 else 0.01)
            for k, v in net.state_dict().items()}


def sample_video(pack, bundle_model, clip):
    """Two faithful-DDIM CFG steps on a 64x64, 2-frame latent through the pack's KSampler (the LATENT samples)."""
    import nodes as core
    (pos,) = core.CLIPTextEncode().encode(clip, "a corgi on the beach")
    (neg,) = core.CLIPTextEncode().encode(clip, "")
    (latent,) = pack.vc_nodes.NODE_CLASSES["EmptyVideoCrafterLatent"].execute(64, 64, 2, 1)
    (out,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"].execute(
        bundle_model, pos, neg, latent, seed=3, steps=2, cfg=7.5, sampler_name="videocrafter_ddim",
        scheduler="videocrafter_uniform", eta=1.0, denoise=1.0)
    return out["samples"]


def tiny_graph(pack, models_dir, name, frames, width, height):
    """(MODEL, positive, negative, LATENT) for tiny model `name` as the pack's nodes make them: the loader, core CLIP
    Text Encode, then DynamiCrafter Conditioning (i2v on a random start image), or VideoCrafter Image Encode (I2V)
    and the fps conditioning with an empty latent."""
    import nodes as core
    mappings = pack.vc_nodes.NODE_CLASSES
    if not os.path.exists(models_dir / f"{name}.safetensors"):
        os.symlink(os.path.join(comfy_host.GOLDEN, f"{name}.safetensors"), models_dir / f"{name}.safetensors")
    model, clip, vae, clip_vision, projector = mappings["VideoCrafterCheckpointLoader"].execute(f"{name}.safetensors", "default")
    (positive,) = core.CLIPTextEncode().encode(clip, "a red ball bouncing on a wooden floor")
    (negative,) = core.CLIPTextEncode().encode(clip, "")
    image = torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(0))
    if name.startswith("tiny_dc"):
        return (model, *mappings["DynamiCrafterConditioning"].execute(
            positive, negative, vae, clip_vision, projector, image, "i2v", width, height, frames, 1, 24))
    if name.startswith("tiny_i2v"):
        positive, negative = mappings["VideoCrafterImageEncode"].execute(clip_vision, projector, image, positive, negative)
    positive, negative = mappings["VideoCrafterFPSConditioning"].execute(positive, negative, 8)
    (latent,) = mappings["EmptyVideoCrafterLatent"].execute(width, height, frames, 1)
    return model, positive, negative, latent
