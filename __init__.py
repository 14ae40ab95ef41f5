"""VideoCrafter for ComfyUI: nodes for VideoCrafter1/2 text-to-video and VideoCrafter1 image-to-video."""
from .vc_models import sampling as _sampling

_sampling.register()

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
