"""The shipped FreeNoise workflow in a real ComfyUI server on 127.0.0.1 (started once for this module)."""
import json
import os
import time
import uuid

import pytest

from server_util import ComfyServer, REPO, http_json

NAME = "vc2_t2v_512_freenoise_64"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ComfyServer(tmp_path_factory.mktemp("freenoise_server"))
    srv.start()
    yield srv
    srv.stop()


def load(kind):
    path = os.path.join(REPO, "workflows", *(["api"] if kind == "api" else []), f"{NAME}.json")
    with open(path) as f:
        return json.load(f)


def small(workflow, **overrides):
    """The shipped graph on the tiny VideoCrafter2 checkpoint, 20 frames (16 + 1 stride) at 128x64, 2 steps."""
    values = {"ckpt_name": "tiny_t2v_v2.safetensors", "width": 128, "height": 64, "frames": 20, "steps": 2, **overrides}
    for node in workflow.values():
        for key in list(node["inputs"]):
            if key in values and not isinstance(node["inputs"][key], list):
                node["inputs"][key] = values[key]
    return workflow


def run(server, workflow, timeout=300):
    result = http_json(server.url + "/prompt", {"prompt": workflow, "client_id": uuid.uuid4().hex})
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = http_json(f"{server.url}/history/{result['prompt_id']}")
        entry = history.get(result["prompt_id"])
        if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
            return entry
        time.sleep(0.5)
    raise TimeoutError(server.log_tail())


def test_node_registers_and_ui_workflow_matches_it(server):
    info = server.object_info()
    node = info["VideoCrafterFreeNoise"]
    assert node["category"] == "VideoCrafter/long video" and node["description"]
    assert all(spec[1].get("tooltip") for spec in node["input"]["required"].values())
    assert node["output"] == ["MODEL"]
    assert "videocrafter_ddim_eta0" in info["KSampler"]["input"]["required"]["sampler_name"][0]
    from test_server_workflows import assert_widgets_match
    ui = load("ui")
    assert_widgets_match(info, ui, NAME)
    note = next(n for n in ui["nodes"] if n["type"] == "Note")  # UI-only: how to get the model file
    assert "download_models.py vc2_t2v_512" in note["widgets_values"][0]
    loader = next(n for n in ui["nodes"] if n["type"] == "VideoCrafterCheckpointLoader")
    assert loader["widgets_values"][0] == "videocrafter2_t2v_512.safetensors"  # the downloader's name


def test_shipped_workflow_makes_a_long_video(server):
    import av
    entry = run(server, small(load("api")))
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log_tail())
    files = [f for out in entry["outputs"].values() for f in out.get("images", [])]
    assert len(files) == 1, entry["outputs"]
    with av.open(os.path.join(server.output_dir, files[0]["subfolder"], files[0]["filename"])) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 20 and (frames[0].width, frames[0].height) == (128, 64)


def test_stride_larger_than_window_explains(server):
    workflow = small(load("api"), window_stride=24)
    entry = run(server, workflow)
    assert entry["status"]["status_str"] == "error"
    message = json.dumps(entry["status"]["messages"])
    assert "window_stride 24 is larger than window_size 16" in message, message
