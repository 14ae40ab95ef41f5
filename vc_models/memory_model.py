"""How much memory one call of the VideoCrafter UNet needs above its weights: the estimate ComfyUI's
`model.memory_required` returns, which decides whether core runs cond and uncond as one batch
(comfy/samplers.py `_calc_cond_batch`: batched when `memory_required * 1.5 < free memory`) and how much of
the model it keeps on the GPU (sampler_helpers.estimate_memory -> model_management.load_models_gpu).

Core's generic formula (`area * 0.15 * memory_usage_factor` MB without a fused attention) is an image
UNet's: for a 16-frame 320x512 batch of 2 it says ~36 GB where 1.7 GiB are used, so CFG ran as two calls.

Derivation (`scripts/benchmark.py --memory-model` prints the measurements). The live tensor bytes of one
forward were counted op by op (`activation_peak`: every op output while a reference to it lives) at the
released widths (model_channels 320, channel_mult 1,2,4,4, 2 res blocks, heads of 64, context 1024) and at
the tiny reference widths (64; 1,1,2,2; 1 res block), on the meta device, with the attention as a fused
kernel (its output only). Everything scales with E = batch * frames * h * w (latent pixels over all frames);
the peak sits at level 0 (full resolution, C0 = model_channels * channel_mult[0] channels), at one of three
places, whichever is largest:
- the self-attention of the first level-0 output block, holding the level-0 skips still to be consumed
  (num_res_blocks + 1), the block's input (the upsampled level-1 output, C1 channels, concatenated with a
  skip: C1 + C0), the previous block's output (C1) and the transformer's own tensors (ResBlock output,
  proj_in, norm1, q, k, v, attention output, to_out and its reshape: 9 C0): (R + 1) + (C1 + C0) + C1 + 9 C0
  values per latent pixel-frame (17.1 C0 measured for VideoCrafter2 / 1 / I2V / DynamiCrafter, 14.0 for the
  tiny layout, exactly this count);
- the feed-forward of that block's transformer, run over chunks of 8192 tokens (`TransformerBlock.max_ff_tokens`)
  on the same held tensors less the attention's: (R + 1) + (C1 + C0) + C1 + 3 C0 per latent pixel-frame plus
  20 C0 per chunk token (the GEGLU projection 8 C0, its halves' product and GELU, measured 19.5);
- the initial temporal attention (VideoCrafter2 / I2V, `init_attn_heads` * 64 = W wide): its input, the
  normalised copy and the output buffer, 3 C0 per latent pixel-frame, plus 19 W per token of its 8192-token
  chunk (measured 19.0).
Small videos hit the chunked places, released-size ones the attention. A non-fused attention (core's
sub-quadratic or split attention, the CPU default) adds the score matrix of the largest attention (level 0's
self-attention over h * w tokens, C0 / 64 heads per frame) twice (scores and probabilities): the
sub-quadratic one in query chunks of 512 (the smallest chunk it falls back to: it takes larger ones only from
memory that is free), the split one whole (it splits only when memory is short).
"""
import comfy.ldm.modules.attention as comfy_attention
import comfy.model_management

from .unet_config import TOKENS_PER_CHUNK

FF_CHUNK_TOKENS = TOKENS_PER_CHUNK  # TransformerBlock.max_ff_tokens and TemporalTransformer.max_tokens_per_chunk
ATTENTION_TENSORS = 9  # level-0 tensors of the transformer alive at its self-attention's output projection
FEED_FORWARD_TENSORS = 3  # ... of the transformer alive at its feed-forward
FEED_FORWARD_CHUNK_VALUES = 20  # per chunk token, in units of C0
INIT_ATTENTION_TENSORS = 3
INIT_ATTENTION_CHUNK_VALUES = 19  # per chunk token, in units of the initial attention's width
SUB_QUADRATIC_QUERY_CHUNK = 512
# The SD VAE decoder at the released widths (ch 128, 1,2,4,4, 2 res blocks): 40960 activation values per latent
# pixel and frame counted on the meta device (scripts/benchmark.py --toon-decode, fused attention), + 25% for a
# non-fused mid-block attention and the allocator. Core's SD formula (2178 * 64) is 3.4x that.
PLAIN_DECODE_VALUES_PER_LATENT_PIXEL = 51200


# what an attention holds beyond its inputs and output (see attention_kind)
FUSED, QUERY_CHUNKED, WHOLE_SCORES = "fused", "query-chunked scores", "whole scores"


def attention_kind(memory_efficient_attention=None):
    """How the attention of a UNet call holds its scores: FUSED (PyTorch SDPA, xformers, sage, flash, comfy-kitchen:
    no score matrix), QUERY_CHUNKED (core's sub-quadratic attention) or WHOLE_SCORES (split / basic attention).

    `memory_efficient_attention` is what the caller says the call will use (newer ComfyUI passes it to
    `memory_required`, so a MODEL's attention override changes the estimate): None for the host's own selection
    (`optimized_attention`, from its flags), True / False for a fused / non-fused one (non-fused: the host's
    sub-quadratic attention when that is its selection, else whole score matrices), or the attention function."""
    sub_quad, host = comfy_attention.attention_sub_quad, comfy_attention.optimized_attention
    if memory_efficient_attention is None:
        memory_efficient_attention = host
    if memory_efficient_attention is True:
        return FUSED
    if memory_efficient_attention is False:
        return QUERY_CHUNKED if host is sub_quad else WHOLE_SCORES
    if memory_efficient_attention is sub_quad:
        return QUERY_CHUNKED
    if memory_efficient_attention in (comfy_attention.attention_split, comfy_attention.attention_basic):
        return WHOLE_SCORES
    return FUSED


def attention_scratch_values(batch_frames, tokens, heads, memory_efficient_attention=None):
    """Values the attention (see attention_kind) holds beyond its inputs and output for `batch_frames` * `heads`
    attentions of `tokens` queries over as many keys."""
    kind = attention_kind(memory_efficient_attention)
    if kind == QUERY_CHUNKED:
        return 2 * batch_frames * heads * min(tokens, SUB_QUADRATIC_QUERY_CHUNK) * tokens
    if kind == WHOLE_SCORES:
        return 2 * batch_frames * heads * tokens * tokens
    return 0


def unet_activation_bytes(config, input_shape, dtype, memory_efficient_attention=None):
    """Peak bytes of activations of one UNet call on a latent `input_shape` [B, C, T, h, w] computed in `dtype`,
    with the attention `memory_efficient_attention` names (see attention_kind)."""
    batch, _, frames, h, w = input_shape
    pixel_frames = batch * frames * h * w
    c0 = config.model_channels * config.channel_mult[0]
    c1 = config.model_channels * config.channel_mult[min(1, len(config.channel_mult) - 1)]
    held = (config.num_res_blocks + 1) * c0 + (c1 + c0) + c1
    chunk = min(pixel_frames, FF_CHUNK_TOKENS)
    attention = (held + ATTENTION_TENSORS * c0) * pixel_frames + \
        attention_scratch_values(batch * frames, h * w, max(1, c0 // config.head_dim), memory_efficient_attention)
    feed_forward = (held + FEED_FORWARD_TENSORS * c0) * pixel_frames + FEED_FORWARD_CHUNK_VALUES * c0 * chunk
    values = max(attention, feed_forward)
    if config.init_attn_heads:
        width = config.init_attn_heads * config.head_dim
        values = max(values, INIT_ATTENTION_TENSORS * c0 * pixel_frames + INIT_ATTENTION_CHUNK_VALUES * width * chunk)
    return values * comfy.model_management.dtype_size(dtype)


def plain_decode_bytes(latent_shape, dtype):
    """Bytes the SD VAE decoder needs per latent frame of [N, 4, h, w]: core's `memory_used_decode`, from which
    comfy.sd.VAE.decode takes as many frames per batch as the free memory holds."""
    return PLAIN_DECODE_VALUES_PER_LATENT_PIXEL * latent_shape[-2] * latent_shape[-1] * \
        comfy.model_management.dtype_size(dtype)


# Refusing what cannot fit. Besides one UNet call's activations a sampling run holds latent-sized float32 tensors:
# the latent, the noise, the sampler's x, denoised and its history, the cond/uncond batch in and out; a bound, small
# beside the activations (~17 C0 values per latent pixel-frame against 4 per copy)
SAMPLING_LATENT_COPIES = 10
FLOAT32_BYTES = 4


def latent_bytes(batch, frames, h, w):
    """Bytes of one float32 video latent [batch, 4, frames, h, w]."""
    return batch * 4 * frames * h * w * FLOAT32_BYTES


def sampling_bytes(patcher, shape):
    """Bytes sampling a latent of `shape` [B, 4, T, h, w] needs at the least on the model's device: one UNet call on
    the whole batch (core can run cond and uncond apart, not split a batch; with core's context windows, one window
    of frames), the latent copies, and on the CPU the weights too (they live in the same RAM)."""
    batch, channels, frames, h, w = shape
    handler = patcher.model_options.get("context_handler")
    window = getattr(handler, "context_length", None)
    call_frames = min(frames, window) if window else frames
    need = patcher.model.memory_required([batch, channels, call_frames, h, w])
    need += SAMPLING_LATENT_COPIES * latent_bytes(batch, frames, h, w)
    if patcher.load_device.type == "cpu":
        need += patcher.model_size()
    return need


def most_frames(fits, frames):
    """The largest frame count below `frames` for which fits(count) holds (0 when not even one frame fits)."""
    low, high = 0, frames - 1
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def gigabytes(size):
    return f"{size / 2**30:.1f} GB"


def device_memory_words(device):
    return "this machine's RAM" if device.type == "cpu" else f"the {device} memory"


def sampling_refusal(patcher, shape):
    """None when sampling `shape` [B, 4, T, h, w] fits the model's device by the memory model (on the CPU: the host's
    RAM); else the message, naming what fits: the most frames at this size, else at batch 1, else a smaller size."""
    device = patcher.load_device
    total = comfy.model_management.get_total_memory(device)
    need = sampling_bytes(patcher, shape)
    if need <= total:
        return None
    batch, channels, frames, h, w = shape
    size = f"{w * 8}x{h * 8}"
    asked = (f"Sampling {batch} x {frames} frames of {size} needs about {gigabytes(need)} (this model's memory "
             f"model: one UNet call, the latents" + (", the weights" if device.type == "cpu" else "") +
             f") and {device_memory_words(device)} is {gigabytes(total)}: ")
    for fit_batch in dict.fromkeys((batch, 1)):
        fitting = most_frames(lambda t: sampling_bytes(patcher, [fit_batch, channels, t, h, w]) <= total, frames + 1)
        if fitting:
            return asked + (f"at most {fitting} frames of {size} fit at batch {fit_batch}. Lower frames"
                            + (" or batch_size." if fit_batch == batch else " and batch_size to 1."))
    return asked + f"not even one frame of {size} fits. Lower width and height."


def latent_refusal(batch, frames, h, w):
    """None when a latent [batch, 4, frames, h, w] and the copies sampling makes of it fit the host's RAM, else the
    message naming the most frames that fit (the model is not known yet: the sampler checks the rest)."""
    total = comfy.model_management.get_total_memory(comfy.model_management.intermediate_device())
    def need(t, b=batch):
        return SAMPLING_LATENT_COPIES * latent_bytes(b, t, h, w)
    if need(frames) <= total:
        return None
    fitting = most_frames(lambda t: need(t) <= total, frames + 1)
    fix = f"at most {fitting} frames fit at batch {batch}" if fitting else "not even one frame fits: lower width and height"
    return (f"A latent of {batch} x {frames} frames of {w * 8}x{h * 8} and its copies while sampling need about "
            f"{gigabytes(need(frames))}, more than this machine's {gigabytes(total)} of RAM: {fix}.")
