"""Guidance rescale as DynamiCrafter computes it: on the model's own output (v for 512/1024, eps for 256).

    out = phi * cfg * std(cond) / std(cfg) + (1 - phi) * cfg,  std over every non-batch dim.

ComfyUI's samplers combine x0 estimates in their own (sigma) space; the model output is an affine
function of that estimate at a given sigma, so the guided output is recovered exactly, rescaled,
and mapped back. Core RescaleCFG instead converts to v with the plain schedule and takes the std
over dims (1, 2, 3) only, which is not the original's rescale for these 5-D, latent-scaled models.
"""
import torch


def rescale_guidance(model_sampling, sigma, x, cond_denoised, uncond_denoised, cond_scale, multiplier):
    """The guided x0 estimate with the original's guidance rescale applied in model-output space."""
    guided = uncond_denoised + cond_scale * (cond_denoised - uncond_denoised)
    if multiplier == 0:
        return guided
    out_cond = model_sampling.model_output_from_denoised(sigma, cond_denoised, x)
    out_guided = model_sampling.model_output_from_denoised(sigma, guided, x)
    dims = list(range(1, out_cond.ndim))
    rescaled = out_guided * (out_cond.std(dim=dims, keepdim=True) / out_guided.std(dim=dims, keepdim=True))
    out = multiplier * rescaled + (1.0 - multiplier) * out_guided
    return model_sampling.calculate_denoised(sigma, out, x)


def guidance_rescale_cfg_function(multiplier):
    """A ComfyUI `sampler_cfg_function` (returns x - guided x0) applying `rescale_guidance`."""
    def cfg_function(args):
        x = args["input"]
        model_sampling = args["model"].model_sampling
        with torch.no_grad():
            denoised = rescale_guidance(model_sampling, args["sigma"], x, args["cond_denoised"],
                                        args["uncond_denoised"], args["cond_scale"], multiplier)
        return x - denoised
    return cfg_function
