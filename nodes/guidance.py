"""VideoCrafter Guidance Rescale: DynamiCrafter's guidance rescale, on the model's own output."""
from ..vc_models.guidance import guidance_rescale_cfg_function


class VideoCrafterGuidanceRescale:
    CATEGORY = "VideoCrafter/sampling"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    DESCRIPTION = ("Guidance rescale as the DynamiCrafter 512/1024 originals sample (0.7): the guided model output "
                   "is pulled back towards the spread of the conditional output, which avoids over-exposure at "
                   "high cfg. Computed on the model's own output (v or eps); core RescaleCFG uses another space "
                   "and does not reproduce it.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The VideoCrafter / DynamiCrafter model."}),
            "multiplier": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                           "Share of the rescaled output: 0.7 for DynamiCrafter 512/1024 as the original, 0 turns it off."}),
        }}

    def patch(self, model, multiplier):
        model = model.clone()
        model.set_model_sampler_cfg_function(guidance_rescale_cfg_function(multiplier))
        return (model,)


NODE_CLASS_MAPPINGS = {"VideoCrafterGuidanceRescale": VideoCrafterGuidanceRescale}
NODE_DISPLAY_NAME_MAPPINGS = {"VideoCrafterGuidanceRescale": "VideoCrafter Guidance Rescale"}
