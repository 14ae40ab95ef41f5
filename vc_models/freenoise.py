"""FreeNoise long video (AILab-CVC/FreeNoise): noise rescheduling and windowed temporal self-attention.

Two parts, both exactly as the reference README states:
1. The initial noise of T frames is rescheduled: for each stride of frames past the first window,
   the frames are a shuffled copy of the frames one window earlier (one `random.Random(seed)`,
   shuffles in loop order). This runs as a ComfyUI OUTER_SAMPLE wrapper, which sees the noise and
   the seed of every sampler (VideoCrafter KSampler, core KSampler, SamplerCustom(Advanced)).
2. Every temporal self-attention attends within frame windows `(s, s + W)`, `s = 0, S, 2S, ... <= T - W`;
   each window's output is weighted by the triangular sequence 1, 2, ..., W/2, W/2, ..., 1, summed
   per frame and divided by the summed weights. The windows travel to the temporal layers in
   `transformer_options[WINDOWS_KEY]`; spatial layers never look at them.

No ComfyUI imports: the math is testable on its own.
"""
import logging
import random

import torch

# transformer_options key holding (window_size, window_stride); read by the UNet's temporal layers
WINDOWS_KEY = "videocrafter_freenoise_windows"
# key of the OUTER_SAMPLE wrapper (noise rescheduling, coverage warning) on the ModelPatcher
WRAPPER_KEY = "videocrafter_freenoise"


def window_starts(num_frames, size, stride):
    """Start frames of the original's views: (T - W) // S + 1 windows from frame 0."""
    if num_frames < size:
        return []
    return list(range(0, num_frames - size + 1, stride))


def triangular_weights(size):
    """1, 2, ..., W/2, W/2, ..., 2, 1 (odd W: 1, ..., (W+1)/2, ..., 1)."""
    half = (size + 1) // 2
    rising = list(range(1, half + 1))
    return rising + rising[::-1][size % 2:]


def uncovered_frames(num_frames, size, stride):
    """Frames after the last window: the original gives them no temporal attention at all."""
    starts = window_starts(num_frames, size, stride)
    return num_frames - (starts[-1] + size) if starts else 0


class FrameWindows:
    """The sliding windows over T frames, as gather indices and fusion weights.

    `attend` runs an attention function on all windows at once (windows become extra batch
    entries: [N, T, C] -> [N * windows, W, C]), so there is no Python loop over frames or windows,
    and only window-sized attention matrices exist; the caller bounds N (pixels per chunk).
    """

    def __init__(self, num_frames, size, stride, device=None):
        starts = torch.tensor(window_starts(num_frames, size, stride), device=device)
        self.num_frames = num_frames
        self.size = size
        self.count = len(starts)
        index = starts[:, None] + torch.arange(size, device=device)[None, :]  # [windows, W]
        self.flat_index = index.reshape(-1)
        weights = torch.tensor(triangular_weights(size), dtype=torch.float32, device=device)
        self.flat_weights = weights.repeat(self.count)
        total = torch.zeros(num_frames, device=device).index_add_(0, self.flat_index, self.flat_weights)
        # frames no window covers keep a zero output, as the original's `where(count > 0, value / count, value)`
        self.total = torch.where(total > 0, total, torch.ones_like(total))

    @classmethod
    def from_options(cls, transformer_options, num_frames, device=None):
        """The windows FreeNoise asks for, or None when attention over all frames is the same thing
        (one window covering every frame: plain attention, bit for bit) or impossible (fewer frames
        than one window: plain attention, documented)."""
        spec = (transformer_options or {}).get(WINDOWS_KEY)
        if spec is None:
            return None
        size, stride = spec
        if num_frames <= size:
            return None
        return cls(num_frames, size, stride, device)

    @property
    def gathered_frames(self):
        """Frames the windowed attention processes per pixel (windows x window size)."""
        return self.count * self.size

    def attend(self, attention, q, k, v):
        """attention(q, k, v) -> out on [n, L, C] tensors; here applied per window and fused."""
        n, t, _ = q.shape

        def gather(a):
            return a[:, self.flat_index].reshape(n * self.count, self.size, a.shape[-1])

        out = attention(gather(q), gather(k), gather(v))
        c = out.shape[-1]
        weights = self.flat_weights.to(out)
        out = out.reshape(n, self.count * self.size, c) * weights[None, :, None]
        fused = out.new_zeros(n, t, c).index_add_(1, self.flat_index, out)
        return fused / self.total.to(out)[None, :, None]


def reschedule_noise(noise, size, stride, seed):
    """FreeNoise's noise rescheduling on [B, C, T, h, w] (a new tensor).

    In loop order over `f = W, W + S, ...`: frames f..f+S become a shuffled copy of frames
    f-W..f-W+S (which earlier iterations may already have rewritten, as in the original). When T - W
    is not a multiple of S, the last shuffle of S indices is drawn as usual and only its first
    T - f entries are used (the original raises a shape error there).
    """
    rng = random.Random(seed)
    out = noise.clone()
    frames = out.shape[2]
    for f in range(size, frames, stride):
        index = list(range(f - size, f - size + stride))
        rng.shuffle(index)
        n = min(stride, frames - f)
        out[:, :, f:f + n] = out[:, :, index[:n]]
    return out


class FreeNoiseSampling:
    """OUTER_SAMPLE wrapper: once per sampling run, warns about frames no window covers and (if asked)
    reschedules the sampler's initial noise with the sampler's seed."""

    def __init__(self, size, stride, reschedule=True):
        self.size = size
        self.stride = stride
        self.reschedule = reschedule

    def __call__(self, executor, noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, *args, **kwargs):
        frames = noise.shape[2] if noise.ndim == 5 else 0
        tail = uncovered_frames(frames, self.size, self.stride) if frames > self.size else 0
        if tail:
            covered = frames - tail
            logging.warning("FreeNoise: %d frames with window %d / stride %d leave the last %d frames without temporal "
                            "attention (as the original); use %d or %d frames.", frames, self.size, self.stride, tail,
                            covered, covered + self.stride)
        if self.reschedule and frames > self.size:
            if seed is None:
                logging.warning("FreeNoise: the sampler passed no seed; rescheduling the noise with seed 0.")
            noise = reschedule_noise(noise, self.size, self.stride, 0 if seed is None else seed)
        return executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, *args, **kwargs)
