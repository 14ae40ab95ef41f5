"""The one vocabulary of the batch tool: the table columns, their accepted spellings, and the
workflow role each one fills (workflow.find_roles finds the inputs of a role by its name).

A column's canonical name is its role's name.  `name` and `workflow` steer the batch itself and
fill nothing; the `output` role (every filename_prefix) is set by the tool, never by a column.
"""

# canonical column / role -> accepted spellings in a table header (compared lower-case, with
# spaces and dashes read as underscores)
COLUMNS = {
    "prompt": ("prompt", "positive", "text", "positive_prompt"),
    "negative": ("negative", "negative_prompt", "neg"),
    "image": ("image", "image_path", "init_image", "input_image", "start_image", "start_frame", "first_frame"),
    "end_image": ("end_image", "end_frame", "last_frame"),
    # the images of VideoCrafter Key-Frame Sequence, in order (key_frame_1 is the first of the batch)
    **{f"key_frame_{i}": (f"key_frame_{i}", f"keyframe_{i}", f"key_{i}") for i in range(1, 1 + 8)},
    "seed": ("seed",),
    "steps": ("steps",),
    "cfg": ("cfg", "cfg_scale", "guidance", "guidance_scale"),
    "fps": ("fps", "frame_rate"),
    "fs": ("fs", "frame_stride"),
    "frames": ("frames", "length", "num_frames", "video_frames"),
    "width": ("width", "w"),
    "height": ("height", "h"),
    "batch_size": ("batch_size", "batch"),
    "mode": ("mode",),
    "window_size": ("window_size",),
    "window_stride": ("window_stride",),
    "checkpoint": ("checkpoint", "ckpt", "ckpt_name", "model"),
    "unet": ("unet", "unet_name"),
    "name": ("name", "output", "output_name", "job", "id"),
    "workflow": ("workflow",),
}

# columns that name a batch setting rather than a workflow input
BATCH_COLUMNS = ("name", "workflow")
# columns holding a local file that is uploaded to the server's input folder
IMAGE_COLUMNS = ("image", "end_image") + tuple(c for c in COLUMNS if c.startswith("key_frame_"))
# columns whose text is used exactly as written (others are stripped of surrounding blanks)
VERBATIM_COLUMNS = ("prompt", "negative")
# roles the tool fills itself
TOOL_ROLES = ("output",)
# every role find_roles may report, in the order --dry-run lists them
ROLES = tuple(c for c in COLUMNS if c not in BATCH_COLUMNS) + TOOL_ROLES

ALIAS_TO_COLUMN = {a: canon for canon, names in COLUMNS.items() for a in names}


def normalize_header(name):
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def column_of(header, extra_roles=()):
    """Canonical column for a header cell, an extra role (from --roles) or None if unknown."""
    k = normalize_header(header)
    if k in ALIAS_TO_COLUMN:
        return ALIAS_TO_COLUMN[k]
    return k if k in extra_roles else None
