"""One ComfyUI worker of a Ray batch: the body of a Ray actor (ray_executor wraps it with
ray.remote; this module does not import Ray).

The worker owns one ComfyUI: either a process it launches on the node and GPU Ray gave it
(its own port, input/output/temp folders, the model paths of the --comfyui-args), or an
existing server.  It runs one job at a time: look the job's prompt id up on the server, submit
it only if the server does not know it, wait, and return the output files' bytes to the
driver, which writes them and marks the job done.

When its ComfyUI is gone (the process died, or the server stayed unreachable for
--retry-timeout seconds) the worker ends its own process: Ray restarts the actor (a fresh
ComfyUI) and the driver retries the job.
"""
import asyncio
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from .client import ComfyClient, MalformedAnswer, PromptRejected, RequestFailed, ServerDown, partial_rejection
from .outputs import OutputsUnavailable, fetch_outputs

WATCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "comfy_process.py")


class WorkerGone(Exception):
    """This worker's ComfyUI is gone; the actor process ends so that Ray restarts it."""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyWorker:
    """The Ray actor: synchronous methods (Ray runs them in threads, max_concurrency 2 lets
    cancel() in while run() waits); the asyncio work is ComfyJobs'."""

    def __init__(self, name, *, server=None, comfyui=None, comfyui_python=None, comfyui_args="", work_dir=None,
                 retry_timeout=600.0, poll_interval=1.0, request_timeout=120.0, start_timeout=300.0):
        self.name = name
        self.proc = self.log_path = None
        url = (self._launch(comfyui, comfyui_python or sys.executable, comfyui_args, work_dir) if comfyui
               else ComfyClient(server, "").base)
        self.jobs = ComfyJobs(self, url, retry_timeout, poll_interval, request_timeout)
        try:
            asyncio.run(self.jobs.wait_up(start_timeout if comfyui else retry_timeout))
        except WorkerGone:
            self._stop()
            raise

    # -- the ComfyUI process ---------------------------------------------------------------
    def _launch(self, comfyui, python, extra_args, work_dir):
        root = os.path.join(work_dir or os.path.join(tempfile.gettempdir(), "vc_batch_workers"),
                            f"{self.name}-{os.getpid()}")
        dirs = {d: os.path.join(root, d) for d in ("input", "output", "temp", "user")}
        for d in dirs.values():
            os.makedirs(d, exist_ok=True)
        port = free_port()
        cmd = [python, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
               "--input-directory", dirs["input"], "--output-directory", dirs["output"],
               "--temp-directory", dirs["temp"], "--user-directory", dirs["user"], *shlex.split(extra_args)]
        self.log_path = os.path.join(root, "comfyui.log")
        with open(self.log_path, "ab") as log:
            # its own session: Ray ends a worker by killing its process group, which would take the
            # watcher along before it could end ComfyUI
            self.proc = subprocess.Popen([python, WATCHER, str(os.getpid()), os.path.abspath(comfyui), *cmd],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return f"http://127.0.0.1:{port}"

    def log_tail(self):
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-3000:].decode(errors="replace")
        except OSError:
            return ""

    def ended(self):
        """The launched ComfyUI's exit code once it has ended (None: running, or not launched)."""
        return None if self.proc is None else self.proc.poll()

    def _stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    # -- actor methods ---------------------------------------------------------------------
    def info(self):
        """Where this worker runs (the driver shows and records it)."""
        return {"worker": self.name, "url": self.jobs.url, "node": socket.gethostname(), "pid": os.getpid()}

    def run(self, job):
        """Run one job: {"name", "prompt_id", "planned", "images": {upload name: bytes}}.  Returns
        {"status": "done"|"failed"|"interrupted", "prompt_id", "error", "seconds", "files": [(name, bytes)]}."""
        try:
            return asyncio.run(self.jobs.run(job))
        except WorkerGone:
            self._stop()
            os._exit(1)  # an actor that dies is restarted by Ray (max_restarts); the driver retries the job

    def cancel(self, prompt_id):
        """Ctrl-C on the driver: remove this batch's prompt from the server (called while run() waits)."""
        self.jobs.cancelled.add(prompt_id)


class ComfyJobs:
    """One job at a time on one ComfyUI server, over its HTTP API."""

    def __init__(self, worker, url, retry_timeout, poll_interval, request_timeout):
        self.worker = worker
        self.url = url
        self.retry_timeout = retry_timeout
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self.client_id = uuid.uuid4().hex
        self.cancelled = set()

    async def wait_up(self, timeout):
        """Until the server answers; WorkerGone when the launched process ended or `timeout` passed."""
        deadline = time.monotonic() + timeout
        delay = 0.5
        async with ComfyClient(self.url, self.client_id, self.request_timeout) as c:
            while True:
                code = self.worker.ended()
                if code is not None:
                    raise WorkerGone(f"{self.worker.name}: ComfyUI ended with exit code {code}; "
                                     f"its log ends:\n{self.worker.log_tail()}")
                try:
                    await c.system_stats()
                    return
                except ServerDown as e:
                    if time.monotonic() > deadline:
                        raise WorkerGone(f"{self.worker.name}: {self.url} did not answer for {timeout:.0f}s ({e})") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def run(self, job):
        pid = job["prompt_id"]
        while True:
            try:
                async with ComfyClient(self.url, self.client_id, self.request_timeout) as c:
                    return await self._attempt(c, job, pid)
            except ServerDown:
                await self.wait_up(self.retry_timeout)  # WorkerGone when it does not come back

    async def _attempt(self, c, job, pid):
        running, pending = await c.queue()
        if pid not in running and pid not in pending and await c.history(pid) is None:
            # not on the server: submit it under the job's prompt id (a retry of this call finds it)
            planned = job["planned"]
            try:
                names = {name: await c.upload_image(data, name) for name, data in job["images"].items()}
                wf = planned.workflow_for(names)
                got, node_errors = await c.submit(wf, pid)
            except PromptRejected as e:
                return failed(pid, f"rejected by the server: {e}")
            except RequestFailed as e:
                return failed(pid, str(e))
            if node_errors:
                await c.withdraw([got])
                return failed(got, partial_rejection(node_errors, wf))
            pid = got
        while True:
            running, pending = await c.queue()
            if pid in self.cancelled:
                await c.withdraw([pid])
                return {"status": "interrupted", "prompt_id": pid, "error": "cancelled", "seconds": None, "files": []}
            if pid not in running and pid not in pending:
                break
            await asyncio.sleep(self.poll_interval)
        try:
            result = await c.result(pid)
        except MalformedAnswer as e:  # the job's error: the server did answer
            return failed(pid, str(e))
        if result is None:
            raise ServerDown(f"prompt {pid[:8]} is gone from {self.url} (restarted?)")
        if not result.ok:
            return {"status": "interrupted" if result.interrupted else "failed", "prompt_id": pid,
                    "error": result.error, "seconds": result.seconds, "files": []}
        try:
            files = await fetch_outputs(c, result)  # the driver writes them
        except (OutputsUnavailable, MalformedAnswer) as e:
            return failed(pid, str(e))
        return {"status": "done", "prompt_id": pid, "error": None, "seconds": result.seconds, "files": files}


def failed(prompt_id, error):
    return {"status": "failed", "prompt_id": prompt_id, "error": error, "seconds": None, "files": []}
