"""The pack inside a real ComfyUI server on 127.0.0.1: registration, shipped workflows, bad inputs."""
import json
import os
import sys

import pytest

from server_util import (FRONTEND_ONLY, REPO, START_IMAGE, assert_widgets_match, fill_inputs, load_workflow, output_files, submit,
                         wait_history)
import build_workflows  # noqa: E402  (scripts/, on the path through server_util)

sys.path.insert(0, REPO)
from vc_models import registry  # noqa: E402  (the pack's model list; no ComfyUI import)

TINY_FOR = {"vc2_t2v_512": "tiny_t2v_v2.safetensors", "vc1_t2v_1024": "tiny_t2v_v1.safetensors",
            "vc1_i2v_512": "tiny_i2v_v1.safetensors"}
PACK_NODES = ["VideoCrafterCheckpointLoader", "VideoCrafterImageEncode", "VideoCrafterFPSConditioning",
              "EmptyVideoCrafterLatent", "VideoCrafterKSampler", "VideoCrafterVAEDecode",
              "VideoCrafterCheckpointToSafetensors"]


def small(workflow, name, **overrides):
    """The shipped graph on a tiny checkpoint at a size a CPU runs in seconds."""
    return fill_inputs(workflow, {"ckpt_name": TINY_FOR[name], "width": 128, "height": 64, "frames": 4, "steps": 2,
                                  "image": START_IMAGE, **overrides})


def test_every_node_registers_with_tooltips(server):
    info = server.object_info()
    for node in PACK_NODES:
        assert node in info, f"{node} missing from /object_info; log:\n{server.log_tail()}"
        assert info[node]["category"].startswith("VideoCrafter/")
        for name, spec in info[node]["input"]["required"].items():
            assert spec[1].get("tooltip") if len(spec) > 1 else False, f"{node}.{name} has no tooltip"
    assert "videocrafter_ddim" in info["KSampler"]["input"]["required"]["sampler_name"][0]
    assert "videocrafter_uniform" in info["KSampler"]["input"]["required"]["scheduler"][0]


def test_every_shipped_ui_workflow_reads_on_this_host(server):
    """Every shipped UI graph (the pack's templates) on this host: its widget values read as meant; each node at
    least the size this host's frontend draws it (else it grows onto a neighbour); no two node rectangles overlap,
    groups hold whole nodes, the Note covers nothing, the whole fits a 1920x1080 window at half zoom
    (test_frontend_browser.py checks all of it in the frontends themselves)."""
    info = server.object_info()
    templates = sorted(f for f in os.listdir(build_workflows.TEMPLATES_FOLDER) if f.endswith(".json"))
    assert templates == sorted(os.path.basename(build_workflows.ui_path(n)) for n in build_workflows.TITLES)
    for name in sorted(build_workflows.TITLES):
        ui = load_workflow(name, api=False)
        assert_widgets_match(info, ui, name)
        for node in ui["nodes"]:
            if node["type"] not in FRONTEND_ONLY:
                needed = build_workflows.node_size(info[node["type"]], node["widgets_values"])
                assert node["size"][0] >= needed[0] and node["size"][1] >= needed[1], (name, node["title"], needed)
        assert build_workflows.layout_problems(ui) == [], name
        assert sum(n["type"] == "Note" for n in ui["nodes"]) == 1, name


def test_ui_workflows_match_the_nodes(server):
    """Each UI graph names real nodes with one widget value per widget input (the frontend's order)."""
    info = server.object_info()
    for name in TINY_FOR:
        ui = load_workflow(name, api=False)
        assert_widgets_match(info, ui, name)
        # the file the downloader writes; its Missing Models entry names the folder and the instructions (a link
        # of its own: 1.32.9 lists one model per link), never a download (the released file is a .ckpt pickle,
        # the dialog would store it under the .safetensors name)
        loader = next(n for n in ui["nodes"] if n["type"] == "VideoCrafterCheckpointLoader")
        name_ = registry.entry(name).release.file_name
        assert loader["widgets_values"][0] == name_
        assert loader["properties"]["models"] == [{"name": name_, "directory": "videocrafter",
                                                   "url": build_workflows.model_guide_url(name_)}]
        assert not build_workflows.MODELS_GUIDE_URL.startswith("https://huggingface.co/")
        note = next(n for n in ui["nodes"] if n["type"] == "Note")
        assert f"download_models.py {name}" in note["widgets_values"][0]


@pytest.mark.parametrize("name", sorted(TINY_FOR))
def test_shipped_workflow_makes_a_video(server, name):
    import av
    result, error = submit(server, small(load_workflow(name), name))
    assert error is None, error
    entry = wait_history(server, result["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
    files = output_files(server, entry)
    assert len(files) == 1, entry["outputs"]
    with av.open(files[0]) as container:
        frames = [f for f in container.decode(video=0)]
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (128, 64)


@pytest.mark.parametrize("change,node_type,input_name", [
    ({"width": 100}, "EmptyVideoCrafterLatent", "width"),
    ({"frames": 0}, "EmptyVideoCrafterLatent", "frames"),
    ({"image": "no_such_image.png"}, "LoadImage", "image"),
])
def test_bad_inputs_are_rejected_naming_the_input(server, change, node_type, input_name):
    workflow = small(load_workflow("vc1_i2v_512"), "vc1_i2v_512", **change)
    result, error = submit(server, workflow)
    assert result is None
    node_id = next(i for i, n in workflow.items() if n["class_type"] == node_type)
    errors = error["node_errors"][node_id]["errors"]
    assert any(e["extra_info"].get("input_name") == input_name for e in errors), errors
    if "width" in change:
        assert "multiple of 64" in json.dumps(errors)


def test_i2v_graph_with_a_t2v_checkpoint_explains(server):
    workflow = small(load_workflow("vc1_i2v_512"), "vc1_i2v_512", ckpt_name="tiny_t2v_v2.safetensors")
    result, error = submit(server, workflow)
    assert error is None, error
    entry = wait_history(server, result["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    message = json.dumps(entry["status"]["messages"])
    assert "text-to-video" in message and "image-to-video checkpoint" in message, message


# ---------------------------------------------------------------- DynamiCrafter
DC_TINY_FOR = {"dc_512": "tiny_dc_512.safetensors", "dc_1024": "tiny_dc_512.safetensors",
               "dc_512_interp": "tiny_dc_512.safetensors", "dc_512_loop": "tiny_dc_512.safetensors",
               "dc_512_freenoise_64": "tiny_dc_512.safetensors"}
# frames each workflow is run with: the FreeNoise one past its 16-frame window (16 + 1 stride)
DC_TEST_FRAMES = {"dc_512_freenoise_64": 20}
DC_NODES = ["DynamiCrafterConditioning", "VideoCrafterGuidanceRescale", "DynamiCrafterTwoScaleGuider",
            "VideoCrafterDDIMSampler"]


def small_dc(name, frames=4, **overrides):
    """A shipped DynamiCrafter graph on the tiny 512 checkpoint, 4 frames, 2 steps (a loop keeps frames - 1)."""
    workflow = fill_inputs(load_workflow(name), {"ckpt_name": DC_TINY_FOR[name], "width": 128, "height": 64,
                                                 "length": frames, "steps": 2, "image": START_IMAGE, **overrides})
    for node in workflow.values():
        if node["class_type"] == "ImageFromBatch":
            node["inputs"]["length"] = frames - 1
    return workflow


def test_dynamicrafter_nodes_register(server):
    info = server.object_info()
    for node in DC_NODES:
        assert node in info, f"{node} missing from /object_info; log:\n{server.log_tail()}"
        assert info[node]["category"].startswith("VideoCrafter/") and info[node]["description"]
        inputs = {**info[node]["input"]["required"], **info[node]["input"].get("optional", {})}
        for name, spec in inputs.items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node}.{name} has no tooltip"
    conditioning = info["DynamiCrafterConditioning"]
    assert conditioning["display_name"] == "DynamiCrafter Conditioning"
    assert conditioning["category"] == "VideoCrafter/conditioning"
    assert conditioning["output"] == ["CONDITIONING", "CONDITIONING", "LATENT"]
    assert list(conditioning["input"]["required"]) == ["positive", "negative", "vae", "clip_vision", "projector",
                                                       "start_image", "mode", "width", "height", "length",
                                                       "batch_size", "fs"]
    assert list(conditioning["input"]["optional"]) == ["end_image"]
    assert "videocrafter_trailing" in info["KSampler"]["input"]["required"]["scheduler"][0]


def test_dynamicrafter_ui_workflows(server):
    """UI graphs: real nodes, one widget value per widget input, download links to the released files."""
    info = server.object_info()
    for name in DC_TINY_FOR:
        ui = load_workflow(name, api=False)
        assert_widgets_match(info, ui, name)
        loader = next(n for n in ui["nodes"] if n["type"] == "VideoCrafterCheckpointLoader")
        note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
        assert loader["widgets_values"][0] in note and "https://huggingface.co/Doubiiu/DynamiCrafter" in note
        assert "download_models.py dc_" in note  # the downloader writes the name the loader loads
        sampler = next(n for n in ui["nodes"] if n["type"] == "VideoCrafterKSampler")
        assert sampler["widgets_values"][2:7] == [50, 7.5, "videocrafter_ddim", "videocrafter_trailing", 1.0]


@pytest.mark.parametrize("name", sorted(DC_TINY_FOR))
def test_dynamicrafter_workflow_makes_a_video(server, name):
    import av
    frames = DC_TEST_FRAMES.get(name, 4)
    result, error = submit(server, small_dc(name, frames=frames))
    assert error is None, error
    entry = wait_history(server, result["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
    files = output_files(server, entry)
    assert len(files) == 1, entry["outputs"]
    with av.open(files[0]) as container:
        decoded = [f for f in container.decode(video=0)]
    assert len(decoded) == (frames - 1 if name == "dc_512_loop" else frames)
    assert (decoded[0].width, decoded[0].height) == (128, 64)


def test_dynamicrafter_bad_sizes_and_missing_images_are_rejected(server):
    workflow = small_dc("dc_512", width=100)
    result, error = submit(server, workflow)
    node_id = next(i for i, n in workflow.items() if n["class_type"] == "DynamiCrafterConditioning")
    assert result is None and "multiple of 64" in json.dumps(error["node_errors"][node_id])

    workflow = small_dc("dc_512")
    del workflow[node_id]["inputs"]["start_image"]
    result, error = submit(server, workflow)
    errors = error["node_errors"][node_id]["errors"]
    assert any(e["extra_info"].get("input_name") == "start_image" for e in errors), errors


@pytest.mark.parametrize("name,change,expected", [
    ("dc_512_interp", {"mode": "i2v"}, ["end_image is connected but mode is 'i2v'"]),
    ("dc_512", {"mode": "interpolate"}, ["'interpolate' needs an end_image"]),
    ("dc_512", {"ckpt_name": "tiny_i2v_v1.safetensors"}, ["VideoCrafter1 image-to-video", "DynamiCrafter checkpoint"]),
    ("vc1_i2v_512", {"ckpt_name": "tiny_dc_512.safetensors"}, ["DynamiCrafter Conditioning"]),
])
def test_dynamicrafter_wrong_inputs_explain(server, name, change, expected):
    """An end image in i2v mode, interpolation without one, a VideoCrafter1 I2V checkpoint in a DynamiCrafter
    graph and the reverse fail with a message that says what to change."""
    workflow = small_dc(name, **change) if name in DC_TINY_FOR else small(load_workflow(name), name, **change)
    result, error = submit(server, workflow)
    assert error is None, error
    entry = wait_history(server, result["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    message = json.dumps(entry["status"]["messages"])
    assert all(text in message for text in expected), message
