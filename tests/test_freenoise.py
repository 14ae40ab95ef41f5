"""FreeNoise long video and core Context Windows on the VideoCrafter MODEL, driven through the nodes.

Golden: ../shared/reference/golden/tiny_t2v_v2.freenoise_case1.* (the original FreeNoise code):
28 frames, window 16, stride 4, seed 42, 6 DDIM steps eta 0, cfg 7.5. Tolerances of the reference
README: relative L2 <= 1e-4 for single UNet calls, <= 1e-3 for sampled latents.
"""
import inspect
import os

import pytest
import torch

import comfy_host
from model_util import model_output, run_node
from conftest import rel_err, core_context_windows, has_core_input, load_golden

EMBED_TOL = 1e-4
SAMPLE_TOL = 1e-3
SCALE_FACTOR = 0.18215
CASE = "tiny_t2v_v2.freenoise_case1"


@pytest.fixture(scope="module")
def golden():
    return load_golden(*CASE.split(".", 1))


@pytest.fixture(scope="module")
def graph(pack, models_dir, golden):
    """Loader -> FreeNoise -> text/fps conditioning -> empty latent, with the golden case's inputs."""
    import nodes as core
    _, meta = golden
    inputs = meta["inputs"]
    m = pack.vc_nodes.NODE_CLASSES
    model, clip, vae, *_ = m["VideoCrafterCheckpointLoader"].execute("tiny_t2v_v2.safetensors", "default")
    (freenoise,) = m["VideoCrafterFreeNoise"].execute(model, inputs["window_size"], inputs["window_stride"], True)
    (positive,) = core.CLIPTextEncode().encode(clip, inputs["prompt"])
    (negative,) = core.CLIPTextEncode().encode(clip, inputs["negative_prompt"])
    positive, negative = m["VideoCrafterFPSConditioning"].execute(positive, negative, inputs["fps"])
    (latent,) = m["EmptyVideoCrafterLatent"].execute(inputs["width"], inputs["height"], inputs["frames"], 1)
    return dict(model=model, freenoise=freenoise, clip=clip, vae=vae, positive=positive, negative=negative,
                latent=latent, inputs=inputs)


def record_sampler_noise(model):
    """A clone of `model` that records the noise its sampler starts from (after FreeNoise's wrapper)."""
    import comfy.patcher_extension
    seen = []

    def record(executor, noise, *args, **kwargs):
        seen.append(noise.detach().cpu().clone())
        return executor(noise, *args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "test_record_noise", record)
    return clone, seen


def test_unet_outputs_with_windows_match_the_original(graph, golden):
    tensors, _ = golden
    errors = {t: rel_err(model_output(graph["freenoise"], graph["positive"], tensors["x_T_rescheduled"], t),
                         tensors[f"eps_t{t}"]) for t in (999, 500, 1)}
    assert all(e <= EMBED_TOL for e in errors.values()), errors
    # the goldens tell windows from plain attention apart (about 8%): the plain MODEL must miss them
    plain = rel_err(model_output(graph["model"], graph["positive"], tensors["x_T_rescheduled"], 500), tensors["eps_t500"])
    assert plain > 100 * EMBED_TOL, plain


def test_videocrafter_ksampler_reproduces_the_original(pack, graph, golden):
    tensors, _ = golden
    inputs = graph["inputs"]
    model, noises = record_sampler_noise(graph["freenoise"])
    (samples,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterKSampler"].execute(
        model, graph["positive"], graph["negative"], graph["latent"], seed=inputs["seed"], steps=inputs["ddim_steps"],
        cfg=inputs["cfg"], sampler_name="videocrafter_ddim", scheduler="videocrafter_uniform", eta=0.0, denoise=1.0)
    assert torch.equal(noises[0], tensors["x_T_rescheduled"])
    err = rel_err(samples["samples"] * SCALE_FACTOR, tensors["ddim_eta0_latent"])
    assert err <= SAMPLE_TOL, err


def test_core_ksampler_reproduces_the_original(graph, golden):
    import nodes as core
    tensors, _ = golden
    inputs = graph["inputs"]
    model, noises = record_sampler_noise(graph["freenoise"])
    (samples,) = core.KSampler().sample(model, inputs["seed"], inputs["ddim_steps"], inputs["cfg"], "videocrafter_ddim_eta0",
                                        "videocrafter_uniform", graph["positive"], graph["negative"], graph["latent"], denoise=1.0)
    assert torch.equal(noises[0], tensors["x_T_rescheduled"])
    err = rel_err(samples["samples"] * SCALE_FACTOR, tensors["ddim_eta0_latent"])
    assert err <= SAMPLE_TOL, err


def test_sampler_custom_advanced_reproduces_the_original(graph, golden):
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import (SamplerCustomAdvanced, KSamplerSelect, BasicScheduler, RandomNoise,
                                                   CFGGuider)
    tensors, _ = golden
    inputs = graph["inputs"]
    model, noises = record_sampler_noise(graph["freenoise"])
    (noise,) = run_node(RandomNoise, inputs["seed"])
    (guider,) = run_node(CFGGuider, model, graph["positive"], graph["negative"], inputs["cfg"])
    (sampler,) = run_node(KSamplerSelect, "videocrafter_ddim_eta0")
    # The original's "6 steps" are 7 (range(0, 1000, 1000 // 6) has 7 entries, as the KSamplers do);
    # BasicScheduler keeps only the last steps + 1 sigmas of a schedule, so take the whole schedule
    (sigmas,) = run_node(BasicScheduler, model, "videocrafter_uniform", inputs["ddim_steps"], 1.0)
    full = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "videocrafter_uniform",
                                           inputs["ddim_steps"]).cpu()
    assert torch.equal(sigmas, full[-len(sigmas):])
    sigmas = full
    output, _denoised = run_node(SamplerCustomAdvanced, noise, guider, sampler, sigmas, graph["latent"])
    assert torch.equal(noises[0], tensors["x_T_rescheduled"])
    err = rel_err(output["samples"] * SCALE_FACTOR, tensors["ddim_eta0_latent"])
    assert err <= SAMPLE_TOL, err


# ---- window edge cases -------------------------------------------------------------------------

def naive_windowed_attention(q, k, v, size, stride):
    """The README's statement, one window at a time: softmax attention on each window (s, s + W),
    s = 0, S, ... <= T - W, weighted by 1..W/2..1, summed, divided by the summed weights (0 if none)."""
    t = q.shape[1]
    half = (size + 1) // 2
    weights = torch.tensor(list(range(1, half + 1)) + list(range(size // 2, 0, -1)), dtype=q.dtype)
    value = torch.zeros_like(q)
    count = torch.zeros(t, dtype=q.dtype)
    for s in range(0, t - size + 1, stride):
        scores = q[:, s:s + size] @ k[:, s:s + size].transpose(1, 2) / q.shape[-1] ** 0.5
        value[:, s:s + size] += (scores.softmax(-1) @ v[:, s:s + size]) * weights[None, :, None]
        count[s:s + size] += weights
    return torch.where(count[None, :, None] > 0, value / count.clamp(min=1e-30)[None, :, None], value)


@pytest.mark.parametrize("frames,size,stride", [(28, 16, 4), (30, 16, 4), (23, 5, 3), (64, 16, 4)])
def test_batched_windows_equal_the_statement(pack, frames, size, stride):
    """Batched windows (no loop over frames or windows) against one-window-at-a-time attention,
    including frames past the last whole window (30 = 16 + 3 x 4 + 2: they get no temporal attention)."""
    freenoise = comfy_host.pack("vc_models.freenoise")
    torch.manual_seed(0)
    q, k, v = (torch.randn(6, frames, 8) for _ in range(3))
    windows = freenoise.FrameWindows.from_options({freenoise.WINDOWS_KEY: (size, stride)}, frames)

    def attention(q, k, v):
        return (q @ k.transpose(1, 2) / q.shape[-1] ** 0.5).softmax(-1) @ v

    ours = windows.attend(attention, q, k, v)
    expected = naive_windowed_attention(q, k, v, size, stride)
    assert rel_err(ours, expected) < 1e-6
    tail = freenoise.uncovered_frames(frames, size, stride)
    assert tail == (frames - size) % stride
    if tail:
        assert torch.count_nonzero(ours[:, frames - tail:]) == 0


def test_noise_rescheduling_past_whole_strides(pack, golden):
    """28 frames give the golden; 30 frames keep those 28 and fill frames 28-29 from the next shuffle."""
    freenoise = comfy_host.pack("vc_models.freenoise")
    tensors, _ = golden
    x = tensors["x_T"]
    assert torch.equal(freenoise.reschedule_noise(x, 16, 4, 42), tensors["x_T_rescheduled"])
    torch.manual_seed(1)
    longer = torch.cat([x, torch.randn(1, 4, 2, *x.shape[-2:])], dim=2)
    out = freenoise.reschedule_noise(longer, 16, 4, 42)
    assert torch.equal(out[:, :, :28], tensors["x_T_rescheduled"])
    sources = [next(j for j in range(12, 16) if torch.equal(out[:, :, i], out[:, :, j])) for i in (28, 29)]
    assert len(set(sources)) == 2


def sample_plain_and_freenoise(pack, graph, frames, size=16, stride=4, steps=2):
    m = pack.vc_nodes.NODE_CLASSES
    model = graph["model"]
    (patched,) = m["VideoCrafterFreeNoise"].execute(model, size, stride, True)
    (latent,) = m["EmptyVideoCrafterLatent"].execute(128, 64, frames, 1)
    out = []
    for mdl in (model, patched):
        (samples,) = m["VideoCrafterKSampler"].execute(mdl, graph["positive"], graph["negative"], latent, seed=7,
                                                        steps=steps, cfg=7.5, sampler_name="videocrafter_ddim",
                                                        scheduler="videocrafter_uniform", eta=1.0, denoise=1.0)
        out.append(samples["samples"])
    return out


@pytest.mark.parametrize("frames", [16, 8])
def test_at_most_one_window_of_frames_samples_exactly_as_plain(pack, graph, frames):
    """frames == window: one window is all frames, so FreeNoise changes nothing, bit for bit. Fewer
    frames than the window (the original produces no output there): plain sampling, documented."""
    plain, freenoise = sample_plain_and_freenoise(pack, graph, frames)
    assert torch.equal(plain, freenoise)


def test_batch_of_two_videos_each_as_alone(pack, graph, golden):
    """Windows and rescheduling act per video: in a batch of two, the first video's UNet output is the golden."""
    tensors, _ = golden
    x = tensors["x_T_rescheduled"]
    batch = torch.cat([x, torch.flip(x, dims=[2])])
    positive = [[graph["positive"][0][0].repeat(2, 1, 1), graph["positive"][0][1]]]
    eps = model_output(graph["freenoise"], positive, batch, 500)
    assert rel_err(eps[:1], tensors["eps_t500"]) <= EMBED_TOL
    alone = model_output(graph["freenoise"], graph["positive"], batch[1:], 500)
    assert rel_err(eps[1:], alone) <= EMBED_TOL


def test_bf16_weights_with_freenoise(pack, graph, golden):
    """FreeNoise on bf16 weights stays near the float32 original (bf16 rounding only)."""
    tensors, _ = golden
    model = pack.vc_nodes.NODE_CLASSES["VideoCrafterCheckpointLoader"].execute("tiny_t2v_v2.safetensors", "bf16")[0]
    (patched,) = pack.vc_nodes.NODE_CLASSES["VideoCrafterFreeNoise"].execute(model, 16, 4, True)
    err = rel_err(model_output(patched, graph["positive"], tensors["x_T_rescheduled"], 500), tensors["eps_t500"])
    assert err < 0.05, err


def test_stride_larger_than_window_is_refused(pack, graph):
    with pytest.raises(ValueError, match="window_stride"):
        pack.vc_nodes.NODE_CLASSES["VideoCrafterFreeNoise"].execute(graph["model"], 16, 20, True)


# ---- core Context Windows on the same MODEL -----------------------------------------------------

def causal_fix_off():
    """0.33's `causal_window_fix` (on by default) adds the first frame to every later window, for causal
    video VAEs; these tests count 16-frame windows, so they turn it off where the host has it."""
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode
    return {"causal_window_fix": False} if has_core_input(ContextWindowsManualNode, "causal_window_fix") else {}


def test_core_context_windows_make_a_64_frame_video(pack, graph):
    """Core 'Context Windows (Manual)' (dim 2, window 16) samples 64 frames in windows; the per-video
    fps and text conditionings reach every window; the VAE decodes 64 frames."""
    m = pack.vc_nodes.NODE_CLASSES
    windowed = core_context_windows(graph["model"], context_length=16, context_overlap=4,
                                    **causal_fix_off())
    windows_seen = []

    def count_windows(executor, x, *args, **kwargs):
        windows_seen.append(x.shape[2])
        return executor(x, *args, **kwargs)

    import comfy.patcher_extension
    windowed.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_count", count_windows)
    (latent,) = m["EmptyVideoCrafterLatent"].execute(64, 64, 64, 1)
    (samples,) = m["VideoCrafterKSampler"].execute(windowed, graph["positive"], graph["negative"], latent, seed=3,
                                                    steps=2, cfg=7.5, sampler_name="videocrafter_ddim",
                                                    scheduler="videocrafter_uniform", eta=1.0, denoise=1.0)
    assert samples["samples"].shape == (1, 4, 64, 8, 8)
    assert windows_seen and set(windows_seen) == {16}, windows_seen
    (frames,) = m["VideoCrafterVAEDecode"].execute(samples, graph["vae"], frames_per_batch=16)
    assert frames.shape == (64, 64, 64, 3) and torch.isfinite(frames).all()
    assert frames.std(dim=(1, 2, 3)).min() > 0  # every frame has content, none left blank


def test_context_window_cuts_a_per_frame_concat_conditioning(pack, graph):
    """A conditioning shaped like the latent [B, C, T, h, w] (DynamiCrafter's concat latent) arrives whole
    from ComfyUI 0.3.75's context handler; the model cuts it to the window's frames (0.33's handler cuts it
    itself: one already of the window's length is left alone)."""
    import comfy.context_windows
    base = graph["model"].model
    # 0.33's window needs the video's length (`total_frames`); 0.3.75's has no such argument
    takes_total = "total_frames" in inspect.signature(comfy.context_windows.IndexListContextWindow).parameters
    window = comfy.context_windows.IndexListContextWindow(list(range(20, 36)), dim=2,
                                                          **({"total_frames": 64} if takes_total else {}))
    concat = torch.arange(64, dtype=torch.float32).reshape(1, 1, 64, 1, 1).expand(1, 0, 64, 8, 16)
    context_windows = comfy_host.pack("vc_models.context_windows")
    cut = context_windows.frames_of_context_window(torch.arange(64.0).reshape(1, 1, 64, 1, 1), 16,
                                                   {"context_window": window})
    assert cut.flatten().tolist() == list(range(20, 36))
    torch.manual_seed(0)
    x = torch.randn(1, 4, 16, 8, 16)
    sigma = base.model_sampling.sigmas[500].reshape(1)
    context = graph["positive"][0][0]
    fps = torch.tensor([16.0])
    with torch.no_grad():
        ours = base.apply_model(x, sigma, c_concat=concat, c_crossattn=context, fps=fps,
                                transformer_options={"context_window": window})
        plain = base.apply_model(x, sigma, c_crossattn=context, fps=fps, transformer_options={})
    assert torch.equal(ours, plain)


def test_reschedule_noise_off_keeps_comfyui_noise(pack, graph):
    import comfy.sample
    m = pack.vc_nodes.NODE_CLASSES
    (patched,) = m["VideoCrafterFreeNoise"].execute(graph["model"], 16, 4, False)
    model, noises = record_sampler_noise(patched)
    (latent,) = m["EmptyVideoCrafterLatent"].execute(64, 64, 20, 1)
    m["VideoCrafterKSampler"].execute(model, graph["positive"], graph["negative"], latent, seed=5, steps=1, cfg=7.5,
                                       sampler_name="videocrafter_ddim", scheduler="videocrafter_uniform", eta=0.0, denoise=1.0)
    assert torch.equal(noises[0], comfy.sample.prepare_noise(latent["samples"], 5))


def test_relative_position_model_runs_windowed(pack, models_dir):
    """VideoCrafter1 (relative position embeddings in the temporal attention) with FreeNoise: each window
    gets the position table of a 16-frame clip, as in the original."""
    import nodes as core
    m = pack.vc_nodes.NODE_CLASSES
    model, clip, *_ = m["VideoCrafterCheckpointLoader"].execute("tiny_t2v_v1.safetensors", "default")
    assert model.model.diffusion_model.config.relative_position
    (patched,) = m["VideoCrafterFreeNoise"].execute(model, 16, 4, True)
    (positive,) = core.CLIPTextEncode().encode(clip, "a red ball")
    torch.manual_seed(0)
    x = torch.randn(1, 4, 20, 8, 8)
    windowed = model_output(patched, positive, x, 500)
    plain = model_output(model, positive, x, 500)
    assert torch.isfinite(windowed).all()
    assert 1e-3 < rel_err(windowed, plain) < 0.5


def test_core_context_windows_keep_image_tokens_per_video(pack, models_dir):
    """Image-to-video under core Context Windows: every window's UNet call gets 16 frames and the image
    tokens (per video) whole, for the positive and the negative."""
    import nodes as core
    import comfy.patcher_extension
    m = pack.vc_nodes.NODE_CLASSES
    model, clip, vae, clip_vision, projector = m["VideoCrafterCheckpointLoader"].execute("tiny_i2v_v1.safetensors", "default")
    (positive,) = core.CLIPTextEncode().encode(clip, "a boat")
    (negative,) = core.CLIPTextEncode().encode(clip, "")
    image = torch.rand(1, 64, 64, 3)
    positive, negative = m["VideoCrafterImageEncode"].execute(clip_vision, projector, image, positive, negative)
    windowed = core_context_windows(model, context_length=16, context_overlap=4, **causal_fix_off())
    calls = []

    def check_call(executor, x, *args, **kwargs):
        calls.append((x.shape[0], x.shape[2], tuple(kwargs["image_context"].shape)))
        return executor(x, *args, **kwargs)

    windowed.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_check", check_call)
    (latent,) = m["EmptyVideoCrafterLatent"].execute(64, 64, 28, 1)
    (samples,) = m["VideoCrafterKSampler"].execute(windowed, positive, negative, latent, seed=1, steps=1, cfg=7.5,
                                                    sampler_name="videocrafter_ddim", scheduler="videocrafter_uniform",
                                                    eta=0.0, denoise=1.0)
    assert samples["samples"].shape == (1, 4, 28, 8, 8) and torch.isfinite(samples["samples"]).all()
    tokens = tuple(positive[0][1][comfy_host.pack("vc_models.families").IMAGE_TOKENS_KEY].shape[1:])
    assert len(calls) >= 2 and all(c == (2, 16, (2,) + tokens) for c in calls), calls


def test_core_context_windows_on_dynamicrafter(pack, models_dir):
    """DynamiCrafter under core Context Windows at this host's defaults (on 0.33 with `causal_window_fix`:
    later windows get the first frame too): every UNet call gets its window's frames of the per-frame image
    latent (cut once, by the pack on 0.3.75 and by core on 0.33) and the 20 frames sample finite."""
    import nodes as core
    m = pack.vc_nodes.NODE_CLASSES
    if not os.path.exists(models_dir / "tiny_dc_512.safetensors"):
        os.symlink(os.path.join(comfy_host.GOLDEN, "tiny_dc_512.safetensors"), models_dir / "tiny_dc_512.safetensors")
    model, clip, vae, clip_vision, projector = m["VideoCrafterCheckpointLoader"].execute("tiny_dc_512.safetensors", "default")
    (positive,) = core.CLIPTextEncode().encode(clip, "a boat")
    (negative,) = core.CLIPTextEncode().encode(clip, "")
    torch.manual_seed(0)
    image = torch.rand(1, 64, 128, 3)
    positive, negative, latent = m["DynamiCrafterConditioning"].execute(
        positive, negative, vae, clip_vision, projector, image, "i2v", 128, 64, 20, 1, 24)
    windowed = core_context_windows(model, context_length=16, context_overlap=4)
    unet_frames = []
    hook = model.model.diffusion_model.register_forward_pre_hook(
        lambda module, args: unet_frames.append((args[0].shape[1], args[0].shape[2])))
    try:
        (samples,) = m["VideoCrafterKSampler"].execute(windowed, positive, negative, latent, seed=1, steps=1, cfg=7.5,
                                                        sampler_name="videocrafter_ddim",
                                                        scheduler="videocrafter_uniform", eta=0.0, denoise=1.0)
    finally:
        hook.remove()
    assert samples["samples"].shape == (1, 4, 20, 8, 16) and torch.isfinite(samples["samples"]).all()
    # noise latent + image latent channels, window frames: 16 (17 with the causal anchor frame)
    assert len(unet_frames) >= 2 and {c for c, _ in unet_frames} == {8}, unet_frames
    assert {t for _, t in unet_frames} <= {16, 17} and unet_frames[0][1] == 16, unet_frames
