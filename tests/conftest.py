import json
import os

import pytest

import comfy_host

VARIANTS = ["tiny_t2v_v1", "tiny_t2v_v2", "tiny_i2v_v1"]


@pytest.fixture(scope="session")
def pack():
    """The real ComfyUI imported in-process (CPU) with this pack loaded."""
    return comfy_host.boot()


@pytest.fixture(scope="session")
def models_dir(pack, tmp_path_factory):
    """A models/videocrafter folder registered with ComfyUI holding the tiny golden checkpoints."""
    import folder_paths
    folder = tmp_path_factory.mktemp("videocrafter_models")
    for name in VARIANTS:
        os.symlink(os.path.join(comfy_host.GOLDEN, name + ".safetensors"), folder / (name + ".safetensors"))
    folder_paths.add_model_folder_path("videocrafter", str(folder), is_default=True)
    return folder


def load_golden(name):
    import safetensors.torch
    tensors = safetensors.torch.load_file(os.path.join(comfy_host.GOLDEN, name + ".case1.golden.safetensors"))
    with open(os.path.join(comfy_host.GOLDEN, name + ".case1.json")) as f:
        meta = json.load(f)
    return tensors, meta


def rel_err(ours, ref):
    ours, ref = ours.detach().float().cpu(), ref.detach().float().cpu()
    assert ours.shape == ref.shape, f"shape {list(ours.shape)} != reference {list(ref.shape)}"
    return ((ours - ref).norm() / ref.norm()).item()
