"""Released models of the VideoCrafter family: download from Hugging Face, convert once to fp16 `.safetensors`.

No ComfyUI imports: `scripts/download_models.py` uses this on servers without ComfyUI, and the
`VideoCrafterModelDownloader` node (vc_nodes/download.py) wraps it with ComfyUI's progress bar.

The models and their released files are `vc_models.registry`'s entries with a `release`, and its ControlNets
(`registry.CONTROLNETS`, for models/controlnet: `release.folder` says which ComfyUI models folder a file is for).

Flow for one model id (`fetch_model`):
1. `<dir>/<file>.safetensors` already there -> nothing to do (no network).
2. The released pickle is downloaded with huggingface_hub (honours `HF_ENDPOINT`, `HF_TOKEN`,
   `HF_HUB_OFFLINE`) into `<dir>/originals/<stem><ext>.part`. The `.part` name is no model extension, so
   ComfyUI never lists an unfinished file; an interrupted run resumes from it (HTTP Range), and a connection
   cut mid-file is resumed within the run by huggingface_hub itself.
   Before anything is written: the file must be verifiable (a sha256 pinned in the registry, else the hub's strong
   64-hex LFS ETag; with neither it is refused, saying why), and the disk must hold the rest of it plus its
   conversion. One process at a time downloads a file (a lock beside it, `filelock`: cross-platform); another
   waits, then uses the finished file. A write that fails (disk full) removes its `.part`: it cannot finish.
3. The bytes are checked against that sha256 before the file takes its real name
   `<dir>/originals/<stem><ext>` (a complete, verified pickle; loadable as is).
4. It is read with `torch.load(weights_only=True)` and written as `<dir>/<file>.safetensors`, floating-point
   weights in fp16 (noise-schedule buffers stay fp32), through the pack's atomic writer, so the
   `.safetensors` appears only when complete.
5. `delete_pickle` removes the pickle once the `.safetensors` is written.
"""
import hashlib
import inspect
import os
import re
import shutil
from dataclasses import dataclass

from . import registry


ORIGINALS = "originals"  # subfolder of the model folder holding the released pickles
PART_SUFFIX = ".part"
REFUSED_SUFFIX = ".refused"  # a pickle the converter refused, moved aside
SHA256 = re.compile(r"^[0-9a-f]{64}$")
CONTROLNET_KEY = "zero_convs.0.0.weight"  # what core's ControlNet loader recognises an SD-layout ControlNet by


class DownloadError(RuntimeError):
    """A model that could not be fetched; the message says what to do."""


def released_model(model_id):
    """The registry entry of a released model (or ControlNet) id; DownloadError naming the known ids otherwise."""
    known = registry.downloads()
    for entry in known:
        if entry.id == model_id:
            return entry
    raise DownloadError(f"Unknown model id {model_id!r}; known: {', '.join(e.id for e in known)}.")


def listing_line(entry):
    """One line of `scripts/download_models.py --list` for a released model."""
    needs = f" (needs {registry.entry(entry.base_model).release.file_name} for text/VAE)" if entry.base_model else ""
    if entry.release.folder == registry.CONTROLNET_FOLDER:
        needs += f" (goes to models/{entry.release.folder})"
    return f"{entry.id:15s} {entry.release.file_name:40s} {entry.description}{needs}  <- {entry.release.url}"


def hub_endpoint():
    """HF_ENDPOINT as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def manual_instructions(model, folder):
    return (f"Download {model.release.url} yourself (page {model.release.page}) and save it as "
            f"{os.path.join(folder, ORIGINALS, model.release.pickle_name)}; the next run converts it to "
            f"{os.path.join(folder, model.release.file_name)} without going online.")


def sha256_of(path, chunk=1 << 24):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


def _progress_tqdm(callback):
    """A tqdm class that also reports (bytes done, total) to `callback` (terminal bar stays as is)."""
    from tqdm.auto import tqdm

    class ReportingTqdm(tqdm):
        def update(self, n=1):
            out = super().update(n)
            if callback is not None:
                callback(int(self.n), int(self.total or 0))
            return out

    return ReportingTqdm


def expected_sha256(model, url, etag, raw_etag):
    """(sha256 the download must have, where it comes from): the registry's pin of the released file, else the hub's
    strong LFS ETag (64 hex digits). DownloadError when there is neither (the ETag missing, weak, a 40-hex git hash,
    or lost behind a redirect to another host), or the hub's hash is not the pinned one: nothing unverified is kept."""
    if model.release.sha256:
        if SHA256.match(etag) and etag != model.release.sha256:
            raise DownloadError(f"{url} is not the released file: the hub's sha256 is {etag}, the released one's "
                                f"{model.release.sha256}, so nothing was downloaded. Check the repository's page "
                                f"({model.release.page}): the file was replaced since the release.")
        return model.release.sha256, "the released file's (pinned in the registry)"
    if SHA256.match(etag):
        return etag, "the hub's"
    raise DownloadError(f"{url} cannot be verified: the hub sent no sha256 for it (ETag {raw_etag or 'missing'}; a "
                        "download is checked against the hub's LFS sha256, a 64-hex ETag) and the registry pins none, "
                        "so nothing was downloaded. Use the Hugging Face hub or a mirror that sends LFS hashes "
                        f"(HF_ENDPOINT), or download the file yourself and check it against the sha256 on its page "
                        f"({model.release.page}).")


def existing_folder(path):
    """`path`, or the nearest folder above it that exists (where the disk space is measured)."""
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def check_free_space(url, folder, size, resume):
    """The disk must hold the rest of the download and the fp16 `.safetensors` made from it (at most the pickle's
    size): refused before anything is written, naming the sizes."""
    if size is None:
        return
    need = size - resume + size
    free = shutil.disk_usage(existing_folder(folder)).free
    if need > free:
        raise DownloadError(f"{url} is {_gb(size)} ({_gb(size - resume)} still to download) and its conversion up "
                            f"to {_gb(size)} more: {_gb(need)} are needed in {folder}, {_gb(free)} are free. Free "
                            "some space, or download to another disk (--dir, or another models folder).")


def _gb(size):
    return f"{size / 1e9:.1f} GB"


def download_pickle(model, folder, progress=None, log=print):
    """The released file into `<folder>/originals/<pickle_name>`, verified; returns its path.

    `progress(done_bytes, total_bytes)` is called as bytes arrive (it may raise to stop: the partial
    file stays and the next call resumes it)."""
    from filelock import FileLock, Timeout
    from huggingface_hub import hf_hub_url, get_hf_file_metadata

    originals = os.path.join(folder, ORIGINALS)
    final = os.path.join(originals, model.release.pickle_name)
    url = hf_hub_url(model.release.repo, model.release.file, endpoint=hub_endpoint())
    try:
        meta = get_hf_file_metadata(url)
    except Exception as e:  # offline, DNS, refused, 401/404, HF_HUB_OFFLINE ...
        raise DownloadError(f"Could not get {url}: {type(e).__name__}: {e}. {manual_instructions(model, folder)}") from e
    etag = (meta.etag or "").strip('"').lower()
    sha256, source = expected_sha256(model, url, etag, meta.etag)
    part = final + PART_SUFFIX
    resume = os.path.getsize(part) if os.path.exists(part) and _read(part + ".etag") == sha256 else 0
    check_free_space(url, folder, meta.size, resume)
    os.makedirs(originals, exist_ok=True)
    lock = FileLock(final + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"{model.id}: another process is downloading {final}; waiting for it")
        lock.acquire()
    try:
        if os.path.isfile(final):  # the other process finished it
            return final
        return _download_locked(model, folder, url, meta, sha256, source, final, progress)
    finally:
        lock.release()


def _download_locked(model, folder, url, meta, sha256, source, final, progress):
    from huggingface_hub.file_download import http_get
    part = final + PART_SUFFIX
    # A .part of another file version (its sha256 is stored beside it) is not resumed.
    tag_file = part + ".etag"
    if os.path.exists(part) and _read(tag_file) != sha256:
        os.remove(part)
    with open(tag_file, "w") as f:
        f.write(sha256)
    resume = os.path.getsize(part) if os.path.exists(part) else 0
    if meta.size is not None and resume > meta.size:
        os.remove(part)
        resume = 0
    kwargs = {"resume_size": resume, "expected_size": meta.size, "displayed_filename": f"{model.id} ({model.release.file})"}
    if "tqdm_class" in inspect.signature(http_get).parameters:  # older huggingface_hub: terminal bar only
        kwargs["tqdm_class"] = _progress_tqdm(progress)
    with open(part, "ab") as f:
        try:
            http_get(meta.location or url, f, **kwargs)
        except Exception as e:
            if "Consistency check failed" in str(e):  # the size differs: nothing to resume from
                f.close()
                _remove(part, tag_file)
                raise DownloadError(f"Download of {url} is incomplete or damaged ({e}). Run again to retry. "
                                    f"{manual_instructions(model, folder)}") from e
            if type(e).__module__.startswith(("httpx", "huggingface_hub", "requests", "urllib3")):
                f.flush()
                raise DownloadError(f"Download of {url} failed: {type(e).__name__}: {e}. Run again to resume "
                                    f"from the {os.path.getsize(part)} bytes kept in {part}. "
                                    f"{manual_instructions(model, folder)}") from e
            if isinstance(e, OSError):  # disk full, no permission...: this .part cannot finish here
                f.close()
                _remove(part, tag_file)
                raise DownloadError(f"Download of {url} stopped: could not write {part}: {e.strerror or e}. The "
                                    "partial file was removed. Free some space (or fix the folder), then run again.") from e
            raise  # an interrupt: the bytes stay, the next run resumes them
    digest = sha256_of(part)
    if digest != sha256:
        _remove(part, tag_file)
        raise DownloadError(f"Download of {url} is corrupt: sha256 {digest} but {source} is {sha256}. "
                            f"The partial file was removed; run again to download it anew. "
                            f"{manual_instructions(model, folder)}")
    os.replace(part, final)
    _remove(tag_file)
    return final


def _read(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read().strip()


def _remove(*paths):
    for p in paths:
        if os.path.exists(p):
            os.remove(p)


def convert_pickle(model, pickle_path, dst):
    """Released pickle -> fp16 `.safetensors` at `dst` (atomic). Raises DownloadError for an unreadable file."""
    from .atomic_file import write_safetensors  # torch: imported only when there is work
    from .checkpoint_file import CheckpointError, load_state_dict, UNET_PREFIX
    from .convert import safetensors_tensors
    try:
        sd = load_state_dict(pickle_path)
    except CheckpointError as e:
        raise DownloadError(f"{pickle_path} is not a usable {model.description} file: {e}") from e
    controlnet = model.release.folder == registry.CONTROLNET_FOLDER
    if controlnet and not any(k.endswith(CONTROLNET_KEY) for k in sd):
        raise DownloadError(f"{pickle_path} holds no '{CONTROLNET_KEY}' tensor: not an SD-layout ControlNet "
                            f"({model.description}).")
    if model.release.bare_unet and any(k.startswith(UNET_PREFIX) for k in sd):
        raise DownloadError(f"{pickle_path} is a full checkpoint, not the bare UNet state dict {model.release.repo} releases.")
    if not model.release.bare_unet and not controlnet and not any(k.startswith(UNET_PREFIX) for k in sd):
        raise DownloadError(f"{pickle_path} holds no 'model.diffusion_model.' tensors: not a {model.description} checkpoint.")
    tensors = safetensors_tensors(sd, fp16=True, keep_schedule=not (model.release.bare_unet or controlnet))
    try:
        write_safetensors(tensors, dst, metadata={"videocrafter_model": model.id, "source": model.release.url})
    except OSError as e:  # disk full, read-only...: the pickle stays, the next run converts it
        raise DownloadError(f"Could not write {dst}: {e.strerror or e}. Free some space (or fix the folder) and run "
                            f"again: the downloaded {pickle_path} is kept and converted then.") from e
    return dst


@dataclass
class FetchResult:
    path: str
    downloaded: bool
    converted: bool
    pickle_path: str = None  # None when deleted


def fetch_model(model_id, folder, delete_pickle=False, progress=None, log=print):
    """Make `<folder>/<file_name>` exist for a released model id; see the module docstring."""
    model = released_model(model_id)
    folder = os.path.abspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise DownloadError(f"{folder} is a file, not a folder: give a folder for the models (it is made if missing).")
    dst = os.path.join(folder, model.release.file_name)
    pickle_path = os.path.join(folder, ORIGINALS, model.release.pickle_name)
    if os.path.isfile(dst):
        log(f"{model.id}: {dst} is already there.")
        return FetchResult(dst, False, False, pickle_path if os.path.isfile(pickle_path) else None)
    downloaded = False
    if os.path.isfile(pickle_path):
        log(f"{model.id}: using the downloaded {pickle_path}.")
    else:
        log(f"{model.id}: downloading {hub_endpoint()}/{model.release.repo}/resolve/main/{model.release.file} "
            f"into {os.path.join(folder, ORIGINALS)}")
        pickle_path = download_pickle(model, folder, progress, log)
        downloaded = True
    log(f"{model.id}: converting to fp16 safetensors -> {dst}")
    try:
        convert_pickle(model, pickle_path, dst)
    except DownloadError as e:
        if os.path.isfile(dst):
            raise
        # a pickle the converter refuses is moved aside: otherwise it stays listed as a model (originals/ is inside
        # the models folder) and every later run fails on it again instead of downloading the file anew
        refused = pickle_path + REFUSED_SUFFIX
        os.replace(pickle_path, refused)
        raise DownloadError(f"{e} It was moved to {refused} (no longer listed or used; delete it): the next run "
                            "downloads the released file again.") from e
    if delete_pickle:
        os.remove(pickle_path)
        log(f"{model.id}: deleted {pickle_path}")
        pickle_path = None
    return FetchResult(dst, downloaded, True, pickle_path)
