#!/usr/bin/env python3
"""Writes workflows/*.json (ComfyUI UI format) and their API-format twins in workflows/api/ from one
description per graph, so the two never drift apart. Run after changing a graph: python scripts/build_workflows.py
"""
import json
import os
import sys
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the pack's `vc_models` package (no ComfyUI, no torch imported)
from vc_models import registry  # noqa: E402

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
    "VideoCrafterTurboUNetLoader": ([("model", "MODEL")], [("model", "MODEL")], ["unet_name", "weight_dtype"]),
    "VideoCrafterTurboConditioning": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                                      [("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                                      ["guidance_scale", "motion_guidance", "motion_gs", "percentage"]),
    "CreateVideo": ([("images", "IMAGE")], [("VIDEO", "VIDEO")], ["fps"]),
    "DynamiCrafterConditioning": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
                                   ("clip_vision", "CLIP_VISION"), ("projector", "VIDEOCRAFTER_PROJECTOR"),
                                   ("start_image", "IMAGE"), ("end_image", "IMAGE")],
                                  [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT")],
                                  ["mode", "width", "height", "length", "batch_size", "fs"]),
    "VideoCrafterGuidanceRescale": ([("model", "MODEL")], [("MODEL", "MODEL")], ["multiplier"]),
    "ImageFromBatch": ([("image", "IMAGE")], [("IMAGE", "IMAGE")], ["batch_index", "length"]),
    "VideoCrafterFreeNoise": ([("model", "MODEL")], [("MODEL", "MODEL")], ["window_size", "window_stride", "reschedule_noise"]),
    "SaveVideo": ([("video", "VIDEO")], [], ["filename_prefix", "format", "codec"]),
}

# Model files: the names `scripts/download_models.py` / the VideoCrafter Model Downloader node write into
# models/videocrafter, and the released files they come from, are the registry's (vc_models/registry.py); so are
# the workflows each model ships with and the original's settings they use.
# No `properties.models` entry: ComfyUI's Missing Models dialog downloads only .safetensors/.sft files and the
# releases are .ckpt pickles (naming the pickle URL with a .safetensors name would store a pickle under that
# name). Each UI graph carries a Note saying how to get the file instead.


def shipped_workflows():
    """{workflow name: (registry entry, registry.Workflow)} of every model's shipped graphs."""
    return {w.name: (entry, w) for entry in registry.MODELS for w in entry.workflows}


def downloads(entry):
    """The registry entries whose files a workflow of `entry` loads: its base model's first (T2V-Turbo)."""
    return [registry.entry(entry.base_model), entry] if entry.base_model else [entry]


def model_note(variant, node_id, pos):
    """A UI-only Note node telling how to get the model files (the Missing Models dialog cannot)."""
    entries = downloads(shipped_workflows()[variant][0])
    ids = [e.id for e in entries]
    names = ", ".join(e.release.file_name for e in entries)
    urls = "\n".join(e.release.url for e in entries)
    text = (f"Models: {names} in ComfyUI/models/videocrafter/.\n\n"
            f"Get them once with the node 'VideoCrafter Model Downloader' (model {' and '.join(ids)}), then press R, "
            f"or on a server: python custom_nodes/ComfyUI-VideoCrafter/scripts/download_models.py {' '.join(ids)}\n"
            f"They are downloaded from\n{urls}\nand converted to fp16 .safetensors.")
    return {"id": node_id, "type": "Note", "pos": list(pos), "size": [420, 160], "flags": {}, "order": node_id,
            "mode": 0, "title": "Model files", "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [text], "color": "#432", "bgcolor": "#653"}


def graph(variant, ckpt, prompt, d, image=None):
    """Nodes as {id: (type, widgets, {input: (source id, output index)}, title, pos)} for one workflow at the
    sampling defaults `d` (a registry.SamplingDefaults)."""
    width, height, fps = d.width, d.height, d.fps
    sampler_in = {"model": (1, 0), "positive": (4, 0), "negative": (4, 1), "latent_image": (5, 0)}
    nodes = {
        1: ("VideoCrafterCheckpointLoader", [ckpt, "default", "none"], {}, "Load VideoCrafter Checkpoint", (40, 200)),
        2: ("CLIPTextEncode", [prompt], {"clip": (1, 1)}, "Prompt", (420, 80)),
        3: ("CLIPTextEncode", [""], {"clip": (1, 1)}, "Negative prompt (empty, as the original)", (420, 330)),
        4: ("VideoCrafterFPSConditioning", [fps], {"positive": (2, 0), "negative": (3, 0)}, "FPS condition", (840, 200)),
        5: ("EmptyVideoCrafterLatent", [width, height, d.frames, 1], {}, "Video size", (840, 420)),
        6: ("VideoCrafterKSampler", [123, "fixed", d.steps, d.cfg, d.sampler, d.scheduler, d.eta, 1.0],
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


def turbo_graph(variant, base_ckpt, unet_name, prompt, d):
    """VideoCrafter2 + T2V-Turbo-v2 (MG): the turbo UNet on the VideoCrafter2 MODEL, guidance in the
    conditioning, LCM with the original's timesteps, cfg 1 (one UNet pass per step)."""
    fps = d.fps
    nodes = graph(variant, base_ckpt, prompt, d)
    nodes[6] = ("VideoCrafterKSampler", [123, "fixed", d.steps, d.cfg, d.sampler, d.scheduler, d.eta, 1.0],
                {"model": (12, 0), "positive": (13, 0), "negative": (13, 1), "latent_image": (5, 0)},
                "VideoCrafter KSampler (LCM, cfg 1)", (1480, 200))
    nodes[3] = nodes[3][:3] + ("Negative prompt (unused at cfg 1)",) + nodes[3][4:]
    nodes[8] = ("CreateVideo", [float(fps)], {"images": (7, 0)}, "Create Video", (2160, 200))
    nodes[12] = ("VideoCrafterTurboUNetLoader", [unet_name, "default"], {"model": (1, 0)},
                 "T2V-Turbo-v2 UNet", (420, 560))
    nodes[13] = ("VideoCrafterTurboConditioning", [7.5, True, 0.05, 0.5], {"positive": (4, 0), "negative": (4, 1)},
                 "Turbo guidance (MG)", (1160, 200))
    return nodes


def dynamicrafter_graph(variant, ckpt, prompt, d, mode="i2v"):
    """A DynamiCrafter graph at the original's official settings `d` (50 DDIM steps, eta 1, cfg 7.5; guidance
    rescale 0.7 and trailing spacing for 512/1024); 'interpolate' adds an end image, 'loop' drops the
    repeated last frame before saving."""
    width, height, fs, rescale = d.width, d.height, d.fps, d.guidance_rescale
    model = (1, 0)
    conditioning_in = {"positive": (2, 0), "negative": (3, 0), "vae": (1, 2), "clip_vision": (1, 3),
                       "projector": (1, 4), "start_image": (10, 0)}
    nodes = {
        1: ("VideoCrafterCheckpointLoader", [ckpt, "default", "none"], {}, "Load DynamiCrafter Checkpoint", (40, 200)),
        2: ("CLIPTextEncode", [prompt], {"clip": (1, 1)}, "Prompt", (420, 80)),
        3: ("CLIPTextEncode", [""], {"clip": (1, 1)}, "Negative prompt (empty, as the original)", (420, 330)),
        10: ("LoadImage", ["example.png", "image"], {}, "Start image", (420, 560)),
        11: ("DynamiCrafterConditioning", [mode, width, height, d.frames, 1, fs], conditioning_in,
             "DynamiCrafter Conditioning", (840, 200)),
    }
    if mode == "interpolate":
        nodes[12] = ("LoadImage", ["example.png", "image"], {}, "End image", (420, 900))
        conditioning_in["end_image"] = (12, 0)
    if rescale:
        nodes[13] = ("VideoCrafterGuidanceRescale", [rescale], {"model": (1, 0)}, "Guidance rescale (original: 0.7)", (840, 20))
        model = (13, 0)
    nodes[6] = ("VideoCrafterKSampler", [123, "fixed", d.steps, d.cfg, d.sampler, d.scheduler, d.eta, 1.0],
                {"model": model, "positive": (11, 0), "negative": (11, 1), "latent_image": (11, 2)},
                "VideoCrafter KSampler", (1240, 200))
    nodes[7] = ("VideoCrafterVAEDecode", [8], {"samples": (6, 0), "vae": (1, 2)}, "Decode frames", (1620, 200))
    frames = (7, 0)
    if mode == "loop":
        nodes[14] = ("ImageFromBatch", [0, 15], {"image": (7, 0)}, "Drop the repeated last frame", (1900, 420))
        frames = (14, 0)
    nodes[8] = ("CreateVideo", [8.0], {"images": frames}, "Create Video", (2160, 200))
    nodes[9] = ("SaveVideo", [f"videocrafter/{variant}", "auto", "auto"], {"video": (8, 0)}, "Save Video", (2440, 200))
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
        ui_nodes.append(node)
    if variant in shipped_workflows() and any(n[0] == "VideoCrafterCheckpointLoader" for n in nodes.values()):
        ui_nodes.append(model_note(variant, max(nodes) + 1, (40, 20)))
    return {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": link_id, "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def freenoise_graph(variant, ckpt, prompt, d, frames=64):
    """The text-to-video graph with FreeNoise between the loader and the sampler, at FreeNoise's
    defaults (window 16, stride 4, fps 16, DDIM eta 0, cfg 12)."""
    width, height = d.width, d.height
    nodes = graph(variant, ckpt, prompt, replace(d, fps=16))
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


def dynamicrafter_freenoise_graph(variant, ckpt, prompt, d, frames=64):
    """DynamiCrafter 512 image animation over `frames` frames: FreeNoise (window 16, stride 4) after the
    guidance rescale; the image latent stays per frame and, past 16 frames, every frame sees all 256 image
    tokens, as the original."""
    nodes = dynamicrafter_graph(variant, ckpt, prompt, d)
    ntype, widgets, links, title, pos = nodes[11]
    nodes[11] = (ntype, ["i2v", d.width, d.height, frames, 1, d.fps], links, f"DynamiCrafter Conditioning ({frames} frames)",
                 pos)
    nodes[15] = ("VideoCrafterFreeNoise", [16, 4, True], {"model": nodes[6][2]["model"]}, "FreeNoise (long video)", (1240, 20))
    ntype, widgets, links, title, pos = nodes[6]
    nodes[6] = (ntype, widgets, {**links, "model": (15, 0)}, title, pos)
    ntype, widgets, links, title, pos = nodes[9]
    nodes[9] = (ntype, [f"videocrafter/{variant}_freenoise"] + widgets[1:], links, title, pos)
    return nodes


def workflow_graph(entry, workflow):
    """The nodes of one shipped workflow of a registry entry: its family's graph, or a variation of it."""
    d, ckpt, name = entry.defaults, entry.release.file_name, workflow.name
    if workflow.variation == "freenoise":
        build = dynamicrafter_freenoise_graph if entry.family == registry.DYNAMICRAFTER else freenoise_graph
        return build(entry.id, ckpt, workflow.prompt, d)
    if entry.family == registry.TURBO:
        return turbo_graph(name, registry.entry(entry.base_model).release.file_name, ckpt, workflow.prompt, d)
    if entry.family == registry.DYNAMICRAFTER:
        mode = workflow.variation or ("interpolate" if entry.image_inputs == registry.START_END_IMAGES else "i2v")
        return dynamicrafter_graph(name, ckpt, workflow.prompt, d, mode=mode)
    return graph(name, ckpt, workflow.prompt, d, image="example.png" if entry.image_inputs else None)


def write_json(path, data):
    """Temp file then rename, so an interrupted run never leaves a half-written workflow."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main(folder=os.path.join(ROOT, "workflows")):
    for name, (entry, workflow) in shipped_workflows().items():
        nodes = workflow_graph(entry, workflow)
        write_json(os.path.join(folder, f"{name}.json"), to_ui(nodes, name))
        write_json(os.path.join(folder, "api", f"{name}.json"), to_api(nodes))
        print("wrote", name)


if __name__ == "__main__":
    main()
