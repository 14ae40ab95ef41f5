#!/usr/bin/env python3
"""Writes the shipped graphs from one description each, so the two formats never drift apart: the UI format as the
pack's templates, example_workflows/<title>.json (laid out in titled groups at the sizes the frontends draw), and
the API format, workflows/api/<name>.json. Run after changing a graph: python scripts/build_workflows.py
"""
import json
import os
import sys
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(ROOT)  # the pack's `vc_models` package (no ComfyUI, no torch imported); appended: the repo also holds
# a `nodes` package, which must not shadow ComfyUI's `nodes` module in a process that imports both
from vc_models import registry  # noqa: E402
from vc_models.families import ANIMATE, MOTIONCTRL_COND_T  # noqa: E402
from vc_models.trajectory import EXAMPLE_POINTS  # noqa: E402

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
    "LoraLoaderModelOnly": ["lora_name", "strength_model"],
    "VideoCrafterKeyFrameSequence": ["loop", "width", "height", "length", "fs", "seed", "steps", "cfg", "sampler_name",
                                     "scheduler", "eta", "segments_per_batch"],
    "LoadVideo": ["file"],
    "GetVideoComponents": [],
    "VideoCrafterSketchHint": ["width", "height"],
    "ControlNetLoader": ["control_net_name"],
    "ControlNetApplyAdvanced": ["strength", "start_percent", "end_percent"],
    "MotionCtrlCameraPath": ["move", "second_move", "combine", "speed", "pose_file"],
    "MotionCtrlObjectTrajectory": ["points", "trajectory_file", "cond_t"],
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


def model_guide_url(file_name):
    """The README's instructions for one model file: the frontends list a missing model per URL (1.32.9 shows one
    entry for models sharing a link), so each file gets its own query on the same page."""
    base, anchor = MODELS_GUIDE_URL.split("#")
    return f"{base}?model={file_name}#{anchor}"


def model_entries(widgets):
    """The `properties.models` entries of a node whose widget values name model files of the downloader."""
    folders = {e.release.file_name: e.release.folder for e in registry.downloads()}
    return [{"name": value, "url": model_guide_url(value), "directory": folders[value]}
            for value in widgets if isinstance(value, str) and value in folders]


# the example inputs the pack writes into ComfyUI's input folder at start-up (the user picks their own instead)
EXAMPLE_START, EXAMPLE_END, EXAMPLE_SKETCH = "videocrafter_start.png", "videocrafter_end.png", "videocrafter_sketch.mp4"
EXAMPLE_CAMERA_POSES, EXAMPLE_TRAJECTORY = "motionctrl_camera_poses.json", "motionctrl_trajectory.txt"


def example_key_frame(index):
    return f"videocrafter_key_{index}.png"


NOTE_WIDTH, NOTE_CHARS, NOTE_LINE_H = 560, 70, 18  # two columns wide; the Note's text at the frontends' 14 px


def note_text(entries, inputs=(), extra=""):
    """What the user must provide for a graph: the model files of the registry entries `entries` (the Missing
    Models dialog cannot download the released pickles) and `inputs`, [(node title, example file)]."""
    ids = [e.id for e in entries]
    folders = {}
    for e in entries:
        folders.setdefault(e.release.folder, []).append(e.release.file_name)
    names = "; ".join(f"{', '.join(files)} in ComfyUI/models/{folder}/" for folder, files in folders.items())
    urls = "\n".join(e.release.url for e in entries)
    text = (f"Models: {names}.\n"
            f"Get them once with the node 'VideoCrafter Model Downloader' (model {' and '.join(ids)}), then press R, "
            f"or on a server: python custom_nodes/ComfyUI-VideoCrafter/scripts/download_models.py {' '.join(ids)}\n"
            f"They are downloaded from\n{urls}\nand converted to fp16 .safetensors.")
    if inputs:
        text += ("\n\nYour inputs: " + "; ".join(f"{title} ({example})" for title, example in inputs) +
                 ". The pack puts these examples in ComfyUI/input; pick your own in each node (choose file to upload).")
    return text + (f"\n\n{extra}" if extra else "")


def readme_note(text, node_id):
    """A UI-only Note node with `text`, tall enough to show all of it."""
    import textwrap
    lines = sum(len(textwrap.wrap(line, NOTE_CHARS)) or 1 for line in text.split("\n"))
    return {"id": node_id, "type": "Note", "pos": [0, 0], "size": [NOTE_WIDTH, lines * NOTE_LINE_H + 30], "flags": {},
            "order": node_id, "mode": 0, "title": "Read me: what this graph needs", "inputs": [], "outputs": [],
            "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"}


def graph(variant, ckpt, prompt, d, image=None):
    """Nodes as {id: (type, widgets, {input: (source id, output index)}, title, pos)} for one workflow at the
    sampling defaults `d` (a registry.SamplingDefaults)."""
    width, height, fps = d.width, d.height, d.fps
    sampler_in = {"model": (1, 0), "positive": (4, 0), "negative": (4, 1), "latent_image": (5, 0)}
    nodes = {
        1: ("VideoCrafterCheckpointLoader", [ckpt, "default", "none"], {}, "Load VideoCrafter model", (40, 200)),
        2: ("CLIPTextEncode", [prompt], {"clip": (1, 1)}, "Prompt", (420, 80)),
        3: ("CLIPTextEncode", [""], {"clip": (1, 1)}, "Negative prompt (empty)", (420, 330)),
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


def motionctrl_graph(variant, ckpt, prompt, d, family):
    """MotionCtrl at the original's settings: its prompt suffix and negative prompt, no fps condition, the camera
    path (from the example pose file where the model also takes an object trajectory, which then comes from the
    example trajectory file; a basic move otherwise) on the conditioning the sampler takes."""
    nodes = graph(variant, ckpt, f"{prompt}, {family.prompt_suffix}", d)
    del nodes[4]  # no fps condition
    nodes[3] = ("CLIPTextEncode", [family.negative_prompt], {"clip": (1, 1)}, "Negative prompt (the original's)",
                (420, 330))
    camera = ["static", "none", "both", 1.0, EXAMPLE_CAMERA_POSES] if family.trajectory_node \
        else ["pan left", "none", "both", 1.0, "none"]
    nodes[10] = ("MotionCtrlCameraPath", camera, {"positive": (2, 0), "negative": (3, 0), "latent": (5, 0)},
                 "Camera path", (840, 200))
    last = 10
    if family.trajectory_node:
        nodes[11] = ("MotionCtrlObjectTrajectory", [EXAMPLE_POINTS, EXAMPLE_TRAJECTORY, MOTIONCTRL_COND_T],
                     {"positive": (10, 0), "negative": (10, 1), "latent": (5, 0)}, "Object trajectory", (1160, 200))
        last = 11
    sampler, widgets, links, title, pos = nodes[6]
    nodes[6] = (sampler, widgets, {**links, "positive": (last, 0), "negative": (last, 1)}, title, pos)
    nodes[8] = ("CreateVideo", [float(d.fps)], {"images": (7, 0)}, "Create Video", (2160, 200))
    return nodes


def turbo_graph(variant, base_ckpt, unet_name, prompt, d):
    """VideoCrafter2 + T2V-Turbo-v2 (MG): the turbo UNet on the VideoCrafter2 MODEL, guidance in the
    conditioning, LCM with the original's timesteps, cfg 1 (one UNet pass per step)."""
    fps = d.fps
    nodes = graph(variant, base_ckpt, prompt, d)
    nodes[6] = ("VideoCrafterKSampler", [123, "fixed", d.steps, d.cfg, d.sampler, d.scheduler, d.eta, 1.0],
                {"model": (12, 0), "positive": (13, 0), "negative": (13, 1), "latent_image": (5, 0)},
                "KSampler (LCM, cfg 1)", (1480, 200))
    nodes[3] = nodes[3][:3] + ("Negative (unused at cfg 1)",) + nodes[3][4:]
    nodes[8] = ("CreateVideo", [float(fps)], {"images": (7, 0)}, "Create Video", (2160, 200))
    nodes[12] = ("VideoCrafterTurboUNetLoader", [unet_name, "default"], {"model": (1, 0)},
                 "T2V-Turbo-v2 UNet", (420, 560))
    nodes[13] = ("VideoCrafterTurboConditioning", [7.5, True, 0.05, 0.5], {"positive": (4, 0), "negative": (4, 1)},
                 "Turbo guidance (MG)", (1160, 200))
    return nodes


def dynamicrafter_graph(variant, ckpt, prompt, d, mode=ANIMATE):
    """A DynamiCrafter graph at the original's official settings `d` (50 DDIM steps, eta 1, cfg 7.5; guidance
    rescale 0.7 and trailing spacing for 512/1024); 'interpolate' adds an end image, 'loop' drops the
    repeated last frame before saving."""
    width, height, fs, rescale = d.width, d.height, d.fps, d.guidance_rescale
    model = (1, 0)
    conditioning_in = {"positive": (2, 0), "negative": (3, 0), "vae": (1, 2), "clip_vision": (1, 3),
                       "projector": (1, 4), "start_image": (10, 0)}
    nodes = {
        1: ("VideoCrafterCheckpointLoader", [ckpt, "default", "none"], {}, "Load DynamiCrafter model", (40, 200)),
        2: ("CLIPTextEncode", [prompt], {"clip": (1, 1)}, "Prompt", (420, 80)),
        3: ("CLIPTextEncode", [""], {"clip": (1, 1)}, "Negative prompt (empty)", (420, 330)),
        10: ("LoadImage", [EXAMPLE_START, "image"], {}, "Start image", (420, 560)),
        11: ("DynamiCrafterConditioning", [mode, width, height, d.frames, 1, fs], conditioning_in,
             "DynamiCrafter Conditioning", (840, 200)),
    }
    if mode == "interpolate":
        nodes[12] = ("LoadImage", [EXAMPLE_END, "image"], {}, "End image", (420, 900))
        conditioning_in["end_image"] = (12, 0)
    if rescale:
        nodes[13] = ("VideoCrafterGuidanceRescale", [rescale], {"model": (1, 0)}, "Guidance rescale 0.7", (840, 20))
        model = (13, 0)
    nodes[6] = ("VideoCrafterKSampler", [123, "fixed", d.steps, d.cfg, d.sampler, d.scheduler, d.eta, 1.0],
                {"model": model, "positive": (11, 0), "negative": (11, 1), "latent_image": (11, 2)},
                "VideoCrafter KSampler", (1240, 200))
    nodes[7] = ("VideoCrafterVAEDecode", [8], {"samples": (6, 0), "vae": (1, 2)}, "Decode frames", (1620, 200))
    frames = (7, 0)
    if mode == "loop":
        nodes[14] = ("ImageFromBatch", [0, 15], {"image": (7, 0)}, "Drop repeated last frame", (1900, 420))
        frames = (14, 0)
    nodes[8] = ("CreateVideo", [8.0], {"images": frames}, "Create Video", (2160, 200))
    nodes[9] = ("SaveVideo", [f"videocrafter/{variant}", "auto", "auto"], {"video": (8, 0)}, "Save Video", (2440, 200))
    return nodes


def keyframes_graph(variant, ckpt, prompt, d, images=4):
    """`images` key frames (a LoadImage each, on the key_frame_N inputs) through VideoCrafter Key-Frame Sequence
    at the original's settings `d` (50 DDIM steps, eta 1, cfg 7.5, trailing spacing, guidance rescale 0.7)."""
    nodes = {
        1: ("VideoCrafterCheckpointLoader", [ckpt, "default", "none"], {}, "Load checkpoint", (40, 200)),
        2: ("CLIPTextEncode", [prompt], {"clip": (1, 1)}, "Prompt", (420, 80)),
        3: ("CLIPTextEncode", [""], {"clip": (1, 1)}, "Negative prompt (empty)", (420, 330)),
        13: ("VideoCrafterGuidanceRescale", [d.guidance_rescale], {"model": (1, 0)}, "Guidance rescale 0.7",
             (840, 20)),
    }
    frames = {}
    for i in range(1, images + 1):
        nodes[19 + i] = ("LoadImage", [example_key_frame(i), "image"], {}, f"Key frame {i}", (40, 560 + 330 * i))
        frames[f"key_frame_{i}"] = (19 + i, 0)
    nodes[6] = ("VideoCrafterKeyFrameSequence",
                [False, d.width, d.height, d.frames, d.fps, 123, "fixed", d.steps, d.cfg, d.sampler, d.scheduler, d.eta, 4],
                {"model": (13, 0), "positive": (2, 0), "negative": (3, 0), "vae": (1, 2), "clip_vision": (1, 3),
                 "projector": (1, 4), **frames}, "Key-Frame Sequence", (1240, 200))
    nodes[8] = ("CreateVideo", [8.0], {"images": (6, 0)}, "Create Video", (2160, 200))
    nodes[9] = ("SaveVideo", [f"videocrafter/{variant}", "auto", "auto"], {"video": (8, 0)}, "Save Video", (2440, 200))
    return nodes


def sketch_graph(variant, ckpt, prompt, d, controlnet):
    """ToonCrafter interpolation guided by sketch frames: a video of sketches (one per frame) through VideoCrafter
    Sketch Hint into core Apply ControlNet with the sketch encoder `controlnet` (a registry.ControlNetEntry) at its
    original control scale, on the interpolation conditioning."""
    nodes = dynamicrafter_graph(variant, ckpt, prompt, d, mode="interpolate")
    nodes[40] = ("LoadVideo", [EXAMPLE_SKETCH], {}, f"Sketches ({d.frames} frames)", (40, 1240))
    nodes[41] = ("GetVideoComponents", [], {"video": (40, 0)}, "Sketch frames", (420, 1240))
    nodes[42] = ("VideoCrafterSketchHint", [d.width, d.height], {"sketches": (41, 0)}, "VideoCrafter Sketch Hint",
                 (840, 1000))
    nodes[43] = ("ControlNetLoader", [controlnet.release.file_name], {}, "Sketch encoder", (840, 1240))
    nodes[44] = ("ControlNetApplyAdvanced", [controlnet.strength, 0.0, 1.0],
                 {"positive": (11, 0), "negative": (11, 1), "control_net": (43, 0), "image": (42, 0)},
                 f"Apply sketches (scale {controlnet.strength})", (1240, 620))
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
NODE_WIDTH = 250  # the frontends draw these nodes 210-250 px wide at least (wider for a long title)
TITLE_H, MULTILINE_H = 30, 100  # LiteGraph's title bar; a prompt box of five lines
COL_GAP, ROW_GAP = 44, 32


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
# bit_depth and color_space outputs, Create Video bit_depth; a core node gets one row for what a newer host adds
NEWER_HOST_ROWS = {"GetVideoComponents": 2}
PACK_PREFIXES = ("VideoCrafter", "DynamiCrafter")  # the pack's own nodes: the same on every host


def spare_rows(node_type):
    """Widget rows a node is laid out with beyond what the build host's frontend draws."""
    if node_type in NEWER_HOST_ROWS:
        return NEWER_HOST_ROWS[node_type]
    return 0 if node_type.startswith(PACK_PREFIXES) or node_type in PREVIEW_H else 1
# What the frontends draw (measured in Chromium on 1.32.9 and 1.49.6, tests/test_frontend_browser.py checks it):
# a node's height is max(sockets, outputs) x 20 + 24 a widget row + 14; LoadImage / LoadVideo grow by their
# preview once the file is shown (LoadImage 102 -> 314 px on 1.32.9). The frontend keeps a file's size when it is
# at least that, so every node is written at least that tall, with one spare socket row.
FRONTEND_SLOT_H, FRONTEND_WIDGET_H, FRONTEND_NODE_PAD = 20, 24, 14
# the preview a node grows by once its file shows, measured on both frontends with the example inputs: LoadImage is
# 314 px tall on both (its 102 px and a 212 px image), LoadVideo 213 on 1.49.6 (82 and 131; 1.32.9 draws its video
# over the node's own 82 px)
PREVIEW_H = {"LoadImage": 214, "LoadVideo": 134}
# the frontends widen a node to its title (measured: 8.2 px a character + 20) but 1.32.9 cuts a title short from
# about 26 characters in a 250 px node: room for the whole title
TITLE_CHAR_W, TITLE_PAD_W = 8.6, 40


def node_size(info, values, spare_rows=0, node_type=None, title=""):
    """[width, height] of the node body (the title bar is above `pos`): at least what the frontends draw, with
    `spare_rows` widget rows more (a widget a newer host adds), room for the preview of `node_type`, as wide as
    NODE_WIDTH or its title."""
    inputs, outputs = ui_sockets(info)
    widgets = ui_widgets(info, values)
    rows = sum(MULTILINE_H if kind == "STRING" and opts.get("multiline") else FRONTEND_WIDGET_H
               for _, kind, opts, _ in widgets)
    height = max(len(inputs), len(outputs)) * FRONTEND_SLOT_H + rows + spare_rows * FRONTEND_WIDGET_H \
        + FRONTEND_NODE_PAD + PREVIEW_H.get(node_type, 0)
    width = max(NODE_WIDTH, round(TITLE_CHAR_W * len(title) + TITLE_PAD_W))
    return [width, height]


def _rect(node):
    """(left, top, right, bottom) of a UI node with its title bar."""
    (x, y), (w, h) = node["pos"], node["size"]
    return (x, y - TITLE_H, x + w, y + h)


def _overlap(a, b, margin=0):
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


def _link_points(src, slot, dst, dslot, samples=24):
    """Points along a link as LiteGraph draws it: a spline from the output's right end to the input's left
    end with horizontal tangents a quarter of the distance long."""
    (x0, y0), (x1, y1) = ((src["pos"][0] + src["size"][0], src["pos"][1] + (slot + 0.5) * FRONTEND_SLOT_H),
                          (dst["pos"][0], dst["pos"][1] + (dslot + 0.5) * FRONTEND_SLOT_H))
    d = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 * 0.25
    c0, c1 = (x0 + d, y0), (x1 - d, y1)
    points = []
    for i in range(samples + 1):
        t = i / samples
        a, b, c, e = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
        points.append((a * x0 + b * c0[0] + c * c1[0] + e * x1, a * y0 + b * c0[1] + c * c1[1] + e * y1))
    return points


def _group_rect(group):
    x, y, w, h = group["bounding"]
    return (x, y, x + w, y + h)


def layout_problems(ui):
    """What hides a part of the graph from a user (none: an empty list): node rectangles that overlap (titles
    included), a Note under a link, a group that overlaps another or holds a node only in part, and a
    graph larger than fits a 1920x1080 window at half zoom."""
    nodes = {n["id"]: n for n in ui["nodes"]}
    problems = [f"nodes {a['id']} ({a['title']}) and {b['id']} ({b['title']}) overlap"
                for i, a in enumerate(ui["nodes"]) for b in ui["nodes"][i + 1:] if _overlap(_rect(a), _rect(b))]
    for link_id, src, slot, dst, dslot, _type in ui["links"]:
        for note in (n for n in ui["nodes"] if n["type"] in NOTE_TYPES):
            left, top, right, bottom = _rect(note)
            if any(left < x < right and top < y < bottom for x, y in _link_points(nodes[src], slot, nodes[dst], dslot)):
                problems.append(f"link {link_id} ({nodes[src]['title']} -> {nodes[dst]['title']}) runs under the "
                                f"note {note['id']}")
    groups = ui.get("groups", [])
    problems += [f"groups {a['title']!r} and {b['title']!r} overlap" for i, a in enumerate(groups)
                 for b in groups[i + 1:] if _overlap(_group_rect(a), _group_rect(b))]
    for group in groups:
        g = _group_rect(group)
        for n in ui["nodes"]:
            r = _rect(n)
            inside = g[0] <= r[0] and g[1] <= r[1] and r[2] <= g[2] and r[3] <= g[3]
            if _overlap(g, r) and not inside:
                problems.append(f"node {n['id']} ({n['title']}) lies partly in group {group['title']!r}")
    zoom = fit_zoom(ui)
    if zoom < MIN_FIT_ZOOM:
        problems.append(f"fit-to-view zoom {zoom:.2f} at 1920x1080 is below {MIN_FIT_ZOOM}")
    return problems


def graph_bounds(ui):
    """(left, top, right, bottom) of every node with its title bar: what the frontend's fit-to-view frames."""
    rects = [_rect(n) for n in ui["nodes"]]
    return (min(r[0] for r in rects), min(r[1] for r in rects), max(r[2] for r in rects), max(r[3] for r in rects))


FIT_MARGIN = 50  # the frontends frame a little more than the nodes (measured: 20-48 px wider on 1.49.6 / 1.32.9)


def fit_zoom(ui, window=(1920, 1080)):
    """The zoom the frontends' fit-to-view gives the graph in a window this size (LiteGraph's fitToBounds: 0.75 of
    the canvas over the nodes' bounds), a little less."""
    left, top, right, bottom = graph_bounds(ui)
    return min(0.75 * window[0] / max(right - left + FIT_MARGIN, 300),
               0.75 * window[1] / max(bottom - top + FIT_MARGIN, 300))


# ---- layout: groups left to right: Model over Prompt/images | Sampling | Output, the Note below the output ----
MODEL_TYPES = {"VideoCrafterCheckpointLoader", "VideoCrafterGuidanceRescale", "VideoCrafterFreeNoise",
               "VideoCrafterTurboUNetLoader", "LoraLoaderModelOnly", "ControlNetLoader"}
SAMPLER_TYPES = {"VideoCrafterKSampler", "VideoCrafterKeyFrameSequence", "VideoCrafterTrain", "VideoCrafterTrainI2V"}
TRAINER_TYPES = {"VideoCrafterTrain", "VideoCrafterTrainI2V"}
SAMPLER_COLUMN_TYPES = {"EmptyVideoCrafterLatent"}  # sources drawn under the sampler they feed
INPUT_TYPES = {"LoadImage", "LoadVideo"}  # what the user provides
NOTE_TYPES = {"Note", "MarkdownNote"}
GROUP_TITLE_H, GROUP_PAD = 40, 14  # LiteGraph's group title bar (font 24) and a margin round the nodes
MIN_FIT_ZOOM = 0.5


def _ranks(graph_nodes, links):
    """Columns by the longest path from the graph's inputs; a node without inputs right before its first
    consumer."""
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
    return rank, sources


def _stack(nodes, x, top):
    """Places `nodes` one under another from `top` (the top of the first title bar); returns the bottom."""
    y = top
    for n in nodes:
        n["pos"] = [x, y + TITLE_H]
        y += TITLE_H + n["size"][1] + ROW_GAP
    return y - ROW_GAP


def _group(title, nodes, color):
    left, top = min(_rect(n)[0] for n in nodes), min(_rect(n)[1] for n in nodes)
    right, bottom = max(_rect(n)[2] for n in nodes), max(_rect(n)[3] for n in nodes)
    return {"title": title, "bounding": [left - GROUP_PAD, top - GROUP_TITLE_H, right - left + 2 * GROUP_PAD,
                                         bottom - top + GROUP_TITLE_H + GROUP_PAD],
            "color": color, "font_size": 24, "flags": {}}


def _place(graph_nodes, links, notes, input_columns):
    """One arrangement with the user's inputs (LoadImage / LoadVideo) in `input_columns` columns at the left;
    returns the groups."""
    rank, sources = _ranks(graph_nodes, links)
    samplers = [n for n in graph_nodes if n["type"] in SAMPLER_TYPES]
    s = max(rank[n["id"]] for n in samplers) if samplers else max(rank.values())
    for n in graph_nodes:
        if n["type"] in SAMPLER_COLUMN_TYPES:
            rank[n["id"]] = s
    shift = input_columns - 1
    inputs = [n for n in graph_nodes if n["type"] in INPUT_TYPES and not sources[n["id"]] and rank[n["id"]] < s]
    model = [n for n in graph_nodes if n["type"] in MODEL_TYPES and rank[n["id"]] < s]
    prompt = [n for n in graph_nodes if rank[n["id"]] < s and n not in model and n not in inputs]
    sampling = [n for n in graph_nodes if rank[n["id"]] == s]
    output = [n for n in graph_nodes if rank[n["id"]] > s]
    col = {n["id"]: rank[n["id"]] + shift for n in graph_nodes}
    # the inputs fill their columns in order, each about the same height
    per_column = -(-len(inputs) // input_columns) if inputs else 0
    for i, n in enumerate(inputs):
        col[n["id"]] = min(i // per_column, input_columns - 1) if per_column else 0
    widths = {}
    for n in graph_nodes:
        widths[col[n["id"]]] = max(widths.get(col[n["id"]], 0), n["size"][0])
    left = {c: sum(widths.get(i, NODE_WIDTH) + COL_GAP for i in range(c)) for c in range(max(col.values()) + 1)}
    top = GROUP_TITLE_H
    columns = {}
    for n in graph_nodes:  # each column in the description's order (its hint of top to bottom)
        columns.setdefault(col[n["id"]], []).append(n)
    groups = []
    bands = [(model, "Model", "#3f789e"), (inputs + prompt, None, "#a1309b")]
    band_top = top
    for members, title, color in bands:
        if not members:
            continue
        bottom = band_top
        for c in sorted({col[n["id"]] for n in members}):
            bottom = max(bottom, _stack([n for n in columns[c] if n in members], left[c], band_top))
        if title is None:
            title = "Prompt" + (" and " + ("key frames" if sum(n["type"] == "LoadImage" for n in inputs) > 2 else
                                           "images" if all(n["type"] == "LoadImage" for n in inputs) else
                                           "inputs") if inputs else "")
        groups.append(_group(title, members, color))
        band_top = bottom + GROUP_PAD + ROW_GAP + GROUP_TITLE_H
    trainer = any(n["type"] in TRAINER_TYPES for n in sampling)
    for members, title, color in ((sampling, "Training" if trainer else "Sampling", "#b58b2a"),
                                  (output, "Loss curve" if trainer else "Output", "#8a8")):
        if not members:
            continue
        for c in sorted({col[n["id"]] for n in members}):
            _stack([n for n in columns[c] if n in members], left[c], top)
        groups.append(_group(title, members, color))
    # the Note under the output (or the last) columns, where no link runs: links leave the nodes' right sides
    # at their tops and every node of those columns is above it
    last = output or sampling
    right = max(_rect(n)[2] for n in graph_nodes)
    y = max(_rect(n)[3] for n in last) + GROUP_PAD + ROW_GAP + TITLE_H
    for note in notes:  # right-aligned with the graph
        note["pos"] = [max(right - note["size"][0], min(n["pos"][0] for n in last)), y]
        y += note["size"][1] + TITLE_H + ROW_GAP
    return groups


def layout(ui_nodes, links):
    """Places the nodes: groups left to right (the Model over the Prompt and the user's inputs, then Sampling, then
    Output), inside each a column per step from the graph's inputs, every node at the size the frontends draw it;
    the Note under the Output. Of the arrangements with the user's inputs in 1-3 columns, the one that fits a
    1920x1080 window at the largest zoom. Returns the groups."""
    graph_nodes = [n for n in ui_nodes if n["type"] not in NOTE_TYPES]
    notes = [n for n in ui_nodes if n["type"] in NOTE_TYPES]
    best = None
    for input_columns in (1, 2, 3):
        _place(graph_nodes, links, notes, input_columns)  # lays the nodes out in place
        zoom = fit_zoom({"nodes": ui_nodes})
        if best is None or zoom > best[0] + 1e-9:
            best = (zoom, input_columns)
    return _place(graph_nodes, links, notes, best[1])


def to_ui(nodes, variant, object_info, downloads=(), extra_note=""):
    """The UI graph of a description on the host whose node definitions `object_info` holds: sockets and
    widgets as that host's frontend builds them (a widget value it cannot read is an error), laid out in titled
    groups; with a Note saying what the user provides: the model files of the registry entries `downloads`, the
    images / videos its Load nodes read and `extra_note`."""
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
            "size": node_size(object_info[ntype], widgets, spare_rows(ntype),
                              ntype, title),
            "order": order, "mode": 0, "title": title,
            "inputs": [{"name": n, "type": t, "link": link_of.get((nid, i))} for i, (n, t) in enumerate(in_sockets)],
            "outputs": [{"name": n, "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
                        for i, (n, t) in enumerate(outs)],
            "properties": properties,
            "widgets_values": list(widgets),
        })
    inputs = [(title, widgets[0]) for _nid, (ntype, widgets, _ins, title, _pos) in sorted(nodes.items())
              if ntype in INPUT_TYPES]
    if downloads or extra_note:
        ui_nodes.append(readme_note(note_text(downloads, inputs, extra_note), max(nodes) + 1))
    groups = layout(ui_nodes, links)
    return {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": groups, "config": {}, "extra": {}, "version": 0.4}


def freenoise_graph(variant, ckpt, prompt, d, frames=64):
    """The text-to-video graph with FreeNoise between the loader and the sampler, at FreeNoise's
    defaults (window 16, stride 4, fps 16, DDIM eta 0, cfg 12)."""
    width, height = d.width, d.height
    nodes = graph(variant, ckpt, prompt, replace(d, fps=16))
    ntype, widgets, links, title, pos = nodes[5]
    nodes[5] = (ntype, [width, height, frames, 1], links, f"Video size ({frames} = 16 + k x 4)", pos)
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
    nodes[11] = (ntype, [ANIMATE, d.width, d.height, frames, 1, d.fps], links, f"Conditioning ({frames} frames)",
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
                    "Your trained LoRA", (src_pos[0], src_pos[1] + 420))
    return out


def workflow_graph(entry, workflow):
    """The nodes of one shipped workflow of a registry entry: its family's graph, or a variation of it."""
    d, ckpt, name = entry.defaults, entry.release.file_name, workflow.name
    if workflow.variation == "lora":
        return lora_graph(workflow_graph(entry, replace(workflow, variation="")), lora_name(entry))
    if workflow.variation == "freenoise":
        build = dynamicrafter_freenoise_graph if entry.family.concat_latent else freenoise_graph
        return build(entry.id, ckpt, workflow.prompt, d)
    if workflow.variation == "keyframes":
        return keyframes_graph(name, ckpt, workflow.prompt, d)
    if workflow.variation == "sketch":
        return sketch_graph(name, ckpt, workflow.prompt, d, registry.controlnet_for(entry.id))
    if entry.base_model:  # a UNet alone, loaded onto its base model's MODEL (T2V-Turbo)
        return turbo_graph(name, registry.entry(entry.base_model).release.file_name, ckpt, workflow.prompt, d)
    if entry.family.camera_node:  # MotionCtrl: the camera path (and object trajectory) nodes
        return motionctrl_graph(name, ckpt, workflow.prompt, d, entry.family)
    if entry.family.concat_latent:  # the image latent beside the noise: DynamiCrafter Conditioning, in the family's mode
        return dynamicrafter_graph(name, ckpt, workflow.prompt, d, mode=workflow.variation or entry.family.mode)
    return graph(name, ckpt, workflow.prompt, d, image=EXAMPLE_START if entry.image_inputs else None)


def write_json(path, data):
    """Temp file then rename, so an interrupted run never leaves a half-written workflow."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# The UI graphs are the pack's templates: the frontends list a custom pack's `example_workflows/*.json` under
# Templates -> Extensions with the file name as the title (and `<name>.jpg` beside it as the thumbnail, which
# vc_nodes/templates.py draws at start-up), so each UI graph's file name is its title; the API graphs keep the short
# names in workflows/api/ (the batch command and scripts read them).
TEMPLATES_FOLDER = os.path.join(ROOT, "example_workflows")
# the host whose node definitions the shipped UI graphs are built from (their widget values read the same on 0.33)
BUILD_HOST_VERSION = "0.3.75"
API_FOLDER = os.path.join(ROOT, "workflows", "api")
TITLES = {
    "vc2_t2v_512": "VideoCrafter2, text to video",
    "vc2_t2v_512_freenoise_64": "VideoCrafter2, long text to video (64 frames, FreeNoise)",
    "vc1_t2v_1024": "VideoCrafter1, text to video 1024",
    "vc1_i2v_512": "VideoCrafter1, image to video",
    "vc1_i2v_512_lora": "VideoCrafter1, image to video with your LoRA",
    "dc_512": "DynamiCrafter 512, animate an image",
    "dc_512_freenoise_64": "DynamiCrafter 512, long animation (64 frames, FreeNoise)",
    "dc_1024": "DynamiCrafter 1024, animate an image",
    "dc_512_interp": "DynamiCrafter, in-between of two images",
    "dc_512_loop": "DynamiCrafter, looping video of one image",
    "dc_512_keyframes": "DynamiCrafter, video through key frames",
    "toon_512_interp": "ToonCrafter, cartoon in-between of two images",
    "toon_512_keyframes": "ToonCrafter, cartoon through key frames",
    "toon_512_sketch": "ToonCrafter, in-between guided by sketches",
    "vc2_turbo_v2": "T2V-Turbo-v2, text to video in 8 steps",
    "motionctrl_256": "MotionCtrl, camera and object motion",
    "motionctrl_vc2_512": "MotionCtrl on VideoCrafter2, camera motion",
    "train_i2v": "Train VideoCrafter1 image to video",
    "train_dc_512": "Train DynamiCrafter 512",
    "train_lora_vc2": "Train a LoRA on VideoCrafter2",
}


def ui_path(name, folder=TEMPLATES_FOLDER):
    """The UI graph (template) of the shipped workflow `name` (a graph without a title in TITLES: its name)."""
    return os.path.join(folder, f"{TITLES.get(name, name)}.json")


def api_path(name, folder=API_FOLDER):
    return os.path.join(folder, f"{name}.json")


def main(templates=TEMPLATES_FOLDER, api=API_FOLDER):
    workflows = {name: (entry, workflow, workflow_graph(entry, workflow))
                 for name, (entry, workflow) in shipped_workflows().items()}
    # the shipped UI graphs are built on the default host, 0.3.75 (its widget values read the same on 0.33)
    info = comfy_boot.object_info(sorted({node[0] for _, _, nodes in workflows.values() for node in nodes.values()}))
    for name, (entry, workflow, nodes) in workflows.items():
        write_json(ui_path(name, templates), to_ui(nodes, name, info, downloads(entry, workflow)))
        write_json(api_path(name, api), to_api(nodes))
        print("wrote", name)


if __name__ == "__main__":
    main()
