"""MotionCtrl's object-motion adapter (OMCM) on ComfyUI's operations: a T2I-Adapter run on each frame of a flow.

Parameter names are the released `omcm.*` keys (`lvdm/modules/encoders/adapter.py` of TencentARC/MotionCtrl):
PixelUnshuffle(8) of the 2-channel flow, `conv_in`, then per level `res_blocks` residual blocks, the first of
each level after the first downsampling by 2 (average pooling as released, or a stride-2 convolution). The
feature of each level is the output of its last block.
"""
import torch.nn as nn

import comfy.ops
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample

ops = comfy.ops.disable_weight_init
# the flow comes at pixel size; the adapter's first feature is at latent size
PIXELS_PER_LATENT = 8


class AdapterResBlock(nn.Module):
    """[downsample] -> [in_conv when the width changes, or always with a skip convolution] -> conv, ReLU, conv,
    plus the input (or its skip convolution `skep`)."""

    def __init__(self, in_channels, out_channels, down, kernel=3, skip_conv=False, conv_downsample=False,
                 dtype=None, device=None, operations=ops):
        super().__init__()
        pad = kernel // 2
        self.down_opt = Downsample(in_channels, conv_downsample, dims=2, out_channels=in_channels, dtype=dtype,
                                   device=device, operations=operations) if down else None
        self.in_conv = operations.Conv2d(in_channels, out_channels, kernel, 1, pad, dtype=dtype, device=device) \
            if in_channels != out_channels or skip_conv else None
        self.block1 = operations.Conv2d(out_channels, out_channels, 3, 1, 1, dtype=dtype, device=device)
        self.act = nn.ReLU()
        self.block2 = operations.Conv2d(out_channels, out_channels, kernel, 1, pad, dtype=dtype, device=device)
        self.skep = operations.Conv2d(out_channels, out_channels, kernel, 1, pad, dtype=dtype, device=device) \
            if skip_conv else None

    def forward(self, x):
        if self.down_opt is not None:
            x = self.down_opt(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        h = self.block2(self.act(self.block1(x)))
        return h + (self.skep(x) if self.skep is not None else x)


class MotionAdapter(nn.Module):
    """Frames of a flow [N, 2, H, W] (pixel size) -> one feature per level, [N, C_i, H / 8 / 2^i, W / 8 / 2^i]."""

    def __init__(self, channels, res_blocks, in_channels, kernel=3, skip_conv=False, conv_downsample=False,
                 dtype=None, device=None, operations=ops):
        super().__init__()
        self.channels = tuple(channels)
        self.res_blocks = res_blocks
        self.unshuffle = nn.PixelUnshuffle(PIXELS_PER_LATENT)
        blocks = []
        for level, width in enumerate(self.channels):
            for index in range(res_blocks):
                first_down = level != 0 and index == 0
                blocks.append(AdapterResBlock(self.channels[level - 1] if first_down else width, width, first_down,
                                              kernel, skip_conv, conv_downsample, dtype=dtype, device=device,
                                              operations=operations))
        self.body = nn.ModuleList(blocks)
        self.conv_in = operations.Conv2d(in_channels, self.channels[0], 3, 1, 1, dtype=dtype, device=device)

    @property
    def flow_channels(self):
        return self.conv_in.in_channels // PIXELS_PER_LATENT ** 2

    def forward(self, flow):
        x = self.conv_in(self.unshuffle(flow))
        features = []
        for level in range(len(self.channels)):
            for index in range(self.res_blocks):
                x = self.body[level * self.res_blocks + index](x)
            features.append(x)
        return features

    def video_features(self, trajectory):
        """The original's `get_traj_features`: [B, 2, T, H, W] -> per level [B, C_i, T, h_i, w_i]."""
        b, c, t, h, w = trajectory.shape
        frames = trajectory.transpose(1, 2).reshape(b * t, c, h, w)
        return [f.reshape(b, t, *f.shape[1:]).transpose(1, 2) for f in self(frames)]


def build_motion_adapter(cfg, dtype=None, device=None, operations=ops):
    """The adapter of a UNetConfig with `omcm_channels`, or None."""
    if not cfg.omcm_channels:
        return None
    return MotionAdapter(cfg.omcm_channels, cfg.omcm_res_blocks, cfg.omcm_in_channels, cfg.omcm_kernel,
                         cfg.omcm_skip_conv, cfg.omcm_conv_downsample, dtype=dtype, device=device,
                         operations=operations)

