"""The nodes moved from the V1 dict API to the V3 API (comfy_api io.ComfyNode, issue 23): saved graphs must not
notice. tests/fixtures/node_definitions.json holds what a real server of each supported host served at
/object_info for the V1 nodes, and the graphs shipped before the move (commit 26856e0); scripts/
capture_node_definitions.py wrote it. Here a real server of this host serves the V3 nodes, and

- every pack node's definition equals the V1 one in everything a saved graph or the frontend reads (ids, display
  names, categories, descriptions, input names and order, types, defaults, ranges, choices, tooltips, required /
  optional, output types, names and tooltips, output node);
- every UI graph saved before the move maps its widget values and links onto the served definitions (the API graphs
  of then run in tests/test_shipped_graphs_server.py);
- a value that is not one of a choice input's options is refused when the prompt is queued, as before (0.3.75 checks
  the choices of V1 inputs only; vc_nodes/finite_inputs.py checks them for the pack's nodes).

What V3 serves differently by design, and no saved graph reads: a choice input is ("COMBO", {"options": [...]})
where V1 served ([...], {...}); V3 adds "multiselect": false / "multiline": false, false flags (deprecated,
experimental, api_node), output tooltips of None for outputs without one, and the hidden inputs an output node
gets (prompt, extra_pnginfo); 0.33 serves an empty search_aliases as [] for V1 and None for V3. These are
normalised away below, and nothing else.
"""
import json

import pytest

from capture_node_definitions import CATEGORY_ROOT, FIXTURE, host_version  # scripts/ (on sys.path via server_util)
from server_util import assert_widgets_match, submit

with open(FIXTURE) as _f:
    DEFINITIONS = json.load(_f)
V1_UI_GRAPHS = sorted(DEFINITIONS["workflows"]["ui"])
V3_SPELLING = {"multiline": False, "multiselect": False}  # flags V3 writes out where V1 left them absent
ABSENT_WHEN_FALSE = ("deprecated", "experimental", "api_node", "dev_only", "is_input_list",
                     "has_intermediate_output")
# newer fields, empty for this pack either way (0.33 serves a V1 node's search_aliases as [], a V3 node's as None)
EMPTY_EXTRAS = ("output_matchtypes", "price_badge", "search_aliases", "essentials_category")


def saved_graph_view(entry):
    """An /object_info entry without what differs only in spelling between the two APIs (see the module text)."""
    entry = dict(entry)
    inputs = {}
    for section in ("required", "optional"):
        for name, spec in entry["input"].get(section, {}).items():
            kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
            if isinstance(kind, list):
                kind, options = "COMBO", {**options, "options": kind}
            for key, value in V3_SPELLING.items():
                if options.get(key) is value:
                    del options[key]
            inputs.setdefault(section, {})[name] = [kind, options]
    entry["input"] = inputs
    entry["input_order"] = {section: order for section, order in entry["input_order"].items() if section in inputs}
    entry.setdefault("output_tooltips", [None] * len(entry["output"]))
    for key in ABSENT_WHEN_FALSE:
        assert not entry.pop(key, False), (entry["name"], key)
    for key in EMPTY_EXTRAS:
        assert not entry.pop(key, None), (entry["name"], key)
    return entry


@pytest.fixture(scope="module")
def served(server):
    return server.object_info()


@pytest.fixture(scope="module")
def v1_definitions():
    version = host_version()
    if version not in DEFINITIONS["hosts"]:
        pytest.skip(f"no V1 definitions captured for ComfyUI {version} (captured: {sorted(DEFINITIONS['hosts'])})")
    return DEFINITIONS["hosts"][version]


# nodes added after the move (no saved graph of the V1 nodes holds them)
NODES_AFTER_V3 = {"MotionCtrlCameraPath", "MotionCtrlObjectTrajectory"}
# choices that grow with the registry (models added later): every V1 choice stays, in its order, and the tooltip,
# which names each choice, grows with them
GROWING_CHOICES = {"VideoCrafterModelDownloader": "model"}


def test_every_node_serves_its_v1_definition(served, v1_definitions):
    pack = {name: entry for name, entry in served.items() if entry["category"].startswith(CATEGORY_ROOT)}
    assert sorted(pack) == sorted(set(v1_definitions) | NODES_AFTER_V3)
    differences = []
    for name, v1 in v1_definitions.items():
        old, new = saved_graph_view(v1), saved_graph_view(pack[name])
        if name in GROWING_CHOICES:
            before, now = (entry["input"]["required"][GROWING_CHOICES[name]][1] for entry in (old, new))
            assert [o for o in now["options"] if o in before["options"]] == before["options"], (name, now["options"])
            # the tooltip names every choice, so it grows with them; the rest of the input must not change
            assert all(choice in now["tooltip"] for choice in now["options"]) and now.keys() == before.keys()
            now.update(options=before["options"], tooltip=before["tooltip"])
        differences += [(name, key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
                        if old.get(key) != new.get(key)]
    assert not differences, differences


def test_v1_view_keeps_what_saved_graphs_read(v1_definitions):
    """The normalisation above drops no input, choice, default or range (a view that dropped them would make the
    comparison above pass for any definitions)."""
    loader = saved_graph_view(v1_definitions["VideoCrafterCheckpointLoader"])
    assert loader["input_order"] == {"required": ["ckpt_name", "weight_dtype"], "optional": ["projector_file"]}
    kind, options = loader["input"]["required"]["weight_dtype"]
    assert kind == "COMBO" and options["default"] == "default" and "bf16" in options["options"]
    sampler = saved_graph_view(v1_definitions["VideoCrafterKSampler"])["input"]["required"]
    assert sampler["cfg"] == ["FLOAT", {"default": 12.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                        "tooltip": sampler["cfg"][1]["tooltip"]}]
    assert sampler["seed"][1]["control_after_generate"] is True


@pytest.mark.parametrize("title", V1_UI_GRAPHS)
def test_ui_graph_saved_with_the_v1_nodes_loads(served, title):
    """The widget values and links of a template saved before the move fit the served definitions, as the
    frontend reads them (tests/server_util.assert_widgets_match)."""
    assert_widgets_match(served, {"nodes": DEFINITIONS["workflows"]["ui"][title]}, title)


def test_v1_graphs_are_the_shipped_ones_or_run_beside_them():
    """The API graphs of 26856e0 run in tests/test_shipped_graphs_server.py: those still shipped unchanged as the
    shipped graphs, any other from the fixture (its OLD_GRAPHS)."""
    import test_shipped_graphs_server as shipped
    for name, graph in DEFINITIONS["workflows"]["api"].items():
        assert f"{DEFINITIONS['workflows_commit']}/{name}" in shipped.OLD_GRAPHS or shipped.load_workflow(name) == graph, name


@pytest.mark.parametrize("node,value", [
    ("VideoCrafterModelDownloader", {"model": "no_such_model"}),
    ("VideoCrafterCheckpointLoader", {"ckpt_name": "missing.safetensors"}),
    ("VideoCrafterTrainI2V", {"stage": "videos"}),  # a stage of VideoCrafter Train, not one of this node's
])
def test_a_value_outside_a_choice_is_refused_when_queued(served, server, node, value):
    """What a V1 node's list type got from ComfyUI on both hosts: the prompt is refused before anything runs,
    the error naming the input and the value."""
    spec = served[node]["input"]
    values = {key: options.get("default", (options.get("options") or [None])[0])
              for section in ("required", "optional") for key, (kind, options) in spec.get(section, {}).items()}
    values.update(value)
    graph = {"1": {"class_type": node, "inputs": values}}
    if not served[node]["output_node"]:
        graph["2"] = {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    queued, refused = submit(server, graph)
    assert queued is None, queued
    errors = refused["node_errors"]["1"]["errors"]
    ((name, chosen),) = value.items()
    assert any(name in e["details"] and repr(chosen) in e["details"] for e in errors), errors
