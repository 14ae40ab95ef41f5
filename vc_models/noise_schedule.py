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
