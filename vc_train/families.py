"""The trainer's checks of a model's family: the stages it runs (`model_stages`), the plan and the data that fit
it (`check_plan`), all asked of the checkpoint's registry entry and its family (`vc_models.families`) before any
model loads; and the family's objective (`objective_for`; the classes are `vc_models.objectives`).
"""
import os

from ..vc_models.families import START_END_IMAGES
from .data import VideoDataset, DatasetError, count_media, list_training_items


def objective_for(models, schedule, cfg):
    """The objective `models.family` (the checkpoint's family) builds for its parameterization and the dropouts."""
    return models.family.objective(schedule, cfg.text_dropout, cfg.image_dropout, models.parameterization)


def model_stages(entry, cfg):
    """The stages the trainer runs on `entry`'s checkpoint with this config (a text-to-video one given a CLIP
    vision file is upgraded to image-to-video: the I2V stages)."""
    return entry.family.stages(upgraded=bool(cfg.clip_vision))


def check_plan(cfg, entry):
    """The stage plan and the data fit the model (`entry`: the checkpoint's registry entry): raise naming what
    to change. Runs before any model loads."""
    allowed = model_stages(entry, cfg)
    refused = [stage for stage, _ in cfg.stage_plan() if stage not in allowed]
    upgrade = entry.family.upgrade
    if refused and upgrade is not None and set(refused) <= set(upgrade.train_stages):
        raise ValueError(f"{entry.description} trains the stages {list(entry.family.train_stages)}; the image-to-video "
                         f"stages {refused} need a CLIP vision file (OpenCLIP ViT-H-14, e.g. models/clip_vision/"
                         "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors) to upgrade it to image-to-video first.")
    if refused and cfg.clip_vision and upgrade is not None:
        raise ValueError(f"A CLIP vision file upgrades {entry.description} to image-to-video (stages "
                         f"{list(upgrade.train_stages)}); for the stages {refused} leave clip_vision empty.")
    if refused:
        raise ValueError(f"{entry.description} trains the stages {list(allowed)} only; the plan asks for {refused}.")
    if cfg.stage == "images" and not os.path.isdir(cfg.data):
        raise DatasetError(f"Stage 'images' trains on a folder of images with same-name .txt captions; {cfg.data} is "
                           "not a folder.")
    if os.path.isdir(cfg.data):
        videos, images = count_media(cfg.data)
        if cfg.stage != "images" and not videos and images:
            raise DatasetError(f"{cfg.data} holds {images} images and no videos: stage {cfg.stage!r} of "
                               f"{entry.description} trains on video clips. Give a folder of videos"
                               + (" (stage 'images' trains the spatial layers on images)."
                                  if "images" in allowed else "."))
        if cfg.stage == "images" and not images and videos:
            raise DatasetError(f"{cfg.data} holds {videos} videos and no images: stage 'images' trains on a folder "
                               "of images (stage 'videos' on videos).")
    if entry.image_inputs == START_END_IMAGES:
        check_interpolation_data(cfg, entry)
    elif cfg.data_roots:
        list_training_items(cfg)  # a listed file outside the data roots is refused before any model loads


def check_interpolation_data(cfg, entry):
    """DynamiCrafter's interp_mode conditions on the clip's first and last frame (and CLIP on the first): a
    random conditioning frame does not apply, and a video too short for the clip would drop out of the data
    silently, so it is an error naming the videos."""
    if "interp" not in cfg.name.lower():
        raise ValueError(f"The result of training {entry.description} must have 'interp' in its name (the loader "
                         f"tells the interpolation model from DynamiCrafter 512 by the file name): e.g. "
                         f"{cfg.name}_interp instead of {cfg.name}.")
    if cfg.cond_frame != "first":
        raise ValueError(f"{entry.description} trains as interpolation: conditioned on the clip's first and last "
                         "frame (the original's rand_cond_frame: false); set cond_frame to 'first'.")
    dataset = VideoDataset(list_training_items(cfg), cfg.frames, cfg.frame_stride, cfg.height, cfg.width)
    short = [dataset.items[i].path for i, _, reason in dataset.probe_indices(range(len(dataset))) if reason == "too_short"]
    if short:
        raise DatasetError(f"{len(short)} videos are shorter than an interpolation clip ({cfg.frames} frames at "
                           f"stride {cfg.frame_stride} = {dataset.span} source frames), e.g. {short[0]}: lower "
                           "frames or frame_stride, or remove them.")
