"""What a training batch is and what the loss is: one `Objective` per kind of model, built by its family
(`vc_models.families`, `Family.objective`). Torch only.

The trainer draws (`Objective.draw`) and computes (`Objective.terms`) through these objects only, so the golden
parity tests call the very function a training step calls, with the draws forced.

- `LatentScaleEps` (VideoCrafter1/2 text-to-video): VideoCrafter's `q_sample` with the latent
  scale, `x_t = sqrt(a_t) * scale_arr[t] * z + sqrt(1 - a_t) * eps`, target eps.
- `VideoCrafterI2V` (VideoCrafter1 I2V): the same, with image tokens dropped independently of the text.
- `DynamiCrafterObjective`: DynamiCrafter's `LatentDiffusion.forward`: `x_start = z * scale_arr[t]` first, then plain
  `q_sample`; target v of the rescaled latent (`sqrt(a_t) * eps - sqrt(1 - a_t) * x_start`) where the model is v
  (512/1024), eps otherwise (256); the UNet input is `cat([x_t, c_concat])`: the conditioning frame's latent on every
  frame, or for the interpolation model (`interp_mode`) the first and last frame's latents with zeros between.

Loss: mean((prediction - target)^2) over every element (the original's per-sample mean, then the batch mean, with
logvar 0 and l_simple_weight 1).
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass
class Batch:
    """One micro-batch as the objective sees it (CPU tensors; the objective moves them)."""
    latents: torch.Tensor                 # [B, C, T, h, w] z in the model's latent space (VAE mean x 0.18215)
    context: torch.Tensor                 # [B, 77, D] text embeddings of the captions
    fps: torch.Tensor                     # [B] the clip's source fps / frame stride (float)
    frame_stride: torch.Tensor            # [B] the clip's frame stride
    image_tokens: Optional[torch.Tensor] = None  # [B, 257, W] CLIP vision tokens of the conditioning frame
    cond_index: Optional[torch.Tensor] = None    # [B] long: which frame of the clip conditions (DynamiCrafter)


@dataclass
class Draws:
    """The random choices of one micro-step; `Objective.draw` makes them, a parity test forces them."""
    uniforms: torch.Tensor   # [k, B] in [0, 1): the dropout draws (their meaning is the objective's)
    t: torch.Tensor          # [B] long
    noise: torch.Tensor      # like Batch.latents


@dataclass
class Terms:
    x_start: torch.Tensor                  # the latent the noise is added to (DynamiCrafter: rescaled first)
    x_noisy: torch.Tensor
    unet_input: torch.Tensor
    target: torch.Tensor
    model_output: torch.Tensor
    loss: torch.Tensor
    context: torch.Tensor                  # the text context after dropout
    image_context: Optional[torch.Tensor]  # the projected image tokens after dropout (None without image)


class Objective:
    """Base: eps on the latent-scale schedule (VideoCrafter); subclasses change what differs."""
    uses_image = False
    dropout_draws = 1

    def __init__(self, schedule, text_dropout, image_dropout):
        self.schedule = schedule
        self.text_dropout, self.image_dropout = text_dropout, image_dropout

    def draw(self, batch_size, latent_shape, generator):
        """Dropout uniforms, then t uniform in [0, T), then the noise: in this order from `generator`."""
        uniforms = torch.stack([torch.rand(batch_size, generator=generator) for _ in range(self.dropout_draws)])
        t = self.schedule.sample_timesteps(batch_size, generator)
        noise = torch.randn(latent_shape, generator=generator)
        return Draws(uniforms, t, noise)

    def dropped(self, uniforms):
        """(text dropped [B] bool, image dropped [B] bool) from the dropout uniforms."""
        text = uniforms[0] < self.text_dropout
        return text, torch.zeros_like(text)

    def fps_condition(self, fps, frame_stride):
        """The UNet's fps condition from the clips' source fps / stride [B] and frame strides [B]."""
        return fps

    def noisy_and_target(self, z, t, noise):
        """(x_start, x_t, target)."""
        return z.float(), self.schedule.add_noise(z, t, noise), noise.float()

    def unet_input(self, x_noisy, batch, device):
        return x_noisy

    def terms(self, unet, projector, batch, draws, empty_text, zero_image_tokens, device, amp_dtype=None,
              projector_grad=False):
        """The step's tensors and loss: the one function training and the parity tests run."""
        text_drop, image_drop = self.dropped(draws.uniforms)
        context = batch.context.clone()
        if text_drop.any():
            context[text_drop] = empty_text.to(context.dtype)
        image_context = None
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            if self.uses_image:
                tokens = batch.image_tokens.clone()
                if image_drop.any():
                    tokens[image_drop] = zero_image_tokens.to(tokens.dtype)
                with torch.set_grad_enabled(projector_grad):
                    image_context = projector(tokens.to(device))
            z, noise = batch.latents.to(device), draws.noise.to(device)
            x_start, x_noisy, target = self.noisy_and_target(z, draws.t, noise)
            unet_input = self.unet_input(x_noisy, batch, device)
            output = unet(unet_input, draws.t.to(device, torch.float32), context=context.to(device),
                          fps=self.fps_condition(batch.fps, batch.frame_stride).to(device), image_context=image_context)
            loss = F.mse_loss(output.float(), target.float())
        return Terms(x_start, x_noisy, unet_input, target, output, loss, context, image_context)


class LatentScaleEps(Objective):
    """VideoCrafter text-to-video: one uniform per caption, text dropped below text_dropout (the original's
    `random.random() < uncond_prob`, empty_seq)."""


class VideoCrafterI2V(Objective):
    """VideoCrafter1 I2V: text and image dropped independently (two uniforms), the image as an all-zero image."""
    uses_image = True
    dropout_draws = 2

    def dropped(self, uniforms):
        return uniforms[0] < self.text_dropout, uniforms[1] < self.image_dropout


class DynamiCrafterObjective(Objective):
    """DynamiCrafter: one uniform r per sample (`get_batch_input`): text dropped if r < 2 p_text, image dropped if
    p_image <= r < 3 p_image (the original, both p = uncond_prob 0.05: text only 5 %, both 5 %, image only 5 %)."""
    uses_image = True

    def __init__(self, schedule, text_dropout, image_dropout, v_prediction, family):
        super().__init__(schedule, text_dropout, image_dropout)
        self.v_prediction, self.family = v_prediction, family

    def dropped(self, uniforms):
        r = uniforms[0]
        return r < 2 * self.text_dropout, (r >= self.image_dropout) & (r < 3 * self.image_dropout)

    def fps_condition(self, fps, frame_stride):
        """fs: the loader's `fps_ori // frame_stride` (512/1024), or the frame stride itself (256)."""
        return self.family.frame_rate_condition(fps, frame_stride)

    def noisy_and_target(self, z, t, noise):
        x_start = self.schedule.rescale(z, t)
        x_noisy = self.schedule.q_sample(x_start, t, noise)
        target = self.schedule.v_target(x_start, t, noise) if self.v_prediction else noise.float()
        return x_start, x_noisy, target

    def concat_latent(self, batch, device):
        """The family's image latent (`DynamiCrafter.image_latent`, as the node builds it) of the clip's own frames:
        the first and last (interpolation) or the conditioning frame (image animation)."""
        z = batch.latents.to(device)
        if self.family.interpolation:
            return self.family.image_latent(z[:, :, 0], z[:, :, -1], self.family.mode, z.shape[2])
        index = batch.cond_index.to(device).view(-1, 1, 1, 1, 1).expand(-1, z.shape[1], 1, *z.shape[3:])
        return self.family.image_latent(torch.gather(z, 2, index)[:, :, 0], None, self.family.mode, z.shape[2])

    def unet_input(self, x_noisy, batch, device):
        return torch.cat([x_noisy, self.concat_latent(batch, device).to(x_noisy.dtype)], dim=1)
