"""The batch loop: plan jobs, keep up to N prompts queued, follow progress, fetch outputs,
record everything in the manifest, survive server restarts, and clean up on Ctrl-C."""
import asyncio
import collections
import json
import os
import signal
import sys
import time
import uuid

import aiohttp

from . import workflow as wfm
from .client import ComfyClient, PromptRejected, RequestFailed, ServerDown

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm comes with ComfyUI
    tqdm = None

DONE_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


class GiveUp(Exception):
    pass


class Planned:
    """A job with its filled workflow, ready to submit."""

    def __init__(self, job, workflow_path, wf, fingerprint, image=None):
        self.job = job
        self.name = job.name
        self.workflow_path = workflow_path
        self.wf = wf
        self.fingerprint = fingerprint
        self.image = image  # (local path, upload name) or None
        self.prompt_id = None
        self.submitted = None
        self.started = None


class BatchRunner:
    def __init__(self, jobs, manifest, out_dir, *, server="http://127.0.0.1:8188", t2v_workflow=None,
                 i2v_workflow=None, workflow=None, role_map=None, max_queued=2, prefix="vc_batch",
                 skip_failed=False, retry_timeout=600.0, poll_interval=2.0, request_timeout=60.0,
                 progress=None, log=None):
        self.jobs = jobs
        self.manifest = manifest
        self.out_dir = os.path.abspath(out_dir)
        self.server = server
        self.t2v_workflow = t2v_workflow
        self.i2v_workflow = i2v_workflow
        self.workflow = workflow
        self.role_map = role_map or {}
        self.max_queued = max(1, int(max_queued))
        self.prefix = prefix.strip("/")
        self.skip_failed = skip_failed
        self.retry_timeout = retry_timeout
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self.progress = progress  # None: auto (on a terminal)
        self._log = log
        self.client_id = uuid.uuid4().hex
        self._wf_cache = {}
        self.pending = collections.deque()
        self.inflight = {}  # prompt_id -> Planned
        self.uploaded = {}  # upload name -> server name
        self.stop_requested = False
        self.wake = None
        self.counts = collections.Counter()
        self.current = None  # prompt id executing now
        self.bar = self.step_bar = None
        self._closing = False

    # -- output --------------------------------------------------------------------------
    def log(self, msg):
        if self._log:
            self._log(msg)
        elif tqdm is not None:
            tqdm.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    # -- planning ------------------------------------------------------------------------
    def _workflow_for(self, job):
        path = job.values.get("workflow") or self.workflow or (
            self.i2v_workflow if job.is_i2v else self.t2v_workflow)
        path = os.path.abspath(path)
        if path not in self._wf_cache:
            wf = wfm.load_workflow(path)
            roles = wfm.find_roles(wf, self.role_map)
            self._wf_cache[path] = (wf, roles)
        return path, self._wf_cache[path]

    def plan(self, job):
        path, (wf, roles) = self._workflow_for(job)
        values = dict(job.values)
        image = None
        if "image" in values:
            local = values["image"]
            if not os.path.isfile(local):
                raise wfm.WorkflowError(f"image not found: {local}")
            name = wfm.upload_name(local)
            image = (local, name)
            values["image"] = name
        filled = wfm.fill(wf, roles, values, output_prefix=f"{self.prefix}/{job.name}/{job.name}")
        return Planned(job, path, filled, wfm.fingerprint(filled), image)

    def roles_report(self, job):
        path, (wf, roles) = self._workflow_for(job)
        return f"{path}:\n{wfm.describe_roles(wf, roles)}"

    # -- main ----------------------------------------------------------------------------
    async def run(self):
        """Returns the process exit code: 0 all done, 1 some failed, 3 server gone, 130 stopped."""
        self.wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        self._install_signals(loop, main_task)
        todo, adopt = self._select()
        total = len(self.jobs)
        done_before = sum(1 for j in self.jobs if self.manifest.status(j.name) == "done")
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        if tqdm is not None and show:
            self.bar = tqdm(total=total, initial=done_before, unit="job", position=0, desc="jobs",
                            dynamic_ncols=True, file=sys.stderr)
            self.step_bar = tqdm(total=1, unit="step", position=1, leave=False, desc="waiting",
                                 dynamic_ncols=True, file=sys.stderr)
        if done_before:
            self.log(f"resuming: {done_before} of {total} job(s) already done")
        try:
            async with ComfyClient(self.server, self.client_id, self.request_timeout) as client:
                self.client = client
                ws_task = asyncio.create_task(self._ws_loop())
                try:
                    return await self._main(todo, adopt)
                finally:
                    self._closing = True
                    ws_task.cancel()
                    try:
                        await ws_task
                    except (asyncio.CancelledError, Exception):
                        pass
        finally:
            self._remove_signals(loop)
            for b in (self.step_bar, self.bar):
                if b is not None:
                    b.close()

    def _select(self):
        """Plan the jobs still to do; failures while planning are recorded at once."""
        todo, adopt = [], []
        for job in self.jobs:
            entry = self.manifest.ensure(job.name)
            status = entry.get("status")
            try:
                planned = self.plan(job)
            except (wfm.WorkflowError, OSError) as e:
                if status == "done":
                    continue
                self.manifest.update(job.name, status="failed", error=str(e), workflow=None)
                self.counts["failed"] += 1
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
                planned.prompt_id = pid  # maybe still on the server: look before resubmitting
                adopt.append(planned)
            else:
                todo.append(planned)
        self.manifest.save()
        return todo, adopt

    async def _main(self, todo, adopt):
        self.pending.extend(todo)
        await self._wait_server(first=True)
        for p in adopt:
            self.inflight[p.prompt_id] = p
        if adopt:
            self.log(f"checking {len(adopt)} prompt(s) submitted by an earlier run")
        while True:
            try:
                if adopt:
                    adopt = None
                    await self._check_inflight()
                while not self.stop_requested and len(self.inflight) < self.max_queued and self.pending:
                    await self._submit(self.pending.popleft())
                if self.stop_requested:
                    break
                if not self.inflight and not self.pending:
                    break
                await self._sleep(self.poll_interval)
                if self.stop_requested:
                    break
                await self._check_inflight()
            except RequestFailed as e:  # an unexpected answer: note it and keep going
                self.log(f"warning: {e}")
                await self._sleep(self.poll_interval)
            except ServerDown as e:
                if self.stop_requested:
                    break
                self.log(f"server unreachable ({e}); retrying with backoff")
                try:
                    await self._wait_server()
                except GiveUp as g:
                    self.log(str(g))
                    self._finish_summary()
                    return 3
        if self.stop_requested:
            await self._cancel_ours()
            self._finish_summary()
            return 130
        self._finish_summary()
        return 1 if self.counts["failed"] else 0

    def _finish_summary(self):
        c = self.manifest.summary({j.name for j in self.jobs})
        self.log("summary: " + ", ".join(f"{k}={v}" for k, v in sorted(c.items(), key=lambda kv: str(kv[0])))
                 + f"  (manifest: {self.manifest.path})")

    async def _sleep(self, seconds):
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        self.wake.clear()

    async def _wait_server(self, first=False):
        delay, start = 0.5, time.monotonic()
        while True:
            try:
                await self.client.system_stats()
                if not first:
                    self.log("server is back; checking what it still has")
                    self.uploaded.clear()
                return
            except ServerDown as e:
                waited = time.monotonic() - start
                if waited > self.retry_timeout:
                    raise GiveUp(f"giving up: {self.server} unreachable for {waited:.0f}s ({e}); "
                                 "run the same command again to resume") from None
                if first and waited == 0:
                    self.log(f"waiting for {self.server} ...")
            if self.stop_requested:
                return
            await self._sleep(delay)
            delay = min(delay * 2, 15.0)

    # -- submitting ------------------------------------------------------------------------
    async def _submit(self, p):
        if p.image:
            local, name = p.image
            if name not in self.uploaded:
                try:
                    self.uploaded[name] = await self.client.upload_image(local, name)
                except ServerDown:
                    self.pending.appendleft(p)  # not submitted: keep it for after the recovery
                    raise
                except (RequestFailed, OSError) as e:
                    self._fail(p, f"image upload failed: {e}")
                    return
            server_name = self.uploaded[name]
            if server_name != name:
                for nid, inp in self._wf_cache[p.workflow_path][1].get("image", ()):
                    p.wf[nid]["inputs"][inp] = server_name
        pid = str(uuid.uuid4())
        entry = self.manifest.get(p.name) or {}
        # recorded before the POST: if we die in between, the next run looks for this id
        self.manifest.update(p.name, status="queued", prompt_id=pid, attempts=(entry.get("attempts") or 0) + 1,
                             fingerprint=p.fingerprint, workflow=p.workflow_path, error=None, files=[],
                             seconds=None)
        p.prompt_id, p.submitted, p.started = pid, time.monotonic(), None
        self.inflight[pid] = p
        try:
            got = await self.client.submit(p.wf, pid)
        except PromptRejected as e:
            del self.inflight[pid]
            self._fail(p, f"rejected by the server: {e}")
            return
        except RequestFailed as e:
            del self.inflight[pid]
            self._fail(p, str(e))
            return
        if got != pid:  # a server that ignores client prompt ids
            del self.inflight[pid]
            p.prompt_id = got
            self.inflight[got] = p
            self.manifest.update(p.name, prompt_id=got)

    def _fail(self, p, error):
        self.manifest.update(p.name, status="failed", error=error)
        self.counts["failed"] += 1
        self.log(f"FAILED {p.name}: {error}")
        if self.bar is not None:
            self.bar.update(1)

    # -- checking ----------------------------------------------------------------------------
    async def _check_inflight(self):
        if not self.inflight:
            return
        running, pending = await self.client.queue()
        for pid in list(self.inflight):
            if pid in running or pid in pending:
                continue
            p = self.inflight[pid]
            entry = await self.client.history(pid)
            if pid not in self.inflight:
                continue
            if entry is None:
                # not queued, not in history: the server restarted (history is in memory)
                # or the prompt never arrived; its outputs were never fetched, so run it again
                del self.inflight[pid]
                self.log(f"{p.name}: prompt {pid[:8]} is gone from the server; resubmitting")
                self.pending.appendleft(p)
                continue
            await self._finished(p, entry)

    async def _finished(self, p, entry):
        status = entry.get("status") or {}
        messages = status.get("messages") or []
        ts = {m[0]: m[1].get("timestamp") for m in messages if isinstance(m, list) and len(m) == 2
              and isinstance(m[1], dict)}
        seconds = None
        if ts.get("execution_start") and (ts.get("execution_success") or ts.get("execution_error")
                                          or ts.get("execution_interrupted")):
            end = ts.get("execution_success") or ts.get("execution_error") or ts.get("execution_interrupted")
            seconds = round((end - ts["execution_start"]) / 1000.0, 3)
        ok = status.get("status_str") == "success" or (status.get("completed") and "execution_error" not in ts)
        if not ok:
            del self.inflight[p.prompt_id]
            if "execution_interrupted" in ts:
                # interrupted by someone on the server (not us): try again later in this run
                err = next((m[1] for m in messages if m[0] == "execution_interrupted"), {})
                attempts = (self.manifest.get(p.name) or {}).get("attempts") or 0
                if attempts < 3:
                    self.log(f"{p.name}: interrupted on the server (node {err.get('node_id')}); resubmitting")
                    self.pending.append(p)
                    return
                self._fail(p, f"interrupted on the server {attempts} times")
                return
            err = next((m[1] for m in messages if m[0] == "execution_error"), {})
            text = (f"node {err.get('node_id')} ({err.get('node_type')}): "
                    f"{err.get('exception_type', 'error')}: {str(err.get('exception_message', '')).strip()}"
                    if err else f"server status {status.get('status_str')!r}")
            self.manifest.update(p.name, seconds=seconds)
            self._fail(p, text)
            return
        items = []
        for nid, out in (entry.get("outputs") or {}).items():
            for key, val in out.items():
                if isinstance(val, list):
                    items += [dict(it, node=nid) for it in val if isinstance(it, dict) and "filename" in it]
        chosen = [it for it in items if it.get("type", "output") == "output"] or items
        if not chosen:
            del self.inflight[p.prompt_id]
            self._fail(p, "the workflow finished but produced no output files")
            return
        job_dir = os.path.join(self.out_dir, p.name)
        os.makedirs(job_dir, exist_ok=True)
        files, names = [], set()
        for it in chosen:
            fname = os.path.basename(it["filename"])
            if fname in names:
                fname = f"{it['node']}_{fname}"
            names.add(fname)
            try:
                await self.client.download(it, os.path.join(job_dir, fname))  # ServerDown propagates
            except RequestFailed as e:
                del self.inflight[p.prompt_id]
                self._fail(p, f"could not download its output: {e}")
                return
            files.append(os.path.join(p.name, fname))
        del self.inflight[p.prompt_id]
        if seconds is None and p.submitted is not None:
            seconds = round(time.monotonic() - p.submitted, 3)
        self.manifest.update(p.name, status="done", files=files, seconds=seconds, error=None)
        self.counts["done"] += 1
        self.log(f"done {p.name}: {', '.join(files)} ({seconds}s)")
        if self.bar is not None:
            self.bar.update(1)

    # -- websocket -------------------------------------------------------------------------
    async def _ws_loop(self):
        delay = 0.5
        while not self._closing:
            try:
                async with self.client.session.ws_connect(self.client.ws_url, heartbeat=30) as ws:
                    delay = 0.5
                    self.wake.set()
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            try:
                                self._on_ws(json.loads(msg.data))
                            except (ValueError, KeyError, TypeError, AttributeError):
                                pass
                        elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
            except asyncio.CancelledError:
                raise
            except Exception:
                pass
            if self._closing:
                return
            self.wake.set()  # connection lost: let the main loop look at the server
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _on_ws(self, msg):
        kind, data = msg.get("type"), msg.get("data") or {}
        pid = data.get("prompt_id")
        p = self.inflight.get(pid) if pid else None
        if kind == "execution_start" and p is not None:
            p.started = time.monotonic()
            self.current = pid
            if self.step_bar is not None:
                self.step_bar.reset(total=1)
                self.step_bar.set_description(p.name)
        elif kind == "executing" and p is not None:
            if data.get("node") is None:
                self.wake.set()
            else:
                self.current = pid
                node = p.wf.get(str(data.get("node")), {})
                if self.step_bar is not None:
                    self.step_bar.set_description(f"{p.name} {node.get('class_type', '')}")
        elif kind == "progress" and p is not None and self.step_bar is not None:
            total = data.get("max") or 1
            if self.step_bar.total != total:
                self.step_bar.reset(total=total)
            self.step_bar.n = data.get("value", 0)
            self.step_bar.refresh()
        elif kind in DONE_EVENTS and p is not None:
            self.wake.set()

    # -- Ctrl-C ------------------------------------------------------------------------------
    def _install_signals(self, loop, main_task):
        self._main_task = main_task
        self._sig_installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal)
                self._sig_installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                if sig == signal.SIGINT:  # Windows: no loop signal handlers
                    try:
                        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(self._on_signal))
                    except (ValueError, OSError):
                        pass

    def _remove_signals(self, loop):
        for sig in getattr(self, "_sig_installed", ()):
            try:
                loop.remove_signal_handler(sig)
            except Exception:
                pass

    def _on_signal(self):
        if self.stop_requested:
            self.log("second interrupt: quitting without cleaning up the server queue")
            self._main_task.cancel()
            return
        self.stop_requested = True
        self.log("stopping: removing this batch's prompts from the server (Ctrl-C again to quit at once)")
        if self.wake is not None:
            self.wake.set()

    async def _cancel_ours(self):
        ids = list(self.inflight)
        if not ids:
            return
        try:
            for _ in range(20):
                await self.client.delete_queued(ids)
                for pid in ids:
                    await self.client.interrupt(pid)
                running, pending = await self.client.queue()
                left = [pid for pid in ids if pid in running or pid in pending]
                if not left:
                    break
                await asyncio.sleep(0.25)
            else:
                self.log(f"warning: {len(left)} prompt(s) still on the server after cancelling")
        except ServerDown as e:
            self.log(f"could not clean up the server queue: {e}")
        for pid in ids:
            p = self.inflight.pop(pid)
            self.manifest.update(p.name, status="cancelled")
        self.log(f"cancelled {len(ids)} prompt(s); run the same command again to resume")
