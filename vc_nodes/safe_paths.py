"""Paths the nodes accept from a prompt. On a `--listen` server anyone with API access fills these
inputs, so a path names a place under ComfyUI's own input / models folders; an absolute path
elsewhere needs the server owner's explicit permission (the environment variable below, set where
the server starts, never a node input an API user could set). Output names are plain file names.
"""
import os

from ..vc_models.paths import inside as _inside

ALLOW_ABSOLUTE_ENV = "VIDEOCRAFTER_ALLOW_ABSOLUTE_PATHS"


def absolute_paths_allowed():
    return os.environ.get(ALLOW_ABSOLUTE_ENV, "").strip().lower() in ("1", "true", "yes")


# names Windows gives to devices in every folder ("NUL.txt" too) and characters it refuses in a file name
# (':' also names an NTFS stream or a drive): refused everywhere, so a graph means the same on every server
WINDOWS_DEVICE_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
WINDOWS_FORBIDDEN_CHARS = set('<>:"|?*\\/') | {chr(c) for c in range(32)}


def _anchored(value, paths):
    """True for a path that does not start in the current folder: absolute, home-relative, or on Windows
    one with a drive ('C:x', relative to that drive's own current folder) or a root ('\\x', on the current drive)."""
    return (paths.isabs(value) or value.startswith("~") or bool(paths.splitdrive(value)[0])
            or value[:1] in (paths.sep, paths.altsep or paths.sep))


def resolve_input_path(value, roots, what, paths=os.path):
    """`value` relative to the first of `roots` (folders) where it exists; it may not climb out of them.
    Absolute paths must lie inside a root unless the server owner allowed absolute paths.
    `paths` is the path flavour (os.path; posixpath or ntpath to check one platform's rules on another)."""
    value = value.strip()
    if not value:
        raise ValueError(f"'{what}' is empty.")
    where = " or ".join(roots)
    if _anchored(value, paths):
        path = paths.abspath(paths.expanduser(value))
        if absolute_paths_allowed() or any(_inside(path, root, paths) for root in roots):
            return path
        raise ValueError(f"'{what}' {value!r} is outside {where}. Give a path relative to that folder, or let the "
                         f"server owner allow absolute paths (start ComfyUI with {ALLOW_ABSOLUTE_ENV}=1).")
    candidates = [paths.abspath(paths.join(root, value)) for root in roots]
    if not all(_inside(path, root, paths) for path, root in zip(candidates, roots)):
        raise ValueError(f"'{what}' {value!r} climbs out of {where} ('..'); give a path inside it.")
    return next((path for path in candidates if paths.exists(path)), candidates[0])


# file systems allow 255 bytes per name; results add suffixes (`_projector.safetensors`) and the atomic writer its
# temporary's: a longer output name failed deep inside with ENAMETOOLONG naming a temporary file
MAX_NAME_BYTES = 200


def plain_file_name(value, what, default=""):
    """A file name with no folder part, valid on Windows and Unix alike: written results cannot land
    outside their folder (a drive, stream or device name would on Windows)."""
    name = value.strip() or default
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"'{what}' is {len(name.encode('utf-8'))} bytes long ({name[:40]}...); give at most "
                         f"{MAX_NAME_BYTES} (file systems allow 255 for a whole file name, and results add suffixes).")
    device = name.split(".")[0].strip().upper()
    if (not name or set(name) & WINDOWS_FORBIDDEN_CHARS or device in WINDOWS_DEVICE_NAMES
            or name.endswith((".", " "))):
        raise ValueError(f"'{what}' {value!r} must be a plain file name (no folders, no '..', none of "
                         f"<>:\"|?* and not a Windows device name such as NUL or COM1).")
    return name
