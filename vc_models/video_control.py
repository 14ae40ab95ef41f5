"""ComfyUI's ControlNets on video: a 2-D SD-layout ControlNet runs per frame on the 5-D latent.

Core's samplers call `control.get_control(x, t, cond, batched_number, transformer_options)` with this model's
[B, C, T, h, w] latent; core's ControlNet (comfy/controlnet.py) works on images [N, C, h, w]. When sampling starts
(an OUTER_SAMPLE wrapper of the MODEL, installed by the loader) every control object in the sampler's conditioning
is wrapped in a `FrameControl` (the conditioning the graph holds is left as it is), which folds the frames into the
batch and runs core's ControlNet, its whole chain (previous_controlnet), strength and start/end percent as core
runs them, on:
- x: the noisy latent only, [(B*T), 4, h, w]; DynamiCrafter's concat latent is an input of the UNet, not of the
  ControlNet (ToonCrafter's sketch encoder has in_channels 4);
- the sigma of each video repeated for its frames;
- the hint: one image for every frame, T images (frame i gets image i) or B*T (per video), resized by core;
- the context: the text tokens followed by the image tokens where the model has them (VideoCrafter I2V,
  DynamiCrafter, ToonCrafter), the same for every frame, as the community ToonCrafter sketch guidance feeds its
  ControlNet (77 text + 256 image tokens).
The residuals come back as [(B*T), C, h', w'], the layout of the UNet's spatial layers, and the UNet adds them
where core's SD UNet adds them. Control types that cannot run per frame (T2I adapters, Control-LoRA, ControlNets
of other architectures) and ControlNets whose blocks do not fit the UNet are refused, naming them, before sampling.
"""
import torch

import comfy.cldm.cldm
import comfy.controlnet
import comfy.patcher_extension

from .unet import video_to_frames

WRAPPER_KEY = "videocrafter_video_control"


class UnsupportedControlError(ValueError):
    """A control object in the conditioning that cannot run on a VideoCrafter MODEL."""


def install(patcher):
    """Wrap the controls of every sampling of this MODEL (clones keep it)."""
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _wrap_controls)


def _wrap_controls(executor, *args, **kwargs):
    guider = executor.class_obj
    model = guider.model_patcher.model
    wrapped = {}  # one FrameControl per control object, so cond and uncond sharing one still batch together
    for conds in guider.conds.values():  # the sampler's per-run copies of the conditioning dicts
        for cond in conds:
            control = cond.get("control")
            if control is not None:
                if control not in wrapped:
                    wrapped[control] = FrameControl(control, model)
                cond["control"] = wrapped[control]
    return executor(*args, **kwargs)


def chain(control):
    """The control and the ones it adds to (previous_controlnet), first to last."""
    links = []
    while control is not None:
        links.append(control)
        control = control.previous_controlnet
    return links


class FrameControl(comfy.controlnet.ControlBase):
    """A core ControlNet chain run per frame on the video latent (see the module docstring)."""

    def __init__(self, control, model):
        super().__init__()
        for link in chain(control):
            check_control(link, model)
        self.control = control
        self.with_image_tokens = model.info.unet.image_cross_attention

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        videos, _, frames = x_noisy.shape[:3]
        for link in chain(self.control):
            check_hint_count(link.cond_hint_original.shape[0], frames, videos // batched_number,
                             "context_window" in transformer_options)
        context = cond["c_crossattn"]
        if self.with_image_tokens:
            context = torch.cat([context, cond["image_context"].to(context)], dim=1)
        per_frame = {**cond, "c_crossattn": context.repeat_interleave(frames, dim=0)}
        return self.control.get_control(video_to_frames(x_noisy), t.repeat_interleave(frames), per_frame,
                                        batched_number, transformer_options)

    # the wrapped chain's own state and models
    def pre_run(self, model, percent_to_timestep_function):
        self.control.pre_run(model, percent_to_timestep_function)

    def cleanup(self):
        self.control.cleanup()

    def get_models(self):
        return self.control.get_models()

    def get_extra_hooks(self):
        return self.control.get_extra_hooks()

    def inference_memory_requirements(self, dtype):
        return self.control.inference_memory_requirements(dtype)


def check_hint_count(count, frames, videos, context_windows=False):
    if count in (1, frames, videos * frames):
        return
    per_video = f" or {videos * frames} (one per frame of each of the {videos} videos)" if videos > 1 else ""
    windows = (" With context windows the sampler sees a window of the frames at a time: use one hint image."
               if context_windows else "")
    raise UnsupportedControlError(
        f"The ControlNet hint has {count} images but the video latent has {frames} frames: give one image for all "
        f"frames, {frames} images (image i guides frame i){per_video}. Make the IMAGE batch into 'Apply ControlNet' "
        f"that long (e.g. load the frames of a video, or repeat/trim the batch).{windows}")


def control_name(control):
    """How the user's graph names this kind of control."""
    kinds = {comfy.controlnet.T2IAdapter: "a T2I-Adapter", comfy.controlnet.ControlLora: "a Control-LoRA"}
    if type(control) in kinds:
        return f"{kinds[type(control)]} ({type(control).__name__})"
    model = getattr(control, "control_model", None)
    inner = f" with a {type(model).__module__}.{type(model).__name__} network" if model is not None else ""
    return f"{type(control).__module__}.{type(control).__name__}{inner}"


def check_control(control, model):
    """Refuse a control that cannot run per frame on `model` (a VideoCrafterModel), or whose blocks do not fit
    its UNet; a 1-channel ControlNet given an RGB hint takes its grey value (equal channels, as VideoCrafter Sketch
    Hint gives) or else the channels' mean (as core does for 1-channel T2I adapters)."""
    description = model.info.description
    net = getattr(control, "control_model", None)
    if type(control) is not comfy.controlnet.ControlNet or not isinstance(net, comfy.cldm.cldm.ControlNet) \
            or control.latent_format is not None or net.control_add_embedding is not None:
        raise UnsupportedControlError(
            f"{control_name(control)} cannot control this VideoCrafter model ({description}): only SD-layout "
            "ControlNets (the ones 'Load ControlNet Model' reads with 'control_model.' / 'zero_convs.' weights) run "
            "per frame on its video latent. Remove the 'Apply ControlNet' that adds it.")
    unet = model.diffusion_model
    residuals = [zero_conv[0].out_channels for zero_conv in net.zero_convs]
    context = next((m.in_features for name, m in net.named_modules() if name.endswith("attn2.to_k")), None)
    problems = []
    if net.input_blocks[0][0].in_channels != unet.config.out_channels:
        problems.append(f"it takes {net.input_blocks[0][0].in_channels} latent channels, this model's noisy latent "
                        f"has {unet.config.out_channels}")
    if residuals != list(unet.skip_channels) or net.middle_block_out[0].out_channels != unet.skip_channels[-1]:
        problems.append(f"its residuals have {residuals} channels, this UNet's blocks {list(unet.skip_channels)}")
    if context is not None and context != unet.config.context_dim:
        problems.append(f"it attends to {context}-wide tokens, this model's are {unet.config.context_dim}-wide")
    if problems:
        raise UnsupportedControlError(
            f"This ControlNet was not made for this model ({description}): {'; '.join(problems)}. Use a ControlNet "
            "trained for its SD 2.1-layout UNet (e.g. ToonCrafter's sketch encoder, 'toon_sketch_encoder').")
    hint_channels = net.input_hint_block[0].in_channels
    hint = control.cond_hint_original
    if hint.shape[1] != hint_channels:
        if hint_channels != 1:
            raise UnsupportedControlError(f"This ControlNet takes {hint_channels}-channel hints, the image has "
                                          f"{hint.shape[1]} channels.")
        grey = hint[:, :1]
        control.cond_hint_original = grey if torch.equal(hint, grey.expand_as(hint)) else hint.mean(dim=1, keepdim=True)


# OpenCV's BGR2GRAY weights (ITU-R BT.601), as the community sketch guidance converts its sketch frames
GREY_WEIGHTS = (0.299, 0.587, 0.114)


def sketch_hint(images, width, height):
    """ToonCrafter sketch frames as its sketch encoder takes them: grey, inverted (black lines on white become
    white on black), in [0, 1], scaled to cover width x height and center-cropped (the community code's
    Resize(min) + CenterCrop at 320x512). IMAGE [N, H, W, 3] in, IMAGE [N, height, width, 3] out, the grey value
    in every channel (previewable; a 1-channel ControlNet takes that grey value)."""
    import comfy.utils
    grey = (images[..., :3] * images.new_tensor(GREY_WEIGHTS)).sum(dim=-1, keepdim=True)
    inverted = (1.0 - grey).movedim(-1, 1)
    resized = comfy.utils.common_upscale(inverted, width, height, "bilinear", "center").clamp(0.0, 1.0)
    return resized.movedim(1, -1).expand(-1, -1, -1, 3).contiguous()
