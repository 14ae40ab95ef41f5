"""ToonCrafter's VAE: the SD encoder, and a decoder that looks at the two key frames.

The decoder is ComfyUI's SD decoder (`comfy.ldm.modules.diffusionmodules.model.Decoder`, on comfy.ops)
with ToonCrafter's additions, under the released parameter names:
- every ResnetBlock is followed by a temporal ResBlock over the frames of the chunk (`time_stack`:
  GroupNorm, SiLU, a (3,1,1) Conv3d, twice; its GroupNorms see all frames, eps 1e-5), mixed with the
  per-frame output by sigmoid(`mix_factor`);
- at each level after its ResBlocks, and after `norm_out`, a refinement by the key frames' encoder features
  (`attn_refinement`): a Combiner (1x1 conv added to the chunk's first and last frame) or, at the levels
  with a `to_q`, a cross-attention of every frame to the start and end features;
- `conv_out` is followed by `time_mix_conv`, a (3,1,1) Conv3d over time;
- `post_quant_conv` is not applied (the original's decode path passes keyword arguments, which skips it).
The original decodes 16 frames at a time (its `temporal_length`), every chunk with the same features, and
re-decodes without latent frames 1 and T-2 to replace the two middle frames.
"""
import torch
from torch import nn

import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.sd
from comfy.ldm.modules import attention as comfy_attention
from comfy.ldm.modules.diffusionmodules import model as sd_vae

from .encoders import vae_config

ops = comfy.ops.disable_weight_init

CHUNK_FRAMES = 16  # the original's temporal_length: frames decoded together (their statistics are shared)
DECODE_VALUES_PER_LATENT_PIXEL = 61440  # activations per latent pixel and frame, with margin (see decode_memory)
FUSION_HEADS = 8
FUSION_HEAD_DIM = 64
TEMPORAL_KERNEL = (3, 1, 1)
TEMPORAL_PADDING = (1, 0, 0)
# LATENT entry holding what the decoder needs of the key frames: IMAGE pixels [B, 2, H, W, 3] (start, end)
KEY_FRAMES_KEY = "videocrafter_key_frames"


class DualRefDecodeError(ValueError):
    """ToonCrafter's decoder was asked to decode without its key frames."""


def refuse_bare_decode():
    raise DualRefDecodeError(
        "ToonCrafter's VAE decoder needs the two key frames: decode with 'VideoCrafter VAE Decode' the "
        "LATENT that came through 'DynamiCrafter Conditioning' (mode interpolate or loop), or connect its "
        "start_image and end_image. The core VAE Decode cannot give it the key frames.")


def _frames_to_video(x, frames):
    """[(b t), c, h, w] -> [b, c, t, h, w]"""
    return x.unflatten(0, (-1, frames)).transpose(1, 2)


def _video_to_frames(x):
    return x.transpose(1, 2).flatten(0, 1)


class TemporalResBlock(nn.Module):
    """`time_stack`: x + conv3d(SiLU(GN(conv3d(SiLU(GN(x)))))) on [b, c, t, h, w], no time embedding."""

    def __init__(self, channels):
        super().__init__()
        self.in_layers = nn.Sequential(ops.GroupNorm(32, channels, eps=1e-5), nn.SiLU(),
                                       ops.Conv3d(channels, channels, TEMPORAL_KERNEL, padding=TEMPORAL_PADDING))
        self.out_layers = nn.Sequential(ops.GroupNorm(32, channels, eps=1e-5), nn.SiLU(), nn.Identity(),
                                        ops.Conv3d(channels, channels, TEMPORAL_KERNEL, padding=TEMPORAL_PADDING))

    def forward(self, x):
        return x + self.out_layers(self.in_layers(x))


class VideoResBlock(sd_vae.ResnetBlock):
    """The SD ResnetBlock per frame, then `time_stack` over the chunk, mixed by sigmoid(mix_factor)."""

    def __init__(self, *, out_channels, **kwargs):
        super().__init__(out_channels=out_channels, **kwargs)
        self.time_stack = TemporalResBlock(out_channels)
        self.mix_factor = nn.Parameter(torch.empty(1))

    def forward(self, x, temb=None, frames=None):
        spatial = _frames_to_video(super().forward(x, temb), frames)
        alpha = torch.sigmoid(comfy.ops.cast_to_input(self.mix_factor, spatial))
        return _video_to_frames(torch.lerp(spatial, self.time_stack(spatial), alpha))


class AE3DConv(ops.Conv2d):
    """`conv_out`: the 3x3 conv per frame, then `time_mix_conv` over time (no residual)."""

    def __init__(self, in_channels, out_channels, *args, **kwargs):
        super().__init__(in_channels, out_channels, *args, **kwargs)
        self.time_mix_conv = ops.Conv3d(out_channels, out_channels, TEMPORAL_KERNEL, padding=TEMPORAL_PADDING)

    def forward(self, x, frames=None):
        return _video_to_frames(self.time_mix_conv(_frames_to_video(super().forward(x), frames)))


class Combiner(nn.Module):
    """Adds a 1x1 conv of the start features to the chunk's first frame, of the end features to its last."""

    def __init__(self, channels):
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 1)

    def forward(self, x, reference, frames):
        """x [(b t), c, h, w]; reference [b, 2, c, h, w] (start, end)."""
        ref = self.conv(reference.flatten(0, 1)).unflatten(0, reference.shape[:2])
        x = x.unflatten(0, (-1, frames))
        x[:, 0] += ref[:, 0]
        x[:, -1] += ref[:, 1]
        return x.flatten(0, 1)


class KeyFrameFusion(nn.Module):
    """Every frame's (normalised) pixels query the raw start and end features: 8 heads of 64, `x + out`."""

    def __init__(self, channels, heads=FUSION_HEADS, dim_head=FUSION_HEAD_DIM):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm = ops.GroupNorm(32, channels, eps=1e-6)
        self.to_q = ops.Linear(channels, inner, bias=False)
        self.to_k = ops.Linear(channels, inner, bias=False)
        self.to_v = ops.Linear(channels, inner, bias=False)
        self.to_out = nn.Sequential(ops.Linear(inner, channels), nn.Identity())

    def forward(self, x, reference, frames):
        bt, c, h, w = x.shape
        # the key frames' tokens are shared by every frame of a video: its frames are one query sequence
        q = self.to_q(self.norm(x).flatten(2).transpose(1, 2)).reshape(bt // frames, frames * h * w, -1)
        context = reference.flatten(3).transpose(2, 3).flatten(1, 2)  # [b, 2 h w, c], start then end
        out = comfy_attention.optimized_attention(q, self.to_k(context), self.to_v(context), self.heads)
        out = self.to_out(out).reshape(bt, h * w, c).transpose(1, 2).reshape(bt, c, h, w)
        return x + out


class DualRefDecoder(sd_vae.Decoder):
    """ComfyUI's SD decoder with ToonCrafter's temporal layers and key-frame refinement (see module doc)."""

    def __init__(self, fusion_levels, **ddconfig):
        super().__init__(resnet_op=VideoResBlock, conv_out_op=AE3DConv, **ddconfig)
        ch, mult = ddconfig["ch"], ddconfig["ch_mult"]
        self.attn_refinement = nn.ModuleList(
            [KeyFrameFusion(ch * m) if i in fusion_levels else Combiner(ch * m) for i, m in enumerate(mult)]
            + [Combiner(ch * mult[0])])

    def forward(self, z, reference=None, frames=None):
        """z [(b t), 4, h, w] (VAE space, no post_quant_conv); reference: the encoder's five feature maps
        [b, 2, c, h, w] (levels 0..3, then conv_in); frames: t, the chunk's length."""
        if reference is None or frames is None:
            refuse_bare_decode()
        h = self.conv_in(z)
        h = self.mid.block_1(h, None, frames)
        h = self.mid.attn_1(h)
        h = self.mid.block_2(h, None, frames)
        for level in reversed(range(self.num_resolutions)):
            for block in self.up[level].block:
                h = block(h, None, frames)
            h = self.attn_refinement[level](h, reference[level], frames)
            if level != 0:
                h = self.up[level].upsample(h)
        h = sd_vae.nonlinearity(self.norm_out(h))
        h = self.attn_refinement[-1](h, reference[-1], frames)
        return self.conv_out(h, frames)


def fusion_levels(vae_sd):
    return sorted({int(k.split(".")[2]) for k in vae_sd
                   if k.startswith("decoder.attn_refinement.") and k.endswith(".to_q.weight")})


class DualRefVAE(comfy.sd.VAE):
    """A ComfyUI VAE whose decoder is ToonCrafter's; `decode` of a bare latent is refused (it needs the key
    frames), `decode_video` takes them. Encoding is the SD encoder's, as for every VideoCrafter model."""

    def __init__(self, vae_sd):
        config = vae_config(vae_sd)
        super().__init__(sd=vae_sd, config=config)  # the SD decoder it builds is replaced below
        decoder = DualRefDecoder(fusion_levels(vae_sd), **config["params"]["ddconfig"])
        decoder_sd = {k[len("decoder."):]: v for k, v in vae_sd.items() if k.startswith("decoder.")}
        missing, unexpected = decoder.load_state_dict(decoder_sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"ToonCrafter decoder tensors do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.first_stage_model.decoder = decoder.eval().to(self.vae_dtype)
        self.size = None
        self.model_size()
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=self.device,
                                                        offload_device=comfy.model_management.vae_offload_device())

    def decode(self, samples_in, vae_options={}):
        refuse_bare_decode()

    def decode_tiled(self, samples, *args, **kwargs):
        refuse_bare_decode()

    def reference_features(self, images):
        """The encoder's features the decoder consumes, of IMAGE pixels [2 b, H, W, 3] (start and end of each
        video, consecutive): the output of each level's last ResBlock, then conv_in's; each [b, 2, c, h, w]."""
        encoder = self.first_stage_model.encoder
        x = self.process_input(images.movedim(-1, 1)).to(self.device, self.vae_dtype)
        h = first = encoder.conv_in(x)
        features = []
        for level in range(encoder.num_resolutions):
            for i, block in enumerate(encoder.down[level].block):
                h = block(h, None)
                if len(encoder.down[level].attn) > 0:
                    h = encoder.down[level].attn[i](h)
            features.append(h)
            if level != encoder.num_resolutions - 1:
                h = encoder.down[level].downsample(h)
        features.append(first)
        return [f.unflatten(0, (-1, 2)) for f in features]

    def decode_video(self, latent, key_frames, progress=None):
        """IMAGE [B T, H, W, 3] of a VAE-space latent [B, 4, T, h, w] and its key frames IMAGE [B, 2, H, W, 3]."""
        b, _, t, h, w = latent.shape
        comfy.model_management.load_models_gpu([self.patcher], memory_required=self.decode_memory(t, h, w))
        out = torch.empty((b * t, h * self.upscale_ratio, w * self.upscale_ratio, 3), device=self.output_device)
        with torch.no_grad():
            for video in range(b):
                reference = self.reference_features(key_frames[video])
                frames = self.decode_frames(latent[video].transpose(0, 1), reference, progress)
                out[video * t:(video + 1) * t] = self.process_output(frames.float()).movedim(1, -1).to(self.output_device)
        return out

    def decode_frames(self, z, reference, progress=None):
        """Raw decoder output [T, 3, H, W] of one video's latent frames z [T, 4, h, w], as the original:
        chunks of 16 frames, then the two middle frames from a decode without latent frames 1 and T-2."""
        t = z.shape[0]
        frames = self._decode_chunks(z, reference, range(t), progress)
        if t >= 4:  # the original's middle-frame paste
            shortened = torch.cat([z[:1], z[2:t - 2], z[t - 1:]])
            wanted = (t // 2 - 2, t // 2 - 1)
            frames[t // 2 - 1:t // 2 + 1] = self._decode_chunks(shortened, reference, wanted)
        return frames

    def _decode_chunks(self, z, reference, wanted, progress=None):
        """Decoded frames `wanted` (consecutive indices) of z, decoding only the 16-frame chunks holding them."""
        wanted = list(wanted)
        out = []
        for start in range(wanted[0] // CHUNK_FRAMES * CHUNK_FRAMES, wanted[-1] + 1, CHUNK_FRAMES):
            comfy.model_management.throw_exception_if_processing_interrupted()
            chunk = z[start:start + CHUNK_FRAMES].to(self.device, self.vae_dtype)
            decoded = self.first_stage_model.decoder(chunk, reference, chunk.shape[0])
            keep = [i - start for i in wanted if start <= i < start + chunk.shape[0]]
            out.append(decoded[keep[0]:keep[-1] + 1])
            if progress is not None:
                progress(chunk.shape[0])
        return torch.cat(out)

    def decode_memory(self, frames, h, w):
        """Bytes of activations one chunk needs: at the released widths the 16-frame chunk at 320x512 peaks at 3.75 GiB
        in fp16 (scripts/benchmark.py --toon-decode), 49152 values per latent pixel and frame; 25% margin."""
        return DECODE_VALUES_PER_LATENT_PIXEL * min(frames, CHUNK_FRAMES) * h * w * \
            comfy.model_management.dtype_size(self.vae_dtype)

