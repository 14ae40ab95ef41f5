"""MotionCtrl as a model of the registry, sampled through the pack's and ComfyUI's samplers against the original's
DDIM latents (`tiny_motionctrl.case1`: camera, object and both, eta 0 and 1; 10 steps, cfg 7.5, cond_T 800).

Driven as a user's graph does: the VideoCrafter checkpoint loader, CLIP Text Encode, the MotionCtrl Camera Path node
on a pose file of the case's 8 poses (in the input folder) and the MotionCtrl Object Trajectory node on the case's
points, Empty VideoCrafter Latent and the samplers. The nodes put the same camera path on the positive and the
negative, the trajectory on the positive and an all-zero flow on the negative, cond_T on both.

Tolerances. The reference's 1e-3 after sampling holds in float64 (the pack's UNet with float64 weights; what the
sampler computes around it is as in float32): measured both eta0 9.7e-4, both eta1 6.7e-5, camera eta1 1.5e-4,
object eta1 1.7e-4. In float32 it cannot hold for every case, for the reason tests/test_motionctrl.py gives for
single calls (this tiny UNet's GroupNorms of 2 values amplify rounding): measured on case1, our float32 runs (1 and
2 CPU threads) lie from our float64 result both eta0 1.1e-3..1.2e-3, both eta1 2.1e-4..2.4e-4, camera 7.2e-4..2.7e-3,
object 5e-5..1.6e-4, and from each other up to 5.8e-4, 1.1e-4, 3.2e-3, 1.8e-4; from the golden 1.04e-3..1.07e-3,
1.9e-4..2.2e-4, 6.4e-4..2.8e-3, 2.6e-5..1.9e-4. FLOAT32_TOL is the reference's 1e-3 where every float32 run met it,
else 1.5x the largest float32 distance measured (both eta0 1.8e-3, camera 4.8e-3).
What the float64 comparison catches: the negative without the zero flow's features 2.2e-2, the negative without the
camera path 1.2e-1 (and the prompts: the original's negative prompt encoded whole by CLIPTextEncode, 154 tokens
instead of the original's 77, 2.5e-2 in float32). cond_T is below what the latents show here (trajectory features at
every step instead: both eta1 1.3e-4 instead of 6.7e-5), so the steps that get them are checked directly.
"""
import pytest
import torch

import comfy_host
from conftest import load_golden, rel_err, tiny_motionctrl_state_dict
from model_util import run_node

SAMPLE_TOL = 1e-3
FLOAT32_TOL = {("both", 0): 1.8e-3, ("both", 1): 1e-3, ("camera", 1): 4.8e-3, ("object", 1): 1e-3}
SCALE_FACTOR = 0.18215
CASES = [("both", 0), ("both", 1), ("camera", 1), ("object", 1)]
MODEL_FILE = "tiny_motionctrl.safetensors"


@pytest.fixture(scope="module")
def motionctrl_file(pack, models_dir):
    """The tiny MotionCtrl model (delta + tiny_t2v_v2's VAE and text encoder) in the models folder."""
    import safetensors.torch
    path = models_dir / MODEL_FILE
    if not path.exists():
        safetensors.torch.save_file(tiny_motionctrl_state_dict(), str(path))
    return MODEL_FILE


POSE_FILE = "case1_camera.json"


@pytest.fixture(scope="module")
def input_folder(pack, module_tmp):
    """ComfyUI's input folder for this module, holding the case's camera path as a pose file (its 8 rows)."""
    import json
    import folder_paths
    golden, _ = load_golden("tiny_motionctrl")
    folder = module_tmp("motionctrl_input")
    (folder / POSE_FILE).write_text(json.dumps(golden["camera_poses"][0].double().tolist()))
    before = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(folder))
    yield folder
    folder_paths.set_input_directory(before)


def families():
    return comfy_host.pack("vc_models.families")


def load(pack, name):
    model, clip, vae, *_ = pack.vc_nodes.NODE_CLASSES["VideoCrafterCheckpointLoader"].execute(name, "default")
    return model, clip, vae


def text_conditioning(clip, meta):
    """The prompt with the family's suffix, the family's negative prompt (as the original's tokenizer keeps it)."""
    import nodes as core
    family = families().MotionCtrl
    (positive,) = core.CLIPTextEncode().encode(clip, meta["inputs"]["prompt"] + ", " + family.prompt_suffix)
    (negative,) = core.CLIPTextEncode().encode(clip, family.negative_prompt)
    return positive, negative


def nodes(pack):
    return pack.vc_nodes.NODE_CLASSES


def motion_conditioning(pack, p, mode, cond_t=800, model_latent=None):
    """The MotionCtrl nodes on the text conditioning of pipeline `p`: the case's camera path (pose file) and / or its
    trajectory points."""
    positive, negative, latent = p["positive"], p["negative"], model_latent or p["latent"]
    if mode in ("both", "camera"):
        positive, negative = nodes(pack)["MotionCtrlCameraPath"].execute(positive, negative, latent, "static", "none",
                                                                         "both", 1.0, POSE_FILE)
    if mode in ("both", "object"):
        points = "\n".join(f"{x}, {y}" for x, y in p["meta"]["trajectory_points"])
        positive, negative = nodes(pack)["MotionCtrlObjectTrajectory"].execute(positive, negative, latent, points,
                                                                               "none", cond_t)
    return positive, negative


@pytest.fixture(scope="module")
def pipeline(pack, motionctrl_file, input_folder):
    golden, meta = load_golden("tiny_motionctrl")
    model, clip, vae = load(pack, motionctrl_file)
    positive, negative = text_conditioning(clip, meta)
    inputs = meta["inputs"]
    (latent,) = pack.vc_nodes.NODE_CLASSES["EmptyVideoCrafterLatent"].execute(inputs["width"], inputs["height"],
                                                                            inputs["frames"], 1)
    return dict(golden=golden, meta=meta, model=model, vae=vae, positive=positive, negative=negative, latent=latent)


def float64_model(pack):
    """The tiny MotionCtrl loaded anew, its UNet computing in float64 (ComfyUI casts the latent and the conds to the
    UNet's dtype)."""
    model, _, _ = load(pack, MODEL_FILE)
    unet = model.model.diffusion_model
    unet.to(torch.float64)
    unet.dtype = torch.float64
    model.model.manual_cast_dtype = None
    return model


def sample(pack, p, model, mode, eta):
    inputs = p["meta"]["inputs"]
    positive, negative = motion_conditioning(pack, p, mode)
    (samples,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"].execute(
        model, positive, negative, p["latent"], seed=inputs["seed"], steps=inputs["ddim_steps"], cfg=inputs["cfg"],
        sampler_name="videocrafter_ddim", scheduler="videocrafter_uniform", eta=float(eta), denoise=1.0)
    return samples["samples"] * SCALE_FACTOR  # a LATENT holds VAE-space latents; the original returns model-space ones


def test_detected_as_motionctrl_with_both_controls(pipeline):
    info = pipeline["model"].model.info
    motionctrl = comfy_host.pack("vc_models.motionctrl")
    assert info.entry.id == "motionctrl_256" and not info.unet.fps_cond
    assert info.entry.family.controls(info.unet) == (motionctrl.CAMERA, motionctrl.OBJECT)
    d = info.entry.defaults
    assert (d.frames, d.steps, d.eta, d.cfg, d.sampler) == (16, 50, 1.0, 7.5, "videocrafter_ddim")


def test_prompts_encode_as_the_original(pipeline):
    """The suffixed prompt and the negative prompt give the golden's contexts; the negative is the json's string as
    the original's 77-token tokenizer keeps it."""
    golden, meta = pipeline["golden"], pipeline["meta"]
    family = families().MotionCtrl
    assert family.prompt_suffix == meta["post_prompt"]
    assert meta["negative_prompt"].startswith(family.negative_prompt) and meta["negative_prompt"] != family.negative_prompt
    assert rel_err(pipeline["positive"][0][0], golden["context"]) <= 1e-4
    assert rel_err(pipeline["negative"][0][0], golden["uncond_context"]) <= 1e-4


@pytest.mark.parametrize("mode, eta", CASES)
def test_sampled_latents_match_the_original_in_float64(pack, pipeline, mode, eta):
    """The reference tolerance, with the UNet in float64 (see the module docstring)."""
    ours = sample(pack, pipeline, float64_model(pack), mode, eta)
    err = rel_err(ours, pipeline["golden"][f"ddim_{mode}_eta{eta}_latent"])
    assert err <= SAMPLE_TOL, err


@pytest.mark.parametrize("mode, eta", CASES)
def test_sampled_latents_in_float32(pack, pipeline, mode, eta):
    ours = sample(pack, pipeline, pipeline["model"], mode, eta)
    err = rel_err(ours, pipeline["golden"][f"ddim_{mode}_eta{eta}_latent"])
    assert err <= FLOAT32_TOL[(mode, eta)], err


def test_decoded_video_matches_the_original(pack, pipeline):
    """The golden latent (both, eta 0) through the pack's VAE decode node gives the original's frames."""
    video = pipeline["golden"]["ddim_both_eta0_video"]  # [3, T, H, W] in about [-1, 1]
    latent = {"samples": pipeline["golden"]["ddim_both_eta0_latent"] / SCALE_FACTOR}
    (images,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterVAEDecode"].execute(latent, pipeline["vae"], 8)
    expected = ((video.movedim(0, -1) + 1) / 2).clamp(0, 1)
    assert images.shape == expected.shape
    assert rel_err(images, expected) <= SAMPLE_TOL


@pytest.fixture
def feature_steps(pipeline, monkeypatch):
    """The timesteps of the UNet calls, and whether the trajectory's features were added (per sample)."""
    unet = pipeline["model"].model.diffusion_model
    calls, original = [], unet._motion_features

    def recording(trajectory, cond_t, timesteps, x):
        features = original(trajectory, cond_t, timesteps, x)
        calls.append((timesteps.reshape(-1).tolist(), features is not None and trajectory is not None))
        return features

    monkeypatch.setattr(unet, "_motion_features", recording)
    return calls


def check_cond_t(calls, cond_t):
    steps = sorted({round(t) for ts, _ in calls for t in ts}, reverse=True)
    on = sorted({round(t) for ts, applied in calls if applied for t in ts}, reverse=True)
    assert on == [t for t in steps if t >= cond_t] and 0 < len(on) < len(steps), (steps, on)


@pytest.mark.parametrize("sampler", ["VideoCrafterKSampler", "KSampler", "SamplerCustom"])
def test_cond_t_reaches_the_unet_through_every_sampler(pack, pipeline, feature_steps, sampler):
    """The trajectory's features are added at the steps with t >= cond_T and dropped below, for the positive and the
    negative (the original's DDIM); the camera path stays on."""
    import nodes as core
    from comfy_extras.nodes_custom_sampler import SamplerCustom, KSamplerSelect, BasicScheduler
    positive, negative = motion_conditioning(pack, pipeline, "both", cond_t=600)
    model, latent, seed = pipeline["model"], pipeline["latent"], 42
    if sampler == "VideoCrafterKSampler":
        pack.vc_nodes.NODE_CLASSES[sampler].execute(model, positive, negative, latent, seed=seed, steps=8, cfg=7.5,
                                                   sampler_name="videocrafter_ddim", scheduler="videocrafter_uniform",
                                                   eta=1.0, denoise=1.0)
    elif sampler == "KSampler":
        core.KSampler().sample(model, seed, 8, 7.5, "euler", "normal", positive, negative, latent, denoise=1.0)
    else:
        (ksampler,) = run_node(KSamplerSelect, "dpmpp_2m")
        (sigmas,) = run_node(BasicScheduler, model, "karras", 8, 1.0)
        run_node(SamplerCustom, model, True, seed, 7.5, positive, negative, ksampler, sigmas, latent)
    check_cond_t(feature_steps, 600)


def camera_only_file(models_dir, name, keep_adapter):
    """The tiny model as the VideoCrafter2 cmcm release may come: without the adapter, or with it under the cmcm name."""
    import safetensors.torch
    path = models_dir / name
    if not path.exists():
        safetensors.torch.save_file(tiny_motionctrl_state_dict(camera_only=not keep_adapter), str(path))
    return name


SAMPLER_ARGS = dict(seed=1, steps=2, cfg=7.5, sampler_name="videocrafter_ddim", scheduler="videocrafter_uniform",
                    eta=1.0, denoise=1.0)


@pytest.mark.parametrize("name, keep_adapter", [("tiny_motionctrl_camera.safetensors", False),
                                                ("tiny_motionctrl_videocrafter2_cmcm.safetensors", True)])
def test_camera_only_file_refuses_a_trajectory_by_name(pack, pipeline, models_dir, name, keep_adapter):
    model, clip, _ = load(pack, camera_only_file(models_dir, name, keep_adapter))
    assert model.model.info.entry.id == "motionctrl_vc2_512"
    sampler = nodes(pack)["VideoCrafterKSampler"]
    positive, negative = motion_conditioning(pack, pipeline, "both")
    with pytest.raises(ValueError, match="'MotionCtrl Object Trajectory'.*controls the camera only.*motionctrl.pth"):
        sampler.execute(model, positive, negative, pipeline["latent"], **SAMPLER_ARGS)
    positive, negative = motion_conditioning(pack, pipeline, "camera")
    (samples,) = sampler.execute(model, positive, negative, pipeline["latent"], **SAMPLER_ARGS)
    assert torch.isfinite(samples["samples"]).all()


def test_motion_on_a_model_without_it_is_refused_by_name(pack, pipeline, models_dir):
    model, clip, _ = load(pack, "tiny_t2v_v2.safetensors")
    for mode, node in (("camera", "MotionCtrl Camera Path"), ("object", "MotionCtrl Object Trajectory")):
        positive, negative = motion_conditioning(pack, pipeline, mode)
        with pytest.raises(ValueError, match=f"'{node}'.*has no motion control.*motionctrl.pth"):
            nodes(pack)["VideoCrafterKSampler"].execute(model, positive, negative, pipeline["latent"], **SAMPLER_ARGS)


def test_trajectory_node_makes_the_originals_flow(pack, pipeline):
    """The node on the case's points gives the golden's `trajectory` (process_traj sized to the video; within a
    float32 step, see test_motionctrl.test_points_make_the_originals_flow), the negative a zero flow, both cond_T."""
    import numpy as np
    fam = families()
    positive, negative = motion_conditioning(pack, pipeline, "object", cond_t=700)
    flow, zero = positive[0][1][fam.MOTION_TRAJECTORY_KEY], negative[0][1][fam.MOTION_TRAJECTORY_KEY]
    expected = pipeline["golden"]["trajectory"]
    ulp = float(np.spacing(np.float32(pipeline["meta"]["trajectory_256_stats"]["abs_max"])))
    assert flow.shape == expected.shape and (flow - expected).abs().max().item() <= ulp
    assert zero.shape == flow.shape and not zero.any()
    assert positive[0][1][fam.MOTION_COND_T_KEY] == negative[0][1][fam.MOTION_COND_T_KEY] == 700


def test_camera_node_resamples_the_path_to_the_video(pack, pipeline):
    """A 16-frame basic move on the 8-frame video: the original's 16 poses at the frames the goldens take; the pose
    file's rows as they are; the negative gets the same path."""
    fam, camera = families(), comfy_host.pack("vc_models.camera_path")
    p = pipeline
    positive, negative = nodes(pack)["MotionCtrlCameraPath"].execute(p["positive"], p["negative"], p["latent"],
                                                                     "zoom in", "rotate clockwise", "then", 2.0, "none")
    full = camera.pose_rows(camera.basic_camera_path(["zoom in", "rotate clockwise"], 2.0, "then"))
    poses = positive[0][1][fam.MOTION_CAMERA_KEY]
    assert torch.equal(poses[0], torch.from_numpy(full[[0, 2, 4, 6, 9, 11, 13, 15]]))
    assert torch.equal(negative[0][1][fam.MOTION_CAMERA_KEY], poses)
    positive, _ = motion_conditioning(pack, p, "camera")
    assert torch.equal(positive[0][1][fam.MOTION_CAMERA_KEY], p["golden"]["camera_poses"])


def test_node_errors_name_the_node_and_the_fix(pack, pipeline, input_folder):
    p = pipeline
    (input_folder / "broken.json").write_text("[[1, 0, 0]]")
    with pytest.raises(ValueError, match="MotionCtrl Camera Path: broken.json: frame 0 .*12 numbers"):
        nodes(pack)["MotionCtrlCameraPath"].execute(p["positive"], p["negative"], p["latent"], "pan left", "none",
                                                    "both", 1.0, "broken.json")
    odd = {"samples": torch.zeros(1, 4, 8, 8, 25)}  # 200 pixels wide: the adapter's third level would not meet the UNet's
    with pytest.raises(ValueError, match="MotionCtrl Object Trajectory: the video is 200x64.*multiples of 64"):
        nodes(pack)["MotionCtrlObjectTrajectory"].execute(p["positive"], p["negative"], odd, "1, 2\n3, 4", "none", 800)
    with pytest.raises(ValueError, match="MotionCtrl Object Trajectory: points, line 2"):
        nodes(pack)["MotionCtrlObjectTrajectory"].execute(p["positive"], p["negative"], p["latent"], "1, 2\nx", "none",
                                                          800)
    with pytest.raises(ValueError, match="MotionCtrl Camera Path: 'latent' must be a video latent"):
        nodes(pack)["MotionCtrlCameraPath"].execute(p["positive"], p["negative"], {"samples": torch.zeros(1, 4, 8, 8)},
                                                    "pan left", "none", "both", 1.0, "none")


@pytest.fixture(scope="module")
def composed(pack, pipeline):
    """The case's motion conditioning (both controls) and the latent the core KSampler samples from it, unpatched."""
    from test_video_controlnet import sample as core_sample
    positive, negative = motion_conditioning(pack, pipeline, "both", cond_t=0)  # the trajectory at every step
    return positive, negative, core_sample(pipeline["model"], positive, negative, pipeline["latent"])


# FreeU acts on the blocks 2x and 4x the UNet's base width, which the tiny MotionCtrl (32 channels at every level)
# has none of: the patches here act at any width
@pytest.mark.parametrize("node, inputs", [("UNetSelfAttentionMultiply", {"q": 1.5}),
                                          ("PerturbedAttentionGuidance", {"scale": 3.0}),
                                          ("SelfAttentionGuidance", {"refused": "4-D image latents"})])
def test_core_patches_compose_with_motion_or_are_refused_by_name(pipeline, composed, node, inputs):
    """As on the other text-to-video models (tests/test_core_patches.py): the patch takes effect on a MotionCtrl MODEL
    sampled with its camera path and trajectory, or is refused naming the node."""
    from test_core_patches import run_node as run_core_patch, CHANGED
    from test_video_controlnet import sample as core_sample
    inputs = dict(inputs)
    refused = inputs.pop("refused", "")
    positive, negative, unpatched = composed
    (patched,) = run_core_patch(node, model=pipeline["model"], **inputs)
    if refused:
        with pytest.raises(ValueError, match=node) as error:
            core_sample(patched, positive, negative, pipeline["latent"])
        assert refused in str(error.value)
        return
    result = core_sample(patched, positive, negative, pipeline["latent"])
    assert torch.isfinite(result).all() and rel_err(result, unpatched) > CHANGED


def random_control(model):
    """Core's ControlNet on a random network sized to `model`'s UNet. Built here, not by 'Load ControlNet Model': the
    host's ControlNet detection matches no model for the tiny MotionCtrl's layout (32 channels at every level) and
    builds a middle block 0 channels wide; the loader itself is tested on the other tiny models
    (tests/test_video_controlnet.py)."""
    import comfy.controlnet
    from model_util import controlnet_network, random_controlnet
    cfg = model.model.diffusion_model.config
    network = controlnet_network(cfg)
    network.load_state_dict(random_controlnet(cfg, prefix=""))
    return comfy.controlnet.ControlNet(network, load_device=torch.device("cpu"))


def test_controlnet_composes_with_motion(pipeline, composed):
    """Core Apply ControlNet (Advanced) after the MotionCtrl nodes keeps their camera path and trajectory, and guides
    the video frame by frame as on the other text-to-video models (tests/test_video_controlnet.py)."""
    from test_core_patches import CHANGED
    from test_video_controlnet import apply, sample as core_sample
    fam = families()
    positive, negative, unpatched = composed
    inputs = pipeline["meta"]["inputs"]
    hint = torch.rand(inputs["frames"], inputs["height"], inputs["width"], 3, generator=torch.Generator().manual_seed(1))
    guided_positive, guided_negative = apply(positive, negative, random_control(pipeline["model"]), hint)
    for key in (fam.MOTION_CAMERA_KEY, fam.MOTION_TRAJECTORY_KEY):
        assert torch.equal(guided_positive[0][1][key], positive[0][1][key])
        assert torch.equal(guided_negative[0][1][key], negative[0][1][key])
    guided = core_sample(pipeline["model"], guided_positive, guided_negative, pipeline["latent"])
    assert torch.isfinite(guided).all() and rel_err(guided, unpatched) > CHANGED
