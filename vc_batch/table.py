"""Job tables: CSV (with a header row) or JSONL (one object per line).

Columns (case-insensitive, aliases accepted); a blank cell / missing key keeps the
workflow's value:
    prompt, negative, image, seed, steps, cfg, fps, frames, width, height, checkpoint, name
plus `workflow` (a per-row API workflow path) and any extra role defined in a
--roles mapping file.
"""
import csv
import json
import os
import re

# canonical column -> accepted spellings
ALIASES = {
    "prompt": ("prompt", "positive", "text", "positive_prompt"),
    "negative": ("negative", "negative_prompt", "neg"),
    "image": ("image", "image_path", "init_image", "input_image"),
    "seed": ("seed",),
    "steps": ("steps",),
    "cfg": ("cfg", "cfg_scale", "guidance", "guidance_scale"),
    "fps": ("fps", "frame_rate"),
    "frames": ("frames", "length", "num_frames", "video_frames"),
    "width": ("width", "w"),
    "height": ("height", "h"),
    "checkpoint": ("checkpoint", "ckpt", "ckpt_name", "model"),
    "name": ("name", "output", "output_name", "job", "id"),
    "workflow": ("workflow",),
}
_ALIAS_TO_CANON = {a: canon for canon, names in ALIASES.items() for a in names}

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class TableError(ValueError):
    pass


class Job:
    """One row: `values` holds the non-blank cells by canonical (or extra-role) name."""

    def __init__(self, index, name, values, line):
        self.index = index  # 1-based row number among jobs
        self.name = name
        self.values = values
        self.line = line  # where it came from, for messages

    @property
    def is_i2v(self):
        return bool(self.values.get("image"))

    def __repr__(self):
        return f"Job({self.name!r}, {self.values!r})"


def safe_name(name):
    name = _SAFE.sub("_", str(name).strip()).strip("._")
    return name[:120]


def _blank(v):
    return v is None or (isinstance(v, str) and v.strip() == "")


def _normalize_row(raw, extra_roles, unknown):
    values = {}
    for key, val in raw.items():
        if key is None:  # csv: more cells than header names
            continue
        k = str(key).strip().lower().replace(" ", "_").replace("-", "_")
        canon = _ALIAS_TO_CANON.get(k)
        if canon is None and k in extra_roles:
            canon = k
        if canon is None:
            if k:
                unknown.add(str(key))
            continue
        if _blank(val):
            continue
        if isinstance(val, str) and canon not in ("prompt", "negative"):
            val = val.strip()
        values[canon] = val
    return values


def read_rows(path):
    """Yield (line_description, dict) for each row of a CSV or JSONL file."""
    ext = os.path.splitext(path)[1].lower()
    with open(path, newline="", encoding="utf-8-sig") as f:
        if ext in (".jsonl", ".ndjson", ".json"):
            for n, line in enumerate(f, 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TableError(f"{path}:{n}: not valid JSON: {e}") from None
                if not isinstance(obj, dict):
                    raise TableError(f"{path}:{n}: each line must be a JSON object")
                yield f"{path}:{n}", obj
        else:
            sample = f.read(4096)
            f.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            reader = csv.DictReader(f, dialect=dialect)
            if not reader.fieldnames:
                raise TableError(f"{path}: empty table (a header row is required)")
            for row in reader:
                if all(_blank(v) for v in row.values() if not isinstance(v, list)):
                    continue
                yield f"{path}:{reader.line_num}", row


def load_jobs(path, extra_roles=(), warn=print):
    """Parse a job table into Jobs with unique safe names. Image/workflow paths are made
    absolute relative to the table's folder."""
    extra_roles = {r.lower() for r in extra_roles}
    base = os.path.dirname(os.path.abspath(path))
    unknown = set()
    jobs = []
    for line, raw in read_rows(path):
        values = _normalize_row(raw, extra_roles, unknown)
        index = len(jobs) + 1
        for key in ("image", "workflow"):
            if key in values:
                p = os.path.expanduser(str(values[key]))
                values[key] = p if os.path.isabs(p) else os.path.join(base, p)
        if "name" in values:
            name = safe_name(values.pop("name"))
            if not name:
                raise TableError(f"{line}: the name cell has no usable characters")
        else:
            name = f"job_{index:05d}"
        jobs.append(Job(index, name, values, line))
    if unknown:
        warn(f"warning: ignoring unknown column(s) {', '.join(sorted(unknown))} "
             f"(known: {', '.join(ALIASES)}; extra roles come from --roles)")
    seen = {}
    for job in jobs:
        if job.name in seen:
            raise TableError(f"{job.line}: job name {job.name!r} already used at {seen[job.name]}; "
                             "names must be unique (they key the manifest and the output folders)")
        seen[job.name] = job.line
    if not jobs:
        raise TableError(f"{path}: no jobs")
    return jobs
