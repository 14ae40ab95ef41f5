"""MotionCtrl in a real ComfyUI server, as a user's graph runs it: the frames SaveImage writes against the original's
(tiny_motionctrl.case1, both controls, DDIM eta 0), and each refusal with the node's name and the fix.

The graph: the pack's loader, CLIP Text Encode (the prompt with MotionCtrl's suffix; its negative prompt), MotionCtrl
Camera Path (the case's 8 poses as a pose file in the input folder), MotionCtrl Object Trajectory (the case's points),
Empty VideoCrafter Latent, the pack's KSampler, VAE Decode, core SaveImage.

Frames: the sampled latent differs from the original's by about 1.1e-3 in float32 (tests/test_motionctrl_sampling.py
measures why), which moves the decoded frames by 4.3e-4 (relative L2, measured): far below an 8-bit level. SaveImage
truncates 255 x value to an integer, so the frames are compared with the original's decoded video truncated the same
way. An error that small flips a pixel to the next level only where the value lies that close to a level boundary:
measured, no pixel more than one level apart and 4.0% of them one level apart (the bound is twice that); the case
without its trajectory (the latent 1.7e-2 away) would fail it.
"""
import json
import os

import numpy as np
import pytest

from conftest import load_golden, tiny_motionctrl_state_dict
from server_util import ComfyServer, http_json, output_files, run_prompt

BOTH, CAMERA_ONLY = "tiny_motionctrl.safetensors", "tiny_motionctrl_videocrafter2_cmcm.safetensors"
POSE_FILE = "case1_camera.json"
UNEQUAL_PIXELS = 0.08


@pytest.fixture(scope="module")
def server(pack, module_tmp):
    """A server with the tiny MotionCtrl (both controls), the same tensors under the VideoCrafter2 cmcm release's name
    (camera only), tiny VideoCrafter2, and the case's camera path in its input folder."""
    import safetensors.torch
    golden, _ = load_golden("tiny_motionctrl")
    srv = ComfyServer(module_tmp("motionctrl_server"), checkpoints=("tiny_t2v_v2.safetensors",),
                      env={"OMP_NUM_THREADS": "1"})
    checkpoints = os.path.join(srv.models_dir, "checkpoints")
    sd = tiny_motionctrl_state_dict()
    for name in (BOTH, CAMERA_ONLY):
        safetensors.torch.save_file(sd, os.path.join(checkpoints, name))
    with open(os.path.join(srv.input_dir, POSE_FILE), "w") as f:
        json.dump(golden["camera_poses"][0].double().tolist(), f)
    srv.start()
    yield srv
    srv.stop()


def case_graph(ckpt=BOTH, eta=0.0, trajectory=True, latent_width=None):
    """The case as an API graph; `latent_width`: the latent scaled to that width by core Upscale Latent."""
    import comfy_host
    golden, meta = load_golden("tiny_motionctrl")
    inputs, family = meta["inputs"], comfy_host.pack("vc_models.families").MotionCtrl
    latent = ["latent", 0]
    g = {
        "loader": {"class_type": "VideoCrafterCheckpointLoader", "inputs": {"ckpt_name": ckpt, "weight_dtype": "default"}},
        "prompt": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1],
                                                              "text": f"{inputs['prompt']}, {family.prompt_suffix}"}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": family.negative_prompt}},
        "latent": {"class_type": "EmptyVideoCrafterLatent", "inputs": {"width": inputs["width"], "height": inputs["height"],
                                                                       "frames": inputs["frames"], "batch_size": 1}},
        "camera": {"class_type": "MotionCtrlCameraPath", "inputs": {
            "positive": ["prompt", 0], "negative": ["negative", 0], "latent": latent, "move": "static",
            "second_move": "none", "combine": "both", "speed": 1.0, "pose_file": POSE_FILE}},
        "sampler": {"class_type": "VideoCrafterKSampler", "inputs": {
            "model": ["loader", 0], "positive": ["camera", 0], "negative": ["camera", 1], "latent_image": latent,
            "seed": inputs["seed"], "steps": inputs["ddim_steps"], "cfg": inputs["cfg"], "sampler_name": "videocrafter_ddim",
            "scheduler": "videocrafter_uniform", "eta": eta, "denoise": 1.0}},
        "decode": {"class_type": "VideoCrafterVAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["loader", 2],
                                                                     "frames_per_batch": 8}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "motionctrl/case1"}},
    }
    if latent_width:
        g["scaled"] = {"class_type": "LatentUpscale", "inputs": {"samples": ["latent", 0], "upscale_method": "nearest-exact",
                                                                 "width": latent_width, "height": inputs["height"],
                                                                 "crop": "disabled"}}
        latent = ["scaled", 0]
        g["camera"]["inputs"]["latent"] = g["sampler"]["inputs"]["latent_image"] = latent
    if trajectory:
        points = "\n".join(f"{x}, {y}" for x, y in meta["trajectory_points"])
        g["trajectory"] = {"class_type": "MotionCtrlObjectTrajectory", "inputs": {
            "positive": ["camera", 0], "negative": ["camera", 1], "latent": latent, "points": points,
            "trajectory_file": "none", "cond_t": inputs["cond_T"]}}
        g["sampler"]["inputs"].update(positive=["trajectory", 0], negative=["trajectory", 1])
    return g


def execution_error(server, graph):
    entry = run_prompt(server, graph, timeout=600)
    assert entry["status"]["status_str"] == "error", entry["status"]
    (error,) = [body for kind, body in entry["status"]["messages"] if kind == "execution_error"]
    return error


def test_nodes_are_served_with_tooltips(server):
    for node in ("MotionCtrlCameraPath", "MotionCtrlObjectTrajectory"):
        info = http_json(f"{server.url}/object_info/{node}")[node]
        assert info["category"] == "VideoCrafter/MotionCtrl" and info["description"]
        assert all(spec[1].get("tooltip") for spec in info["input"]["required"].values()), node
    info = http_json(f"{server.url}/object_info/MotionCtrlCameraPath")["MotionCtrlCameraPath"]
    assert POSE_FILE in info["input"]["required"]["pose_file"][1]["options"]


def test_saved_frames_are_the_originals(server):
    """SaveImage's PNGs of the case (both controls, eta 0) against the original's decoded video, truncated to 8 bits
    as SaveImage truncates (see the module docstring)."""
    from PIL import Image
    golden, meta = load_golden("tiny_motionctrl")
    entry = run_prompt(server, case_graph(), timeout=600)
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log_tail())
    files = sorted(output_files(server, entry))
    frames = np.stack([np.asarray(Image.open(path).convert("RGB"), dtype=np.int32) for path in files])
    video = golden["ddim_both_eta0_video"].movedim(0, -1).numpy()  # [T, H, W, 3] in about [-1, 1]
    expected = np.clip(255.0 * np.clip((video + 1) / 2, 0, 1), 0, 255).astype(np.uint8).astype(np.int32)
    assert frames.shape == expected.shape == (meta["inputs"]["frames"], 64, 128, 3)
    difference = np.abs(frames - expected)
    assert difference.max() <= 1 and (difference > 0).mean() <= UNEQUAL_PIXELS, (difference.max(), (difference > 0).mean())


def test_trajectory_on_the_camera_only_file_is_refused_by_name(server):
    error = execution_error(server, case_graph(ckpt=CAMERA_ONLY))
    assert error["node_id"] == "sampler"
    message = error["exception_message"]
    assert "'MotionCtrl Object Trajectory'" in message and "controls the camera only" in message and "motionctrl.pth" in message
    entry = run_prompt(server, case_graph(ckpt=CAMERA_ONLY, trajectory=False), timeout=600)  # camera alone runs
    assert entry["status"]["status_str"] == "success", entry["status"]


def test_a_size_the_adapter_cannot_take_is_refused_by_name(server):
    error = execution_error(server, case_graph(latent_width=200))
    assert error["node_id"] == "trajectory"
    assert "MotionCtrl Object Trajectory: the video is 200x64" in error["exception_message"]
    assert "multiples of 64" in error["exception_message"]


def test_motion_on_a_model_without_motion_control_is_refused_by_name(server):
    error = execution_error(server, case_graph(ckpt="tiny_t2v_v2.safetensors", trajectory=False))
    assert error["node_id"] == "sampler"
    assert "'MotionCtrl Camera Path'" in error["exception_message"] and "has no motion control" in error["exception_message"]
