"""Calling the pack's MODEL and ComfyUI's nodes in-process the way a graph does (tests that import ComfyUI)."""
import torch


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


def sample_video(pack, bundle_model, clip):
    """Two faithful-DDIM CFG steps on a 64x64, 2-frame latent through the pack's KSampler (the LATENT samples)."""
    import nodes as core
    (pos,) = core.CLIPTextEncode().encode(clip, "a corgi on the beach")
    (neg,) = core.CLIPTextEncode().encode(clip, "")
    (latent,) = pack.NODE_CLASS_MAPPINGS["EmptyVideoCrafterLatent"]().generate(64, 64, 2, 1)
    (out,) = pack.NODE_CLASS_MAPPINGS["VideoCrafterKSampler"]().sample(
        bundle_model, pos, neg, latent, seed=3, steps=2, cfg=7.5, sampler_name="videocrafter_ddim",
        scheduler="videocrafter_uniform", eta=1.0, denoise=1.0)
    return out["samples"]
