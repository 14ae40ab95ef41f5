"""Bad input to the nodes over a real ComfyUI server's API (issue 11): what a remote API user may
send is checked by ComfyUI's own validation plus ours, and paths cannot leave ComfyUI's folders."""
import math
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
    ({"output_name": "n" * 300}, "'output_name' is 300 bytes long"),  # was ENAMETOOLONG naming a temporary
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


def pack_float_inputs(info):
    """[(node, input)] of every FLOAT input of this pack's nodes, as /object_info lists them."""
    return [(node, name) for node, spec in info.items() if "VideoCrafter" in spec.get("python_module", "")
            for section in ("required", "optional") for name, value in spec["input"].get(section, {}).items()
            if value[0] == "FLOAT"]


def test_every_float_input_refuses_nan_and_infinity_at_validation(server):
    """D14: ComfyUI's min/max check passes NaN (and its JSON reads NaN / Infinity): every FLOAT input of the pack's
    nodes refuses them when the prompt is queued, naming the input; the range is still enforced."""
    info = server.object_info()
    floats = pack_float_inputs(info)
    assert ("VideoCrafterKSampler", "cfg") in floats and ("VideoCrafterTrain", "finetune_lr") in floats, floats
    for node, name in floats:
        for value, said in ((float("nan"), f"{name} is nan: give a finite number"),
                            (float("inf"), f"{name} is inf: give a finite number"),
                            (1e300, f"{name} 1e+300 is outside")):
            graph = {"1": {"class_type": node, "inputs": {name: value}},
                     "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
            queued, refused = submit(server, graph)
            assert queued is None, (node, name, value)
            details = [e.get("details", "") for e in refused["node_errors"]["1"]["errors"]]
            assert any(said in d for d in details), (node, name, value, details)


def test_nan_cfg_in_the_shipped_workflow_is_refused_and_a_linked_nan_fails_before_sampling(server):
    """D14: cfg / eta / denoise NaN in vc2_t2v_512 are refused at /prompt (nothing queued); a NaN cfg through a link
    fails the sampler before it samples, naming cfg; no video is written either way."""
    from server_util import fill_inputs, load_workflow
    before = sorted(os.listdir(server.output_dir))
    for name in ("cfg", "eta", "denoise"):
        workflow = fill_inputs(load_workflow("vc2_t2v_512"), {"ckpt_name": "tiny_t2v_v2.safetensors", name: float("nan"),
                                                             "width": 128, "height": 64, "frames": 2, "steps": 2})
        queued, refused = submit(server, workflow)
        assert queued is None and f"{name} is nan" in str(refused), refused
    workflow = fill_inputs(load_workflow("vc2_t2v_512"), {"ckpt_name": "tiny_t2v_v2.safetensors", "width": 128,
                                                         "height": 64, "frames": 2, "steps": 2})
    sampler = next(n for n in workflow.values() if n["class_type"] == "VideoCrafterKSampler")
    workflow["90"] = {"class_type": "PrimitiveFloat", "inputs": {"value": float("nan")}}
    sampler["inputs"]["cfg"] = ["90", 0]
    error = execution_error(run(server, workflow))  # core's Float node passes NaN on: the sampler refuses it
    assert error["node_type"] == "VideoCrafterKSampler" and "cfg is nan" in error["exception_message"], error
    assert sorted(os.listdir(server.output_dir)) == before


def test_a_latent_at_the_declared_maxima_is_refused_at_validation(server):
    """D15: Empty VideoCrafter Latent's maxima allow 4096x4096, 1024 frames, batch 64 (a 275 GB latent): refused when
    the prompt is queued, naming the frames that fit this machine's RAM."""
    graph = {"1": {"class_type": "EmptyVideoCrafterLatent",
                   "inputs": {"width": 4096, "height": 4096, "frames": 1024, "batch_size": 64}},
             "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    queued, refused = submit(server, graph)
    assert queued is None
    details = " ".join(e["details"] for e in refused["node_errors"]["1"]["errors"])
    ram = server_ram_gb(server)
    assert f"more than this machine's {ram:.1f} GB of RAM: at most" in details and "frames fit at batch 64" in details, details


def server_ram_gb(server):
    from server_util import http_json
    return http_json(server.url + "/system_stats")["system"]["ram_total"] / 2 ** 30


def test_sampling_that_cannot_fit_the_machine_is_refused_before_sampling(server):
    """D15: a latent that fits the RAM whose UNet activations (the memory model, vc_models/memory_model.py) cannot
    fit this CPU server's RAM: the sampler refuses it before sampling, naming the frames that fit; no video."""
    from server_util import fill_inputs, http_json, load_workflow
    ram = http_json(server.url + "/system_stats")["system"]["ram_total"]
    # latent pixel-frames of ~RAM / 1000 bytes: the latent is 1.6% of the RAM, one UNet call over it (thousands of
    # bytes per pixel-frame at the tiny width) several times the RAM
    pixel_frames = math.ceil(ram / 1000)
    frames = min(1024, math.ceil(pixel_frames / (512 * 512)))
    batch = math.ceil(pixel_frames / (512 * 512 * frames))
    workflow = fill_inputs(load_workflow("vc2_t2v_512"), {"ckpt_name": "tiny_t2v_v2.safetensors", "width": 4096,
                                                         "height": 4096, "frames": frames, "steps": 2})
    next(n for n in workflow.values() if n["class_type"] == "EmptyVideoCrafterLatent")["inputs"]["batch_size"] = batch
    before = sorted(os.listdir(server.output_dir))
    error = execution_error(run(server, workflow))
    assert error["node_type"] == "VideoCrafterKSampler", error
    message = error["exception_message"]
    assert f"Sampling {batch} x {frames} frames of 4096x4096 needs about" in message, message
    assert f"this machine's RAM is {ram / 2 ** 30:.1f} GB: at most" in message and "frames of 4096x4096 fit" in message
    assert not any("sample_custom" in line for line in error["traceback"]), error["traceback"][-3:]
    assert sorted(os.listdir(server.output_dir)) == before
