"""The pack's nodes, one concern per module."""
from . import loader, image_encode, conditioning, latent, sampler, decode, convert, train
from . import guidance, dynamicrafter, turbo, download, freenoise, keyframes, control

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (loader, image_encode, conditioning, latent, sampler, decode, convert, train, guidance, dynamicrafter,
                turbo, download, freenoise, keyframes, control):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
