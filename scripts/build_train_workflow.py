#!/usr/bin/env python
"""Writes workflows/train_i2v.json (UI format) and workflows/api/train_i2v.json (API format) from the
VideoCrafterTrainI2V node's own INPUT_TYPES, so the widget order never drifts from the node.

    .venv/bin/python scripts/build_train_workflow.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_boot  # noqa: E402
from build_workflows import write_json  # noqa: E402

ROOT = comfy_boot.REPO
I2V_CKPT = "videocrafter1_i2v_512.ckpt"
I2V_URL = "https://huggingface.co/VideoCrafter/Image2Video-512/resolve/main/model.ckpt"

# Values that differ from the node's defaults in the shipped graph
VALUES = {"ckpt_name": I2V_CKPT, "data": "videocrafter_train", "stage": "both", "output_name": "videocrafter_i2v_trained"}


def train_widgets(node_class):
    """[(name, value)] of the node's widgets in UI order; the frontend adds a 'control after
    generate' value after an INT input named seed."""
    spec = node_class.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, (kind, options) in spec.get(section, {}).items():
            if isinstance(kind, list):
                value = VALUES.get(name, options.get("default", kind[0] if kind else ""))
            else:
                value = VALUES.get(name, options.get("default"))
            out.append((name, value))
            if name == "seed":
                out.append((None, "fixed"))
    return out


def main():
    pack = comfy_boot.boot(cpu=True)
    widgets = train_widgets(pack.NODE_CLASS_MAPPINGS["VideoCrafterTrainI2V"])
    api = {
        "1": {"class_type": "VideoCrafterTrainI2V", "_meta": {"title": "VideoCrafter Train I2V (two-stage)"},
              "inputs": {name: value for name, value in widgets if name is not None}},
        "2": {"class_type": "SaveImage", "_meta": {"title": "Loss curve"},
              "inputs": {"filename_prefix": "videocrafter_training/loss_curve", "images": ["1", 0]}},
    }
    ui = {
        "last_node_id": 2, "last_link_id": 1,
        "nodes": [
            {"id": 1, "type": "VideoCrafterTrainI2V", "pos": [60, 120], "size": [420, 900], "flags": {}, "order": 0,
             "mode": 0, "title": "VideoCrafter Train I2V (two-stage)", "inputs": [],
             "outputs": [{"name": "loss_curve", "type": "IMAGE", "links": [1], "slot_index": 0},
                         {"name": "result_path", "type": "STRING", "links": [], "slot_index": 1}],
             "properties": {"Node name for S&R": "VideoCrafterTrainI2V",
                            "models": [{"name": I2V_CKPT, "url": I2V_URL, "directory": "checkpoints"}]},
             "widgets_values": [value for _, value in widgets]},
            {"id": 2, "type": "SaveImage", "pos": [540, 120], "size": [640, 420], "flags": {}, "order": 1, "mode": 0,
             "title": "Loss curve", "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": [],
             "properties": {"Node name for S&R": "SaveImage"},
             "widgets_values": ["videocrafter_training/loss_curve"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
        "groups": [], "config": {},
        "extra": {"info": "Put training videos (with same-name .txt captions) in ComfyUI/input/videocrafter_train, "
                          "or set 'data' to a .csv/.jsonl. Results go to models/checkpoints; states and the loss "
                          "log to output/videocrafter_training/<output_name>."},
        "version": 0.4,
    }
    write_json(os.path.join(ROOT, "workflows", "train_i2v.json"), ui)
    write_json(os.path.join(ROOT, "workflows", "api", "train_i2v.json"), api)
    print("wrote workflows/train_i2v.json and workflows/api/train_i2v.json")


if __name__ == "__main__":
    main()
