"""The two training stages on the tiny I2V checkpoint (CPU): what each trains and freezes, the
T2V -> I2V start, exact resume, and a writer crash."""
import os

import pytest
import safetensors.torch
import torch

import comfy_host
import train_util


class InterruptAfter:
    """Callbacks that raise (like ComfyUI's interrupt) before step `steps + 1`."""

    class Stop(Exception):
        pass

    def __init__(self, steps):
        self.calls, self.steps = 0, steps

    def check_interrupt(self):
        if self.calls == self.steps:
            raise self.Stop()
        self.calls += 1

    def on_step(self, *args):
        pass


@pytest.fixture(scope="module")
def mods(pack):
    # one thread: on a shared 2-CPU box two OpenMP threads competing with other processes ran these
    # tiny steps ~7x slower; results are the same (bitwise resume is within one setting)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {
        "config": comfy_host.pack("vc_train.config"),
        "trainer": comfy_host.pack("vc_train.trainer"),
        "state": comfy_host.pack("vc_train.state"),
        "training": comfy_host.pack("vc_train.comfy_models"),
        "checkpoint": comfy_host.pack("vc_models.checkpoint"),
        "loader": comfy_host.pack("vc_models.loader"),
    }
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(module_tmp):
    return train_util.make_dataset(str(module_tmp("train_data")), count=4)


def build(mods, tmp_path, data_dir, **overrides):
    cfg = mods["config"].TrainConfig.from_dict(train_util.small_config(tmp_path, data_dir, **overrides))
    models = mods["training"].VideoCrafterTrainingModels.from_files(cfg.checkpoint, cfg.clip_vision, cfg.projector_file, cfg.seed)
    return cfg, models


def snapshot(models):
    parts = {"unet": models.unet.state_dict(), "projector": models.projector.state_dict(),
             "text": models.clip.cond_stage_model.state_dict(), "vision": models.clip_vision.model.state_dict(),
             "vae": models.vae.first_stage_model.state_dict()}
    return {f"{p}.{k}": v.detach().float().clone() for p, sd in parts.items() for k, v in sd.items()}


def changed(before, after):
    return sorted(k for k in before if not torch.equal(before[k], after[k]))


def test_stage1_overfits_and_trains_only_projector_and_image_kv(mods, tmp_path, data_dir):
    cfg, models = build(mods, tmp_path, data_dir, stage="projector", projector_steps=6, overfit_batch=True,
                        text_dropout=0.0, image_dropout=0.0, projector_lr=1e-2, max_grad_norm=0)
    before = snapshot(models)
    result = mods["trainer"].train(cfg, models)
    losses = [r["loss"] for r in result.history]
    assert len(losses) == 6
    assert losses[-1] < 0.95 * losses[0] and losses[-1] < min(losses[:3]), losses

    after = snapshot(models)
    allowed = {k for k in before if k.startswith("projector.") or
               (k.startswith("unet.") and (".attn2.to_k_ip." in k or ".attn2.to_v_ip." in k))}
    assert any(".to_k_ip." in k for k in allowed)
    assert set(changed(before, after)) == allowed  # everything else bit-identical

    projector_file = safetensors.torch.load_file(result.outputs["projector_file"])
    expected = {("image_proj_model." + k[len("projector."):]) if k.startswith("projector.")
                else ("model.diffusion_model." + k[len("unet."):]) for k in allowed}
    assert set(projector_file) == expected
    assert torch.equal(projector_file["image_proj_model.latents"], after["projector.latents"])
    # the loader side: patch the raw checkpoint with it, still an I2V checkpoint
    ckpt = mods["checkpoint"]
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    sd = ckpt_file.load_state_dict(train_util.TINY_I2V)
    comfy_host.pack("vc_models.projector_file").apply_projector_file(sd, result.outputs["projector_file"])
    assert ckpt.inspect_checkpoint(sd).unet.image_cross_attention
    assert os.path.getsize(result.outputs["loss_curve"]) > 1000
    assert open(result.outputs["loss_csv"]).read().count("\n") == 7


def test_stage2_trains_unet_only_and_writes_a_loadable_checkpoint(mods, tmp_path, data_dir):
    cfg, models = build(mods, tmp_path, data_dir, stage="finetune", finetune_steps=1)
    before = snapshot(models)
    result = mods["trainer"].train(cfg, models)
    diff = changed(before, snapshot(models))
    assert diff and all(k.startswith("unet.") for k in diff)
    assert len(diff) > 0.9 * sum(k.startswith("unet.") for k in before)  # 'all' layers

    out = result.outputs["checkpoint"]
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    saved, original = ckpt_file.load_state_dict(out), ckpt_file.load_state_dict(train_util.TINY_I2V)
    for prefix in ("cond_stage_model.", "image_proj_model.", "embedder.model.visual.", "first_stage_model."):
        keys = [k for k in original if k.startswith(prefix)]
        assert keys and all(torch.equal(saved[k], original[k]) for k in keys), prefix
    assert saved["model.diffusion_model.out.2.weight"].dtype == torch.float16
    bundle = mods["loader"].load_videocrafter(out)
    assert bundle.info.unet.image_cross_attention and bundle.projector is not None


def test_stage2_temporal_layers_only(mods, tmp_path, data_dir):
    cfg, models = build(mods, tmp_path, data_dir, stage="finetune", finetune_steps=1, finetune_layers="temporal")
    kinds = models.unet_parameter_kinds()
    before = snapshot(models)
    mods["trainer"].train(cfg, models)
    diff = changed(before, snapshot(models))
    assert diff and all(kinds[k[len("unet."):]] == "temporal" for k in diff)
    assert any(".temopral_conv." in k for k in diff) and any("transformer_blocks" in k for k in diff)


def test_t2v_plus_clip_vision_becomes_i2v(mods, tmp_path, data_dir):
    vision = train_util.write_clip_vision_file(str(tmp_path / "clip_vision_h.safetensors"))
    cfg, models = build(mods, tmp_path, data_dir, checkpoint=train_util.TINY_T2V, clip_vision=vision, stage="both",
                        projector_steps=1, finetune_steps=1, save_fp16=False)
    result = mods["trainer"].train(cfg, models)
    ckpt = mods["checkpoint"]
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    sd = ckpt_file.load_state_dict(result.outputs["checkpoint"])
    info = ckpt.inspect_checkpoint(sd, "upgraded")
    assert info.unet.image_cross_attention and info.variant == "vc1_i2v_512"
    assert any(k.startswith("embedder.model.visual.transformer.resblocks.") for k in sd)
    assert any(k.startswith("image_proj_model.layers.") for k in sd)
    assert any(k.endswith("attn2.to_v_ip.weight") for k in sd)
    visual = safetensors.torch.load_file(vision)
    assert all(torch.equal(sd["embedder.model." + k], visual[k].float()) for k in visual)
    bundle = mods["loader"].load_videocrafter(result.outputs["checkpoint"])
    assert bundle.info.unet.image_cross_attention and bundle.clip_vision is not None
    assert os.path.exists(result.outputs["projector_file"])


def test_resume_is_bitwise_exact(mods, tmp_path, data_dir):
    common = dict(stage="both", projector_steps=2, finetune_steps=1, grad_accum=2, text_dropout=0.5,
                  image_dropout=0.5, cond_frame="random")
    cfg, models = build(mods, tmp_path / "straight", data_dir, **common)
    straight = mods["trainer"].train(cfg, models)
    reference = snapshot(models)

    cfg, models = build(mods, tmp_path / "resumed", data_dir, **common)
    with pytest.raises(InterruptAfter.Stop):
        mods["trainer"].Trainer(cfg, models, InterruptAfter(1)).run()  # mid stage 1
    assert mods["state"].StateStore(os.path.join(cfg.output_dir, "states")).latest().endswith("step_00000001")
    cfg, models = build(mods, tmp_path / "resumed", data_dir, **common)  # a fresh process would rebuild too
    resumed = mods["trainer"].train(cfg, models)
    assert resumed.step == 3
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    assert changed(reference, snapshot(models)) == []


def test_writer_crash_leaves_previous_state_usable(mods, tmp_path, data_dir, monkeypatch):
    state = mods["state"]
    original = state.StateStore._write_parts

    def crash_on_step_2(self, folder, weights, optimizer_state, meta):
        if meta["step"] == 2:
            state.write_safetensors(weights, os.path.join(folder, state.WEIGHTS_FILE))
            raise OSError("killed while writing (simulated)")
        return original(self, folder, weights, optimizer_state, meta)

    monkeypatch.setattr(state.StateStore, "_write_parts", crash_on_step_2)
    cfg, models = build(mods, tmp_path, data_dir, stage="projector", projector_steps=2, save_every=1)
    with pytest.raises(OSError, match="simulated"):
        mods["trainer"].train(cfg, models)
    store = state.StateStore(os.path.join(cfg.output_dir, "states"))
    assert store.latest().endswith("step_00000001")
    weights, _, meta = state.StateStore.load(store.latest())
    assert meta["step"] == 1 and weights
    monkeypatch.setattr(state.StateStore, "_write_parts", original)
    cfg, models = build(mods, tmp_path, data_dir, stage="projector", projector_steps=2, save_every=1)
    result = mods["trainer"].train(cfg, models)
    assert result.step == 2 and [r["step"] for r in result.history] == [1, 2]


def test_bf16_autocast_with_half_frozen_weights_keeps_exports_exact(mods, tmp_path, data_dir):
    """The GPU memory path on the CPU: bf16 autocast, frozen weights held in bf16. Weights frozen in
    half precision must still be exported and saved at full precision."""
    cfg, models = build(mods, tmp_path, data_dir, stage="both", projector_steps=1, finetune_steps=1,
                        finetune_layers="temporal", precision="bf16", save_fp16=False)
    trainer = mods["trainer"].Trainer(cfg, models)
    trainer.placement.frozen_dtype = torch.bfloat16  # what a GPU run uses
    result = trainer.run()
    assert models.unet.input_blocks[1][0].in_layers[2].weight.dtype == torch.bfloat16  # a frozen spatial conv
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    saved, original = ckpt_file.load_state_dict(result.outputs["checkpoint"]), ckpt_file.load_state_dict(train_util.TINY_I2V)
    kinds = models.unet_parameter_kinds()
    spatial = [k for k, kind in kinds.items() if kind == "spatial" and ".to_k_ip." not in k and ".to_v_ip." not in k]
    assert all(torch.equal(saved["model.diffusion_model." + k], original["model.diffusion_model." + k].float())
               for k in spatial)
    projector_file = safetensors.torch.load_file(result.outputs["projector_file"])
    assert all(torch.equal(saved[k], v) for k, v in projector_file.items())  # stage-1 result kept exactly
    assert not torch.equal(projector_file["image_proj_model.latents"], original["image_proj_model.latents"].float())


def test_sample_videos_every_n_steps(mods, tmp_path, data_dir):
    import av
    cfg, models = build(mods, tmp_path, data_dir, stage="projector", projector_steps=2, sample_every=2, sample_steps=2,
                        sample_prompt="a wave")
    result = mods["trainer"].train(cfg, models)
    path = os.path.join(cfg.output_dir, "samples", "step_00000002.mp4")
    assert result.outputs["last_sample"] == path
    with av.open(path) as container:
        frames = [f for f in container.decode(video=0)]
    assert len(frames) == cfg.frames and (frames[0].width, frames[0].height) == (cfg.width, cfg.height)
    assert models.unet.training


class Runaway(BaseException):
    """Raised by a guard so that a data loop without a bound fails the test instead of hanging it."""


def run_folders(cfg):
    states = os.path.join(cfg.output_dir, "states")
    return {run: sorted(os.listdir(os.path.join(states, run))) for run in sorted(os.listdir(states))}


def test_runs_own_their_states_results_and_resume_refuses_changes(mods, tmp_path, data_dir):
    """Issue 11: `resume: false` beside an earlier run's states kept the old higher-numbered states and
    pruned the new ones; a resume never checked the plan or data; results silently replaced a model."""
    trainer_mod, atomic = mods["trainer"], comfy_host.pack("vc_models.atomic_file")
    cfg, models = build(mods, tmp_path, data_dir, projector_steps=3, save_every=1)
    first = trainer_mod.train(cfg, models)
    (first_run, first_states), = run_folders(cfg).items()
    assert first_states == ["step_00000002", "step_00000003"] and first.summary["run_id"] == first_run
    first_result = open(first.outputs["projector_file"], "rb").read()

    # a fresh run in the same folder: its result name is taken by the first run's file
    fresh = dict(projector_steps=2, save_every=1, resume=False)
    cfg, models = build(mods, tmp_path, data_dir, **fresh)
    with pytest.raises(atomic.OutputExistsError, match="tiny_projector.safetensors already exists; enable 'overwrite'"):
        trainer_mod.check_before_loading(cfg)
    with pytest.raises(atomic.OutputExistsError):
        trainer_mod.train(cfg, models)  # the trainer itself refuses too, before any step
    assert open(first.outputs["projector_file"], "rb").read() == first_result
    assert list(run_folders(cfg)) == [first_run]

    cfg, models = build(mods, tmp_path, data_dir, overwrite=True, **fresh)
    second = trainer_mod.train(cfg, models)
    runs = run_folders(cfg)
    assert runs[first_run] == ["step_00000002", "step_00000003"]  # untouched
    assert runs[second.summary["run_id"]] == ["step_00000001", "step_00000002"]
    assert open(second.outputs["projector_file"], "rb").read() != first_result

    # resuming the newest run with another clip size or other data is refused, naming the change
    cfg, models = build(mods, tmp_path, data_dir, projector_steps=3, height=128)
    with pytest.raises(ValueError, match=r"Cannot resume .*step 2\): height 64 -> 128\. Restore .*resume to false"):
        trainer_mod.check_before_loading(cfg)
    more_data = train_util.make_dataset(str(tmp_path / "more_data"), count=5)
    cfg, models = build(mods, tmp_path, more_data, projector_steps=3)
    with pytest.raises(ValueError, match=r"data '.*' -> '.*more_data'; the usable videos or their captions \(4 -> 5"):
        trainer_mod.train(cfg, models)
    # the same plan resumes (its own result may be replaced without overwrite)
    cfg, models = build(mods, tmp_path, data_dir, projector_steps=3)
    resumed = trainer_mod.train(cfg, models)
    assert resumed.summary["run_id"] == second.summary["run_id"] and [r["step"] for r in resumed.history] == [1, 2, 3]


def test_every_video_failing_to_load_is_a_clear_error_and_cancel_is_honoured(mods, tmp_path, monkeypatch):
    """Issue 11: with every video failing to decode the data loop spun forever and ignored Cancel."""
    broken = train_util.make_dataset(str(tmp_path / "broken"), count=0, broken=3)
    data = comfy_host.pack("vc_train.data")
    real_load, calls = data.VideoDataset.load, []

    def guarded_load(self, index, generator):
        calls.append(index)
        if len(calls) > 50:
            raise Runaway("the data loop does not stop")
        return real_load(self, index, generator)

    monkeypatch.setattr(data.VideoDataset, "load", guarded_load)
    cfg, models = build(mods, tmp_path, broken, probe_videos=False)
    with pytest.raises(data.DatasetError, match=r"3 videos in a row failed to load from .*broken"):
        mods["trainer"].train(cfg, models)
    assert len(calls) == 3

    class CancelSecondCheck(mods["trainer"].Callbacks):
        class Stop(Exception):
            pass

        checks = 0

        def check_interrupt(self):
            self.checks += 1
            if self.checks == 2:  # the first is at the top of step 1; the second between two failing videos
                raise self.Stop()

    calls.clear()
    cancel = CancelSecondCheck()
    cfg, models = build(mods, tmp_path / "cancel", broken, probe_videos=False)
    with pytest.raises(CancelSecondCheck.Stop):
        mods["trainer"].Trainer(cfg, models, cancel).run()
    assert cancel.checks == 2 and len(calls) == 1


def test_cancel_during_a_preview_video_keeps_the_steps(mods, tmp_path, data_dir):
    """Issue 11: an interrupt while the preview video was sampled lost every step since the last state."""
    cfg, models = build(mods, tmp_path, data_dir, projector_steps=3, sample_every=2, sample_steps=1)

    def interrupted_preview(*args, **kwargs):
        raise KeyboardInterrupt  # what the host raises when Cancel arrives inside its sampler

    models.sample_video = interrupted_preview
    with pytest.raises(KeyboardInterrupt):
        mods["trainer"].train(cfg, models)
    (run, states), = run_folders(cfg).items()
    assert states == ["step_00000002"]
    cfg, models = build(mods, tmp_path, data_dir, projector_steps=3, sample_every=0)
    result = mods["trainer"].train(cfg, models)
    assert result.summary["run_id"] == run and [r["step"] for r in result.history] == [1, 2, 3]


def test_ctrl_c_on_the_command_line_saves_a_state(mods, tmp_path, data_dir, monkeypatch):
    """Issue 11: Ctrl-C during a step of scripts/vc_train.py raised AttributeError (its progress printer had
    no is_interrupt) instead of saving the state of the last full step."""
    import importlib.util
    import json
    spec = importlib.util.spec_from_file_location("vc_train_cli", os.path.join(comfy_host.REPO, "scripts", "vc_train.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    values = train_util.small_config(tmp_path, data_dir, projector_steps=5, device="cpu")
    config = tmp_path / "train.yaml"
    config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    Trainer = mods["trainer"].Trainer
    real_step, steps = Trainer._train_step, []

    def ctrl_c_in_step_3(self, stage):
        steps.append(stage)
        if len(steps) == 3:
            raise KeyboardInterrupt
        return real_step(self, stage)

    monkeypatch.setattr(Trainer, "_train_step", ctrl_c_in_step_3)
    assert cli.main(["--config", str(config), "--cpu"]) == 130
    cfg = mods["config"].TrainConfig.from_dict(values)
    assert list(run_folders(cfg).values()) == [["step_00000002"]]


def test_interrupt_while_writing_a_stage_result_keeps_the_stage(mods, tmp_path, data_dir):
    """Cancel while the stage result is written: the stage's steps are kept and a resume writes the result."""
    cfg, models = build(mods, tmp_path, data_dir, projector_steps=2)
    real_tensors = models.projector_file_tensors

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    models.projector_file_tensors = interrupted
    with pytest.raises(KeyboardInterrupt):
        mods["trainer"].train(cfg, models)
    assert list(run_folders(cfg).values()) == [["step_00000002"]]
    result = os.path.join(cfg.checkpoint_dir or cfg.output_dir, "tiny_projector.safetensors")
    assert not os.path.exists(result)
    cfg, models = build(mods, tmp_path, data_dir, projector_steps=2)
    resumed = mods["trainer"].train(cfg, models)
    assert resumed.outputs["projector_file"] == result and [r["step"] for r in resumed.history] == [1, 2]
    expected = real_tensors(mods["state"].StateStore.load(mods["state"].StateStore(
        os.path.join(cfg.output_dir, "states")).latest())[0])
    saved = safetensors.torch.load_file(result)
    assert set(saved) == set(expected) and all(torch.equal(saved[k], expected[k]) for k in expected)
