"""The VideoCrafter family's noise schedule, decided once: 1000 DDPM timesteps of scaled-linear betas from
0.00085 to 0.012 (the originals' `linear_start` / `linear_end`). A checkpoint's stored buffers win where it has them
(`checkpoint_file.noise_schedule`); this is what they were made from."""
import torch

# every model of the family trains on 1000 DDPM timesteps (its schedule buffers have that length; scale_arr may be
# longer: the original cuts it)
TIMESTEPS = 1000
LINEAR_START, LINEAR_END = 0.00085, 0.012


def scaled_linear_betas(timesteps=TIMESTEPS, dtype=torch.float64):
    """betas_t = (sqrt(start) + t (sqrt(end) - sqrt(start)) / (T - 1))^2 in `dtype` (the originals compute it in float64;
    the T2V-Turbo scheduler in float32)."""
    return torch.linspace(LINEAR_START ** 0.5, LINEAR_END ** 0.5, timesteps, dtype=dtype) ** 2


def release_buffers(scale=None, timesteps=TIMESTEPS, zero_terminal_snr=False):
    """The noise schedule buffers as the released files carry them (float32) (scaled-linear betas, the
    buffers derived from them; scale_arr falling linearly over 400 steps). zero_terminal_snr: DynamiCrafter
    512/1024's rescaled betas (sqrt(alphas_cumprod) shifted to end at 0 and stretched to keep its start)."""
    betas = scaled_linear_betas(timesteps)
    acp = torch.cumprod(1.0 - betas, 0)
    if zero_terminal_snr:
        root = acp.sqrt()
        root = (root - root[-1]) * root[0] / (root[0] - root[-1])
        acp = root ** 2
        betas = 1.0 - acp / torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
    prev = torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
    posterior_variance = betas * (1.0 - prev) / (1.0 - acp)
    # the buffers the released files carry beside betas/alphas_cumprod (derived from them; the loader ignores them)
    out = {"betas": betas, "alphas_cumprod": acp, "alphas_cumprod_prev": prev,
           "sqrt_alphas_cumprod": acp.sqrt(), "sqrt_one_minus_alphas_cumprod": (1.0 - acp).sqrt(),
           "log_one_minus_alphas_cumprod": (1.0 - acp).log(), "sqrt_recip_alphas_cumprod": (1.0 / acp).sqrt(),
           "sqrt_recipm1_alphas_cumprod": (1.0 / acp - 1).sqrt(), "posterior_variance": posterior_variance,
           "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
           "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - acp),
           "posterior_mean_coef2": (1.0 - prev) * (1.0 - betas).sqrt() / (1.0 - acp)}
    if zero_terminal_snr:  # 1/alphas_cumprod is infinite at the last step; the released v models store zeros
        out["sqrt_recip_alphas_cumprod"] = torch.zeros_like(acp)
        out["sqrt_recipm1_alphas_cumprod"] = torch.zeros_like(acp)
    out = {k: v.float() for k, v in out.items()}
    if scale is not None:
        base, length = scale
        out["scale_arr"] = torch.cat([torch.linspace(1.0, base, 400, dtype=torch.float64),
                                      torch.full((length - 400,), base, dtype=torch.float64)]).float()
    return out
