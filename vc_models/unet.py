"""The VideoCrafter 3D UNet, built on ComfyUI's operations so weights cast and offload.

Parameter names are the released checkpoint keys under `model.diffusion_model.` (including the
original spelling `temopral_conv`). Activations stay in the `[(B*T), C, H, W]` layout of the
spatial layers; temporal layers view the same memory as `[B, C, T, H, W]`.

ComfyUI's model patches reach this UNet where they reach core's SD UNet
(`comfy/ldm/modules/diffusionmodules/openaimodel.py`, `attention.py` BasicTransformerBlock): the forward
runs through the `DIFFUSION_MODEL` wrappers; `block`, `block_index`, `transformer_index`, `original_shape`
and `activations_shape` are set as core sets them; the block patches and ControlNet residuals apply at the
same places; the spatial transformers honour the attention patches, replacements and
`optimized_attention_override`. Spatial layers see the frames as a batch of images: `original_shape` is
`[B*T, C, H, W]`, so patches written for SD latents (ToMe, HyperTile, FreeU, Kohya deep shrink) get the
layout they expect. The temporal transformers are kept apart from the layout-bound hooks (as
AnimateDiff-Evolved does): they see none of the spatial `patches` / `patches_replace`, only what
`transformer_options[TEMPORAL_OPTIONS_KEY]` holds, in the same layout (`{"patches": ..., "patches_replace": ...,
"optimized_attention_override": ...}`; queries there are [pixels, frames, C]). The attention backend is not
layout-bound: every attention call of the UNet, spatial and temporal, goes through core's
`optimized_attention` with the call's `transformer_options`, so the host's flags (`--use-sage-attention`,
`--use-flash-attention`, ...) and a MODEL's `optimized_attention_override` (ModelAttentionBackend) reach both; an
override under TEMPORAL_OPTIONS_KEY replaces it for the temporal layers only. `ATTENTION_AXIS_KEY` tells an
override which kind of call it sees. The one exception is relative-position temporal attention (VideoCrafter1
T2V), which needs explicit scores (see `Attention._relative_attention`; docs/attention.md).
"""
import torch
import torch.nn as nn
import torch.utils.checkpoint

import comfy.ops
import comfy.patcher_extension
import comfy.ldm.modules.attention as comfy_attention
from comfy.ldm.modules.attention import FeedForward
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock, Downsample, Upsample, apply_control
from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

from .unet_config import UNetConfig, HEAD_DIM, TOKENS_PER_CHUNK
from .freenoise import FrameWindows
from .omcm import build_motion_adapter

ops = comfy.ops.disable_weight_init

# transformer_options key whose {"patches", "patches_replace", "optimized_attention_override"} reach the
# temporal transformers (the spatial hooks of core nodes never do)
TEMPORAL_OPTIONS_KEY = "videocrafter_temporal"
# hooks written for the spatial layout ([B*T, pixels, C] queries, SD block names): kept from the temporal layers
_SPATIAL_HOOK_KEYS = ("patches", "patches_replace")
# transformer_options key an attention call carries: "spatial" (over the pixels of a frame, or its cross-attention
# to text / image tokens) or "temporal" (over the frames of a pixel), so an override can tell the two apart
ATTENTION_AXIS_KEY = "videocrafter_attention_axis"


def temporal_options(transformer_options):
    """The options the temporal layers see: everything but the spatial hooks (the attention override stays: it
    picks a backend, whatever the layout), plus the temporal ones."""
    options = {k: v for k, v in transformer_options.items()
               if k not in _SPATIAL_HOOK_KEYS and k != TEMPORAL_OPTIONS_KEY}
    options.update(transformer_options.get(TEMPORAL_OPTIONS_KEY, {}))
    options[ATTENTION_AXIS_KEY] = "temporal"
    return options


def patch_extra_options(transformer_options, heads, head_dim):
    """What core's BasicTransformerBlock passes its attention patches: the options less the patches."""
    extra = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}
    extra.update(n_heads=heads, dim_head=head_dim, attn_precision=None)
    return extra


def attention_replacement(transformer_options, name):
    """The `patches_replace[name]` entry for this transformer block, looked up as core does:
    (block name, block id, block index) first, then (block name, block id)."""
    replacements = transformer_options.get("patches_replace", {}).get(name, {})
    block = transformer_options.get("block")
    if not replacements or block is None:
        return None
    key = (block[0], block[1], transformer_options.get("block_index", 0))
    return replacements.get(key, replacements.get(block))


def guidance_embedding(values, dim):
    """T2V-Turbo's embedding of a guidance scale: `g * 1000`, `dim / 2` frequencies
    `exp(-log(10000) k / (dim/2 - 1))` (note the `- 1`: not ComfyUI's timestep embedding), [sin, cos].
    Computed in float32 in the original's order, so the large phases (7500 rad) round the same way."""
    half = dim // 2
    step = torch.log(torch.tensor(10000.0)) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -step).to(values.device)
    phases = (values.float() * 1000.0)[:, None] * freqs[None, :]
    return torch.cat([phases.sin(), phases.cos()], dim=1)


def motion_feature_blocks(input_blocks):
    """The input blocks after which MotionCtrl adds its adapter's features: every third, `(id + 1) % 3 == 0` as the
    original (`selfattn_forward_unet`); with two residual blocks per level, the last block of each level."""
    return tuple(index for index in range(input_blocks) if (index + 1) % 3 == 0)


def frames_to_video(h, num_frames):
    """[(B*T), C, H, W] -> [B, C, T, H, W] (a view when possible)."""
    bt, c, hh, ww = h.shape
    return h.view(bt // num_frames, num_frames, c, hh, ww).transpose(1, 2)


def video_to_frames(x):
    """[B, C, T, H, W] -> [(B*T), C, H, W] (a view of a channels-last video: channels-last frames)."""
    b, c, t, hh, ww = x.shape
    return x.transpose(1, 2).reshape(b * t, c, hh, ww)


# On the CPU the UNet keeps its activations channels-last ([(B*T), H, W, C] in memory): oneDNN's convolutions run
# on that layout without reordering (at the released width: 3x3 convolutions 1.1x / 1.6x faster in fp32 / bf16, the
# temporal 3x1x1 ones 1.35x / 2.8x), the spatial transformers' token view is free, and a temporal layer's
# [B, C, T, H, W] view of the frames is itself channels-last, so no layer converts. Results do not depend on it.
# Elsewhere the default layout stays (layers follow whichever layout comes in): on a GPU it has not been measured,
# and with autograd (training) torch 2.11's CPU backward through this UNet in channels-last crashes the process.
ACTIVATION_FORMAT = torch.channels_last


def activation_format(device):
    if device.type == "cpu" and not torch.is_grad_enabled():
        return ACTIVATION_FORMAT
    return torch.contiguous_format


class TemporalConvBlock(nn.Module):
    """Four 3x1x1 convolutions over the frame axis, residual (VideoCrafter2 / I2V ResBlocks)."""

    def __init__(self, channels, dtype=None, device=None, operations=ops):
        super().__init__()

        def stage(with_dropout):
            layers = [operations.GroupNorm(32, channels, dtype=dtype, device=device), nn.SiLU()]
            if with_dropout:
                layers.append(nn.Dropout(0.1))
            layers.append(operations.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0), dtype=dtype, device=device))
            return nn.Sequential(*layers)

        self.conv1 = stage(False)
        self.conv2 = stage(True)
        self.conv3 = stage(True)
        self.conv4 = stage(True)

    def forward(self, x):
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class VideoResBlock(ResBlock):
    """ComfyUI's ResBlock on every frame, then (optionally) the temporal convolution block."""

    def __init__(self, channels, emb_channels, out_channels=None, temporal_conv=False,
                 dtype=None, device=None, operations=ops):
        super().__init__(channels, emb_channels, 0.0, out_channels=out_channels, dims=2,
                         dtype=dtype, device=device, operations=operations)
        if temporal_conv:
            self.temopral_conv = TemporalConvBlock(self.out_channels, dtype=dtype, device=device, operations=operations)
        else:
            self.temopral_conv = None

    def forward(self, x, emb, num_frames):
        h = self._forward(x, emb)
        if self.temopral_conv is not None:
            h = video_to_frames(self.temopral_conv(frames_to_video(h, num_frames)))
        return h


class RelativePosition(nn.Module):
    """Learned embeddings of the clipped frame distance k - q (one table for keys, one for values)."""

    def __init__(self, head_dim, max_relative_position, dtype=None, device=None):
        super().__init__()
        self.max_relative_position = max_relative_position
        self.embeddings_table = nn.Parameter(torch.empty(2 * max_relative_position + 1, head_dim, dtype=dtype, device=device))

    def forward(self, length, like):
        pos = torch.arange(length, device=like.device)
        distance = (pos[None, :] - pos[:, None]).clamp(-self.max_relative_position, self.max_relative_position)
        table = comfy.ops.cast_to_input(self.embeddings_table, like)
        return table[distance + self.max_relative_position]  # [T, T, D]


class Attention(nn.Module):
    """Multi-head attention through ComfyUI's optimized attention.

    With `image_context_dim`, a second attention over the image tokens (own key/value, same
    query) is added, as VideoCrafter1 I2V does. With `max_relative_position`, relative position
    embeddings enter the scores and the values; those need explicit scores (only used over the
    short frame axis).
    """

    def __init__(self, query_dim, context_dim=None, heads=8, head_dim=HEAD_DIM, image_context_dim=None,
                 max_relative_position=None, image_attention_alpha=False, dtype=None, device=None, operations=ops):
        super().__init__()
        inner = heads * head_dim
        context_dim = context_dim or query_dim
        self.heads = heads
        self.head_dim = head_dim
        self.to_q = operations.Linear(query_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_k = operations.Linear(context_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_v = operations.Linear(context_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_out = nn.Sequential(operations.Linear(inner, query_dim, dtype=dtype, device=device), nn.Dropout(0.0))
        if image_context_dim:
            self.to_k_ip = operations.Linear(image_context_dim, inner, bias=False, dtype=dtype, device=device)
            self.to_v_ip = operations.Linear(image_context_dim, inner, bias=False, dtype=dtype, device=device)
        else:
            self.to_k_ip = self.to_v_ip = None
        # DynamiCrafter 256: the image attention is scaled by tanh(alpha) + 1, alpha learned per layer
        self.alpha = nn.Parameter(torch.empty((), dtype=dtype, device=device)) if image_context_dim and image_attention_alpha else None
        if max_relative_position:
            self.relative_position_k = RelativePosition(head_dim, max_relative_position, dtype=dtype, device=device)
            self.relative_position_v = RelativePosition(head_dim, max_relative_position, dtype=dtype, device=device)
        else:
            self.relative_position_k = self.relative_position_v = None

    def forward(self, x, context=None, value=None, image_context=None, frame_windows=None, replacement=None,
                transformer_options=None):
        """frame_windows: FreeNoise's sliding windows (temporal self-attention only); value: separate value
        tokens (core's attention patches may give them); replacement: a core `patches_replace` function
        `(q, k, v, extra_options) -> out` standing in for the attention over `context` (the image attention of
        I2V models is still added); transformer_options: reach the optimized attention (its override)."""
        options = transformer_options if transformer_options is not None else {}
        q = self.to_q(x)
        context = x if context is None else context
        k = self.to_k(context)
        v = self.to_v(context if value is None else value)
        if replacement is not None:
            extra = patch_extra_options(options, self.heads, self.head_dim)

            def attend(q, k, v):
                return replacement(q, k, v, extra)
        else:
            def attend(q, k, v):
                return self._attend(q, k, v, options)
        out = attend(q, k, v) if frame_windows is None else frame_windows.attend(attend, q, k, v)
        if self.to_k_ip is not None:
            if image_context is None:
                raise ValueError("This image-to-video model needs image tokens: encode the image with "
                                 "'VideoCrafter Image Encode' for both the positive and the negative conditioning.")
            out_ip = comfy_attention.optimized_attention(q, self.to_k_ip(image_context), self.to_v_ip(image_context),
                                                         self.heads, transformer_options=options)
            if self.alpha is not None:
                out_ip = out_ip * (torch.tanh(comfy.ops.cast_to_input(self.alpha, out_ip)) + 1)
            out = out + out_ip
        return self.to_out(out)

    def _attend(self, q, k, v, transformer_options):
        if self.relative_position_k is not None:
            return self._relative_attention(q, k, v)
        return comfy_attention.optimized_attention(q, k, v, self.heads, transformer_options=transformer_options)

    def _relative_attention(self, q, k, v):
        """Attention with relative position embeddings on the keys and the values (VideoCrafter1 T2V's temporal
        layers), as the original computes it. It needs the probabilities themselves (the value term weights a
        different embedding per query-key pair), which no fused kernel returns, so it runs with explicit scores
        and neither the host's attention backend nor an override reaches it; over 16 frames its score matrices
        are [pixels, heads, 16, 16], small beside the spatial attention's."""
        n, t, _ = q.shape
        q, k, v = (a.view(n, t, self.heads, self.head_dim).transpose(1, 2) for a in (q, k, v))
        rel_k = self.relative_position_k(t, q)
        rel_v = self.relative_position_v(t, q)
        scale = self.head_dim ** -0.5
        scores = (q @ k.transpose(-1, -2) + torch.einsum("nhtd,tsd->nhts", q, rel_k)) * scale
        probs = scores.softmax(dim=-1)
        out = probs @ v + torch.einsum("nhts,tsd->nhtd", probs, rel_v)
        return out.transpose(1, 2).reshape(n, t, self.heads * self.head_dim)


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention (or a second self-attention), GEGLU feed-forward."""

    def __init__(self, dim, heads, head_dim, context_dim=None, image_context_dim=None,
                 max_relative_position=None, image_attention_alpha=False, camera_pose_dim=0, dtype=None, device=None,
                 operations=ops):
        super().__init__()
        kw = dict(heads=heads, head_dim=head_dim, max_relative_position=max_relative_position,
                  dtype=dtype, device=device, operations=operations)
        self.attn1 = Attention(dim, **kw)
        self.ff = FeedForward(dim, glu=True, dtype=dtype, device=device, operations=operations)
        self.attn2 = Attention(dim, context_dim=context_dim, image_context_dim=image_context_dim,
                               image_attention_alpha=image_attention_alpha, **kw)
        self.norm1 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.norm2 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.norm3 = operations.LayerNorm(dim, dtype=dtype, device=device)
        # MotionCtrl's camera control (temporal blocks): the features and the frame's pose, mapped back to C
        self.cc_projection = operations.Linear(dim + camera_pose_dim, dim, dtype=dtype, device=device) \
            if camera_pose_dim else None

    # The GEGLU hidden layer is 8x the width: run it over bounded groups of tokens so its
    # activations never dominate peak memory (tokens are independent in a feed-forward).
    max_ff_tokens = TOKENS_PER_CHUNK

    def forward(self, x, context=None, image_context=None, frame_windows=None, transformer_options=None,
                camera_poses=None):
        """The attention patches of `transformer_options` apply as in core's BasicTransformerBlock.
        camera_poses: [tokens, T, 12] each token's frame poses (MotionCtrl); after the first attention, as the
        original (`temporal_selfattn_forward_BasicTransformerBlock`), `cc_projection` replaces the features (no
        residual)."""
        options = transformer_options if transformer_options is not None else {}
        patches = options.get("patches", {})
        extra = patch_extra_options(options, self.attn1.heads, self.attn1.head_dim) if patches else None
        x = self._attention(self.attn1, "attn1", self.norm1(x), None, None, frame_windows, options, extra) + x
        if camera_poses is not None:
            x = self.cc_projection(torch.cat([x, camera_poses.to(x.dtype)], dim=-1))
        for patch in patches.get("middle_patch", ()):
            x = patch(x, extra)
        x = self._attention(self.attn2, "attn2", self.norm2(x), context, image_context, frame_windows, options, extra) + x
        return self._feed_forward(self.norm3(x)) + x

    def _attention(self, attention, name, n, context, image_context, frame_windows, options, extra):
        """One attention with core's `{name}_patch` before, `{name}_output_patch` after, and its replacement."""
        patches = options.get("patches", {})
        value = None
        if f"{name}_patch" in patches:
            context = n if context is None else context
            value = context
            for patch in patches[f"{name}_patch"]:
                n, context, value = patch(n, context, value, extra)
        n = attention(n, context=context, value=value, image_context=image_context, frame_windows=frame_windows,
                      replacement=attention_replacement(options, name), transformer_options=options)
        for patch in patches.get(f"{name}_output_patch", ()):
            n = patch(n, extra)
        return n

    def _feed_forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] <= self.max_ff_tokens or torch.is_grad_enabled():
            return self.ff(x)
        out = torch.empty_like(flat)
        for start in range(0, flat.shape[0], self.max_ff_tokens):
            out[start:start + self.max_ff_tokens] = self.ff(flat[start:start + self.max_ff_tokens])
        return out.view(x.shape)


def projections(channels, inner, use_linear, conv, dtype, device, operations):
    """(proj_in, proj_out) of a transformer: linear maps, or 1x1 convolutions in older layouts."""
    if use_linear:
        return (operations.Linear(channels, inner, dtype=dtype, device=device),
                operations.Linear(inner, channels, dtype=dtype, device=device))
    return conv(channels, inner, 1, dtype=dtype, device=device), conv(inner, channels, 1, dtype=dtype, device=device)


class SpatialTransformer(nn.Module):
    """Attention over the pixels of each frame, cross-attending to text (and image) tokens."""

    def __init__(self, channels, heads, head_dim, depth, context_dim, image_context_dim=None, use_linear=True,
                 image_attention_alpha=False, dtype=None, device=None, operations=ops):
        super().__init__()
        inner = heads * head_dim
        self.use_linear = use_linear
        self.norm = operations.GroupNorm(32, channels, eps=1e-6, dtype=dtype, device=device)
        self.proj_in, self.proj_out = projections(channels, inner, use_linear, operations.Conv2d, dtype, device, operations)
        self.transformer_blocks = nn.ModuleList([
            TransformerBlock(inner, heads, head_dim, context_dim=context_dim, image_context_dim=image_context_dim,
                             image_attention_alpha=image_attention_alpha, dtype=dtype, device=device, operations=operations)
            for _ in range(depth)])

    def forward(self, x, context, image_context=None, transformer_options=None):
        options = transformer_options if transformer_options is not None else {}
        options["activations_shape"] = list(x.shape)
        options[ATTENTION_AXIS_KEY] = "spatial"
        n, c, h, w = x.shape
        y = self.norm(x)
        if not self.use_linear:
            y = self.proj_in(y)
        y = y.flatten(2).transpose(1, 2)
        if self.use_linear:
            y = self.proj_in(y)
        for index, block in enumerate(self.transformer_blocks):
            options["block_index"] = index
            y = block(y, context=context, image_context=image_context, transformer_options=options)
        if self.use_linear:
            y = self.proj_out(y)
        y = y.transpose(1, 2).reshape(n, -1, h, w)
        if not self.use_linear:
            y = self.proj_out(y)
        return y + x


class TemporalTransformer(nn.Module):
    """Attention along the frame axis at every pixel: two self-attentions and a feed-forward.

    The group norm spans frames too (it normalises the [B, C, T, H, W] video), as the original.
    """

    def __init__(self, channels, heads, head_dim, depth, use_linear=True, max_relative_position=None,
                 camera_pose_dim=0, dtype=None, device=None, operations=ops):
        super().__init__()
        inner = heads * head_dim
        self.use_linear = use_linear
        self.norm = operations.GroupNorm(32, channels, eps=1e-6, dtype=dtype, device=device)
        self.proj_in, self.proj_out = projections(channels, inner, use_linear, operations.Conv1d, dtype, device, operations)
        self.transformer_blocks = nn.ModuleList([
            TransformerBlock(inner, heads, head_dim, max_relative_position=max_relative_position,
                             camera_pose_dim=camera_pose_dim, dtype=dtype, device=device, operations=operations)
            for _ in range(depth)])

    def _project(self, layer, y):
        # y: [N, T, C]; a 1x1 Conv1d over channels is a linear map: use its weight as one,
        # which spares two transposed copies of the whole video
        if self.use_linear:
            return layer(y)
        weight, bias, offload_stream = comfy.ops.cast_bias_weight(layer, y, offloadable=True)
        out = torch.nn.functional.linear(y, weight[..., 0], bias)
        comfy.ops.uncast_bias_weight(layer, weight, bias, offload_stream)
        return out

    # Pixels attend only along their own frames, so they can be processed in groups: the
    # feed-forward of the 512-wide initial temporal attention would otherwise hold
    # [pixels * frames, 4096] at once (1.3 GB at 320x512x16 with CFG); 8192 tokens keep it near 0.27 GB.
    max_tokens_per_chunk = TOKENS_PER_CHUNK

    def forward(self, x, num_frames, transformer_options=None, camera_poses=None):
        """camera_poses: [B, T, pose_dim] (MotionCtrl), given to every block."""
        video = frames_to_video(x, num_frames)
        b, c, t, h, w = video.shape
        windows = FrameWindows.from_options(transformer_options, t, device=x.device)
        options = temporal_options(transformer_options if transformer_options is not None else {})
        y = self.norm(video).permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)
        out = torch.empty_like(y)
        # with FreeNoise windows each pixel attends over (windows x W) gathered frames: size the chunks
        # by that, so a chunk's attention inputs stay within the same token budget however long the video
        step = max(1, self.max_tokens_per_chunk // (windows.gathered_frames if windows else t))
        for start in range(0, y.shape[0], step):
            poses = None
            if camera_poses is not None:  # the rows are (b h w): row r is a pixel of video r // (h * w)
                rows = torch.arange(start, min(start + step, y.shape[0]), device=camera_poses.device)
                poses = camera_poses[rows // (h * w)]
            out[start:start + step] = self._transform(y[start:start + step], windows, options, poses)
        # back to the frames' layout: channels-last ([B, T, H, W, C] in memory) or [(B*T), C, H, W]
        out = out.view(b, h, w, t, c)
        if x.is_contiguous(memory_format=torch.channels_last):
            out = out.permute(0, 3, 1, 2, 4).reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        else:
            out = out.permute(0, 3, 4, 1, 2).reshape(b * t, c, h, w)
        return out + x

    def _transform(self, y, windows, options, camera_poses=None):
        y = self._project(self.proj_in, y)
        for index, block in enumerate(self.transformer_blocks):
            options["block_index"] = index
            y = block(y, frame_windows=windows, transformer_options=options, camera_poses=camera_poses)
        return self._project(self.proj_out, y)


class BlockSequence(nn.Sequential):
    """One UNet stage: each layer gets the inputs its kind needs."""

    def forward(self, h, emb, context, image_context, num_frames, transformer_options, output_shape=None,
                camera_poses=None):
        """output_shape: the skip's shape an output stage's upsampling meets (as core's UNet passes it);
        camera_poses: MotionCtrl's [B, T, 12], for the temporal transformers."""
        for layer in self:
            if isinstance(layer, VideoResBlock):
                h = layer(h, emb, num_frames)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context, image_context, transformer_options)
                # core counts transformers per UNet call (forward_timestep_embed); the temporal ones are apart
                transformer_options["transformer_index"] += 1
            elif isinstance(layer, TemporalTransformer):
                h = layer(h, num_frames, transformer_options, camera_poses=camera_poses)
            elif isinstance(layer, Upsample):
                h = layer(h, output_shape)
            else:
                h = layer(h)
        return h


class VideoCrafterUNet(nn.Module):
    """The denoiser: eps prediction for a video latent [B, C, T, H, W]."""

    def __init__(self, config: UNetConfig = None, dtype=None, device=None, operations=ops, **overrides):
        super().__init__()
        cfg = config or UNetConfig()
        if overrides:
            cfg = UNetConfig(**{**cfg.as_dict(), **overrides})
        self.config = cfg
        self.dtype = dtype if dtype is not None else torch.float32
        self.gradient_checkpointing = False
        kw = dict(dtype=dtype, device=device, operations=operations)
        mc = cfg.model_channels
        emb_dim = mc * 4
        rel = cfg.max_relative_position if cfg.relative_position else None
        image_dim = cfg.image_context_dim if cfg.image_cross_attention else None

        def linear_mlp():
            return nn.Sequential(operations.Linear(mc, emb_dim, dtype=dtype, device=device), nn.SiLU(),
                                 operations.Linear(emb_dim, emb_dim, dtype=dtype, device=device))

        self.time_embed = linear_mlp()
        self.fps_embedding = linear_mlp() if cfg.fps_cond else None
        # T2V-Turbo: guidance-scale embedding (and for v2 MG the motion-guidance one) added to the
        # timestep embedding before `time_embed`; bias-free linear maps as released
        self.time_cond_proj = self.motion_cond_proj = self.combine_proj = None
        if cfg.guidance_embed_dim:
            self.time_cond_proj = operations.Linear(cfg.guidance_embed_dim, mc, bias=False, dtype=dtype, device=device)
            if cfg.motion_guidance:
                self.motion_cond_proj = operations.Linear(cfg.guidance_embed_dim, mc, bias=False, dtype=dtype, device=device)
                self.combine_proj = operations.Linear(2 * mc, mc, bias=False, dtype=dtype, device=device)

        def res(ch_in, ch_out):
            return VideoResBlock(ch_in, emb_dim, ch_out, temporal_conv=cfg.temporal_conv, **kw)

        def transformers(ch):
            heads = ch // cfg.head_dim
            layers = [SpatialTransformer(ch, heads, cfg.head_dim, cfg.transformer_depth, cfg.context_dim,
                                         image_context_dim=image_dim, use_linear=cfg.use_linear,
                                         image_attention_alpha=cfg.image_attention_alpha, **kw)]
            if cfg.temporal_attention:
                layers.append(TemporalTransformer(ch, heads, cfg.head_dim, cfg.temporal_transformer_depth,
                                                  use_linear=cfg.use_linear, max_relative_position=rel,
                                                  camera_pose_dim=cfg.camera_pose_dim, **kw))
            return layers

        self.input_blocks = nn.ModuleList([BlockSequence(operations.Conv2d(cfg.in_channels, mc, 3, padding=1, dtype=dtype, device=device))])
        if cfg.init_attn_heads:
            self.init_attn = BlockSequence(TemporalTransformer(mc, cfg.init_attn_heads, cfg.head_dim, cfg.transformer_depth,
                                                               use_linear=False, max_relative_position=rel,
                                                               camera_pose_dim=cfg.camera_pose_dim, **kw))
        else:
            self.init_attn = None

        skip_channels = [mc]
        ch = mc
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [res(ch, mult * mc)]
                ch = mult * mc
                if level in cfg.attention_levels:
                    layers += transformers(ch)
                self.input_blocks.append(BlockSequence(*layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(BlockSequence(Downsample(ch, True, dims=2, out_channels=ch, **kw)))
                skip_channels.append(ch)
        self.skip_channels = tuple(skip_channels)  # what a ControlNet's residuals must match, input block order
        # MotionCtrl's object-motion adapter: feature i is added after input block `motion_feature_blocks[i]`
        self.omcm = build_motion_adapter(cfg, **kw)
        self.motion_feature_blocks = ()
        if self.omcm is not None:
            self.motion_feature_blocks = motion_feature_blocks(len(self.input_blocks))
            widths = tuple(self.skip_channels[i] for i in self.motion_feature_blocks)
            if widths != self.omcm.channels:
                raise ValueError(f"MotionCtrl's object-motion adapter has features of {list(self.omcm.channels)} "
                                 f"channels for UNet input blocks {list(self.motion_feature_blocks)} of "
                                 f"{list(widths)}: an adapter made for another UNet.")

        self.middle_block = BlockSequence(res(ch, ch), *transformers(ch), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), mult * mc)]
                ch = mult * mc
                if level in cfg.attention_levels:
                    layers += transformers(ch)
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch, True, dims=2, out_channels=ch, **kw))
                self.output_blocks.append(BlockSequence(*layers))

        self.out = nn.Sequential(operations.GroupNorm(32, ch, dtype=dtype, device=device), nn.SiLU(),
                                 operations.Conv2d(mc, cfg.out_channels, 3, padding=1, dtype=dtype, device=device))

    def _run(self, block, *args, **kwargs):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False, **kwargs)
        return block(*args, **kwargs)

    def _guidance_condition(self, timesteps, guidance, motion_guidance, dtype):
        """T2V-Turbo: time_cond_proj(w_emb), or with motion guidance combine_proj([that, motion_cond_proj(m_emb)]).
        guidance: a number (or [B] values); motion_guidance: (motion_gs, first timestep it applies to), or None
        (the original's use_motion_cond=False). Below that timestep the motion scale is 0, as the original."""
        b, device, dim = timesteps.shape[0], timesteps.device, self.config.guidance_embed_dim
        w = torch.as_tensor(guidance, dtype=torch.float32, device=device).reshape(-1)
        w = w.expand(b) if w.numel() == 1 else w
        cond = self.time_cond_proj(guidance_embedding(w, dim).to(dtype))
        if motion_guidance is None or self.motion_cond_proj is None:
            return cond
        motion_gs, start = motion_guidance
        scale = torch.where(timesteps >= start, float(motion_gs), 0.0).to(torch.float32)
        motion_cond = self.motion_cond_proj(guidance_embedding(scale, dim).to(dtype))
        return self.combine_proj(torch.cat([cond, motion_cond], dim=1))

    def image_context_per_frame(self, image_context, num_frames):
        """[B, N, D] -> [(B*T), n, D]. DynamiCrafter: when there is one group of tokens per frame
        (N == T * tokens_per_frame, 256 for 16 frames) frame i gets group i; otherwise, as the
        original, every frame attends to all N tokens."""
        per_frame = self.config.image_tokens_per_frame
        b, n, d = image_context.shape
        if per_frame and n == num_frames * per_frame:
            return image_context.reshape(b * num_frames, per_frame, d)
        return image_context.repeat_interleave(num_frames, dim=0)

    def forward(self, x, timesteps, context=None, y=None, control=None, transformer_options=None, **kwargs):
        """x [B, C, T, H, W]; timesteps [B]; context [B, L, D]; control: a ControlNet's residuals
        ({"input", "middle", "output"} lists of [(B*T), C, h, w], consumed as core's UNet does); y is core's
        class label, which no model of this family takes (the positional order is the one core's
        `DIFFUSION_MODEL` wrappers, e.g. EasyCache, read); kwargs: see `_forward`."""
        if y is not None:
            raise ValueError("VideoCrafter UNets take no class label 'y' (an SDXL/unCLIP-style conditioning was given).")
        transformer_options = transformer_options if transformer_options is not None else {}
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward, self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, transformer_options)
        ).execute(x, timesteps, context, y, control, transformer_options, **kwargs)

    def _camera_poses(self, camera_poses, batch, frames, device):
        """MotionCtrl's camera poses as [B, T, pose_dim] ([B, T, 12], [B, T, 3, 4] or the original's
        [B, T, 12, 1] in), checked against the model and the video."""
        dim = self.config.camera_pose_dim
        if not dim:
            raise ValueError("This model has no camera control (MotionCtrl's 'cc_projection' layers): a camera path "
                             "needs a MotionCtrl checkpoint (motionctrl.pth, motionctrl_videocrafter2_cmcm.ckpt).")
        poses = camera_poses.reshape(*camera_poses.shape[:2], -1) if camera_poses.ndim >= 3 else camera_poses
        if poses.ndim != 3 or poses.shape[2] != dim or poses.shape[0] not in (1, batch):
            raise ValueError(f"Camera poses of shape {list(camera_poses.shape)}: MotionCtrl takes one 3x4 camera "
                             f"matrix per frame, [batch, frames, {dim}].")
        if poses.shape[1] != frames:
            raise ValueError(f"The camera path has {poses.shape[1]} poses for a video of {frames} frames: resample "
                             "the path to the video's frame count.")
        return poses.expand(batch, -1, -1).to(device)

    def _motion_features(self, trajectory, cond_t, timesteps, x):
        """MotionCtrl's adapter features of `trajectory` [B, 2, T, H, W] (a flow at pixel size) in the UNet's
        [(B*T), C, h, w] layout, one per level; None without a trajectory or when every sample's timestep is below
        `cond_t` (the original drops them once t < cond_T, for the positive and the negative alike)."""
        if trajectory is None:
            return None
        if self.omcm is None:
            raise ValueError("This model has no object-motion control (MotionCtrl's adapter, 'omcm.'): an object "
                             "trajectory needs motionctrl.pth (the VideoCrafter2 file "
                             "motionctrl_videocrafter2_cmcm.ckpt controls the camera only).")
        b, _, t, hh, ww = x.shape
        levels = len(self.omcm.channels)
        if trajectory.ndim != 5 or trajectory.shape[1] != self.omcm.flow_channels or trajectory.shape[2] != t \
                or trajectory.shape[0] not in (1, b):
            raise ValueError(f"Object trajectory of shape {list(trajectory.shape)}: MotionCtrl takes a flow "
                             f"[batch, {self.omcm.flow_channels}, {t} frames, height, width] at the video's size.")
        if tuple(trajectory.shape[3:]) != (hh * 8, ww * 8):
            raise ValueError(f"The object trajectory is {trajectory.shape[4]}x{trajectory.shape[3]} pixels but the "
                             f"video is {ww * 8}x{hh * 8}: make the flow at the video's size.")
        multiple = 2 ** (levels - 1)
        if hh % multiple or ww % multiple:
            raise ValueError(f"A {ww * 8}x{hh * 8} video: MotionCtrl's object-motion adapter needs width and height "
                             f"that are multiples of {8 * multiple} (its features must meet the UNet's at every "
                             "level).")
        keep = None if cond_t is None else (timesteps.reshape(-1) >= cond_t).expand(b)
        if keep is not None and not bool(keep.any()):
            return None
        flow = trajectory.to(device=x.device, dtype=x.dtype).expand(b, -1, -1, -1, -1)
        features = self.omcm(video_to_frames(flow))
        if keep is not None and not bool(keep.all()):
            mask = keep.repeat_interleave(t).to(x.dtype).view(-1, 1, 1, 1)
            features = [f * mask for f in features]
        return features

    def _forward(self, x, timesteps, context, y, control, transformer_options, fps=None, image_context=None,
                 guidance=None, motion_guidance=None, camera_poses=None, trajectory=None, trajectory_cond_t=None,
                 **kwargs):
        """fps [B] or None; image_context [B, N, D]; guidance / motion_guidance: T2V-Turbo's guidance scale and
        (motion_gs, first timestep), see `_guidance_condition`; MotionCtrl's camera_poses [B, T, 12] (3x4 RT
        matrices, row-major) and trajectory [B, 2, T, H, W] (a flow at pixel size) whose adapter features apply
        to the samples whose timestep is at least trajectory_cond_t (the original's cond_T; None: always), see
        `_camera_poses` and `_motion_features`; transformer_options: ComfyUI's per-call options, with the patches
        applied as the module docstring says."""
        b, c, t, hh, ww = x.shape
        transformer_options["original_shape"] = [b * t, c, hh, ww]
        transformer_options["transformer_index"] = 0
        patches = transformer_options.get("patches", {})
        dtype = x.dtype
        t_emb = timestep_embedding(timesteps, self.config.model_channels).to(dtype)
        if self.time_cond_proj is not None and guidance is not None:
            t_emb = t_emb + self._guidance_condition(timesteps, guidance, motion_guidance, dtype)
        emb = self.time_embed(t_emb)
        for patch in patches.get("emb_patch", ()):
            emb = patch(emb, self.config.model_channels, transformer_options)
        if self.fps_embedding is not None:
            if fps is None:
                raise ValueError("This model is conditioned on fps: add 'VideoCrafter FPS Conditioning' (or use the VideoCrafter loader's default).")
            fps = fps.reshape(-1).to(timesteps.device)
            if fps.shape[0] != b:
                fps = fps.expand(b) if fps.shape[0] == 1 else fps
            emb = emb + self.fps_embedding(timestep_embedding(fps, self.config.model_channels).to(dtype))

        if camera_poses is not None:
            camera_poses = self._camera_poses(camera_poses, b, t, x.device)
        motion_features = self._motion_features(trajectory, trajectory_cond_t, timesteps, x)

        emb = emb.repeat_interleave(t, dim=0)
        context = context.repeat_interleave(t, dim=0)
        if image_context is not None:
            image_context = self.image_context_per_frame(image_context.to(dtype), t)

        # the block loop of core's UNetModel._forward: same patches, same control, same places
        h = video_to_frames(x).contiguous(memory_format=activation_format(x.device))
        skips = []
        for index, block in enumerate(self.input_blocks):
            transformer_options["block"] = ("input", index)
            h = self._run(block, h, emb, context, image_context, t, transformer_options, camera_poses=camera_poses)
            if index == 0 and self.init_attn is not None:
                h = self._run(self.init_attn, h, emb, context, image_context, t, transformer_options,
                              camera_poses=camera_poses)
            if motion_features is not None and index in self.motion_feature_blocks:
                h = h + motion_features[self.motion_feature_blocks.index(index)]
            h = apply_control(h, control, "input")
            for patch in patches.get("input_block_patch", ()):
                h = patch(h, transformer_options)
            skips.append(h)
            for patch in patches.get("input_block_patch_after_skip", ()):
                h = patch(h, transformer_options)
        transformer_options["block"] = ("middle", 0)
        h = self._run(self.middle_block, h, emb, context, image_context, t, transformer_options,
                      camera_poses=camera_poses)
        h = apply_control(h, control, "middle")
        for index, block in enumerate(self.output_blocks):
            transformer_options["block"] = ("output", index)
            skip = apply_control(skips.pop(), control, "output")
            for patch in patches.get("output_block_patch", ()):
                h, skip = patch(h, skip, transformer_options)
            output_shape = skips[-1].shape if skips else None
            h = self._run(block, torch.cat([h, skip], dim=1), emb, context, image_context, t, transformer_options,
                          output_shape, camera_poses=camera_poses)
        return frames_to_video(self.out(h), t).contiguous()
