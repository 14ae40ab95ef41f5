#!/usr/bin/env python
"""Writes workflows/train_i2v.json (UI format) and workflows/api/train_i2v.json (API format) from the
VideoCrafterTrainI2V node's own INPUT_TYPES, so the widget order never drifts from the node.

    .venv/bin/python scripts/build_train_workflow.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_boot  # noqa: E402
from build_workflows import registry, to_ui, write_json  # noqa: E402

ROOT = comfy_boot.REPO
# the model the two-stage trainer takes (the registry's entry with train stages), by the name the model
# downloader writes into models/videocrafter; the graph's Note says how to get it
TRAINED = next(e for e in registry.MODELS if e.train_stages)
I2V_CKPT = TRAINED.release.file_name

# Values that differ from the node's defaults in the shipped graph
VALUES = {"ckpt_name": I2V_CKPT, "data": "videocrafter_train", "stage": "both", "output_name": "videocrafter_i2v_trained"}
INFO = ("Put training videos (with same-name .txt captions) in ComfyUI/input/videocrafter_train, or set 'data' to a "
        ".csv/.jsonl. Results go to models/checkpoints (a LoRA: models/loras); states and the loss log to "
        "output/videocrafter_training/<output_name>.")


def train_widgets(node_class, values=VALUES):
    """[(name, value)] of the node's widgets in UI order; the frontend adds a 'control after
    generate' value after an INT input named seed."""
    spec = node_class.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, (kind, options) in spec.get(section, {}).items():
            if isinstance(kind, list):
                value = values.get(name, options.get("default", kind[0] if kind else ""))
            else:
                value = values.get(name, options.get("default"))
            out.append((name, value))
            if name == "seed":
                out.append((None, "fixed"))
    return out


def build(pack, model_id, name, values, info=INFO):
    """workflows/<name>.json and workflows/api/<name>.json: the trainer node on registry model `model_id`'s
    released file with `values` over the node's defaults (e.g. {"adapter": "lora", "stage": "finetune"})."""
    entry = registry.entry(model_id)
    widgets = train_widgets(pack.NODE_CLASS_MAPPINGS["VideoCrafterTrainI2V"],
                            {**VALUES, "ckpt_name": entry.release.file_name, **values})
    nodes = {
        1: ("VideoCrafterTrainI2V", [value for _, value in widgets], {}, "VideoCrafter Train I2V (two-stage)", (60, 120)),
        2: ("SaveImage", ["videocrafter_training/loss_curve"], {"images": (1, 0)}, "Loss curve", (540, 120)),
    }
    api = {
        "1": {"class_type": "VideoCrafterTrainI2V", "_meta": {"title": nodes[1][3]},
              "inputs": {name: value for name, value in widgets if name is not None}},
        "2": {"class_type": "SaveImage", "_meta": {"title": nodes[2][3]},
              "inputs": {"filename_prefix": nodes[2][1][0], "images": ["1", 0]}},
    }
    ui = to_ui(nodes, name, comfy_boot.object_info(["VideoCrafterTrainI2V", "SaveImage"]), [entry])
    ui["extra"]["info"] = info
    write_json(os.path.join(ROOT, "workflows", f"{name}.json"), ui)
    write_json(os.path.join(ROOT, "workflows", "api", f"{name}.json"), api)
    print(f"wrote workflows/{name}.json and workflows/api/{name}.json")


def main():
    build(comfy_boot.boot(cpu=True), TRAINED.id, "train_i2v", {})


if __name__ == "__main__":
    main()
