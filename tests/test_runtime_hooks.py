"""The loader's runtime hooks in-process (their server-side uses: test_runtime_hooks_server.py).

- `cached_patcher_init` on the MODEL of Load VideoCrafter Checkpoint: builds the same MODEL afresh (a plain
  ModelPatcher with `disable_dynamic=True`, as core's loaders do), and it survives clones on every host;
- `.safetensors` weights load through core's `comfy.utils.load_torch_file` (mmap / dynamic VRAM's zero-copy
  loading apply), and a file core cannot read still gets the pack's error naming the file.
"""
import os

import pytest
import torch

import comfy_host


@pytest.fixture(scope="module")
def loader(pack, models_dir):
    name = "tiny_dc_512.safetensors"  # beside the session's tiny models
    if not os.path.exists(models_dir / name):
        os.symlink(os.path.join(comfy_host.GOLDEN, name), models_dir / name)
    return pack.vc_nodes.NODE_CLASSES["VideoCrafterCheckpointLoader"]


@pytest.mark.parametrize("name", ["tiny_t2v_v2", "tiny_i2v_v1", "tiny_dc_512"])
def test_cached_patcher_init_rebuilds_the_model(loader, name):
    import comfy.sd
    model = loader.execute(f"{name}.safetensors", "default")[0]
    # a clone as every patch node makes (a LoRA loader here) keeps the factory
    patched = comfy.sd.load_lora_for_models(model, None, {}, 1.0, 0)[0]
    init = patched.cached_patcher_init
    assert os.path.basename(init[1][0]) == f"{name}.safetensors"
    for disable_dynamic in (False, True):
        rebuilt = init[0](*init[1], disable_dynamic=disable_dynamic)
        assert rebuilt.model is not model.model
        assert type(rebuilt.model) is type(model.model) and rebuilt.model.info.unet == model.model.info.unet
        ours, theirs = model.model.diffusion_model.state_dict(), rebuilt.model.diffusion_model.state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
        assert torch.equal(rebuilt.model.model_sampling.sigmas, model.model.model_sampling.sigmas)
        assert rebuilt.model.get_dtype() == model.model.get_dtype()
        assert rebuilt.cached_patcher_init[1] == init[1]
    assert type(rebuilt).__name__ == "ModelPatcher"  # disable_dynamic: never the dynamic-VRAM patcher


def test_weight_dtype_is_rebuilt_too(loader):
    model = loader.execute("tiny_t2v_v2.safetensors", "bf16")[0]
    init = model.cached_patcher_init
    rebuilt = init[0](*init[1])
    assert rebuilt.model.get_dtype() == model.model.get_dtype() == torch.bfloat16


def test_safetensors_load_through_core(loader, monkeypatch):
    import comfy.utils
    read = []
    core_load = comfy.utils.load_torch_file

    def recording(path, *args, **kwargs):
        read.append(os.path.basename(path))
        return core_load(path, *args, **kwargs)
    monkeypatch.setattr(comfy.utils, "load_torch_file", recording)
    model = loader.execute("tiny_t2v_v2.safetensors", "default")[0]
    assert read == ["tiny_t2v_v2.safetensors"]
    import safetensors.torch
    stored = safetensors.torch.load_file(os.path.join(comfy_host.GOLDEN, "tiny_t2v_v2.safetensors"))
    unet = model.model.diffusion_model.state_dict()
    assert all(torch.equal(unet[k], stored["model.diffusion_model." + k]) for k in unet)


def test_a_file_core_cannot_read_gets_the_packs_error(pack, tmp_path):
    load_videocrafter = comfy_host.pack("vc_models.loader").load_videocrafter
    CheckpointError = comfy_host.pack("vc_models.checkpoint_file").CheckpointError
    path = tmp_path / "cut.safetensors"
    with open(os.path.join(comfy_host.GOLDEN, "tiny_t2v_v2.safetensors"), "rb") as f:
        path.write_bytes(f.read()[:4096])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        load_videocrafter(str(path))
