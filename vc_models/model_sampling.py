"""The schedules of the VideoCrafter family as ComfyUI model_sampling objects, one small hierarchy.

`ScaledModelSampling` is the base: the checkpoint's discrete eps schedule with the latent-scale schedule
(`scale_arr`) as a reparameterisation ComfyUI's samplers understand. Training noises `x_t = sqrt(a_t) s_t x0 +
sqrt(1 - a_t) eps`, so `y = x_t / (sqrt(a_t) s_t) = x0 + sigma_t eps` with `sigma_t = sqrt((1 - a_t) / a_t) / s_t`.
With that sigma table and input scaling `c_in = sqrt(a_t) s_t`, every k-diffusion sampler samples the model's own
process, and the original DDIM update becomes an ordinary step in y (`vc_models.sampling`). The base carries the
extras the faithful DDIM and the guidance rescale use (`input_scale`, `alpha_and_scale`, `zero_snr_terminal`,
`last_step_keeps_scale`, `model_output_from_denoised`), so they check the type, not attributes; a model_sampling
another node put in its place (core ModelSamplingDiscrete and friends) is not one.
"""
import torch

import comfy.model_sampling

from . import registry
from .noise_schedule import LINEAR_START, LINEAR_END

# ComfyUI's zero-terminal-SNR clamp (comfy.model_sampling.rescale_zero_terminal_snr_sigmas): the last
# alphas_cumprod of such a schedule is 0 (infinite sigma), replaced by this to keep sigmas finite
ZSNR_LAST_ALPHAS_CUMPROD = 4.8973451890853435e-08


class ScaledModelSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    """Discrete eps schedule from the checkpoint's `alphas_cumprod`, with the latent-scale schedule."""

    def __init__(self, alphas_cumprod, scale_arr=None, last_step_keeps_scale=False):
        torch.nn.Module.__init__(self)
        self.sigma_data = 1.0
        alphas_cumprod = alphas_cumprod.double().clone()
        self.zsnr = bool(alphas_cumprod[-1] <= 0)
        if self.zsnr:
            alphas_cumprod[-1] = ZSNR_LAST_ALPHAS_CUMPROD
        scale = torch.ones_like(alphas_cumprod) if scale_arr is None else scale_arr.double()[: len(alphas_cumprod)]
        self.num_timesteps = len(alphas_cumprod)
        # the faithful DDIM's last step (to t = 0) re-scales x0 by the scale of t = 0 (VideoCrafter) or, as
        # DynamiCrafter's sampler does, keeps the current step's scale (vc_models.sampling)
        self.last_step_keeps_scale = last_step_keeps_scale
        self.linear_start, self.linear_end = LINEAR_START, LINEAR_END
        self.register_buffer("scale_arr", scale.float())
        self.set_sigmas((((1 - alphas_cumprod) / alphas_cumprod) ** 0.5 / scale).float())

    def _scale(self, sigma):
        """s(sigma), interpolated in t as the log-sigma table is (exact at the discrete timesteps)."""
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.float().clamp(min=self.sigmas[0].item()).log()
        hi = torch.searchsorted(log_sigmas, log_sigma.reshape(-1)).clamp(1, len(log_sigmas) - 1)
        lo = hi - 1
        w = ((log_sigma.reshape(-1) - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])).clamp(0, 1)
        scale = self.scale_arr.to(sigma.device)
        s = scale[lo] * (1 - w) + scale[hi] * w
        return torch.where(sigma.reshape(-1) > 0, s, torch.ones_like(s)).reshape(sigma.shape)

    def input_scale(self, sigma):
        """c_in(sigma) = sqrt(a_t) s_t: maps y (sampler space) to the model's x_t."""
        s = self._scale(sigma)
        return s / (1.0 + (sigma * s) ** 2) ** 0.5

    def alpha_and_scale(self, sigma):
        """(a_t, s_t) for a sigma of this table."""
        s = self._scale(sigma)
        return 1.0 / (1.0 + (sigma * s) ** 2), s

    def calculate_input(self, sigma, noise):
        c_in = comfy.model_sampling.reshape_sigma(self.input_scale(sigma), noise.ndim)
        return noise * c_in

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        if max_denoise:
            # unit variance in the model's space, as the original starts from x_T ~ N(0, I)
            c_in = comfy.model_sampling.reshape_sigma(self.input_scale(sigma), noise.ndim)
            return noise / c_in + latent_image
        return noise * comfy.model_sampling.reshape_sigma(sigma, noise.ndim) + latent_image

    def model_output_from_denoised(self, sigma, denoised, model_input):
        """The raw eps back from an x0 estimate (the inverse of calculate_denoised)."""
        return (model_input - denoised) / comfy.model_sampling.reshape_sigma(sigma, denoised.ndim)

    def zero_snr_terminal(self, sigma, denoised, model_input):
        """(x0, eps, alpha) as the original has them at the last timestep of a zero-terminal-SNR schedule, or
        None: eps schedules have none (see ScaledVModelSampling)."""
        return None

    def inverse_noise_scaling(self, sigma, latent):
        # a schedule that ends above sigma 0 (the faithful DDIM ends at t=0) returns the model-space x_0
        return latent * comfy.model_sampling.reshape_sigma(self.input_scale(sigma), latent.ndim)


class ConsistencyModelSampling(ScaledModelSampling):
    """T2V-Turbo: the plain schedule (no `scale_arr`, as the distillation ran) with LCM's boundary
    condition `denoised = c_out x0 + c_skip x_t`, c_skip/c_out at t/0.1 and sigma_data 0.5, exactly as the
    original scheduler (x_t in the model's space, so `c_skip` multiplies the scaled input). With it the
    core `lcm` sampler is the original LCM step: x = denoised, renoised to the next sigma with a fresh randn."""
    sigma_data_boundary = 0.5
    timestep_scaling = 10.0  # t / 0.1

    def __init__(self, alphas_cumprod, scale_arr=None, last_step_keeps_scale=False):
        super().__init__(alphas_cumprod, None, last_step_keeps_scale)  # a base checkpoint's scale_arr does not apply

    def calculate_denoised(self, sigma, model_output, model_input):
        shape = (sigma.shape[:1] + (1,) * (model_output.ndim - 1)) if sigma.ndim else ()
        scaled_t = self.timestep(sigma).float().reshape(shape) * self.timestep_scaling
        x0 = model_input - model_output * sigma.reshape(shape)
        x_t = model_input * self.input_scale(sigma).reshape(shape)
        sd2 = self.sigma_data_boundary ** 2
        c_skip = sd2 / (scaled_t ** 2 + sd2)
        c_out = scaled_t / (scaled_t ** 2 + sd2) ** 0.5
        return c_out * x0 + c_skip * x_t


class ScaledVModelSampling(ScaledModelSampling):
    """v-prediction (DynamiCrafter 512/1024) on the same scaled schedule. The original predicts
    v = sqrt(a_t) eps - sqrt(1 - a_t) s_t x0, so in the sampler's y-space the x0 estimate is
    a_t y - sigma sqrt(a_t) v (ComfyUI's V_PREDICTION with sigma_data 1 when s_t = 1)."""

    def calculate_denoised(self, sigma, model_output, model_input):
        alpha, _ = self.alpha_and_scale(sigma)
        alpha = comfy.model_sampling.reshape_sigma(alpha, model_output.ndim)
        sigma = comfy.model_sampling.reshape_sigma(sigma, model_output.ndim)
        return model_input * alpha - model_output * sigma * alpha ** 0.5

    def zero_snr_terminal(self, sigma, denoised, model_input):
        """At the last timestep of a zero-terminal-SNR schedule the original has alpha exactly 0, where
        eps = x_t and x0 = -v / s; the sigma table holds the clamped alpha instead. Returns
        (x0 estimate in y-space, eps, alpha) as the original has them, or None at any other sigma."""
        if not self.zsnr or sigma < self.sigmas[-1]:
            return None
        _, scale = self.alpha_and_scale(sigma)
        v = self.model_output_from_denoised(sigma, denoised, model_input)
        x_t = model_input * comfy.model_sampling.reshape_sigma(self.input_scale(sigma), model_input.ndim)
        return -v / comfy.model_sampling.reshape_sigma(scale, v.ndim), x_t, torch.zeros_like(scale)

    def model_output_from_denoised(self, sigma, denoised, model_input):
        """The raw v back from an x0 estimate (the inverse of calculate_denoised)."""
        alpha, _ = self.alpha_and_scale(sigma)
        alpha = comfy.model_sampling.reshape_sigma(alpha, denoised.ndim)
        sigma = comfy.model_sampling.reshape_sigma(sigma, denoised.ndim)
        return (model_input * alpha - denoised) / (sigma * alpha ** 0.5)


SCHEDULES = {registry.SCALED_EPS: ScaledModelSampling, registry.SCALED_V: ScaledVModelSampling,
             registry.CONSISTENCY: ConsistencyModelSampling}


def model_sampling_for(entry, alphas_cumprod, scale_arr):
    """The model_sampling of a registry entry's schedule."""
    return SCHEDULES[entry.schedule](alphas_cumprod, scale_arr, last_step_keeps_scale=entry.family.last_step_keeps_scale)
