"""The original VideoCrafter DDIM as a ComfyUI sampler, and its uniform timestep schedule.

Registered under the names below so the core KSampler, SamplerCustom (KSamplerSelect /
BasicScheduler) and the VideoCrafter KSampler all offer them.
"""
import torch
from tqdm.auto import trange

import comfy.k_diffusion.sampling as k_sampling
import comfy.samplers

SAMPLER_NAME = "videocrafter_ddim"
# the same DDIM with eta 0, for nodes without an eta input (core KSampler, KSamplerSelect):
# FreeNoise and DynamiCrafter-style deterministic sampling from the core nodes
DETERMINISTIC_SAMPLER_NAME = "videocrafter_ddim_eta0"
SCHEDULER_NAME = "videocrafter_uniform"


def videocrafter_timesteps(steps, num_timesteps=1000):
    """The original's uniform DDIM timesteps, descending: range(0, T, T // steps) + 1."""
    stride = max(num_timesteps // steps, 1)
    return list(range(0, num_timesteps, stride))[::-1]


def videocrafter_uniform_sigmas(model_sampling, steps):
    """Sigmas at t = 901, 801, ..., 1 (for 10 steps) and finally t = 0: the last step lands on
    alphas_cumprod[0] as the original does, not on a noise-free sigma 0."""
    sigmas = model_sampling.sigmas
    # the original indexes t + 1 and breaks when that reaches T (e.g. 3 steps: 999 + 1); clamp instead
    ts = [min(t + 1, len(sigmas) - 1) for t in videocrafter_timesteps(steps, len(sigmas))]
    return torch.cat([sigmas[ts], sigmas[:1]]).float()


@torch.no_grad()
def sample_videocrafter_ddim(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, noise_sampler=None):
    """DDIM with the latent-scale schedule, in the sampler's y-space (see vc_models.model_base).

    Starts from unit-variance noise in the model's space when the latent is empty (as the
    original's x_T), per-step noise from ComfyUI's seeded generator (ancestral convention).
    """
    extra_args = {} if extra_args is None else extra_args
    ms = model.inner_model.inner_model.model_sampling
    latent = getattr(model, "latent_image", None)
    raw_noise = getattr(model, "noise", None)
    if raw_noise is not None and (latent is None or not torch.any(latent)) and hasattr(ms, "input_scale"):
        c_in = ms.input_scale(sigmas[:1].to(x.device)).reshape(())
        x = raw_noise.to(x) / c_in
    seed = extra_args.get("seed")
    noise_sampler = noise_sampler or k_sampling.default_noise_sampler(x, seed=seed)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if sigma_next <= 0:
            x = denoised
            continue
        eps = (x - denoised) / sigma
        a, _ = _alpha_and_scale(ms, sigma)
        a_prev, s_prev = _alpha_and_scale(ms, sigma_next)
        ddim_sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0) ** 0.5
        to_y = 1.0 / (a_prev ** 0.5 * s_prev)
        x = denoised + (1 - a_prev - ddim_sigma ** 2).clamp(min=0) ** 0.5 * to_y * eps
        if eta > 0:
            x = x + ddim_sigma * to_y * noise_sampler(sigma, sigma_next)
    return x


def _alpha_and_scale(ms, sigma):
    if hasattr(ms, "alpha_and_scale"):
        return ms.alpha_and_scale(sigma.reshape(1))
    one = torch.ones(1, device=sigma.device)
    return 1.0 / (1.0 + sigma.reshape(1) ** 2), one


def sample_videocrafter_ddim_eta0(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    return sample_videocrafter_ddim(model, x, sigmas, extra_args, callback, disable, eta=0.0, noise_sampler=noise_sampler)


def register():
    """Add the samplers and scheduler to ComfyUI's lists (idempotent)."""
    setattr(k_sampling, f"sample_{SAMPLER_NAME}", sample_videocrafter_ddim)
    setattr(k_sampling, f"sample_{DETERMINISTIC_SAMPLER_NAME}", sample_videocrafter_ddim_eta0)
    for names in (comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES):
        for name in (SAMPLER_NAME, DETERMINISTIC_SAMPLER_NAME):
            if name not in names:
                names.append(name)
    if SCHEDULER_NAME not in comfy.samplers.SCHEDULER_HANDLERS:
        comfy.samplers.SCHEDULER_HANDLERS[SCHEDULER_NAME] = comfy.samplers.SchedulerHandler(videocrafter_uniform_sigmas)
    if SCHEDULER_NAME not in comfy.samplers.SCHEDULER_NAMES:
        comfy.samplers.SCHEDULER_NAMES.append(SCHEDULER_NAME)


def faithful_sampler(eta):
    """A KSAMPLER object for SamplerCustom-style use with a given eta."""
    return comfy.samplers.ksampler(SAMPLER_NAME, {"eta": eta})
