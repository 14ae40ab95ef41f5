"""Files that are not usable VideoCrafter checkpoints get errors that say what is wrong."""
import os

import pytest
import torch

import comfy_host


@pytest.fixture(scope="module")
def loader(pack):
    return comfy_host.pack("vc_models.loader")


def error_of(loader, path):
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    with pytest.raises(ckpt_file.CheckpointError) as info:
        loader.load_videocrafter(str(path))
    return str(info.value)


def test_truncated_safetensors(loader, tmp_path):
    src = os.path.join(comfy_host.GOLDEN, "tiny_t2v_v2.safetensors")
    data = open(src, "rb").read()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    message = error_of(loader, path)
    assert "cut.safetensors" in message and "truncated" in message


def test_truncated_ckpt(loader, tmp_path):
    full = tmp_path / "full.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}}, full)
    data = full.read_bytes()
    path = tmp_path / "model.ckpt"
    path.write_bytes(data[: len(data) - 100])
    message = error_of(loader, path)
    assert "model.ckpt" in message and "Download it again" in message


def test_stable_diffusion_checkpoint(loader, tmp_path):
    """An SD1.5-layout file (no temporal layers) is named as such, and where to load it instead."""
    import safetensors.torch
    sd = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": torch.zeros(32, 32),
        "model.diffusion_model.out.2.weight": torch.zeros(4, 32, 3, 3),
        "first_stage_model.decoder.conv_in.weight": torch.zeros(32, 4, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.zeros(1, 77),
    }
    path = tmp_path / "v1-5-pruned-emaonly.safetensors"
    safetensors.torch.save_file(sd, str(path))
    message = error_of(loader, path)
    assert "not a VideoCrafter model" in message and "Load Checkpoint" in message


def test_unrelated_file(loader, tmp_path):
    import safetensors.torch
    path = tmp_path / "lora.safetensors"
    safetensors.torch.save_file({"lora_unet_down.weight": torch.zeros(2, 2)}, str(path))
    message = error_of(loader, path)
    assert "not a VideoCrafter checkpoint" in message and "lora_unet_down" in message
