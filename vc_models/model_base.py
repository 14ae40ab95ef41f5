"""The VideoCrafter denoiser as a ComfyUI model: model management, sampling and CFG work unchanged.

What differs between the models comes from their registry entry (`CheckpointInfo.entry`): the schedule
(`vc_models.model_sampling`) and its family (`vc_models.families`): the UNet's extra inputs from the
CONDITIONING extras, whether an image latent rides on the input channels. Building the MODEL (dtypes, patcher)
is `vc_models.model_patcher`'s; rebuilding it from its files `vc_models.model_reload`'s.
"""
import torch

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.supported_models_base

from . import families
from .context_windows import frames_of_context_window
from .families import CONCAT_LATENT_KEY
from .memory_model import unet_activation_bytes
from .unet import VideoCrafterUNet
from .model_sampling import model_sampling_for


class CONDPerFrame(comfy.conds.CONDRegular):
    """A per-frame UNet input (`families.PerFrame`): batched as CONDRegular, and knowing its frame axis, so that a
    context window can cut it to the window's frames."""

    def __init__(self, cond, frame_axis):
        super().__init__(cond)
        self.frame_axis = frame_axis

    def _copy_with(self, cond):
        return self.__class__(cond, self.frame_axis)


# the kinds of UNet input a family returns (vc_models.families) as ComfyUI conds
_CONDS = {families.PerVideo: comfy.conds.CONDRegular, families.NoiseShaped: comfy.conds.CONDNoiseShape,
          families.Constant: comfy.conds.CONDConstant}


def _cond(value):
    if isinstance(value, families.PerFrame):
        return CONDPerFrame(value.value, value.frame_axis)
    return _CONDS[type(value)](value.value)


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
        if info.entry.family.concat_latent:
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
        family = self.info.entry.family
        if family.concat_latent and kwargs.get(CONCAT_LATENT_KEY) is None:
            raise ValueError(
                f"This {family.name} model needs its start image as a latent: pass the positive and the negative "
                f"conditioning through '{family.image_node}' before sampling.")
        return super().concat_cond(**kwargs)

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        # 0.3.75's Context Windows pass a latent-shaped concat conditioning whole: cut it to the window (on 0.33
        # resize_cond_for_context_window cut it already, and one of the window's length is left alone)
        c_concat = frames_of_context_window(c_concat, x.shape[2], transformer_options)
        for name, axis in self.info.entry.family.frame_axes.items():  # the family's per-frame inputs, likewise
            if kwargs.get(name) is not None:
                kwargs[name] = frames_of_context_window(kwargs[name], x.shape[2], transformer_options, axis)
        return super()._apply_model(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    def resize_cond_for_context_window(self, cond_key, cond_value, window, x_in, device, retain_index_list=[]):
        """ComfyUI 0.33's Context Windows ask the model first how to cut a conditioning to a window (and would
        otherwise cut any whose dim 2 matches the frame count, a 64-wide text embedding of 64 frames too).
        On the frame axis the concat latent and the family's per-frame inputs (MotionCtrl's camera path and flow) are
        per frame and cut; text, image tokens, fps and turbo guidance are per video and stay whole. 0.3.75 never
        asks: `_apply_model` cuts the per-frame ones there."""
        if window.dim != 2:
            return None  # windows over another axis: core's own rule
        if cond_key == "c_concat":
            return cond_value._copy_with(window.get_tensor(cond_value.cond, device, retain_index_list=retain_index_list))
        if isinstance(cond_value, CONDPerFrame):
            return cond_value._copy_with(window.get_tensor(cond_value.cond, device, dim=cond_value.frame_axis,
                                                           retain_index_list=retain_index_list))
        return cond_value

    def extra_conds(self, **kwargs):
        """Core's conds (text, concat latent) and the family's UNet inputs from the CONDITIONING extras."""
        out = super().extra_conds(**kwargs)
        inputs = self.info.entry.family.unet_inputs(self.info, kwargs, self.model_sampling.num_timesteps)
        out.update({name: _cond(value) for name, value in inputs.items()})
        return out
