"""The training objective of the original LatentDiffusion with the latent-scale schedule:
eps-prediction MSE, x_t = sqrt(a_t) * (x0 * scale_arr[t]) + sqrt(1 - a_t) * noise."""
import hashlib

import torch
import torch.nn.functional as F


def step_generator(seed, *keys):
    """A CPU generator determined by the seed and e.g. (step, rank, micro-step): draws do not
    depend on how many numbers earlier steps consumed, so a resumed run draws the same."""
    digest = hashlib.sha256("/".join(str(k) for k in (seed,) + keys).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class NoiseSchedule:
    def __init__(self, alphas_cumprod, scale_arr=None):
        self.alphas_cumprod = alphas_cumprod.double().cpu()
        self.scale_arr = None if scale_arr is None else scale_arr.double().cpu()
        self.num_timesteps = self.alphas_cumprod.shape[0]

    def sample_timesteps(self, batch, generator):
        """Uniform integer t in [0, num_timesteps)."""
        return torch.randint(0, self.num_timesteps, (batch,), generator=generator)

    def add_noise(self, x0, t, noise):
        """x0 [B, C, T, h, w] in the model's latent space; t [B] long (CPU)."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        a = self.alphas_cumprod[t]
        signal = a.sqrt()
        if self.scale_arr is not None:
            signal = signal * self.scale_arr[t]
        signal = signal.to(x0.device, torch.float32).view(shape)
        sigma = (1.0 - a).sqrt().to(x0.device, torch.float32).view(shape)
        return signal * x0.float() + sigma * noise.float()


def eps_loss(eps_pred, noise):
    return F.mse_loss(eps_pred.float(), noise.float())


def dropout_mask(batch, rate, generator):
    """True where the condition is dropped (replaced by its unconditional value)."""
    return torch.rand(batch, generator=generator) < rate
