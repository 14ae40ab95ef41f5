"""The trainer's `TrainingModels` built with ComfyUI (the one module of vc_train that imports it): the trainable UNet
and projector as plain float32 modules, the frozen encoders as ComfyUI objects (model management places them),
previews with the pack's sampling, and export of the results under the released checkpoint names.
`vc_train.trainer` drives it."""
import logging
import os

import torch

import comfy.model_management
import comfy.ops

from ..vc_models import checkpoint as ckpt
from ..vc_models import checkpoint_file as ckpt_file
from ..vc_models.conditioning import projected_image_tokens
from ..vc_models.encoders import build_text_encoder, build_clip_vision, build_vae, image_tokens
from ..vc_models.families import START_END_IMAGES
from ..vc_models.i2v_upgrade import upgrade_t2v_to_i2v
from ..vc_models.projector import ImageProjector, ProjectorConfig
from ..vc_models.projector_file import apply_projector_file, is_projector_file_key
from ..vc_models.unet import VideoCrafterUNet, TemporalTransformer, TemporalConvBlock

log = logging.getLogger("vc_train")

VAE_SCALE_FACTOR = 0.18215


def schedule_roots(sd):
    """(sqrt(a_t), sqrt(1 - a_t)) in float64 as the original computes them (from its float64 betas), or (None, None)
    when the file keeps neither them nor its betas in float32 or better: sqrt(1 - a) from a float32
    alphas_cumprod is off by ~1e-4 at t=0, from a float16 one by 7 %. The original's buffers where stored,
    else from the stored betas (1 - a_0 = beta_0 keeps its precision)."""
    precise = (torch.float32, torch.float64)
    roots = [sd.get(k) for k in ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")]
    if all(r is not None and r.dtype in precise for r in roots):
        return tuple(r.double() for r in roots)
    betas = sd.get("betas")
    if betas is not None and betas.dtype in precise:
        alphas_cumprod = torch.cumprod(1.0 - betas.double(), dim=0)
        return alphas_cumprod.sqrt(), (1.0 - alphas_cumprod).sqrt()
    return None, None


def load_training_state_dict(checkpoint_path, clip_vision_path="", projector_file="", seed=0):
    """The raw state dict training starts from (a T2V checkpoint given a CLIP vision file is upgraded to I2V).
    Whether the trainer takes the model was asked before loading (`vc_train.trainer.check_before_loading`)."""
    sd = ckpt_file.load_state_dict(checkpoint_path)
    info = ckpt.inspect_checkpoint(sd, os.path.basename(checkpoint_path))
    if info.entry.family.upgrade is not None and clip_vision_path:
        log.info("Upgrading %s to image-to-video with %s", info.description, os.path.basename(clip_vision_path))
        sd = upgrade_t2v_to_i2v(sd, ckpt_file.load_state_dict(clip_vision_path), seed)
    if projector_file:
        apply_projector_file(sd, projector_file)
    return sd


def _unet_parameter_kinds(unet):
    """"temporal" for parameters inside temporal transformers / temporal convolutions (incl. the
    initial temporal attention), "spatial" for everything else."""
    temporal = set()
    for name, module in unet.named_modules():
        if isinstance(module, (TemporalTransformer, TemporalConvBlock)):
            temporal.update(f"{name}.{p}" for p, _ in module.named_parameters())
    return {n: ("temporal" if n in temporal else "spatial") for n, _ in unet.named_parameters()}


def layout_unet(checkpoint_path):
    """(UNet on the meta device, its parameter kinds) from the file's layout: what a check before any model loads
    may look at (layer sizes), with no weights read and no memory taken."""
    info = ckpt.inspect_checkpoint(ckpt_file.read_layout(checkpoint_path), os.path.basename(checkpoint_path))
    with torch.device("meta"):
        unet = VideoCrafterUNet(info.unet, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init)
    return unet, _unet_parameter_kinds(unet)


class VideoCrafterTrainingModels:
    """Implements `vc_train.trainer.TrainingModels` (of a model the stage gate, `check_before_loading`, took)."""

    def __init__(self, sd, name="checkpoint"):
        info = ckpt.inspect_checkpoint(sd, name)
        self.info = info
        entry = info.entry
        self.family, self.parameterization = entry.family, entry.parameterization  # the family builds the objective
        self.interpolation = entry.image_inputs == START_END_IMAGES  # previews condition on the clip's last frame too
        self.default_fps = entry.defaults.fps
        self.sd = sd  # the start point: exports overlay the trained weights on it
        parts = ckpt_file.split_components(sd)
        self.alphas_cumprod, self.scale_arr = ckpt_file.noise_schedule(sd)
        self.schedule_roots = schedule_roots(sd)
        self.latent_channels = info.unet.out_channels  # DynamiCrafter's input also carries the image latent
        self.model_id = info.entry.id
        # trainable modules: plain float32 torch layers (no ComfyUI casting on the gradient path)
        self.unet = VideoCrafterUNet(info.unet, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init)
        self.unet.load_state_dict({k: v.float() for k, v in parts[ckpt_file.UNET_PREFIX].items()}, strict=True)
        self.projector = self.clip_vision = None  # text-to-video: no image conditioning
        if info.unet.image_cross_attention:
            projector_sd = parts[ckpt_file.PROJECTOR_PREFIX]
            self.projector = ImageProjector(ProjectorConfig.from_state_dict(projector_sd), dtype=torch.float32,
                                            device="cpu", operations=comfy.ops.disable_weight_init)
            self.projector.load_state_dict({k: v.float() for k, v in projector_sd.items()}, strict=True)
            visual = {k[len("visual."):]: v for k, v in parts[ckpt_file.VISION_PREFIX].items() if k.startswith("visual.")}
            self.clip_vision = build_clip_vision(visual)
        # frozen encoders: ComfyUI objects, placed and offloaded by model management
        self.clip = build_text_encoder(parts[ckpt_file.TEXT_PREFIX])
        self.vae = build_vae(parts[ckpt_file.VAE_PREFIX])

    @classmethod
    def from_files(cls, checkpoint_path, clip_vision_path="", projector_file="", seed=0):
        sd = load_training_state_dict(checkpoint_path, clip_vision_path, projector_file, seed)
        return cls(sd, os.path.basename(checkpoint_path))

    # ---------------------------------------------------------------- trainer interface
    def unet_parameter_kinds(self):
        return _unet_parameter_kinds(self.unet)

    def original_parameter(self, full_name):
        module, name = full_name.split(".", 1)
        prefix = ckpt_file.UNET_PREFIX if module == "unet" else ckpt_file.PROJECTOR_PREFIX
        return self.sd[prefix + name].float()

    def encode_text(self, captions):
        with torch.no_grad():
            return torch.cat([self.clip.encode_from_tokens(self.clip.tokenize(c)).float() for c in captions])

    def encode_video(self, frames):
        """[T, H, W, 3] 0..1 -> [C, T, h, w] in the model's latent space (VAE mean, times 0.18215)."""
        with torch.no_grad():
            latent = self.vae.encode(frames[..., :3].float())  # [T, C, h, w] VAE space
        return latent.float().movedim(0, 1) * VAE_SCALE_FACTOR

    def image_tokens(self, images):
        with torch.no_grad():
            return image_tokens(self.clip_vision, images.float())

    def checkpoint_key(self, full_name):
        """'unet.x' / 'projector.x' -> the released checkpoint key."""
        module, name = full_name.split(".", 1)
        return (ckpt_file.UNET_PREFIX if module == "unet" else ckpt_file.PROJECTOR_PREFIX) + name

    def projector_file_tensors(self, trained):
        """The stage-1 file: projector and image K/V of `trained` ({'unet.…'/'projector.…': tensor})."""
        out = {self.checkpoint_key(n): v for n, v in trained.items()}
        return {k: v.float() for k, v in out.items() if is_projector_file_key(k)}

    def checkpoint_tensors(self, trained, dtype=torch.float16):
        """The whole checkpoint: the start point with the `trained` tensors replaced; float tensors
        in `dtype` except the noise-schedule buffers (kept as they were)."""
        trained = {self.checkpoint_key(n): v for n, v in trained.items()}
        out = {}
        for key, value in self.sd.items():
            if ckpt_file.is_ignored_key(key) and key.startswith(ckpt_file.VISION_PREFIX):
                continue  # OpenCLIP's unused text half of the embedder
            if key.startswith(ckpt_file.PROJECTOR_PREFIX) and key not in trained:
                continue  # a projector file replaced the projector with one of another depth
            value = trained.get(key, value)
            if value.is_floating_point() and key not in ckpt_file.SCHEDULE_KEYS and key not in ckpt_file.DERIVED_SCHEDULE_KEYS:
                value = value.to(dtype)
            out[key] = value.contiguous()
        return out


    def sample_video(self, caption, image, end_image, fps, frames, height, width, steps=25, cfg=12.0, seed=0, eta=1.0,
                     lora=None):
        """A preview video from the current weights with the pack's faithful DDIM, conditioned as the family's
        workflow conditions (text; + image tokens; + DynamiCrafter's concat latent of `image`, or of `image` and
        `end_image` for interpolation): a temporary ModelPatcher around a copy of the UNet. With `lora` (a LoRA
        file's tensors) the frames are base model | base + LoRA side by side, same seed, the LoRA applied by core's
        LoRA loading as Load LoRA (model only) does. Returns IMAGE frames [T, H, W, 3] (twice the width with a LoRA)."""
        import comfy.sample
        import comfy.samplers
        import comfy.sd
        from ..vc_models.families import FPS_KEY, IMAGE_TOKENS_KEY, CONCAT_LATENT_KEY
        from ..vc_models.model_patcher import build_model_patcher
        unet_sd = {k: v.detach().float().cpu() for k, v in self.unet.state_dict().items()}
        model = build_model_patcher(self.info, unet_sd, self.alphas_cumprod, self.scale_arr)
        models = [model] if lora is None else [model, comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[0]]
        try:
            with torch.no_grad():
                shared, positive_extra, negative_extra = {FPS_KEY: fps}, {}, {}
                if self.projector is not None:
                    def project(tokens):
                        return self.projector(tokens.to(self.projector.latents)).float().cpu()
                    # the inference nodes' function: identical previews and sampled videos
                    image_emb, image_uncond = projected_image_tokens(self.clip_vision, project, image[None].float())
                    positive_extra, negative_extra = {IMAGE_TOKENS_KEY: image_emb}, {IMAGE_TOKENS_KEY: image_uncond}
                if self.family.concat_latent:  # the node's builder: the family's key frames in its own mode
                    end = None if end_image is None else end_image[None].float()
                    shared[CONCAT_LATENT_KEY] = self.family.encode_image_latent(
                        self.vae, image[None].float(), end, self.family.mode, frames).cpu()
                positive = [[self.encode_text([caption]).cpu(), {**shared, **positive_extra}]]
                negative = [[self.encode_text([""]).cpu(), {**shared, **negative_extra}]]
                latent = torch.zeros([1, self.latent_channels, frames, height // 8, width // 8])
                noise = comfy.sample.prepare_noise(latent, seed)
                defaults = self.info.entry.defaults  # the family's sampler and timesteps, as its workflow samples
                sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), defaults.scheduler, steps)
                videos = []
                for patcher in models:
                    sampler = comfy.samplers.ksampler(defaults.sampler, {"eta": eta})
                    samples = comfy.sample.sample_custom(patcher, noise, cfg, sampler, sigmas, positive, negative,
                                                         latent, disable_pbar=True, seed=seed)
                    video = samples.transpose(1, 2).reshape(-1, *samples.shape[1:2], *samples.shape[3:])
                    decoded = self.vae.decode(video)
                    videos.append(decoded.reshape(-1, *decoded.shape[-3:]).float().cpu())
            return torch.cat(videos, dim=2)  # side by side along the width
        finally:
            del model, models
            comfy.model_management.unload_all_models()  # drops the preview UNet copy (encoders reload on demand)
            comfy.model_management.soft_empty_cache()


def free_memory_for_training():
    """Ask ComfyUI to unload every model it holds before training takes the device."""
    comfy.model_management.unload_all_models()
    comfy.model_management.soft_empty_cache()
