"""Atomic files and resumable training states.

Every file goes through the pack's atomic writer (vc_models/atomic_file.py), so a run killed
mid-write leaves the previous file. A training state is a folder `states/<run id>/step_XXXXXXXX/`
(weights that training changes, optimizer, step, RNG, data position, the run's config), assembled
under a temporary name and renamed only once complete; the newest complete folder of a run is its
resume point, and only the run's last `keep` are kept.
"""
import csv
import io
import json
import os
import secrets
import shutil
import time

import torch

from ..vc_models.atomic_file import atomic_write, write_safetensors


STATE_PREFIX = "step_"
INCOMPLETE_PREFIX = ".incomplete-"
META_FILE = "meta.json"  # written last inside a state: its presence marks a complete state
WEIGHTS_FILE = "weights.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RANK_OPTIMIZER_FILE = "optimizer.rank{}.pt"  # a sharded run's optimizer states, one file per rank




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


def new_run_id():
    """Sorts by start time; the random tail keeps two runs started in the same second apart."""
    now = time.time_ns()
    return time.strftime("run-%Y%m%d-%H%M%S", time.gmtime(now // 10**9)) + f"{now // 1000 % 10**6:06d}-{secrets.token_hex(2)}"


class StateStore:
    """States of training runs under `folder`: `folder/<run id>/step_XXXXXXXX/`. A run only ever
    writes, prunes and cleans up inside its own run folder, so a fresh run next to an earlier one
    neither mixes with nor deletes the earlier run's states."""

    def __init__(self, folder, keep=2, run_id=None):
        self.folder = folder
        self.keep = max(1, int(keep))
        self.run_id = run_id

    def runs(self):
        """Run ids with at least one complete state, oldest first."""
        if not os.path.isdir(self.folder):
            return []
        return sorted(name for name in os.listdir(self.folder) if self._complete(name))

    def _complete(self, run_id):
        folder = os.path.join(self.folder, run_id)
        if not os.path.isdir(folder):
            return []
        out = []
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name.startswith(STATE_PREFIX) and os.path.isfile(os.path.join(path, META_FILE)):
                out.append((int(name[len(STATE_PREFIX):]), path))
        return sorted(out)

    def latest(self, run_id=None):
        """Path of the newest complete state of `run_id` (default: this store's run, else the newest run), or None."""
        run_id = run_id or self.run_id or (self.runs() or [None])[-1]
        states = self._complete(run_id) if run_id else []
        return states[-1][1] if states else None

    @staticmethod
    def run_of(path):
        """The run a state folder belongs to: its parent folder's name."""
        return os.path.basename(os.path.dirname(os.path.abspath(path)))

    def begin(self, step):
        """The (new, empty) temporary folder of `step`'s state: the other ranks of a sharded run write their
        parts into it (`write_rank_part`) before `save` completes it."""
        if not self.run_id:
            raise ValueError("StateStore.save needs a run id")
        folder = os.path.join(self.folder, self.run_id)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f"{INCOMPLETE_PREFIX}{STATE_PREFIX}{step:08d}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        return tmp

    @staticmethod
    def write_rank_part(tmp, rank, optimizer_state):
        write_torch(os.path.join(tmp, RANK_OPTIMIZER_FILE.format(rank)), optimizer_state)

    @staticmethod
    def load_rank_part(path, rank):
        """Rank `rank`'s optimizer states of a sharded run's state folder."""
        part = os.path.join(path, RANK_OPTIMIZER_FILE.format(rank))
        if not os.path.isfile(part):
            raise ValueError(f"Training state {path} has no optimizer shard of rank {rank}: it was not written by "
                             "a sharded (fsdp) run on this number of ranks")
        return torch.load(part, map_location="cpu", weights_only=True)

    def save(self, step, weights, optimizer_state, meta, tmp=None):
        """Write a complete state for `step` of this store's run (into `tmp` from `begin`, which may hold
        other ranks' parts); returns its folder."""
        tmp = tmp or self.begin(step)
        final = os.path.join(os.path.dirname(tmp), f"{STATE_PREFIX}{step:08d}")
        folder = os.path.dirname(tmp)
        try:
            self._write_parts(tmp, weights, optimizer_state, dict(meta, run_id=self.run_id))
            if os.path.isdir(final):  # this run's state of the same step, written before an interrupt
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._prune(folder)
        return final

    def _write_parts(self, folder, weights, optimizer_state, meta):
        write_safetensors(weights, os.path.join(folder, WEIGHTS_FILE))
        write_torch(os.path.join(folder, OPTIMIZER_FILE), optimizer_state)
        write_json(os.path.join(folder, META_FILE), meta)

    def _prune(self, folder):
        for _, path in self._complete(self.run_id)[:-self.keep]:
            # renamed out of the states first (one atomic step): an interrupt inside the deletion leaves a leftover
            # the next prune removes, never a state that still has meta.json with its weights half deleted
            doomed = os.path.join(folder, f"{INCOMPLETE_PREFIX}{os.path.basename(path)}-pruned")
            shutil.rmtree(doomed, ignore_errors=True)
            os.replace(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        for name in os.listdir(folder):  # leftovers of this run killed while writing
            if name.startswith(INCOMPLETE_PREFIX) and not name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)

    @staticmethod
    def load(path, weights=True):
        """(weights, optimizer state, meta) of a state folder; weights=False reads only its meta."""
        import safetensors.torch
        with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
            meta = json.load(f)
        if not weights:
            return None, None, meta
        tensors = safetensors.torch.load_file(os.path.join(path, WEIGHTS_FILE))
        optimizer_state = torch.load(os.path.join(path, OPTIMIZER_FILE), map_location="cpu", weights_only=True)
        return tensors, optimizer_state, meta
