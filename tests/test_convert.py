"""A released-style .ckpt converts to .safetensors that loads as the same model."""
import os

import pytest
import torch

import comfy_host
from conftest import require_reference


def test_ckpt_to_safetensors_fp16(pack, tmp_path):
    import safetensors.torch
    convert = comfy_host.pack("vc_models.convert")
    ckpt = comfy_host.pack("vc_models.checkpoint")
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    sd = safetensors.torch.load_file(os.path.join(comfy_host.GOLDEN, "tiny_i2v_v1.safetensors"))
    src = tmp_path / "model.ckpt"
    torch.save({"state_dict": sd}, src)
    dst = tmp_path / "out" / "i2v.safetensors"
    info = convert.convert_checkpoint(str(src), str(dst), fp16=True)
    assert info.variant == "vc1_i2v_512"
    out = ckpt_file.load_state_dict(str(dst))
    for key, value in sd.items():
        if key in ckpt_file.DERIVED_SCHEDULE_KEYS:
            assert key not in out
        elif key in ckpt_file.SCHEDULE_KEYS:
            assert out[key].dtype == value.dtype and torch.equal(out[key], value)
        else:
            assert out[key].dtype == torch.float16 and torch.equal(out[key], value.half()), key
    assert [p.name for p in dst.parent.iterdir()] == ["i2v.safetensors"]  # no temporary left behind
    assert ckpt.inspect_checkpoint(out).variant == "vc1_i2v_512"


def test_conversion_temp_file_is_never_listed_as_a_model(pack, tmp_path, monkeypatch):
    """Issue 11: the temporary `.partial-*.safetensors` showed up in every checkpoint list (ComfyUI lists
    model extensions recursively, dot files included) and stayed there after a kill."""
    import folder_paths
    import safetensors.torch
    atomic_file = comfy_host.pack("vc_models.atomic_file")
    seen_while_writing = []
    real_save = safetensors.torch.save_file

    def save_and_look(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        files, _ = folder_paths.recursive_search(str(tmp_path))
        seen_while_writing.append((os.listdir(tmp_path), folder_paths.filter_files_extensions(
            files, folder_paths.supported_pt_extensions)))

    monkeypatch.setattr(safetensors.torch, "save_file", save_and_look)
    atomic_file.write_safetensors({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    (on_disk, listed), = seen_while_writing
    assert len(on_disk) == 1 and on_disk[0].startswith(".model.safetensors.")  # the temporary was there
    assert listed == []                                                           # but no model list showed it
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_conversion_never_silently_replaces_a_model(pack, tmp_path):
    import safetensors.torch
    convert = comfy_host.pack("vc_models.convert")
    src = tmp_path / "model.ckpt"
    torch.save({"state_dict": safetensors.torch.load_file(os.path.join(comfy_host.GOLDEN, "tiny_t2v_v2.safetensors"))}, src)
    dst = tmp_path / "mine.safetensors"
    safetensors.torch.save_file({"precious": torch.ones(3)}, str(dst))
    with pytest.raises(FileExistsError, match="mine.safetensors already exists; enable 'overwrite'"):
        convert.convert_checkpoint(str(src), str(dst))
    assert list(safetensors.torch.load_file(str(dst))) == ["precious"]
    assert convert.convert_checkpoint(str(src), str(dst), overwrite=True).variant == "vc2_t2v_512"
    assert "precious" not in safetensors.torch.load_file(str(dst))
    assert sorted(os.listdir(tmp_path)) == ["mine.safetensors", "model.ckpt"]


def test_turbo_unet_pt_converts_with_its_own_keys(pack, tmp_path):
    """A released T2V-Turbo UNet (bare state dict .pt) converts to the fp16 .safetensors the turbo loader reads."""
    import tiny_turbo
    require_reference(*tiny_turbo.reference_files("mg"))
    convert = comfy_host.pack("vc_models.convert")
    ckpt = comfy_host.pack("vc_models.checkpoint")
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    unet = tiny_turbo.tiny_turbo_unet("mg")
    src = tmp_path / "unet_mg.pt"
    torch.save(unet, src)
    dst = tmp_path / "t2v_turbo_v2_unet_mg.safetensors"
    info = convert.convert_checkpoint(str(src), str(dst), fp16=True)
    assert info.variant == "turbo_v2_mg" and info.unet.motion_guidance
    out = ckpt_file.load_state_dict(str(dst))
    assert sorted(out) == sorted(unet)
    assert all(out[k].dtype == torch.float16 and torch.equal(out[k], v.half()) for k, v in unet.items())
    assert ckpt.inspect_turbo_unet(out)[1].guidance_embed_dim == info.unet.guidance_embed_dim
