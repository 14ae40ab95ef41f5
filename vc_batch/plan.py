"""Planning a batch, apart from any server: which workflow each row uses, the filled workflow,
the `random` seeds drawn once into the manifest, and which jobs a run still has to do.

Both executors (one server: runner.py; several workers: ray_executor.py) start from here and
keep the same manifest; nothing in this module talks to a server.
"""
import os
import random

from . import workflow as wfm
from .columns import IMAGE_COLUMNS

# the first bytes of the image files a row may upload (WebP: RIFF....WEBP, checked apart)
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def _inside(path, root):
    """Lexically (abspath folds '..'), as the pack's nodes check their paths (vc_models/paths.py; this client
    imports nothing of the pack's model code)."""
    try:
        common = os.path.commonpath([os.path.abspath(path), root])
    except ValueError:  # another drive on Windows
        return False
    return os.path.normcase(common) == os.path.normcase(root)


class Planned:
    """A job ready to submit: its row's values (a `random` seed already drawn) and the workflow
    template.  The workflow sent to a server is made by workflow_for() once that server has the
    job's images, under the names the server gave them."""

    def __init__(self, job, workflow_path, template, roles, values, uploads, output_prefix=None):
        self.job = job
        self.name = job.name
        self.workflow_path = workflow_path
        self.template = template
        self.roles = roles
        self.values = values
        self.uploads = uploads  # role -> (local path, content-addressed upload name)
        self.output_prefix = output_prefix
        self.wf = self.workflow_for({})  # with the upload names: what the fingerprint covers
        self.fingerprint = wfm.fingerprint(self.wf)
        self.prompt_id = None
        self.server_url = None  # the server an earlier run submitted prompt_id to
        self.may_have_run = False
        self.attempt_returned = False  # the manifest's attempts no longer count the current prompt_id
        self.submitted = self.started = None  # monotonic times, kept by the executor running it

    def workflow_for(self, server_names):
        """The filled workflow, images under the names one server stored them as."""
        values = dict(self.values)
        for role, (_, name) in self.uploads.items():
            values[role] = server_names.get(name, name)
        return wfm.fill(self.template, self.roles, values, output_prefix=self.output_prefix)


class Planner:
    def __init__(self, jobs, manifest, *, t2v_workflow=None, i2v_workflow=None, workflow=None, role_map=None,
                 prefix="vc_batch", skip_failed=False, image_roots=(), log=print):
        self.jobs = jobs
        self.image_roots = [os.path.abspath(root) for root in image_roots]  # empty: images from anywhere
        self.manifest = manifest
        self.t2v_workflow = t2v_workflow
        self.i2v_workflow = i2v_workflow
        self.workflow = workflow
        self.role_map = role_map or {}
        self.prefix = prefix.strip("/")
        self.skip_failed = skip_failed
        self.log = log
        self._wf_cache = {}

    def _workflow_for(self, job):
        path = job.values.get("workflow") or self.workflow or (
            self.i2v_workflow if job.has_image else self.t2v_workflow)
        path = os.path.abspath(path)
        if path not in self._wf_cache:
            wf = wfm.load_workflow(path)
            roles = wfm.find_roles(wf, self.role_map)
            self._wf_cache[path] = (wf, roles)
        return path, self._wf_cache[path]

    def plan(self, job, seed=None):
        """Planned job; `seed` replaces a `random` seed cell (the caller draws and records it)."""
        path, (wf, roles) = self._workflow_for(job)
        values = dict(job.values)
        if is_random_seed(values.get("seed")):
            if seed is None:
                raise wfm.WorkflowError("seed 'random' must be drawn before planning")
            values["seed"] = seed
        key_frames = [role for role in roles if role.startswith("key_frame_")]
        given = [role for role in key_frames if role in values]
        if given and len(given) != len(key_frames):
            raise wfm.WorkflowError(f"the workflow takes {len(key_frames)} key frames ({', '.join(key_frames)}); "
                                    f"the row gives {', '.join(given)}: fill every one, or use a workflow with "
                                    f"{len(given)} key frames")
        uploads = {}
        for role in IMAGE_COLUMNS:
            if role in values:
                local = values[role]
                self.check_image(role, local)
                uploads[role] = (local, wfm.upload_name(local))
        return Planned(job, path, wf, roles, values, uploads, output_prefix=f"{self.prefix}/{job.name}/{job.name}")

    def check_image(self, role, local):
        """A row's image is uploaded to the server (where /view serves it back): it must be an image file inside one
        of the image roots, so a table cannot send any file this user can read."""
        if self.image_roots and not any(_inside(local, root) for root in self.image_roots):
            raise wfm.WorkflowError(f"{role} {local} lies outside {' and '.join(self.image_roots)}, where this "
                                    "batch takes images from: move it there, or name its folder with --image-root")
        if not os.path.isfile(local):
            raise wfm.WorkflowError(f"{role} not found: {local}")
        with open(local, "rb") as f:
            head = f.read(16)
        if not head.startswith(IMAGE_SIGNATURES) and not (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
            raise wfm.WorkflowError(f"{role} {local} is not an image (PNG, JPEG, WebP, GIF, BMP or TIFF): only "
                                    "images are uploaded")

    def roles_report(self, job):
        path, (wf, roles) = self._workflow_for(job)
        return f"{path}:\n{wfm.describe_roles(wf, roles)}"

    def draw_seed(self, job):
        """The job's `random` seed: drawn once, kept in the manifest (saved before anything is
        submitted), so a rerun after a crash rebuilds the same prompt and finds it."""
        entry = self.manifest.ensure(job.name)
        if entry.get("seed") is None:
            entry["seed"] = random.randrange(0, 2 ** 32)
        return entry["seed"]

    def select(self):
        """Plan the jobs still to do; failures while planning are recorded at once.  Returns
        (jobs to submit, jobs an earlier run submitted: prompt_id and server_url set, to be
        looked for on that server before anything is submitted again, number failed)."""
        todo, adopt, failed = [], [], 0
        for job in self.jobs:
            entry = self.manifest.ensure(job.name)
            status = entry.get("status")
            try:
                seed = self.draw_seed(job) if is_random_seed(job.values.get("seed")) else None
                planned = self.plan(job, seed)
            except (wfm.WorkflowError, OSError) as e:
                if status == "done":
                    continue
                self.manifest.update(job.name, status="failed", error=str(e), workflow=None)
                failed += 1
                self.log(f"FAILED {job.name}: {e}")
                continue
            if status == "done":
                if entry.get("fingerprint") and entry["fingerprint"] != planned.fingerprint:
                    self.log(f"note: {job.name} is done but its row/workflow changed since; "
                             "delete its manifest line to run it again")
                continue
            if status == "failed" and self.skip_failed:
                continue
            pid = entry.get("prompt_id")
            if status in ("queued", "cancelled") and pid and entry.get("fingerprint") == planned.fingerprint:
                planned.prompt_id, planned.server_url = pid, entry.get("server")
                # an earlier run that died cannot tell us whether it started; one we cancelled did not crash
                planned.may_have_run = status == "queued"
                planned.attempt_returned = status == "cancelled"  # Ledger.cancel gave its attempt back already
                adopt.append(planned)
                continue
            todo.append(planned)
        self.manifest.save()  # drawn seeds are on disk before anything is submitted
        return todo, adopt, failed

    def done_count(self):
        return sum(1 for j in self.jobs if self.manifest.status(j.name) == "done")

    def summary(self):
        c = self.manifest.summary({j.name for j in self.jobs})
        return ("summary: " + ", ".join(f"{k}={v}" for k, v in sorted(c.items(), key=lambda kv: str(kv[0])))
                + f"  (manifest: {self.manifest.path})")


def is_random_seed(value):
    return isinstance(value, str) and value.strip().lower() == "random"
