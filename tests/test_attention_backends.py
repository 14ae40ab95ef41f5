"""Every attention call of a sampling step goes through ComfyUI's attention selection.

An `optimized_attention_override` is put on the MODEL as core's nodes put theirs (`model_options
["transformer_options"]`; on 0.33 also through the core ModelAttentionBackend node), one core KSampler step runs,
and the override must see every spatial self-attention, cross-attention (text and image) and temporal
self-attention of every UNet call, with its shapes. The expected calls are derived from the model's UNet
configuration (levels, res blocks, transformer depths, widths) and the latent's size, not from the modules.
VideoCrafter1's relative-position temporal attention needs explicit scores (docs/attention.md): for that model
the override sees the spatial calls only, and the test pins that.
"""
import collections
import math

import pytest
import torch

import comfy_host
from model_util import tiny_graph

FRAMES, WIDTH, HEIGHT = 4, 128, 64
TEXT_TOKENS = 77  # the CLIP text encoder's sequence


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """See conftest.one_torch_thread."""


def build_graph(pack, models_dir, name):
    return tiny_graph(pack, models_dir, name, FRAMES, WIDTH, HEIGHT)


def image_tokens_per_frame(config, positive, frames):
    """How many image tokens each frame's image cross-attention attends to (the UNet's rule, from the config)."""
    tokens = positive[0][1].get("videocrafter_image_tokens")
    if tokens is None:
        return 0
    per_frame = config.image_tokens_per_frame
    return per_frame if per_frame and tokens.shape[1] == frames * per_frame else tokens.shape[1]


def expected_calls(config, batch, frames, h, w, image_tokens, temporal_chunk_tokens):
    """Counter of (axis, q shape, k shape) for one UNet call on [batch, C, frames, h, w], from the configuration:
    a spatial transformer at each res block of the attention levels (num_res_blocks on the way down,
    num_res_blocks + 1 on the way up) and in the middle block; each of its `transformer_depth` blocks attends over
    the frame's pixels, to the text and (image-to-video) to the image tokens; beside each, a temporal transformer
    of `temporal_transformer_depth` blocks with two self-attentions over the frames, run over pixel chunks of
    `temporal_chunk_tokens` tokens; plus the initial temporal attention at full resolution."""
    calls = collections.Counter()
    levels = len(config.channel_mult)

    def size(level):
        hh, ww = h, w
        for _ in range(level):  # stride-2 convolutions with padding 1
            hh, ww = math.ceil(hh / 2), math.ceil(ww / 2)
        return hh, ww

    def temporal(level, width, depth):
        if config.relative_position:
            return  # explicit scores: not through the attention selection (docs/attention.md)
        hh, ww = size(level)
        pixels = batch * hh * ww
        step = max(1, temporal_chunk_tokens // frames)
        for start in range(0, pixels, step):
            n = min(step, pixels - start)
            calls[("temporal", (n, frames, width), (n, frames, width))] += 2 * depth

    def site(level):
        width = config.model_channels * config.channel_mult[level]
        hh, ww = size(level)
        q = (batch * frames, hh * ww, width)
        calls[("spatial", q, q)] += config.transformer_depth
        calls[("spatial", q, (batch * frames, TEXT_TOKENS, width))] += config.transformer_depth
        if config.image_cross_attention:
            calls[("spatial", q, (batch * frames, image_tokens, width))] += config.transformer_depth
        if config.temporal_attention:
            temporal(level, width, config.temporal_transformer_depth)

    if config.init_attn_heads:
        temporal(0, config.init_attn_heads * config.head_dim, config.transformer_depth)
    for level in config.attention_levels:
        for _ in range(config.num_res_blocks):
            site(level)
        for _ in range(config.num_res_blocks + 1):
            site(level)
    site(levels - 1)
    return calls


class Recorder:
    """An `optimized_attention_override` (core's signature: the selected function first) that records each call
    and computes it with the function core selected."""

    def __init__(self, axis_key):
        self.axis_key = axis_key
        self.calls = collections.Counter()

    def __call__(self, func, q, k, v, heads, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        self.record(options, q, k)
        return func(q, k, v, heads, *args, **kwargs)

    def __deepcopy__(self, memo):
        return self  # ModelPatcher.clone deep-copies model_options (0.3.x): its clones record here too

    def record(self, options, q, k):
        self.calls[(options.get(self.axis_key), tuple(q.shape), tuple(k.shape))] += 1


def sample_one_step(model, positive, negative, latent):
    """One core KSampler step with CFG; returns the batch size of each UNet call it made."""
    import nodes as core
    batches = []
    model = model.clone()

    def unet_wrapper(apply_model, args):
        batches.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])
    model.set_model_unet_function_wrapper(unet_wrapper)
    core.KSampler().sample(model, 5, 1, 7.5, "euler", "normal", positive, negative, latent, denoise=1.0)
    return batches


def expected_step(model, positive, batches, chunk_tokens):
    config = model.model.info.unet
    h, w = HEIGHT // 8, WIDTH // 8
    expected = collections.Counter()
    for batch in batches:
        expected += expected_calls(config, batch, FRAMES, h, w, image_tokens_per_frame(config, positive, FRAMES),
                                   chunk_tokens)
    return expected


@pytest.fixture(scope="module")
def unet_module(pack):
    return comfy_host.pack("vc_models.unet")


@pytest.mark.parametrize("name", ["tiny_t2v_v2", "tiny_i2v_v1", "tiny_dc_512", "tiny_t2v_v1"])
def test_override_sees_every_attention_call_of_a_step(pack, models_dir, unet_module, name):
    model, positive, negative, latent = build_graph(pack, models_dir, name)
    recorder = Recorder(unet_module.ATTENTION_AXIS_KEY)
    patched = model.clone()
    patched.model_options["transformer_options"]["optimized_attention_override"] = recorder
    batches = sample_one_step(patched, positive, negative, latent)
    assert batches and sum(batches) == 2  # cond and uncond, one step
    expected = expected_step(model, positive, batches, unet_module.TemporalTransformer.max_tokens_per_chunk)
    assert recorder.calls == expected, (
        f"missing {dict(expected - recorder.calls)}, unexpected {dict(recorder.calls - expected)}")
    kinds = collections.Counter(axis for axis, _, _ in recorder.calls.elements())
    config = model.model.info.unet
    assert kinds["spatial"] > 0
    assert (kinds["temporal"] > 0) == (not config.relative_position)


def test_override_sees_every_temporal_chunk(pack, models_dir, unet_module, monkeypatch):
    """The temporal layers run over pixel chunks (bounded memory at the released sizes): with a small chunk the
    override sees one call per chunk, each with the chunk's pixels as its batch."""
    chunk_tokens = 3 * FRAMES  # 3 pixels per chunk: the 8x16 latent's levels split unevenly
    monkeypatch.setattr(unet_module.TemporalTransformer, "max_tokens_per_chunk", chunk_tokens)
    model, positive, negative, latent = build_graph(pack, models_dir, "tiny_t2v_v2")
    recorder = Recorder(unet_module.ATTENTION_AXIS_KEY)
    patched = model.clone()
    patched.model_options["transformer_options"]["optimized_attention_override"] = recorder
    batches = sample_one_step(patched, positive, negative, latent)
    expected = expected_step(model, positive, batches, chunk_tokens)
    assert recorder.calls == expected
    assert any(axis == "temporal" and q[0] < 3 for axis, q, _ in recorder.calls)  # a last, partial chunk


def test_temporal_override_key_replaces_the_override_for_the_temporal_layers(pack, models_dir, unet_module):
    """An override under transformer_options[TEMPORAL_OPTIONS_KEY] takes the temporal calls; the MODEL-wide one
    keeps the spatial ones."""
    model, positive, negative, latent = build_graph(pack, models_dir, "tiny_t2v_v2")
    spatial, temporal = Recorder(unet_module.ATTENTION_AXIS_KEY), Recorder(unet_module.ATTENTION_AXIS_KEY)
    patched = model.clone()
    options = patched.model_options["transformer_options"]
    options["optimized_attention_override"] = spatial
    options[unet_module.TEMPORAL_OPTIONS_KEY] = {"optimized_attention_override": temporal}
    batches = sample_one_step(patched, positive, negative, latent)
    expected = expected_step(model, positive, batches, unet_module.TemporalTransformer.max_tokens_per_chunk)
    assert spatial.calls == collections.Counter({k: n for k, n in expected.items() if k[0] == "spatial"})
    assert temporal.calls == collections.Counter({k: n for k, n in expected.items() if k[0] == "temporal"})


def test_core_model_attention_backend_node_reaches_spatial_and_temporal(pack, models_dir, unet_module, monkeypatch):
    """ComfyUI 0.33's ModelAttentionBackend node (set_model_optimized_attention) on this MODEL: the backend it
    picks computes every attention call of the step, spatial and temporal."""
    import comfy.ldm.modules.attention as attention
    try:
        from comfy_extras.nodes_model_advanced import ModelAttentionBackend
    except ImportError:
        ModelAttentionBackend = None
    if ModelAttentionBackend is None or not hasattr(attention, "get_attention_function"):
        pytest.skip("this ComfyUI has no ModelAttentionBackend node (0.33 and later)")
    recorder = Recorder(unet_module.ATTENTION_AXIS_KEY)
    pytorch_attention = attention.get_attention_function("pytorch")

    def counted_pytorch_attention(q, k, v, heads, *args, **kwargs):
        recorder.record(kwargs.get("transformer_options") or {}, q, k)
        return pytorch_attention(q, k, v, heads, *args, **kwargs)
    monkeypatch.setitem(attention.REGISTERED_ATTENTION_FUNCTIONS, "pytorch", counted_pytorch_attention)
    model, positive, negative, latent = build_graph(pack, models_dir, "tiny_dc_512")
    (patched,) = ModelAttentionBackend().patch(model, "pytorch attention")
    batches = sample_one_step(patched, positive, negative, latent)
    expected = expected_step(model, positive, batches, unet_module.TemporalTransformer.max_tokens_per_chunk)
    assert recorder.calls == expected
    assert {axis for axis, _, _ in recorder.calls} == {"spatial", "temporal"}
