"""Every shipped API graph (workflows/api/*.json, those added later too) runs in a real ComfyUI server as a user's
does: tiny stand-ins under the model names the graph loads, and ITS OWN input file names, which must be example
inputs the pack writes into the (empty) input folder at start-up. Only sizes, frames and steps are made small.

The training graphs run in tests/test_train_server.py (tiny dataset, one step a stage); this module checks that
every one of them is run there."""
import copy
import json
import os

import pytest

import comfy_host
import tiny_turbo  # scripts/, on sys.path via comfy_host
from conftest import require_reference, tiny_motionctrl_state_dict, tiny_toon_state_dict
from model_util import random_controlnet
from server_util import REPO, ComfyServer, load_workflow, output_files, run_prompt

GRAPHS = sorted(name[:-5] for name in os.listdir(os.path.join(REPO, "workflows", "api")) if name.endswith(".json"))
# the API graphs shipped before the nodes moved to the V3 API (tests/fixtures/node_definitions.json): those no longer
# shipped as they were run here too, as "<commit>/<name>" (tests/test_node_definitions_server.py checks the rest are)
with open(os.path.join(REPO, "tests", "fixtures", "node_definitions.json")) as _f:
    _V1 = json.load(_f)
OLD_GRAPHS = sorted(f"{_V1['workflows_commit']}/{name}" for name, old in _V1["workflows"]["api"].items()
                    if name not in GRAPHS or load_workflow(name) != old)
TRAIN_NODES = {"VideoCrafterTrain", "VideoCrafterTrainI2V"}
# the tiny checkpoint standing in for each released model (registry id) a shipped graph loads
TINY_FOR = {"vc1_t2v_512": "tiny_t2v_v1", "vc1_t2v_1024": "tiny_t2v_v1", "vc2_t2v_512": "tiny_t2v_v2",
            "vc1_i2v_512": "tiny_i2v_v1", "dc_256": "tiny_dc_256", "dc_512": "tiny_dc_512", "dc_1024": "tiny_dc_512",
            "dc_512_interp": "tiny_dc_512", "toon_512": "tiny_toon_512",
            "motionctrl_256": "tiny_motionctrl", "motionctrl_vc2_512": "tiny_motionctrl_camera"}
# the tiny MotionCtrl files (with the reference data): both controls, and without the adapter (camera only)
TINY_MOTIONCTRL = {"tiny_motionctrl.safetensors": False, "tiny_motionctrl_camera.safetensors": True}
WIDTH, HEIGHT, FRAMES, STEPS = 128, 64, 4, 2
LONG_FRAMES = 20  # FreeNoise graphs: past their 16-frame window (16 + 1 stride)
FILE_INPUTS = {"LoadImage": "image", "LoadVideo": "file", "MotionCtrlCameraPath": "pose_file",
               "MotionCtrlObjectTrajectory": "trajectory_file"}
NO_FILE = "none"  # a file input left unset (the MotionCtrl nodes)


def is_training_graph(workflow):
    return any(node["class_type"] in TRAIN_NODES for node in workflow.values())


def upstream(workflow, node_id):
    """Ids of the nodes `node_id` reads from, directly or not."""
    seen, todo = set(), [node_id]
    while todo:
        for value in workflow[todo.pop()]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in workflow and str(value[0]) not in seen:
                seen.add(str(value[0]))
                todo.append(str(value[0]))
    return seen


def small(workflow, tiny_names, example_inputs):
    """The graph on the tiny models at a CPU's size; returns (workflow, frames its video must have)."""
    frames = LONG_FRAMES if any("window_size" in node["inputs"] for node in workflow.values()) else FRAMES
    if any(node["class_type"] == "LoadVideo" for node in workflow.values()):
        frames = example_inputs.SKETCH_FRAMES  # one sketch a frame: the example video's length
    expected = frames
    for node_id, node in workflow.items():
        inputs = node["inputs"]
        for key, value in {"width": WIDTH, "height": HEIGHT, "frames": frames, "length": frames, "steps": STEPS}.items():
            if key in inputs and not isinstance(inputs[key], list):
                inputs[key] = value
        if "ckpt_name" in inputs:
            inputs["ckpt_name"] = tiny_names[inputs["ckpt_name"]]
        if node["class_type"] == "ImageFromBatch":  # a loop drops its last frame (the first again)
            inputs["length"] = expected = frames - 1
        if node["class_type"] == "VideoCrafterKeyFrameSequence":
            keys = sum(workflow[i]["class_type"] == "LoadImage" for i in upstream(workflow, node_id))
            segments = keys if inputs["loop"] else keys - 1
            expected = segments * (frames - 1) + (0 if inputs["loop"] else 1)
    return workflow, expected


@pytest.fixture(scope="module")
def tiny_names(pack):
    """Released file name a shipped graph loads -> the tiny checkpoint standing in for it."""
    registry = comfy_host.pack("vc_models.registry")
    return {entry.release.file_name: f"{TINY_FOR[entry.id]}.safetensors"
            for entry in registry.MODELS if entry.release is not None and entry.id in TINY_FOR}


def write_i2v_lora(path):
    """A LoRA on every spatial self-attention query of the tiny VideoCrafter1 I2V UNet, as the trainer exports one."""
    import safetensors.torch
    import torch
    lora = comfy_host.pack("vc_train.lora")
    prefix = "model.diffusion_model."
    generator = torch.Generator().manual_seed(0)
    values = {}
    with safetensors.safe_open(os.path.join(comfy_host.GOLDEN, "tiny_i2v_v1.safetensors"), "pt") as f:
        for key in f.keys():
            if key.startswith(prefix) and key.endswith("attn1.to_q.weight") and "temporal" not in key:
                out_features, in_features = f.get_slice(key).get_shape()
                module = key[len(prefix):-len(".weight")]
                values[f"{module}.lora_down.weight"] = torch.randn(2, in_features, generator=generator) * 0.1
                values[f"{module}.lora_up.weight"] = torch.randn(out_features, 2, generator=generator) * 0.1
    assert values
    safetensors.torch.save_file(lora.export_tensors(values, alpha=2.0), path)


def write_sketch_encoder(path):
    """A random ControlNet in the layout of ToonCrafter's sketch encoder (bare cldm keys, 1 hint channel), sized to
    the tiny ToonCrafter UNet."""
    import safetensors.torch
    unet_sd = {k[len("model.diffusion_model."):]: v for k, v in tiny_toon_state_dict().items()
               if k.startswith("model.diffusion_model.")}
    config = comfy_host.pack("vc_models.checkpoint").infer_unet_config(unet_sd)
    safetensors.torch.save_file(random_controlnet(config, hint_channels=1, prefix=""), path)


@pytest.fixture(scope="module")
def server(pack, module_tmp, tiny_names):
    """A server with an empty input folder and, under the names the graphs load, the tiny checkpoints, the tiny
    ToonCrafter, a sketch encoder, a LoRA and (with the reference data) the tiny T2V-Turbo UNets."""
    import safetensors.torch
    srv = ComfyServer(module_tmp("shipped_graphs"), env={"OMP_NUM_THREADS": "1"})  # see conftest.one_torch_thread
    checkpoints = os.path.join(srv.models_dir, "checkpoints")
    safetensors.torch.save_file(tiny_toon_state_dict(), os.path.join(checkpoints, "tiny_toon_512.safetensors"))
    graphs = [graph(name) for name in GRAPHS + OLD_GRAPHS]
    loaded = {node["class_type"]: node["inputs"] for graph in graphs for node in graph.values()}
    for kind, node, name_input, write in (("controlnet", "ControlNetLoader", "control_net_name", write_sketch_encoder),
                                          ("loras", "LoraLoaderModelOnly", "lora_name", write_i2v_lora)):
        if node in loaded:
            os.makedirs(os.path.join(srv.models_dir, kind), exist_ok=True)
            write(os.path.join(srv.models_dir, kind, loaded[node][name_input]))
    with open(srv.yaml_path, "a") as f:
        f.write("    loras: loras\n")
    if all(os.path.exists(os.path.join(comfy_host.REFERENCE, *name.split("/")))
           for case in tiny_turbo.CASES for name in tiny_turbo.reference_files(case)):
        tiny_turbo.write_tiny_turbo_files(checkpoints)  # listed as models/videocrafter too
    if os.path.exists(os.path.join(comfy_host.REFERENCE, "golden", "tiny_motionctrl.delta.safetensors")):
        for name, camera_only in TINY_MOTIONCTRL.items():
            safetensors.torch.save_file(tiny_motionctrl_state_dict(camera_only), os.path.join(checkpoints, name))
    assert os.listdir(srv.input_dir) == []
    srv.start()
    yield srv
    srv.stop()


def graph(name):
    """A shipped API graph, or "<commit>/<name>": one shipped before the V3 nodes (see OLD_GRAPHS)."""
    commit, _, old = name.rpartition("/")
    return copy.deepcopy(_V1["workflows"]["api"][old]) if commit else load_workflow(name)


@pytest.mark.parametrize("name", GRAPHS + OLD_GRAPHS)
def test_shipped_graph_runs_with_the_example_inputs(server, tiny_names, name):
    import av
    example_inputs = comfy_host.pack("vc_models.example_inputs")
    workflow = graph(name)
    if is_training_graph(workflow):
        with open(os.path.join(REPO, "tests", "test_train_server.py")) as f:
            assert f'"{name}"' in f.read(), (f"{name} is a training graph: tests/test_train_server.py must run it "
                                              "(it has the dataset and the LoRA folder)")
        return
    files = {(node["class_type"], node["inputs"][FILE_INPUTS[node["class_type"]]])
             for node in workflow.values() if node["class_type"] in FILE_INPUTS}
    missing = sorted(f"{kind} '{file}'" for kind, file in files if file not in example_inputs.NAMES and file != NO_FILE)
    assert not missing, (f"{name} loads {', '.join(missing)}, which the pack does not write into the input folder "
                         f"(its example inputs: {', '.join(example_inputs.NAMES)}): a user opening it gets a missing file")
    unknown = sorted({node["inputs"]["ckpt_name"] for node in workflow.values()
                      if "ckpt_name" in node["inputs"]} - set(tiny_names))
    assert not unknown, f"{name} loads {unknown}: add the tiny checkpoint standing in for it to TINY_FOR"
    if any(node["class_type"] == "VideoCrafterTurboUNetLoader" for node in workflow.values()):
        require_reference(*tiny_turbo.reference_files("mg"), *tiny_turbo.reference_files("nomg"))
    if any(tiny_names.get(node["inputs"].get("ckpt_name")) in TINY_MOTIONCTRL for node in workflow.values()):
        require_reference("golden/tiny_motionctrl.delta.safetensors")
    workflow, expected_frames = small(workflow, tiny_names, example_inputs)
    entry = run_prompt(server, workflow, timeout=600)
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log_tail())
    (video,) = output_files(server, entry)
    with av.open(video) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == expected_frames and (frames[0].width, frames[0].height) == (WIDTH, HEIGHT)
    assert "lora key not loaded" not in server.log_tail(20000)
