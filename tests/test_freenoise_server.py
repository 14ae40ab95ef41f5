"""The shipped FreeNoise workflow in a real ComfyUI server on 127.0.0.1 (the session's shared one)."""
import json

from server_util import assert_widgets_match, fill_inputs, load_workflow, output_files, run_prompt

NAME = "vc2_t2v_512_freenoise_64"


def small(workflow, **overrides):
    """The shipped graph on the tiny VideoCrafter2 checkpoint, 20 frames (16 + 1 stride) at 128x64, 2 steps."""
    return fill_inputs(workflow, {"ckpt_name": "tiny_t2v_v2.safetensors", "width": 128, "height": 64, "frames": 20,
                                  "steps": 2, **overrides})


def run(server, workflow):
    return run_prompt(server, workflow, timeout=300)


def test_node_registers_and_ui_workflow_matches_it(server):
    info = server.object_info()
    node = info["VideoCrafterFreeNoise"]
    assert node["category"] == "VideoCrafter/long video" and node["description"]
    assert all(spec[1].get("tooltip") for spec in node["input"]["required"].values())
    assert node["output"] == ["MODEL"]
    assert "videocrafter_ddim_eta0" in info["KSampler"]["input"]["required"]["sampler_name"][0]
    ui = load_workflow(NAME, api=False)
    assert_widgets_match(info, ui, NAME)
    note = next(n for n in ui["nodes"] if n["type"] == "Note")  # UI-only: how to get the model file
    assert "download_models.py vc2_t2v_512" in note["widgets_values"][0]
    loader = next(n for n in ui["nodes"] if n["type"] == "VideoCrafterCheckpointLoader")
    assert loader["widgets_values"][0] == "videocrafter2_t2v_512.safetensors"  # the downloader's name


def test_shipped_workflow_makes_a_long_video(server):
    import av
    entry = run(server, small(load_workflow(NAME)))
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log_tail())
    files = output_files(server, entry)
    assert len(files) == 1, entry["outputs"]
    with av.open(files[0]) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 20 and (frames[0].width, frames[0].height) == (128, 64)


def test_stride_larger_than_window_explains(server):
    workflow = small(load_workflow(NAME), window_stride=24)
    entry = run(server, workflow)
    assert entry["status"]["status_str"] == "error"
    message = json.dumps(entry["status"]["messages"])
    assert "window_stride 24 is larger than window_size 16" in message, message
