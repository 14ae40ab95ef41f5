"""Atomic files and resumable training states.

Every file goes to a temporary name beside its target and is moved into place with os.replace,
so a run killed mid-write leaves the previous file. A training state is a folder
`states/step_XXXXXXXX/` (weights that training changes, optimizer, step, RNG, data position),
assembled under a temporary name and renamed only once complete; the newest complete folder is
the resume point, and only the last `keep` are kept.
"""
import csv
import io
import json
import logging
import os
import shutil

import torch

log = logging.getLogger("vc_train")

STATE_PREFIX = "step_"
INCOMPLETE_PREFIX = ".incomplete-"
META_FILE = "meta.json"  # written last inside a state: its presence marks a complete state
WEIGHTS_FILE = "weights.safetensors"
OPTIMIZER_FILE = "optimizer.pt"


def _tmp_name(path):
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}")


def atomic_write(path, write):
    """`write(tmp_path)` then move into place; the temporary file is removed on failure."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_safetensors(tensors, path, metadata=None):
    import safetensors.torch
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata=metadata))


def write_text(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, write)


def write_json(path, obj):
    return write_text(path, json.dumps(obj, indent=1, sort_keys=True))


def write_torch(path, obj):
    def write(tmp):
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    return atomic_write(path, write)


def write_loss_csv(path, history):
    """history: [{"step", "stage", "loss", "lr", "samples_per_sec"}]"""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["step", "stage", "loss", "lr", "samples_per_sec"])
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    return write_text(path, buf.getvalue())


def write_video(path, frames, fps):
    """frames [T, H, W, 3] 0..1 -> H.264 MP4 (PyAV), atomically."""
    import av
    pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    height, width = pixels.shape[1] // 2 * 2, pixels.shape[2] // 2 * 2  # yuv420p needs even sizes

    def write(tmp):
        with av.open(tmp, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=max(1, round(fps)))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for frame in pixels:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame[:height, :width].copy(), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return atomic_write(path, write)


class StateStore:
    def __init__(self, folder, keep=2):
        self.folder = folder
        self.keep = max(1, int(keep))

    def _complete(self):
        if not os.path.isdir(self.folder):
            return []
        out = []
        for name in os.listdir(self.folder):
            path = os.path.join(self.folder, name)
            if name.startswith(STATE_PREFIX) and os.path.isfile(os.path.join(path, META_FILE)):
                out.append((int(name[len(STATE_PREFIX):]), path))
        return sorted(out)

    def latest(self):
        """Path of the newest complete state, or None."""
        states = self._complete()
        return states[-1][1] if states else None

    def save(self, step, weights, optimizer_state, meta):
        """Write a complete state for `step`; returns its folder."""
        os.makedirs(self.folder, exist_ok=True)
        final = os.path.join(self.folder, f"{STATE_PREFIX}{step:08d}")
        tmp = os.path.join(self.folder, f"{INCOMPLETE_PREFIX}{STATE_PREFIX}{step:08d}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            self._write_parts(tmp, weights, optimizer_state, meta)
            if os.path.isdir(final):  # a state of the same step from an earlier, interrupted run
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._prune()
        return final

    def _write_parts(self, folder, weights, optimizer_state, meta):
        write_safetensors(weights, os.path.join(folder, WEIGHTS_FILE))
        write_torch(os.path.join(folder, OPTIMIZER_FILE), optimizer_state)
        write_json(os.path.join(folder, META_FILE), meta)

    def _prune(self):
        for _, path in self._complete()[:-self.keep]:
            shutil.rmtree(path, ignore_errors=True)
        for name in os.listdir(self.folder):  # leftovers of runs killed while writing
            if name.startswith(INCOMPLETE_PREFIX) and not name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(os.path.join(self.folder, name), ignore_errors=True)

    @staticmethod
    def load(path):
        import safetensors.torch
        with open(os.path.join(path, META_FILE)) as f:
            meta = json.load(f)
        weights = safetensors.torch.load_file(os.path.join(path, WEIGHTS_FILE))
        optimizer_state = torch.load(os.path.join(path, OPTIMIZER_FILE), map_location="cpu", weights_only=True)
        return weights, optimizer_state, meta
