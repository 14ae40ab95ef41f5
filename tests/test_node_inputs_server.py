"""Bad input to the nodes over a real ComfyUI server's API (issue 11): what a remote API user may
send is checked by ComfyUI's own validation plus ours, and paths cannot leave ComfyUI's folders."""
import os

import pytest

import train_util
from server_util import run_prompt, submit

TRAIN_DATA = "videocrafter_train_tiny"


@pytest.fixture(scope="module")
def server(server):
    """The session's shared server, with a one-video training set in its input folder."""
    if not os.path.isdir(os.path.join(server.input_dir, TRAIN_DATA)):
        train_util.make_dataset(os.path.join(server.input_dir, TRAIN_DATA), count=1)
    return server


def run(server, workflow):
    return run_prompt(server, workflow, timeout=120)


def execution_error(entry):
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "error" and errors, entry["status"]
    return errors[0]


def latent_graph(width, height=64):
    return {"1": {"class_type": "EmptyVideoCrafterLatent",
                  "inputs": {"width": width, "height": height, "frames": 2, "batch_size": 1}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


@pytest.mark.parametrize("width,message", [(0, "width 0 is outside 64..4096"), (-64, "width -64 is outside 64..4096"),
                                           (8192, "width 8192 is outside 64..4096"),
                                           (100, "width 100 is not a multiple of 64")])
def test_latent_sizes_out_of_range_are_refused_at_validation(server, width, message):
    """Issue 11: declaring VALIDATE_INPUTS(width, height) switched off ComfyUI's min/max checks, so an
    API prompt with width 0 or -64 passed (both are multiples of 64)."""
    queued, refused = submit(server, latent_graph(width))
    assert queued is None
    details = [e["details"] for e in refused["node_errors"]["1"]["errors"]]
    assert any(message in d for d in details), refused


def test_latent_size_linked_from_another_node(server):
    """Issue 11: a width linked from another node is None at validation and was refused with a TypeError."""
    graph = latent_graph(["3", 0])
    graph["3"] = {"class_type": "PrimitiveInt", "inputs": {"value": 128}}
    entry = run(server, graph)
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log_tail())
    graph["3"]["inputs"]["value"] = 96  # checked when the value arrives
    assert "width 96 is not a multiple of 64" in execution_error(run(server, graph))["exception_message"]


def train_graph(**inputs):
    values = dict(ckpt_name="tiny_i2v_v1.safetensors", data=TRAIN_DATA, stage="projector", projector_steps=1,
                  finetune_steps=0, finetune_layers="all", projector_lr=1e-4, finetune_lr=1e-5, batch_size=1,
                  grad_accum=1, frames=2, frame_stride=1, width=64, height=64, precision="auto",
                  output_name="inputs_check", seed=0, save_to="output")
    values.update(inputs)
    return {"1": {"class_type": "VideoCrafterTrainI2V", "inputs": values}}


@pytest.mark.parametrize("inputs,message", [
    ({"data": "../../.."}, "'data' '../../..' climbs out of"),
    ({"data": "/etc"}, "'data' '/etc' is outside"),
    ({"projector_file": "../../../comfy_server.log"}, "'projector_file' '../../../comfy_server.log' climbs out of"),
    ({"projector_file": "/etc/hostname"}, "'projector_file' '/etc/hostname' is outside"),
    ({"output_name": "../escaped"}, "'output_name' '../escaped' must be a plain file name"),
    ({"width": 96}, "width 96 is not a multiple of 64"),
])
def test_train_node_refuses_paths_outside_comfyui_and_bad_sizes_before_loading(server, inputs, message):
    """Issue 11: `data` / `projector_file` read any path on the server (a --listen server's API users could
    make it read arbitrary folders); output names could climb; sizes failed deep in the UNet after loading."""
    error = execution_error(run(server, train_graph(**inputs)))
    assert message in error["exception_message"], error
    assert not any("load_videocrafter" in line or "from_files" in line for line in error["traceback"]), error
    assert not os.path.exists(os.path.join(server.output_dir, "escaped"))
    assert not os.path.exists(os.path.join(server.output_dir, "videocrafter_training", "inputs_check"))


def test_convert_node_output_name_cannot_climb(server):
    graph = {"1": {"class_type": "VideoCrafterCheckpointToSafetensors",
                   "inputs": {"ckpt_name": "tiny_t2v_v2.safetensors", "fp16": True, "output_name": "../../escaped",
                              "overwrite": False}}}
    error = execution_error(run(server, graph))
    assert "'output_name' '../../escaped' must be a plain file name" in error["exception_message"]
