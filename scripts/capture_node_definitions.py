#!/usr/bin/env python3
"""Writes tests/fixtures/node_definitions.json, the fixture of tests/test_node_definitions_server.py: what saved
graphs of the pack depend on, captured once so later definitions can be checked against it.

- "hosts": per ComfyUI version, the pack's nodes (category VideoCrafter/...) exactly as a real server of that host
  serves them at /object_info, started as the tests start one (scripts/comfy_server.py: the tiny checkpoints, empty
  model folders otherwise). Run it once with each host's venv; each run replaces its own host's entry.
- "workflows": the graphs shipped at commit 26856e0 (before the nodes moved to the V3 API): every API graph of
  workflows/api/ as it was, and of every UI graph in example_workflows/ what loading it depends on (each node's
  type, widget values and input slot names), read from git so a later regeneration of the graphs does not move it.

    .venv/bin/python scripts/capture_node_definitions.py
    .venv-0.33/bin/python scripts/capture_node_definitions.py
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_server import REPO, ComfyServer, comfyui_path  # noqa: E402

FIXTURE = os.path.join(REPO, "tests", "fixtures", "node_definitions.json")
WORKFLOWS_COMMIT = "26856e0"  # the last commit with the V1 nodes' graphs
CATEGORY_ROOT = "VideoCrafter"


def host_version(path=None):
    """The __version__ of the ComfyUI at `path` (the running venv's host by default)."""
    scope = {}
    with open(os.path.join(path or comfyui_path(), "comfyui_version.py")) as f:
        exec(f.read(), scope)
    return scope["__version__"]


def pack_definitions():
    """{node id: /object_info entry} of the pack's nodes, from a real server of this venv's host."""
    with tempfile.TemporaryDirectory() as root:
        with ComfyServer(root) as server:
            info = server.object_info()
    return {name: entry for name, entry in info.items() if entry["category"].startswith(CATEGORY_ROOT)}


def git(*args):
    return subprocess.run(["git", "-C", REPO, *args], check=True, capture_output=True, text=True).stdout


def shipped_workflows(commit=WORKFLOWS_COMMIT):
    """{"api": {name: API graph}, "ui": {title: [{type, widgets_values, inputs: [{name}]}]}} as of `commit`."""
    out = {"api": {}, "ui": {}}
    for folder, kind in (("workflows/api", "api"), ("example_workflows", "ui")):
        for path in git("ls-tree", "--name-only", f"{commit}:{folder}").splitlines():
            if not path.endswith(".json"):
                continue
            graph = json.loads(git("show", f"{commit}:{folder}/{path}"))
            name = path[:-len(".json")]
            if kind == "api":
                out["api"][name] = graph
            else:
                out["ui"][name] = [{"type": node["type"], "widgets_values": node.get("widgets_values", []),
                                    "inputs": [{"name": slot["name"]} for slot in node.get("inputs", [])]}
                                   for node in graph["nodes"]]
    return out


def main():
    fixture = {"hosts": {}}
    if os.path.exists(FIXTURE):
        with open(FIXTURE) as f:
            fixture = json.load(f)
    version = host_version()
    fixture["hosts"][version] = pack_definitions()
    fixture["workflows"] = shipped_workflows()
    fixture["workflows_commit"] = WORKFLOWS_COMMIT
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    sys.path.insert(0, REPO)
    from vc_models.atomic_file import atomic_write  # noqa: E402  (no ComfyUI import: the plain writer)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            json.dump(fixture, f, indent=1, sort_keys=True)
            f.write("\n")
    atomic_write(FIXTURE, write)
    print(f"{FIXTURE}: {len(fixture['hosts'][version])} nodes of ComfyUI {version}; "
          f"{len(fixture['workflows']['api'])} API and {len(fixture['workflows']['ui'])} UI graphs of {WORKFLOWS_COMMIT}")


if __name__ == "__main__":
    main()
