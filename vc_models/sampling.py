"""The original VideoCrafter DDIM as a ComfyUI sampler, and its uniform timestep schedule.

Registered under the names below so the core KSampler, SamplerCustom (KSamplerSelect /
BasicScheduler) and the VideoCrafter KSampler all offer them.
"""
import torch
from tqdm.auto import trange

import comfy.k_diffusion.sampling as k_sampling
import comfy.samplers

from .model_sampling import ScaledModelSampling

SAMPLER_NAME = "videocrafter_ddim"
# the same DDIM with eta 0, for nodes without an eta input (core KSampler, KSamplerSelect):
# FreeNoise and DynamiCrafter-style deterministic sampling from the core nodes
DETERMINISTIC_SAMPLER_NAME = "videocrafter_ddim_eta0"
# T2V-Turbo: the LCM step with the original's per-step noise on every host (core `lcm` differs on 0.33)
LCM_SAMPLER_NAME = "videocrafter_lcm"
SCHEDULER_NAME = "videocrafter_uniform"
TURBO_SCHEDULER_NAME = "videocrafter_turbo"
LCM_ORIGIN_STEPS = 200  # T2V-Turbo-v2's lcm_origin_steps
# DynamiCrafter 512/1024's official spacing (`uniform_trailing`): 999, 979, ..., 19 for 50 steps
TRAILING_SCHEDULER_NAME = "videocrafter_trailing"


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


def turbo_timesteps(steps, origin_steps=LCM_ORIGIN_STEPS, num_timesteps=1000):
    """T2V-Turbo's LCM timesteps, descending: of the distillation grid [c k - 1 for k = 1..origin_steps]
    (c = T // origin_steps) every (origin_steps // steps)-th from the end (4 steps: 999, 749, 499, 249)."""
    c = num_timesteps // origin_steps
    grid = [c * k - 1 for k in range(1, origin_steps + 1)]
    skip = max(origin_steps // steps, 1)
    return grid[::-skip][:steps]


def turbo_sigmas(model_sampling, steps):
    """Sigmas at the LCM timesteps, then 0: the last step returns its denoised estimate, as the original."""
    sigmas = model_sampling.sigmas
    return torch.cat([sigmas[turbo_timesteps(steps, num_timesteps=len(sigmas))], sigmas.new_zeros(1)]).float()


def trailing_timesteps(steps, num_timesteps=1000):
    """`uniform_trailing`, descending: round(arange(T, 0, -T / steps)) - 1 (always starts at T - 1)."""
    steps = max(1, min(steps, num_timesteps))
    return [int(round(num_timesteps - i * num_timesteps / steps)) - 1 for i in range(steps)]


def videocrafter_trailing_sigmas(model_sampling, steps):
    """Sigmas at the trailing timesteps, then t = 0 (the original's last step lands on alphas_cumprod[0])."""
    sigmas = model_sampling.sigmas
    return torch.cat([sigmas[trailing_timesteps(steps, len(sigmas))], sigmas[:1]]).float()


def seeded_step_noise(x, seed):
    """The reference's per-step noise: a generator on x's device seeded with the sampler's seed, one randn per
    step. ComfyUI 0.3.x's default_noise_sampler draws it so; 0.33's adds 1 to the seed on the CPU, which would
    give every eta > 0 video of a seed another result on each host."""
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device,
                                                 generator=generator)


@torch.no_grad()
def sample_videocrafter_ddim(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, noise_sampler=None):
    """DDIM with the latent-scale schedule, in the sampler's y-space (see vc_models.model_base).

    Starts from unit-variance noise in the model's space when the latent is empty (as the
    original's x_T), per-step noise from a generator seeded with the sampler's seed (`seeded_step_noise`).
    """
    extra_args = {} if extra_args is None else extra_args
    ms = model.inner_model.inner_model.model_sampling
    latent = getattr(model, "latent_image", None)
    raw_noise = getattr(model, "noise", None)
    scaled = isinstance(ms, ScaledModelSampling)
    if raw_noise is not None and (latent is None or not torch.any(latent)) and scaled:
        c_in = ms.input_scale(sigmas[:1].to(x.device)).reshape(())
        x = raw_noise.to(x) / c_in
    seed = extra_args.get("seed")
    noise_sampler = noise_sampler or seeded_step_noise(x, seed)
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
        a, s = _alpha_and_scale(ms, sigma)
        exact = ms.zero_snr_terminal(sigma, denoised, x) if scaled else None
        if exact is not None:  # zero-SNR models: the first step as the original takes it, at alpha 0
            denoised, eps, a = exact
        a_prev, s_prev = _alpha_and_scale(ms, sigma_next)
        ddim_sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0) ** 0.5
        to_y = 1.0 / (a_prev ** 0.5 * s_prev)
        # The originals re-scale x0 by the next DDIM timestep's scale; for the last step (to t=0)
        # DynamiCrafter's sampler keeps the current one (its ddim_scale_arr_prev[0] == ddim_scale_arr[0]),
        # while y-space holds x0 at the table's scale of sigma_next: hence the ratio (0.907 vs 1 at t=124
        # for 8 trailing steps). VideoCrafter's goes to the scale of t=0, which y-space already is.
        last_keeps_scale = scaled and ms.last_step_keeps_scale and i == len(sigmas) - 2
        x0_scale = s / s_prev if last_keeps_scale else 1.0
        x = denoised * x0_scale + (1 - a_prev - ddim_sigma ** 2).clamp(min=0) ** 0.5 * to_y * eps
        if eta > 0:
            x = x + ddim_sigma * to_y * noise_sampler(sigma, sigma_next)
    return x


def _alpha_and_scale(ms, sigma):
    """(a_t, s_t) of the VideoCrafter schedule; a plain sigma table (s_t = 1) for any other model_sampling."""
    if isinstance(ms, ScaledModelSampling):
        return ms.alpha_and_scale(sigma.reshape(1))
    one = torch.ones(1, device=sigma.device)
    return 1.0 / (1.0 + sigma.reshape(1) ** 2), one


def sample_videocrafter_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Core's LCM step (the boundary condition lives in the model's sampling) with the reference's per-step
    noise (`seeded_step_noise`): core `lcm` on ComfyUI 0.33 seeds it with seed + 1 on the CPU, so its videos of a
    seed differ from the original's and from 0.3.x's."""
    seed = (extra_args or {}).get("seed")
    return k_sampling.sample_lcm(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                                 noise_sampler=noise_sampler or seeded_step_noise(x, seed))


def sample_videocrafter_ddim_eta0(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    return sample_videocrafter_ddim(model, x, sigmas, extra_args, callback, disable, eta=0.0, noise_sampler=noise_sampler)


def register():
    """Add the samplers and scheduler to ComfyUI's lists (idempotent)."""
    setattr(k_sampling, f"sample_{SAMPLER_NAME}", sample_videocrafter_ddim)
    setattr(k_sampling, f"sample_{DETERMINISTIC_SAMPLER_NAME}", sample_videocrafter_ddim_eta0)
    setattr(k_sampling, f"sample_{LCM_SAMPLER_NAME}", sample_videocrafter_lcm)
    for names in (comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES):
        for name in (SAMPLER_NAME, DETERMINISTIC_SAMPLER_NAME, LCM_SAMPLER_NAME):
            if name not in names:
                names.append(name)
    for name, handler in ((SCHEDULER_NAME, videocrafter_uniform_sigmas), (TURBO_SCHEDULER_NAME, turbo_sigmas),
                          (TRAILING_SCHEDULER_NAME, videocrafter_trailing_sigmas)):
        if name not in comfy.samplers.SCHEDULER_HANDLERS:
            comfy.samplers.SCHEDULER_HANDLERS[name] = comfy.samplers.SchedulerHandler(handler)
        if name not in comfy.samplers.SCHEDULER_NAMES:
            comfy.samplers.SCHEDULER_NAMES.append(name)

