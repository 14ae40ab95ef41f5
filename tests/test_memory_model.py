"""The UNet memory model (vc_models/memory_model.py) as core uses it, and the reduced-precision weights.

- At the released VideoCrafter2 size (the model built on the meta device from the released key shapes: no weights,
  no compute) core's own cond batching (comfy.samplers.calc_cond_batch) runs CFG at 320x512x16 as ONE batch-2
  call with this machine's free memory, and splits a request that cannot fit.
- The estimate against the activation peak of real UNet calls of the tiny model on the CPU, counted op by op
  (scripts/benchmark.py activation_peak), with the host's attention and with PyTorch's fused one.
- bf16 and fp8 weights sample the tiny model close to fp32 weights.
"""
import math
import uuid

import psutil
import pytest
import torch

import comfy_host
import benchmark  # scripts/, on sys.path through comfy_host
from conftest import require_reference
from model_util import sample_video

# Counted on the meta device at the released VideoCrafter2 widths (scripts/benchmark.py --memory-model):
# activations of one fp32 UNet call on a 16-frame 320x512 latent, batch 1 (fused attention)
RELEASED_16_FRAMES_PEAK = 855 * 2 ** 20


@pytest.fixture(scope="module")
def mods(pack):
    return {name: comfy_host.pack(f"vc_models.{name}")
            for name in ("model_base", "model_patcher", "checkpoint", "registry", "loader")}


def released_model(mods):
    """The VideoCrafter2 MODEL at its released size on the meta device (core's patcher class around it)."""
    require_reference("keys/t2v_512_v2.0.keys.tsv")  # the released key shapes
    config = benchmark.released_unet_config("t2v_512_v2.0")
    info = mods["checkpoint"].CheckpointInfo(entry=mods["registry"].entry("vc2_t2v_512"), unet=config)
    alphas_cumprod = torch.linspace(0.999, 0.01, 1000)
    model_config = mods["model_base"].VideoCrafterModelConfig(info, alphas_cumprod, torch.ones(1400))
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, device=torch.device("meta"))
    patcher = mods["model_patcher"].core_model_patcher_class()(model, load_device=torch.device("cpu"),
                                                              offload_device=torch.device("cpu"))
    model.current_patcher = patcher
    return model


def cfg_batches(model, frames, height=320, width=512):
    """The batch sizes of the UNet calls core's calc_cond_batch makes for one CFG step (cond + uncond)."""
    import comfy.samplers
    x = torch.zeros(1, 4, frames, height // 8, width // 8)
    conds = []
    for kind in ("positive", "negative"):
        cond = [{"cross_attn": torch.zeros(1, 77, 1024), "model_conds": {}, "uuid": uuid.uuid4()}]
        comfy.samplers.encode_model_conds(model.extra_conds, cond, x, torch.device("cpu"), kind)
        conds.append(cond)
    calls = []

    def record(apply_model, args):
        calls.append(len(args["cond_or_uncond"]))
        return torch.zeros_like(args["input"])
    comfy.samplers.calc_cond_batch(model, conds, x, torch.full((1,), 500.0),
                                   {"model_function_wrapper": record, "transformer_options": {}})
    return calls


def test_released_size_cfg_is_one_batch_2_call_and_a_request_too_large_is_split(mods):
    model = released_model(mods)
    assert cfg_batches(model, 16) == [2]
    # frames for which the activations of the batch-2 call alone exceed this machine's whole memory
    frames = 16 * math.ceil(psutil.virtual_memory().total / (2 * RELEASED_16_FRAMES_PEAK))
    assert cfg_batches(model, frames) == [1, 1]


def test_estimate_grows_linearly_with_frames_and_batch(mods):
    model = released_model(mods)
    base = model.memory_required([1, 4, 16, 40, 64])
    assert base < 3 * RELEASED_16_FRAMES_PEAK  # core's image formula said 20x this
    for batch, frames in ((2, 16), (1, 64), (2, 64)):
        assert model.memory_required([batch, 4, frames, 40, 64]) / base == pytest.approx(batch * frames / 16, rel=0.01)


@pytest.fixture(scope="module")
def tiny(pack, models_dir):
    return pack.vc_nodes.NODE_CLASSES["VideoCrafterCheckpointLoader"].execute("tiny_t2v_v2.safetensors", "default")[0]


@pytest.mark.parametrize("attention, shape", [("host", (1, 4, 8, 16, 16)), ("host", (2, 4, 8, 16, 16)),
                                              ("pytorch", (2, 4, 8, 16, 16)), ("pytorch", (1, 4, 4, 32, 32))])
def test_estimate_matches_the_measured_peak_of_the_tiny_unet(tiny, monkeypatch, attention, shape):
    """Within 25% of the live activation bytes counted over a real forward on the CPU."""
    import comfy.ldm.modules.attention as comfy_attention
    if attention == "pytorch":
        monkeypatch.setattr(comfy_attention, "optimized_attention", comfy_attention.attention_pytorch)
    base = tiny.model
    x, timesteps, context, extra = benchmark.unet_inputs(base.info.unet, shape, device="cpu", dtype=torch.float32)
    measured = benchmark.activation_peak(lambda: base.diffusion_model(x, timesteps, context, transformer_options={},
                                                                         **extra))
    estimate = base.memory_required(list(shape))
    assert estimate == pytest.approx(measured, rel=0.25), (estimate / 2 ** 20, measured / 2 ** 20)


@pytest.mark.parametrize("fused", [True, False])
def test_estimate_follows_the_attention_the_caller_names(tiny, fused):
    """Newer ComfyUI passes `memory_efficient_attention` to memory_required, so an attention override on the MODEL
    changes the estimate. With SDPA (named as True) or core's basic attention (named by its function: whole score
    matrices) as the MODEL's override, each estimate is within 25% of the peak measured, and they differ > 1.5x."""
    import comfy.ldm.modules.attention as comfy_attention
    kinds = {True: comfy_attention.attention_pytorch, False: comfy_attention.attention_basic}
    named = {True: True, False: comfy_attention.attention_basic}

    def override(func, *args, **kwargs):
        return kinds[fused](*args, **kwargs)
    shape = (1, 4, 4, 64, 64)  # 4096 pixels a frame: the level-0 self-attention's scores set the peak when held
    base = tiny.model
    x, timesteps, context, extra = benchmark.unet_inputs(base.info.unet, shape, device="cpu", dtype=torch.float32)
    measured = benchmark.activation_peak(lambda: base.diffusion_model(
        x, timesteps, context, transformer_options={"optimized_attention_override": override}, **extra))
    estimate = base.memory_required(list(shape), memory_efficient_attention=named[fused])
    assert estimate == pytest.approx(measured, rel=0.25), (estimate / 2 ** 20, measured / 2 ** 20)
    other = base.memory_required(list(shape), memory_efficient_attention=named[not fused])
    assert max(estimate, other) > 1.5 * min(estimate, other), (estimate, other)


def sample_tiny(pack, weight_dtype):
    model, clip, *_ = pack.vc_nodes.NODE_CLASSES["VideoCrafterCheckpointLoader"].execute("tiny_t2v_v2.safetensors", weight_dtype)
    return model, sample_video(pack, model, clip)


def test_bf16_and_fp8_weights_sample_close_to_fp32(pack, models_dir):
    """bf16 weights (bf16 compute on a CPU with bf16 instructions, else fp32) and fp8 e4m3 weights (cast per layer
    by comfy.ops) sample the tiny model within a relative L2 of 5% / 8% of fp32 weights (tolerances set on the
    reference tiny model: random smoke weights are not held to them)."""
    require_reference("golden/tiny_t2v_v2.safetensors")
    _, reference = sample_tiny(pack, "default")
    for weight_dtype, dtype, tolerance in (("bf16", torch.bfloat16, 0.05), ("fp8_e4m3fn", torch.float8_e4m3fn, 0.08)):
        model, samples = sample_tiny(pack, weight_dtype)
        assert model.model.get_dtype() == dtype
        error = ((samples - reference).norm() / reference.norm()).item()
        assert torch.isfinite(samples).all() and error < tolerance, (weight_dtype, error)


def test_plain_vae_decode_memory_per_frame_covers_the_released_decoder(pack, models_dir):
    """The SD VAE's per-frame decode memory (what core sizes its frame batches by) against the activation peak of
    the released-width decoder counted on the meta device for one 320x512 frame in fp16: at least it, at most +30%."""
    _, counted = benchmark.released_activation_peaks(1, 320, 512)
    vae = pack.vc_nodes.NODE_CLASSES["VideoCrafterCheckpointLoader"].execute("tiny_t2v_v2.safetensors", "default")[2]
    estimate = vae.memory_used_decode((1, 4, 40, 64), torch.float16)
    assert counted <= estimate <= 1.3 * counted, (estimate / 2 ** 20, counted / 2 ** 20)


def test_a_refused_sampling_names_the_frames_that_fit(mods):
    """D15: the refusal's 'at most N frames' is the boundary of the same memory model: N frames pass, N + 1 do not
    (the released VideoCrafter2 on the meta device, this machine's RAM)."""
    import re
    memory_model = comfy_host.pack("vc_models.memory_model")
    patcher = released_model(mods).current_patcher
    total = psutil.virtual_memory().total
    frames = 1024
    message = memory_model.sampling_refusal(patcher, [4, 4, frames, 72, 128])  # 576x1024, batch 4
    assert message is not None and f"RAM is {total / 2**30:.1f} GB" in message, message
    fitting, batch = map(int, re.search(r"at most (\d+) frames of 1024x576 fit at batch (\d+)", message).groups())
    assert 0 < fitting < frames
    assert memory_model.sampling_refusal(patcher, [batch, 4, fitting, 72, 128]) is None
    assert memory_model.sampling_refusal(patcher, [batch, 4, fitting + 1, 72, 128]) is not None
    need = memory_model.sampling_bytes(patcher, [4, 4, frames, 72, 128])
    assert f"needs about {need / 2**30:.1f} GB" in message
