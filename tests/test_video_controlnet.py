"""Core ControlNets on VideoCrafter MODELs: a 2-D SD-layout ControlNet per frame of the video latent.

Driven as a user's graph does: the pack's loader and conditioning nodes, core 'Load ControlNet Model' on a random
ControlNet sized to the tiny UNet, core 'Apply ControlNet (Advanced)', the core KSampler (8 frames, 3 steps) on the
tiny VideoCrafter2 (t2v) and DynamiCrafter 512 (i2v, concat latent) models. The per-frame semantics are checked
against ComfyUI's ControlNet network run frame by frame in the test.
"""
import pytest
import torch

from conftest import rel_err
from model_util import random_controlnet
from test_core_patches import FRAMES, HEIGHT, WIDTH, CHANGED, Lazy, graphs  # noqa: F401 (graphs: a fixture)

STEPS = 3

MODELS = ("tiny_t2v_v2", "tiny_dc_512")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """See conftest.one_torch_thread."""


def sample(model, positive, negative, latent, steps=STEPS):
    """Core KSampler, euler, STEPS steps (fewer than test_core_patches.sample: the ControlNet runs on every frame;
    one step where two graphs that should compute the same are compared)."""
    import nodes as core
    return core.KSampler().sample(model, 7, steps, 7.5, "euler", "normal", positive, negative, latent)[0]["samples"]


@pytest.fixture(scope="module")
def controlnet_dir(module_model_folder):
    """A models/controlnet folder ComfyUI lists."""
    return module_model_folder("controlnet")


def controlnet_file(folder, model, name, **kwargs):
    """A random ControlNet for `model`'s UNet saved in models/controlnet; returns its name as the loader lists it."""
    import safetensors.torch
    safetensors.torch.save_file(random_controlnet(model.model.diffusion_model.config, **kwargs), folder / name)
    return name


def load_controlnet(name):
    import nodes as core
    return core.ControlNetLoader().load_controlnet(name)[0]


def apply(positive, negative, control_net, image, strength=1.0, start=0.0, end=1.0):
    import nodes as core
    return core.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control_net, image, strength, start, end)


def hints(count, seed):
    """`count` different hint images at the video's pixel size (core resizes nothing)."""
    return torch.rand(count, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def controls(graphs, controlnet_dir):
    """model name -> a CONTROL_NET from 'Load ControlNet Model' sized to its UNet."""
    return Lazy(lambda name: load_controlnet(controlnet_file(controlnet_dir, graphs[name][0], f"{name}_cn.safetensors")))


@pytest.fixture(scope="module")
def unpatched(graphs):
    return Lazy(lambda name: sample(*graphs[name]))


@pytest.mark.parametrize("model_name", MODELS)
def test_controlnet_changes_the_video_and_strength_zero_does_not(graphs, controls, unpatched, model_name):
    model, positive, negative, latent = graphs[model_name]
    guided = sample(model, *apply(positive, negative, controls[model_name], hints(FRAMES, 1)), latent)
    change = rel_err(guided, unpatched[model_name])
    print(f"{model_name}: ControlNet moved the sampled latent by relative L2 {change:.3e}")
    assert torch.isfinite(guided).all() and change > CHANGED
    if model_name == MODELS[0]:  # core's Apply ControlNet leaves the conditioning as it was: one model shows it
        off = sample(model, *apply(positive, negative, controls[model_name], hints(FRAMES, 1), strength=0.0), latent)
        assert torch.equal(off, unpatched[model_name])


def recorded_calls(model):
    """A clone of `model` that records every UNet call (its input, timesteps, context, image tokens and a copy of
    the ControlNet residuals before the UNet consumes them)."""
    import comfy.patcher_extension
    calls = []

    def record(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        calls.append({"x": x.clone(), "timesteps": timesteps.clone(), "context": context.clone(),
                      "image_context": kwargs.get("image_context"),
                      "control": None if control is None else {k: [r.clone() for r in v] for k, v in control.items()}})
        return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
    patched = model.clone()
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_record", record)
    return patched, calls


def per_frame_residuals(network, call, hint, frames, videos=1):
    """ComfyUI's 2-D ControlNet network run on each frame's 4-D slice of the UNet input (noisy latent channels
    only), with that frame's hint image (one for all; image i for frame i; or per video of the `videos` in each
    cond/uncond chunk, image v*T+i), the video's timestep and its text followed by its image tokens:
    {"output": [...], "middle": [...]} of [(B*T), C, h, w], frames of a video consecutive."""
    x = call["x"][:, :4]  # DynamiCrafter's concat latent rides on the channels after the noisy latent
    context = call["context"]
    if call["image_context"] is not None:
        context = torch.cat([context, call["image_context"]], dim=1)
    out = {}
    with torch.no_grad():
        for video in range(x.shape[0]):
            for frame in range(frames):
                index = {1: 0, frames: frame}.get(hint.shape[0], (video % videos) * frames + frame)
                image = hint[index].movedim(-1, 0)[None]
                result = network(x=x[video:video + 1, :, frame], hint=image, timesteps=call["timesteps"][video:video + 1],
                                 context=context[video:video + 1])
                for key, residuals in result.items():
                    out.setdefault(key, [[] for _ in residuals])
                    for index, residual in enumerate(residuals):
                        out[key][index].append(residual)
    return {key: [torch.cat(rows) for rows in lists] for key, lists in out.items()}


@pytest.mark.parametrize("model_name", MODELS)
def test_residuals_are_the_2d_controlnet_frame_by_frame(graphs, controls, controlnet_dir, model_name):
    """A chain of two ControlNets (per-frame hints, and one image for all frames at strength 0.6): every UNet call
    gets, per frame, the sum of both networks run on that frame alone; the residuals differ between frames."""
    model, positive, negative, latent = graphs[model_name]
    second = load_controlnet(controlnet_file(controlnet_dir, model, f"{model_name}_second.safetensors", seed=5))
    per_frame, one = hints(FRAMES, 2), hints(1, 3)
    positive, negative = apply(positive, negative, controls[model_name], per_frame)
    positive, negative = apply(positive, negative, second, one, strength=0.6)
    patched, calls = recorded_calls(model)
    sample(patched, positive, negative, latent, steps=1)
    assert calls and all(call["control"] is not None for call in calls)
    first_net = controls[model_name].control_model
    for call in calls[:2]:
        ours = call["control"]
        a = per_frame_residuals(first_net, call, per_frame, FRAMES)
        b = per_frame_residuals(second.control_model, call, one, FRAMES)
        for key in ("output", "middle"):
            assert len(ours[key]) == len(a[key])
            for got, ra, rb in zip(ours[key], a[key], b[key]):
                assert rel_err(got, ra + 0.6 * rb) < 1e-5
        skip = ours["output"][0]  # batch: cond then uncond videos, FRAMES frames each
        assert rel_err(skip[1], skip[0]) > CHANGED, "per-frame hints gave the same residual to different frames"


def test_batch_of_videos_takes_one_hint_per_frame_of_each(pack, graphs, controls):
    """Two videos in the latent batch and 2*T hint images: video v's frame i gets image v*T+i."""
    model, positive, negative, _ = graphs["tiny_t2v_v2"]
    (latent,) = pack.vc_nodes.NODE_CLASSES["EmptyVideoCrafterLatent"].execute(WIDTH, HEIGHT, FRAMES, 2)
    per_video = hints(2 * FRAMES, 12)
    patched, calls = recorded_calls(model)
    sample(patched, *apply(positive, negative, controls["tiny_t2v_v2"], per_video), latent, steps=1)
    (call,) = calls
    expected = per_frame_residuals(controls["tiny_t2v_v2"].control_model, call, per_video, FRAMES, videos=2)
    for key in ("output", "middle"):
        for got, want in zip(call["control"][key], expected[key]):
            assert rel_err(got, want) < 1e-5


def test_constant_hint_is_one_image_broadcast(graphs, controls):
    model, positive, negative, latent = graphs["tiny_t2v_v2"]
    image = hints(1, 4)
    broadcast = sample(model, *apply(positive, negative, controls["tiny_t2v_v2"], image), latent, steps=1)
    repeated = sample(model, *apply(positive, negative, controls["tiny_t2v_v2"], image.repeat(FRAMES, 1, 1, 1)), latent,
                      steps=1)
    assert rel_err(repeated, broadcast) < 1e-5


def test_start_end_percent_limits_the_steps(graphs, controls):
    """end_percent 0.3: the first steps get residuals, the later ones none (core's timestep range on video)."""
    model, positive, negative, latent = graphs["tiny_t2v_v2"]
    patched, calls = recorded_calls(model)
    sample(patched, *apply(positive, negative, controls["tiny_t2v_v2"], hints(1, 6), end=0.3), latent, steps=2)
    applied = [call["control"] is not None for call in calls]
    assert applied[0] and not applied[-1], applied


def test_hint_batch_of_the_wrong_length_explains(graphs, controls):
    model, positive, negative, latent = graphs["tiny_t2v_v2"]
    with pytest.raises(ValueError, match=f"hint has 3 images but the video latent has {FRAMES} frames"):
        sample(model, *apply(positive, negative, controls["tiny_t2v_v2"], hints(3, 7)), latent)


def test_controls_that_cannot_run_per_frame_are_refused(graphs, controlnet_dir):
    """A T2I-Adapter and a Control-LoRA (both through core's loader) and a ControlNet of another width: refused by
    name before sampling."""
    import safetensors.torch
    from comfy.t2i_adapter.adapter import Adapter_light
    model, positive, negative, latent = graphs["tiny_t2v_v2"]
    adapter = Adapter_light(cin=64 * 3, nums_rb=4).state_dict()
    safetensors.torch.save_file(adapter, controlnet_dir / "t2i_adapter.safetensors")
    with pytest.raises(ValueError, match=r"T2I-Adapter \(T2IAdapter\) cannot control this VideoCrafter model"):
        sample(model, *apply(positive, negative, load_controlnet("t2i_adapter.safetensors"), hints(1, 8)), latent)
    cfg = model.model.diffusion_model.config
    lora = {"lora_controlnet": torch.zeros(1), "input_hint_block.0.weight": torch.zeros(16, 3, 3, 3)}
    safetensors.torch.save_file(lora, controlnet_dir / "control_lora.safetensors")
    with pytest.raises(ValueError, match=r"Control-LoRA \(ControlLora\) cannot control this VideoCrafter model"):
        sample(model, *apply(positive, negative, load_controlnet("control_lora.safetensors"), hints(1, 8)), latent)
    other = load_controlnet(controlnet_file(controlnet_dir, model, "wider.safetensors", model_channels=2 * cfg.model_channels))
    with pytest.raises(ValueError, match="This ControlNet was not made for this model.*residuals have"):
        sample(model, *apply(positive, negative, other, hints(1, 8)), latent)


def test_sketch_hint_is_grey_inverted_and_center_cropped(pack):
    """Against a hand computation: BT.601 grey (OpenCV's BGR2GRAY), 1 - grey, the 2.5:1 frame cropped to the
    2:1 target in its middle, then bilinear to the target size; white paper becomes 0 and black lines 1."""
    import torch.nn.functional as F
    node = pack.vc_nodes.NODE_CLASSES["VideoCrafterSketchHint"]
    frames = torch.rand(2, 40, 100, 3, generator=torch.Generator().manual_seed(9))
    (hint,) = node.execute(frames, 64, 32)
    r, g, b = frames.unbind(-1)
    inverted = 1 - (0.299 * r + 0.587 * g + 0.114 * b)
    expected = F.interpolate(inverted[:, None, :, 10:90], size=(32, 64), mode="bilinear", align_corners=False)[:, 0]
    assert hint.shape == (2, 32, 64, 3) and torch.equal(hint[..., 0], hint[..., 2])
    assert (hint[..., 0] - expected).abs().max() < 1e-6
    paper = torch.ones(1, 32, 64, 3)
    paper[:, 10:20] = 0.0
    (drawn,) = node.execute(paper, 64, 32)
    assert torch.equal(drawn[0, 10:20], torch.ones(10, 64, 3)) and torch.equal(drawn[0, :5], torch.zeros(5, 64, 3))


def test_sketch_encoder_layout_loads_and_takes_the_sketch_hint(pack, graphs, controlnet_dir):
    """ToonCrafter's sketch_encoder.ckpt layout (bare cldm keys, 1 hint channel) through core 'Load ControlNet
    Model' on the DynamiCrafter 512 UNet (ToonCrafter's): the RGB output of VideoCrafter Sketch Hint guides as its
    one grey channel does."""
    model, positive, negative, latent = graphs["tiny_dc_512"]
    control = load_controlnet(controlnet_file(controlnet_dir, model, "sketch_layout.safetensors", hint_channels=1,
                                              prefix=""))
    assert control.control_model.input_hint_block[0].in_channels == 1
    (hint,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterSketchHint"].execute(hints(FRAMES, 10), WIDTH, HEIGHT)
    rgb = sample(model, *apply(positive, negative, control, hint, strength=0.6), latent, steps=1)
    grey = sample(model, *apply(positive, negative, control, hint[..., :1], strength=0.6), latent, steps=1)
    assert torch.equal(rgb, grey)


def test_old_apply_controlnet_guides_the_negative_too(graphs, controls):
    """Core 'Apply ControlNet (OLD)' sets the control on the positive only, for core to copy to the negative: the
    video is the one 'Apply ControlNet (Advanced)' gives with the same hint on both."""
    import nodes as core
    model, positive, negative, latent = graphs["tiny_t2v_v2"]
    image = hints(FRAMES, 11)
    (old,) = core.ControlNetApply().apply_controlnet(positive, controls["tiny_t2v_v2"], image, 1.0)
    advanced = sample(model, *apply(positive, negative, controls["tiny_t2v_v2"], image), latent, steps=1)
    assert rel_err(sample(model, old, negative, latent, steps=1), advanced) < 1e-6
