"""Trainer building blocks: data listing and skipping, rank sharding, atomic states, CLIP-vision
layouts, projector files, the loss plot. Fast; no training steps."""
import json
import os

import pytest
import torch

import comfy_host
import train_util


@pytest.fixture(scope="module")
def vt(pack):
    return {name: comfy_host.pack(f"vc_train.{name}") for name in ("config", "data", "state", "plot", "noise")}


def test_dataset_folder_skips_broken_and_short(vt, tmp_path):
    folder = train_util.make_dataset(str(tmp_path / "videos"), count=3, broken=1, short=1)
    data = vt["data"]
    ds = data.VideoDataset(data.list_videos(folder), frames=4, frame_stride=2, height=64, width=128).probe(folder)
    assert len(ds) == 3 and dict(ds.skipped) == {"unreadable": 1, "too_short": 1}
    clip = ds.load(0, torch.Generator().manual_seed(0))
    assert clip.frames.shape == (4, 64, 128, 3) and 0 <= clip.frames.min() and clip.frames.max() <= 1
    assert clip.fps == pytest.approx(8 / 2)  # clip fps / stride
    assert clip.caption == "a colourful wave number 0"
    assert torch.equal(clip.cond_image, clip.frames[0])


def test_dataset_resize_crop_and_lists(vt, tmp_path):
    data = vt["data"]
    folder = tmp_path / "v"
    folder.mkdir()
    train_util.write_video(str(folder / "a.mp4"), frames=10, height=64, width=128)
    (tmp_path / "list.csv").write_text("path,caption\nv/a.mp4,hello there\n")
    (tmp_path / "list.jsonl").write_text(json.dumps({"video": "v/a.mp4", "text": "hi"}) + "\n")
    (tmp_path / "webvid.csv").write_text("videoid,contentUrl,duration,page_dir,name\na,,1,v,a webvid caption\n")
    assert [(os.path.basename(i.path), i.caption) for i in data.list_videos(str(tmp_path / "list.csv"))] == [("a.mp4", "hello there")]
    assert data.list_videos(str(tmp_path / "list.jsonl"))[0].caption == "hi"
    assert data.list_videos(str(tmp_path / "webvid.csv"))[0].path == str(tmp_path / "v" / "a.mp4")
    ds = data.VideoDataset(data.list_videos(str(tmp_path / "list.csv")), 3, 1, 32, 32, cond_frame="random").probe()
    clip = ds.load(0, torch.Generator().manual_seed(3))
    assert clip.frames.shape == (3, 32, 32, 3)  # 64x128 scaled to 32x64, centre 32x32
    assert any(torch.equal(clip.cond_image, f) for f in clip.frames)


def test_empty_dataset_is_a_clear_error(vt, tmp_path):
    data = vt["data"]
    folder = train_util.make_dataset(str(tmp_path / "bad"), count=0, broken=2)
    with pytest.raises(data.DatasetError, match="No usable training videos.*unreadable"):
        data.VideoDataset(data.list_videos(folder), 4, 2, 64, 128).probe(folder)
    with pytest.raises(data.DatasetError, match="not found"):
        data.list_videos(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("n,world", [(8, 2), (7, 2), (9, 3)])
def test_epoch_shards_use_each_sample_once(vt, n, world):
    data = vt["data"]
    for epoch in range(3):
        shards = [data.epoch_shard(n, epoch, 5, r, world) for r in range(world)]
        flat = [i for s in shards for i in s]
        assert len(flat) == len(set(flat)) == (n // world) * world
        assert len({len(s) for s in shards}) == 1
    streams = [data.SampleStream(n, 5, r, world) for r in range(world)]
    seen = [i for s in streams for _, i in s.take(n // world)]
    assert sorted(seen) == sorted(set(seen))


def test_state_store_survives_a_writer_crash(vt, tmp_path, monkeypatch):
    state = vt["state"]
    store = state.StateStore(str(tmp_path / "states"), keep=2, run_id="run-a")
    w = {"unet.a": torch.arange(4.0)}
    store.save(1, w, {"x": torch.ones(2)}, {"step": 1})
    original = state.StateStore._write_parts

    def crash_midway(self, folder, weights, optimizer_state, meta):
        state.write_safetensors(weights, os.path.join(folder, state.WEIGHTS_FILE))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(state.StateStore, "_write_parts", crash_midway)
    with pytest.raises(OSError, match="simulated"):
        store.save(2, {"unet.a": torch.zeros(4)}, {}, {"step": 2})
    monkeypatch.setattr(state.StateStore, "_write_parts", original)
    latest = store.latest()
    assert latest.endswith("step_00000001")
    weights, opt, meta = state.StateStore.load(latest)
    assert torch.equal(weights["unet.a"], torch.arange(4.0)) and meta["step"] == 1
    for step in (2, 3, 4):
        store.save(step, w, {}, {"step": step})
    assert sorted(os.listdir(tmp_path / "states" / "run-a")) == ["step_00000003", "step_00000004"]  # keep last 2


def test_an_interrupt_while_pruning_leaves_no_half_deleted_state(vt, tmp_path, monkeypatch):
    """Doubtful case (docs/hardening.md): Ctrl-C while an old state was being deleted left it with meta.json and
    its weights gone, still counted as a state. A pruned state leaves the states first; the leftover goes later."""
    state = vt["state"]
    store = state.StateStore(str(tmp_path / "states"), keep=2, run_id="run-a")
    w = {"unet.a": torch.arange(4.0)}
    for step in (1, 2):
        store.save(step, w, {}, {"step": step})
    real_rmtree = state.shutil.rmtree

    def interrupted(path, ignore_errors=False):
        weights = os.path.join(path, state.WEIGHTS_FILE)
        if os.path.isfile(weights):  # deleting a whole state: Ctrl-C after its first file
            os.remove(weights)
            raise KeyboardInterrupt
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(state.shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.save(3, w, {}, {"step": step})
    monkeypatch.setattr(state.shutil, "rmtree", real_rmtree)
    assert [step for step, _ in store._complete("run-a")] == [2, 3]
    for _, path in store._complete("run-a"):
        assert state.StateStore.load(path)[0] is not None
    store.save(4, w, {}, {"step": 4})
    assert sorted(os.listdir(tmp_path / "states" / "run-a")) == ["step_00000003", "step_00000004"]


def test_a_new_run_keeps_the_states_of_an_earlier_run(vt, tmp_path):
    """Issue 11: a fresh run in a folder holding higher-numbered states of an earlier run pruned its own
    new states and kept the old ones (and a resume would have mixed the two)."""
    state = vt["state"]
    earlier = state.StateStore(str(tmp_path / "states"), keep=2, run_id=state.new_run_id())
    for step in (7, 8):
        earlier.save(step, {"unet.a": torch.full((2,), float(step))}, {}, {"step": step})
    fresh = state.StateStore(str(tmp_path / "states"), keep=2, run_id=state.new_run_id())
    assert fresh.run_id != earlier.run_id
    for step in (1, 2, 3):
        fresh.save(step, {"unet.a": torch.zeros(2)}, {}, {"step": step})
    run_folder = lambda store: sorted(os.listdir(tmp_path / "states" / store.run_id))  # noqa: E731
    assert run_folder(earlier) == ["step_00000007", "step_00000008"]
    assert run_folder(fresh) == ["step_00000002", "step_00000003"]
    assert fresh.latest().endswith(os.path.join(fresh.run_id, "step_00000003"))
    assert state.StateStore.load(earlier.latest())[2]["run_id"] == earlier.run_id
    # the newest run is what a resume continues
    assert state.StateStore(str(tmp_path / "states")).latest() == fresh.latest()


def test_atomic_write_keeps_old_file_on_failure(vt, tmp_path):
    state = vt["state"]
    path = str(tmp_path / "f.txt")
    state.write_text(path, "old")

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        state.atomic_write(path, broken)
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_atomic_write_no_clobber_and_usual_permissions(vt, tmp_path):
    atomic = comfy_host.pack("vc_models.atomic_file")
    path = str(tmp_path / "m.safetensors")
    atomic.write_safetensors({"a": torch.ones(1)}, path, overwrite=False)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # readable like any file the server writes
    with pytest.raises(atomic.OutputExistsError, match="m.safetensors already exists"):
        atomic.write_safetensors({"b": torch.ones(1)}, path, overwrite=False)
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_noise_schedule_uses_scale_arr(vt):
    obj = vt["noise"]
    ac = torch.linspace(0.99, 0.01, 1000, dtype=torch.float64)
    scale = torch.full((1000,), 0.7, dtype=torch.float64)
    sched = obj.NoiseSchedule(ac, scale)
    x0, noise, t = torch.ones(1, 4, 2, 2, 2), torch.zeros(1, 4, 2, 2, 2), torch.tensor([10])
    assert torch.allclose(sched.add_noise(x0, t, noise), torch.full_like(x0, float(ac[10].sqrt() * 0.7)))
    g1, g2 = obj.step_generator(1, 5, 0, 0), obj.step_generator(1, 5, 0, 0)
    assert torch.equal(torch.randn(3, generator=g1), torch.randn(3, generator=g2))


def test_loss_curve_renders(vt):
    img = vt["plot"].render_loss_curve(list(range(1, 31)), [1.0 / i for i in range(1, 31)], stage_starts=[15])
    assert img.size == (768, 432) and img.mode == "RGB"
    assert len(img.getcolors(1 << 20)) > 3


def test_config_validation(vt):
    cfg_mod = vt["config"]
    with pytest.raises(ValueError, match="stage"):
        cfg_mod.TrainConfig(stage="everything")
    with pytest.raises(ValueError, match="Unknown training options"):
        cfg_mod.TrainConfig.from_dict({"lr": 1})
    assert cfg_mod.TrainConfig(stage="both", projector_steps=3, finetune_steps=0).stage_plan() == [("projector", 3)]


def test_clip_vision_layouts_and_t2v_upgrade(pack, tmp_path):
    import safetensors.torch
    upgrade = comfy_host.pack("vc_models.i2v_upgrade")
    ckpt = comfy_host.pack("vc_models.checkpoint")
    i2v = safetensors.torch.load_file(train_util.TINY_I2V)
    visual = {k[len("embedder.model.visual."):]: v for k, v in i2v.items() if k.startswith("embedder.model.visual.")}
    for layout in ("openclip", "hf"):
        path = train_util.write_clip_vision_file(str(tmp_path / f"{layout}.safetensors"), layout)
        back = upgrade.openclip_visual(safetensors.torch.load_file(path))
        assert set(back) == set(visual)
        assert all(torch.equal(back[k], visual[k]) for k in visual), layout
    t2v = safetensors.torch.load_file(train_util.TINY_T2V)
    up = upgrade.upgrade_t2v_to_i2v(t2v, {f"visual.{k}": v for k, v in visual.items()}, seed=0)
    info = ckpt.inspect_checkpoint(up)
    assert info.unet.image_cross_attention
    ip = [k for k in up if k.endswith("attn2.to_k_ip.weight")]
    assert ip and all(torch.equal(up[k], up[k.replace("to_k_ip", "to_k")]) for k in ip)
    assert all(torch.equal(up[k.replace("to_k_ip", "to_v_ip")], up[k.replace("to_k_ip", "to_v")]) for k in ip)
    proj = {k: v for k, v in up.items() if k.startswith("image_proj_model.")}
    assert proj["image_proj_model.proj_in.weight"].shape == (64, 128)      # context 64 <- vision width 128
    assert proj["image_proj_model.proj_out.weight"].shape[0] == 64


def test_apply_projector_file_checks(pack, tmp_path):
    import safetensors.torch
    pf = comfy_host.pack("vc_models.projector_file")
    i2v = safetensors.torch.load_file(train_util.TINY_I2V)
    patch = {k: torch.zeros_like(v) for k, v in i2v.items() if pf.is_projector_file_key(k)}
    path = str(tmp_path / "p.safetensors")
    safetensors.torch.save_file(patch, path)
    sd = pf.apply_projector_file(dict(i2v), path)
    assert all(torch.equal(sd[k], patch[k]) for k in patch)
    t2v = safetensors.torch.load_file(train_util.TINY_T2V)
    with pytest.raises(ValueError, match="image-to-video checkpoint"):
        pf.apply_projector_file(t2v, path)
    safetensors.torch.save_file({"first_stage_model.x": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="not a VideoCrafter projector file"):
        pf.apply_projector_file(dict(i2v), str(tmp_path / "bad.safetensors"))


def test_training_core_imports_without_comfyui():
    """vc_train/ (and the format code it uses from vc_models/) stays free of ComfyUI: import it in a fresh
    interpreter with no ComfyUI on the path, the pack as a bare namespace (its __init__ loads the nodes)."""
    import subprocess
    import sys
    code = ("import sys, types\n"
            f"pack = types.ModuleType('vcpack'); pack.__path__ = [{comfy_host.REPO!r}]; sys.modules['vcpack'] = pack\n"
            "import vcpack.vc_train.trainer, vcpack.vc_train.data, vcpack.vc_train.state, vcpack.vc_train.distributed\n"
            "import vcpack.vc_train.plot, vcpack.vc_train.resume, vcpack.vc_models.atomic_file\n"
            "assert not [k for k in sys.modules if k == 'comfy' or k.startswith('comfy.') or k == 'folder_paths'], 'comfy imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_data_lists_with_bad_rows_name_the_file_and_line(vt, tmp_path):
    """Issue 11: a CSV row with a missing caption, a JSONL `caption: null`, a UTF-8 byte-order mark and
    a non-UTF-8 caption file stopped the run with a wrong message (or misread the header)."""
    data = vt["data"]
    DatasetError = data.DatasetError

    def write(name, raw):
        path = tmp_path / name
        path.write_bytes(raw if isinstance(raw, bytes) else raw.encode("utf-8"))
        return str(path)

    # a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
    bom = write("bom.csv", "\ufeffpath,caption\nv/a.mp4,caf\u00e9 at dawn\n")
    assert [(os.path.basename(i.path), i.caption) for i in data.list_videos(bom)] == [("a.mp4", "caf\u00e9 at dawn")]
    bom_jsonl = write("bom.jsonl", "\ufeff" + json.dumps({"path": "v/a.mp4", "caption": "x"}) + "\n")
    assert data.list_videos(bom_jsonl)[0].caption == "x"
    # an empty caption is a choice (the empty prompt), a missing one is an error naming the row
    assert data.list_videos(write("empty.csv", "path,caption\nv/a.mp4,\n"))[0].caption == ""
    with pytest.raises(DatasetError, match=r"short\.csv line 3: the caption \('caption'\) is missing"):
        data.list_videos(write("short.csv", "path,caption\nv/a.mp4,fine\nv/b.mp4\n"))
    with pytest.raises(DatasetError, match=r"extra\.csv line 2: 1 more cells than the header's 2 columns"):
        data.list_videos(write("extra.csv", "path,caption\nv/a.mp4,a dog, running\n"))
    jsonl = write("null.jsonl", json.dumps({"path": "v/a.mp4", "caption": "ok"}) + "\n\n"
                  + json.dumps({"path": "v/b.mp4", "caption": None}) + "\n")
    with pytest.raises(DatasetError, match=r"null\.jsonl line 3: the caption \('caption'\) is missing"):
        data.list_videos(jsonl)
    with pytest.raises(DatasetError, match=r"broken\.jsonl line 1: not valid JSON"):
        data.list_videos(write("broken.jsonl", '{"path": "v/a.mp4", "caption": \n'))
    # Latin-1 bytes: the error names the file, the line and says what to do
    with pytest.raises(DatasetError, match=r"latin\.csv line 3: the CSV list is not UTF-8 .*save it as UTF-8"):
        data.list_videos(write("latin.csv", "path,caption\nv/a.mp4,ok\nv/b.mp4,caf\xe9\n".encode("latin-1")))
    folder = tmp_path / "videos"
    folder.mkdir()
    train_util.write_video(str(folder / "a.mp4"), frames=3, height=32, width=32)
    (folder / "a.txt").write_bytes("une vid\xe9o".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"a\.txt line 1: the caption file is not UTF-8"):
        data.list_videos(str(folder))


def test_sizes_not_multiples_of_64_are_refused_upfront(vt):
    """Issue 11: 72x72 passed the old multiple-of-8 check and failed deep inside the UNet after loading."""
    TrainConfig = vt["config"].TrainConfig
    with pytest.raises(ValueError, match="height 72 is not a multiple of 64.*use 64 or 128"):
        TrainConfig(height=72, width=64)
    with pytest.raises(ValueError, match="width 200 is not a multiple of 64.*use 192 or 256"):
        TrainConfig.from_dict({"width": 200})
    assert TrainConfig(height=320, width=512).width == 512


def test_resume_changes_name_what_changed(vt):
    resume = comfy_host.pack("vc_train.resume")
    TrainConfig = vt["config"].TrainConfig
    base = dict(checkpoint="a.safetensors", data="/d", stage="both", projector_steps=10, finetune_steps=10)
    meta = {"step": 12, "stage": "finetune", "config": TrainConfig(**base).as_dict(),
            "dataset": {"videos": 4, "digest": "abc"}}
    same_data = {"videos": 4, "digest": "abc"}
    assert resume.resume_changes(meta, TrainConfig(**base), same_data) == []
    # more steps in the running stage: extending a run is what resume is for
    assert resume.resume_changes(meta, TrainConfig(**dict(base, finetune_steps=50)), same_data) == []
    changes = resume.resume_changes(meta, TrainConfig(**dict(base, height=256, checkpoint="b.safetensors")),
                                    {"videos": 5, "digest": "def"})
    assert changes == ["checkpoint 'a.safetensors' -> 'b.safetensors'", "height 320 -> 256",
                       "the usable videos or their captions (4 -> 5 videos)"]
    assert resume.resume_changes(meta, TrainConfig(**dict(base, projector_steps=5)), same_data) == [
        "projector_steps 10 -> 5 (the state is past that stage)"]
    assert resume.resume_changes(meta, TrainConfig(**dict(base, stage="projector")), same_data) == [
        "stages ['projector', 'finetune'] -> ['projector']"]
    assert "the state is at step 12" in resume.resume_changes(meta, TrainConfig(**dict(base, finetune_steps=1)), None)[0]
