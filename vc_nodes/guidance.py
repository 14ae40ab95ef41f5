"""VideoCrafter Guidance Rescale: DynamiCrafter's guidance rescale, on the model's own output."""
from ..vc_models.guidance import guidance_rescale_cfg_function, TwoScaleGuider


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


class DynamiCrafterTwoScaleGuider:
    CATEGORY = "VideoCrafter/sampling"
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    DESCRIPTION = ("DynamiCrafter's two guidance scales (the original's --multiple_cond_cfg): cfg_text pushes towards "
                   "the prompt, cfg_image towards the image, with the guidance rescale on the whole result. Feed "
                   "SamplerCustomAdvanced (with VideoCrafter DDIM Sampler and BasicScheduler 'videocrafter_trailing'). "
                   "Core DualCFGGuider forms the same combination but cannot rescale it as the original does.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The DynamiCrafter model."}),
            "positive": ("CONDITIONING", {"tooltip": "Positive from DynamiCrafter Conditioning (prompt + image)."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative from DynamiCrafter Conditioning (empty prompt + grey image). "
                                                     "Its text with the positive's image is the image-only pass."}),
            "cfg_text": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                   "tooltip": "Text guidance scale (the original's unconditional_guidance_scale, 7.5)."}),
            "cfg_image": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                    "tooltip": "Image guidance scale (the original's cfg_img; it defaults to the text scale)."}),
            "guidance_rescale": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                 "Guidance rescale on the model output: 0.7 for DynamiCrafter 512/1024 as the original, 0 for 256."}),
        }}

    def get_guider(self, model, positive, negative, cfg_text, cfg_image, guidance_rescale):
        guider = TwoScaleGuider(model)
        guider.set_two_scale_conds(positive, negative)
        guider.set_scales(cfg_text, cfg_image, guidance_rescale)
        return (guider,)


NODE_CLASS_MAPPINGS["DynamiCrafterTwoScaleGuider"] = DynamiCrafterTwoScaleGuider
NODE_DISPLAY_NAME_MAPPINGS["DynamiCrafterTwoScaleGuider"] = "DynamiCrafter Two-Scale Guider"
