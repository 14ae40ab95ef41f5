"""The trainer nodes inside a real ComfyUI server: the shipped train workflows run on the tiny I2V and
DynamiCrafter 512 checkpoints and the loss curve comes back through /history and /view; an interrupt saves a state."""
import io
import json
import os
import time
import urllib.parse
import urllib.request

import pytest

import comfy_host
import train_util
from server_util import (ComfyServer, REPO, START_IMAGE, choices, http_json, run_prompt, submit, wait_history, load_workflow,
                         fill_inputs, output_files)

TRAIN_DATA = "videocrafter_train_tiny"


@pytest.fixture(scope="module")
def train_server(module_tmp):
    """A server of its own (tests/conftest.py has no shared one); the dataset in its input folder."""
    srv = ComfyServer(module_tmp("train_server"))
    train_util.make_dataset(os.path.join(srv.input_dir, TRAIN_DATA), count=3)
    # models/loras of this server only (the node writes a LoRA to the first loras folder)
    with open(srv.yaml_path, "a") as f:
        # models/checkpoints of this server too (a result saved to checkpoints lands there), and a user's own
        # models/videocrafter folder
        f.write(f"vc_test_loras:\n    base_path: {srv.models_dir}\n    is_default: true\n    loras: loras\n"
                "    checkpoints: checkpoints\n    videocrafter: own_videocrafter\n")
    os.makedirs(os.path.join(srv.models_dir, "own_videocrafter"))
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # see test_train_stages.mods: far faster on a shared 2-CPU box
    try:
        srv.start()
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    yield srv
    srv.stop()


def train_workflow(name="train_i2v", node_type="VideoCrafterTrainI2V", **overrides):
    with open(os.path.join(REPO, "workflows", "api", f"{name}.json")) as f:
        workflow = json.load(f)
    node = next(n for n in workflow.values() if n["class_type"] == node_type)
    node["inputs"].update(dict(ckpt_name="tiny_i2v_v1.safetensors", data=TRAIN_DATA, stage="both", projector_steps=1,
                               finetune_steps=1, frames=4, frame_stride=2, width=64, height=64,
                               gradient_checkpointing=False, save_to="output"), **overrides)
    return workflow


@pytest.mark.parametrize("node_type,graph,stages", [
    ("VideoCrafterTrainI2V", "train_i2v", ["projector", "finetune", "both"]),
    ("VideoCrafterTrain", "train_dc_512", ["projector", "finetune", "both", "videos", "images"])])
def test_train_node_registered_with_tooltips(train_server, node_type, graph, stages):
    info = train_server.object_info()[node_type]
    assert info["category"] == "VideoCrafter/training"
    assert choices(info["input"]["required"]["stage"]) == stages
    for section in ("required", "optional"):
        for name, spec in info["input"][section].items():
            assert spec[1].get("tooltip"), name
    ui = load_workflow(graph, api=False)
    node = next(n for n in ui["nodes"] if n["type"] == node_type)
    widgets = list(info["input"]["required"]) + list(info["input"]["optional"])
    assert len(node["widgets_values"]) == len(widgets) + 1  # + the seed's control-after-generate


def test_train_workflow_returns_loss_curve(train_server):
    from PIL import Image
    entry = run_prompt(train_server, train_workflow(output_name="tiny_run"), timeout=300)
    assert entry["status"]["status_str"] == "success", (entry["status"], train_server.log_tail())
    images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    assert len(images) == 1
    query = urllib.parse.urlencode({k: images[0][k] for k in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{train_server.url}/view?{query}", timeout=30) as r:
        curve = Image.open(io.BytesIO(r.read()))
    assert curve.size == (768, 432)
    run = os.path.join(train_server.output_dir, "videocrafter_training", "tiny_run")
    assert os.path.exists(os.path.join(run, "tiny_run.safetensors"))
    assert os.path.exists(os.path.join(run, "tiny_run_projector.safetensors"))
    assert open(os.path.join(run, "loss_log.csv")).read().count("\n") == 3


def test_dynamicrafter_train_workflow_trains_and_previews(train_server):
    workflow = train_workflow("train_dc_512", "VideoCrafterTrain", ckpt_name="tiny_dc_512.safetensors", stage="videos",
                              finetune_steps=2, sample_every=2, sample_steps=2, output_name="tiny_dc_run")
    entry = run_prompt(train_server, workflow, timeout=300)
    assert entry["status"]["status_str"] == "success", (entry["status"], train_server.log_tail())
    run = os.path.join(train_server.output_dir, "videocrafter_training", "tiny_dc_run")
    assert os.path.exists(os.path.join(run, "samples", "step_00000002.mp4"))
    from safetensors import safe_open
    with safe_open(os.path.join(run, "tiny_dc_run.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "videocrafter-dc_512"
    # a stage DynamiCrafter does not have: refused naming those it has
    workflow = train_workflow("train_dc_512", "VideoCrafterTrain", ckpt_name="tiny_dc_512.safetensors", stage="both",
                              output_name="tiny_dc_refused")
    entry = run_prompt(train_server, workflow, timeout=120)
    assert entry["status"]["status_str"] == "error"
    assert "trains the stages ['videos'] only" in json.dumps(entry["status"]["messages"])


def saved_states(states):
    """{run id: [step_… folders]} of a run folder's states (one folder per training run)."""
    if not os.path.isdir(states):
        return {}
    return {run: sorted(n for n in os.listdir(os.path.join(states, run)) if n.startswith("step_"))
            for run in os.listdir(states)}


def test_interrupt_saves_a_state_then_resumes(train_server):
    run = os.path.join(train_server.output_dir, "videocrafter_training", "tiny_interrupted")
    states = os.path.join(run, "states")
    queued, _ = submit(train_server, train_workflow(output_name="tiny_interrupted", stage="projector",
                                                    projector_steps=300, save_every=1, keep_states=1))
    deadline = time.time() + 180
    while not any(saved_states(states).values()):
        assert time.time() < deadline, train_server.log_tail()
        time.sleep(0.2)
    http_json(train_server.url + "/interrupt", {})
    entry = wait_history(train_server, queued["prompt_id"], timeout=300)
    assert entry["status"]["status_str"] == "error"
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"]), entry["status"]
    (run_id, saved), = saved_states(states).items()
    step = int(saved[-1][len("step_"):])
    assert step >= 1
    # resume: the same run with a goal one step past the saved state
    entry = run_prompt(train_server, train_workflow(
        output_name="tiny_interrupted", stage="projector", projector_steps=step + 1, save_every=1, keep_states=1),
        timeout=300)
    assert entry["status"]["status_str"] == "success", (entry["status"], train_server.log_tail())
    assert saved_states(states) == {run_id: [f"step_{step + 1:08d}"]}
    rows = open(os.path.join(run, "loss_log.csv")).read().strip().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, step + 2))


def test_shipped_videocrafter2_lora_train_workflow_writes_a_lora(train_server):
    """workflows/api/train_lora_vc2.json as shipped (VideoCrafter Train, adapter lora, stage videos), on the tiny
    VideoCrafter2 with one short step: a LoRA of VideoCrafter2 in the server's models/loras."""
    import safetensors
    workflow = train_workflow("train_lora_vc2", "VideoCrafterTrain", ckpt_name="tiny_t2v_v2.safetensors", stage="videos",
                              lora_rank=4, save_to="checkpoints", output_name="tiny_vc2_lora")
    node = next(n for n in workflow.values() if n["class_type"] == "VideoCrafterTrain")
    assert node["inputs"]["adapter"] == "lora"
    entry = run_prompt(train_server, workflow, timeout=300)
    assert entry["status"]["status_str"] == "success", (entry["status"], train_server.log_tail())
    with safetensors.safe_open(os.path.join(train_server.models_dir, "loras", "tiny_vc2_lora.safetensors"), "pt") as f:
        assert f.metadata()["base_model"] == "vc2_t2v_512"
        assert all(k.startswith("diffusion_model.") for k in f.keys())


def test_a_lora_trained_by_the_node_runs_in_the_shipped_lora_workflow(train_server):
    """The user's path: the node trains a LoRA into models/loras, the shipped graph applies it with core
    Load LoRA (model only) and makes a video."""
    import av
    import safetensors
    entry = run_prompt(train_server, train_workflow(output_name="vc1_i2v_512_lora", stage="finetune", adapter="lora",
                                                    lora_rank=4, finetune_lr=1e-2, save_to="checkpoints"), timeout=300)
    assert entry["status"]["status_str"] == "success", (entry["status"], train_server.log_tail())
    lora = os.path.join(train_server.models_dir, "loras", "vc1_i2v_512_lora.safetensors")
    with safetensors.safe_open(lora, "pt") as f:
        assert f.metadata()["base_model"] == "vc1_i2v_512" and f.metadata()["lora_rank"] == "4"
    workflow = fill_inputs(load_workflow("vc1_i2v_512_lora"), {"ckpt_name": "tiny_i2v_v1.safetensors", "width": 128,
                                                               "height": 64, "frames": 4, "steps": 2, "image": START_IMAGE})
    entry = run_prompt(train_server, workflow, timeout=300)
    assert entry["status"]["status_str"] == "success", (entry["status"], train_server.log_tail())
    assert "lora key not loaded" not in train_server.log_tail()
    (video,) = output_files(train_server, entry)
    with av.open(video) as container:
        assert len(list(container.decode(video=0))) == 4


def run_dir_files(server, name):
    """Every file a run of `name` wrote: its run folder and result files in the server's model folders."""
    run = os.path.join(server.output_dir, "videocrafter_training", name)
    written = [os.path.join(d, f) for d, _, files in os.walk(run) for f in files]
    return written + [os.path.join(d, f) for d, _, files in os.walk(server.models_dir) for f in files if f.startswith(name)]


@pytest.mark.parametrize("entry", ["absolute", "climbing"])
def test_a_training_list_naming_files_outside_the_input_folder_is_refused(train_server, entry):
    """D1: a CSV uploaded to the input folder names a video outside it (an absolute path, or '../'): refused before
    any model loads, naming the list's line and the folder; nothing is written."""
    private = os.path.join(train_server.root, "private")
    os.makedirs(private, exist_ok=True)
    train_util.write_video(os.path.join(private, "secret.mp4"))
    path = os.path.join(private, "secret.mp4") if entry == "absolute" else "../private/secret.mp4"
    listing = f"outside_{entry}.csv"
    with open(os.path.join(train_server.input_dir, listing), "w") as f:
        f.write(f"path,caption\n{TRAIN_DATA}/clip00.mp4,inside\n{path},a private video\n")
    name = f"tiny_outside_{entry}"
    entry_ = run_prompt(train_server, train_workflow(output_name=name, data=listing, stage="projector"), timeout=300)
    assert entry_["status"]["status_str"] == "error", train_server.log_tail()
    message = json.dumps(entry_["status"]["messages"])
    assert f"{listing} line 3" in message and "lies outside" in message and "secret.mp4" in message, message
    assert run_dir_files(train_server, name) == []


def test_links_to_inputs_the_train_node_does_not_declare_are_refused(train_server):
    """D2: a prompt links TrainConfig fields the node does not offer (sample_image to a PNG outside every root,
    output_dir): refused naming them; nothing is written."""
    outside = os.path.join(train_server.root, "outside.png")
    import shutil
    shutil.copy(os.path.join(comfy_host.GOLDEN, "tiny_i2v_v1.case1.cond_image.png"), outside)
    workflow = train_workflow(output_name="tiny_undeclared", stage="projector", sample_every=1, sample_steps=1)
    node = next(n for n in workflow.values() if n["class_type"] == "VideoCrafterTrainI2V")
    workflow["90"] = {"class_type": "PrimitiveString", "inputs": {"value": outside}}
    workflow["91"] = {"class_type": "PrimitiveString", "inputs": {"value": train_server.root}}
    node["inputs"].update(sample_image=["90", 0], output_dir=["91", 0])
    entry = run_prompt(train_server, workflow, timeout=300)
    assert entry["status"]["status_str"] == "error", train_server.log_tail()
    message = json.dumps(entry["status"]["messages"])
    assert "has no input(s) ['output_dir', 'sample_image']" in message and "remove those links" in message, message
    assert run_dir_files(train_server, "tiny_undeclared") == []
    assert not os.path.exists(os.path.join(train_server.root, "samples"))


def test_a_dead_writers_partial_file_is_swept_when_a_result_is_written(train_server):
    """D9: kill -9 during a result write left a model-sized `.partial` that nothing removed. The next write into
    that folder removes the temporaries whose writer process is gone, and keeps those of a live one."""
    import subprocess
    import sys
    name = "tiny_swept"
    run = os.path.join(train_server.output_dir, "videocrafter_training", name)
    os.makedirs(run)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = os.path.join(run, f".{name}_projector.safetensors.{gone.pid}-0badc0de.partial")
    writing = os.path.join(run, f".{name}_other.safetensors.{os.getpid()}-0badc0de.partial")  # this test is alive
    for path in (stale, writing):
        with open(path, "wb") as f:
            f.write(b"\0" * 2**20)
    entry = run_prompt(train_server, train_workflow(output_name=name, stage="projector"), timeout=300)
    assert entry["status"]["status_str"] == "success", (entry["status"], train_server.log_tail())
    assert os.path.exists(os.path.join(run, f"{name}_projector.safetensors"))
    assert not os.path.exists(stale) and os.path.exists(writing)


def test_a_result_and_a_model_of_the_same_name_in_another_folder_are_refused(train_server):
    """D11: a training result named like a model in models/videocrafter was shadowed by it (the loader looked there
    first). The node refuses such an output_name before training, naming both files; the loader refuses a name
    two different files carry, naming both, instead of loading either."""
    import shutil
    own = os.path.join(train_server.models_dir, "own_videocrafter")
    checkpoints = os.path.join(train_server.models_dir, "checkpoints")
    shutil.copy(os.path.join(comfy_host.GOLDEN, "tiny_t2v_v1.safetensors"), os.path.join(own, "tiny_shadow.safetensors"))
    entry = run_prompt(train_server, train_workflow(output_name="tiny_shadow", save_to="checkpoints"), timeout=300)
    assert entry["status"]["status_str"] == "error", train_server.log_tail()
    message = json.dumps(entry["status"]["messages"])
    assert "would write" in message and os.path.join(checkpoints, "tiny_shadow.safetensors") in message \
        and os.path.join(own, "tiny_shadow.safetensors") in message and "choose another output_name" in message, message
    assert run_dir_files(train_server, "tiny_shadow") == [os.path.join(own, "tiny_shadow.safetensors")]
    # two different files of one name: the loader names both and loads neither
    shutil.copy(os.path.join(comfy_host.GOLDEN, "tiny_t2v_v2.safetensors"), os.path.join(checkpoints, "tiny_shadow.safetensors"))
    workflow = fill_inputs(load_workflow("vc2_t2v_512"), {"ckpt_name": "tiny_shadow.safetensors", "width": 128,
                                                         "height": 64, "frames": 2, "steps": 2})
    entry = run_prompt(train_server, workflow, timeout=300)
    assert entry["status"]["status_str"] == "error", train_server.log_tail()
    message = json.dumps(entry["status"]["messages"])
    assert "Two different files are named 'tiny_shadow.safetensors'" in message and "Rename or move one" in message, message
    assert output_files(train_server, entry) == []


def test_a_projector_run_named_like_an_unrelated_checkpoint_reports_its_own_result(train_server):
    """D10: a projector-only run whose name matches an unrelated <name>.safetensors in its result folder reported
    that file as its result_path and in summary.json. Only files the run wrote are its results."""
    import shutil
    name = "tiny_proj_only"
    run = os.path.join(train_server.output_dir, "videocrafter_training", name)
    os.makedirs(run)
    unrelated = os.path.join(run, f"{name}.safetensors")
    shutil.copy(os.path.join(comfy_host.GOLDEN, "tiny_t2v_v2.safetensors"), unrelated)
    workflow = train_workflow(output_name=name, stage="projector")
    workflow["3"] = {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}  # the node's result_path
    entry = run_prompt(train_server, workflow, timeout=300)
    assert entry["status"]["status_str"] == "success", (entry["status"], train_server.log_tail())
    projector = os.path.join(run, f"{name}_projector.safetensors")
    assert entry["outputs"]["3"]["text"] == [projector], entry["outputs"]["3"]
    with open(os.path.join(run, "summary.json")) as f:
        outputs = json.load(f)["outputs"]
    assert outputs["projector_file"] == projector and "checkpoint" not in outputs, outputs
    assert unrelated not in outputs.values()
