"""Faithfulness: the pack, driven through its nodes, against the original implementation's outputs.

Tolerances are the ones ../shared/reference/README.md gives: relative L2 error at most 1e-4 for
embeddings and single UNet calls, 1e-3 for sampled latents and decoded frames.
"""
import os

import pytest
import torch

import comfy_host
from model_util import model_output
from conftest import write_ckpt, VARIANTS, load_golden, rel_err

EMBED_TOL = 1e-4
SAMPLE_TOL = 1e-3
SCALE_FACTOR = 0.18215




@pytest.fixture(scope="module")
def checkpoint_files(models_dir):
    """The same tensors as the golden .safetensors, also as a Lightning .ckpt and a DeepSpeed dump."""
    import safetensors.torch
    names = {}
    for name in VARIANTS:
        sd = safetensors.torch.load_file(os.path.join(comfy_host.GOLDEN, name + ".safetensors"))
        write_ckpt(sd, models_dir / f"{name}.ckpt")
        write_ckpt(sd, models_dir / f"{name}.deepspeed.ckpt", deepspeed=True)
        names[name] = {"safetensors": f"{name}.safetensors", "ckpt": f"{name}.ckpt",
                       "deepspeed": f"{name}.deepspeed.ckpt"}
    return names


def run_pipeline(pack, ckpt_name, meta, golden):
    """Everything a user's graph does, node by node, with the golden case's inputs."""
    import nodes as core
    mappings = pack.vc_nodes.NODE_CLASSES
    inputs = meta["inputs"]
    model, clip, vae, clip_vision, projector = mappings["VideoCrafterCheckpointLoader"].execute(ckpt_name, "default")
    (positive,) = core.CLIPTextEncode().encode(clip, inputs["prompt"])
    (negative,) = core.CLIPTextEncode().encode(clip, inputs["negative_prompt"])
    positive, negative = mappings["VideoCrafterFPSConditioning"].execute(positive, negative, inputs["fps"])
    out = {"text_cond": positive[0][0], "text_uncond": negative[0][0], "model": model, "vae": vae}
    if "cond_image" in golden:
        image = ((golden["cond_image"] + 1) / 2).movedim(1, -1)
        encoders = comfy_host.pack("vc_models.encoders")
        out["image_tokens"] = encoders.image_tokens(clip_vision, image)
        positive, negative = mappings["VideoCrafterImageEncode"].execute(clip_vision, projector, image, positive, negative)
        key = comfy_host.pack("vc_models.families").IMAGE_TOKENS_KEY
        out["image_emb"], out["image_uncond_emb"] = positive[0][1][key], negative[0][1][key]
    (latent,) = mappings["EmptyVideoCrafterLatent"].execute(inputs["width"], inputs["height"], inputs["frames"], 1)
    out.update(positive=positive, negative=negative, latent=latent)
    return out


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("fmt", ["safetensors", "ckpt", "deepspeed"])
def test_golden_parity(pack, checkpoint_files, name, fmt):
    golden, meta = load_golden(name)
    inputs = meta["inputs"]
    out = run_pipeline(pack, checkpoint_files[name][fmt], meta, golden)
    errors = {}
    for key in ("text_cond", "text_uncond", "image_tokens", "image_emb", "image_uncond_emb"):
        if key in golden:
            errors[key] = rel_err(out[key], golden[key])
    for t in (999, 500, 1):
        errors[f"eps_t{t}"] = rel_err(model_output(out["model"], out["positive"], golden["x_T"], t), golden[f"eps_t{t}"])
    assert all(v <= EMBED_TOL for v in errors.values()), errors
    if fmt != "safetensors":
        return  # the same tensors: sampling and decoding are covered once, from the .safetensors

    sampler = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"]
    for eta in (0.0, 1.0):
        (samples,) = sampler.execute(out["model"], out["positive"], out["negative"], out["latent"], seed=inputs["seed"],
                                    steps=inputs["ddim_steps"], cfg=inputs["cfg"], sampler_name="videocrafter_ddim",
                                    scheduler="videocrafter_uniform", eta=eta, denoise=1.0)
        # a LATENT holds VAE-space latents; the original returns model-space ones
        err = rel_err(samples["samples"] * SCALE_FACTOR, golden[f"ddim_eta{int(eta)}_latent"])
        assert err <= SAMPLE_TOL, (eta, err)
        if eta == 0.0:
            eta0 = samples

    (frames,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterVAEDecode"].execute(eta0, out["vae"], frames_per_batch=3)
    video = golden["ddim_eta0_video"]  # [B, 3, T, H, W] in about [-1, 1]
    b, _, t, h, w = video.shape
    assert frames.shape == (b * t, h, w, 3)
    expected = ((video + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).reshape(b * t, h, w, 3)
    assert rel_err(frames, expected) <= SAMPLE_TOL


def test_bf16_weights_stay_close(pack, models_dir):
    """weight_dtype bf16 (bf16 compute on CPUs with bf16 instructions) stays near the reference."""
    golden, meta = load_golden("tiny_t2v_v2")
    model, clip, *_ = pack.vc_nodes.NODE_CLASSES["VideoCrafterCheckpointLoader"].execute("tiny_t2v_v2.safetensors", "bf16")
    import nodes as core
    (positive,) = core.CLIPTextEncode().encode(clip, meta["inputs"]["prompt"])
    positive, _ = pack.vc_nodes.NODE_CLASSES["VideoCrafterFPSConditioning"].execute(positive, positive, meta["inputs"]["fps"])
    err = rel_err(model_output(model, positive, golden["x_T"], 500), golden["eps_t500"])
    assert err < 0.05, err


def test_core_ksampler_and_samplercustom_drive_the_same_model(pack, models_dir):
    """The core KSampler (eta of videocrafter_ddim defaults to the original's 1.0; its per-step noise is the
    goldens' on every host, vc_models.sampling.seeded_step_noise) reproduces the original sampler; SamplerCustom
    with any other sampler runs on the same MODEL and conditionings."""
    import nodes as core
    from comfy_extras.nodes_custom_sampler import SamplerCustom, KSamplerSelect, BasicScheduler
    golden, meta = load_golden("tiny_i2v_v1")
    inputs = meta["inputs"]
    out = run_pipeline(pack, "tiny_i2v_v1.safetensors", meta, golden)
    (samples,) = core.KSampler().sample(out["model"], inputs["seed"], inputs["ddim_steps"], inputs["cfg"],
                                        "videocrafter_ddim", "videocrafter_uniform", out["positive"], out["negative"],
                                        out["latent"], denoise=1.0)
    assert rel_err(samples["samples"] * SCALE_FACTOR, golden["ddim_eta1_latent"]) <= SAMPLE_TOL

    def run(node, *args):  # core nodes of the new API return NodeOutput, older ones tuples
        result = node.execute(*args) if hasattr(node, "execute") else node.sample(*args)
        return result.result if hasattr(result, "result") else result

    (sampler,) = run(KSamplerSelect, "dpmpp_2m")
    (sigmas,) = run(BasicScheduler, out["model"], "karras", 6, 1.0)
    result = run(SamplerCustom, out["model"], True, 1, 7.5, out["positive"], out["negative"], sampler, sigmas, out["latent"])
    latent = result[0]["samples"]
    assert latent.shape == out["latent"]["samples"].shape and torch.isfinite(latent).all() and latent.abs().sum() > 0
