"""VideoCrafter Key-Frame Sequence: interpolate every consecutive pair of N key frames, join the segments.

Each segment is what the single-pair graph (DynamiCrafter Conditioning 'interpolate' -> VideoCrafter KSampler ->
VideoCrafter VAE Decode) gives for that pair with the same seed: segments sampled together get the initial
noise and the per-step noise a single-pair run draws. Segment i ends on its rendering of key frame i+1 and
segment i+1 starts on another rendering of it; the join keeps the first and drops the second, so key frame k
sits at frame k*(length-1) of the joined video and no key frame is shown twice.
"""
import torch

import comfy.samplers
from comfy_api.latest import io

from ..vc_models.conditioning import fit_images
from ..vc_models.sampling import SAMPLER_NAME, TRAILING_SCHEDULER_NAME, seeded_step_noise
from .decode import decode_video
from .dynamicrafter import conditioning_and_latent
from ..vc_models.video_size import SIZE_MULTIPLE
from .loader import Projector
from .sampler import sample_video


SINGLE_INPUTS = 8  # optional IMAGE inputs key_frame_1 ... key_frame_8


def gather_key_frames(key_frames, single_inputs, width, height):
    """IMAGE [N, height, width, 3]: the `key_frames` batch (if linked), then key_frame_1 ... key_frame_8 in order
    (those linked; each may be a batch), every image fitted to the video size as DynamiCrafter Conditioning fits
    it (images of different sizes can then be joined; an image already at that size is kept as it is)."""
    unknown = set(single_inputs) - {f"key_frame_{i}" for i in range(1, SINGLE_INPUTS + 1)}
    if unknown:
        raise TypeError(f"VideoCrafter Key-Frame Sequence has no input {sorted(unknown)}")
    linked = [("key_frames", key_frames)] + [(f"key_frame_{i}", single_inputs.get(f"key_frame_{i}"))
                                             for i in range(1, SINGLE_INPUTS + 1)]
    images = []
    for name, image in linked:
        if image is None:
            continue
        if image.ndim != 4:
            raise ValueError(f"VideoCrafter Key-Frame Sequence: '{name}' is not an IMAGE [B, H, W, C] (shape "
                             f"{list(image.shape)}); link an image (Load Image) or an IMAGE batch.")
        images.append(fit_images(image, width, height))
    count = sum(image.shape[0] for image in images)
    if count < 2:
        raise ValueError(f"VideoCrafter Key-Frame Sequence needs at least 2 key frames; got {count}. Link the images "
                         "to key_frame_1, key_frame_2, ... in order (or an IMAGE batch to key_frames); for a single "
                         "image use DynamiCrafter Conditioning with mode 'loop'.")
    return torch.cat([image.to(images[0]) for image in images])


def key_frame_pairs(key_frames, loop):
    """(start images, end images) of the segments: consecutive pairs, and for a loop last -> first."""
    ends = torch.cat([key_frames[1:], key_frames[:1]]) if loop else key_frames[1:]
    return key_frames[:len(ends)], ends


def join_segments(frames, segments, loop):
    """IMAGE [segments * T, H, W, 3] -> one video: every segment after the first without its first frame (the
    previous segment's last frame shows the same key frame); a loop also drops the final frame (key frame 0)."""
    videos = frames.unflatten(0, (segments, -1))
    joined = torch.cat([videos[0], videos[1:, 1:].flatten(0, 1)])
    return joined[:-1] if loop else joined


class SharedNoiseSampler:
    """Per-step noise of a single video (the draws a one-video run of the pack's samplers makes with this seed,
    vc_models.sampling.seeded_step_noise), for every video."""

    def __init__(self, like, seed, batch):
        self.single = seeded_step_noise(like, seed)
        self.batch = batch

    def __call__(self, sigma, sigma_next):
        noise = self.single(sigma, sigma_next)
        return noise.expand(self.batch, *noise.shape[1:])


class VideoCrafterKeyFrameSequence(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VideoCrafterKeyFrameSequence",
            display_name="VideoCrafter Key-Frame Sequence",
            category="VideoCrafter/sampling",
            description=("Interpolates every consecutive pair of the key frames (DynamiCrafter 512 interpolation or "
                         "ToonCrafter; 'loop' also returns from the last to the first) with the DynamiCrafter "
                         "interpolation graph, several segments per sampling call, and joins them without showing a "
                         "key frame twice. Each segment equals a single-pair run with the same seed."),
            inputs=[
                io.Model.Input("model", tooltip=(
                    "The interpolation model (DynamiCrafter 512 interp or ToonCrafter), with VideoCrafter Guidance "
                    "Rescale 0.7 as the originals sample.")),
                io.Conditioning.Input("positive", tooltip=(
                    "The prompt's conditioning (CLIP Text Encode), for every segment.")),
                io.Conditioning.Input("negative", tooltip="The negative; the originals use the empty prompt."),
                io.Vae.Input("vae", tooltip=(
                    "The VAE from Load VideoCrafter Checkpoint (ToonCrafter's looks at each pair).")),
                io.ClipVision.Input("clip_vision", tooltip="The image encoder from Load VideoCrafter Checkpoint."),
                Projector.Input("projector", tooltip="The projector from Load VideoCrafter Checkpoint."),
                io.Boolean.Input("loop", default=False, tooltip=(
                    "Also interpolate from the last key frame back to the first, for a video that loops.")),
                io.Int.Input("width", default=512, min=SIZE_MULTIPLE, max=4096, step=SIZE_MULTIPLE,
                             tooltip="Video width, a multiple of 64 (512 as trained)."),
                io.Int.Input("height", default=320, min=SIZE_MULTIPLE, max=4096, step=SIZE_MULTIPLE,
                             tooltip="Video height, a multiple of 64 (320 as trained)."),
                io.Int.Input("length", default=16, min=2, max=1024, tooltip=(
                    "Frames per segment, both key frames included (16 as trained).")),
                io.Int.Input("fs", default=10, min=1, max=1000, tooltip=(
                    "Motion condition: ToonCrafter 10, DynamiCrafter interpolation 5 (smaller = larger motion).")),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seed of every segment (each gets the noise of a single-pair run)."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="Denoising steps; the originals use 50."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale; the originals use 7.5."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default=SAMPLER_NAME,
                               tooltip="videocrafter_ddim reproduces the original sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default=TRAILING_SCHEDULER_NAME,
                               tooltip="videocrafter_trailing: the originals' spacing for these models."),
                io.Float.Input("eta", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="DDIM eta; the originals use 1."),
                io.Int.Input("segments_per_batch", default=4, min=1, max=64, tooltip=(
                    "Segments sampled in one call: lower it if you run out of memory.")),
                io.Image.Input("key_frames", optional=True, tooltip=(
                    "Key frames in order as one IMAGE batch; key_frame_1 ... follow it. At least 2 key frames in "
                    "all.")),
                *[io.Image.Input(f"key_frame_{i}", optional=True, tooltip=(
                    f"Key frame {i} (after the key_frames batch, if linked; any size: fitted to width x height). "
                    "Link them in order.")) for i in range(1, SINGLE_INPUTS + 1)],
            ],
            outputs=[io.Image.Output(tooltip=(
                "The joined video: (N-1) x (length-1) + 1 frames for N key frames (a loop: N x (length-1)), key "
                "frame k at frame k x (length-1)."))],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, clip_vision, projector, loop, width, height, length, fs, seed,
                steps, cfg, sampler_name, scheduler, eta, segments_per_batch, key_frames=None, **single_key_frames):
        starts, ends = key_frame_pairs(gather_key_frames(key_frames, single_key_frames, width, height), loop)
        frames = []
        for first in range(0, len(starts), segments_per_batch):
            group = slice(first, first + segments_per_batch)
            count = len(starts[group])
            pos, neg, latent = conditioning_and_latent(positive, negative, vae, clip_vision, projector, starts[group],
                                                       "interpolate", width, height, length, count, fs,
                                                       end_image=ends[group])
            latent["batch_index"] = [0] * count  # every segment gets the initial noise of a single-pair run
            single = torch.empty((1, *latent["samples"].shape[1:]), device=model.load_device)
            samples = sample_video(model, pos, neg, latent, seed, steps, cfg, sampler_name, scheduler, eta,
                                   noise_sampler=SharedNoiseSampler(single, seed, count))
            frames.append(decode_video(samples, vae))
        return io.NodeOutput(join_segments(torch.cat(frames), len(starts), loop))


NODES = [VideoCrafterKeyFrameSequence]
