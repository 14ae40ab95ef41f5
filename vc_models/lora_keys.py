"""Core LoRA loading on this pack's MODEL: the peft / diffusers key names of the VideoCrafter UNet.

ComfyUI maps a LoRA file's keys to a model's weights in `comfy.lora.model_lora_keys_unet` (core's Load LoRA
nodes, hooks and training nodes all call it): for every model the generic `diffusion_model.<module>` and
`lora_unet_<module_with_underscores>` names (the trainer writes the former, see vc_train/lora.py), and further
layouts only for core's own model classes, chosen by isinstance checks; a custom model class has no hook of
its own there. peft saves a LoRA of this UNet as `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`
(diffusers-style files use `unet.<module>` or the bare module name); core's LoRA adapter reads lora_A/lora_B
once the key map names those prefixes. So the pack wraps that one function and adds these names for
`VideoCrafterModel` only: every other model's key map is core's, unchanged.
"""
import comfy.lora

from .model_base import VideoCrafterModel

PEFT_PREFIXES = ("base_model.model.", "unet.", "")
_WRAPPED = "_videocrafter_peft_keys"


def add_peft_keys(model, key_map):
    """Map `<prefix><module>` to `diffusion_model.<module>.weight` for each of the UNet's weights."""
    for key in model.state_dict():
        if key.startswith("diffusion_model.") and key.endswith(".weight"):
            module = key[len("diffusion_model."):-len(".weight")]
            for prefix in PEFT_PREFIXES:
                key_map.setdefault(prefix + module, key)
    return key_map


def install():
    """Wrap comfy.lora.model_lora_keys_unet once (idempotent)."""
    core = comfy.lora.model_lora_keys_unet
    if getattr(core, _WRAPPED, False):
        return

    def model_lora_keys_unet(model, key_map={}):  # core's signature, mutable default included
        key_map = core(model, key_map)
        if isinstance(model, VideoCrafterModel):
            add_peft_keys(model, key_map)
        return key_map

    setattr(model_lora_keys_unet, _WRAPPED, True)
    model_lora_keys_unet.__wrapped__ = core
    comfy.lora.model_lora_keys_unet = model_lora_keys_unet
