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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_boot  # noqa: E402  (paths only until main() boots the host)

# node type -> its widget values' input names in the order a graph description lists them (the API format's
# names; the UI's sockets, outputs and widget order come from the host's node definitions, see ui_widgets)
NODE_TYPES = {
    "VideoCrafterCheckpointLoader": ["ckpt_name", "weight_dtype", "projector_file"],
    "CLIPTextEncode": ["text"],
    "VideoCrafterFPSConditioning": ["fps"],
    "LoadImage": ["image"],
    "VideoCrafterImageEncode": [],
    "EmptyVideoCrafterLatent": ["width", "height", "frames", "batch_size"],
    "VideoCrafterKSampler": ["seed", "steps", "cfg", "sampler_name", "scheduler", "eta", "denoise"],
    "VideoCrafterVAEDecode": ["frames_per_batch"],
    "VideoCrafterTurboUNetLoader": ["unet_name", "weight_dtype"],
    "VideoCrafterTurboConditioning": ["guidance_scale", "motion_guidance", "motion_gs", "percentage"],
    # 0.33 adds an optional bit_depth (left at its default, 8)
    "CreateVideo": ["fps"],
    "DynamiCrafterConditioning": ["mode", "width", "height", "length", "batch_size", "fs"],
    "VideoCrafterGuidanceRescale": ["multiplier"],
    "ImageFromBatch": ["batch_index", "length"],
    "VideoCrafterFreeNoise": ["window_size", "window_stride", "reschedule_noise"],
    # 0.3.75: format, codec; 0.33: the dynamic combo format with its nested format.codec (and a hidden
    # top-level codec it still accepts), so "auto", "auto" is read the same by both frontends and servers
    "SaveVideo": ["filename_prefix", "format", "codec"],
    "ImageBatch": [],
    "LoraLoaderModelOnly": ["lora_name", "strength_model"],
    "VideoCrafterKeyFrameSequence": ["loop", "width", "height", "length", "fs", "seed", "steps", "cfg", "sampler_name",
                                     "scheduler", "eta", "segments_per_batch"],
    "LoadVideo": ["file"],
    "GetVideoComponents": [],
    "VideoCrafterSketchHint": ["width", "height"],
    "ControlNetLoader": ["control_net_name"],
    "ControlNetApplyAdvanced": ["strength", "start_percent", "end_percent"],
}

# Model files: the names `scripts/download_models.py` / the VideoCrafter Model Downloader node write into
# models/videocrafter, and the released files they come from, are the registry's (vc_models/registry.py); so are
# the workflows each model ships with and the original's settings they use.
# ComfyUI's Missing Models dialog downloads only .safetensors/.sft files and the releases are .ckpt pickles
# (naming the pickle URL with a .safetensors name would store a pickle under that name), so a loader's
# `properties.models` entry names the folder (0.33's panel lists it instead of "Unknown") and, as its URL,
# the README's instructions (no download: not a model host); each UI graph also carries a Note saying how.


def shipped_workflows():
    """{workflow name: (registry entry, registry.Workflow)} of every model's shipped graphs."""
    return {w.name: (entry, w) for entry in registry.MODELS for w in entry.workflows}


def downloads(entry, workflow):
    """The registry entries whose files `workflow` of `entry` loads: its base model's first (T2V-Turbo), the
    model, its ControlNet (sketch guidance)."""
    models = [registry.entry(entry.base_model), entry] if entry.base_model else [entry]
    return models + [registry.controlnet_for(entry.id)] if workflow.variation == "sketch" else models


MODELS_GUIDE_URL = "https://github.com/comfyui-videocrafter/ComfyUI-VideoCrafter#getting-the-models"


def model_entries(widgets):
    """The `properties.models` entries of a node whose widget values name model files of the downloader."""
    folders = {e.release.file_name: e.release.folder for e in registry.downloads()}
    return [{"name": value, "url": MODELS_GUIDE_URL, "directory": folders[value]}
            for value in widgets if isinstance(value, str) and value in folders]


def model_note(entries, node_id):
    """A UI-only Note node telling how to get the model files of `entries` (the Missing Models dialog cannot)."""
    ids = [e.id for e in entries]
    folders = {}
    for e in entries:
        folders.setdefault(e.release.folder, []).append(e.release.file_name)
    names = "; ".join(f"{', '.join(files)} in ComfyUI/models/{folder}/" for folder, files in folders.items())
    urls = "\n".join(e.release.url for e in entries)
    text = (f"Models: {names}.\n\n"
            f"Get them once with the node 'VideoCrafter Model Downloader' (model {' and '.join(ids)}), then press R, "
            f"or on a server: python custom_nodes/ComfyUI-VideoCrafter/scripts/download_models.py {' '.join(ids)}\n"
            f"They are downloaded from\n{urls}\nand converted to fp16 .safetensors.")
    return {"id": node_id, "type": "Note", "pos": [0, 0], "size": list(NOTE_SIZE), "flags": {}, "order": node_id,
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


def keyframes_graph(variant, ckpt, prompt, d, images=4):
    """`images` key frames (LoadImage nodes batched with core Image Batch) through VideoCrafter Key-Frame Sequence
    at the original's settings `d` (50 DDIM steps, eta 1, cfg 7.5, trailing spacing, guidance rescale 0.7)."""
    nodes = {
        1: ("VideoCrafterCheckpointLoader", [ckpt, "default", "none"], {}, "Load checkpoint", (40, 200)),
        2: ("CLIPTextEncode", [prompt], {"clip": (1, 1)}, "Prompt", (420, 80)),
        3: ("CLIPTextEncode", [""], {"clip": (1, 1)}, "Negative prompt (empty, as the original)", (420, 330)),
        13: ("VideoCrafterGuidanceRescale", [d.guidance_rescale], {"model": (1, 0)}, "Guidance rescale (original: 0.7)",
             (840, 20)),
    }
    batch = None
    for i in range(images):
        nodes[20 + i] = ("LoadImage", ["example.png", "image"], {}, f"Key frame {i + 1}", (40, 560 + 330 * i))
        if batch is None:
            batch = (20 + i, 0)
        else:
            nodes[30 + i] = ("ImageBatch", [], {"image1": batch, "image2": (20 + i, 0)}, "Image Batch", (420, 560 + 330 * i))
            batch = (30 + i, 0)
    nodes[6] = ("VideoCrafterKeyFrameSequence",
                [False, d.width, d.height, d.frames, d.fps, 123, "fixed", d.steps, d.cfg, d.sampler, d.scheduler, d.eta, 4],
                {"model": (13, 0), "positive": (2, 0), "negative": (3, 0), "vae": (1, 2), "clip_vision": (1, 3),
                 "projector": (1, 4), "key_frames": batch}, "VideoCrafter Key-Frame Sequence", (1240, 200))
    nodes[8] = ("CreateVideo", [8.0], {"images": (6, 0)}, "Create Video", (2160, 200))
    nodes[9] = ("SaveVideo", [f"videocrafter/{variant}", "auto", "auto"], {"video": (8, 0)}, "Save Video", (2440, 200))
    return nodes


def sketch_graph(variant, ckpt, prompt, d, controlnet):
    """ToonCrafter interpolation guided by sketch frames: a video of sketches (one per frame) through VideoCrafter
    Sketch Hint into core Apply ControlNet with the sketch encoder `controlnet` (a registry.ControlNetEntry) at its
    original control scale, on the interpolation conditioning."""
    nodes = dynamicrafter_graph(variant, ckpt, prompt, d, mode="interpolate")
    nodes[40] = ("LoadVideo", ["sketches.mp4"], {}, f"Sketch frames ({d.frames}, black lines on white)", (40, 1240))
    nodes[41] = ("GetVideoComponents", [], {"video": (40, 0)}, "Sketch frames", (420, 1240))
    nodes[42] = ("VideoCrafterSketchHint", [d.width, d.height], {"sketches": (41, 0)}, "VideoCrafter Sketch Hint",
                 (840, 1000))
    nodes[43] = ("ControlNetLoader", [controlnet.release.file_name], {}, "Sketch encoder (ControlNet)", (840, 1240))
    nodes[44] = ("ControlNetApplyAdvanced", [controlnet.strength, 0.0, 1.0],
                 {"positive": (11, 0), "negative": (11, 1), "control_net": (43, 0), "image": (42, 0)},
                 f"Apply ControlNet (sketch, control scale {controlnet.strength})", (1240, 620))
    sampler = nodes[6]
    nodes[6] = sampler[:2] + ({**sampler[2], "positive": (44, 0), "negative": (44, 1)},) + sampler[3:]
    return nodes


def widget_values_for_api(node_type, widgets):
    names = NODE_TYPES[node_type]
    values = list(widgets)
    if "seed" in names:
        values.pop(names.index("seed") + 1)  # the frontend's "control after generate" value is not an input
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


# ---- the UI graph: a node as the frontend builds it from the host's definition (/object_info) -------------
WIDGET_KINDS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3"}
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")  # the frontend's control_after_generate
NODE_WIDTH = 340
NOTE_SIZE = (NODE_WIDTH, 240)  # as wide as the first column: the links leaving it start right of the Note
TITLE_H, SLOT_H, WIDGET_H, MULTILINE_H = 30, 24, 28, 120  # at least what the frontends draw (LiteGraph sizes)
COL_GAP, ROW_GAP, MARGIN = 90, 50, 8


def _is_widget(spec):
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    return (isinstance(kind, list) or kind in WIDGET_KINDS) and not opts.get("forceInput")


def ui_widgets(info, values):
    """[(name, kind, options, optional)] of the widgets the frontend gives a node of definition `info` (its
    /object_info entry) holding widget values `values`, in the order it reads `widgets_values`: the seed's
    control_after_generate and LoadImage's upload button after their input, a dynamic combo's inputs (0.33's
    Save Video format.codec) after it for the option chosen."""
    widgets = []

    def walk(inputs, order, prefix):
        for section in ("required", "optional"):
            for name in order.get(section, []):
                spec = inputs[section][name]
                if not _is_widget(spec):
                    continue
                kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
                widgets.append((prefix + name, kind, opts, section == "optional"))
                if opts.get("control_after_generate"):
                    widgets.append((prefix + name + ".control", "CONTROL", {}, section == "optional"))
                if opts.get("image_upload"):
                    widgets.append(("upload", "UPLOAD", {}, True))
                if kind == "COMFY_DYNAMICCOMBO_V3":
                    at = len(widgets) - 1
                    key = values[at] if at < len(values) else opts["options"][0]["key"]
                    chosen = next((o["inputs"] for o in opts["options"] if o["key"] == key), {})
                    walk(chosen, {k: list(v) for k, v in chosen.items()}, prefix + name + ".")

    walk(info["input"], info["input_order"], "")
    return widgets


def _value_error(kind, opts, value):
    """Why `value` cannot be this widget's, or None."""
    if kind == "CONTROL":
        return None if value in CONTROL_VALUES else f"not one of {CONTROL_VALUES}"
    if kind == "UPLOAD":
        return None
    if isinstance(kind, list) or kind in ("COMBO", "COMFY_DYNAMICCOMBO_V3"):
        options = kind if isinstance(kind, list) else [o["key"] if isinstance(o, dict) else o for o in opts.get("options", [])]
        # a file name (checkpoint, image) need not be in this machine's folder
        if value in options or (isinstance(value, str) and os.path.splitext(value)[1]):
            return None
        return f"not one of {options}"
    expected = {"INT": int, "FLOAT": (int, float), "BOOLEAN": bool, "STRING": str}[kind]
    if not isinstance(value, expected) or (kind in ("INT", "FLOAT") and isinstance(value, bool)):
        return f"not a {kind}"
    if kind in ("INT", "FLOAT") and not opts.get("min", value) <= value <= opts.get("max", value):
        return f"outside [{opts.get('min')}, {opts.get('max')}]"
    return None


def widget_problems(info, node_type, values):
    """What keeps the frontend of this host from reading `values` as the node's widgets (none: an empty list):
    a value left over, a required widget without one, a value its widget cannot hold."""
    widgets = ui_widgets(info, values)
    problems = [f"{node_type}: {len(values)} widget values for {len(widgets)} widgets {[w[0] for w in widgets]}"] \
        if len(values) > len(widgets) else []
    problems += [f"{node_type}: no value for the required widget {name}"
                 for name, _, _, optional in widgets[len(values):] if not optional]
    for (name, kind, opts, _), value in zip(widgets, values):
        error = _value_error(kind, opts, value)
        if error:
            problems.append(f"{node_type}.{name} = {value!r}: {error}")
    return problems


def ui_sockets(info):
    """(inputs, outputs) as [(name, type)]: the inputs that are sockets, not widgets, in the definition's order."""
    inputs = [(name, info["input"][section][name][0]) for section in ("required", "optional")
              for name in info["input_order"].get(section, []) if not _is_widget(info["input"][section][name])]
    return inputs, list(zip(info["output_name"], info["output"]))


# rows a node of a newer supported host has beyond the build host's: 0.33's Get Video Components adds the
# bit_depth and color_space outputs
NEWER_HOST_ROWS = {"GetVideoComponents": 2}


def node_size(info, values, spare_rows=0):
    """[width, height] of the node body (the title bar is above `pos`), at least what the frontend draws, with
    `spare_rows` widget rows more."""
    inputs, outputs = ui_sockets(info)
    widgets = ui_widgets(info, values)
    rows = sum(MULTILINE_H if kind == "STRING" and opts.get("multiline") else WIDGET_H for _, kind, opts, _ in widgets)
    return [NODE_WIDTH, max(len(inputs), len(outputs)) * SLOT_H + rows + spare_rows * WIDGET_H + 2 * MARGIN]


def _rect(node):
    """(left, top, right, bottom) of a UI node with its title bar."""
    (x, y), (w, h) = node["pos"], node["size"]
    return (x, y - TITLE_H, x + w, y + h)


def _overlap(a, b, margin=0):
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


def _link_points(src, slot, dst, dslot, samples=24):
    """Points along a link as LiteGraph draws it: a spline from the output's right end to the input's left
    end with horizontal tangents a quarter of the distance long."""
    (x0, y0), (x1, y1) = ((src["pos"][0] + src["size"][0], src["pos"][1] + (slot + 0.5) * SLOT_H),
                          (dst["pos"][0], dst["pos"][1] + (dslot + 0.5) * SLOT_H))
    d = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 * 0.25
    c0, c1 = (x0 + d, y0), (x1 - d, y1)
    points = []
    for i in range(samples + 1):
        t = i / samples
        a, b, c, e = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
        points.append((a * x0 + b * c0[0] + c * c1[0] + e * x1, a * y0 + b * c0[1] + c * c1[1] + e * y1))
    return points


def layout_problems(ui):
    """Node rectangles that overlap (titles included) and links drawn under a third node: what hides a part of
    the graph from a user (none: an empty list)."""
    nodes = {n["id"]: n for n in ui["nodes"]}
    problems = [f"nodes {a['id']} ({a['title']}) and {b['id']} ({b['title']}) overlap"
                for i, a in enumerate(ui["nodes"]) for b in ui["nodes"][i + 1:] if _overlap(_rect(a), _rect(b))]
    for link_id, src, slot, dst, dslot, _type in ui["links"]:
        for other in ui["nodes"]:
            if other["id"] in (src, dst):
                continue
            left, top, right, bottom = _rect(other)
            if any(left < x < right and top < y < bottom for x, y in _link_points(nodes[src], slot, nodes[dst], dslot)):
                problems.append(f"link {link_id} ({nodes[src]['title']} -> {nodes[dst]['title']}) runs under "
                                f"node {other['id']} ({other['title']})")
    return problems


def layout(ui_nodes, links):
    """Places the nodes in columns by their distance from the graph's inputs (a node with no inputs right
    before its first consumer), each column in the description's top-to-bottom order, then moves a node down
    while a link passes under it; the Note goes above the first column, where no link runs."""
    graph_nodes = [n for n in ui_nodes if n["type"] != "Note"]
    sources = {n["id"]: [l[1] for l in links if l[3] == n["id"]] for n in graph_nodes}
    rank = {}

    def rank_of(nid):
        if nid not in rank:
            rank[nid] = 1 + max((rank_of(s) for s in sources[nid]), default=-1)
        return rank[nid]

    for n in graph_nodes:
        rank_of(n["id"])
    for n in graph_nodes:
        consumers = [rank[l[3]] for l in links if l[1] == n["id"]]
        if not sources[n["id"]] and consumers:
            rank[n["id"]] = min(consumers) - 1
    columns = {}
    for n in sorted(graph_nodes, key=lambda n: (n["pos"][1], n["pos"][0])):  # the description's hint of order
        columns.setdefault(rank[n["id"]], []).append(n)
    notes = [n for n in ui_nodes if n["type"] == "Note"]
    x = 40
    top = TITLE_H + 20
    for i, column in enumerate(sorted(columns)):
        y = top + sum(note["size"][1] + TITLE_H + ROW_GAP for note in notes) if i == 0 else top
        width = max([n["size"][0] for n in columns[column]] + ([note["size"][0] for note in notes] if i == 0 else []))
        if i == 0:
            for note in notes:
                note["pos"] = [x, top + sum(m["size"][1] + TITLE_H + ROW_GAP for m in notes[:notes.index(note)])]
        for n in columns[column]:
            n["pos"] = [x, y]
            y += n["size"][1] + TITLE_H + ROW_GAP
        x += width + COL_GAP
    by_id = {n["id"]: n for n in ui_nodes}
    for _ in range(200):
        moved = False
        for _id, src, slot, dst, dslot, _type in links:
            points = _link_points(by_id[src], slot, by_id[dst], dslot)
            for n in graph_nodes:
                if n["id"] in (src, dst):
                    continue
                left, top_, right, bottom = _rect(n)
                under = [y for x_, y in points if left - MARGIN < x_ < right + MARGIN and top_ - MARGIN < y < bottom + MARGIN]
                if under:
                    shift = max(under) - top_ + 2 * MARGIN
                    column = columns[rank[n["id"]]]
                    for m in column[column.index(n):]:  # the node and those below it in its column
                        m["pos"] = [m["pos"][0], m["pos"][1] + shift]
                    moved = True
        if not moved:
            return
    raise RuntimeError("layout: links still run under nodes after 200 passes")


def to_ui(nodes, variant, object_info, downloads=()):
    """The UI graph of a description on the host whose node definitions `object_info` holds: sockets and
    widgets as that host's frontend builds them (a widget value it cannot read is an error), laid out; with
    a Note naming how to get the models of the registry entries `downloads`."""
    links, ui_nodes = [], []
    out_links = {}
    sockets = {nid: ui_sockets(object_info[ntype]) for nid, (ntype, *_rest) in nodes.items()}
    for nid, (ntype, widgets, ins, title, pos) in nodes.items():
        names = [n for n, _ in sockets[nid][0]]
        for name, (src, slot) in ins.items():
            links.append([len(links) + 1, src, slot, nid, names.index(name), sockets[nid][0][names.index(name)][1]])
            out_links.setdefault((src, slot), []).append(len(links))
    link_of = {(l[3], l[4]): l[0] for l in links}
    for order, (nid, (ntype, widgets, ins, title, pos)) in enumerate(nodes.items()):
        problems = widget_problems(object_info[ntype], ntype, widgets)
        if problems:
            raise ValueError(f"workflow {variant}: " + "; ".join(problems))
        in_sockets, outs = sockets[nid]
        properties = {"Node name for S&R": ntype}
        if model_entries(widgets):
            properties["models"] = model_entries(widgets)
        ui_nodes.append({
            "id": nid, "type": ntype, "pos": list(pos), "flags": {},
            # room for one optional widget a newer host adds (0.33's Create Video bit_depth), or its extra outputs
            "size": node_size(object_info[ntype], widgets, spare_rows=NEWER_HOST_ROWS.get(ntype, 1)),
            "order": order, "mode": 0, "title": title,
            "inputs": [{"name": n, "type": t, "link": link_of.get((nid, i))} for i, (n, t) in enumerate(in_sockets)],
            "outputs": [{"name": n, "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
                        for i, (n, t) in enumerate(outs)],
            "properties": properties,
            "widgets_values": list(widgets),
        })
    if downloads:
        ui_nodes.append(model_note(downloads, max(nodes) + 1))
    layout(ui_nodes, links)
    return {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


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


def lora_name(entry):
    """The LoRA file a `lora` workflow of `entry` loads: what the trainer writes to models/loras for output_name
    <model id>_lora with adapter lora."""
    return f"{entry.id}_lora.safetensors"


def lora_graph(nodes, lora_file):
    """`nodes` with core Load LoRA (model only) between the model loader and everything that takes its MODEL."""
    lora_id = max(nodes) + 1
    takers = {nid: ins["model"] for nid, (_, _, ins, _, _) in nodes.items() if "model" in ins}
    sources = set(takers.values())
    if len(sources) != 1:
        raise ValueError(f"a LoRA graph needs one MODEL source, this graph has {sorted(sources)}")
    source = sources.pop()
    out = {}
    for nid, (ntype, widgets, ins, title, pos) in nodes.items():
        out[nid] = (ntype, widgets, {k: ((lora_id, 0) if k == "model" else v) for k, v in ins.items()}, title, pos)
    src_pos = nodes[source[0]][4]
    out[lora_id] = ("LoraLoaderModelOnly", [lora_file, 1.0], {"model": source},
                    "Load LoRA (model only): the trained LoRA", (src_pos[0], src_pos[1] + 420))
    return out


def workflow_graph(entry, workflow):
    """The nodes of one shipped workflow of a registry entry: its family's graph, or a variation of it."""
    d, ckpt, name = entry.defaults, entry.release.file_name, workflow.name
    if workflow.variation == "lora":
        return lora_graph(workflow_graph(entry, replace(workflow, variation="")), lora_name(entry))
    if workflow.variation == "freenoise":
        build = dynamicrafter_freenoise_graph if entry.family == registry.DYNAMICRAFTER else freenoise_graph
        return build(entry.id, ckpt, workflow.prompt, d)
    if workflow.variation == "keyframes":
        return keyframes_graph(name, ckpt, workflow.prompt, d)
    if workflow.variation == "sketch":
        return sketch_graph(name, ckpt, workflow.prompt, d, registry.controlnet_for(entry.id))
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


# the host whose node definitions the shipped UI graphs are built from (their widget values read the same on 0.33)
BUILD_HOST_VERSION = "0.3.75"


def main(folder=os.path.join(ROOT, "workflows")):
    workflows = {name: (entry, workflow, workflow_graph(entry, workflow))
                 for name, (entry, workflow) in shipped_workflows().items()}
    # the shipped UI graphs are built on the default host, 0.3.75 (its widget values read the same on 0.33)
    info = comfy_boot.object_info(sorted({node[0] for _, _, nodes in workflows.values() for node in nodes.values()}))
    for name, (entry, workflow, nodes) in workflows.items():
        write_json(os.path.join(folder, f"{name}.json"), to_ui(nodes, name, info, downloads(entry, workflow)))
        write_json(os.path.join(folder, "api", f"{name}.json"), to_api(nodes))
        print("wrote", name)


if __name__ == "__main__":
    main()
