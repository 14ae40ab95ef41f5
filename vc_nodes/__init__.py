"""The pack's nodes, one concern per module; each module lists its nodes in NODES, and the pack's ComfyUI extension
(VideoCrafterExtension, returned by the package's comfy_entrypoint) registers them all."""
from comfy_api.latest import ComfyExtension

from . import loader, image_encode, conditioning, latent, sampler, decode, convert, train
from . import guidance, dynamicrafter, turbo, download, freenoise, keyframes, control, motionctrl
from .finite_inputs import install_input_checks

NODES = [node for module in (loader, image_encode, conditioning, latent, sampler, decode, convert, train, guidance,
                             dynamicrafter, turbo, download, freenoise, keyframes, control, motionctrl) for node in module.NODES]
for _node_class in NODES:
    install_input_checks(_node_class)  # NaN / inf pass ComfyUI's own range check; 0.3.75 skips V3 choices
# {node id: node class}, as ComfyUI registers them (scripts and tests look nodes up by id)
NODE_CLASSES = {node.GET_SCHEMA().node_id: node for node in NODES}


class VideoCrafterExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)
