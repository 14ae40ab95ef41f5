"""The one atomic file writer of the pack (no ComfyUI imports: the trainer and command-line tools use it).

A file is written under a temporary name beside its target, flushed to disk, then moved into place,
so a process killed mid-write leaves the previous file (or none), never half of one. The temporary
name ends in `.partial` and starts with a dot: ComfyUI lists every file with a model extension
(`.safetensors`, `.ckpt`, ...) under its model folders, recursively and including dot files, so a
temporary that kept the model extension would show up in every model list after a kill. Names are
unique per call (several threads may write into one folder at once, e.g. parallel downloads).
"""
import os
import secrets

TEMP_SUFFIX = ".partial"


class OutputExistsError(FileExistsError):
    """The target exists and the caller did not ask to replace it."""


def refuse_existing(path, what="file", option="overwrite"):
    """Raise when `path` exists: the message names the file and how to proceed."""
    if os.path.lexists(path):
        raise OutputExistsError(f"{what} {path} already exists; enable '{option}' to replace it, "
                                "or choose another name.")


def _create_temp(folder, name):
    """A new empty file `.<name>.<random>.partial` with the usual permissions (0o666 less the umask;
    tempfile.mkstemp would make it, and so the final model file, readable by its owner only)."""
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write(path, write, overwrite=True):
    """`write(tmp_path)` then move the result to `path`. With overwrite=False an existing `path` is
    never replaced (checked atomically at the final link); the temporary file is removed on any failure."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if not overwrite:
        refuse_existing(path)  # fail before the (possibly long) write
    tmp = _create_temp(folder, name)
    try:
        mode = os.stat(tmp).st_mode & 0o777  # 0o666 less the umask
        write(tmp)
        os.chmod(tmp, mode)  # writers that replace the file (safetensors does) leave it owner-only
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
