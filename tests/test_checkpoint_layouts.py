"""The model the pack builds has exactly the released checkpoints' parameter names and shapes.

Every layout in ../shared/reference/keys/ is turned into meta tensors (no memory), detected, split
and converted as the loader does, and each component is built on the meta device: the tensors it
receives and the parameters it has must match one for one. Keys left unused are exactly those
`vc_models.checkpoint.is_ignored_key` lists.
"""

import pytest
import torch

import comfy_host
from conftest import reference_path

LAYOUTS = {
    "t2v_512_v1.0": "vc1_t2v_512",
    "t2v_1024_v1.0": "vc1_t2v_1024",
    "t2v_512_v2.0": "vc2_t2v_512",
    "i2v_512_v1.0": "vc1_i2v_512",
    "dynamicrafter_256_v1.0": "dc_256",
    "dynamicrafter_512_v1.0": "dc_512",
    "dynamicrafter_1024_v1.0": "dc_1024",
    "tooncrafter_512": "toon_512",
}
# DynamiCrafter 512 and 1024 share one layout; the stored schedule values tell them apart (zero-terminal-SNR
# alphas_cumprod, scale_arr floor 0.7 or 0.3), so those few buffers get their released values
DYNAMICRAFTER_SCALE_FLOOR = {"dynamicrafter_512_v1.0": 0.7, "dynamicrafter_1024_v1.0": 0.3, "tooncrafter_512": 0.7}


def released_schedule(layout, sd):
    """Fill the schedule buffers of a v-prediction DynamiCrafter layout as the released files hold them."""
    floor = DYNAMICRAFTER_SCALE_FLOOR.get(layout)
    if floor is None:
        return sd
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    root = torch.cumprod(1 - betas, 0).sqrt()
    root = (root - root[-1]) * root[0] / (root[0] - root[-1])  # zero terminal SNR
    sd["alphas_cumprod"] = (root ** 2).float()
    sd["scale_arr"] = torch.cat([torch.linspace(1.0, floor, 400), torch.full((1000,), floor)])
    return sd


def meta_state_dict(layout):
    sd = {}
    with open(reference_path(f"keys/{layout}.keys.tsv")) as f:
        for line in f:
            name, shape, _dtype = line.rstrip("\n").split("\t")
            dims = [int(d) for d in shape.strip("[]").split(",") if d.strip()]
            sd[name] = torch.empty(dims, device="meta")
    return sd


def shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def assert_same_layout(received, module_sd, what):
    received, built = shapes(received), shapes(module_sd)
    assert sorted(set(received) - set(built)) == [], f"{what}: checkpoint tensors the model has no parameter for"
    assert sorted(set(built) - set(received)) == [], f"{what}: model parameters the checkpoint does not provide"
    wrong = {k: (received[k], built[k]) for k in received if received[k] != built[k]}
    assert wrong == {}, f"{what}: shape mismatches"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_built_model_matches_released_layout(pack, layout):
    import comfy.clip_model
    import comfy.clip_vision
    import comfy.ops
    import comfy.utils
    from comfy.ldm.models.autoencoder import AutoencoderKL
    ckpt = comfy_host.pack("vc_models.checkpoint")
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    unet_mod = comfy_host.pack("vc_models.unet")
    encoders = comfy_host.pack("vc_models.encoders")
    projector_mod = comfy_host.pack("vc_models.projector")

    sd = released_schedule(layout, meta_state_dict(layout))
    info = ckpt.inspect_checkpoint(sd, layout)
    assert info.variant == LAYOUTS[layout]
    if layout.startswith(("dynamicrafter", "tooncrafter")):
        v_model = layout in DYNAMICRAFTER_SCALE_FLOOR
        assert (info.parameterization, info.zero_snr) == (("v", True) if v_model else ("eps", False))
    ignored = sorted(k for k in sd if ckpt_file.is_ignored_key(k))
    parts = ckpt_file.split_components({k: v for k, v in sd.items() if not ckpt_file.is_ignored_key(k)})
    used_prefixes = [ckpt_file.UNET_PREFIX, ckpt_file.VAE_PREFIX, ckpt_file.TEXT_PREFIX, ckpt_file.VISION_PREFIX, ckpt_file.PROJECTOR_PREFIX]
    top_level = sorted(k for k in sd if not k.startswith(tuple(used_prefixes)) and k not in ignored)
    assert set(top_level) <= set(ckpt_file.SCHEDULE_KEYS), top_level
    for key in ignored:  # nothing the model computes with is ignored
        assert key in ckpt_file.DERIVED_SCHEDULE_KEYS or key.startswith((ckpt_file.VISION_PREFIX, ckpt_file.TEXT_PREFIX)), key

    ops = comfy.ops.disable_weight_init
    unet = unet_mod.VideoCrafterUNet(info.unet, device="meta", operations=ops)
    assert_same_layout(parts[ckpt_file.UNET_PREFIX], unet.state_dict(), "UNet")

    with torch.device("meta"):
        vae_params = encoders.vae_config(parts[ckpt_file.VAE_PREFIX])["params"]
        vae = AutoencoderKL(**vae_params)
        if info.entry.family.dual_reference:  # DualRefVAE's decoder (post_quant_conv stays in the file and the model, unused)
            dualref = comfy_host.pack("vc_models.dualref_vae")
            vae.decoder = dualref.DualRefDecoder(dualref.fusion_levels(parts[ckpt_file.VAE_PREFIX]), **vae_params["ddconfig"])
    assert_same_layout(parts[ckpt_file.VAE_PREFIX], vae.state_dict(), "VAE")

    text_sd = parts[ckpt_file.TEXT_PREFIX]
    text_model = comfy.clip_model.CLIPTextModel(encoders.text_config(text_sd), torch.float32, "meta", ops)
    converted = comfy.utils.clip_text_transformers_convert({f"t.{k}": v for k, v in text_sd.items()}, "t.", "")
    expected = {k: v for k, v in text_model.state_dict().items() if not k.endswith("position_ids")}
    assert_same_layout(converted, expected, "text encoder")

    if info.unet.image_cross_attention:
        visual = {k[len("visual."):]: v for k, v in parts[ckpt_file.VISION_PREFIX].items()}
        vision_model = comfy.clip_model.CLIPVisionModelProjection(encoders.vision_config(visual), torch.float32, "meta", ops)
        converted = comfy.clip_vision.convert_to_transformers({f"visual.{k}": v for k, v in visual.items()}, "visual.")
        assert_same_layout(converted, vision_model.state_dict(), "CLIP vision")
        projector = projector_mod.ImageProjector(projector_mod.ProjectorConfig.from_state_dict(parts[ckpt_file.PROJECTOR_PREFIX]),
                                                 device="meta", operations=ops)
        assert_same_layout(parts[ckpt_file.PROJECTOR_PREFIX], projector.state_dict(), "projector")
    else:
        assert not parts[ckpt_file.VISION_PREFIX] and not parts[ckpt_file.PROJECTOR_PREFIX]


def test_dynamicrafter_256_released_names(pack):
    """The released 256 file spells the frame-stride embedding `framestride_embed.*`: it loads as `fps_embedding.*`."""
    ckpt = comfy_host.pack("vc_models.checkpoint")
    sd = meta_state_dict("dynamicrafter_256_v1.0")
    released = {k.replace(".fps_embedding.", ".framestride_embed."): v for k, v in sd.items()}
    assert sum(".framestride_embed." in k for k in released) == 4
    info = ckpt.inspect_checkpoint(released, "dynamicrafter_256.ckpt")
    assert info.variant == "dc_256" and info.parameterization == "eps" and info.unet.fps_cond
    assert info.unet.in_channels == 8 and info.unet.image_attention_alpha
    assert sorted(released) == sorted(sd)
