"""Video-caption datasets: listing, PyAV decoding, clip sampling and rank sharding.

Sources: a folder of videos with same-name `.txt` captions, or a CSV / JSONL of (path, caption)
rows in WebVid style. Every random choice takes an explicit `torch.Generator`, so a step's data
depends only on (seed, step, rank): that is what makes resume exact.
"""
import csv
import hashlib
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..vc_models.paths import inside_any

log = logging.getLogger("vc_train")

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PATH_COLUMNS = ("path", "video", "video_path", "file", "filename")
CAPTION_COLUMNS = ("caption", "text", "prompt", "name")


class DatasetError(ValueError):
    """The data source cannot be used; the message says what was found."""


@dataclass
class VideoItem:
    path: str
    caption: str


def check_inside_roots(path, roots, what):
    """`path` must lie inside one of `roots` (none: anywhere); a DatasetError naming `what` and the folders otherwise."""
    if roots and not inside_any(path, roots):
        raise DatasetError(f"{what} {path} lies outside {' or '.join(roots)}, the folder training data must come "
                           "from here: give paths inside it (relative paths, no '..'), or move the files there.")


def list_videos(source, video_root="", roots=()):
    """[VideoItem] from a folder, a .csv or a .jsonl. `roots`: folders every listed file must lie in (the node passes
    ComfyUI's input folder: a list uploaded there cannot make the trainer read files from elsewhere on the host)."""
    check_inside_roots(source, roots, "The training data")
    if os.path.isdir(source):
        return _list_folder(source)
    if not os.path.isfile(source):
        raise DatasetError(f"Training data not found: {source} (expected a folder of videos, a .csv or a .jsonl).")
    root = video_root or os.path.dirname(os.path.abspath(source))
    lower = source.lower()
    if lower.endswith(".csv"):
        rows = _read_csv(source)
    elif lower.endswith((".jsonl", ".json")):
        rows = _read_jsonl(source)
    else:
        raise DatasetError(f"{source}: unknown data list format (use a folder, .csv or .jsonl).")
    empty = sum(1 for _, c, _ in rows if not c.strip())
    if empty:
        log.warning("%d rows of %s have an empty caption; they train with the empty prompt", empty, source)
    items = []
    for path, caption, where in rows:
        path = path if os.path.isabs(path) else os.path.join(root, path)
        check_inside_roots(os.path.abspath(path), roots, f"{where}: the video")
        items.append(VideoItem(path, caption))
    return items


def list_training_items(cfg):
    """[VideoItem] of a TrainConfig's data: the images of stage 'images', else the videos (checked against
    cfg.data_roots)."""
    roots = tuple(cfg.data_roots or ())
    if cfg.stage == "images":
        return list_images(cfg.data, roots)
    return list_videos(cfg.data, cfg.video_root, roots)


def _read_text(path, what):
    """A UTF-8 text file (a byte-order mark is dropped); anything else is a DatasetError naming the file and line."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DatasetError(f"{path} line {line}: {what} is not UTF-8 text (byte {raw[e.start]:#04x} at offset "
                           f"{e.start}); save it as UTF-8.") from None


def count_media(folder):
    """(videos, images) in a folder, by extension."""
    exts = [os.path.splitext(name)[1].lower() for name in os.listdir(folder)]
    return sum(e in VIDEO_EXTENSIONS for e in exts), sum(e in IMAGE_EXTENSIONS for e in exts)


def list_images(folder, roots=()):
    """[VideoItem] of the images in a folder (same-name .txt captions), for the `images` stage."""
    check_inside_roots(folder, roots, "The image folder")
    if not os.path.isdir(folder):
        raise DatasetError(f"Image folder not found: {folder} (stage 'images' trains on a folder of images with "
                           "same-name .txt captions).")
    return _list_folder(folder, IMAGE_EXTENSIONS)


def _list_folder(folder, extensions=VIDEO_EXTENSIONS):
    items, missing_captions = [], 0
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in extensions:
            continue
        caption_path = os.path.join(folder, stem + ".txt")
        caption = ""
        if os.path.isfile(caption_path):
            caption = _read_text(caption_path, "the caption file").strip()
        else:
            missing_captions += 1
        items.append(VideoItem(os.path.join(folder, name), caption))
    if missing_captions:
        log.warning("%d files in %s have no .txt caption; they train with the empty prompt", missing_captions, folder)
    return items


def _pick(row, names, what, where):
    """The first of `names` present in `row`. A row without it (a short CSV row, a JSON null) is an
    error naming the file and line: silently training a video with the wrong caption is worse."""
    present = [name for name in names if name in row]
    if not present:
        raise DatasetError(f"{where}: no {what} column (looked for {list(names)}; found {sorted(row)})")
    value = row[present[0]]
    if value is None:
        raise DatasetError(f"{where}: the {what} ('{present[0]}') is missing; give it a value "
                           f"(an empty caption \"\" trains with the empty prompt) or remove the row.")
    if isinstance(value, (dict, list)):
        raise DatasetError(f"{where}: the {what} ('{present[0]}') must be text, got {type(value).__name__}.")
    return str(value)


def _read_csv(path):
    rows = []
    reader = csv.DictReader(io.StringIO(_read_text(path, "the CSV list"), newline=""))
    for row in reader:
        where = f"{path} line {reader.line_num}"
        if None in row:  # DictReader files cells beyond the header under None
            raise DatasetError(f"{where}: {len(row[None])} more cells than the header's {len(reader.fieldnames)} "
                               "columns; quote cells that contain commas.")
        if not any(v for v in row.values()):
            continue  # an empty line
        if "videoid" in row and "page_dir" in row:  # the WebVid-10M metadata layout
            video = os.path.join(_pick(row, ("page_dir",), "page_dir", where), _pick(row, ("videoid",), "videoid", where) + ".mp4")
        else:
            video = _pick(row, PATH_COLUMNS, "video path", where)
        rows.append((video, _pick(row, CAPTION_COLUMNS, "caption", where), where))
    return rows


def _read_jsonl(path):
    rows = []
    for number, line in enumerate(_read_text(path, "the JSONL list").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: not valid JSON ({e.msg} at column {e.colno}).") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: expected an object like {{\"path\": ..., \"caption\": ...}}, got {type(row).__name__}.")
        rows.append((_pick(row, PATH_COLUMNS, "video path", where), _pick(row, CAPTION_COLUMNS, "caption", where), where))
    return rows


def dataset_digest(items):
    """sha256 of the (path, caption) list: a resumed run checks it still trains on the same data."""
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps([item.path, item.caption]).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- decoding
def video_frame_count(path):
    """(frame count, fps) of the first video stream; decodes when the container has no count."""
    import av
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        count = stream.frames
        if not count:
            count = sum(1 for _ in container.decode(stream))
    return count, fps


def read_frames(path, indices):
    """uint8 tensor [len(indices), H, W, 3] of the given (sorted, unique) frame indices."""
    import av
    wanted = set(indices)
    last = max(indices)
    frames = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frames[i] = torch.from_numpy(frame.to_ndarray(format="rgb24"))
            if i >= last:
                break
    if len(frames) != len(wanted):
        raise DatasetError(f"{path}: only {len(frames)} of {len(wanted)} frames could be decoded")
    return torch.stack([frames[i] for i in indices])


def resize_center_crop(frames, height, width):
    """uint8 [T, H, W, 3] -> float [T, height, width, 3] in 0..1: scale so both sides cover the
    target (aspect kept), then crop the centre."""
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    x = x[:, :, top:top + height, left:left + width].clamp(0.0, 1.0)
    return x.permute(0, 2, 3, 1).contiguous()


@dataclass
class Clip:
    index: int          # dataset index
    frames: torch.Tensor  # [T, H, W, 3] 0..1
    cond_image: torch.Tensor  # [H, W, 3] 0..1
    caption: str
    fps: float          # the fps condition: source fps / frame stride
    frame_stride: int = 1
    cond_index: int = 0  # the frame of the clip `cond_image` is


class VideoDataset:
    """Usable videos of a source; `probe()` drops unreadable and too-short ones (counted)."""

    def __init__(self, items, frames, frame_stride, height, width, cond_frame="first"):
        self.items = list(items)
        self.frames, self.frame_stride = frames, frame_stride
        self.height, self.width = height, width
        self.cond_frame = cond_frame
        self.meta = {}        # index -> (frame count, fps), filled by probe
        self.skipped = Counter()

    @property
    def span(self):
        """Source frames one clip covers."""
        return (self.frames - 1) * self.frame_stride + 1

    def __len__(self):
        return len(self.items)

    def probe(self, source_name="the data"):
        """Open every video once; drop unreadable and too-short ones (see `probe_indices` to split the work)."""
        return self.apply_probe(self.probe_indices(range(len(self.items))), source_name)

    def probe_indices(self, indices):
        """[(index, (frame count, fps) or None, skip reason or None)] for the given item indices."""
        results = []
        for index in indices:
            item, reason, meta = self.items[index], None, None
            try:
                count, fps = video_frame_count(item.path)
                if count < self.span:
                    reason = "too_short"
                    log.warning("Skipping %s: %d frames, a clip of %d frames at stride %d needs %d",
                                item.path, count, self.frames, self.frame_stride, self.span)
                else:
                    meta = (count, fps)
            except Exception as e:  # PyAV raises many kinds for broken files
                reason = "unreadable"
                log.warning("Skipping unreadable video %s: %s: %s", item.path, type(e).__name__, e)
            results.append((index, meta, reason))
        return results

    def apply_probe(self, results, source_name="the data"):
        """Keep the items `results` (of every item, any order) found usable."""
        kept, meta = [], {}
        for index, found, reason in sorted(results, key=lambda r: r[0]):
            if reason:
                self.skipped[reason] += 1
            else:
                meta[len(kept)] = found
                kept.append(self.items[index])
        self.items, self.meta = kept, meta
        if not kept:
            raise DatasetError(self._nothing_usable(source_name))
        if self.skipped:
            log.warning("Dataset: %d usable videos, skipped %s", len(kept), dict(self.skipped))
        return self

    def _nothing_usable(self, source_name):
        return (f"No usable training videos in {source_name}: {sum(self.skipped.values())} listed, skipped "
                f"{dict(self.skipped) or 'none'}; each needs at least {self.span} frames "
                f"({self.frames} frames at stride {self.frame_stride}) and PyAV must decode it.")

    def load(self, index, generator):
        """Clip of video `index`, its start (and the random conditioning frame) drawn from `generator`."""
        item = self.items[index]
        if index in self.meta:
            count, fps = self.meta[index]
        else:
            count, fps = video_frame_count(item.path)
        if count < self.span:
            raise DatasetError(f"{item.path}: {count} frames, needs {self.span}")
        start = int(torch.randint(0, count - self.span + 1, (1,), generator=generator))
        indices = [start + i * self.frame_stride for i in range(self.frames)]
        frames = resize_center_crop(read_frames(item.path, indices), self.height, self.width)
        cond = 0 if self.cond_frame == "first" else int(torch.randint(0, self.frames, (1,), generator=generator))
        return Clip(index=index, frames=frames, cond_image=frames[cond], caption=item.caption,
                    fps=fps / self.frame_stride, frame_stride=self.frame_stride, cond_index=cond)


class ImageDataset(VideoDataset):
    """Images as one-frame clips (VideoCrafter2's image stage: the spatial layers learn from stills; the temporal
    layers, frozen, see a single frame). `fps`: the fps condition they train with (the model's default)."""

    def __init__(self, items, height, width, fps):
        super().__init__(items, 1, 1, height, width)
        self.image_fps = fps

    def probe_indices(self, indices):
        from PIL import Image
        results = []
        for index in indices:
            item, reason, meta = self.items[index], None, None
            try:
                with Image.open(item.path) as img:
                    img.verify()
                meta = (1, self.image_fps)
            except Exception as e:  # PIL raises many kinds for broken files
                reason = "unreadable"
                log.warning("Skipping unreadable image %s: %s: %s", item.path, type(e).__name__, e)
            results.append((index, meta, reason))
        return results

    def _nothing_usable(self, source_name):
        return (f"No usable training images in {source_name}: {sum(self.skipped.values())} listed, skipped "
                f"{dict(self.skipped) or 'none'}; PIL must open each ({', '.join(IMAGE_EXTENSIONS)}).")

    def load(self, index, generator):
        import numpy as np
        from PIL import Image
        item = self.items[index]
        with Image.open(item.path) as img:
            pixels = torch.from_numpy(np.asarray(img.convert("RGB")).copy())
        frames = resize_center_crop(pixels[None], self.height, self.width)
        return Clip(index=index, frames=frames, cond_image=frames[0], caption=item.caption, fps=float(self.image_fps))


# ---------------------------------------------------------------- order and sharding
def epoch_shard(num_items, epoch, seed, rank, world_size):
    """This rank's dataset indices for one epoch: a seeded permutation, cut to a multiple of the
    world size (the remainder waits for the next epoch's shuffle), dealt round-robin, so every
    sample is used at most once per epoch across ranks and all ranks take the same number of steps."""
    if num_items < world_size:
        raise DatasetError(f"{num_items} usable videos cannot be shared across {world_size} ranks")
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_items, generator=g).tolist()
    usable = (num_items // world_size) * world_size
    return order[:usable][rank::world_size]


class SampleStream:
    """Endless stream of dataset indices for one rank; its position is part of the training state."""

    def __init__(self, num_items, seed, rank, world_size):
        self.num_items, self.seed, self.rank, self.world_size = num_items, seed, rank, world_size
        self.epoch, self.offset = 0, 0
        self._shard = None

    def _current(self):
        if self._shard is None:
            self._shard = epoch_shard(self.num_items, self.epoch, self.seed, self.rank, self.world_size)
        return self._shard

    def take(self, count):
        """[(epoch, index)] of the next `count` samples."""
        out = []
        while len(out) < count:
            shard = self._current()
            if self.offset >= len(shard):
                self.epoch, self.offset, self._shard = self.epoch + 1, 0, None
                continue
            out.append((self.epoch, shard[self.offset]))
            self.offset += 1
        return out

    def restart(self):
        """Back to the first sample of epoch 0 (overfit_batch: every step takes step 0's samples)."""
        self.epoch, self.offset, self._shard = 0, 0, None

    def state_dict(self):
        return {"epoch": self.epoch, "offset": self.offset, "num_items": self.num_items}

    def load_state_dict(self, state):
        if state["num_items"] != self.num_items:
            log.warning("The dataset changed since the saved state (%d -> %d videos): the epoch order differs",
                        state["num_items"], self.num_items)
        self.epoch, self.offset, self._shard = state["epoch"], state["offset"], None
