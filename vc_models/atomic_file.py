"""The one atomic file writer of the pack (no ComfyUI imports: the trainer and command-line tools use it).

A file is written under a temporary name beside its target, flushed to disk, then moved into place,
so a process killed mid-write leaves the previous file (or none), never half of one. The temporary
name ends in `.partial` and starts with a dot: ComfyUI lists every file with a model extension
(`.safetensors`, `.ckpt`, ...) under its model folders, recursively and including dot files, so a
temporary that kept the model extension would show up in every model list after a kill. Names are
unique per call (several threads may write into one folder at once, e.g. parallel downloads) and carry the writer's
process id: a writer killed mid-write (kill -9, a crash, a power cut) leaves a model-sized temporary that no one
would remove, so every write first sweeps the temporaries in its folder whose writer is gone (`sweep_stale`).
"""
import os
import re
import secrets
import time

TEMP_SUFFIX = ".partial"
# `.<name>.<pid>-<8 hex>.partial`; an earlier version wrote `.<name>.<8 hex>.partial` (no pid)
_TEMP_NAME = re.compile(r"^\..+\.(?:(\d+)-)?[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")
# a temporary of the earlier, pid-less kind is stale once untouched this long (no single write takes a day)
LEGACY_STALE_SECONDS = 24 * 3600
# file systems allow names of 255 bytes; the temporary adds the dot, pid, token and suffix, and keeps at most this
# much of the name (it only has to be recognisable)
NAME_LIMIT = 255
TEMP_NAME_KEEP = 160


class OutputExistsError(FileExistsError):
    """The target exists and the caller did not ask to replace it."""


def refuse_existing(path, what="file", option="overwrite"):
    """Raise when `path` exists: the message names the file and how to proceed."""
    if os.path.lexists(path):
        raise OutputExistsError(f"{what} {path} already exists; enable '{option}' to replace it, "
                                "or choose another name.")


def process_alive(pid):
    """Whether process `pid` runs on this machine; True when that cannot be told (the file is then kept)."""
    if pid == os.getpid():
        return True
    try:
        import psutil  # a ComfyUI requirement; the only way on Windows (os.kill there terminates the process)
        return psutil.pid_exists(pid)
    except ImportError:
        pass
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # it exists, run by another user
        return True
    return True


def sweep_stale(folder):
    """Remove the temporaries in `folder` whose writer is gone (its process no longer runs; pid-less ones of an
    earlier version once a day old); returns the names removed. A temporary of a writer on another machine sharing
    the folder looks gone: such setups should not write one file from two machines anyway."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _TEMP_NAME.match(name)
        if not match:
            continue
        path = os.path.join(folder, name)
        try:
            stale = (not process_alive(int(match.group(1))) if match.group(1)
                     else time.time() - os.path.getmtime(path) > LEGACY_STALE_SECONDS)
            if stale:
                os.remove(path)
                removed.append(name)
        except OSError:  # gone meanwhile, or not ours to remove
            pass
    return removed


def _create_temp(folder, name):
    """A new empty file `.<name>.<pid>-<random>.partial` with the usual permissions (0o666 less the umask;
    tempfile.mkstemp would make it, and so the final model file, readable by its owner only)."""
    while True:
        tmp = os.path.join(folder, f".{name[:TEMP_NAME_KEEP]}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write(path, write, overwrite=True):
    """`write(tmp_path)` then move the result to `path`. With overwrite=False an existing `path` is
    never replaced (checked atomically at the final link); the temporary file is removed on any failure."""
    folder, name = os.path.split(os.path.abspath(path))
    if len(os.fsencode(name)) > NAME_LIMIT:
        raise ValueError(f"The file name {name[:60]}... is {len(os.fsencode(name))} bytes long; file systems allow "
                         f"{NAME_LIMIT}: choose a shorter name.")
    os.makedirs(folder, exist_ok=True)
    if not overwrite:
        refuse_existing(path)  # fail before the (possibly long) write
    sweep_stale(folder)
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
