"""The model lists a real ComfyUI server offers hold only files the loader reads: never a download
in progress (`originals/<name>.part` and its `.etag`), an atomic writer's temporary (`.<name>.<hex>.partial`)
or any other file that happens to sit in models/videocrafter."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from server_util import ComfyServer, choices  # noqa: E402

LOADER = "VideoCrafterCheckpointLoader"
# files a user's models/videocrafter can hold while a download or a conversion is running
NOT_MODELS = ("originals/t2v_512_v2.ckpt.part", "originals/t2v_512_v2.ckpt.part.etag",
              ".videocrafter2_t2v_512.safetensors.1a2b3c4d.partial", "README.txt", "notes.json")
# complete files of the kinds the loader reads
MODELS = ("originals/t2v_512_v1.ckpt", "converted.safetensors", "unet_mg.pt", "trained_projector.safetensors")


@pytest.fixture(scope="module")
def server(module_tmp):
    root = module_tmp("folders_server")
    own = root / "own_models"  # a second videocrafter folder, from the user's own extra_model_paths.yaml
    yaml = root / "own_paths.yaml"
    yaml.write_text(f"own:\n    base_path: {own}\n    videocrafter: videocrafter\n")
    srv = ComfyServer(root, extra_args=["--extra-model-paths-config", str(yaml)])
    for folder in (os.path.join(srv.models_dir, "checkpoints"), str(own / "videocrafter")):
        for name in NOT_MODELS + MODELS:
            path = os.path.join(folder, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(b"\0" * 16)
    srv.start()
    yield srv
    srv.stop()


def test_model_lists_offer_only_loadable_files(server):
    info = server.object_info()[LOADER]
    names = choices(info["input"]["required"]["ckpt_name"])
    for name in NOT_MODELS:
        assert name not in names, f"{name} offered as a model: {names}"
    assert not [n for n in names if n.endswith((".part", ".etag", ".partial", ".txt", ".json"))], names
    for name in MODELS:
        assert name in names, f"{name} missing from {names}"
    assert "tiny_t2v_v2.safetensors" in names  # the test server's own checkpoints still there
    projectors = choices(info["input"]["optional"]["projector_file"])
    assert projectors == ["none", "trained_projector.safetensors"], projectors
