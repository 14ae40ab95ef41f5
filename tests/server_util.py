"""Test helpers over a real ComfyUI server: the launcher and HTTP helpers themselves live in
scripts/comfy_server.py (shared with `make demo` and the GPU check); this module adds what only tests need (the
example start image's name, the UI-graph widget check) and re-exports those helpers for the tests.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
# the generic launcher and HTTP helpers (scripts/comfy_server.py), shared with the demo and the GPU check
from comfy_server import (REPO, GOLDEN, TINY_CHECKPOINTS, ComfyServer, comfyui_path, fill_inputs,  # noqa: E402,F401
                          free_port, http_json, load_workflow, output_files, run_prompt, submit, venv_python,
                          wait_history)

# the example start image the pack writes into every server's input folder (vc_models/example_inputs.py START)
START_IMAGE = "videocrafter_start.png"


FRONTEND_ONLY = {"Note", "MarkdownNote"}  # UI nodes the server does not know


def choices(spec):
    """The choices of a combo input's definition (/object_info or INPUT_TYPES): a V1 node declares them as its type
    (a list), a V3 node as "COMBO" with "options"."""
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def assert_widgets_match(info, ui, label):
    """Each node of a UI graph is a node of this host whose frontend reads its widget values as the builder
    meant (one per widget, in the frontend's order, each one its widget can hold; scripts/build_workflows.py
    ui_widgets) and whose links end on the sockets of those names; UI-only nodes are skipped."""
    import build_workflows  # scripts/ (on the path above): the builder's own reading of a node definition
    problems = []
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in info, (label, node["type"], "not a node of this host")
        problems += build_workflows.widget_problems(info[node["type"]], node["type"], node["widgets_values"])
        sockets = [name for name, _ in build_workflows.ui_sockets(info[node["type"]])[0]]
        problems += [f"{node['type']} input {i} is {slot['name']}, this host's is {sockets[i:i + 1]}"
                     for i, slot in enumerate(node["inputs"]) if sockets[i:i + 1] != [slot["name"]]]
    assert not problems, (label, problems)