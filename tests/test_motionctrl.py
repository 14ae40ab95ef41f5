"""MotionCtrl's UNet additions, its released layout and its camera / trajectory maths against the original.

The UNet is read and built as the loader does (`checkpoint_file.load_state_dict`, `checkpoint.infer_unet_config`,
`VideoCrafterUNet`) in the real ComfyUI; the sampled latents and the nodes come with the wiring (next round).

UNet calls are compared in float64 (weights and inputs; the OMCM features in float32), with a bound per mode set
from the measured float32 rounding spread, not the reference's 1e-4, which no float32 implementation can meet here.
The tiny MotionCtrl UNet (32 channels: one channel per GroupNorm group) is ill-conditioned: at its lowest level
(1x2 latent pixels) each ResBlock GroupNorm group normalises 2 values, and float32 rounding is amplified there
(a layer-by-layer float32 / float64 trace: 8e-7 -> 2.4e-5 at input block 10, 7e-4 -> 1e-2 at the middle block's
second ResBlock). Measured on case1 (1 and 2 CPU threads x channels-last and contiguous activations, float32):
- our float32 against our float64: both 2e-5..3.8e-4, camera 7.7e-4..6.4e-3, plain 5e-5..4.6e-3;
- the golden (the original in float32) against our float64: both 1.4e-4, camera 1.0e-3, plain 3.1e-3, for every call
  no farther than our farthest float32 run: the golden differs from the exact value as a float32 run does;
- the reference's 1e-4 fails even in float64 (both at t=1: 1.4e-4), and our float32 runs (threads, layout) differ
  among themselves by up to 7.1e-3, so 1e-4 cannot separate a faithful float32 implementation from rounding.
UNET_CALL_TOL is 1.5x the largest float32 spread of each mode. In float64 our rounding (1e-16, amplified alike) is negligible,
so the result is the same on every machine. What the bounds still catch (float64, worst call): GroupNorm eps 1e-6 instead of
1e-5 (ResBlocks, temporal convolutions) 2.2e-2, the initial temporal attention as 4 heads of 64 instead of 8 of 32 6.9e-2, the initial
cc_projection weight scaled by 1 + 1e-3: both 1.9e-2, camera 1.3e-2. The timestep is nearly invisible in this tiny
model (the goldens at t=999 and t=500 differ by 4e-5 to 1.6e-3), as at any tolerance.
"""
import json
import os

import numpy as np
import pytest
import torch

import comfy_host
from conftest import load_golden, rel_err, reference_path, tiny_motionctrl_state_dict, write_ckpt

UNET_CALL_TOL = {"both": 6e-4, "camera": 1e-2, "plain": 7e-3}  # see the module docstring
FEATURE_TOL = 1e-4
TIMESTEPS = (999, 500, 1)


def union_state_dict():
    """The tiny MotionCtrl model: the delta's tensors plus tiny_t2v_v2's VAE and text encoder (reference README)."""
    return tiny_motionctrl_state_dict()


@pytest.fixture(scope="module")
def motionctrl_files(pack, module_tmp):
    """The tiny model as the released files come (a bare `.pth` state dict, a Lightning `.ckpt`) and as a
    `.safetensors` with the released names (`omcm.*` at the top level)."""
    import safetensors.torch
    folder = module_tmp("motionctrl")
    sd = union_state_dict()
    paths = {"safetensors": str(folder / "tiny_motionctrl.safetensors"), "pth": str(folder / "tiny_motionctrl.pth"),
             "ckpt": str(folder / "tiny_motionctrl.ckpt")}
    safetensors.torch.save_file(sd, paths["safetensors"])
    torch.save(sd, paths["pth"])
    write_ckpt(sd, paths["ckpt"])
    return paths


def build_unet(path, dtype=torch.float32):
    """(UNet in eval mode, its configuration) of a checkpoint file, read and built as the loader does."""
    import comfy.ops
    ckpt = comfy_host.pack("vc_models.checkpoint")
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    unet_mod = comfy_host.pack("vc_models.unet")
    sd = ckpt_file.load_state_dict(path)
    unet_sd = ckpt_file.split_components(sd)[ckpt_file.UNET_PREFIX]
    cfg = ckpt.infer_unet_config(unet_sd)
    unet = unet_mod.VideoCrafterUNet(cfg, dtype=dtype, operations=comfy.ops.disable_weight_init)
    unet.load_state_dict({k: v.to(dtype) for k, v in unet_sd.items()}, strict=True)
    return unet.eval(), cfg


@pytest.fixture(scope="module")
def unet(motionctrl_files):
    return build_unet(motionctrl_files["pth"])[0]


@pytest.fixture(scope="module")
def unet64(motionctrl_files):
    return build_unet(motionctrl_files["pth"], torch.float64)[0]


def motion_inputs(golden, mode, dtype=torch.float32):
    poses, flow = golden["camera_poses"].to(dtype), golden["trajectory"].to(dtype)
    return {"both": dict(camera_poses=poses, trajectory=flow), "camera": dict(camera_poses=poses), "plain": {}}[mode]


@pytest.mark.parametrize("fmt", ["pth", "ckpt", "safetensors"])
def test_released_formats_carry_both_controls(pack, motionctrl_files, fmt):
    motionctrl = comfy_host.pack("vc_models.motionctrl")
    unet, cfg = build_unet(motionctrl_files[fmt])
    assert motionctrl.motion_controls(cfg) == (motionctrl.CAMERA, motionctrl.OBJECT)
    assert (cfg.camera_pose_dim, cfg.omcm_channels, cfg.omcm_res_blocks, cfg.omcm_in_channels) == (12, (32,) * 4, 2, 128)
    assert not cfg.fps_cond and cfg.head_dim == 32 and cfg.init_attn_heads == 8  # the golden config's
    assert unet.motion_feature_blocks == (2, 5, 8, 11)


@pytest.mark.parametrize("mode", ["both", "camera", "plain"])
def test_unet_calls_match_the_original(pack, unet64, mode):
    """In float64 (see the module docstring: the golden is one float32 rounding of the exact value)."""
    golden, _ = load_golden("tiny_motionctrl")
    x, context, errors = golden["x_T"].double(), golden["context"].double(), {}
    with torch.no_grad():
        for t in TIMESTEPS:
            out = unet64(x, torch.tensor([t]), context, **motion_inputs(golden, mode, torch.float64))
            errors[t] = rel_err(out, golden[f"eps_{mode}_t{t}"])
    assert max(errors.values()) <= UNET_CALL_TOL[mode], errors


def test_each_control_moves_the_call_as_in_the_original(pack, unet):
    """What separates the modes in the goldens separates ours by as much (so the tolerance above is no blanket)."""
    golden, _ = load_golden("tiny_motionctrl")
    with torch.no_grad():
        outs = {mode: unet(golden["x_T"], torch.tensor([500]), golden["context"], **motion_inputs(golden, mode))
                for mode in ("both", "camera", "plain")}
    for a, b in (("camera", "plain"), ("both", "camera")):
        ours, reference = rel_err(outs[a], outs[b]), rel_err(golden[f"eps_{a}_t500"], golden[f"eps_{b}_t500"])
        assert abs(ours - reference) <= 0.1 * reference, (a, b, ours, reference)


def test_omcm_features_match_the_original(pack, unet):
    golden, _ = load_golden("tiny_motionctrl")
    with torch.no_grad():
        features = unet.omcm.video_features(golden["trajectory"])
    errors = [rel_err(f, golden[f"traj_features_{i}"]) for i, f in enumerate(features)]
    assert len(features) == 4 and max(errors) <= FEATURE_TOL, errors


def test_trajectory_is_dropped_below_cond_t(pack, unet):
    """With the original's cond_T the features apply at t >= cond_T only; a batch straddling it gets each sample's."""
    golden, meta = load_golden("tiny_motionctrl")
    cond_t = meta["inputs"]["cond_T"]
    x, context, t = golden["x_T"].repeat(2, 1, 1, 1, 1), golden["context"].repeat(2, 1, 1), torch.tensor([999, 500])
    camera = dict(camera_poses=golden["camera_poses"])
    with torch.no_grad():
        out = unet(x, t, context, trajectory=golden["trajectory"], trajectory_cond_t=cond_t, **camera)
        always = unet(x, t, context, trajectory=golden["trajectory"], **camera)
        never = unet(x, t, context, **camera)
    assert rel_err(out[:1], always[:1]) <= 1e-6 and rel_err(out[1:], never[1:]) <= 1e-6
    assert rel_err(always[1:], never[1:]) > 0.02  # the trajectory would have moved the t=500 call


def test_plain_unet_refuses_motion_inputs_and_sizes_are_checked(pack, motionctrl_files):
    golden, _ = load_golden("tiny_motionctrl")
    plain, _ = build_unet(reference_path("golden/tiny_t2v_v2.safetensors"))
    x, t, fps = golden["x_T"], torch.tensor([500]), torch.tensor([8.0])
    with torch.no_grad():
        with pytest.raises(ValueError, match="no camera control"):
            plain(x, t, golden["context"], fps=fps, camera_poses=golden["camera_poses"])
        with pytest.raises(ValueError, match="no object-motion control"):
            plain(x, t, golden["context"], fps=fps, trajectory=golden["trajectory"])
        unet, _ = build_unet(motionctrl_files["safetensors"])
        with pytest.raises(ValueError, match="resample the path"):
            unet(x, t, golden["context"], camera_poses=golden["camera_poses"][:, :5])
        with pytest.raises(ValueError, match="at the video's size"):
            unet(x, t, golden["context"], trajectory=golden["trajectory"][..., :32, :])
        odd = torch.zeros(1, 4, 8, 12, 16)  # 128x96: the adapter's third level would be 1.5 latents high
        with pytest.raises(ValueError, match="multiples of 64"):
            unet(odd, t, golden["context"], trajectory=torch.zeros(1, 2, 8, 96, 128))


def test_camera_only_file_loads_without_the_adapter(pack, module_tmp):
    """The VideoCrafter2 `cmcm` file may carry no `omcm.*`: camera control only, a trajectory refused by name."""
    motionctrl = comfy_host.pack("vc_models.motionctrl")
    sd = {k: v for k, v in union_state_dict().items() if not k.startswith("omcm.")}
    path = str(module_tmp("cmcm") / "tiny_cmcm.ckpt")
    write_ckpt(sd, path)
    unet, cfg = build_unet(path)
    assert motionctrl.motion_controls(cfg) == (motionctrl.CAMERA,) and unet.omcm is None
    golden, _ = load_golden("tiny_motionctrl")
    with torch.no_grad(), pytest.raises(ValueError, match="controls the camera only"):
        unet(golden["x_T"], torch.tensor([500]), golden["context"], trajectory=golden["trajectory"])


def test_built_model_matches_the_released_layout(pack):
    """keys/motionctrl.keys.tsv (1,552 tensors): every UNet and OMCM tensor has its parameter, the other top-level
    tensors are the VAE, text encoder and schedule the other layouts carry."""
    from test_checkpoint_layouts import meta_state_dict, assert_same_layout
    ckpt = comfy_host.pack("vc_models.checkpoint")
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    unet_mod = comfy_host.pack("vc_models.unet")
    motionctrl = comfy_host.pack("vc_models.motionctrl")
    import comfy.ops
    sd = ckpt_file.rename_legacy_keys(meta_state_dict("motionctrl"))
    assert sum(k.startswith(ckpt_file.UNET_PREFIX + "omcm.") for k in sd) == 38
    parts = ckpt_file.split_components({k: v for k, v in sd.items() if not ckpt_file.is_ignored_key(k)})
    cfg = ckpt.infer_unet_config(parts[ckpt_file.UNET_PREFIX])
    assert motionctrl.motion_controls(cfg) == (motionctrl.CAMERA, motionctrl.OBJECT)
    assert (cfg.camera_pose_dim, cfg.omcm_channels, cfg.omcm_in_channels) == (12, (320, 640, 1280, 1280), 128)
    assert not cfg.omcm_skip_conv and not cfg.omcm_conv_downsample and not cfg.fps_cond and cfg.head_dim == 64
    unet = unet_mod.VideoCrafterUNet(cfg, device="meta", operations=comfy.ops.disable_weight_init)
    assert_same_layout(parts[ckpt_file.UNET_PREFIX], unet.state_dict(), "MotionCtrl UNet")
    assert sum(k.endswith("cc_projection.weight") for k in unet.state_dict()) == 17
    used = (ckpt_file.UNET_PREFIX, ckpt_file.VAE_PREFIX, ckpt_file.TEXT_PREFIX)
    rest = sorted(k for k in sd if not k.startswith(used) and not ckpt_file.is_ignored_key(k))
    assert set(rest) <= set(ckpt_file.SCHEDULE_KEYS), rest


def test_points_make_the_originals_flow(pack):
    """process_traj of the case's points, sized to the video by the frames and nearest pixels the json names, gives
    its `trajectory`. Not bit for bit: cv2 filters in float32 through a DFT, ours sums exactly; every value is within
    one float32 step of the largest (1.9e-9), and the 256x256 flow's sum and maximum are the json's."""
    trajectory = comfy_host.pack("vc_models.trajectory")
    golden, meta = load_golden("tiny_motionctrl")
    inputs = meta["inputs"]
    flow = trajectory.process_traj(meta["trajectory_points"])
    assert flow.shape == (16, 256, 256, 2) and not flow[0].any()
    stats = meta["trajectory_256_stats"]
    assert abs(float(flow.sum(dtype=np.float64)) - stats["sum"]) <= 1e-4
    ulp = float(np.spacing(np.float32(stats["abs_max"])))
    assert abs(float(np.abs(flow).max()) - stats["abs_max"]) <= ulp
    sized = torch.from_numpy(trajectory.sized_flow(flow, inputs["frames"], inputs["height"], inputs["width"]))[None]
    expected = golden["trajectory"]
    assert sized.shape == expected.shape
    assert (sized - expected).abs().max().item() <= ulp


def test_pose_resampling_takes_the_goldens_frames(pack):
    """The case's 8 poses are frames [0, 2, 4, 6, 9, 11, 13, 15] of a 16-frame file (the json says so): the same
    frames `resample_poses` picks; a JSON of those poses parses back to the golden's values."""
    camera = comfy_host.pack("vc_models.camera_path")
    golden, meta = load_golden("tiny_motionctrl")
    what = meta["tensors"]["camera_poses"]["what"]
    named = json.loads(what[what.index("frames [") + len("frames "):what.index("]", what.index("frames [")) + 1])
    assert camera.nearest_frames(16, 8).tolist() == named
    path = np.arange(16 * 12, dtype=np.float64).reshape(16, 3, 4)
    assert np.array_equal(camera.resample_poses(path, 8), path[named])
    rows = golden["camera_poses"][0].double().numpy()
    parsed = camera.parse_pose_json(json.dumps(rows.tolist()), "test_camera_L.json")
    assert np.array_equal(camera.pose_rows(parsed), golden["camera_poses"][0].numpy())


def test_basic_moves_as_the_original_builds_them(pack):
    """The original's `get_camera_motion` with its constants (base_T_norm 1.5, base_angle pi/3, 16 frames)."""
    camera = comfy_host.pack("vc_models.camera_path")
    pan = camera.basic_camera_path("pan left", speed=2.0)
    assert pan.shape == (16, 3, 4) and np.allclose(pan[:, :, :3], np.eye(3))
    assert np.allclose(pan[:, :, 3], np.stack([np.arange(16) / 16 * 2.0 * 1.5, np.zeros(16), np.zeros(16)], 1))
    zoom = camera.basic_camera_path("Zoom In")
    assert np.isclose(zoom[15, 2, 3], -2 * 1.5 * 15 / 16)
    cw = camera.basic_camera_path("rotate clockwise")
    angle = -(15 / 16) * np.pi / 3
    assert np.allclose(cw[15, :, :3], [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    both = camera.basic_camera_path(["pan up", "zoom out"], combine="both")
    assert np.allclose(both[8, :, 3], [0, 0.5 * 1.5, 0.5 * 1.5 * 2])
    then = camera.basic_camera_path(["pan right", "pan up"], combine="then")
    assert then.shape == (16, 3, 4) and np.allclose(then[8:, 0, 3], -7 / 8 * 1.5)  # the second move starts where the first ended
    longer = camera.resample_poses(cw, 31)
    assert longer.shape == (31, 3, 4) and np.allclose(longer[::2], cw)
    assert np.allclose(longer[:, :, :3] @ longer[:, :, :3].transpose(0, 2, 1), np.eye(3), atol=1e-9)


@pytest.mark.parametrize("text, match", [
    ("not json", "not valid JSON"), ("[]", "empty list"), ('{"poses": 1}', "holds dict"),
    ("[[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]]", "frame 0"), ('[[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, "x"]]', "frame 0"),
    ("[[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1e999]]", "frame 1 holds a value")])
def test_broken_pose_files_are_refused_by_name(pack, text, match):
    camera = comfy_host.pack("vc_models.camera_path")
    with pytest.raises(camera.CameraPathError, match=match) as e:
        camera.parse_pose_json(text, "my_path.json")
    assert "my_path.json" in str(e.value) or "my_path.json" in str(e.value.__cause__ or "")


def test_provided_trajectory_files(pack, tmp_path):
    """The original's .txt format ("x, y" on a 256 canvas, longer lists subsampled to 16) and .npy flows."""
    trajectory = comfy_host.pack("vc_models.trajectory")
    txt = tmp_path / "curve.txt"
    txt.write_text("".join(f"{88 + i}, {173 + i // 2}\n" for i in range(40)))
    points = trajectory.read_provided_trajectory(str(txt))
    assert len(points) == 16 and points[0] == [352, 692] and points[1] == [4 * 90, 4 * 174]
    (tmp_path / "bad.txt").write_text("1, 2\nthree\n")
    with pytest.raises(trajectory.TrajectoryError, match="bad.txt, line 2"):
        trajectory.read_provided_trajectory(str(tmp_path / "bad.txt"))
    np.save(tmp_path / "flow.npy", np.zeros((16, 256, 256, 2), dtype=np.float32))
    assert trajectory.read_flow_file(str(tmp_path / "flow.npy")).shape == (16, 256, 256, 2)
    np.save(tmp_path / "wrong.npy", np.zeros((16, 256, 256), dtype=np.float32))
    with pytest.raises(trajectory.TrajectoryError, match="wrong.npy"):
        trajectory.read_flow_file(str(tmp_path / "wrong.npy"))
    with pytest.raises(trajectory.TrajectoryError, match="outside the 1024x1024 canvas"):
        trajectory.process_traj([[10, 10], [2000, 10]])
