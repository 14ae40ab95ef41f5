"""Find the nodes/inputs that play each role in an API-format workflow, and fill them.

An API workflow is {node_id: {"class_type": str, "inputs": {name: value | [src_id, slot]}}}.
Roles are found from the graph's structure, never from node ids:

  sampler   the node with `positive`, `negative` and `latent_image` inputs
            (VideoCrafterKSampler preferred if there are several), or else the one with
            `positive`, `negative` and `key_frames` or `key_frame_1` (VideoCrafter Key-Frame Sequence
            samples itself)
  prompt    the `text` of the text encoder reached by walking up from the sampler's
            `positive` input (through any node with positive/negative inputs such as
            VideoCrafterFPSConditioning / VideoCrafterImageEncode, taking the input that
            matches the output slot, or through a `conditioning` input)
  negative  the same from the sampler's `negative` input
  seed, steps, cfg   on the sampler (`seed` or `noise_seed`)
  width, height, frames   on the latent node reached from `latent_image`
  fps       every `fps` / `frame_rate` input in the graph (the fps conditioning and the
            video writer should agree)
  batch_size  on that latent node too (DynamiCrafter Conditioning makes the latent)
  image     the `image` of the LoadImage node(s) feeding a `start_image` input (DynamiCrafter
            Conditioning), or, in a graph without one, of the LoadImage node(s) upstream of
            the sampler (VideoCrafter I2V)
  end_image the `image` of the LoadImage node(s) feeding an `end_image` input
  key_frame_1, key_frame_2, ...  the `image` of the LoadImage nodes feeding the sampler's
            `key_frames` input, in the order their Image Batch nodes join them, then of those
            feeding its `key_frame_1` ... `key_frame_8` inputs in order (the node's own order; width,
            height, frames and fs are then the sequence node's own)
  fs, mode  `fs` / `mode` of the node with a `start_image` input (DynamiCrafter Conditioning)
  window_size, window_stride  on a node upstream of the sampler (VideoCrafter FreeNoise)
  checkpoint  every `ckpt_name` input upstream of the sampler
  unet      every `unet_name` input upstream of the sampler (T2V-Turbo UNet loader)
  output    every `filename_prefix` input (SaveVideo, SaveImage, ...)

Role names are the table's column names (columns.py holds the one vocabulary).

If a role's input is itself a link (e.g. to a primitive node), the value is written into
the source node.  A mapping file overrides or adds roles:
  {"prompt": ["6", "text"], "fps": [["9", "fps"], ["12", "fps"]], "eta": ["3", "eta"]}
"""
import copy
import hashlib
import json
import os

from .columns import BATCH_COLUMNS, ROLES  # noqa: F401  (ROLES re-exported: the roles find_roles may report)

SAMPLER_PREFERENCE = ("VideoCrafterKSampler", "KSampler", "KSamplerAdvanced")
TEXT_INPUTS = ("text", "prompt")
FRAMES_INPUTS = ("frames", "length", "video_frames", "num_frames")
FPS_INPUTS = ("fps", "frame_rate")
IMAGE_LOADERS = ("LoadImage", "LoadImageOutput")
KEY_FRAMES_INPUT = "key_frames"  # VideoCrafter Key-Frame Sequence's IMAGE batch of key frames
# ... and its single key-frame inputs, which follow the batch (vc_nodes/keyframes.py)
KEY_FRAME_INPUTS = (KEY_FRAMES_INPUT,) + tuple(f"key_frame_{i}" for i in range(1, 9))
LITERAL_INPUTS = ("value", "text", "string", "int", "float", "number", "seed")


class WorkflowError(ValueError):
    pass


def is_link(v):
    return (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (str, int))
            and isinstance(v[1], int) and not isinstance(v[1], bool))


def load_workflow(path):
    try:
        with open(path, encoding="utf-8") as f:
            wf = json.load(f)
    except FileNotFoundError:
        raise WorkflowError(f"workflow not found: {path}") from None
    except json.JSONDecodeError as e:
        raise WorkflowError(f"{path}: not valid JSON: {e}") from None
    if isinstance(wf, dict) and "prompt" in wf and isinstance(wf["prompt"], dict) and "nodes" not in wf:
        wf = wf["prompt"]  # a saved POST /prompt body
    if not isinstance(wf, dict) or "nodes" in wf or not all(
            isinstance(n, dict) and "class_type" in n for n in wf.values()):
        raise WorkflowError(f"{path}: not an API-format workflow (use 'Export (API)' in ComfyUI; "
                            "UI workflows with a 'nodes' list cannot be queued)")
    for node in wf.values():
        node.setdefault("inputs", {})
    return wf


def load_role_map(path):
    """Read a mapping file: role -> [node_id, input] or a list of such pairs."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise WorkflowError(f"{path}: expected an object role -> [node_id, input]")
    out = {}
    for role, target in raw.items():
        if role.startswith("_"):
            continue  # comments
        pairs = [target] if (isinstance(target, list) and len(target) == 2 and isinstance(target[1], str)
                             and not isinstance(target[0], list)) else target
        try:
            out[role.lower()] = [(str(n), str(i)) for n, i in pairs]
        except (TypeError, ValueError):
            raise WorkflowError(f"{path}: role {role!r}: expected [node_id, input] or a list of them") from None
    return out


def _resolve_literal(wf, node_id, name, seen=None):
    """Follow links from (node_id, name) to the node input that holds the literal value."""
    seen = seen or set()
    while True:
        if (node_id, name) in seen:
            raise WorkflowError(f"link cycle at node {node_id} input {name}")
        seen.add((node_id, name))
        value = wf[node_id]["inputs"].get(name)
        if not is_link(value):
            return node_id, name
        src = str(value[0])
        if src not in wf:
            raise WorkflowError(f"node {node_id} input {name} links to missing node {src}")
        inputs = wf[src]["inputs"]
        literal = [k for k, v in inputs.items() if not is_link(v)]
        pick = name if name in literal else next((k for k in LITERAL_INPUTS if k in literal), None)
        if pick is None and len(literal) == 1:
            pick = literal[0]
        if pick is None:
            raise WorkflowError(f"node {node_id} input {name} comes from node {src} "
                                f"({wf[src]['class_type']}) whose value input cannot be identified; use --roles")
        node_id, name = src, pick


def _upstream(wf, start_ids):
    """All node ids reachable upstream (through links) from start_ids, including them."""
    todo, seen = list(start_ids), set()
    while todo:
        nid = todo.pop()
        if nid in seen or nid not in wf:
            continue
        seen.add(nid)
        for v in wf[nid]["inputs"].values():
            if is_link(v):
                todo.append(str(v[0]))
    return seen


def find_sampler(wf):
    cands = [nid for nid, n in wf.items()
             if {"positive", "negative", "latent_image"} <= set(n["inputs"])]
    if not cands:
        cands = [nid for nid, n in wf.items() if {"positive", "negative"} <= set(n["inputs"])
                 and set(KEY_FRAME_INPUTS) & set(n["inputs"])]
    if not cands:
        cands = [nid for nid, n in wf.items() if n["class_type"] in SAMPLER_PREFERENCE]
    if len(cands) > 1:
        for cls in SAMPLER_PREFERENCE:
            pref = [nid for nid in cands if wf[nid]["class_type"] == cls]
            if len(pref) == 1:
                return pref[0]
        names = ", ".join(f"{c} ({wf[c]['class_type']})" for c in cands)
        raise WorkflowError(f"several samplers ({names}); name the roles with --roles")
    return cands[0] if cands else None


def _trace_text(wf, link, want):
    """Walk up from a CONDITIONING link to the text encoder's text input."""
    seen = set()
    while is_link(link):
        nid, slot = str(link[0]), link[1]
        if nid not in wf or (nid, slot) in seen:
            return None
        seen.add((nid, slot))
        inputs = wf[nid]["inputs"]
        text = next((k for k in TEXT_INPUTS if k in inputs), None)
        if text is not None and wf[nid]["class_type"] != "VideoCrafterImageEncode":
            return _resolve_literal(wf, nid, text)
        if "positive" in inputs and "negative" in inputs:
            # conditioning pass-through nodes output (positive, negative)
            link = inputs["negative" if slot == 1 else "positive"] if slot in (0, 1) else inputs.get(want)
        elif "conditioning" in inputs:
            link = inputs["conditioning"]
        elif "conditioning_to" in inputs:
            link = inputs["conditioning_to"]
        elif "conditioning_1" in inputs:
            link = inputs["conditioning_1"]
        else:
            return None
    return None


def find_roles(wf, overrides=None):
    """Return {role: [(node_id, input), ...]} for the roles found in wf (overrides win)."""
    roles = {}
    sampler = find_sampler(wf)
    if sampler is not None:
        s_in = wf[sampler]["inputs"]
        for role, link_name in (("prompt", "positive"), ("negative", "negative")):
            hit = _trace_text(wf, s_in.get(link_name), link_name)
            if hit:
                roles[role] = [hit]
        for role, names in (("seed", ("seed", "noise_seed")), ("steps", ("steps",)), ("cfg", ("cfg",))):
            name = next((n for n in names if n in s_in), None)
            if name:
                roles[role] = [_resolve_literal(wf, sampler, name)]
        lat = s_in.get("latent_image")
        key_frames = [s_in[name] for name in KEY_FRAME_INPUTS if name in s_in] or None
        # the node that sets the video's size: the latent's, or the key-frame sequence itself
        lid = str(lat[0]) if is_link(lat) and str(lat[0]) in wf else (sampler if key_frames is not None else None)
        if lid is not None:
            l_in = wf[lid]["inputs"]
            for role, names in (("width", ("width",)), ("height", ("height",)), ("frames", FRAMES_INPUTS),
                                ("batch_size", ("batch_size",)), ("fs", ("fs",) if key_frames is not None else ())):
                name = next((n for n in names if n in l_in), None)
                if name:
                    roles[role] = [_resolve_literal(wf, lid, name)]
        up = sorted(_upstream(wf, [sampler]), key=_id_key)
        if key_frames is not None:
            loaders = [nid for link in key_frames for nid in _batch_order(wf, link)]
            for index, nid in enumerate(loaders, start=1):
                roles[f"key_frame_{index}"] = [(nid, "image")]
        else:
            _image_roles(wf, up, roles)
        for role, name in (("checkpoint", "ckpt_name"), ("unet", "unet_name")):
            hits = [(nid, name) for nid in up if name in wf[nid]["inputs"] and not is_link(wf[nid]["inputs"][name])]
            if hits:
                roles[role] = hits
        for role in ("window_size", "window_stride"):
            hits = [_resolve_literal(wf, nid, role) for nid in up if role in wf[nid]["inputs"]]
            if hits:
                roles[role] = list(dict.fromkeys(hits))
    fps = []
    for nid in sorted(wf, key=_id_key):
        for name in FPS_INPUTS:
            if name in wf[nid]["inputs"]:
                fps.append(_resolve_literal(wf, nid, name))
    if fps:
        roles["fps"] = list(dict.fromkeys(fps))
    outputs = [(nid, "filename_prefix") for nid in sorted(wf, key=_id_key)
               if "filename_prefix" in wf[nid]["inputs"] and not is_link(wf[nid]["inputs"]["filename_prefix"])]
    if outputs:
        roles["output"] = outputs
    for role, targets in (overrides or {}).items():
        for nid, name in targets:
            if nid not in wf:
                raise WorkflowError(f"role {role!r}: node {nid} is not in the workflow")
        roles[role] = list(targets)
    return roles


def _loaders_feeding(wf, link):
    """LoadImage nodes upstream of one input link, in id order."""
    if not is_link(link):
        return []
    return sorted((nid for nid in _upstream(wf, [str(link[0])]) if wf[nid]["class_type"] in IMAGE_LOADERS
                   and "image" in wf[nid]["inputs"]), key=_id_key)


def _batch_order(wf, link):
    """The image loaders feeding an IMAGE batch link, in the batch's order: an Image Batch node's `image1`
    before its `image2`; other nodes' loaders in id order."""
    if not is_link(link) or str(link[0]) not in wf:
        return []
    nid = str(link[0])
    node = wf[nid]
    if node["class_type"] in IMAGE_LOADERS and "image" in node["inputs"]:
        return [nid]
    if "image1" in node["inputs"] and "image2" in node["inputs"]:
        return _batch_order(wf, node["inputs"]["image1"]) + _batch_order(wf, node["inputs"]["image2"])
    return _loaders_feeding(wf, link)


def _image_roles(wf, up, roles):
    """image / end_image (LoadImage nodes) and the frame-conditioning settings fs / mode."""
    cond = [nid for nid in up if "start_image" in wf[nid]["inputs"]]
    start, end = [], []
    for nid in cond:
        start += _loaders_feeding(wf, wf[nid]["inputs"]["start_image"])
        end += _loaders_feeding(wf, wf[nid]["inputs"].get("end_image"))
        for role in ("fs", "mode"):
            if role in wf[nid]["inputs"]:
                roles.setdefault(role, []).append(_resolve_literal(wf, nid, role))
    if not cond:  # VideoCrafter I2V: the image reaches the sampler through Image Encode
        start = [nid for nid in up if wf[nid]["class_type"] in IMAGE_LOADERS and "image" in wf[nid]["inputs"]]
    for role, loaders in (("image", start), ("end_image", end)):
        loaders = list(dict.fromkeys(loaders))
        if loaders:
            roles[role] = [(nid, "image") for nid in loaders]


def _id_key(nid):
    return (0, int(nid), "") if str(nid).isdigit() else (1, 0, str(nid))


def coerce(value, current, role):
    """Convert a table cell to the type of the workflow's current value."""
    if isinstance(value, str):
        s = value.strip()
    else:
        s = value
    whole = True
    try:
        if isinstance(current, bool):
            return s if isinstance(s, bool) else str(s).lower() in ("1", "true", "yes", "on")
        if isinstance(current, int):
            if isinstance(s, int) or (isinstance(s, str) and s.lstrip("+-").isdigit()):
                return int(s)
            f = float(s)
            if f.is_integer():
                return int(f)
            whole = False
        if isinstance(current, float):
            return float(s)
    except (TypeError, ValueError, OverflowError):
        raise WorkflowError(f"{role}: {value!r} is not a number") from None
    if isinstance(current, int) and not whole:
        raise WorkflowError(f"{role}: {value!r} is not a whole number")
    if current is None and role in ("seed", "steps", "frames", "width", "height", "fs", "batch_size",
                                    "window_size", "window_stride"):
        try:
            return int(s)
        except (TypeError, ValueError):
            raise WorkflowError(f"{role}: {value!r} is not a whole number") from None
    if current is None and role in ("cfg", "fps"):
        try:
            return float(s)
        except (TypeError, ValueError):
            raise WorkflowError(f"{role}: {value!r} is not a number") from None
    return value


def fill(wf, roles, values, output_prefix=None):
    """Return a copy of wf with each role in `values` written; output_prefix sets every
    filename_prefix.  Raises WorkflowError for a value whose role the workflow lacks."""
    wf = copy.deepcopy(wf)
    for role, value in values.items():
        if role in BATCH_COLUMNS:
            continue
        if role not in roles:
            raise WorkflowError(f"the workflow has no {role!r} input (found roles: {', '.join(sorted(roles))}); "
                                "map it with --roles")
        for nid, name in roles[role]:
            current = wf[nid]["inputs"].get(name)
            wf[nid]["inputs"][name] = coerce(value, current, role)
    if output_prefix is not None:
        for nid, name in roles.get("output", ()):
            wf[nid]["inputs"][name] = output_prefix
    return wf


def fingerprint(wf):
    """Stable hash of a filled workflow, ignoring filename prefixes."""
    wf = copy.deepcopy(wf)
    for node in wf.values():
        if "filename_prefix" in node.get("inputs", {}):
            node["inputs"]["filename_prefix"] = ""
    return hashlib.sha256(json.dumps(wf, sort_keys=True).encode()).hexdigest()[:16]


def describe_roles(wf, roles):
    lines = []
    for role in list(ROLES) + sorted(set(roles) - set(ROLES)):
        if role in roles:
            where = ", ".join(f"node {n} ({wf[n]['class_type']}).{i}" for n, i in roles[role])
            lines.append(f"  {role:10s} -> {where}")
        elif not role.startswith("key_frame_"):  # key frames only where a workflow has them: no 8 empty lines
            lines.append(f"  {role:10s} -> (not found)")
    return "\n".join(lines)


def upload_name(path):
    """Content-addressed file name used for an uploaded image."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    stem, ext = os.path.splitext(os.path.basename(path))
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40]
    return f"vcb_{stem}_{h.hexdigest()[:12]}{ext.lower() or '.png'}"
