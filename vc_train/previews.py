"""A run's preview videos (sample_every): the same caption, conditioning image(s), fps and seed at every preview, so
they show what training changed; a LoRA run's show the base model and base + LoRA side by side."""
import logging
import os

import torch

from .noise import step_generator
from .state import write_video

log = logging.getLogger("vc_train")


class Previews:
    def __init__(self, cfg, models, objective, batches):
        """`objective`: the run's (its fps condition); `batches`: the run's TrainingBatches (its first clip)."""
        self.cfg, self.models, self.objective, self.batches = cfg, models, objective, batches
        self.condition = None  # (the sampler's conditions, the video's fps): fixed at the first preview

    def _condition(self):
        """The preview videos' conditions, fixed for the whole run: caption, image [H, W, 3] 0..1 (the first dataset
        clip's conditioning frame, or `sample_image`), end image (its last frame: interpolation), the fps condition."""
        cfg = self.cfg
        clip = self.batches.dataset.load(0, step_generator(cfg.seed, "sample"))
        image, caption = clip.cond_image, cfg.sample_prompt or clip.caption
        if cfg.sample_image:
            import numpy as np
            from PIL import Image
            from .data import resize_center_crop
            with Image.open(cfg.sample_image) as img:
                pixels = torch.from_numpy(np.asarray(img.convert("RGB")).copy())
            image = resize_center_crop(pixels[None], cfg.height, cfg.width)[0]
        fps = float(self.objective.fps_condition(torch.tensor([clip.fps]), torch.tensor([clip.frame_stride]))[0])
        end_image = clip.frames[-1] if self.models.interpolation else None
        return dict(caption=caption, image=image, end_image=end_image, fps=fps), clip.fps

    def write(self, step, lora=None):
        """The preview video of `step` (`lora`: a LoRA run's adapters as a LoRA file's tensors); returns its path."""
        cfg = self.cfg
        if self.condition is None:
            self.condition = self._condition()
        condition, video_fps = self.condition
        self.models.unet.eval()
        try:
            frames = self.models.sample_video(frames=cfg.frames, height=cfg.height, width=cfg.width, lora=lora,
                                              steps=cfg.sample_steps, cfg=cfg.sample_cfg, seed=cfg.seed, **condition)
        finally:
            self.models.unet.train()
        path = os.path.join(cfg.output_dir, "samples", f"step_{step:08d}.mp4")
        written = write_video(path, frames, video_fps)
        log.info("Wrote sample %s", path)
        return written
