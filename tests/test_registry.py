"""The model registry (vc_models/registry.py) is the one list of models: the committed workflows are what the
builder makes of it, and a new entry reaches detection, the downloader and the workflow builder by itself.
No ComfyUI import: the registry, the detector, the downloader script and the builder run without it."""
import dataclasses
import json
import os
import sys

import pytest

from server_util import GOLDEN, REPO, comfyui_path

sys.path.insert(0, REPO)
from vc_models import registry  # noqa: E402
from vc_models.checkpoint import inspect_checkpoint  # noqa: E402
from vc_models.checkpoint_file import read_layout  # noqa: E402
import build_workflows  # noqa: E402  (scripts/, on sys.path via server_util)
import download_models  # noqa: E402

TRAIN_GRAPHS = ("train_i2v", "train_dc_512", "train_lora_vc2")


def committed_files(templates, api):
    """{file name: path} of the graphs build_workflows writes; the training graphs are
    scripts/build_train_workflow.py's (from the trainer node's INPUT_TYPES, needs ComfyUI)."""
    train = {os.path.basename(build_workflows.ui_path(n)) for n in TRAIN_GRAPHS} | {f"{n}.json" for n in TRAIN_GRAPHS}
    return {f"{kind}/{f}": os.path.join(folder, f) for kind, folder in (("ui", templates), ("api", api))
            for f in os.listdir(folder) if f.endswith(".json") and f not in train}


def test_builder_reproduces_the_committed_workflows(tmp_path):
    """The shipped graphs are built from the node definitions of the default host, 0.3.75 (build_workflows.main);
    on another host test_every_shipped_ui_workflow_reads_on_this_host checks that its frontend reads them."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("host_version", os.path.join(comfyui_path(), "comfyui_version.py"))
    version = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(version)
    if version.__version__ != build_workflows.BUILD_HOST_VERSION:
        pytest.skip(f"the shipped graphs are built on ComfyUI {build_workflows.BUILD_HOST_VERSION}; this host is {version.__version__}")
    build_workflows.main(str(tmp_path / "ui"), str(tmp_path / "api"))
    built = committed_files(str(tmp_path / "ui"), str(tmp_path / "api"))
    committed = committed_files(build_workflows.TEMPLATES_FOLDER, build_workflows.API_FOLDER)
    assert sorted(built) == sorted(committed)
    for name in sorted(committed):
        with open(committed[name]) as ours, open(built[name]) as fresh:
            assert ours.read() == fresh.read(), f"{committed[name]} differs from what scripts/build_workflows.py writes"


def test_every_shipped_graph_has_a_template_title():
    """The frontends show a template's file name as its title: every shipped graph has a readable one."""
    names = [w.name for e in registry.MODELS for w in e.workflows] + list(TRAIN_GRAPHS)
    assert sorted(build_workflows.TITLES) == sorted(names)
    titles = list(build_workflows.TITLES.values())
    assert len(set(titles)) == len(titles)
    assert all(not set(t) & set('<>:"/\\|?*#%&') and t == t.strip() for t in titles), titles


def test_ids_and_released_file_names_are_unique():
    ids = [e.id for e in registry.MODELS]
    names = [e.release.file_name for e in registry.released()]
    workflows = [w.name for e in registry.MODELS for w in e.workflows]
    assert len(set(ids)) == len(ids) and len(set(names)) == len(names) and len(set(workflows)) == len(workflows)
    assert all(registry.entry(e.base_model).release for e in registry.MODELS if e.base_model)
    assert all(e.id in {r.id for r in registry.MODELS} for e in registry.MODELS if e.refines)


FAKE = dataclasses.replace(
    registry.entry("vc2_t2v_512"), id="vc9_t2v_test", description="VideoCrafter9 test model 256x384",
    # the VideoCrafter2 tensors, told apart by the file name (as DynamiCrafter 512 interpolation is)
    matches=lambda f: f.temporal_conv and "vc9" in f.file_name, refines="vc2_t2v_512",
    defaults=registry.SamplingDefaults(256, 384, 12, steps=30, cfg=9.0),
    release=registry.Release("example/VideoCrafter9", "vc9.ckpt", "videocrafter9_t2v_test.safetensors"),
    workflows=(registry.Workflow("vc9_t2v_test", "a test prompt"),))


@pytest.fixture
def fake_entry(monkeypatch):
    monkeypatch.setattr(registry, "MODELS", registry.MODELS + [FAKE])
    return FAKE


def test_a_new_entry_reaches_detection_downloader_and_builder(fake_entry, tmp_path, capsys):
    layout = read_layout(os.path.join(GOLDEN, "tiny_t2v_v2.safetensors"))
    assert inspect_checkpoint(dict(layout), "vc9_tiny.safetensors").variant == "vc9_t2v_test"
    assert inspect_checkpoint(dict(layout), "tiny_t2v_v2.safetensors").variant == "vc2_t2v_512"

    assert download_models.main(["--list"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("vc9_t2v_test ")]
    assert len(listed) == 1 and "videocrafter9_t2v_test.safetensors" in listed[0]
    assert "https://huggingface.co/example/VideoCrafter9/resolve/main/vc9.ckpt" in listed[0]

    build_workflows.main(str(tmp_path), str(tmp_path / "api"))
    with open(tmp_path / "api" / "vc9_t2v_test.json") as f:
        api = json.load(f)
    inputs = {n["class_type"]: n["inputs"] for n in api.values()}
    assert inputs["VideoCrafterCheckpointLoader"]["ckpt_name"] == "videocrafter9_t2v_test.safetensors"
    assert (inputs["EmptyVideoCrafterLatent"]["width"], inputs["EmptyVideoCrafterLatent"]["height"]) == (384, 256)
    assert (inputs["VideoCrafterKSampler"]["steps"], inputs["VideoCrafterKSampler"]["cfg"]) == (30, 9.0)
    assert inputs["VideoCrafterFPSConditioning"]["fps"] == 12
    with open(build_workflows.ui_path("vc9_t2v_test", str(tmp_path))) as f:
        note = next(n for n in json.load(f)["nodes"] if n["type"] == "Note")["widgets_values"][0]
    assert "download_models.py vc9_t2v_test" in note and "example/VideoCrafter9" in note
