"""VideoCrafter Guidance Rescale: DynamiCrafter's guidance rescale, on the model's own output."""
from comfy_api.latest import io

from ..vc_models.guidance import guidance_rescale_cfg_function, TwoScaleGuider


class VideoCrafterGuidanceRescale(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoCrafterGuidanceRescale",
            display_name="VideoCrafter Guidance Rescale",
            category="VideoCrafter/sampling",
            description=("Guidance rescale as the DynamiCrafter 512/1024 originals sample (0.7): the guided model "
                         "output is pulled back towards the spread of the conditional output, which avoids "
                         "over-exposure at high cfg. Computed on the model's own output (v or eps); core RescaleCFG "
                         "uses another space and does not reproduce it."),
            inputs=[
                io.Model.Input("model", tooltip="The VideoCrafter / DynamiCrafter model."),
                io.Float.Input("multiplier", default=0.7, min=0.0, max=1.0, step=0.01, tooltip=(
                    "Share of the rescaled output: 0.7 for DynamiCrafter 512/1024 as the original, 0 turns it off.")),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, multiplier):
        model = model.clone()
        model.set_model_sampler_cfg_function(guidance_rescale_cfg_function(multiplier))
        return io.NodeOutput(model)


class DynamiCrafterTwoScaleGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DynamiCrafterTwoScaleGuider",
            display_name="DynamiCrafter Two-Scale Guider",
            category="VideoCrafter/sampling",
            description=("DynamiCrafter's two guidance scales (the original's --multiple_cond_cfg): cfg_text pushes "
                         "towards the prompt, cfg_image towards the image, with the guidance rescale on the whole "
                         "result. Feed SamplerCustomAdvanced (with VideoCrafter DDIM Sampler and BasicScheduler "
                         "'videocrafter_trailing'). Core DualCFGGuider forms the same combination but cannot rescale "
                         "it as the original does."),
            inputs=[
                io.Model.Input("model", tooltip="The DynamiCrafter model."),
                io.Conditioning.Input("positive", tooltip=(
                    "Positive from DynamiCrafter Conditioning (prompt + image).")),
                io.Conditioning.Input("negative", tooltip=(
                    "Negative from DynamiCrafter Conditioning (empty prompt + grey image). Its text with the "
                    "positive's image is the image-only pass.")),
                io.Float.Input("cfg_text", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=(
                    "Text guidance scale (the original's unconditional_guidance_scale, 7.5).")),
                io.Float.Input("cfg_image", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=(
                    "Image guidance scale (the original's cfg_img; it defaults to the text scale).")),
                io.Float.Input("guidance_rescale", default=0.7, min=0.0, max=1.0, step=0.01, tooltip=(
                    "Guidance rescale on the model output: 0.7 for DynamiCrafter 512/1024 as the original, 0 for "
                    "256.")),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg_text, cfg_image, guidance_rescale):
        guider = TwoScaleGuider(model)
        guider.set_two_scale_conds(positive, negative)
        guider.set_scales(cfg_text, cfg_image, guidance_rescale)
        return io.NodeOutput(guider)


NODES = [VideoCrafterGuidanceRescale, DynamiCrafterTwoScaleGuider]
