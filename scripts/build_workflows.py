#!/usr/bin/env python3
"""Writes workflows/*.json (ComfyUI UI format) and their API-format twins in workflows/api/ from one
description per graph, so the two never drift apart. Run after changing a graph: python scripts/build_workflows.py
"""
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# node type -> (input sockets (name, type) in order, outputs (name, type), widget input names in order)
NODE_TYPES = {
    "VideoCrafterCheckpointLoader": ([], [("model", "MODEL"), ("clip", "CLIP"), ("vae", "VAE"),
                                          ("clip_vision", "CLIP_VISION"), ("projector", "VIDEOCRAFTER_PROJECTOR")],
                                     ["ckpt_name", "weight_dtype", "projector_file"]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")], ["text"]),
    "VideoCrafterFPSConditioning": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                                    [("positive", "CONDITIONING"), ("negative", "CONDITIONING")], ["fps"]),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")], ["image"]),
    "VideoCrafterImageEncode": ([("clip_vision", "CLIP_VISION"), ("projector", "VIDEOCRAFTER_PROJECTOR"),
                                 ("image", "IMAGE"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                                [("positive", "CONDITIONING"), ("negative", "CONDITIONING")], []),
    "EmptyVideoCrafterLatent": ([], [("LATENT", "LATENT")], ["width", "height", "frames", "batch_size"]),
    "VideoCrafterKSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                              ("latent_image", "LATENT")], [("LATENT", "LATENT")],
                             ["seed", "steps", "cfg", "sampler_name", "scheduler", "eta", "denoise"]),
    "VideoCrafterVAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], ["frames_per_batch"]),
    "CreateVideo": ([("images", "IMAGE")], [("VIDEO", "VIDEO")], ["fps"]),
    "VideoCrafterFreeNoise": ([("model", "MODEL")], [("MODEL", "MODEL")], ["window_size", "window_stride", "reschedule_noise"]),
    "SaveVideo": ([("video", "VIDEO")], [], ["filename_prefix", "format", "codec"]),
}

MODELS = {
    "vc2_t2v_512": ("videocrafter2_t2v_512.ckpt", "https://huggingface.co/VideoCrafter/VideoCrafter2/resolve/main/model.ckpt"),
    "vc1_t2v_1024": ("videocrafter1_t2v_1024.ckpt", "https://huggingface.co/VideoCrafter/Text2Video-1024/resolve/main/model.ckpt"),
    "vc1_i2v_512": ("videocrafter1_i2v_512.ckpt", "https://huggingface.co/VideoCrafter/Image2Video-512/resolve/main/model.ckpt"),
}


def graph(variant, prompt, width, height, fps, image=None):
    """Nodes as {id: (type, widgets, {input: (source id, output index)}, title, pos)} for one variant."""
    ckpt, _ = MODELS[variant]
    sampler_in = {"model": (1, 0), "positive": (4, 0), "negative": (4, 1), "latent_image": (5, 0)}
    nodes = {
        1: ("VideoCrafterCheckpointLoader", [ckpt, "default", "none"], {}, "Load VideoCrafter Checkpoint", (40, 200)),
        2: ("CLIPTextEncode", [prompt], {"clip": (1, 1)}, "Prompt", (420, 80)),
        3: ("CLIPTextEncode", [""], {"clip": (1, 1)}, "Negative prompt (empty, as the original)", (420, 330)),
        4: ("VideoCrafterFPSConditioning", [fps], {"positive": (2, 0), "negative": (3, 0)}, "FPS condition", (840, 200)),
        5: ("EmptyVideoCrafterLatent", [width, height, 16, 1], {}, "Video size", (840, 420)),
        6: ("VideoCrafterKSampler", [123, "fixed", 50, 12.0, "videocrafter_ddim", "videocrafter_uniform", 1.0, 1.0],
            sampler_in, "VideoCrafter KSampler", (1480, 200)),
        7: ("VideoCrafterVAEDecode", [8], {"samples": (6, 0), "vae": (1, 2)}, "Decode frames", (1860, 200)),
        8: ("CreateVideo", [8.0], {"images": (7, 0)}, "Create Video", (2160, 200)),
        9: ("SaveVideo", [f"videocrafter/{variant}", "auto", "auto"], {"video": (8, 0)}, "Save Video", (2440, 200)),
    }
    if image:
        nodes[10] = ("LoadImage", [image, "image"], {}, "Start image", (840, 600))
        nodes[11] = ("VideoCrafterImageEncode", [], {"clip_vision": (1, 3), "projector": (1, 4), "image": (10, 0),
                                                     "positive": (4, 0), "negative": (4, 1)}, "Image conditioning", (1160, 200))
        sampler_in.update(positive=(11, 0), negative=(11, 1))
    return nodes


def widget_values_for_api(node_type, widgets):
    names = NODE_TYPES[node_type][2]
    values = list(widgets)
    if node_type == "VideoCrafterKSampler":
        values.pop(1)  # the frontend's "control after generate" value is not an input
    if node_type == "LoadImage":
        values = values[:1]
    return dict(zip(names, values))


def to_api(nodes):
    api = {}
    for nid, (ntype, widgets, links, title, _pos) in nodes.items():
        inputs = widget_values_for_api(ntype, widgets)
        inputs.update({name: [str(src), slot] for name, (src, slot) in links.items()})
        api[str(nid)] = {"class_type": ntype, "inputs": inputs, "_meta": {"title": title}}
    return api


def to_ui(nodes, variant):
    ckpt, url = MODELS[variant]
    links, ui_nodes = [], []
    out_links = {}
    link_id = 0
    for nid, (ntype, widgets, ins, title, pos) in nodes.items():
        for name, (src, slot) in ins.items():
            link_id += 1
            in_types = dict(NODE_TYPES[ntype][0])
            links.append([link_id, src, slot, nid, list(NODE_TYPES[ntype][0]).index((name, in_types[name])), in_types[name]])
            out_links.setdefault((src, slot), []).append(link_id)
    link_of = {(l[3], l[4]): l[0] for l in links}
    for order, (nid, (ntype, widgets, ins, title, pos)) in enumerate(nodes.items()):
        in_sockets, outs, _ = NODE_TYPES[ntype]
        node = {
            "id": nid, "type": ntype, "pos": list(pos), "size": [340, 130], "flags": {}, "order": order, "mode": 0,
            "title": title,
            "inputs": [{"name": n, "type": t, "link": link_of.get((nid, i))} for i, (n, t) in enumerate(in_sockets)],
            "outputs": [{"name": n, "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
                        for i, (n, t) in enumerate(outs)],
            "properties": {"Node name for S&R": ntype},
            "widgets_values": list(widgets),
        }
        if ntype == "VideoCrafterCheckpointLoader":
            node["properties"]["models"] = [{"name": ckpt, "url": url, "directory": "checkpoints"}]
        ui_nodes.append(node)
    return {"last_node_id": max(nodes), "last_link_id": link_id, "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def freenoise_graph(variant, prompt, width, height, frames=64):
    """The text-to-video graph with FreeNoise between the loader and the sampler, at FreeNoise's
    defaults (window 16, stride 4, fps 16, DDIM eta 0, cfg 12)."""
    nodes = graph(variant, prompt, width, height, 16)
    ntype, widgets, links, title, pos = nodes[5]
    nodes[5] = (ntype, [width, height, frames, 1], links, f"Video size ({frames} frames = 16 + k x 4)", pos)
    ntype, widgets, links, title, pos = nodes[6]
    nodes[6] = (ntype, [123, "fixed", 50, 12.0, "videocrafter_ddim", "videocrafter_uniform", 0.0, 1.0],
                {**links, "model": (12, 0)}, title, pos)
    ntype, widgets, links, title, pos = nodes[8]
    nodes[8] = (ntype, [16.0], links, title, pos)
    ntype, widgets, links, title, pos = nodes[9]
    nodes[9] = (ntype, [f"videocrafter/{variant}_freenoise"] + widgets[1:], links, title, pos)
    nodes[12] = ("VideoCrafterFreeNoise", [16, 4, True], {"model": (1, 0)}, "FreeNoise (long video)", (840, 40))
    return nodes


# the FreeNoise workflow loads the same released checkpoint as its base graph
MODELS["vc2_t2v_512_freenoise_64"] = MODELS["vc2_t2v_512"]

WORKFLOWS = {
    "vc2_t2v_512": graph("vc2_t2v_512", "a corgi running on the beach at sunset, high quality", 512, 320, 28),
    "vc1_t2v_1024": graph("vc1_t2v_1024", "an astronaut riding a horse on the moon, 4k, detailed", 1024, 576, 28),
    "vc1_i2v_512": graph("vc1_i2v_512", "a boat sailing on the sea, waves moving", 512, 320, 8, image="example.png"),
    "vc2_t2v_512_freenoise_64": freenoise_graph("vc2_t2v_512", "a corgi running on the beach at sunset, high quality",
                                                512, 320),
}


def write_json(path, data):
    """Temp file then rename, so an interrupted run never leaves a half-written workflow."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main():
    for name, nodes in WORKFLOWS.items():
        write_json(os.path.join(ROOT, "workflows", f"{name}.json"), to_ui(nodes, name))
        write_json(os.path.join(ROOT, "workflows", "api", f"{name}.json"), to_api(nodes))
        print("wrote", name)


if __name__ == "__main__":
    main()
