"""The VideoCrafter denoiser as a ComfyUI model: model management, sampling and CFG work unchanged.

What differs between the models of the family comes from their registry entry (`CheckpointInfo.entry`):
the schedule (`vc_models.model_sampling`), the image conditioning and the frame-rate default.
"""
import logging
import math

import torch

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.supported_models_base

from . import core_patches, video_control
from .memory_model import unet_activation_bytes
from .unet import VideoCrafterUNet
from .freenoise import frames_of_context_window
from .model_sampling import model_sampling_for

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


class VideoCrafterLatentFormat(comfy.latent_formats.SD15):
    """SD VAE latents per frame, [B, 4, T, h, w]; previews use the SD1.5 RGB factors (first frame)."""
    latent_dimensions = 3

    def __init__(self):
        super().__init__(scale_factor=0.18215)
        self.taesd_decoder_name = None  # TAESD previews are per image; the RGB factors handle video


class VideoCrafterModelConfig(comfy.supported_models_base.BASE):
    latent_format = VideoCrafterLatentFormat
    unet_extra_config = {}
    supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]

    # the unet_config entries core code reads of an SD-style UNet (FreeU: model_channels); the UNet takes them
    # as overrides of equal value. Not num_res_blocks / transformer_depth: core LoRA loading would map
    # diffusers names from those with SD's layout.
    CORE_UNET_KEYS = ("model_channels", "in_channels", "out_channels")

    def __init__(self, info, alphas_cumprod, scale_arr):
        super().__init__({"config": info.unet, **{key: getattr(info.unet, key) for key in self.CORE_UNET_KEYS}})
        self.info = info
        self.alphas_cumprod, self.scale_arr = alphas_cumprod, scale_arr

    def get_model(self, state_dict, prefix="", device=None):
        """The model with its weights still to load (`load_model_weights`), as core's model configs build theirs."""
        return VideoCrafterModel(self, self.alphas_cumprod, self.scale_arr, device=device)


class VideoCrafterModel(comfy.model_base.BaseModel):
    """BaseModel whose `extra_conds` turn CONDITIONING extras (fps, image tokens) into UNet inputs."""

    def __init__(self, model_config, alphas_cumprod, scale_arr, device=None):
        info = model_config.info
        model_type = comfy.model_base.ModelType.V_PREDICTION if info.parameterization == "v" else comfy.model_base.ModelType.EPS
        super().__init__(model_config, model_type, device=device, unet_model=VideoCrafterUNet)
        self.model_sampling = model_sampling_for(info.entry, alphas_cumprod, scale_arr)
        self.info = info
        if info.entry.concat_latent:
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

    def memory_required(self, input_shape, cond_shapes={}, memory_efficient_attention=None, **kwargs):
        """Bytes one UNet call on a video latent needs above the weights, from the measured memory model
        (vc_models/memory_model.py) in the compute dtype: core batches cond and uncond by it.
        `memory_efficient_attention`: the attention the call will use, as newer ComfyUI passes it (None: the host's
        selection; True / False: fused or not; or the attention function), see memory_model.attention_kind.
        Other keywords a newer caller may add are accepted and do not change the estimate."""
        if len(input_shape) != 5:
            return super().memory_required(input_shape, cond_shapes)
        dtype = self.manual_cast_dtype if self.manual_cast_dtype is not None else self.get_dtype()
        return unet_activation_bytes(self.info.unet, input_shape, dtype, memory_efficient_attention)

    def concat_cond(self, **kwargs):
        if self.info.entry.concat_latent and kwargs.get(CONCAT_LATENT_KEY) is None:
            raise ValueError(
                "This DynamiCrafter model needs its start image as a latent: pass the positive and the negative "
                "conditioning through 'DynamiCrafter Conditioning' before sampling.")
        return super().concat_cond(**kwargs)

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        # 0.3.75's Context Windows pass a latent-shaped concat conditioning whole: cut it to the window (on 0.33
        # resize_cond_for_context_window cut it already, and one of the window's length is left alone)
        c_concat = frames_of_context_window(c_concat, x.shape[2], transformer_options)
        return super()._apply_model(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    def resize_cond_for_context_window(self, cond_key, cond_value, window, x_in, device, retain_index_list=[]):
        """ComfyUI 0.33's Context Windows ask the model first how to cut a conditioning to a window (and would
        otherwise cut any whose dim 2 matches the frame count, a 64-wide text embedding of 64 frames too).
        On the frame axis only the concat latent is per frame; text, image tokens, fps and turbo guidance are
        per video and stay whole. 0.3.75 never asks: `_apply_model` cuts the concat latent there."""
        if window.dim != 2:
            return None  # windows over another axis: core's own rule
        if cond_key == "c_concat":
            return cond_value._copy_with(window.get_tensor(cond_value.cond, device, retain_index_list=retain_index_list))
        return cond_value

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        info = self.info
        if info.unet.fps_cond:
            fps = kwargs.get(FPS_KEY, info.entry.defaults.fps)
            out["fps"] = comfy.conds.CONDRegular(torch.tensor([float(fps)]))
        tokens = kwargs.get(IMAGE_TOKENS_KEY)
        if info.is_i2v:
            if tokens is None:
                raise ValueError(
                    "This image-to-video model needs an image: pass both the positive and the negative "
                    f"conditioning through '{info.entry.image_node}' before sampling.")
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


# weight dtypes computed in bf16 on a CPU with bf16 instructions (see build_model_patcher)
BF16_COMPUTE_WEIGHTS = (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)


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


RELOAD_CALLBACK_KEY = "videocrafter_cached_patcher_init"


def set_reload(patcher, factory, args):
    """Give a MODEL the `cached_patcher_init` core's loaders give theirs: `factory(*args, disable_dynamic=False)`
    builds the same MODEL afresh from its file(s). Newer ComfyUI calls it for a deep clone (device selection,
    MultiGPU: `deepclone_multigpu`) and, with `disable_dynamic=True`, for the non-dynamic delegate that hook
    conditioning samples on when the MODEL is a dynamic-VRAM patcher. ComfyUI 0.33's clone carries the attribute;
    on older hosts, whose clone does not, a clone callback carries it, so the MODEL out of a LoRA or patch node
    still has it."""
    carried_by_host = hasattr(patcher, "cached_patcher_init")  # set to None by the constructor of hosts that use it
    patcher.cached_patcher_init = (factory, tuple(args))
    if not carried_by_host:
        patcher.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_CLONE, RELOAD_CALLBACK_KEY, _carry_reload)
    return patcher


def _carry_reload(original, clone):
    if getattr(clone, "cached_patcher_init", None) is None:
        clone.cached_patcher_init = getattr(original, "cached_patcher_init", None)


def build_model_patcher(info, unet_sd, alphas_cumprod, scale_arr, weight_dtype=None, disable_dynamic=False):
    """The MODEL for a VideoCrafter UNet, built the way core loads a checkpoint (comfy.sd.load_state_dict_guess_config
    of both hosts): dtypes and devices from model management, the config's get_model, core's patcher class
    (dynamic VRAM on 0.33; the plain ModelPatcher with `disable_dynamic`, as core's loaders take it), then the
    weights, loaded straight to the GPU when model management says so."""
    config = VideoCrafterModelConfig(info, alphas_cumprod, scale_arr)
    load_device = comfy.model_management.get_torch_device()
    params = sum(v.numel() for v in unet_sd.values())
    stored = next(iter(unet_sd.values())).dtype
    unet_dtype = weight_dtype or comfy.model_management.unet_dtype(
        model_params=params, supported_dtypes=config.supported_inference_dtypes, weight_dtype=stored)
    manual_cast = comfy.model_management.unet_manual_cast(unet_dtype, load_device, config.supported_inference_dtypes)
    if unet_dtype in BF16_COMPUTE_WEIGHTS and manual_cast is not None and cpu_computes_bf16(load_device):
        # ComfyUI assumes bf16 is slow on every CPU; with AVX512-BF16/AMX oneDNN runs it about
        # twice as fast as fp32, so a user who asked for bf16 (or fp8) weights gets bf16 compute there
        # (fp8 weights are cast per layer to bf16 by comfy.ops, as core does on a GPU).
        manual_cast = None if unet_dtype == torch.bfloat16 else torch.bfloat16
    config.set_inference_dtype(unet_dtype, manual_cast)
    initial_device = comfy.model_management.unet_inital_load_device(params, unet_dtype)
    model = config.get_model(unet_sd, device=initial_device)
    patcher_class = comfy.model_patcher.ModelPatcher if disable_dynamic else core_model_patcher_class()
    patcher = patcher_class(model, load_device=load_device, offload_device=comfy.model_management.unet_offload_device())
    core_patches.install(patcher)
    video_control.install(patcher)
    dynamic = getattr(patcher, "is_dynamic", lambda: False)()  # 0.3.x patchers are never dynamic
    model.load_model_weights(unet_sd, assign=dynamic)
    logging.info("VideoCrafter: %s, UNet weights %s (compute %s)%s", info.description, unet_dtype,
                 manual_cast or unet_dtype, ", dynamic VRAM" if dynamic else "")
    if initial_device != torch.device("cpu"):
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    return patcher
