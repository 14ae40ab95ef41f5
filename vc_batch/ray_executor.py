"""The Ray executor: spread the planned jobs over N Ray actors, each owning one ComfyUI worker
(worker.ComfyWorker), and keep the manifest as the one ledger of what is done.

Ray places the actors (num_gpus per worker: Ray sets CUDA_VISIBLE_DEVICES) and restarts an
actor whose process dies (max_restarts).  Ray runs a call at least once; exactly once is kept
here: the driver alone writes the manifest, a job's prompt id is chosen here and recorded before
the worker submits it (the worker submits only if its server does not know that id), and a job
is `done` only once its files are written and renamed into place.  A job whose worker died is
submitted again (a new attempt, counted against --max-attempts) on whichever worker is free.

Ray is optional: it is imported only when --ray is given (requirements-cluster.txt).
"""
import collections
import os
import socket
import sys
import time
import uuid

from .client import ComfyClient
from .interrupts import Interrupts
from .ledger import Ledger
from .outputs import JobFolder
from .worker import ComfyWorker

INSTALL = 'pip install "ray[default]"  (or: pip install -r requirements-cluster.txt)'


class RayUnavailable(RuntimeError):
    """--ray cannot be honoured: Ray is not installed, or the cluster does not answer."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--ray needs Ray, which is not installed in {sys.executable}'s environment: "
                             f"{INSTALL}") from None
    return ray


def _gcs_reachable(address, timeout):
    """True if host:port (a `ray start --head` address, or ray://host:port) accepts a connection.
    ray.init itself retries an address that does not answer for minutes."""
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"--ray {address}: not an address; give host:port (e.g. 10.0.0.5:6379), "
                             "'auto' (the cluster `ray start` joined on this machine) or 'local'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def connect(address, num_cpus=None, timeout=10.0):
    """ray.init for --ray ADDRESS: 'local' starts a private Ray on this machine (num_cpus of it),
    'auto' joins the cluster started with `ray start` here, host:port / ray://host:port a remote
    head.  Raises RayUnavailable with what to do; nothing is written before it returns."""
    ray = import_ray()
    package = os.path.dirname(os.path.abspath(__file__))
    runtime_env = {"py_modules": [package]}  # the workers import vc_batch, on any node
    if address == "local":
        kwargs = {"address": "local", "num_cpus": num_cpus, "include_dashboard": False}
    else:
        if address != "auto" and not _gcs_reachable(address, timeout):
            raise RayUnavailable(f"--ray {address}: no Ray cluster answers there within {timeout:.0f}s; start one "
                                 "with `ray start --head` on that machine, or use --ray local")
        kwargs = {"address": address}
    try:
        ray.init(runtime_env=runtime_env, log_to_driver=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayUnavailable(f"--ray {address}: could not connect to Ray: {e} (start a cluster with "
                             "`ray start --head`, or use --ray local)") from None
    return ray


class Worker:
    """The driver's view of one actor."""

    def __init__(self, name, actor, url=None):
        self.name = name
        self.actor = actor
        self.url = url  # an existing --server; a launched ComfyUI's address is known once it is ready
        self.node = "?"
        self.state = "starting"  # idle, busy, restarting, dead
        self.job = None  # the Planned it runs
        self.adopted = []  # jobs an earlier run submitted to this worker's server: looked for first
        self.restarts = 0


class RayExecutor(Ledger):
    def __init__(self, planner, out_dir, *, ray, workers=None, servers=(), comfyui=None, comfyui_python=None,
                 comfyui_args="", work_dir=None, cpus_per_worker=1.0, gpus_per_worker=None, max_restarts=3,
                 max_attempts=3, retry_timeout=600.0, poll_interval=1.0, request_timeout=120.0, progress=None,
                 log=None):
        super().__init__(planner, max_attempts, progress, log)
        self.out_dir = os.path.abspath(out_dir)
        self.ray = ray
        self.poll_interval = poll_interval
        if gpus_per_worker is None:  # one GPU each where the cluster has GPUs
            gpus_per_worker = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        options = dict(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=max_restarts,
                       max_task_retries=0, max_concurrency=2)  # 2: cancel() while run() waits
        actor_class = ray.remote(ComfyWorker).options(**options)
        common = dict(retry_timeout=retry_timeout, poll_interval=poll_interval, request_timeout=request_timeout)
        self.workers = []
        if servers:
            for i, url in enumerate(servers, 1):
                name = f"w{i}"
                self.workers.append(Worker(name, actor_class.remote(name, server=url, **common),
                                           url=ComfyClient(url, "").base))
        else:
            for i in range(1, workers + 1):
                name = f"w{i}"
                self.workers.append(Worker(name, actor_class.remote(
                    name, comfyui=comfyui, comfyui_python=comfyui_python, comfyui_args=comfyui_args,
                    work_dir=work_dir, **common)))
        self.pending = collections.deque()
        self.refs = {}  # object ref -> (kind, Worker)
        self.asks = []  # (monotonic time, Worker): ask a restarting worker whether it is ready then
        self.interrupts = Interrupts(self.log, "the workers")

    @property
    def stop_requested(self):
        return self.interrupts.requested

    # -- main ----------------------------------------------------------------------------
    def run(self):
        """Returns the exit code: 0 all done, 1 some failed, 3 no worker left, 130 stopped."""
        todo, adopt, failed = self.planner.select()
        self.counts["failed"] += failed
        self.pending.extend(todo)
        by_url = {w.url: w for w in self.workers if w.url}
        for p in adopt:
            w = by_url.get(p.server_url)
            if w is not None:  # an existing server: it may still have (or have finished) the prompt
                w.adopted.append(p)
            else:  # a launched ComfyUI that ended with the earlier run: its prompt is gone
                self._requeue(p, f"{self.manifest.get(p.name).get('worker') or p.server_url} (prompt "
                                 f"{p.prompt_id[:8]}) ended with the earlier run", counted=p.may_have_run)
        self.open_bar()
        for w in self.workers:
            self.refs[w.actor.info.remote()] = ("info", w)
        try:
            with self.interrupts.on_main_thread():
                return self._loop()
        finally:
            if self.bar is not None:
                self.bar.close()

    def _loop(self):
        cancel_sent = False
        while True:
            if not self.stop_requested:
                self._dispatch()
            busy = [w for w in self.workers if w.job is not None]
            if self.stop_requested and not cancel_sent:
                for w in busy:
                    w.actor.cancel.remote(w.job.prompt_id)
                cancel_sent = True
            if self.stop_requested and not busy:
                return self.end(130, "stopped; run the same command again to resume")
            if not self.pending and not busy and not any(w.adopted for w in self.workers):
                return self.end(self.exit_code())
            if all(w.state == "dead" for w in self.workers):
                return self.end(3, "giving up: every worker is gone (see the errors above); "
                                   "run the same command again to resume")
            now = time.monotonic()
            for due, w in [a for a in self.asks if a[0] <= now]:
                self.asks.remove((due, w))
                self.refs[w.actor.info.remote()] = ("info", w)
            if not self.refs:  # only restarting workers to ask later
                time.sleep(self.poll_interval)
                continue
            ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=self.poll_interval)
            for ref in ready:
                kind, w = self.refs.pop(ref)
                if kind == "info":
                    self._on_info(w, ref)
                elif kind == "job":
                    self._on_result(w, ref)
            self._show()

    def _show(self):
        if self.bar is not None:
            self.bar.set_postfix_str("  ".join(f"{w.name}: {w.job.name if w.job else w.state}" for w in self.workers),
                                     refresh=True)

    # -- workers -----------------------------------------------------------------------------
    def _on_info(self, w, ref):
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.ActorUnavailableError:
            # restarting (calls to it fail meanwhile instead of waiting): ask again shortly
            w.state = "restarting"
            self.asks.append((time.monotonic() + self.poll_interval, w))
            return
        except self.ray.exceptions.RayError as e:
            w.state = "dead"
            self.log(f"worker {w.name} is gone: {last_lines(e)}")
            for p in w.adopted:
                self._requeue(p, f"{w.url} did not answer", counted=p.may_have_run)
            w.adopted = []
            return
        w.url, w.node = info["url"], info["node"]
        w.state = "idle"
        self.log(f"worker {w.name}: {w.url} on {w.node}" + (f" (restart {w.restarts})" if w.restarts else ""))

    def _dispatch(self):
        for w in self.workers:
            if w.state != "idle" or w.job is not None:
                continue
            if w.adopted:
                self._send(w, w.adopted.pop(0), resume=True)
                continue
            while self.pending and w.job is None:
                self._send(w, self.pending.popleft())

    def _send(self, w, p, resume=False):
        """Give p to w: a new attempt under a new prompt id (recorded before the worker submits
        it), or, resume=True, the prompt an earlier run submitted to w's server."""
        try:
            images = {}
            for local, name in p.uploads.values():
                with open(local, "rb") as f:
                    images[name] = f.read()
        except OSError as e:
            self.fail(p, f"image could not be read: {e}")
            return
        if resume:
            self.log(f"{p.name}: looking for its prompt {p.prompt_id[:8]} on {w.url} (submitted by an earlier run)")
        elif self.out_of_attempts(p):
            return
        else:
            attempts = self.attempts(p)
            p.prompt_id = str(uuid.uuid4())
            p.attempt_returned = False  # this submission is counted
            self.manifest.update(p.name, status="queued", prompt_id=p.prompt_id, server=w.url,
                                 worker=f"{w.name}@{w.node}", attempts=attempts + 1, fingerprint=p.fingerprint,
                                 workflow=p.workflow_path, error=None, files=[], seconds=None)
        p.submitted = time.monotonic()
        w.job, w.state = p, "busy"
        job = {"name": p.name, "prompt_id": p.prompt_id, "planned": p, "images": images}
        self.refs[w.actor.run.remote(job)] = ("job", w)

    def _on_result(self, w, ref):
        p, w.job = w.job, None
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            # the actor died with the job (its ComfyUI ended or stayed away): Ray restarts it
            w.restarts += 1
            w.state = "restarting"
            self.refs[w.actor.info.remote()] = ("info", w)
            self._requeue(p, f"worker {w.name} ({w.url}) died: {first_line(e)}", counted=True)
            return
        except self.ray.exceptions.RayError as e:
            w.state = "idle"
            self.fail(p, f"worker {w.name}: {first_line(e)}")
            return
        w.state = "idle"
        if result["status"] == "done":
            self._done(w, p, result)
        elif result["status"] == "interrupted" and self.stop_requested:
            self.cancel(p, f"{w.url} prompt {p.prompt_id[:8]}")
        elif result["status"] == "interrupted":
            self._requeue(p, f"{w.url} prompt {p.prompt_id[:8]}: {result['error']}", counted=True)
        else:
            self.fail(p, result["error"])

    def _requeue(self, p, why, counted):
        """Submit p again (a new attempt) on the next free worker."""
        self.retry(p, why, counted)
        self.pending.appendleft(p)

    def _done(self, w, p, result):
        """Write the files (each complete or absent), then the manifest says done."""
        folder = JobFolder(self.out_dir, p.name)
        folder.write(result["files"])
        self.done(p, folder.listed(result["files"]), result["seconds"], f", {w.name}", prompt_id=result["prompt_id"])


def last_lines(error, n=12):
    """What a worker that could not start said: its WorkerGone message (with the end of ComfyUI's
    log) when it gave one, else the end of Ray's error."""
    text = str(error).strip()
    marker = "WorkerGone: "
    if marker in text:
        return text[text.rindex(marker) + len(marker):]
    return "\n".join(text.splitlines()[-n:])


def first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
