"""What a training batch is and what the loss is, per model family: one `Objective` per kind of checkpoint.

The trainer draws (`Objective.draw`) and computes (`Objective.terms`) through these objects only, so the golden
parity tests call the very function a training step calls, with the draws forced.

- `LatentScaleEps` (VideoCrafter1/2 text-to-video, VideoCrafter1 I2V): VideoCrafter's `q_sample` with the latent
  scale, `x_t = sqrt(a_t) * scale_arr[t] * z + sqrt(1 - a_t) * eps`, target eps.
- `DynamiCrafterObjective`: DynamiCrafter's `LatentDiffusion.forward`: `x_start = z * scale_arr[t]` first, then plain
  `q_sample`; target v of the rescaled latent (`sqrt(a_t) * eps - sqrt(1 - a_t) * x_start`) where the model is v
  (512/1024), eps otherwise (256); the UNet input is `cat([x_t, c_concat])`: the conditioning frame's latent on every
  frame, or for the interpolation model (`interp_mode`) the first and last frame's latents with zeros between.

Loss: mean((prediction - target)^2) over every element (the original's per-sample mean, then the batch mean, with
logvar 0 and l_simple_weight 1).

`check_plan`: the stages and the data a family takes, checked from the checkpoint's registry entry before any
model loads.
"""
from dataclasses import dataclass
from typing import Optional

import os

import torch
import torch.nn.functional as F

from ..vc_models.registry import START_END_IMAGES, TRAIN_STAGES as I2V_STAGES
from .data import VideoDataset, DatasetError, count_media, list_training_items


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

    def __init__(self, schedule, text_dropout, image_dropout, v_prediction, interpolation, fs_is_frame_stride):
        super().__init__(schedule, text_dropout, image_dropout)
        self.v_prediction, self.interpolation = v_prediction, interpolation
        self.fs_is_frame_stride = fs_is_frame_stride

    def dropped(self, uniforms):
        r = uniforms[0]
        return r < 2 * self.text_dropout, (r >= self.image_dropout) & (r < 3 * self.image_dropout)

    def fps_condition(self, fps, frame_stride):
        """fs: the loader's `fps_ori // frame_stride` (512/1024), or the frame stride itself (256)."""
        if self.fs_is_frame_stride:
            return frame_stride.float()
        return torch.floor(fps)

    def noisy_and_target(self, z, t, noise):
        x_start = self.schedule.rescale(z, t)
        x_noisy = self.schedule.q_sample(x_start, t, noise)
        target = self.schedule.v_target(x_start, t, noise) if self.v_prediction else noise.float()
        return x_start, x_noisy, target

    def concat_latent(self, batch, device):
        z = batch.latents.to(device)
        if self.interpolation:  # starting frame + empty frames + ending frame
            cat = torch.zeros_like(z)
            cat[:, :, 0], cat[:, :, -1] = z[:, :, 0], z[:, :, -1]
            return cat
        index = batch.cond_index.to(device).view(-1, 1, 1, 1, 1).expand(-1, z.shape[1], 1, *z.shape[3:])
        return torch.gather(z, 2, index).expand_as(z)

    def unet_input(self, x_noisy, batch, device):
        return torch.cat([x_noisy, self.concat_latent(batch, device).to(x_noisy.dtype)], dim=1)


def objective_for(models, schedule, cfg):
    """The objective of the models' family (`models.family`: the registry family; `models.parameterization`,
    `models.interpolation`, `models.fs_is_frame_stride` from the registry entry)."""
    if models.family == "dynamicrafter":
        return DynamiCrafterObjective(schedule, cfg.text_dropout, cfg.image_dropout, models.parameterization == "v",
                                      models.interpolation, models.fs_is_frame_stride)
    if models.family == "i2v":
        return VideoCrafterI2V(schedule, cfg.text_dropout, cfg.image_dropout)
    if models.family == "t2v":
        return LatentScaleEps(schedule, cfg.text_dropout, cfg.image_dropout)
    raise ValueError(f"The trainer has no objective for the model family {models.family!r}")


def model_stages(entry, cfg):
    """The stages the trainer runs on `entry`'s checkpoint with this config (a text-to-video one given a CLIP
    vision file is upgraded to image-to-video: the I2V stages)."""
    if entry.trains_after_upgrade and cfg.clip_vision:
        return I2V_STAGES
    return entry.train_stages


def check_plan(cfg, entry):
    """The stage plan and the data fit the model (`entry`: the checkpoint's registry entry): raise naming what
    to change. Runs before any model loads."""
    allowed = model_stages(entry, cfg)
    refused = [stage for stage, _ in cfg.stage_plan() if stage not in allowed]
    if refused and entry.trains_after_upgrade and set(refused) <= set(I2V_STAGES):
        raise ValueError(f"{entry.description} trains the stages {list(entry.train_stages)}; the image-to-video "
                         f"stages {refused} need a CLIP vision file (OpenCLIP ViT-H-14, e.g. models/clip_vision/"
                         "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors) to upgrade it to image-to-video first.")
    if refused and cfg.clip_vision and entry.trains_after_upgrade:
        raise ValueError(f"A CLIP vision file upgrades {entry.description} to image-to-video (stages "
                         f"{list(I2V_STAGES)}); for the stages {refused} leave clip_vision empty.")
    if refused:
        raise ValueError(f"{entry.description} trains the stages {list(allowed)} only; the plan asks for {refused}.")
    if cfg.stage == "images" and not os.path.isdir(cfg.data):
        raise DatasetError(f"Stage 'images' trains on a folder of images with same-name .txt captions; {cfg.data} is "
                           "not a folder.")
    if os.path.isdir(cfg.data):
        videos, images = count_media(cfg.data)
        if cfg.stage != "images" and not videos and images:
            raise DatasetError(f"{cfg.data} holds {images} images and no videos: stage {cfg.stage!r} of "
                               f"{entry.description} trains on video clips. Give a folder of videos"
                               + (" (stage 'images' trains the spatial layers on images)."
                                  if "images" in allowed else "."))
        if cfg.stage == "images" and not images and videos:
            raise DatasetError(f"{cfg.data} holds {videos} videos and no images: stage 'images' trains on a folder "
                               "of images (stage 'videos' on videos).")
    if entry.image_inputs == START_END_IMAGES:
        check_interpolation_data(cfg, entry)
    elif cfg.data_roots:
        list_training_items(cfg)  # a listed file outside the data roots is refused before any model loads


def check_interpolation_data(cfg, entry):
    """DynamiCrafter's interp_mode conditions on the clip's first and last frame (and CLIP on the first): a
    random conditioning frame does not apply, and a video too short for the clip would drop out of the data
    silently, so it is an error naming the videos."""
    if "interp" not in cfg.name.lower():
        raise ValueError(f"The result of training {entry.description} must have 'interp' in its name (the loader "
                         f"tells the interpolation model from DynamiCrafter 512 by the file name): e.g. "
                         f"{cfg.name}_interp instead of {cfg.name}.")
    if cfg.cond_frame != "first":
        raise ValueError(f"{entry.description} trains as interpolation: conditioned on the clip's first and last "
                         "frame (the original's rand_cond_frame: false); set cond_frame to 'first'.")
    dataset = VideoDataset(list_training_items(cfg), cfg.frames, cfg.frame_stride, cfg.height, cfg.width)
    short = [dataset.items[i].path for i, _, reason in dataset.probe_indices(range(len(dataset))) if reason == "too_short"]
    if short:
        raise DatasetError(f"{len(short)} videos are shorter than an interpolation clip ({cfg.frames} frames at "
                           f"stride {cfg.frame_stride} = {dataset.span} source frames), e.g. {short[0]}: lower "
                           "frames or frame_stride, or remove them.")
