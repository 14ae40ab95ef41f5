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
    "ImageBatch": ([("image1", "IMAGE"), ("image2", "IMAGE")], [("IMAGE", "IMAGE")], []),
    "VideoCrafterKeyFrameSequence": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                                      ("vae", "VAE"), ("clip_vision", "CLIP_VISION"),
                                      ("projector", "VIDEOCRAFTER_PROJECTOR"), ("key_frames", "IMAGE")],
                                     [("IMAGE", "IMAGE")],
                                     ["loop", "width", "height", "length", "fs", "seed", "steps", "cfg", "sampler_name",
                                      "scheduler", "eta", "segments_per_batch"]),
}
# position of the frontend's "control after generate" widget value (after the seed), which is not an input
SEED_CONTROL_INDEX = {"VideoCrafterKSampler": 1, "VideoCrafterKeyFrameSequence": 6}

# Model files: the names `scripts/download_models.py` / the VideoCrafter Model Downloader node write into
# models/videocrafter (vc_models/download.py RELEASED_MODELS), with the released file they come from.
# No `properties.models` entry: ComfyUI's Missing Models dialog downloads only .safetensors/.sft files and the
# releases are .ckpt pickles (naming the pickle URL with a .safetensors name would store a pickle under that
# name). Each UI graph carries a Note saying how to get the file instead.
MODELS = {
    "vc2_t2v_512": ("videocrafter2_t2v_512.safetensors", "https://huggingface.co/VideoCrafter/VideoCrafter2/resolve/main/model.ckpt"),
    "vc1_t2v_1024": ("videocrafter1_t2v_1024.safetensors", "https://huggingface.co/VideoCrafter/Text2Video-1024/resolve/main/model.ckpt"),
    "vc1_i2v_512": ("videocrafter1_i2v_512.safetensors", "https://huggingface.co/VideoCrafter/Image2Video-512/resolve/main/model.ckpt"),
    # DynamiCrafter: the name the model downloader writes into models/videocrafter/ (converted from model.ckpt)
    "dc_256": ("dynamicrafter_256.safetensors", "https://huggingface.co/Doubiiu/DynamiCrafter/resolve/main/model.ckpt"),
    "dc_512": ("dynamicrafter_512.safetensors", "https://huggingface.co/Doubiiu/DynamiCrafter_512/resolve/main/model.ckpt"),
    "dc_1024": ("dynamicrafter_1024.safetensors", "https://huggingface.co/Doubiiu/DynamiCrafter_1024/resolve/main/model.ckpt"),
    "dc_512_interp": ("dynamicrafter_512_interp.safetensors",
                      "https://huggingface.co/Doubiiu/DynamiCrafter_512_Interp/resolve/main/model.ckpt"),
    "toon_512": ("tooncrafter_512.safetensors", "https://huggingface.co/Doubiiu/ToonCrafter/resolve/main/model.ckpt"),
}
# workflows whose checkpoint is another workflow's
WORKFLOW_MODEL = {"dc_512_loop": "dc_512_interp", "toon_512_interp": "toon_512", "toon_512_keyframes": "toon_512",
                  "dc_512_keyframes": "dc_512_interp"}

# T2V-Turbo-v2 UNets (bare state dicts, loaded onto the VideoCrafter2 MODEL): file name -> release
TURBO_UNETS = {
    "turbo_v2_mg": ("t2v_turbo_v2_unet_mg.safetensors", "https://huggingface.co/jiachenli-ucsb/T2V-Turbo-v2/resolve/main/unet_mg.pt"),
    "turbo_v2_nomg": ("t2v_turbo_v2_unet_no_mg.safetensors",
                      "https://huggingface.co/jiachenli-ucsb/T2V-Turbo-v2-no-MG/resolve/main/unet_no_mg.pt"),
}
MODELS["vc2_turbo_v2"] = MODELS["vc2_t2v_512"]  # the turbo workflow's checkpoint: VideoCrafter2 (CLIP, VAE)
# downloader ids of the files a workflow loads, where they are not just the workflow's own id
WORKFLOW_DOWNLOADS = {"vc2_turbo_v2": ["vc2_t2v_512", "turbo_v2_mg"], "dc_512_loop": ["dc_512_interp"],
                      "toon_512_interp": ["toon_512"], "toon_512_keyframes": ["toon_512"],
                      "dc_512_keyframes": ["dc_512_interp"]}


def model_note(variant, node_id, pos):
    """A UI-only Note node telling how to get the model files (the Missing Models dialog cannot)."""
    ids = WORKFLOW_DOWNLOADS.get(variant, [variant])
    files = {**MODELS, **TURBO_UNETS}
    names = ", ".join(files[i][0] for i in ids)
    urls = "\n".join(files[i][1] for i in ids)
    text = (f"Models: {names} in ComfyUI/models/videocrafter/.\n\n"
            f"Get them once with the node 'VideoCrafter Model Downloader' (model {' and '.join(ids)}), then press R, "
            f"or on a server: python custom_nodes/ComfyUI-VideoCrafter/scripts/download_models.py {' '.join(ids)}\n"
            f"They are downloaded from\n{urls}\nand converted to fp16 .safetensors.")
    return {"id": node_id, "type": "Note", "pos": list(pos), "size": [420, 160], "flags": {}, "order": node_id,
            "mode": 0, "title": "Model files", "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [text], "color": "#432", "bgcolor": "#653"}


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


def turbo_graph(prompt, steps=8, fps=16):
    """VideoCrafter2 + T2V-Turbo-v2 (MG): the turbo UNet on the VideoCrafter2 MODEL, guidance in the
    conditioning, LCM with the original's timesteps, cfg 1 (one UNet pass per step)."""
    nodes = graph("vc2_turbo_v2", prompt, 512, 320, fps)
    nodes[6] = ("VideoCrafterKSampler", [123, "fixed", steps, 1.0, "lcm", "videocrafter_turbo", 0.0, 1.0],
                {"model": (12, 0), "positive": (13, 0), "negative": (13, 1), "latent_image": (5, 0)},
                "VideoCrafter KSampler (LCM, cfg 1)", (1480, 200))
    nodes[3] = nodes[3][:3] + ("Negative prompt (unused at cfg 1)",) + nodes[3][4:]
    nodes[8] = ("CreateVideo", [float(fps)], {"images": (7, 0)}, "Create Video", (2160, 200))
    nodes[12] = ("VideoCrafterTurboUNetLoader", [TURBO_UNETS["turbo_v2_mg"][0], "default"], {"model": (1, 0)},
                 "T2V-Turbo-v2 UNet", (420, 560))
    nodes[13] = ("VideoCrafterTurboConditioning", [7.5, True, 0.05, 0.5], {"positive": (4, 0), "negative": (4, 1)},
                 "Turbo guidance (MG)", (1160, 200))
    return nodes


def dynamicrafter_graph(variant, prompt, width, height, fs, mode="i2v", rescale=0.7, scheduler="videocrafter_trailing"):
    """A DynamiCrafter graph at the original's official settings (50 DDIM steps, eta 1, cfg 7.5; guidance
    rescale 0.7 and trailing spacing for 512/1024); 'interpolate' adds an end image, 'loop' drops the
    repeated last frame before saving."""
    ckpt, _ = MODELS[WORKFLOW_MODEL.get(variant, variant)]
    model = (1, 0)
    conditioning_in = {"positive": (2, 0), "negative": (3, 0), "vae": (1, 2), "clip_vision": (1, 3),
                       "projector": (1, 4), "start_image": (10, 0)}
    nodes = {
        1: ("VideoCrafterCheckpointLoader", [ckpt, "default", "none"], {}, "Load DynamiCrafter Checkpoint", (40, 200)),
        2: ("CLIPTextEncode", [prompt], {"clip": (1, 1)}, "Prompt", (420, 80)),
        3: ("CLIPTextEncode", [""], {"clip": (1, 1)}, "Negative prompt (empty, as the original)", (420, 330)),
        10: ("LoadImage", ["example.png", "image"], {}, "Start image", (420, 560)),
        11: ("DynamiCrafterConditioning", [mode, width, height, 16, 1, fs], conditioning_in,
             "DynamiCrafter Conditioning", (840, 200)),
    }
    if mode == "interpolate":
        nodes[12] = ("LoadImage", ["example.png", "image"], {}, "End image", (420, 900))
        conditioning_in["end_image"] = (12, 0)
    if rescale:
        nodes[13] = ("VideoCrafterGuidanceRescale", [rescale], {"model": (1, 0)}, "Guidance rescale (original: 0.7)", (840, 20))
        model = (13, 0)
    nodes[6] = ("VideoCrafterKSampler", [123, "fixed", 50, 7.5, "videocrafter_ddim", scheduler, 1.0, 1.0],
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
    if node_type in SEED_CONTROL_INDEX:
        values.pop(SEED_CONTROL_INDEX[node_type])
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
    if (variant in MODELS or variant in WORKFLOW_DOWNLOADS) and any(n[0] == "VideoCrafterCheckpointLoader" for n in nodes.values()):
        ui_nodes.append(model_note(variant, max(nodes) + 1, (40, 20)))
    return {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": link_id, "nodes": ui_nodes, "links": links,
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


def dynamicrafter_freenoise_graph(prompt, frames=64, fs=24):
    """DynamiCrafter 512 image animation over `frames` frames: FreeNoise (window 16, stride 4) after the
    guidance rescale; the image latent stays per frame and, past 16 frames, every frame sees all 256 image
    tokens, as the original."""
    nodes = dynamicrafter_graph("dc_512", prompt, 512, 320, fs)
    ntype, widgets, links, title, pos = nodes[11]
    nodes[11] = (ntype, ["i2v", 512, 320, frames, 1, fs], links, f"DynamiCrafter Conditioning ({frames} frames)", pos)
    nodes[15] = ("VideoCrafterFreeNoise", [16, 4, True], {"model": nodes[6][2]["model"]}, "FreeNoise (long video)", (1240, 20))
    ntype, widgets, links, title, pos = nodes[6]
    nodes[6] = (ntype, widgets, {**links, "model": (15, 0)}, title, pos)
    ntype, widgets, links, title, pos = nodes[9]
    nodes[9] = (ntype, ["videocrafter/dc_512_freenoise"] + widgets[1:], links, title, pos)
    return nodes


def keyframes_graph(variant, prompt, fs, images=4):
    """`images` key frames (LoadImage nodes batched with core Image Batch) through VideoCrafter Key-Frame Sequence
    at the originals' settings (50 DDIM steps, eta 1, cfg 7.5, trailing spacing, guidance rescale 0.7)."""
    ckpt, _ = MODELS[WORKFLOW_MODEL[variant]]
    nodes = {
        1: ("VideoCrafterCheckpointLoader", [ckpt, "default", "none"], {}, "Load checkpoint", (40, 200)),
        2: ("CLIPTextEncode", [prompt], {"clip": (1, 1)}, "Prompt", (420, 80)),
        3: ("CLIPTextEncode", [""], {"clip": (1, 1)}, "Negative prompt (empty, as the original)", (420, 330)),
        13: ("VideoCrafterGuidanceRescale", [0.7], {"model": (1, 0)}, "Guidance rescale (original: 0.7)", (840, 20)),
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
                [False, 512, 320, 16, fs, 123, "fixed", 50, 7.5, "videocrafter_ddim", "videocrafter_trailing", 1.0, 4],
                {"model": (13, 0), "positive": (2, 0), "negative": (3, 0), "vae": (1, 2), "clip_vision": (1, 3),
                 "projector": (1, 4), "key_frames": batch}, "VideoCrafter Key-Frame Sequence", (1240, 200))
    nodes[8] = ("CreateVideo", [8.0], {"images": (6, 0)}, "Create Video", (2160, 200))
    nodes[9] = ("SaveVideo", [f"videocrafter/{variant}", "auto", "auto"], {"video": (8, 0)}, "Save Video", (2440, 200))
    return nodes


# the FreeNoise workflows load the same released checkpoints as their base graphs
MODELS["vc2_t2v_512_freenoise_64"] = MODELS["vc2_t2v_512"]
WORKFLOW_DOWNLOADS.update({"vc2_t2v_512_freenoise_64": ["vc2_t2v_512"], "dc_512_freenoise_64": ["dc_512"]})

WORKFLOWS = {
    "vc2_t2v_512": graph("vc2_t2v_512", "a corgi running on the beach at sunset, high quality", 512, 320, 28),
    "vc1_t2v_1024": graph("vc1_t2v_1024", "an astronaut riding a horse on the moon, 4k, detailed", 1024, 576, 28),
    "vc1_i2v_512": graph("vc1_i2v_512", "a boat sailing on the sea, waves moving", 512, 320, 8, image="example.png"),
    "vc2_turbo_v2": turbo_graph("a corgi running on the beach at sunset, high quality"),
    "dc_512": dynamicrafter_graph("dc_512", "a boat sailing on the sea, waves moving", 512, 320, 24),
    "dc_1024": dynamicrafter_graph("dc_1024", "a boat sailing on the sea, waves moving", 1024, 576, 10),
    "dc_512_interp": dynamicrafter_graph("dc_512_interp", "a smooth transition, natural motion", 512, 320, 5,
                                         mode="interpolate"),
    "dc_512_loop": dynamicrafter_graph("dc_512_loop", "a seamless looping animation, natural motion", 512, 320, 5,
                                       mode="loop"),
    "dc_512_freenoise_64": dynamicrafter_freenoise_graph("a boat sailing on the sea, waves moving, gentle camera pan"),
    "vc2_t2v_512_freenoise_64": freenoise_graph("vc2_t2v_512", "a corgi running on the beach at sunset, high quality",
                                                512, 320),
    "toon_512_interp": dynamicrafter_graph("toon_512_interp", "an anime scene", 512, 320, 10, mode="interpolate"),
    "toon_512_keyframes": keyframes_graph("toon_512_keyframes", "an anime scene", 10),
    "dc_512_keyframes": keyframes_graph("dc_512_keyframes", "a smooth transition, natural motion", 5),
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
