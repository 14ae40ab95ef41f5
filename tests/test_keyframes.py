"""VideoCrafter Key-Frame Sequence on DynamiCrafter 512 interpolation and ToonCrafter (tiny models, or their
smoke models without the reference): N key frames give N-1 segments joined to (N-1)(T-1)+1 frames; every
segment is the single-pair graph's video with the same seed; key frames linked one by one (key_frame_1 ...,
after the key_frames batch, any size) give the batched video; fewer than two key frames are refused."""
import os

import pytest
import torch

import comfy_host
from conftest import rel_err

FRAMES, SIZE, STEPS, SEED, FS = 16, 64, 2, 7, 10
# batched against one-video computation: the README's tolerance for sampled videos. Measured 2e-5 - 1.2e-4 (float
# rounding of batched convolutions, grown over the steps by the random tiny UNets); two segments are > 1e-2 apart.
SAME_TOL = 1e-3


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """See conftest.one_torch_thread."""


@pytest.fixture(scope="module")
def checkpoints(models_dir, tiny_toon_file):
    interp = "tiny_dc_512_interp.safetensors"  # the interpolation model is DynamiCrafter 512's layout
    if not os.path.exists(models_dir / interp):
        os.symlink(os.path.join(comfy_host.GOLDEN, "tiny_dc_512.safetensors"), models_dir / interp)
    return {"dc_512_interp": interp, "toon_512": tiny_toon_file}


def key_frames(count):
    """`count` distinct 8-bit images [count, 64, 64, 3]: colour gradients with a disc that moves."""
    y, x = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    frames = []
    for i in range(count):
        disc = (((x - 0.2 - 0.2 * i) ** 2 + (y - 0.5) ** 2) < 0.03).float()
        frames.append(torch.stack([x * (1 - disc) + disc, y, (1 - x) * (i + 1) / count], -1))
    return (torch.stack(frames) * 255).round() / 255


@pytest.fixture(scope="module")
def graphs(pack, checkpoints):
    import nodes as core
    mappings = pack.vc_nodes.NODE_CLASSES
    cache = {}

    def get(variant):
        if variant not in cache:
            model, clip, vae, clip_vision, projector = mappings["VideoCrafterCheckpointLoader"].execute(checkpoints[variant])
            assert model.model.info.variant == variant
            (model,) = mappings["VideoCrafterGuidanceRescale"].execute(model, 0.7)
            (positive,) = core.CLIPTextEncode().encode(clip, "a cartoon")
            (negative,) = core.CLIPTextEncode().encode(clip, "")
            cache[variant] = dict(model=model, positive=positive, negative=negative, vae=vae, clip_vision=clip_vision,
                                  projector=projector)
        return cache[variant]
    return get


def sequence(pack, graph, frames=None, loop=False, segments_per_batch=4, **single_key_frames):
    """The node with `frames` on key_frames (None: unlinked) and `single_key_frames` on key_frame_1 ..., as a
    server calls it (inputs by name, unlinked optional inputs left out)."""
    node = pack.vc_nodes.NODE_CLASSES["VideoCrafterKeyFrameSequence"]
    linked = {name: image for name, image in {"key_frames": frames, **single_key_frames}.items() if image is not None}
    (video,) = node.execute(
        model=graph["model"], positive=graph["positive"], negative=graph["negative"], vae=graph["vae"],
        clip_vision=graph["clip_vision"], projector=graph["projector"], loop=loop, width=SIZE, height=SIZE,
        length=FRAMES, fs=FS, seed=SEED, steps=STEPS, cfg=7.5, sampler_name="videocrafter_ddim",
        scheduler="videocrafter_trailing", eta=1.0, segments_per_batch=segments_per_batch, **linked)
    return video


def single_pair(pack, graph, start, end):
    """The one-pair graph: DynamiCrafter Conditioning (interpolate) -> VideoCrafter KSampler -> VAE Decode."""
    mappings = pack.vc_nodes.NODE_CLASSES
    positive, negative, latent = mappings["DynamiCrafterConditioning"].execute(
        graph["positive"], graph["negative"], graph["vae"], graph["clip_vision"], graph["projector"], start,
        "interpolate", SIZE, SIZE, FRAMES, 1, FS, end_image=end)
    (samples,) = mappings["VideoCrafterKSampler"].execute(graph["model"], positive, negative, latent, SEED, STEPS, 7.5,
                                                           "videocrafter_ddim", "videocrafter_trailing", eta=1.0)
    return mappings["VideoCrafterVAEDecode"].execute(samples, graph["vae"])[0]


@pytest.mark.parametrize("variant", ["dc_512_interp", "toon_512"])
def test_four_key_frames_join_three_single_pair_segments(pack, graphs, variant):
    """3 segments sampled in one call, joined to 3*16-2 frames: frames 0-15 are segment 0, then each further
    segment without its first frame (its rendering of the key frame the previous segment ended on), so key
    frame k sits at frame 15k. Eta 1: the per-step noise is the single-pair run's too."""
    graph = graphs(variant)
    frames = key_frames(4)
    video = sequence(pack, graph, frames)
    assert video.shape == (3 * FRAMES - 2, SIZE, SIZE, 3)
    segments = [single_pair(pack, graph, frames[i:i + 1], frames[i + 1:i + 2]) for i in range(3)]
    expected = torch.cat([segments[0], segments[1][1:], segments[2][1:]])
    errors = [rel_err(video[i * (FRAMES - 1):(i + 1) * (FRAMES - 1) + 1], expected[i * (FRAMES - 1):(i + 1) * (FRAMES - 1) + 1])
              for i in range(3)]
    print(variant, errors)
    assert max(errors) <= SAME_TOL, errors
    assert rel_err(segments[1], segments[0]) > 1e-2  # the segments differ: each pair is its own video


def test_loop_and_smaller_sampling_batches(pack, graphs):
    """'loop' adds the segment back to the first key frame and drops the final frame (key frame 0 again):
    2 key frames -> 2 x 15 frames; sampling one segment per call gives the same video."""
    graph = graphs("toon_512")
    frames = key_frames(2)
    together = sequence(pack, graph, frames, loop=True)
    apart = sequence(pack, graph, frames, loop=True, segments_per_batch=1)
    assert together.shape == (2 * (FRAMES - 1), SIZE, SIZE, 3)
    assert rel_err(apart, together) <= SAME_TOL


def test_one_key_frame_is_refused(pack, graphs):
    graph = graphs("dc_512_interp")
    for inputs, count in (({"frames": key_frames(1)}, 1), ({"key_frame_3": key_frames(1)}, 1), ({}, 0)):
        with pytest.raises(ValueError, match=f"Key-Frame Sequence needs at least 2 key frames; got {count}. "
                                             "Link the images to key_frame_1, key_frame_2.*mode 'loop'"):
            sequence(pack, graph, **inputs)


def test_key_frames_linked_one_by_one_give_the_batched_video(pack, graphs):
    """key_frame_1 ... (each an image or a batch, after the key_frames batch when that is linked, gaps allowed)
    give the video of the same key frames as one batch, bit for bit."""
    graph = graphs("dc_512_interp")
    frames = key_frames(3)
    batched = sequence(pack, graph, frames)
    assert torch.equal(sequence(pack, graph, key_frame_1=frames[0:1], key_frame_2=frames[1:2], key_frame_3=frames[2:3]),
                       batched)
    assert torch.equal(sequence(pack, graph, frames[0:1], key_frame_2=frames[1:3]), batched)
    assert torch.equal(sequence(pack, graph, frames[0:2], key_frame_8=frames[2:3]), batched)


def test_key_frames_of_other_sizes_are_fitted_as_the_conditioning_fits_them(pack, graphs):
    """A key frame of another size and aspect (and with an alpha channel) next to one at the video size: the
    sequence of the two is the single-pair graph's video of the same two images (DynamiCrafter Conditioning fits
    each image to the video size)."""
    graph = graphs("dc_512_interp")
    y, x = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 160), indexing="ij")
    wide = torch.stack([x, y, 1 - x, torch.ones_like(x)], -1)[None]  # [1, 96, 160, 4]
    end = key_frames(2)[1:2]
    video = sequence(pack, graph, key_frame_1=wide, key_frame_2=end)
    assert video.shape == (FRAMES, SIZE, SIZE, 3)
    assert rel_err(video, single_pair(pack, graph, wide, end)) <= SAME_TOL
