"""The training objective against the originals' own training-loss code (../shared/reference README, "Training
objective"): every record of golden/tiny_dc_512.train_case1 (v on the zero-SNR schedule with rescale, concat latent
of the conditioning frame, image tokens, the one-draw text/image dropout, fs) and golden/tiny_t2v_v2.train_case1
(eps with the latent scale, text dropout), fed the golden's fixed batch and forced draws through
`Objective.terms`, the function every training step calls."""
import os

import pytest
import torch

import comfy_host
from conftest import load_golden, rel_err

TOL = 1e-4  # the README's tolerance for embeddings and single UNet calls


@pytest.fixture(scope="module")
def mods(pack, one_torch_thread):
    return {"training": comfy_host.pack("vc_train.comfy_models"), "families": comfy_host.pack("vc_train.families"),
            "objectives": comfy_host.pack("vc_models.objectives"), "trainer": comfy_host.pack("vc_train.trainer"), "config": comfy_host.pack("vc_train.config")}


def golden_case(mods, variant):
    golden, meta = load_golden(variant, "train_case1")
    sd = comfy_host.pack("vc_models.checkpoint_file").load_state_dict(os.path.join(comfy_host.GOLDEN, f"{variant}.safetensors"))
    # the tiny files store their schedule in float16; a released file in float32: the golden's float32 buffers,
    # as the README says, read the way the trainer reads a checkpoint's
    sd.update({k: golden[k] for k in ("alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")})
    models = mods["training"].VideoCrafterTrainingModels(sd, f"{variant}.safetensors")
    models.unet.eval()  # the goldens ran the UNet in eval mode (training runs dropout 0.1)
    schedule = mods["trainer"].noise_schedule(models)
    inputs = meta["inputs"]
    cfg = mods["config"].TrainConfig(text_dropout=inputs["uncond_prob"], image_dropout=inputs["uncond_prob"])
    objective = mods["families"].objective_for(models, schedule, cfg)
    frames = ((golden["x0_video"][0] + 1) / 2).permute(1, 2, 3, 0)  # [T, H, W, 3] in 0..1, as the data loader gives
    with torch.no_grad():
        z = models.encode_video(frames)[None]
        text = models.encode_text([inputs["caption"]])
        empty = models.encode_text([""])
    assert rel_err(z, golden["z"]) <= TOL
    assert rel_err(text, golden["text_cond"]) <= TOL and rel_err(empty, golden["text_null"]) <= TOL
    return golden, meta, models, objective, frames, z, text, empty


def check_record(golden, name, terms, errors):
    for key in ("x_noisy", "target", "model_output"):
        errors[f"{name}.{key}"] = rel_err(getattr(terms, key), golden[f"{name}.{key}"])
    errors[f"{name}.x_start"] = rel_err(terms.x_start, golden[f"{name}.x_start"])
    errors[f"{name}.loss"] = abs(terms.loss.item() - golden[f"{name}.loss"].item()) / golden[f"{name}.loss"].item()


def test_dynamicrafter_512_objective_matches_the_original(mods):
    golden, meta, models, objective, frames, z, text, empty = golden_case(mods, "tiny_dc_512")
    inputs = meta["inputs"]
    index = inputs["cond_frame_index"]
    with torch.no_grad():
        tokens = models.image_tokens(frames[index][None])
        zero_tokens = models.image_tokens(torch.full_like(frames[:1], 0.5))[0]
        assert rel_err(models.projector(tokens), golden["image_emb"]) <= TOL
        assert rel_err(models.projector(zero_tokens[None]), golden["image_emb_dropped"]) <= TOL
    # the loader's fps (fps_ori // frame_stride) is the batch's fps condition; the record's fs
    batch = mods["objectives"].Batch(latents=z, context=text, fps=torch.tensor([float(inputs["fps"])]),
                           frame_stride=torch.tensor([inputs["frame_stride"]]), image_tokens=tokens,
                           cond_index=torch.tensor([index]))
    assert rel_err(objective.concat_latent(batch, torch.device("cpu")), golden["concat_latent"]) <= TOL
    errors = {}
    for name, record in meta["records"].items():
        assert objective.fps_condition(batch.fps, batch.frame_stride).tolist() == record["fs"]
        draws = mods["objectives"].Draws(uniforms=torch.tensor([[record["forced_random_num"]]]), t=torch.tensor([record["t"]]),
                               noise=golden["noise"])
        text_dropped, image_dropped = objective.dropped(draws.uniforms)
        assert (bool(text_dropped), bool(image_dropped)) == (record["text_dropped"], record["image_dropped"]), name
        with torch.no_grad():
            terms = objective.terms(models.unet, models.projector, batch, draws, empty[0], zero_tokens, torch.device("cpu"))
        check_record(golden, name, terms, errors)
        errors[f"{name}.unet_input"] = rel_err(terms.unet_input, golden[f"{name}.unet_input"])
        if f"{name}.context" in golden:  # stored for the four dropout records
            errors[f"{name}.context"] = rel_err(torch.cat([terms.context, terms.image_context], 1), golden[f"{name}.context"])
    assert len(errors) == 6 * 7 + 4
    print("largest relative errors:", sorted(errors.items(), key=lambda kv: -kv[1])[:3])
    assert max(errors.values()) <= TOL, {k: v for k, v in errors.items() if v > TOL}


def test_videocrafter2_objective_matches_the_original(mods):
    golden, meta, models, objective, frames, z, text, empty = golden_case(mods, "tiny_t2v_v2")
    assert models.projector is None and not objective.uses_image
    batch = mods["objectives"].Batch(latents=z, context=text, fps=torch.tensor([float(meta["inputs"]["fps"])]),
                           frame_stride=torch.tensor([1]))
    errors = {}
    for name, record in meta["records"].items():
        draws = mods["objectives"].Draws(uniforms=torch.tensor([[record["forced_random_random"]]]), t=torch.tensor([record["t"]]),
                               noise=golden["noise"])
        assert bool(objective.dropped(draws.uniforms)[0]) == record["text_dropped"], name
        with torch.no_grad():
            terms = objective.terms(models.unet, None, batch, draws, empty[0], None, torch.device("cpu"))
        check_record(golden, name, terms, errors)
        if f"{name}.context" in golden:
            errors[f"{name}.context"] = rel_err(terms.context, golden[f"{name}.context"])
    assert len(errors) == 5 * 5 + 2
    print("largest relative errors:", sorted(errors.items(), key=lambda kv: -kv[1])[:3])
    assert max(errors.values()) <= TOL, {k: v for k, v in errors.items() if v > TOL}
