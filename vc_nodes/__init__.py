"""The pack's nodes, one concern per module."""
from . import loader, image_encode, conditioning, latent, sampler, decode, convert, train
from . import guidance, dynamicrafter, turbo, download, freenoise, keyframes, control
from .finite_inputs import require_finite_floats

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (loader, image_encode, conditioning, latent, sampler, decode, convert, train, guidance, dynamicrafter,
                turbo, download, freenoise, keyframes, control):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
for _node_class in NODE_CLASS_MAPPINGS.values():
    require_finite_floats(_node_class)  # NaN / inf pass ComfyUI's own range check
