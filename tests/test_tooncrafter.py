"""ToonCrafter, driven through the nodes a user runs (the DynamiCrafter interpolation graph), against the
original implementation's outputs (`tiny_toon_512.case1`: tiny_dc_512 + the dual-reference decoder delta).

Tolerances are the reference README's: relative L2 <= 1e-4 for embeddings, single UNet calls and the
decoder's reference features, <= 1e-3 for sampled latents and decoded frames.
"""
import os

import pytest
import torch

import comfy_host
from conftest import write_ckpt, load_golden, rel_err, tiny_toon_state_dict
from test_dynamicrafter import golden_image, model_output, run_pipeline, sampling_model, SCHEDULERS

EMBED_TOL = 1e-4
SAMPLE_TOL = 1e-3
SCALE_FACTOR = 0.18215
CASE = "tiny_toon_512"
FORMATS = ("safetensors", "ckpt", "deepspeed")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """See conftest.one_torch_thread."""


@pytest.fixture(scope="module")
def toon_files(models_dir, tiny_toon_file):
    """The tiny ToonCrafter as .safetensors, released .ckpt and DeepSpeed dump, in models/videocrafter."""
    sd = tiny_toon_state_dict()
    names = {fmt: f"{CASE}.{ext}" for fmt, ext in zip(FORMATS, ("safetensors", "ckpt", "deepspeed.ckpt"))}
    assert names["safetensors"] == tiny_toon_file
    write_ckpt(sd, models_dir / names["ckpt"])
    write_ckpt(sd, models_dir / names["deepspeed"], deepspeed=True)
    return names


def toon_meta():
    golden, meta = load_golden(CASE)
    return golden, {**meta, "mode": "interp"}  # ToonCrafter is the interpolation graph


def key_frames(golden):
    return torch.cat([golden_image(golden, "cond_image"), golden_image(golden, "cond_image_last")])


def as_image(frames):
    """Raw decoder frames [T, 3, H, W] in about [-1, 1] as ComfyUI IMAGE frames (what the decode node returns)."""
    return ((frames + 1) / 2).clamp(0, 1).movedim(1, -1)


@pytest.fixture(scope="module")
def pipeline(pack, toon_files):
    golden, meta = toon_meta()
    return run_pipeline(pack, toon_files["safetensors"], meta, golden), golden, meta


@pytest.mark.parametrize("fmt", FORMATS)
def test_loads_and_conditions_like_the_original(pack, toon_files, fmt):
    """Every released format is detected as ToonCrafter (from its decoder tensors, not its name) with the
    original's defaults; embeddings, concat latent, UNet calls and the decoder's reference features match."""
    golden, meta = toon_meta()
    out = run_pipeline(pack, toon_files[fmt], meta, golden)
    info = out["model"].model.info
    d = info.entry.defaults
    assert (info.variant, d.height, d.width, d.fps) == ("toon_512", 320, 512, 10)
    assert isinstance(out["vae"], comfy_host.pack("vc_models.dualref_vae").DualRefVAE)
    errors = {key: rel_err(out[key], golden[key]) for key in
              ("text_cond", "text_uncond", "image_tokens", "image_emb", "image_uncond_emb", "concat_latent")}
    errors["concat_latent_negative"] = rel_err(out["concat_latent_negative"], golden["concat_latent"])
    for t in (999, 500, 1):
        errors[f"v_t{t}"] = rel_err(model_output(out["model"], out["positive"], golden["x_T"], t), golden[f"v_t{t}"])
    reference = out["vae"].reference_features(key_frames(golden))
    for i, features in enumerate(reference):
        errors[f"ref_context_{i}"] = rel_err(features.transpose(1, 2), golden[f"ref_context_{i}"])
    print(fmt, errors)
    assert all(v <= EMBED_TOL for v in errors.values()), errors


def test_sampling_and_dual_reference_decode(pack, pipeline):
    """DynamiCrafter Conditioning (interpolate) -> samplers -> VideoCrafter VAE Decode: the eta 0 / 1 latents,
    then the decode of the eta-1 latent is the original's `frames_final` (dual-reference decode with the middle
    frames pasted from the 14-frame decode), not the plain SD VAE's frames."""
    import nodes as core
    out, golden, meta = pipeline
    inputs = meta["inputs"]
    model = sampling_model(pack, out["model"], meta)
    scheduler = SCHEDULERS[meta["sampling"]["timestep_spacing"]]
    (eta0,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"].execute(
        model, out["positive"], out["negative"], out["latent"], seed=inputs["seed"], steps=inputs["ddim_steps"],
        cfg=inputs["cfg"], sampler_name="videocrafter_ddim", scheduler=scheduler, eta=0.0, denoise=1.0)
    (eta1,) = core.KSampler().sample(model, inputs["seed"], inputs["ddim_steps"], inputs["cfg"], "videocrafter_ddim",
                                     scheduler, out["positive"], out["negative"], out["latent"], denoise=1.0)
    errors = {f"ddim_eta{eta}_latent": rel_err(samples["samples"] * SCALE_FACTOR, golden[f"ddim_eta{eta}_latent"])
              for eta, samples in ((0, eta0), (1, eta1))}
    (frames,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterVAEDecode"].execute(eta1, out["vae"])
    errors["frames_final"] = rel_err(frames, as_image(golden["frames_final"]))
    middle = [7, 8]
    others = [i for i in range(16) if i not in middle]
    errors["frames_dualref (not pasted)"] = rel_err(frames[others], as_image(golden["frames_dualref"][others]))
    print(errors)
    assert all(v <= SAMPLE_TOL for v in errors.values()), errors
    # the paste matters, and this is not the plain VAE decode
    assert rel_err(frames[middle], as_image(golden["frames_dualref"][middle])) > 5 * SAMPLE_TOL  # 0.0064
    assert rel_err(frames, as_image(golden["frames_plain_vae"])) > 0.1


def test_decoder_alone_on_the_golden_latent(pipeline):
    """The raw decoder output (before clamping) on the original's eta-1 latent and reference features:
    `frames_dualref` for one 16-frame call, `frames_final` with the paste."""
    out, golden, _ = pipeline
    vae = out["vae"]
    z = (golden["ddim_eta1_latent"][0] / SCALE_FACTOR).transpose(0, 1)
    reference = [golden[f"ref_context_{i}"].transpose(1, 2) for i in range(5)]
    with torch.no_grad():
        single = vae.first_stage_model.decoder(z, reference, z.shape[0])
        final = vae.decode_frames(z, reference)
    errors = {"frames_dualref": rel_err(single, golden["frames_dualref"]), "frames_final": rel_err(final, golden["frames_final"])}
    assert all(v <= SAMPLE_TOL for v in errors.values()), errors


def test_key_frames_from_the_decode_node_inputs(pack, pipeline):
    """A latent from elsewhere (no key frames) decodes with the key frames connected to the node itself, to the
    same frames as with those the LATENT carries."""
    out, golden, _ = pipeline
    decode = pack.vc_nodes.NODE_CLASSES["VideoCrafterVAEDecode"]
    latent = golden["ddim_eta1_latent"] / SCALE_FACTOR
    carried = {**out["latent"], "samples": latent}
    (from_latent,) = decode.execute(carried, out["vae"])
    (from_inputs,) = decode.execute({"samples": latent}, out["vae"], start_image=golden_image(golden, "cond_image"),
                                   end_image=golden_image(golden, "cond_image_last"))
    assert torch.equal(from_latent, from_inputs)
    assert rel_err(from_inputs, as_image(golden["frames_final"])) <= SAMPLE_TOL


def test_decodes_without_key_frames_are_refused(pack, pipeline, models_dir):
    """ToonCrafter's VAE through the core VAE Decode (Tiled), or a latent without key frames: an error that says what to
    connect; key-frame inputs on a plain VAE: an error rather than a silent no-op."""
    import nodes as core
    out, golden, _ = pipeline
    latent = {"samples": golden["ddim_eta1_latent"] / SCALE_FACTOR}
    with pytest.raises(ValueError, match="needs the two key frames.*VideoCrafter VAE Decode"):
        core.VAEDecode().decode(out["vae"], {**out["latent"], **latent})
    with pytest.raises(ValueError, match="needs the two key frames"):
        core.VAEDecodeTiled().decode(out["vae"], latent, 512, 64)
    decode = pack.vc_nodes.NODE_CLASSES["VideoCrafterVAEDecode"]
    with pytest.raises(ValueError, match="the LATENT carries none.*DynamiCrafter Conditioning.*start_image and end_image"):
        decode.execute(latent, out["vae"])
    with pytest.raises(ValueError, match="both start_image and end_image"):
        decode.execute(latent, out["vae"], start_image=golden_image(golden, "cond_image"))
    import safetensors.torch
    ckpt = comfy_host.pack("vc_models.checkpoint")
    dc_512 = safetensors.torch.load_file(os.path.join(comfy_host.GOLDEN, "tiny_dc_512.safetensors"))
    plain_vae = comfy_host.pack("vc_models.encoders").build_vae(ckpt.split_components(dc_512)[ckpt.VAE_PREFIX])
    with pytest.raises(ValueError, match="read by ToonCrafter's decoder only"):
        decode.execute(latent, plain_vae, start_image=golden_image(golden, "cond_image"),
                      end_image=golden_image(golden, "cond_image_last"))


def test_downloader_knows_the_released_file(pack):
    """The downloader's id for the released ToonCrafter file (Hugging Face Doubiiu/ToonCrafter, model.ckpt)."""
    model = comfy_host.pack("vc_models.download").released_model("toon_512")
    release = model.release
    assert (release.repo, release.file, release.bare_unet) == ("Doubiiu/ToonCrafter", "model.ckpt", False)


def test_dual_reference_decoder_on_another_unet_is_refused(pack):
    """A dual-reference decoder beside a DynamiCrafter 256 UNet (no released model pairs them) is refused by name,
    not loaded with a plain VAE that would drop the decoder's temporal layers."""
    ckpt = comfy_host.pack("vc_models.checkpoint")
    layout = comfy_host.pack("vc_models.checkpoint_file").read_layout(os.path.join(comfy_host.GOLDEN, "tiny_dc_256.safetensors"))
    toon_keys = {k: v for k, v in tiny_toon_state_dict().items() if k.startswith("first_stage_model.decoder.")
                 and ".time_stack." in k}
    assert toon_keys
    with pytest.raises(ckpt.CheckpointError, match="dual-reference VAE decoder .*DynamiCrafter image animation 256x256"):
        ckpt.inspect_checkpoint({**layout, **toon_keys}, "mixed.safetensors")
