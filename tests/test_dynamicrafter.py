"""DynamiCrafter, driven through the nodes a user runs, against the original implementation's outputs.

Tolerances are the reference README's: relative L2 <= 1e-4 for embeddings and single UNet calls,
<= 1e-3 for sampled latents and decoded frames.
"""
import os

import pytest
import torch

import comfy_host
from model_util import model_output, run_node
from conftest import write_ckpt, load_golden, rel_err

EMBED_TOL = 1e-4
SAMPLE_TOL = 1e-3
SCALE_FACTOR = 0.18215
# golden case -> checkpoint file it runs on (the interpolation goldens use the 512 weights)
CASES = {"tiny_dc_256": "tiny_dc_256", "tiny_dc_512": "tiny_dc_512", "tiny_dc_512_interp": "tiny_dc_512"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """See conftest.one_torch_thread."""




@pytest.fixture(scope="module")
def dc_files(models_dir):
    """Each case's checkpoint as .safetensors (linked), Lightning .ckpt and DeepSpeed dump; the
    interpolation case under a name with 'interp', as the released file is saved."""
    import safetensors.torch
    files = {}
    for case, weights in CASES.items():
        src = os.path.join(comfy_host.GOLDEN, weights + ".safetensors")
        if not os.path.exists(models_dir / f"{case}.safetensors"):
            os.symlink(src, models_dir / f"{case}.safetensors")
        files[case] = {"safetensors": f"{case}.safetensors"}
    for weights in ("tiny_dc_256", "tiny_dc_512"):
        sd = safetensors.torch.load_file(os.path.join(comfy_host.GOLDEN, weights + ".safetensors"))
        write_ckpt(sd, models_dir / f"{weights}.ckpt")
        write_ckpt(sd, models_dir / f"{weights}.deepspeed.ckpt", deepspeed=True)
        files[weights].update(ckpt=f"{weights}.ckpt", deepspeed=f"{weights}.deepspeed.ckpt")
    return files


def golden_image(golden, key):
    """The golden image [1, 3, H, W] in [-1, 1] as a ComfyUI IMAGE."""
    return ((golden[key] + 1) / 2).movedim(1, -1)


def run_pipeline(pack, ckpt_name, meta, golden, frames=None):
    """Loader, CLIP Text Encode, DynamiCrafter Conditioning: what a user's graph does before sampling."""
    import nodes as core
    mappings = pack.vc_nodes.NODE_CLASSES
    inputs = meta["inputs"]
    model, clip, vae, clip_vision, projector = mappings["VideoCrafterCheckpointLoader"].execute(ckpt_name, "default")
    (positive,) = core.CLIPTextEncode().encode(clip, inputs["prompt"])
    (negative,) = core.CLIPTextEncode().encode(clip, inputs["negative_prompt"])
    out = {"text_cond": positive[0][0], "text_uncond": negative[0][0], "model": model, "vae": vae, "clip": clip,
           "clip_vision": clip_vision, "projector": projector}
    interp = meta["mode"] == "interp"
    end = golden_image(golden, "cond_image_last") if interp else None
    positive, negative, latent = mappings["DynamiCrafterConditioning"].execute(
        positive, negative, vae, clip_vision, projector, golden_image(golden, "cond_image"),
        "interpolate" if interp else "i2v", inputs["width"], inputs["height"], frames or inputs["frames"], 1,
        inputs["fs"], end_image=end)
    families = comfy_host.pack("vc_models.families")
    out["image_tokens"] = comfy_host.pack("vc_models.encoders").image_tokens(clip_vision, golden_image(golden, "cond_image"))
    out["image_emb"] = positive[0][1][families.IMAGE_TOKENS_KEY]
    out["image_uncond_emb"] = negative[0][1][families.IMAGE_TOKENS_KEY]
    out["concat_latent"] = positive[0][1][families.CONCAT_LATENT_KEY] * SCALE_FACTOR
    out["concat_latent_negative"] = negative[0][1][families.CONCAT_LATENT_KEY] * SCALE_FACTOR
    out.update(positive=positive, negative=negative, latent=latent)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_embeddings_and_unet_calls(pack, dc_files, case):
    golden, meta = load_golden(case)
    out = run_pipeline(pack, dc_files[case]["safetensors"], meta, golden)
    errors = {key: rel_err(out[key], golden[key]) for key in
              ("text_cond", "text_uncond", "image_tokens", "image_emb", "image_uncond_emb", "concat_latent")}
    errors["concat_latent_negative"] = rel_err(out["concat_latent_negative"], golden["concat_latent"])
    prefix = "v" if meta["parameterization"] == "v" else "eps"
    for t in (999, 500, 1):
        errors[f"{prefix}_t{t}"] = rel_err(model_output(out["model"], out["positive"], golden["x_T"], t), golden[f"{prefix}_t{t}"])
    print(case, errors)
    assert all(v <= EMBED_TOL for v in errors.values()), errors


SCHEDULERS = {"uniform": "videocrafter_uniform", "uniform_trailing": "videocrafter_trailing"}


def sampling_model(pack, model, meta):
    """The MODEL as the workflows sample it: guidance rescale where the original applies one."""
    rescale = meta["sampling"]["guidance_rescale"]
    if rescale:
        (model,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterGuidanceRescale"].execute(model, rescale)
    return model


@pytest.fixture(scope="module")
def pipelines(pack, dc_files):
    """Each golden case's graph up to the sampler, from the .safetensors (shared by the sampling tests)."""
    cache = {}

    def get(case):
        if case not in cache:
            golden, meta = load_golden(case)
            cache[case] = (run_pipeline(pack, dc_files[case]["safetensors"], meta, golden), golden, meta)
        return cache[case]
    return get


@pytest.mark.parametrize("case", sorted(CASES))
def test_ddim_sampling_and_decode(pack, pipelines, case):
    """'videocrafter_ddim' with the original's spacing: eta 0 through the VideoCrafter KSampler, eta 1 (the
    sampler's default) through the core KSampler (the goldens' per-step noise on every host); the decoded
    eta-0 frames."""
    import nodes as core
    out, golden, meta = pipelines(case)
    inputs = meta["inputs"]
    model = sampling_model(pack, out["model"], meta)
    scheduler = SCHEDULERS[meta["sampling"]["timestep_spacing"]]
    (eta0,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"].execute(
        model, out["positive"], out["negative"], out["latent"], seed=inputs["seed"], steps=inputs["ddim_steps"],
        cfg=inputs["cfg"], sampler_name="videocrafter_ddim", scheduler=scheduler, eta=0.0, denoise=1.0)
    (eta1,) = core.KSampler().sample(model, inputs["seed"], inputs["ddim_steps"], inputs["cfg"], "videocrafter_ddim",
                                     scheduler, out["positive"], out["negative"], out["latent"], denoise=1.0)
    errors = {eta: rel_err(samples["samples"] * SCALE_FACTOR, golden[f"ddim_eta{eta}_latent"])
              for eta, samples in ((0, eta0), (1, eta1))}
    (frames,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterVAEDecode"].execute(eta0, out["vae"], frames_per_batch=8)
    video = golden["ddim_eta0_video"]
    b, _, t, h, w = video.shape
    expected = ((video + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).reshape(b * t, h, w, 3)
    errors["frames"] = rel_err(frames, expected)
    print(case, errors)
    assert all(v <= SAMPLE_TOL for v in errors.values()), errors


@pytest.mark.parametrize("case,sampler_name,scheduler", [("tiny_dc_256", "euler", "normal"),
                                                          ("tiny_dc_512", "dpmpp_2m", "karras")])
def test_core_samplercustom_runs_on_dynamicrafter(pack, pipelines, case, sampler_name, scheduler):
    """Any ComfyUI sampler drives the same MODEL and conditionings (eps and v-prediction models)."""
    from comfy_extras.nodes_custom_sampler import SamplerCustom, KSamplerSelect, BasicScheduler
    out, golden, meta = pipelines(case)
    (sampler,) = run_node(KSamplerSelect, sampler_name)
    (sigmas,) = run_node(BasicScheduler, out["model"], scheduler, 3, 1.0)
    result = run_node(SamplerCustom, out["model"], True, 1, 7.5, out["positive"], out["negative"], sampler, sigmas,
                      out["latent"])
    latent = result[0]["samples"]
    assert latent.shape == golden["x_T"].shape and torch.isfinite(latent).all() and latent.abs().sum() > 0


def test_two_guidance_scales(pack, pipelines):
    """The original's text + image guidance (multiple_cond_cfg, with its guidance rescale on the whole result):
    DynamiCrafter Two-Scale Guider + core SamplerCustomAdvanced + BasicScheduler + VideoCrafter DDIM Sampler."""
    from comfy_extras.nodes_custom_sampler import SamplerCustomAdvanced, BasicScheduler, RandomNoise
    out, golden, meta = pipelines("tiny_dc_512")
    inputs = meta["inputs"]
    mappings = pack.vc_nodes.NODE_CLASSES
    (sampler,) = mappings["VideoCrafterDDIMSampler"].execute(0.0)
    (noise,) = run_node(RandomNoise, inputs["seed"])
    (sigmas,) = run_node(BasicScheduler, out["model"], "videocrafter_trailing", inputs["ddim_steps"], 1.0)
    (guider,) = mappings["DynamiCrafterTwoScaleGuider"].execute(
        out["model"], out["positive"], out["negative"], inputs["cfg"], inputs["cfg_img"], meta["sampling"]["guidance_rescale"])
    samples, _ = run_node(SamplerCustomAdvanced, noise, guider, sampler, sigmas, out["latent"])
    err = rel_err(samples["samples"] * SCALE_FACTOR, golden["ddim_multicond_eta0_latent"])
    print("two-scale latent", err)
    assert err <= SAMPLE_TOL
    # the two scales matter: one-scale guidance is far from it
    assert rel_err(samples["samples"] * SCALE_FACTOR, golden["ddim_eta0_latent"]) > 10 * SAMPLE_TOL


@pytest.mark.parametrize("fmt", ["ckpt", "deepspeed"])
@pytest.mark.parametrize("weights", ["tiny_dc_256", "tiny_dc_512"])
def test_pickled_checkpoints(pack, dc_files, weights, fmt):
    """The released .ckpt layout and a DeepSpeed dump give the same embeddings and UNet calls."""
    golden, meta = load_golden(weights)
    out = run_pipeline(pack, dc_files[weights][fmt], meta, golden)
    prefix = "v" if meta["parameterization"] == "v" else "eps"
    errors = {key: rel_err(out[key], golden[key]) for key in ("text_cond", "image_emb", "concat_latent")}
    errors[f"{prefix}_t500"] = rel_err(model_output(out["model"], out["positive"], golden["x_T"], 500), golden[f"{prefix}_t500"])
    assert all(v <= EMBED_TOL for v in errors.values()), errors


def shuffle_token_groups(conditioning, key):
    """The same conditioning with the 16 groups of 16 image tokens in another order."""
    tokens = conditioning[0][1][key]
    order = torch.arange(tokens.shape[1]).view(16, 16).flip(0).reshape(-1)
    return [[conditioning[0][0], {**conditioning[0][1], key: tokens[:, order]}]]


def test_frame_counts_other_than_16(pack, pipelines, dc_files):
    """At 16 frames frame i attends to token group i; at any other length every frame attends to all 256
    tokens as the original does (so the order of the groups no longer matters); 12 frames sample."""
    out16, golden, meta = pipelines("tiny_dc_512")
    inputs = meta["inputs"]
    key = comfy_host.pack("vc_models.families").IMAGE_TOKENS_KEY
    x16 = golden["x_T"]
    base = model_output(out16["model"], out16["positive"], x16, 500)
    shuffled = model_output(out16["model"], shuffle_token_groups(out16["positive"], key), x16, 500)
    assert rel_err(shuffled, base) > 1e-3  # per-frame groups: their order matters

    out12 = run_pipeline(pack, dc_files["tiny_dc_512"]["safetensors"], meta, golden, frames=12)
    assert out12["concat_latent"].shape[2] == 12
    assert rel_err(out12["concat_latent"], golden["concat_latent"][:, :, :12]) <= EMBED_TOL
    x12 = x16[:, :, :12].contiguous()
    base = model_output(out12["model"], out12["positive"], x12, 500)
    shuffled = model_output(out12["model"], shuffle_token_groups(out12["positive"], key), x12, 500)
    assert rel_err(shuffled, base) < 1e-5  # all 256 tokens for every frame: a set, order-free

    (samples,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"].execute(
        out12["model"], out12["positive"], out12["negative"], out12["latent"], seed=inputs["seed"], steps=2,
        cfg=inputs["cfg"], sampler_name="videocrafter_ddim", scheduler="videocrafter_trailing", eta=1.0, denoise=1.0)
    assert samples["samples"].shape == (1, 4, 12, 8, 16) and torch.isfinite(samples["samples"]).all()


def test_image_size_and_batch_handling(pack, pipelines):
    """A start image of another size is scaled and centre-cropped to width x height (here a 2x nearest-neighbour
    enlargement comes back exactly); one image serves every video of the batch; a mismatched batch is refused."""
    out, golden, meta = pipelines("tiny_dc_256")
    inputs = meta["inputs"]
    key = comfy_host.pack("vc_models.families").CONCAT_LATENT_KEY
    image = golden_image(golden, "cond_image")
    large = image.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    node = pack.vc_nodes.NODE_CLASSES["DynamiCrafterConditioning"]
    positive, negative, latent = node.execute(out["positive"], out["negative"], out["vae"], out["clip_vision"],
                                             out["projector"], large, "i2v", inputs["width"], inputs["height"], 4, 2,
                                             inputs["fs"])
    assert latent["samples"].shape == (2, 4, 4, 8, 8)
    concat = positive[0][1][key] * SCALE_FACTOR
    assert concat.shape == (2, 4, 4, 8, 8)
    assert rel_err(concat, golden["concat_latent"][:, :, :4].expand(2, -1, -1, -1, -1)) <= EMBED_TOL
    with pytest.raises(ValueError, match="holds 3 images but batch_size is 2"):
        node.execute(out["positive"], out["negative"], out["vae"], out["clip_vision"], out["projector"],
                    image.expand(3, -1, -1, -1), "i2v", inputs["width"], inputs["height"], 4, 2, inputs["fs"])
