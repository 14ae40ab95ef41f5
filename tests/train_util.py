"""Helpers for the trainer tests: a synthetic video dataset written with PyAV, a CLIP vision file
extracted from the tiny I2V checkpoint, and small training configurations."""
import os

import numpy as np

import comfy_host

TINY_I2V = os.path.join(comfy_host.GOLDEN, "tiny_i2v_v1.safetensors")
TINY_T2V = os.path.join(comfy_host.GOLDEN, "tiny_t2v_v2.safetensors")
TINY_DC = os.path.join(comfy_host.GOLDEN, "tiny_dc_512.safetensors")


def write_video(path, frames=10, height=64, width=128, fps=8, phase=0.0):
    """A moving colour gradient, H.264 in MP4 (yuv420p)."""
    import av
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264" if path.endswith(".mp4") else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        for i in range(frames):
            t = phase + i / frames
            img = np.stack([(np.sin(xx / 9 + 6 * t) + 1) * 127, (np.cos(yy / 7 + 4 * t) + 1) * 127,
                            np.full_like(xx, 255 * ((phase * 3) % 1))], axis=-1).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_dataset(folder, count=4, frames=10, height=64, width=128, broken=0, short=0):
    """`count` good videos with captions, plus `broken` unreadable files and `short` 2-frame videos."""
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        write_video(os.path.join(folder, f"clip{i:02d}.mp4"), frames, height, width, phase=i / max(count, 1))
        with open(os.path.join(folder, f"clip{i:02d}.txt"), "w") as f:
            f.write(f"a colourful wave number {i}")
    for i in range(broken):
        with open(os.path.join(folder, f"broken{i}.mp4"), "wb") as f:
            f.write(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    for i in range(short):
        write_video(os.path.join(folder, f"short{i}.mp4"), 2, height, width)
    return folder


def read_video_frames(path):
    """uint8 [T, H, W, 3] of a video file (PyAV)."""
    import av
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def make_image_folder(folder, count=3, height=64, width=96, broken=0):
    """`count` PNG images with same-name captions, plus `broken` files that are not images."""
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        img = np.stack([(np.sin(xx / (5 + i)) + 1) * 127, (np.cos(yy / 6) + 1) * 127, np.full_like(xx, 40 * i)], -1)
        Image.fromarray(img.astype(np.uint8)).save(os.path.join(folder, f"still{i:02d}.png"))
        with open(os.path.join(folder, f"still{i:02d}.txt"), "w") as f:
            f.write(f"a still pattern number {i}")
    for i in range(broken):
        with open(os.path.join(folder, f"broken{i}.png"), "wb") as f:
            f.write(b"\x89PNG not really")
    return folder


def write_clip_vision_file(path, layout="openclip"):
    """The tiny I2V checkpoint's visual tower as a models/clip_vision file (OpenCLIP `visual.` or HF keys)."""
    import safetensors.torch
    sd = safetensors.torch.load_file(TINY_I2V)
    visual = {k[len("embedder.model.visual."):]: v for k, v in sd.items() if k.startswith("embedder.model.visual.")}
    if layout == "openclip":
        visual = {f"visual.{k}": v for k, v in visual.items()}
    if layout == "hf":
        import comfy.clip_vision
        visual = comfy.clip_vision.convert_to_transformers({f"visual.{k}": v for k, v in visual.items()}, "visual.")
        visual = {k: v.contiguous() for k, v in visual.items()}
    safetensors.torch.save_file(visual, path)
    return path


def small_config(tmp_path, data, **overrides):
    values = dict(checkpoint=TINY_I2V, data=str(data), output_dir=str(tmp_path / "run"), frames=4, frame_stride=2,
                  height=64, width=64, stage="projector", projector_steps=2, finetune_steps=2, batch_size=1,
                  grad_accum=1, gradient_checkpointing=False, save_every=0, keep_states=2, seed=1,
                  projector_lr=1e-3, finetune_lr=1e-4, name="tiny")
    values.update(overrides)
    return values
