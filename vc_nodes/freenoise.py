"""VideoCrafter FreeNoise: a MODEL patch for videos longer than the 16 trained frames."""
import comfy.patcher_extension
from comfy_api.latest import io

from ..vc_models.freenoise import WINDOWS_KEY, WRAPPER_KEY, FreeNoiseSampling
from ..vc_models.model_base import VideoCrafterModel


class VideoCrafterFreeNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoCrafterFreeNoise",
            display_name="VideoCrafter FreeNoise (long video)",
            category="VideoCrafter/long video",
            description=(
                "FreeNoise (the original method, step for step): every temporal self-attention runs over sliding "
                "frame windows fused with triangular weights, and the initial noise is rescheduled from the "
                "sampler's seed, so 64+ frames stay coherent at the cost of one UNet pass per step. Set the frame "
                "count in Empty VideoCrafter Latent to window_size + k x window_stride (16, 20, ..., 64); videos of "
                "at most window_size frames sample exactly as without this node."),
            inputs=[
                io.Model.Input("model", tooltip="A VideoCrafter or DynamiCrafter model."),
                io.Int.Input("window_size", default=16, min=2, max=256, tooltip=(
                    "Frames each temporal attention sees at once: the 16 the models were trained on.")),
                io.Int.Input("window_stride", default=4, min=1, max=256, tooltip=(
                    "Frames between window starts (at most window_size). Smaller: more overlap, smoother, same "
                    "cost. Frames past the last whole window get no temporal attention (as in the original), so use "
                    "window_size + k x window_stride frames.")),
                io.Boolean.Input("reschedule_noise", default=True, tooltip=(
                    "Reuse shuffled noise of earlier frames for later ones (seeded by the sampler seed), which "
                    "keeps long videos on one subject.")),
            ],
            outputs=[io.Model.Output(tooltip=(
                "The model with FreeNoise applied; sample it as usual with as many frames as you like."))],
        )

    @classmethod
    def execute(cls, model, window_size, window_stride, reschedule_noise):
        if not isinstance(model.model, VideoCrafterModel):
            raise ValueError("VideoCrafter FreeNoise patches the temporal attention of VideoCrafter/DynamiCrafter "
                             "models: connect the MODEL of 'Load VideoCrafter Checkpoint'.")
        if window_stride > window_size:
            raise ValueError(f"window_stride {window_stride} is larger than window_size {window_size}: the frames "
                             "between windows would get no temporal attention. Use a stride of at most the window size.")
        patched = model.clone()
        patched.model_options.setdefault("transformer_options", {})[WINDOWS_KEY] = (window_size, window_stride)
        outer = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
        patched.remove_wrappers_with_key(outer, WRAPPER_KEY)  # a second FreeNoise node replaces the first
        patched.add_wrapper_with_key(outer, WRAPPER_KEY, FreeNoiseSampling(window_size, window_stride, reschedule_noise))
        return io.NodeOutput(patched)


NODES = [VideoCrafterFreeNoise]
