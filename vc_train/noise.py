"""The noise schedule of training and the seeded draws (what each family does with them: `vc_train/families.py`)."""
import hashlib

import torch


def step_generator(seed, *keys):
    """A CPU generator determined by the seed and e.g. (step, rank, micro-step): draws do not
    depend on how many numbers earlier steps consumed, so a resumed run draws the same."""
    digest = hashlib.sha256("/".join(str(k) for k in (seed,) + keys).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class NoiseSchedule:
    """The checkpoint's discrete schedule. `sqrt_alphas_cumprod` / `sqrt_one_minus_alphas_cumprod`: stored values
    to use instead of the square roots of `alphas_cumprod` (the original's buffers, computed in float64)."""

    def __init__(self, alphas_cumprod, scale_arr=None, sqrt_alphas_cumprod=None, sqrt_one_minus_alphas_cumprod=None):
        self.alphas_cumprod = alphas_cumprod.double().cpu()
        self.scale_arr = None if scale_arr is None else scale_arr.double().cpu()
        self.sqrt_alphas = (self.alphas_cumprod.sqrt() if sqrt_alphas_cumprod is None
                            else sqrt_alphas_cumprod.double().cpu())
        self.sqrt_one_minus = ((1.0 - self.alphas_cumprod).sqrt() if sqrt_one_minus_alphas_cumprod is None
                               else sqrt_one_minus_alphas_cumprod.double().cpu())
        self.num_timesteps = self.alphas_cumprod.shape[0]

    def sample_timesteps(self, batch, generator):
        """Uniform integer t in [0, num_timesteps)."""
        return torch.randint(0, self.num_timesteps, (batch,), generator=generator)

    @staticmethod
    def _at(values, t, like):
        return values[t.cpu()].to(like.device, torch.float32).view((-1,) + (1,) * (like.dim() - 1))

    def rescale(self, x0, t):
        """x0 * scale_arr[t] (x0 unchanged without scale_arr)."""
        return x0.float() if self.scale_arr is None else x0.float() * self._at(self.scale_arr, t, x0)

    def q_sample(self, x_start, t, noise):
        """sqrt(a_t) * x_start + sqrt(1 - a_t) * noise."""
        return self._at(self.sqrt_alphas, t, x_start) * x_start.float() + self._at(self.sqrt_one_minus, t, x_start) * noise.float()

    def v_target(self, x_start, t, noise):
        """v = sqrt(a_t) * noise - sqrt(1 - a_t) * x_start."""
        return self._at(self.sqrt_alphas, t, x_start) * noise.float() - self._at(self.sqrt_one_minus, t, x_start) * x_start.float()

    def add_noise(self, x0, t, noise):
        """VideoCrafter's q_sample with the latent scale: x0 [B, C, T, h, w] in the model's latent space; t [B] long."""
        signal = self.sqrt_alphas[t.cpu()]
        if self.scale_arr is not None:
            signal = signal * self.scale_arr[t.cpu()]
        shape = (-1,) + (1,) * (x0.dim() - 1)
        signal = signal.to(x0.device, torch.float32).view(shape)
        return signal * x0.float() + self._at(self.sqrt_one_minus, t, x0) * noise.float()
