"""A released-style .ckpt converts to .safetensors that loads as the same model."""
import os

import torch

import comfy_host


def test_ckpt_to_safetensors_fp16(pack, tmp_path):
    import safetensors.torch
    convert = comfy_host.pack("vc_models.convert")
    ckpt = comfy_host.pack("vc_models.checkpoint")
    sd = safetensors.torch.load_file(os.path.join(comfy_host.GOLDEN, "tiny_i2v_v1.safetensors"))
    src = tmp_path / "model.ckpt"
    torch.save({"state_dict": sd}, src)
    dst = tmp_path / "out" / "i2v.safetensors"
    info = convert.convert_checkpoint(str(src), str(dst), fp16=True)
    assert info.variant == "vc1_i2v_512"
    out = ckpt.load_state_dict(str(dst))
    for key, value in sd.items():
        if key in ckpt.DERIVED_SCHEDULE_KEYS:
            assert key not in out
        elif key in ckpt.SCHEDULE_KEYS:
            assert out[key].dtype == value.dtype and torch.equal(out[key], value)
        else:
            assert out[key].dtype == torch.float16 and torch.equal(out[key], value.half()), key
    assert [p.name for p in dst.parent.iterdir()] == ["i2v.safetensors"]  # no temporary left behind
    assert ckpt.inspect_checkpoint(out).variant == "vc1_i2v_512"
