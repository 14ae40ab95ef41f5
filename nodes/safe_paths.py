"""Paths the nodes accept from a prompt. On a `--listen` server anyone with API access fills these
inputs, so a path names a place under ComfyUI's own input / models folders; an absolute path
elsewhere needs the server owner's explicit permission (the environment variable below, set where
the server starts, never a node input an API user could set). Output names are plain file names.
"""
import os

ALLOW_ABSOLUTE_ENV = "VIDEOCRAFTER_ALLOW_ABSOLUTE_PATHS"


def absolute_paths_allowed():
    return os.environ.get(ALLOW_ABSOLUTE_ENV, "").strip().lower() in ("1", "true", "yes")


def _inside(path, root):
    # lexical check (abspath folds '..'): a symlink the server owner placed inside a folder is followed on purpose
    root = os.path.abspath(root)
    try:
        return os.path.commonpath([os.path.abspath(path), root]) == root
    except ValueError:  # another drive on Windows
        return False


def resolve_input_path(value, roots, what):
    """`value` relative to the first of `roots` (folders) where it exists; it may not climb out of them.
    Absolute paths must lie inside a root unless the server owner allowed absolute paths."""
    value = value.strip()
    if not value:
        raise ValueError(f"'{what}' is empty.")
    where = " or ".join(roots)
    if os.path.isabs(value) or value.startswith("~"):
        path = os.path.abspath(os.path.expanduser(value))
        if absolute_paths_allowed() or any(_inside(path, root) for root in roots):
            return path
        raise ValueError(f"'{what}' {value!r} is outside {where}. Give a path relative to that folder, or let the "
                         f"server owner allow absolute paths (start ComfyUI with {ALLOW_ABSOLUTE_ENV}=1).")
    candidates = [os.path.abspath(os.path.join(root, value)) for root in roots]
    if not all(_inside(path, root) for path, root in zip(candidates, roots)):
        raise ValueError(f"'{what}' {value!r} climbs out of {where} ('..'); give a path inside it.")
    return next((path for path in candidates if os.path.exists(path)), candidates[0])


def plain_file_name(value, what, default=""):
    """A file name with no folder part: written results cannot land outside their folder."""
    name = value.strip() or default
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or os.path.isabs(name):
        raise ValueError(f"'{what}' {value!r} must be a plain file name (no folders, no '..').")
    return name
