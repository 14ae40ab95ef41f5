"""Guidance rescale as DynamiCrafter computes it: on the model's own output (v for 512/1024, eps for 256).

    out = phi * cfg * std(cond) / std(cfg) + (1 - phi) * cfg,  std over every non-batch dim.

ComfyUI's samplers combine x0 estimates in their own (sigma) space; the model output is an affine
function of that estimate at a given sigma, so the guided output is recovered exactly, rescaled,
and mapped back. Core RescaleCFG instead converts to v with the plain schedule and takes the std
over dims (1, 2, 3) only, which is not the original's rescale for these 5-D, latent-scaled models.
"""
import torch

import comfy.samplers

from .model_sampling import ScaledModelSampling


def rescale_guidance(model_sampling, sigma, x, cond_denoised, guided, multiplier):
    """The guided x0 estimate with the original's guidance rescale applied in model-output space."""
    if multiplier == 0:
        return guided
    if not isinstance(model_sampling, ScaledModelSampling):
        raise ValueError(
            f"The guidance rescale works on a VideoCrafter model's own schedule, but this MODEL samples with "
            f"{type(model_sampling).__name__} (another node replaced its model_sampling): remove that node, or set "
            "the rescale multiplier to 0.")
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
            cond, uncond = args["cond_denoised"], args["uncond_denoised"]
            guided = uncond + args["cond_scale"] * (cond - uncond)
            denoised = rescale_guidance(model_sampling, args["sigma"], x, cond, guided, multiplier)
        return x - denoised
    return cfg_function


def image_only_conditioning(positive, negative):
    """DynamiCrafter's third guidance input: the negative's text with the positive's image conditioning
    (image tokens, concat latent, fs), i.e. the empty prompt with the real image."""
    return [[n_tokens, {**p_extras, **{k: v for k, v in n_extras.items() if k not in p_extras}}]
            for (n_tokens, n_extras), (_, p_extras) in zip(negative, _match_length(positive, len(negative)))]


def _match_length(conditioning, length):
    return [conditioning[min(i, len(conditioning) - 1)] for i in range(length)]


class TwoScaleGuider(comfy.samplers.CFGGuider):
    """DynamiCrafter's `multiple_cond_cfg`: e_u + s_img (e_img - e_u) + s_txt (e_c - e_img), with e_img the
    empty prompt plus the real image, then the guidance rescale against e_c, all three passes batched."""

    def set_scales(self, cfg_text, cfg_image, rescale):
        self.cfg_text, self.cfg_image, self.rescale = cfg_text, cfg_image, rescale

    def set_two_scale_conds(self, positive, negative):
        self.inner_set_conds({"positive": positive, "middle": image_only_conditioning(positive, negative),
                              "negative": negative})

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        conds = [self.conds.get("negative"), self.conds.get("middle"), self.conds.get("positive")]
        uncond, image_only, cond = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        guided = uncond + self.cfg_image * (image_only - uncond) + self.cfg_text * (cond - image_only)
        return rescale_guidance(self.inner_model.model_sampling, timestep, x, cond, guided, self.rescale)
