"""MotionCtrl over long videos: a camera path and an object trajectory on 24 frames, sampled with VideoCrafter
FreeNoise (window 16, stride 4) and with core Context Windows (Manual), on the tiny MotionCtrl model.

What a user expects: the MotionCtrl nodes build one pose and one flow frame per frame of the whole video, and every
frame is steered by its own. FreeNoise keeps all frames in each UNet call (only the temporal attention is windowed;
`cc_projection` then mixes each frame's pose into that frame's features, as the original FreeNoise would with
MotionCtrl's temporal block), so each frame's pose must reach `cc_projection` at its frame. Core Context Windows run
the whole UNet on each window: each call must get the poses and the flow of its window's frames (on 0.33 with
`causal_window_fix`, the frame before the window too, as the latent gets it).
"""
import pytest
import torch

import comfy_host
from conftest import core_context_windows
from test_motionctrl_sampling import motionctrl_file, input_folder, pipeline, motion_conditioning, nodes  # noqa: F401

FRAMES, WINDOW, STRIDE = 24, 16, 4
SAMPLER = dict(seed=3, steps=1, cfg=7.5, sampler_name="videocrafter_ddim", scheduler="videocrafter_uniform", eta=1.0,
               denoise=1.0)


def families():
    return comfy_host.pack("vc_models.families")


def long_video(pack, p, frames):
    """The case's camera path (pose file) and trajectory points through the nodes onto a `frames`-frame 64x64 latent;
    cond_T 0: the flow steers every step."""
    (latent,) = nodes(pack)["EmptyVideoCrafterLatent"].execute(64, 64, frames, 1)
    positive, negative = motion_conditioning(pack, p, "both", cond_t=0, model_latent=latent)
    return positive, negative, latent


def sample(pack, model, positive, negative, latent):
    (samples,) = nodes(pack)["VideoCrafterKSampler"].execute(model, positive, negative, latent, **SAMPLER)
    return samples["samples"]


@pytest.fixture
def unet_calls(pipeline):
    """Per UNet call: the latent's frame count, the camera poses and flow it was given, the context window (or None)."""
    calls = []

    def record(module, args, kwargs):
        options = kwargs.get("transformer_options") or {}
        calls.append(dict(frames=args[0].shape[2], poses=kwargs.get("camera_poses"), flow=kwargs.get("trajectory"),
                          window=options.get("context_window")))

    hook = pipeline["model"].model.diffusion_model.register_forward_pre_hook(record, with_kwargs=True)
    yield calls
    hook.remove()


def test_freenoise_feeds_every_frame_its_own_pose(pack, pipeline, unet_calls, monkeypatch):
    """24 frames with FreeNoise sample; the temporal attention runs over windows, and every temporal block's
    cc_projection gets, at each frame, that frame's pose of the node's path (not the first window's 16), for the
    positive and the negative; the UNet gets the node's flow of all 24 frames."""
    fam, freenoise = families(), comfy_host.pack("vc_models.freenoise")
    positive, negative, latent = long_video(pack, pipeline, FRAMES)
    poses, flow = positive[0][1][fam.MOTION_CAMERA_KEY], positive[0][1][fam.MOTION_TRAJECTORY_KEY]
    assert poses.shape[:2] == (1, FRAMES) and not torch.equal(poses[:, :WINDOW], poses[:, FRAMES - WINDOW:])
    windowed, original_attend = [], freenoise.FrameWindows.attend

    def attend(self, *args):
        windowed.append(self.count)
        return original_attend(self, *args)

    monkeypatch.setattr(freenoise.FrameWindows, "attend", attend)
    projected = []
    unet = pipeline["model"].model.diffusion_model
    hooks = [m.register_forward_pre_hook(lambda module, args: projected.append(args[0][..., -poses.shape[-1]:]))
             for name, m in unet.named_modules() if name.endswith("cc_projection")]
    try:
        (patched,) = nodes(pack)["VideoCrafterFreeNoise"].execute(pipeline["model"], WINDOW, STRIDE, True)
        out = sample(pack, patched, positive, negative, latent)
    finally:
        for hook in hooks:
            hook.remove()
    assert out.shape == (1, 4, FRAMES, 8, 8) and torch.isfinite(out).all()
    assert windowed and set(windowed) == {(FRAMES - WINDOW) // STRIDE + 1}
    assert projected and all(p.shape[1] == FRAMES for p in projected)
    assert all(torch.equal(p, poses[0].to(p).expand_as(p)) for p in projected)
    assert unet_calls and all(c["frames"] == FRAMES and c["window"] is None for c in unet_calls)
    for call in unet_calls:
        assert call["flow"].shape[2] == FRAMES
        assert all(torch.equal(row, flow[0].to(row)) or not row.any() for row in call["flow"])


def test_freenoise_window_covering_every_frame_samples_as_plain(pack, pipeline):
    """A window as long as the video: FreeNoise with the camera path and the flow gives the plain sample exactly."""
    positive, negative, latent = long_video(pack, pipeline, WINDOW)
    (patched,) = nodes(pack)["VideoCrafterFreeNoise"].execute(pipeline["model"], WINDOW, STRIDE, True)
    plain = sample(pack, pipeline["model"], positive, negative, latent)
    assert torch.equal(sample(pack, patched, positive, negative, latent), plain)


def test_core_context_windows_give_each_window_its_frames_motion(pack, pipeline, unet_calls):
    """Core Context Windows (Manual) at this host's defaults (window 16, overlap 4) on 24 frames: every UNet call
    gets the node's poses and flow at exactly its window's frames (the positive's flow or the negative's zeros per
    row), the windows cover every frame, and the video samples finite."""
    fam = families()
    positive, negative, latent = long_video(pack, pipeline, FRAMES)
    poses, flow = positive[0][1][fam.MOTION_CAMERA_KEY], positive[0][1][fam.MOTION_TRAJECTORY_KEY]
    windowed = core_context_windows(pipeline["model"], context_length=WINDOW, context_overlap=4)
    out = sample(pack, windowed, positive, negative, latent)
    assert out.shape == (1, 4, FRAMES, 8, 8) and torch.isfinite(out).all()
    covered, rows = set(), {"flow": 0, "zero": 0}
    assert len(unet_calls) >= 2
    for call in unet_calls:
        window = call["window"]
        anchor = getattr(window, "causal_anchor_index", None)  # 0.33's causal_window_fix: an anchor frame leads
        frames = ([anchor] if anchor is not None and anchor >= 0 else []) + list(window.index_list)
        covered.update(window.index_list)
        assert call["frames"] == len(frames) and call["poses"].shape[1] == len(frames)
        assert all(torch.equal(row, poses[0, frames].to(row)) for row in call["poses"]), frames
        for row in call["flow"]:
            kind = "flow" if torch.equal(row, flow[0][:, frames].to(row)) else "zero" if not row.any() else "wrong"
            assert kind != "wrong", frames
            rows[kind] += 1
    assert covered == set(range(FRAMES)) and rows["flow"] and rows["zero"], (covered, rows)
