#!/usr/bin/env python
"""Writes the training graphs of the registry entries with a `train_workflow` (example_workflows/<title>.json in UI
format, workflows/api/<name>.json in API format) from the trainer node's own INPUT_TYPES, so the widget order never drifts
from the node: train_i2v (VideoCrafter1 I2V, the two-stage node), train_dc_512 (DynamiCrafter 512, VideoCrafter Train).

    .venv/bin/python scripts/build_train_workflow.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_boot  # noqa: E402
from build_workflows import api_path, registry, to_ui, ui_path, write_json  # noqa: E402

ROOT = comfy_boot.REPO
INFO = ("Put training videos (with same-name .txt captions) in ComfyUI/input/videocrafter_train, or set 'data' to a "
        ".csv/.jsonl. Results go to models/checkpoints; states and the loss log to "
        "output/videocrafter_training/<output_name>.")


def graph_values(entry):
    """(node type, title, widget values that differ from the node's defaults) of the entry's training graph: the
    model by the name the downloader writes into models/videocrafter (the graph's Note says how to get it), its
    stages (VideoCrafter1 I2V: both), DynamiCrafter's random conditioning frame (the original's rand_cond_frame)."""
    values = {"ckpt_name": entry.release.file_name, "data": "videocrafter_train",
              "output_name": f"{entry.release.file_name.rsplit('.', 1)[0]}_trained"}
    stages = entry.family.stages()
    if "projector" in stages:  # the two-stage family: its own node, both stages
        return "VideoCrafterTrainI2V", "VideoCrafter Train I2V (two-stage)", {
            **values, "stage": "both", "output_name": "videocrafter_i2v_trained"}
    values.update(stage=stages[0], height=entry.defaults.height, width=entry.defaults.width,
                  cond_frame=entry.family.train_cond_frame)
    return "VideoCrafterTrain", "VideoCrafter Train", values


def train_widgets(node_class, values):
    """[(name, value)] of the node's widgets in UI order; the frontend adds a 'control after
    generate' value after an INT input named seed."""
    spec = node_class.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, (kind, options) in spec.get(section, {}).items():
            if isinstance(kind, list) or kind == "COMBO":  # a choice: declared the V1 way (a list) or the V3 way
                choices = kind if isinstance(kind, list) else options.get("options", [])
                value = values.get(name, options.get("default", choices[0] if choices else ""))
            else:
                value = values.get(name, options.get("default"))
            out.append((name, value))
            if name == "seed":
                out.append((None, "fixed"))
    return out


def build(pack, entry, name=None, values=None):
    """(UI graph, API graph) of the trainer node on the entry's released file: its training graph, or with
    `values` over them (e.g. {"adapter": "lora"}) another graph `name` of the same node."""
    node_type, title, base = graph_values(entry)
    widgets = train_widgets(pack.vc_nodes.NODE_CLASSES[node_type], {**base, **(values or {})})
    nodes = {
        1: (node_type, [value for _, value in widgets], {}, title, (60, 120)),
        2: ("SaveImage", ["videocrafter_training/loss_curve"], {"images": (1, 0)}, "Loss curve", (540, 120)),
    }
    api = {
        "1": {"class_type": node_type, "_meta": {"title": title},
              "inputs": {name: value for name, value in widgets if name is not None}},
        "2": {"class_type": "SaveImage", "_meta": {"title": nodes[2][3]},
              "inputs": {"filename_prefix": nodes[2][1][0], "images": ["1", 0]}},
    }
    ui = to_ui(nodes, name or entry.train_workflow, comfy_boot.object_info([node_type, "SaveImage"]), [entry],
               extra_note=f"Training data: {INFO}")
    return ui, api


# graphs beyond each model's own training graph: (file name, model id, widget values over the model's graph)
MORE_GRAPHS = (("train_lora_vc2", "vc2_t2v_512", {"adapter": "lora", "finetune_lr": 1e-4, "output_name": "videocrafter2_lora"}),)


def training_graphs():
    """[(workflow name, registry entry, widget values over the entry's graph or None)] of every training graph."""
    graphs = [(e.train_workflow, e, None) for e in registry.MODELS if e.train_workflow]
    return graphs + [(name, registry.entry(model_id), values) for name, model_id, values in MORE_GRAPHS]


def main():
    pack = comfy_boot.boot(cpu=True)
    for name, entry, values in training_graphs():
        ui, api = build(pack, entry, name, values)
        write_json(ui_path(name), ui)
        write_json(api_path(name), api)
        print(f"wrote {os.path.relpath(ui_path(name), ROOT)} and {os.path.relpath(api_path(name), ROOT)}")


if __name__ == "__main__":
    main()
