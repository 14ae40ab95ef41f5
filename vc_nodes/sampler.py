"""VideoCrafter KSampler: the core KSampler for 5-D video latents, with eta and the faithful DDIM."""
import inspect

import torch

import comfy.k_diffusion.sampling as k_sampling
import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..vc_models.sampling import SAMPLER_NAME, SCHEDULER_NAME
from ..vc_models.model_base import VideoCrafterModel
from ..vc_models.memory_model import sampling_refusal
from .finite_inputs import check_finite
from ..vc_models.video_size import SIZE_MULTIPLE


def _accepts(sampler_name, option):
    function = getattr(k_sampling, f"sample_{sampler_name}", None)
    return function is not None and option in inspect.signature(function).parameters


def make_sampler(sampler_name, eta, noise_sampler=None):
    """The SAMPLER object; `noise_sampler` replaces the per-step noise of samplers that draw any."""
    options = {option: value for option, value in (("eta", eta), ("noise_sampler", noise_sampler))
               if value is not None and _accepts(sampler_name, option)}
    if options:
        return comfy.samplers.ksampler(sampler_name, options)
    return comfy.samplers.sampler_object(sampler_name)


def check_latent(model, latent):
    if latent.ndim != 5:
        raise ValueError(f"VideoCrafter samples video latents [B, 4, frames, H/8, W/8]; got a {latent.ndim}-D latent "
                         f"{list(latent.shape)}. Use 'Empty VideoCrafter Latent' to make one.")
    if isinstance(model.model, VideoCrafterModel):
        h, w = latent.shape[-2:]
        step = SIZE_MULTIPLE // 8
        if h % step or w % step:
            raise ValueError(f"Video size {w * 8}x{h * 8} is not a multiple of {SIZE_MULTIPLE} pixels, which the "
                             "VideoCrafter UNet needs (it halves the latent three times).")
        if latent.shape[1] != 4:
            raise ValueError(f"VideoCrafter latents have 4 channels; got {latent.shape[1]}.")


class VideoCrafterKSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoCrafterKSampler",
            display_name="VideoCrafter KSampler",
            category="VideoCrafter/sampling",
            description=("Denoises a video latent with classifier-free guidance. 'videocrafter_ddim' with the "
                         "'videocrafter_uniform' schedule is the original implementation's sampler step for step; "
                         "every ComfyUI sampler and scheduler works too."),
            inputs=[
                io.Model.Input("model", tooltip="The VideoCrafter model (or one patched by other nodes)."),
                io.Conditioning.Input("positive", tooltip=(
                    "What the video should show (CLIP Text Encode, then FPS / Image Encode).")),
                io.Conditioning.Input("negative", tooltip=(
                    "What to steer away from; the original uses the empty prompt.")),
                io.Latent.Input("latent_image", tooltip=(
                    "A 5-D video latent from Empty VideoCrafter Latent (or a VAE-encoded video for denoise < 1).")),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seed of the initial noise and of the per-step noise (eta > 0)."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="Denoising steps; the papers use 50."),
                io.Float.Input("cfg", default=12.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale; the papers use 12 (T2V) and 12 (I2V)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default=SAMPLER_NAME,
                               tooltip="videocrafter_ddim reproduces the original sampler; any ComfyUI sampler works."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default=SCHEDULER_NAME,
                               tooltip=("videocrafter_uniform: the original's DDIM timesteps (ending at t=0); "
                                        "videocrafter_trailing: DynamiCrafter 512/1024's official spacing.")),
                io.Float.Input("eta", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=(
                    "DDIM eta: 0 is deterministic, 1 (the original's default) adds fresh noise each step. "
                    "Also passed to ancestral/SDE samplers that take an eta.")),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="1 generates from noise; lower keeps more of the input latent."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, eta=1.0,
                denoise=1.0):
        return io.NodeOutput(sample_video(model, positive, negative, latent_image, seed, steps, cfg, sampler_name,
                                          scheduler, eta, denoise))


def sample_video(model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, eta=1.0,
                 denoise=1.0, noise_sampler=None):
    """The VideoCrafter KSampler's LATENT; `noise_sampler` (optional) draws the per-step noise."""
    check_finite(cfg=cfg, eta=eta, denoise=denoise)  # linked values skip validation
    latent = latent_image["samples"]
    check_latent(model, latent)
    if isinstance(model.model, VideoCrafterModel):
        refusal = sampling_refusal(model, list(latent.shape))  # before noise, sigmas or a model load
        if refusal:
            raise ValueError(refusal)
    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
    schedule = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                       scheduler=scheduler, denoise=denoise, model_options=model.model_options)
    sigmas = schedule.sigmas
    out = latent_image.copy()
    if len(sigmas) < 2:  # denoise 0
        out["samples"] = latent
        return out
    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    samples = comfy.sample.sample_custom(
        model, noise, cfg, make_sampler(sampler_name, eta, noise_sampler), sigmas, positive, negative, latent,
        noise_mask=latent_image.get("noise_mask"), callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    if not bool(torch.isfinite(samples).all()):
        # NaN weights (or fp16 overflow) sampled black frames without a word; one check of the result says so
        raise ValueError("The sampled latent holds NaN or infinite values, so the video would be black: the "
                         "checkpoint's weights hold NaN (download or convert it again) or the computation overflowed "
                         "(load it with weight_dtype bf16 or default instead of fp16).")
    out.pop("downscale_ratio_spacial", None)
    out["samples"] = samples
    return out


class VideoCrafterDDIMSampler(io.ComfyNode):
    """The faithful DDIM as a SAMPLER with its eta, for SamplerCustom / SamplerCustomAdvanced graphs
    (e.g. DynamiCrafter's two guidance scales through core DualCFGGuider)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoCrafterDDIMSampler",
            display_name="VideoCrafter DDIM Sampler",
            category="VideoCrafter/sampling",
            description=("The original VideoCrafter/DynamiCrafter DDIM step as a SAMPLER for the custom-sampling "
                         "nodes; pair it with BasicScheduler's 'videocrafter_uniform' or 'videocrafter_trailing'."),
            inputs=[
                io.Float.Input("eta", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=(
                    "DDIM eta: 0 is deterministic, 1 (the originals' default) adds fresh noise each step.")),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, eta):
        return io.NodeOutput(comfy.samplers.ksampler(SAMPLER_NAME, {"eta": eta}))


NODES = [VideoCrafterKSampler, VideoCrafterDDIMSampler]
