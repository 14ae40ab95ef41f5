"""T2V-Turbo-v2 through the nodes, against the original pipeline's goldens, and its errors.

The tiny turbo UNets are built as ../shared/reference/README.md says (tiny_t2v_v2's UNet without prefix,
updated with the delta tensors) and written the way they are released (`torch.save` of the bare state
dict, `.pt`) and as the downloader's `.safetensors` conversion (fp16, the same keys); the test loads them
as a user does: Load VideoCrafter Checkpoint (VideoCrafter2) -> VideoCrafter Turbo UNet Loader.
"""
import json
import os

import pytest
import torch

import comfy_host
from conftest import load_golden, reference_path, rel_err, require_reference
import tiny_turbo  # scripts/, on sys.path via comfy_host
from tiny_turbo import CASES

EMBED_TOL = 1e-4
SAMPLE_TOL = 1e-3
SCALE_FACTOR = 0.18215


def tiny_turbo_unet(case):
    """The tiny turbo UNet `case` (skips without the reference files it is made of)."""
    require_reference(*tiny_turbo.reference_files(case))
    return tiny_turbo.tiny_turbo_unet(case)


def write_turbo_files(folder):
    """The tiny turbo UNets as released (.pt) and converted (.safetensors); a plain VC2 UNet file beside them."""
    require_reference(*tiny_turbo.reference_files("mg"), *tiny_turbo.reference_files("nomg"))
    tiny_turbo.write_tiny_turbo_files(str(folder))
    plain = {k: v for k, v in tiny_turbo_unet("nomg").items() if k != "time_cond_proj.weight"}
    torch.save(plain, os.path.join(folder, "videocrafter2_unet_only.pt"))


@pytest.fixture(scope="module")
def turbo_dir(models_dir):
    write_turbo_files(models_dir)
    return models_dir


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """See conftest.one_torch_thread."""


@pytest.fixture(scope="module")
def nodes_(pack):
    return pack.vc_nodes.NODE_CLASSES


@pytest.fixture(scope="module")
def vc2(nodes_, turbo_dir):
    """Load VideoCrafter Checkpoint on the (tiny) VideoCrafter2 file: MODEL, CLIP, VAE."""
    model, clip, vae, _, _ = nodes_["VideoCrafterCheckpointLoader"].execute("tiny_t2v_v2.safetensors", "default")
    return model, clip, vae


def turbo_model(nodes_, base_model, unet_name):
    (model,) = nodes_["VideoCrafterTurboUNetLoader"].execute(base_model, unet_name, "default")
    return model


def conditioning(nodes_, clip, meta, motion=True):
    import nodes as core
    inputs = meta["inputs"]
    (positive,) = core.CLIPTextEncode().encode(clip, inputs["prompt"])
    (negative,) = core.CLIPTextEncode().encode(clip, "")
    positive, negative = nodes_["VideoCrafterFPSConditioning"].execute(positive, negative, inputs["fps"])
    motion_gs = inputs["motion_gs"] if inputs["motion_gs"] is not None else 0.05
    percentage = inputs["percentage"] if inputs["percentage"] is not None else 0.5
    return nodes_["VideoCrafterTurboConditioning"].execute(positive, negative, inputs["guidance_scale"],
                                                           motion, motion_gs, percentage)


def unet_output(model, cond, x, t):
    """The UNet on x at timestep t with the inputs the MODEL makes of the CONDITIONING (extra_conds)."""
    base = model.model
    extras = dict(cond[0][1])
    conds = base.extra_conds(cross_attn=cond[0][0], noise=x, device=torch.device("cpu"), **extras)
    kwargs = {k: v.process_cond(batch_size=x.shape[0], device=torch.device("cpu")).cond for k, v in conds.items()}
    context = kwargs.pop("c_crossattn")
    with torch.no_grad():
        return base.diffusion_model(x, torch.full((x.shape[0],), float(t)), context=context, **kwargs)


def test_guidance_embeddings_match(pack):
    unet = comfy_host.pack("vc_models.unet")
    golden, meta = load_golden(CASES["mg"])
    inputs = meta["inputs"]
    for value, key in ((inputs["guidance_scale"], "w_embedding"), (inputs["motion_gs"], "motion_embedding_on"),
                       (0.0, "motion_embedding_off")):
        assert rel_err(unet.guidance_embedding(torch.tensor([value]), 256), golden[key]) <= EMBED_TOL, key


def test_turbo_timesteps(pack):
    sampling = comfy_host.pack("vc_models.sampling")
    golden, meta = load_golden(CASES["mg"])
    assert sampling.turbo_timesteps(meta["inputs"]["steps"]) == meta["timesteps"]
    assert sampling.turbo_timesteps(8) == [999, 874, 749, 624, 499, 374, 249, 124]
    assert sampling.turbo_timesteps(16)[:2] == [999, 939] and len(sampling.turbo_timesteps(16)) == 16


@pytest.mark.parametrize("case,fmt,sampler", [("mg", "pt", "pack"), ("nomg", "pt", "pack"), ("mg", "safetensors", "core")])
def test_golden_parity(pack, nodes_, vc2, case, fmt, sampler):
    """Text embedding, UNet at t=999, the 4-step LCM latent (sampler lcm, scheduler videocrafter_turbo, cfg 1)
    and the decoded frames, as a user's graph computes them: with the released .pt through the VideoCrafter
    KSampler and VideoCrafter Turbo Conditioning; with the .safetensors conversion through the core KSampler and
    no Turbo Conditioning node (the original's defaults: guidance 7.5, MG 0.05 over half the noise levels)."""
    import nodes as core
    golden, meta = load_golden(CASES[case])
    inputs = meta["inputs"]
    base_model, clip, vae = vc2
    unet_name = f"unet_{case}.pt" if fmt == "pt" else f"t2v_turbo_v2_unet_{case}.safetensors"
    model = turbo_model(nodes_, base_model, unet_name)
    if sampler == "pack":
        positive, negative = conditioning(nodes_, clip, meta, motion=meta["motion_guidance"])
    else:
        (positive,) = core.CLIPTextEncode().encode(clip, inputs["prompt"])
        (negative,) = core.CLIPTextEncode().encode(clip, "")
        positive, negative = nodes_["VideoCrafterFPSConditioning"].execute(positive, negative, inputs["fps"])

    errors = {"text_cond": rel_err(positive[0][0], golden["text_cond"]),
              "eps_t999": rel_err(unet_output(model, positive, golden["x_T"], 999), golden["eps_t999"])}
    (latent,) = nodes_["EmptyVideoCrafterLatent"].execute(inputs["width"], inputs["height"], inputs["frames"], 1)
    if sampler == "pack":
        (samples,) = nodes_["VideoCrafterKSampler"].execute(
            model, positive, negative, latent, seed=inputs["seed"], steps=inputs["steps"], cfg=1.0, sampler_name="videocrafter_lcm",
            scheduler="videocrafter_turbo", eta=0.0, denoise=1.0)
    else:
        (samples,) = core.KSampler().sample(model, inputs["seed"], inputs["steps"], 1.0, "videocrafter_lcm", "videocrafter_turbo",
                                            positive, negative, latent, denoise=1.0)
    errors["lcm_latent"] = rel_err(samples["samples"] * SCALE_FACTOR, golden["lcm_latent"])
    (frames,) = nodes_["VideoCrafterVAEDecode"].execute(samples, vae, frames_per_batch=8)
    video = golden["video"]
    b, _, t, h, w = video.shape
    expected = ((video + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).reshape(b * t, h, w, 3)
    errors["video"] = rel_err(frames, expected)
    print(case, fmt, sampler, errors)
    assert errors["text_cond"] <= EMBED_TOL and errors["eps_t999"] <= EMBED_TOL, errors
    assert errors["lcm_latent"] <= SAMPLE_TOL and errors["video"] <= SAMPLE_TOL, errors


def test_motion_guidance_switches_by_timestep(pack, nodes_, vc2):
    """MG on for t >= 1000 (1 - percentage): below the threshold the output equals motion_gs 0's."""
    golden, meta = load_golden(CASES["mg"])
    base_model, clip, _ = vc2
    model = turbo_model(nodes_, base_model, "unet_mg.pt")
    positive, negative = conditioning(nodes_, clip, meta)
    zero, _ = nodes_["VideoCrafterTurboConditioning"].execute(positive, negative, 7.5, True, 0.0, 0.5)
    x = golden["x_T"]
    assert torch.equal(unet_output(model, positive, x, 499), unet_output(model, zero, x, 499))
    assert rel_err(unet_output(model, positive, x, 500), unet_output(model, zero, x, 500)) > 1e-4


def test_guidance_survives_half_precision_compute(pack, nodes_, vc2):
    """The guidance values reach the UNet unrounded when ComfyUI computes in fp16 and casts every tensor cond to
    it (x1000 in the embedding would turn fp16's 7.3 -> 7.3008 into a phase error of 0.8 rad)."""
    golden, meta = load_golden(CASES["mg"])
    model = turbo_model(nodes_, vc2[0], "unet_mg.pt")
    positive, negative = conditioning(nodes_, vc2[1], meta)
    positive, _ = nodes_["VideoCrafterTurboConditioning"].execute(positive, negative, 7.3, True, 0.05, 0.35)
    base = model.model
    x = golden["x_T"]
    conds = base.extra_conds(cross_attn=positive[0][0], noise=x, device=torch.device("cpu"), **dict(positive[0][1]))
    kwargs = {k: v.process_cond(batch_size=1, device=torch.device("cpu")).cond for k, v in conds.items()}
    seen = {}
    unet = base.diffusion_model
    unet.forward = lambda x, t, **kw: seen.update(kw) or torch.zeros_like(x)  # record what the UNet would get
    base.manual_cast_dtype = torch.float16  # the compute dtype ComfyUI casts conds to
    try:
        sigma = base.model_sampling.sigmas[999].reshape(1)
        base.apply_model(x, sigma, **kwargs)
    finally:
        del unet.forward
        base.manual_cast_dtype = None
    assert seen["context"].dtype == torch.float16  # the cast happened
    assert seen["guidance"] == 7.3 and seen["motion_guidance"] == (0.05, 650)


def test_turbo_model_keeps_no_base_weights(pack, nodes_, vc2):
    """The turbo MODEL holds only the turbo UNet: no tensor shared with (or copied into it from) the base MODEL,
    whose UNet and schedule stay as they were."""
    base_model, _, _ = vc2
    before = {k: v.clone() for k, v in base_model.model.diffusion_model.state_dict().items()}
    model = turbo_model(nodes_, base_model, "unet_mg.pt")
    turbo_sd = model.model.diffusion_model.state_dict()
    assert model.model is not base_model.model
    base_ptrs = {v.data_ptr() for v in base_model.model.diffusion_model.state_dict().values()}
    assert not base_ptrs & {v.data_ptr() for v in turbo_sd.values()}
    assert set(turbo_sd) == set(tiny_turbo_unet("mg"))
    assert model.model_size() < 1.05 * sum(v.numel() * v.element_size() for v in turbo_sd.values())
    after = base_model.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the plain schedule: no scale_arr (VideoCrafter2's ends at 0.7), LCM boundary condition
    assert torch.all(model.model.model_sampling.scale_arr == 1.0)
    assert base_model.model.model_sampling.scale_arr[-1].item() == pytest.approx(0.7, abs=1e-3)


def test_turbo_model_rebuilds_from_its_cached_patcher_init(pack, nodes_, vc2):
    """The turbo MODEL's cached_patcher_init (what newer ComfyUI's deep clones and hook conditioning's non-dynamic
    delegate call) builds the same turbo UNet and schedule afresh, also after a clone."""
    model = turbo_model(nodes_, vc2[0], "unet_mg.pt").clone()
    init = model.cached_patcher_init
    rebuilt = init[0](*init[1], disable_dynamic=True)
    assert type(rebuilt).__name__ == "ModelPatcher" and rebuilt.model is not model.model
    ours, theirs = model.model.diffusion_model.state_dict(), rebuilt.model.diffusion_model.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(rebuilt.model.model_sampling.sigmas, model.model.model_sampling.sigmas)
    assert rebuilt.cached_patcher_init[1] == init[1]


def test_released_layouts_build(pack):
    """The released turbo UNet layouts (keys/t2v_turbo_v2_*) are detected and built parameter for parameter."""
    import comfy.ops
    ckpt = comfy_host.pack("vc_models.checkpoint")
    unet_mod = comfy_host.pack("vc_models.unet")
    for layout, mg in (("t2v_turbo_v2_unet_mg", True), ("t2v_turbo_v2_unet_no_mg", False)):
        sd = {}
        with open(reference_path(f"keys/{layout}.keys.tsv")) as f:
            for line in f:
                name, shape, _ = line.rstrip("\n").split("\t")
                sd[name] = torch.empty([int(d) for d in shape.strip("[]").split(",") if d.strip()], device="meta")
        unet_sd, cfg = ckpt.inspect_turbo_unet(sd, layout)
        assert cfg.guidance_embed_dim == 256 and cfg.motion_guidance is mg and cfg.temporal_conv
        built = unet_mod.VideoCrafterUNet(cfg, device="meta", operations=comfy.ops.disable_weight_init).state_dict()
        assert {k: tuple(v.shape) for k, v in built.items()} == {k: tuple(v.shape) for k, v in unet_sd.items()}


def loader_error(nodes_, base_model, unet_name):
    with pytest.raises(ValueError) as info:
        turbo_model(nodes_, base_model, unet_name)
    return str(info.value)


@pytest.mark.parametrize("checkpoint,names", [
    ("tiny_t2v_v1.safetensors", "VideoCrafter1 text-to-video"),
    ("tiny_i2v_v1.safetensors", "VideoCrafter1 image-to-video"),
])
def test_turbo_unet_on_another_model_is_refused(pack, nodes_, turbo_dir, checkpoint, names):
    model, *_ = nodes_["VideoCrafterCheckpointLoader"].execute(checkpoint, "default")
    message = loader_error(nodes_, model, "unet_mg.pt")
    assert names in message and "VideoCrafter2" in message and "Load VideoCrafter Checkpoint" in message, message


def test_dynamicrafter_like_model_is_refused(pack):
    """A MODEL with 8 input channels and image cross-attention (DynamiCrafter's UNet) is refused by its config."""
    ckpt = comfy_host.pack("vc_models.checkpoint")
    turbo = comfy_host.pack("vc_models.turbo")
    _, turbo_cfg = ckpt.inspect_turbo_unet(tiny_turbo_unet("mg"))
    import dataclasses
    base = ckpt.CheckpointInfo(entry=comfy_host.pack("vc_models.registry").entry("vc1_i2v_512"),
                               unet=dataclasses.replace(turbo_cfg, guidance_embed_dim=0, motion_guidance=False,
                                                        in_channels=8, image_cross_attention=True))
    with pytest.raises(ValueError, match="in_channels 8"):
        turbo.turbo_info(base, turbo_cfg, "unet_mg.pt")


def test_plain_unet_file_is_refused(pack, nodes_, vc2):
    message = loader_error(nodes_, vc2[0], "videocrafter2_unet_only.pt")
    assert "not a T2V-Turbo UNet" in message and "time_cond_proj" in message, message


def test_full_checkpoint_as_turbo_unet_is_refused(pack, nodes_, vc2):
    message = loader_error(nodes_, vc2[0], "tiny_t2v_v2.safetensors")
    assert "not a T2V-Turbo UNet" in message, message


def test_turbo_unet_in_the_checkpoint_loader_says_where_it_goes(pack, nodes_, turbo_dir):
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    with pytest.raises(ckpt_file.CheckpointError, match="VideoCrafter Turbo UNet Loader"):
        nodes_["VideoCrafterCheckpointLoader"].execute("unet_nomg.pt", "default")


def test_truncated_turbo_file_is_refused(pack, nodes_, vc2, turbo_dir):
    data = (turbo_dir / "unet_mg.pt").read_bytes()
    (turbo_dir / "unet_cut.pt").write_bytes(data[: len(data) // 2])
    message = loader_error(nodes_, vc2[0], "unet_cut.pt")
    assert "unet_cut.pt" in message and "Download it again" in message, message


def test_motion_guidance_on_no_mg_model_is_an_error(pack, nodes_, vc2):
    golden, meta = load_golden(CASES["nomg"])
    model = turbo_model(nodes_, vc2[0], "unet_nomg.pt")
    positive, negative = conditioning(nodes_, vc2[1], meta, motion=True)
    (latent,) = nodes_["EmptyVideoCrafterLatent"].execute(128, 64, 2, 1)
    with pytest.raises(ValueError, match="no motion-guidance") as info:
        nodes_["VideoCrafterKSampler"].execute(model, positive, negative, latent, seed=0, steps=1, cfg=1.0,
                                                sampler_name="videocrafter_lcm", scheduler="videocrafter_turbo", eta=0.0, denoise=1.0)
    assert "motion_guidance" in str(info.value)


def test_turbo_conditioning_on_a_plain_model_is_an_error(pack, nodes_, vc2):
    golden, meta = load_golden(CASES["nomg"])
    positive, _ = conditioning(nodes_, vc2[1], meta, motion=False)
    with pytest.raises(ValueError, match="Turbo UNet Loader"):
        vc2[0].model.extra_conds(cross_attn=positive[0][0], **positive[0][1])


# --- the shipped workflow in a real server ---------------------------------------------------------

@pytest.fixture(scope="module")
def server(module_tmp):
    from server_util import ComfyServer
    srv = ComfyServer(module_tmp("turbo_server"))
    write_turbo_files(os.path.join(srv.models_dir, "checkpoints"))  # listed as models/videocrafter too
    srv.start()
    yield srv
    srv.stop()


def test_shipped_turbo_workflow_makes_a_video(server):
    import av
    from server_util import REPO, assert_widgets_match, choices, load_workflow, submit, wait_history
    info = server.object_info()
    for node in ("VideoCrafterTurboUNetLoader", "VideoCrafterTurboConditioning"):
        assert info[node]["category"].startswith("VideoCrafter/")
        assert all(spec[1].get("tooltip") for spec in info[node]["input"]["required"].values()), node
    assert "videocrafter_turbo" in info["KSampler"]["input"]["required"]["scheduler"][0]
    assert "t2v_turbo_v2_unet_mg.safetensors" in choices(info["VideoCrafterTurboUNetLoader"]["input"]["required"]["unet_name"])

    ui = load_workflow("vc2_turbo_v2", api=False)
    assert_widgets_match(info, ui, "vc2_turbo_v2")
    note = next(n for n in ui["nodes"] if n["type"] == "Note")  # UI-only: how to get the model files
    assert "download_models.py vc2_t2v_512 turbo_v2_mg" in note["widgets_values"][0]
    turbo_loader = next(n for n in ui["nodes"] if n["type"] == "VideoCrafterTurboUNetLoader")
    assert turbo_loader["widgets_values"][0] == "t2v_turbo_v2_unet_mg.safetensors"  # the downloader's name

    with open(os.path.join(REPO, "workflows", "api", "vc2_turbo_v2.json")) as f:
        workflow = json.load(f)
    sampler = next(n for n in workflow.values() if n["class_type"] == "VideoCrafterKSampler")["inputs"]
    assert (sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"]) == (8, 1.0, "videocrafter_lcm", "videocrafter_turbo")
    values = {"ckpt_name": "tiny_t2v_v2.safetensors", "width": 128, "height": 64, "frames": 4}
    for node in workflow.values():
        for key in node["inputs"]:
            if key in values:
                node["inputs"][key] = values[key]
    result, error = submit(server, workflow)
    assert error is None, error
    entry = wait_history(server, result["prompt_id"])
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log_tail())
    files = [f for out in entry["outputs"].values() for f in out.get("images", [])]
    assert len(files) == 1, entry["outputs"]
    with av.open(os.path.join(server.output_dir, files[0]["subfolder"], files[0]["filename"])) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (128, 64)

    # the same graph with the no-MG UNet and motion guidance left on: a clear error in the history
    for node in workflow.values():
        if node["class_type"] == "VideoCrafterTurboUNetLoader":
            node["inputs"]["unet_name"] = "unet_nomg.pt"
    result, error = submit(server, workflow)
    entry = wait_history(server, result["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    assert "no motion-guidance" in json.dumps(entry["status"]["messages"])


