"""VideoCrafter for ComfyUI: the VideoCrafter family (VideoCrafter1/2, VideoCrafter1 I2V, DynamiCrafter,
FreeNoise, T2V-Turbo-v2) as ComfyUI nodes, with a trainer and a batch command."""
from .vc_models import sampling as _sampling, lora_keys as _lora_keys

_sampling.register()
_lora_keys.install()  # core LoRA loading also reads peft / diffusers-style keys for this pack's UNet

from .vc_nodes import VideoCrafterExtension  # noqa: E402  (after the sampler is registered)
from .vc_nodes.example_inputs import write_missing_example_inputs  # noqa: E402

write_missing_example_inputs()  # the shipped graphs' Load Image / Load Video files, when the input folder lacks them
from .vc_nodes import templates as _templates  # noqa: E402

_templates.ensure_thumbnails()  # the Templates browser's pictures of example_workflows/, drawn from the graphs


async def comfy_entrypoint():
    """ComfyUI's entry point for a pack of V3 nodes: the extension that lists them."""
    return VideoCrafterExtension()


__all__ = ["comfy_entrypoint"]
