"""VideoCrafter for ComfyUI: VideoCrafter1/2 text-to-video and VideoCrafter1 image-to-video nodes."""
from .vc_models import sampling as _sampling

_sampling.register()

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402  (after the sampler is registered)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
