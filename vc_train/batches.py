"""A run's micro-batches: the dataset (listed on rank 0, probed by every rank), the seeded order of its samples on
this rank, and the encodings the objective takes (clip latents, CLIP image tokens, text embeddings), cached as the
configuration says."""
import logging

import torch

from .data import VideoDataset, ImageDataset, SampleStream, list_training_items, DatasetError, dataset_digest
from ..vc_models.objectives import Batch
from .noise import step_generator

log = logging.getLogger("vc_train")


class TrainingBatches:
    def __init__(self, cfg, models, dist, uses_image, check_interrupt):
        """`uses_image`: the objective takes the conditioning frame's CLIP tokens; `check_interrupt()`: the host's
        stop request, asked between videos that fail to load."""
        self.cfg, self.models, self.dist = cfg, models, dist
        self.uses_image = uses_image
        self.check_interrupt = check_interrupt
        # read by `build` (None before it)
        self.dataset = None          # VideoDataset, or ImageDataset for stage images
        self.stream = None           # SampleStream: this rank's position in the data (part of a state)
        self.dataset_info = None     # {"videos": usable count, "digest"}: what a resume compares
        self.probed_by_rank = None   # videos each rank opened (probe_videos)
        self.empty_text = None       # [77, C] the empty caption's embedding (text dropout)
        self.zero_image_tokens = None  # [257, W] the all-zero image's CLIP tokens (image dropout), if uses_image
        self.text_cache, self.clip_cache = {}, {}
        self.epoch0_samples = []     # dataset indices this rank took in its first epoch (the summary's)

    def build(self):
        """Read the dataset (every rank the same usable items) and encode the unconditional inputs."""
        cfg, dist = self.cfg, self.dist
        # an error on any rank reaches every rank at the next collective step: all fail together
        items = dist.on_main(lambda: list_training_items(cfg))
        if cfg.stage == "images":
            dataset = ImageDataset(items, cfg.height, cfg.width, self.models.default_fps)
        else:
            dataset = VideoDataset(items, cfg.frames, cfg.frame_stride, cfg.height, cfg.width, cfg.cond_frame)
        if cfg.probe_videos:
            # every rank opens its share of the videos; all ranks then keep the same items
            mine = range(dist.rank, len(dataset.items), dist.world_size)
            shares = dist.on_all(lambda: dataset.probe_indices(mine))
            self.probed_by_rank = [len(share) for share in shares]
            dataset.apply_probe([r for share in shares for r in share], cfg.data)
        elif not dataset.items:
            raise DatasetError(f"No training videos found in {cfg.data}")
        self.dataset_info = {"videos": len(dataset.items), "digest": dataset_digest(dataset.items)}
        self.dataset = dataset
        self.stream = SampleStream(len(dataset), cfg.seed, dist.rank, dist.world_size)
        with torch.no_grad():
            self.empty_text = self.models.encode_text([""]).float().cpu()[0]
            if self.uses_image:
                grey = torch.full((1, cfg.height, cfg.width, 3), 0.5)  # all-zero image in [-1, 1]
                self.zero_image_tokens = self.models.image_tokens(grey).float().cpu()[0]

    def text(self, captions):
        if not self.cfg.cache_text:
            return self.models.encode_text(captions).float()
        missing = [c for c in dict.fromkeys(captions) if c not in self.text_cache]
        if missing:
            for caption, emb in zip(missing, self.models.encode_text(missing).float().cpu()):
                self.text_cache[caption] = emb
        return torch.stack([self.text_cache[c] for c in captions])

    def clip(self, index, generator):
        """(latent [C,T,h,w], image tokens [257,W] or None, clip) of a dataset item (the clip without its frames),
        or None for a video that failed to load."""
        if self.cfg.cache_latents and index in self.clip_cache:
            return self.clip_cache[index]
        if self.cfg.cache_latents:  # a cached item keeps one clip: drawn from its own seed
            generator = step_generator(self.cfg.seed, "cache", index)
        try:
            clip = self.dataset.load(index, generator)
        except Exception as e:  # a video that broke after probing: skip it, keep counting
            self.dataset.skipped["failed_at_load"] += 1
            log.warning("Skipping %s: %s: %s", self.dataset.items[index].path, type(e).__name__, e)
            return None
        with torch.no_grad():
            latent = self.models.encode_video(clip.frames).float().cpu()
            tokens = self.models.image_tokens(clip.cond_image[None])[0].float().cpu() if self.uses_image else None
        clip.frames = clip.cond_image = None  # only the latent is kept (and cached)
        item = (latent, tokens, clip)
        if self.cfg.cache_latents:
            self.clip_cache[index] = item
        return item

    def next_batch(self, generator):
        """The next `batch_size` usable samples of this rank's stream as a Batch."""
        items, failures = [], 0
        while len(items) < self.cfg.batch_size:
            epoch, index = self.stream.take(1)[0]
            item = self.clip(index, generator)
            if item is None:
                failures += 1
                # as many failures in a row as there are videos: the data cannot feed a step
                if failures >= len(self.dataset):
                    raise DatasetError(
                        f"{failures} videos in a row failed to load from {self.cfg.data} (skipped so far: "
                        f"{dict(self.dataset.skipped)}); see the warnings above for each file. "
                        "Check the files decode (or turn probe_videos on to skip broken ones upfront).")
                self.check_interrupt()  # decoding can be slow: Cancel is honoured between videos
                continue
            items.append(item)
            if epoch == 0:
                self.epoch0_samples.append(index)
        clips = [i[2] for i in items]
        return Batch(latents=torch.stack([i[0] for i in items]), context=self.text([c.caption for c in clips]),
                     fps=torch.tensor([c.fps for c in clips], dtype=torch.float32),
                     frame_stride=torch.tensor([c.frame_stride for c in clips]),
                     image_tokens=torch.stack([i[1] for i in items]) if self.uses_image else None,
                     cond_index=torch.tensor([c.cond_index for c in clips]))

    def position(self):
        """What a stop inside a step rewinds to (`rewind_to`)."""
        return self.stream.state_dict(), len(self.epoch0_samples)

    def rewind_to(self, position):
        stream_state, samples_seen = position
        self.stream.load_state_dict(stream_state)
        del self.epoch0_samples[samples_seen:]
