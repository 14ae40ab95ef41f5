"""VideoCrafter for ComfyUI: VideoCrafter1/2 text-to-video and VideoCrafter1 image-to-video nodes."""
from .vc_models import sampling as _sampling

_sampling.register()

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402  (after the sampler is registered)
from .nodes.train import NODE_CLASS_MAPPINGS as _train, NODE_DISPLAY_NAME_MAPPINGS as _train_names  # noqa: E402

NODE_CLASS_MAPPINGS.update(_train)
NODE_DISPLAY_NAME_MAPPINGS.update(_train_names)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
