"""The one atomic file writer of the pack (no ComfyUI imports: the trainer and command-line tools use it).

A file is written under a temporary name beside its target, flushed to disk, then moved into place,
so a process killed mid-write leaves the previous file (or none), never half of one. The temporary
name ends in `.partial` and starts with a dot: ComfyUI lists every file with a model extension
(`.safetensors`, `.ckpt`, ...) under its model folders, recursively and including dot files, so a
temporary that kept the model extension would show up in every model list after a kill. Names are
unique per call (several threads may write into one folder at once, e.g. parallel downloads).
"""
import os
import tempfile

TEMP_SUFFIX = ".partial"


class OutputExistsError(FileExistsError):
    """The target exists and the caller did not ask to replace it."""


def refuse_existing(path, what="file", option="overwrite"):
    """Raise when `path` exists: the message names the file and how to proceed."""
    if os.path.lexists(path):
        raise OutputExistsError(f"{what} {path} already exists; enable '{option}' to replace it, "
                                "or choose another name.")


def atomic_write(path, write, overwrite=True):
    """`write(tmp_path)` then move the result to `path`. With overwrite=False an existing `path` is
    never replaced (checked atomically at the final link); the temporary file is removed on any failure."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if not overwrite:
        refuse_existing(path)  # fail before the (possibly long) write
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the target appeared meanwhile: no check-then-replace race
            except FileExistsError:
                refuse_existing(path)
                raise
            except OSError:  # a file system without hard links: the upfront check has to do
                refuse_existing(path)
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_safetensors(tensors, path, metadata=None, overwrite=True):
    """torch tensors -> `.safetensors` at `path`, atomically."""
    import safetensors.torch
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata=metadata),
                        overwrite=overwrite)
