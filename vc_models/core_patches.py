"""Core model patches this model cannot honour, refused when sampling starts with a message naming them.

The UNet honours ComfyUI's hooks as core's SD UNet does (see `vc_models.unet`); what is left is refused
here rather than run as a silent no-op or a different result:
- a replaced `model_sampling` (core ModelSamplingDiscrete, ModelSamplingContinuousEDM, ...) that does not
  describe this model's process (its alphas_cumprod, the latent-scale schedule, zero-terminal-SNR v, LCM's
  boundary condition); one that computes the same (plain eps on the model's own sigmas) samples as it is;
- patches written for 4-D image latents that cannot run on [B, C, T, H, W] (SelfAttentionGuidance);
- UNetTemporalAttentionMultiply, which addresses SVD's `.time_stack.` layers (none here: its temporal
  factors would be dropped and its structural ones applied to the temporal attention);
- hook kinds the UNet does not apply.
The check runs as an `OUTER_SAMPLE` wrapper of the MODEL, so every sampler and guider passes through it.
"""
import inspect
import pathlib

import torch

import comfy.model_sampling
import comfy.patcher_extension

from .model_sampling import ConsistencyModelSampling, ScaledModelSampling, ScaledVModelSampling

CHECK_WRAPPER_KEY = "videocrafter_patch_check"
# the transformer_options hooks vc_models.unet applies (core's UNetModel / BasicTransformerBlock names)
HONOURED_PATCHES = {"attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch", "middle_patch",
                    "input_block_patch", "input_block_patch_after_skip", "output_block_patch", "emb_patch"}
HONOURED_REPLACEMENTS = {"attn1", "attn2"}
# core nodes whose patch functions assume 4-D image latents: (folder, file, node class) -> why.
# A patch function is known by the file its code is in and the class its __qualname__ starts with: a server loads
# comfy_extras (and custom nodes) by file path, under module names an in-process import never gives (so
# `__module__` differs between the two); the file and the qualified name are the same either way.
IMAGE_ONLY_PATCHES = {
    ("comfy_extras", "nodes_sag.py", "SelfAttentionGuidance"): (
        "its blur map and degraded prediction are computed on 4-D image latents [B, C, H, W]; this model's latents "
        "are video [B, C, T, H, W]. Use PerturbedAttentionGuidance, which works on this model."),
}
_MODEL_SAMPLING_RTOL = 1e-4


class UnsupportedPatchError(ValueError):
    """A core patch on a VideoCrafter MODEL that the model cannot honour."""


def install(patcher):
    """Add the check to a VideoCrafter MODEL (clones keep it)."""
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, CHECK_WRAPPER_KEY, _check_wrapper)


def _check_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    check(guider.model_patcher, guider.model_options)
    return executor(*args, **kwargs)


def check(patcher, model_options):
    """Raise UnsupportedPatchError naming the first patch of `patcher` / `model_options` this model cannot honour."""
    _check_model_sampling(patcher)
    _check_temporal_attention_multiply(patcher)
    _check_hooks(model_options.get("transformer_options", {}))
    for function in model_options.get("sampler_post_cfg_function", []) + model_options.get("sampler_pre_cfg_function", []):
        _check_function(function)


def _origin(function):
    """(folder, file, outermost class or function) of the code of a patch: a closure, a partial or a callable object."""
    while hasattr(function, "func"):  # functools.partial
        function = function.func
    function = inspect.unwrap(function)
    if not hasattr(function, "__code__"):  # a callable object: its class
        function = function if inspect.isclass(function) else type(function)
    try:
        path = pathlib.PurePath(inspect.getfile(function))
    except (TypeError, OSError):
        path = pathlib.PurePath("?")
    return path.parent.name, path.name, getattr(function, "__qualname__", "?").split(".")[0]


def _added_by(function):
    """Where a patch comes from, in words for a message ('SomeNode' in custom_nodes/some_pack.py)."""
    folder, file, owner = _origin(function)
    return f"'{owner}' in {folder}/{file}"


def _check_function(function):
    origin = _origin(function)
    why = IMAGE_ONLY_PATCHES.get(origin)
    if why is not None:
        node = origin[2]
        raise UnsupportedPatchError(f"'{node}' cannot work on this VideoCrafter model: {why} Remove it from the graph.")


def _check_hooks(transformer_options):
    patches = transformer_options.get("patches", {})
    replacements = transformer_options.get("patches_replace", {})
    for name, functions in patches.items():
        for function in functions:
            _check_function(function)
            if name not in HONOURED_PATCHES:
                raise UnsupportedPatchError(
                    f"A model patch of kind '{name}' is on this MODEL (added by {_added_by(function)}), but VideoCrafter "
                    f"UNets do not apply that hook (they apply {', '.join(sorted(HONOURED_PATCHES))}): remove the node "
                    "that adds it.")
    for name, by_block in replacements.items():
        for function in by_block.values():
            _check_function(function)
            if name not in HONOURED_REPLACEMENTS:
                raise UnsupportedPatchError(
                    f"A '{name}' block replacement is on this MODEL (added by {_added_by(function)}), but VideoCrafter "
                    "UNets only replace the attentions 'attn1' / 'attn2': remove the node that adds it.")


def _check_temporal_attention_multiply(patcher):
    """UNetTemporalAttentionMultiply scales `attnN.to_out` alone (the attention-multiply nodes of spatial
    layers scale to_q/to_k/to_v with it): that signature on this model means the node ran."""
    for key, patches in patcher.patches.items():
        if not key.endswith(("attn1.to_out.0.weight", "attn2.to_out.0.weight")):
            continue
        query_patches = patcher.patches.get(key.replace("to_out.0.weight", "to_q.weight"), [])
        if _scales(patches) and not _scales(query_patches):
            raise UnsupportedPatchError(
                "'UNetTemporalAttentionMultiply' addresses the temporal layers of Stable Video Diffusion "
                "('.time_stack.' weights), which VideoCrafter models do not have: its temporal factors would be "
                "dropped and its structural ones applied to the temporal attention. Use UNetSelfAttentionMultiply / "
                "UNetCrossAttentionMultiply (they scale the spatial and the temporal attention alike) instead.")


def _scales(patches):
    """Whether a weight's patches include an attention-multiply node's `(None,)` scaling patch."""
    return any(p[1] == (None,) for p in patches)


def _check_model_sampling(patcher):
    replacement = patcher.object_patches.get("model_sampling")
    if replacement is None or isinstance(replacement, ScaledModelSampling):
        return
    own = patcher.object_patches_backup.get("model_sampling", patcher.model.model_sampling)
    if _same_process(own, replacement):
        return
    core_classes = {c for c in vars(comfy.model_sampling).values() if isinstance(c, type)}
    # the node's class is made in its function (module name differs in a server): name it by core's bases
    names = [c.__name__ for c in type(replacement).__mro__ if c in core_classes]
    raise UnsupportedPatchError(
        f"The MODEL's sampling was replaced ({' + '.join(names[:2]) or type(replacement).__name__}, as the core "
        f"'{names[0] if names else 'ModelSampling'}' node does), but that does not describe this model's process "
        f"({_process(own)}): sampling with it would give a wrong video. Remove that node; the VideoCrafter "
        "loaders set the model's own schedule.")


def _process(model_sampling):
    """This model's process in words (what a replacement would have to compute)."""
    if isinstance(model_sampling, ConsistencyModelSampling):
        return "LCM boundary condition on the plain eps schedule of the checkpoint's alphas_cumprod"
    parts = [("v" if isinstance(model_sampling, ScaledVModelSampling) else "eps") + "-prediction on the checkpoint's own alphas_cumprod"]
    if model_sampling.zsnr:
        parts.append("zero terminal SNR")
    if bool((model_sampling.scale_arr != 1).any()):
        parts.append("latent-scale schedule (scale_arr)")
    return ", ".join(parts)


def _same_process(own, other):
    """True when `other` computes what `own` does at own's sigmas (model input, denoised, noise scaling)."""
    sigmas = getattr(other, "sigmas", None)
    if sigmas is None or sigmas.shape != own.sigmas.shape or \
            not torch.allclose(sigmas.float(), own.sigmas.float(), rtol=_MODEL_SAMPLING_RTOL):
        return False
    generator = torch.Generator().manual_seed(0)
    x, out, noise = (torch.randn(1, 4, 2, 3, 3, generator=generator) for _ in range(3))
    checks = [(own.sigmas[index].reshape(1), name, args) for index in (0, len(own.sigmas) // 2, len(own.sigmas) - 1)
              for name, args in (("calculate_input", (x,)), ("calculate_denoised", (out, x)), ("noise_scaling", (noise, x)))]
    # the result leaves sampling at the schedule's last sigma: 0 for core's schedules (the faithful DDIM's t = 0
    # differs from it by a_0, 4e-4 relative, within the sampled-latent tolerance)
    checks.append((torch.zeros(1), "inverse_noise_scaling", (x,)))
    for sigma, name, args in checks:
        ours, theirs = getattr(own, name)(sigma, *args), getattr(other, name)(sigma, *args)
        if not torch.allclose(ours.float(), theirs.float(), rtol=_MODEL_SAMPLING_RTOL, atol=1e-6):
            return False
    return True
