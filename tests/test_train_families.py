"""The trainer on every family it trains (CPU, tiny models): VideoCrafter2 text-to-video (stages videos and images),
DynamiCrafter 512 image animation and its interpolation model; previews; resume after kill -9; and the inputs it
refuses before any model loads (ToonCrafter, a T2V-Turbo UNet, an image folder for a video stage, clips too short
for interpolation)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import safetensors.torch
import torch

import comfy_host
import train_util


@pytest.fixture(scope="module")
def mods(pack, one_torch_thread):
    return {name: comfy_host.pack(module) for name, module in (
        ("config", "vc_train.config"), ("trainer", "vc_train.trainer"), ("training", "vc_train.comfy_models"),
        ("checkpoint", "vc_models.checkpoint"), ("data", "vc_train.data"), ("families", "vc_train.families"))}


@pytest.fixture(scope="module")
def data_dir(module_tmp):
    return train_util.make_dataset(str(module_tmp("family_videos")), count=3)


@pytest.fixture(scope="module")
def image_dir(module_tmp):
    return train_util.make_image_folder(str(module_tmp("family_images")), count=3, broken=1)


def config(mods, tmp_path, data, checkpoint, **overrides):
    values = train_util.small_config(tmp_path, data, checkpoint=checkpoint, stage="videos", finetune_steps=5,
                                     overfit_batch=True, text_dropout=0.0, image_dropout=0.0, finetune_lr=2e-3,
                                     max_grad_norm=0)
    values.update(overrides)
    return mods["config"].TrainConfig.from_dict(values)


def train(mods, cfg):
    """As the node and the command line: the checks before loading, the models, the run."""
    mods["trainer"].check_before_loading(cfg)
    models = mods["training"].VideoCrafterTrainingModels.from_files(cfg.checkpoint, cfg.clip_vision, cfg.projector_file, cfg.seed)
    before = {f"unet.{k}": v.clone() for k, v in models.unet.state_dict().items()}
    if models.projector is not None:
        before.update({f"projector.{k}": v.clone() for k, v in models.projector.state_dict().items()})
    result = mods["trainer"].train(cfg, models)
    after = {f"unet.{k}": v for k, v in models.unet.state_dict().items()}
    if models.projector is not None:
        after.update({f"projector.{k}": v for k, v in models.projector.state_dict().items()})
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    return result, models, changed


def assert_loss_falls(result, steps):
    losses = [r["loss"] for r in result.history]
    assert len(losses) == steps
    assert losses[-1] < 0.9 * losses[0] and losses[-1] < min(losses[:2]), losses


def detected(mods, path):
    return mods["checkpoint"].inspect_checkpoint(safetensors.torch.load_file(path), os.path.basename(path)).variant


def test_videocrafter2_videos_stage_temporal_layers(mods, tmp_path, data_dir):
    cfg = config(mods, tmp_path, data_dir, train_util.TINY_T2V, finetune_layers="temporal", sample_every=5,
                 sample_steps=2)
    result, models, changed = train(mods, cfg)
    assert_loss_falls(result, 5)
    kinds = models.unet_parameter_kinds()
    assert changed and all(kinds[k[len("unet."):]] == "temporal" for k in changed)
    assert detected(mods, result.outputs["checkpoint"]) == "vc2_t2v_512"  # still the text-to-video model
    frames = train_util.read_video_frames(result.outputs["last_sample"])
    assert frames.shape[:3] == (cfg.frames, 64, 64)  # a text-to-video preview of the clip's length


def test_videocrafter2_images_stage_spatial_layers_on_one_frame_clips(mods, tmp_path, image_dir):
    cfg = config(mods, tmp_path, image_dir, train_util.TINY_T2V, stage="images")
    result, models, changed = train(mods, cfg)
    assert_loss_falls(result, 5)
    kinds = models.unet_parameter_kinds()
    assert changed and all(kinds[k[len("unet."):]] == "spatial" for k in changed)
    assert result.summary["skipped"] == {"unreadable": 1} and result.summary["dataset_size"] == 3


def test_videocrafter2_images_stage_lora_trains_spatial_adapters_only(mods, tmp_path, image_dir):
    """A LoRA in the `images` stage trains the adapters of spatial layers only (the stage's rule), the UNet's own
    weights stay, and the result is a LoRA file with no temporal layer's keys."""
    cfg = config(mods, tmp_path, image_dir, train_util.TINY_T2V, stage="images", adapter="lora", lora_rank=4,
                 lora_targets="attn1,temporal", finetune_lr=1e-2)
    result, models, changed = train(mods, cfg)
    assert_loss_falls(result, 5)
    assert not changed  # the UNet's weights: only adapters train
    lora = safetensors.torch.load_file(result.outputs["lora"])
    kinds = models.unet_parameter_kinds()
    modules = {k[len("diffusion_model."):].rsplit(".", 2)[0] for k in lora if k.endswith("lora_up.weight")}
    assert modules and all(kinds[f"{m}.weight"] == "spatial" and ".attn1." in m for m in modules), sorted(modules)
    with pytest.raises(ValueError, match="select no spatial layer"):
        train(mods, config(mods, tmp_path / "t", image_dir, train_util.TINY_T2V, stage="images", adapter="lora",
                           lora_rank=4, lora_targets="temporal", name="t"))


def test_dynamicrafter_videos_stage_trains_unet_and_resampler(mods, tmp_path, data_dir):
    cfg = config(mods, tmp_path, data_dir, train_util.TINY_DC, cond_frame="random", sample_every=5, sample_steps=2)
    result, models, changed = train(mods, cfg)
    assert_loss_falls(result, 5)
    assert any(k.startswith("projector.") for k in changed) and any(k.startswith("unet.") for k in changed)
    assert detected(mods, result.outputs["checkpoint"]) == "dc_512"
    assert train_util.read_video_frames(result.outputs["last_sample"]).shape[:3] == (cfg.frames, 64, 64)


def test_dynamicrafter_interpolation_trains_on_start_and_end_frames(mods, tmp_path, data_dir):
    interp = str(tmp_path / "tiny_dc_512_interp.safetensors")  # the interpolation model is told by its file name
    shutil.copy(train_util.TINY_DC, interp)
    cfg = config(mods, tmp_path, data_dir, interp, finetune_steps=4, name="tiny_interp", sample_every=4, sample_steps=2)
    result, models, _ = train(mods, cfg)
    assert models.interpolation
    assert_loss_falls(result, 4)
    assert detected(mods, result.outputs["checkpoint"]) == "dc_512_interp"
    assert train_util.read_video_frames(result.outputs["last_sample"]).shape[:3] == (cfg.frames, 64, 64)


def test_inputs_refused_before_any_model_loads(mods, tmp_path, data_dir, image_dir, models_dir, tiny_toon_file,
                                               monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a checkpoint was read")
    monkeypatch.setattr(comfy_host.pack("vc_models.checkpoint_file"), "load_state_dict", no_loading)
    check = mods["trainer"].check_before_loading
    CheckpointError = comfy_host.pack("vc_models.checkpoint_file").CheckpointError
    with pytest.raises(CheckpointError, match="ToonCrafter.*does not train this model.*no interpolation training"):
        check(config(mods, tmp_path, data_dir, str(models_dir / tiny_toon_file)))
    turbo = str(tmp_path / "turbo_unet.safetensors")
    safetensors.torch.save_file({"time_cond_proj.weight": torch.zeros(4, 4), "input_blocks.0.0.weight": torch.zeros(4)},
                                turbo)
    with pytest.raises(CheckpointError, match="T2V-Turbo.*consistency-distilled.*train VideoCrafter2"):
        check(config(mods, tmp_path, data_dir, turbo))
    with pytest.raises(mods["data"].DatasetError, match="4 images and no videos.*trains on video clips"):
        check(config(mods, tmp_path, image_dir, train_util.TINY_DC))
    with pytest.raises(ValueError, match=r"trains the stages \['videos'\] only.*\['images'\]"):
        check(config(mods, tmp_path, image_dir, train_util.TINY_DC, stage="images"))
    with pytest.raises(ValueError, match="need a CLIP vision file"):
        check(config(mods, tmp_path, data_dir, train_util.TINY_T2V, stage="projector"))
    with pytest.raises(mods["data"].DatasetError, match="videos and no images"):
        check(config(mods, tmp_path, data_dir, train_util.TINY_T2V, stage="images"))
    listing = tmp_path / "stills.csv"
    listing.write_text("path,caption\nstill00.png,a still\n")
    with pytest.raises(mods["data"].DatasetError, match="folder of images.*is not a folder"):
        check(config(mods, tmp_path, str(listing), train_util.TINY_T2V, stage="images"))
    interp = str(tmp_path / "tiny_dc_512_interp.safetensors")
    shutil.copy(train_util.TINY_DC, interp)
    with pytest.raises(mods["data"].DatasetError, match="3 videos are shorter than an interpolation clip"):
        check(config(mods, tmp_path, data_dir, interp, frames=8, name="x_interp"))  # 10-frame videos; 8 at stride 2 need 15
    with pytest.raises(ValueError, match="set cond_frame to 'first'"):
        check(config(mods, tmp_path, data_dir, interp, cond_frame="random", name="x_interp"))
    with pytest.raises(ValueError, match="must have 'interp' in its name"):
        check(config(mods, tmp_path, data_dir, interp, name="mine"))


KILL_RUNS = {  # (checkpoint, options, result file, a tensor of it)
    "dynamicrafter": (train_util.TINY_DC, dict(text_dropout=0.5, image_dropout=0.2, cond_frame="random", finetune_lr=1e-4),
                      "checkpoint", "model.diffusion_model.out.2.weight"),
    "videocrafter2_lora": (train_util.TINY_T2V, dict(text_dropout=0.5, adapter="lora", lora_rank=4, finetune_lr=1e-3),
                           "lora", "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.lora_up.weight"),
}


@pytest.mark.parametrize("run", sorted(KILL_RUNS))
def test_resumes_after_kill_9_bit_identical(mods, tmp_path, data_dir, run):
    """The command line killed (SIGKILL) once a state is saved, then run again: the same losses and weights as
    one uninterrupted run (DynamiCrafter's full finetune; a LoRA on VideoCrafter2)."""
    checkpoint, options, output, key = KILL_RUNS[run]
    common = dict(finetune_steps=4, overfit_batch=False, save_every=1, **options)
    straight, _, _ = train(mods, config(mods, tmp_path / "straight", data_dir, checkpoint, **common))
    cfg = config(mods, tmp_path / "killed", data_dir, checkpoint, **common)
    yaml_path = tmp_path / "train.yaml"
    yaml_path.write_text(json.dumps(cfg.as_dict()))  # JSON is YAML
    command = [sys.executable, os.path.join(comfy_host.REPO, "scripts", "vc_train.py"), "--config", str(yaml_path), "--cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COMFYUI_PATH": comfy_host.comfyui_path()}
    states = os.path.join(cfg.output_dir, "states")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if any(os.path.exists(os.path.join(states, run, "step_00000001", "meta.json"))
                   for run in (os.listdir(states) if os.path.isdir(states) else ())):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not os.path.exists(os.path.join(cfg.output_dir, "summary.json"))  # it did not finish
    killed_runs = os.listdir(states)
    resumed, _, _ = train(mods, cfg)  # run again (in this process: the same code path, the same thread count)
    assert [resumed.summary["run_id"]] == killed_runs  # continued the killed run rather than starting over
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    assert resumed.summary["rank_weight_sha256"] == straight.summary["rank_weight_sha256"]
    assert torch.equal(safetensors.torch.load_file(resumed.outputs[output])[key],
                       safetensors.torch.load_file(straight.outputs[output])[key])


def test_example_configs_read(mods):
    """Every scripts/train_*.example.yaml is a valid TrainConfig whose stage its model has."""
    registry = comfy_host.pack("vc_models.registry")
    scripts = os.path.join(comfy_host.REPO, "scripts")
    examples = sorted(n for n in os.listdir(scripts) if n.startswith("train_") and n.endswith(".example.yaml"))
    assert len(examples) >= 3
    for name in examples:
        cfg = mods["config"].TrainConfig.from_yaml(os.path.join(scripts, name))
        stem = os.path.splitext(os.path.basename(cfg.checkpoint))[0]
        entry = next(e for e in registry.released() if os.path.splitext(e.release.file_name)[0] == stem)
        assert all(stage in mods["families"].model_stages(entry, cfg) for stage, _ in cfg.stage_plan()), name
