"""The VideoCrafter denoiser as a ComfyUI model: model management, sampling and CFG work unchanged.

The latent-scale schedule (`scale_arr`) of VideoCrafter1-1024, VideoCrafter2 and I2V is expressed
as a reparameterisation ComfyUI's samplers understand: training noises `x_t = sqrt(a_t) s_t x0 +
sqrt(1 - a_t) eps`, so `y = x_t / (sqrt(a_t) s_t) = x0 + sigma_t eps` with
`sigma_t = sqrt((1 - a_t) / a_t) / s_t`. With that sigma table and input scaling
`c_in = sqrt(a_t) s_t`, every k-diffusion sampler samples the model's own process, and the
original DDIM update becomes an ordinary step in y (see `vc_models.sampling`).
"""
import logging

import torch

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.supported_models_base

from .unet import VideoCrafterUNet
from .freenoise import frames_of_context_window

FPS_KEY = "fps"
IMAGE_TOKENS_KEY = "videocrafter_image_tokens"


class VideoCrafterLatentFormat(comfy.latent_formats.SD15):
    """SD VAE latents per frame, [B, 4, T, h, w]; previews use the SD1.5 RGB factors (first frame)."""
    latent_dimensions = 3

    def __init__(self):
        super().__init__(scale_factor=0.18215)
        self.taesd_decoder_name = None  # TAESD previews are per image; the RGB factors handle video


class ScaledModelSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    """Discrete eps schedule from the checkpoint's `alphas_cumprod`, with the latent-scale schedule."""

    def __init__(self, alphas_cumprod, scale_arr=None):
        torch.nn.Module.__init__(self)
        self.sigma_data = 1.0
        alphas_cumprod = alphas_cumprod.double()
        scale = torch.ones_like(alphas_cumprod) if scale_arr is None else scale_arr.double()[: len(alphas_cumprod)]
        self.num_timesteps = len(alphas_cumprod)
        self.zsnr = False
        self.linear_start, self.linear_end = 0.00085, 0.012
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

    def inverse_noise_scaling(self, sigma, latent):
        # a schedule that ends above sigma 0 (the faithful DDIM ends at t=0) returns the model-space x_0
        return latent * comfy.model_sampling.reshape_sigma(self.input_scale(sigma), latent.ndim)


class VideoCrafterModelConfig(comfy.supported_models_base.BASE):
    latent_format = VideoCrafterLatentFormat
    unet_extra_config = {}
    memory_usage_factor = 2.0
    supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]

    def __init__(self, info):
        super().__init__({"config": info.unet})
        self.info = info


class VideoCrafterModel(comfy.model_base.BaseModel):
    """BaseModel whose `extra_conds` turn CONDITIONING extras (fps, image tokens) into UNet inputs."""

    def __init__(self, model_config, alphas_cumprod, scale_arr, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.EPS, device=device, unet_model=VideoCrafterUNet)
        self.model_sampling = ScaledModelSampling(alphas_cumprod, scale_arr)
        self.info = model_config.info

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        # core Context Windows pass a latent-shaped concat conditioning whole: cut it to the window
        c_concat = frames_of_context_window(c_concat, x.shape[2], transformer_options)
        return super()._apply_model(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        info = self.info
        if info.unet.fps_cond:
            fps = kwargs.get(FPS_KEY, info.default_fps)
            out["fps"] = comfy.conds.CONDRegular(torch.tensor([float(fps)]))
        tokens = kwargs.get(IMAGE_TOKENS_KEY)
        if info.is_i2v:
            if tokens is None:
                raise ValueError(
                    "This image-to-video model needs an image: pass both the positive and the negative "
                    "conditioning through 'VideoCrafter Image Encode' before sampling.")
            out["image_context"] = comfy.conds.CONDRegular(tokens)
        return out


def cpu_computes_bf16(device):
    """True on a CPU whose oneDNN has native bf16 kernels (AVX512-BF16 or AMX)."""
    if torch.device(device).type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def build_model_patcher(info, unet_sd, alphas_cumprod, scale_arr, weight_dtype=None):
    """ModelPatcher around a VideoCrafterModel, dtypes and devices chosen by ComfyUI's model management."""
    config = VideoCrafterModelConfig(info)
    load_device = comfy.model_management.get_torch_device()
    params = sum(v.numel() for v in unet_sd.values())
    stored = next(iter(unet_sd.values())).dtype
    unet_dtype = weight_dtype or comfy.model_management.unet_dtype(
        model_params=params, supported_dtypes=config.supported_inference_dtypes, weight_dtype=stored)
    manual_cast = comfy.model_management.unet_manual_cast(unet_dtype, load_device, config.supported_inference_dtypes)
    if unet_dtype == torch.bfloat16 and manual_cast is not None and cpu_computes_bf16(load_device):
        # ComfyUI assumes bf16 is slow on every CPU; with AVX512-BF16/AMX oneDNN runs it about
        # twice as fast as fp32, so a user who asked for bf16 weights gets bf16 compute there.
        manual_cast = None
    config.set_inference_dtype(unet_dtype, manual_cast)
    initial_device = comfy.model_management.unet_inital_load_device(params, unet_dtype)
    model = VideoCrafterModel(config, alphas_cumprod, scale_arr, device=initial_device)
    missing, unexpected = model.diffusion_model.load_state_dict(unet_sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"UNet tensors do not fit the inferred architecture: missing {missing[:5]}, unexpected {unexpected[:5]}")
    logging.info("VideoCrafter: %s, UNet weights %s (compute %s)", info.description, unet_dtype, manual_cast or unet_dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                            offload_device=comfy.model_management.unet_offload_device())
