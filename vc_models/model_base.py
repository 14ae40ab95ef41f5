"""The VideoCrafter denoiser as a ComfyUI model: model management, sampling and CFG work unchanged.

The latent-scale schedule (`scale_arr`) of VideoCrafter1-1024, VideoCrafter2 and I2V is expressed
as a reparameterisation ComfyUI's samplers understand: training noises `x_t = sqrt(a_t) s_t x0 +
sqrt(1 - a_t) eps`, so `y = x_t / (sqrt(a_t) s_t) = x0 + sigma_t eps` with
`sigma_t = sqrt((1 - a_t) / a_t) / s_t`. With that sigma table and input scaling
`c_in = sqrt(a_t) s_t`, every k-diffusion sampler samples the model's own process, and the
original DDIM update becomes an ordinary step in y (see `vc_models.sampling`).
"""
import logging
import math

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
# T2V-Turbo: the guidance scale the UNet embeds, and the motion guidance (motion_gs, percentage) or None for off
TURBO_GUIDANCE_KEY = "videocrafter_turbo_guidance"
TURBO_MOTION_KEY = "videocrafter_turbo_motion"
TURBO_DEFAULT_GUIDANCE = 7.5
TURBO_DEFAULT_MOTION = (0.05, 0.5)
# DynamiCrafter's image latent travels as core image-to-video nodes pass theirs: a VAE-space
# latent [B, 4, T, h, w] under this key, scaled into the model's space by `process_latent_in`
CONCAT_LATENT_KEY = "concat_latent_image"
# ComfyUI's zero-terminal-SNR clamp (comfy.model_sampling.rescale_zero_terminal_snr_sigmas): the last
# alphas_cumprod of such a schedule is 0 (infinite sigma), replaced by this to keep sigmas finite
ZSNR_LAST_ALPHAS_CUMPROD = 4.8973451890853435e-08


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
        alphas_cumprod = alphas_cumprod.double().clone()
        self.zsnr = bool(alphas_cumprod[-1] <= 0)
        if self.zsnr:
            alphas_cumprod[-1] = ZSNR_LAST_ALPHAS_CUMPROD
        scale = torch.ones_like(alphas_cumprod) if scale_arr is None else scale_arr.double()[: len(alphas_cumprod)]
        self.num_timesteps = len(alphas_cumprod)
        # the faithful DDIM's last step (to t = 0) re-scales x0 by the scale of t = 0 (VideoCrafter) or, as
        # DynamiCrafter's sampler does, keeps the current step's scale (vc_models.sampling)
        self.last_step_keeps_scale = False
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

    def model_output_from_denoised(self, sigma, denoised, model_input):
        """The raw eps back from an x0 estimate (the inverse of calculate_denoised)."""
        return (model_input - denoised) / comfy.model_sampling.reshape_sigma(sigma, denoised.ndim)

    def inverse_noise_scaling(self, sigma, latent):
        # a schedule that ends above sigma 0 (the faithful DDIM ends at t=0) returns the model-space x_0
        return latent * comfy.model_sampling.reshape_sigma(self.input_scale(sigma), latent.ndim)


class ConsistencyModelSampling(ScaledModelSampling):
    """T2V-Turbo: the plain schedule (no `scale_arr`, as the distillation ran) with LCM's boundary
    condition `denoised = c_out x0 + c_skip x_t`, c_skip/c_out at t/0.1 and sigma_data 0.5, exactly as the
    original scheduler (x_t in the model's space, so `c_skip` multiplies the scaled input). With it the
    core `lcm` sampler is the original LCM step: x = denoised, renoised to the next sigma with a fresh randn."""
    sigma_data_boundary = 0.5
    timestep_scaling = 10.0  # t / 0.1

    def __init__(self, alphas_cumprod, scale_arr=None):
        super().__init__(alphas_cumprod, None)  # a base checkpoint's scale_arr does not apply

    def calculate_denoised(self, sigma, model_output, model_input):
        shape = (sigma.shape[:1] + (1,) * (model_output.ndim - 1)) if sigma.ndim else ()
        scaled_t = self.timestep(sigma).float().reshape(shape) * self.timestep_scaling
        x0 = model_input - model_output * sigma.reshape(shape)
        x_t = model_input * self.input_scale(sigma).reshape(shape)
        sd2 = self.sigma_data_boundary ** 2
        c_skip = sd2 / (scaled_t ** 2 + sd2)
        c_out = scaled_t / (scaled_t ** 2 + sd2) ** 0.5
        return c_out * x0 + c_skip * x_t


class ScaledVModelSampling(ScaledModelSampling):
    """v-prediction (DynamiCrafter 512/1024) on the same scaled schedule. The original predicts
    v = sqrt(a_t) eps - sqrt(1 - a_t) s_t x0, so in the sampler's y-space the x0 estimate is
    a_t y - sigma sqrt(a_t) v (ComfyUI's V_PREDICTION with sigma_data 1 when s_t = 1)."""

    def calculate_denoised(self, sigma, model_output, model_input):
        alpha, _ = self.alpha_and_scale(sigma)
        alpha = comfy.model_sampling.reshape_sigma(alpha, model_output.ndim)
        sigma = comfy.model_sampling.reshape_sigma(sigma, model_output.ndim)
        return model_input * alpha - model_output * sigma * alpha ** 0.5

    def zero_snr_terminal(self, sigma, denoised, model_input):
        """At the last timestep of a zero-terminal-SNR schedule the original has alpha exactly 0, where
        eps = x_t and x0 = -v / s; the sigma table holds the clamped alpha instead. Returns
        (x0 estimate in y-space, eps, alpha) as the original has them, or None at any other sigma."""
        if not self.zsnr or sigma < self.sigmas[-1]:
            return None
        _, scale = self.alpha_and_scale(sigma)
        v = self.model_output_from_denoised(sigma, denoised, model_input)
        x_t = model_input * comfy.model_sampling.reshape_sigma(self.input_scale(sigma), model_input.ndim)
        return -v / comfy.model_sampling.reshape_sigma(scale, v.ndim), x_t, torch.zeros_like(scale)

    def model_output_from_denoised(self, sigma, denoised, model_input):
        """The raw v back from an x0 estimate (the inverse of calculate_denoised)."""
        alpha, _ = self.alpha_and_scale(sigma)
        alpha = comfy.model_sampling.reshape_sigma(alpha, denoised.ndim)
        sigma = comfy.model_sampling.reshape_sigma(sigma, denoised.ndim)
        return (model_input * alpha - denoised) / (sigma * alpha ** 0.5)


class VideoCrafterModelConfig(comfy.supported_models_base.BASE):
    latent_format = VideoCrafterLatentFormat
    unet_extra_config = {}
    memory_usage_factor = 2.0
    supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]

    def __init__(self, info, alphas_cumprod, scale_arr):
        super().__init__({"config": info.unet})
        self.info = info
        self.alphas_cumprod, self.scale_arr = alphas_cumprod, scale_arr

    def get_model(self, state_dict, prefix="", device=None):
        """The model with its weights still to load (`load_model_weights`), as core's model configs build theirs."""
        return VideoCrafterModel(self, self.alphas_cumprod, self.scale_arr, device=device)


class VideoCrafterModel(comfy.model_base.BaseModel):
    """BaseModel whose `extra_conds` turn CONDITIONING extras (fps, image tokens) into UNet inputs."""

    def __init__(self, model_config, alphas_cumprod, scale_arr, device=None):
        info = model_config.info
        v_prediction = info.parameterization == "v"
        model_type = comfy.model_base.ModelType.V_PREDICTION if v_prediction else comfy.model_base.ModelType.EPS
        super().__init__(model_config, model_type, device=device, unet_model=VideoCrafterUNet)
        if info.unet.guidance_embed_dim > 0:  # T2V-Turbo: LCM's boundary condition on the plain schedule
            sampling = ConsistencyModelSampling
        else:
            sampling = ScaledVModelSampling if v_prediction else ScaledModelSampling
        self.model_sampling = sampling(alphas_cumprod, scale_arr)
        self.info = info
        if info.is_dynamicrafter:
            self.model_sampling.last_step_keeps_scale = True
            self.concat_keys = ("concat_image",)  # ComfyUI's concat_cond builds c_concat from CONCAT_LATENT_KEY

    def load_model_weights(self, sd, unet_prefix="", assign=False):
        """Core's weight loading (`assign` as core passes it: a dynamic-VRAM patcher keeps the loaded tensors),
        but strict: tensors that do not fit the detected architecture are an error, not a logged warning."""
        unet_sd = {k[len(unet_prefix):]: v for k, v in sd.items() if k.startswith(unet_prefix)}
        missing, unexpected = self.diffusion_model.load_state_dict(unet_sd, strict=False, assign=assign)
        if missing or unexpected:
            raise ValueError(f"UNet tensors do not fit the inferred architecture: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        return self

    def concat_cond(self, **kwargs):
        if self.info.is_dynamicrafter and kwargs.get(CONCAT_LATENT_KEY) is None:
            raise ValueError(
                "This DynamiCrafter model needs its start image as a latent: pass the positive and the negative "
                "conditioning through 'DynamiCrafter Conditioning' before sampling.")
        return super().concat_cond(**kwargs)

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
                node = "DynamiCrafter Conditioning" if info.is_dynamicrafter else "VideoCrafter Image Encode"
                raise ValueError(
                    "This image-to-video model needs an image: pass both the positive and the negative "
                    f"conditioning through '{node}' before sampling.")
            out["image_context"] = comfy.conds.CONDRegular(tokens)
        out.update(self._turbo_conds(kwargs))
        return out

    def _turbo_conds(self, extras):
        """T2V-Turbo's guidance / motion-guidance UNet inputs from the CONDITIONING extras (the original
        pipeline's defaults when absent); errors for settings the model cannot take."""
        info = self.info
        guidance = extras.get(TURBO_GUIDANCE_KEY)
        if not info.unet.guidance_embed_dim:
            if guidance is not None:
                raise ValueError(f"'VideoCrafter Turbo Conditioning' sets a guidance embedding, but this MODEL "
                                 f"({info.description}) has none: load a T2V-Turbo UNet with 'VideoCrafter Turbo UNet "
                                 "Loader', or remove the node.")
            return {}
        # python numbers in CONDConstant: ComfyUI casts tensor conds to the compute dtype (fp16/bf16 would
        # round 7.3 to 7.30/7.31, which the x1000 embedding turns into a phase error of up to 12 rad);
        # positive and negative with different values are then run as separate batches
        guidance = TURBO_DEFAULT_GUIDANCE if guidance is None else guidance
        out = {"guidance": comfy.conds.CONDConstant(float(guidance))}
        motion = extras.get(TURBO_MOTION_KEY, TURBO_DEFAULT_MOTION if info.unet.motion_guidance else None)
        if motion is None:
            return out
        if not info.unet.motion_guidance:
            raise ValueError("Motion guidance was asked for, but this T2V-Turbo UNet has no motion-guidance projections "
                             "(the no-MG model, unet_no_mg): switch 'motion_guidance' off in 'VideoCrafter Turbo "
                             "Conditioning', or load the MG UNet (unet_mg).")
        motion_gs, percentage = motion
        # the original uses motion_gs while not t < T (1 - percentage), i.e. for integer t >= ceil(that)
        start = math.ceil(self.model_sampling.num_timesteps * (1.0 - float(percentage)))
        out["motion_guidance"] = comfy.conds.CONDConstant((float(motion_gs), start))
        return out


def cpu_computes_bf16(device):
    """True on a CPU whose oneDNN has native bf16 kernels (AVX512-BF16 or AMX)."""
    if torch.device(device).type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def core_model_patcher_class():
    """The ModelPatcher class core gives its own models now: ComfyUI 0.33 has `CoreModelPatcher`, which its
    main.py swaps for the dynamic-VRAM `ModelPatcherDynamic` on a GPU with comfy-aimdo; 0.3.x has only ModelPatcher."""
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def build_model_patcher(info, unet_sd, alphas_cumprod, scale_arr, weight_dtype=None):
    """The MODEL for a VideoCrafter UNet, built the way core loads a checkpoint (comfy.sd.load_state_dict_guess_config
    of both hosts): dtypes and devices from model management, the config's get_model, core's patcher class
    (dynamic VRAM on 0.33), then the weights, loaded straight to the GPU when model management says so."""
    config = VideoCrafterModelConfig(info, alphas_cumprod, scale_arr)
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
    model = config.get_model(unet_sd, device=initial_device)
    patcher = core_model_patcher_class()(model, load_device=load_device,
                                         offload_device=comfy.model_management.unet_offload_device())
    dynamic = getattr(patcher, "is_dynamic", lambda: False)()  # 0.3.x patchers are never dynamic
    model.load_model_weights(unet_sd, assign=dynamic)
    logging.info("VideoCrafter: %s, UNet weights %s (compute %s)%s", info.description, unet_dtype,
                 manual_cast or unet_dtype, ", dynamic VRAM" if dynamic else "")
    if initial_device != torch.device("cpu"):
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    return patcher
