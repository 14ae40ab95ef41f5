"""The loader node applies a stage-1 projector file on top of an I2V checkpoint."""
import os

import torch

import comfy_host
from server_util import choices


def test_loader_applies_projector_file(pack, models_dir):
    import safetensors.torch
    pf = comfy_host.pack("vc_models.projector_file")
    sd = safetensors.torch.load_file(os.path.join(comfy_host.GOLDEN, "tiny_i2v_v1.safetensors"))
    patch = {k: (v.float() * 2).half() for k, v in sd.items() if pf.is_projector_file_key(k)}
    safetensors.torch.save_file(patch, str(models_dir / "trained_projector.safetensors"))
    loader = pack.vc_nodes.NODE_CLASSES["VideoCrafterCheckpointLoader"]
    assert "trained_projector.safetensors" in choices(loader.INPUT_TYPES()["optional"]["projector_file"])
    model, _, _, _, projector = loader.execute("tiny_i2v_v1.safetensors", "default", "trained_projector.safetensors")
    assert torch.equal(projector.model.latents.detach(), patch["image_proj_model.latents"].float())
    unet = model.model.diffusion_model.state_dict()
    key = next(k for k in patch if k.endswith("to_k_ip.weight"))
    assert torch.equal(unet[key[len("model.diffusion_model."):]], patch[key].float())
