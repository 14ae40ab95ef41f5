"""The one-server executor: keep up to N prompts of the planned jobs queued on one ComfyUI
server, follow its progress, fetch outputs, record everything in the manifest, wait for the
server through restarts, and clean up on Ctrl-C.  Spreading a batch over several workers is
ray_executor.py's job."""
import asyncio
import collections
import json
import os
import signal
import sys
import time
import uuid

import aiohttp

from .client import (NO_OUTPUT, ComfyClient, MalformedAnswer, PromptRejected, RequestFailed, ServerDown,
                     output_file_names, parse_history, partial_rejection)
from .ledger import Ledger

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm comes with ComfyUI
    tqdm = None

DONE_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


class GiveUp(Exception):
    pass


class Server:
    """The batch's ComfyUI server and this run's view of it."""

    def __init__(self, url, client_id, request_timeout, max_queued):
        self.client = ComfyClient(url, client_id, request_timeout)
        self.url = self.client.base  # scheme added, trailing slash dropped
        self.max_queued = max_queued
        self.inflight = {}  # prompt_id -> Planned
        self.uploaded = {}  # upload name -> name on this server
        self.down_since = None  # monotonic time it stopped answering
        self.seen = False  # has answered in this run
        self.ws_task = None

    @property
    def up(self):
        return self.down_since is None

    def free(self):
        return self.max_queued - len(self.inflight) if self.up else 0


class BatchRunner(Ledger):
    """Runs the planned jobs on one ComfyUI server (several workers: ray_executor.RayExecutor)."""

    def __init__(self, planner, out_dir, *, server="http://127.0.0.1:8188", max_queued=2, retry_timeout=600.0,
                 max_attempts=3, poll_interval=2.0, request_timeout=60.0, progress=None, log=None):
        super().__init__(planner, max_attempts, progress, log)
        self.out_dir = os.path.abspath(out_dir)
        self.client_id = uuid.uuid4().hex
        self.srv = Server(server, self.client_id, request_timeout, max(1, int(max_queued)))
        self.retry_timeout = retry_timeout
        self.poll_interval = poll_interval
        self.pending = collections.deque()
        self.stop_requested = False
        self.wake = None
        self.step_bar = None
        self._closing = False

    # -- main ----------------------------------------------------------------------------
    async def run(self):
        """Returns the process exit code: 0 all done, 1 some failed, 3 server gone, 130 stopped."""
        self.wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        self._install_signals(loop, main_task)
        todo, adopt, failed = self.planner.select()
        self.counts["failed"] += failed
        if self.open_bar() is not None:
            self.step_bar = tqdm(total=1, unit="step", position=1, leave=False, desc="waiting",
                                 dynamic_ncols=True, file=sys.stderr)
        srv = self.srv
        try:
            async with srv.client:
                srv.ws_task = asyncio.create_task(self._ws_loop(srv))
                try:
                    return await self._main(todo, adopt)
                finally:
                    self._closing = True
                    srv.ws_task.cancel()
                    try:
                        await srv.ws_task
                    except (asyncio.CancelledError, Exception):
                        pass
        finally:
            self._remove_signals(loop)
            for b in (self.step_bar, self.bar):
                if b is not None:
                    b.close()

    async def _main(self, todo, adopt):
        srv = self.srv
        self.pending.extend(todo)
        for p in adopt:
            if p.server_url not in (None, srv.url):
                self.log(f"warning: {p.name} was submitted to {p.server_url}, not to {srv.url}: submitting it "
                         "again (remove it from that server's queue)")
                p.prompt_id = p.server_url = None
                self.pending.append(p)
            else:
                srv.inflight[p.prompt_id] = p
        try:
            await self._wait_server()
        except GiveUp as g:
            return self.end(3, str(g))
        if srv.inflight:
            self.log(f"checking {len(srv.inflight)} prompt(s) submitted by an earlier run")
        while True:
            try:
                if not srv.up:
                    await self._wait_server()
                    continue
                if not self.stop_requested:
                    await self._fill()
                if self.stop_requested:
                    break
                if not self.pending and not srv.inflight:
                    break
                await self._sleep(self.poll_interval)
                if self.stop_requested:
                    break
                if srv.inflight:
                    await self._check_inflight(srv)
            except ServerDown as e:
                self._mark_down(e)
            except RequestFailed as e:  # an unexpected answer: note it and keep going
                self.log(f"warning: {e}")
                await self._sleep(self.poll_interval)
            except GiveUp as g:
                return self.end(3, str(g))
        if self.stop_requested:
            await self._cancel_ours()
            return self.end(130)
        return self.end(self.exit_code())

    async def _sleep(self, seconds):
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        self.wake.clear()

    # -- the server going away and coming back ------------------------------------------------
    def _mark_down(self, error):
        srv = self.srv
        if srv.up:
            srv.down_since = time.monotonic()
            self.log(f"server {srv.url} unreachable ({error}); retrying with backoff")

    async def _wait_server(self):
        """Block until the server answers (it forgets its uploads meanwhile), or give up after
        --retry-timeout seconds."""
        srv = self.srv
        start = srv.down_since if srv.down_since is not None else time.monotonic()
        delay, said = 0.5, srv.down_since is not None
        while not self.stop_requested:
            try:
                await srv.client.system_stats()
            except ServerDown:
                waited = time.monotonic() - start
                if waited > self.retry_timeout:
                    raise GiveUp(f"giving up: {srv.url} did not answer for {waited:.0f}s; "
                                 "run the same command again to resume") from None
                if not said:
                    self.log(f"waiting for {srv.url} ...")
                    said = True
                await self._sleep(delay)
                delay = min(delay * 2, 15.0)
                continue
            if srv.seen and srv.down_since is not None:
                self.log(f"server {srv.url} is back after {time.monotonic() - srv.down_since:.0f}s; "
                         "checking what it still has")
            srv.down_since = None
            srv.seen = True
            srv.uploaded.clear()
            return

    def _lost(self, srv, p, why):
        """p's prompt is gone from srv (server restarted): queue the job again.  The attempt
        counts only if the prompt was seen running (it may be what killed the server)."""
        del srv.inflight[p.prompt_id]
        self.retry(p, f"{srv.url} prompt {p.prompt_id[:8]}: {why}", counted=p.started is not None or p.may_have_run)
        self.pending.appendleft(p)

    # -- submitting ------------------------------------------------------------------------
    async def _fill(self):
        srv = self.srv
        while self.pending and srv.free() > 0 and not self.stop_requested:
            p = self.pending.popleft()
            try:
                await self._submit(srv, p)
            except ServerDown:
                if p.prompt_id is None:  # not submitted (else the POST may have arrived: it stays in flight)
                    self.pending.appendleft(p)
                raise

    async def _submit(self, srv, p):
        if self.out_of_attempts(p):
            return
        attempts = self.attempts(p)
        names = {}
        for role, (local, name) in p.uploads.items():
            if name not in srv.uploaded:
                try:
                    with open(local, "rb") as f:
                        srv.uploaded[name] = await srv.client.upload_image(f.read(), name)
                except (RequestFailed, OSError) as e:
                    self.fail(p, f"{role} upload failed: {e}")
                    return
            names[name] = srv.uploaded[name]
        wf = p.workflow_for(names)  # the final workflow, with this server's image names
        pid = str(uuid.uuid4())
        # recorded before the POST: if we die in between, the next run looks for this id there
        self.manifest.update(p.name, status="queued", prompt_id=pid, server=srv.url, attempts=attempts + 1,
                             fingerprint=p.fingerprint, workflow=p.workflow_path, error=None, files=[],
                             seconds=None)
        p.prompt_id, p.submitted, p.started = pid, time.monotonic(), None
        p.attempt_returned = False  # this submission is counted
        srv.inflight[pid] = p
        try:
            got, node_errors = await srv.client.submit(wf, pid)
        except (PromptRejected, RequestFailed) as e:
            del srv.inflight[pid]
            self.fail(p, f"rejected by the server: {e}" if isinstance(e, PromptRejected) else str(e))
            return
        if got != pid:  # a server that ignores client prompt ids
            del srv.inflight[pid]
            p.prompt_id = got
            srv.inflight[got] = p
            self.manifest.update(p.name, prompt_id=got)
        if node_errors:
            # queued with some outputs left out: not the job the row asked for
            await srv.client.delete_queued([got])
            await srv.client.interrupt(got)
            del srv.inflight[got]
            self.fail(p, partial_rejection(node_errors, wf))

    # -- checking ----------------------------------------------------------------------------
    async def _check_inflight(self, srv):
        running, pending = await srv.client.queue()
        for pid in list(srv.inflight):
            p = srv.inflight.get(pid)
            if p is None:
                continue
            if pid in running:
                p.started = p.started or time.monotonic()
            if pid in running or pid in pending:
                continue
            try:
                entry = await srv.client.history(pid)
                result = parse_history(entry) if entry is not None else None
            except MalformedAnswer as e:  # the job's error: the server did answer
                if srv.inflight.get(pid) is p:
                    del srv.inflight[pid]
                    self.fail(p, f"{e} (prompt {pid[:8]} on {srv.url})")
                continue
            if srv.inflight.get(pid) is not p:
                continue
            if entry is None:
                # not queued, not in history: the server restarted (history is in memory) or
                # the prompt never arrived; its outputs were never fetched, so run it again
                self._lost(srv, p, "gone from the server (restarted?)")
                continue
            await self._finished(srv, p, result)

    async def _finished(self, srv, p, result):
        if not result.ok:
            del srv.inflight[p.prompt_id]
            entry = self.manifest.get(p.name) or {}
            attempts = entry.get("attempts") or 0
            log = (entry.get("attempt_log") or []) + [f"{srv.url} prompt {p.prompt_id[:8]}: {result.error}"]
            self.manifest.update(p.name, seconds=result.seconds, attempt_log=log)
            if result.interrupted and attempts < self.max_attempts:
                # interrupted by someone on the server (not us): try again later in this run
                self.log(f"{p.name}: {result.error}; submitting it again")
                self.manifest.update(p.name, status="pending", error=result.error)
                self.pending.append(p)
                return
            self.fail(p, result.error if not result.interrupted else
                       f"{result.error}, {attempts} time(s) (--max-attempts {self.max_attempts})")
            return
        if not result.outputs:
            del srv.inflight[p.prompt_id]
            self.fail(p, NO_OUTPUT)
            return
        try:
            names = output_file_names(result.outputs)
        except MalformedAnswer as e:
            del srv.inflight[p.prompt_id]
            self.fail(p, f"{e} (prompt {p.prompt_id[:8]} on {srv.url})")
            return
        job_dir = os.path.join(self.out_dir, p.name)
        os.makedirs(job_dir, exist_ok=True)
        files = []
        for it, fname in zip(result.outputs, names):
            try:
                await srv.client.download(it, os.path.join(job_dir, fname))  # ServerDown propagates
            except RequestFailed as e:
                del srv.inflight[p.prompt_id]
                self.fail(p, f"could not download its output: {e}")
                return
            files.append(os.path.join(p.name, fname))
        del srv.inflight[p.prompt_id]
        seconds = result.seconds
        if seconds is None and p.submitted is not None:
            seconds = round(time.monotonic() - p.submitted, 3)
        self.done(p, files, seconds)

    # -- websocket -------------------------------------------------------------------------
    async def _ws_loop(self, srv):
        """Follow one server's events (progress, prompt finished) until the batch ends."""
        delay = 0.5
        while not self._closing:
            try:
                async with srv.client.session.ws_connect(srv.client.ws_url, heartbeat=30) as ws:
                    delay = 0.5
                    self.wake.set()
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            try:
                                self._on_ws(srv, json.loads(msg.data))
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

    def _on_ws(self, srv, msg):
        kind, data = msg.get("type"), msg.get("data") or {}
        pid = data.get("prompt_id")
        p = srv.inflight.get(pid) if pid else None
        if kind == "execution_start" and p is not None:
            p.started = time.monotonic()
            if self.step_bar is not None:
                self.step_bar.reset(total=1)
                self.step_bar.set_description(p.name)
        elif kind == "executing" and p is not None:
            if data.get("node") is None:
                self.wake.set()
            else:
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
        """Delete this batch's queued prompts and interrupt its running ones on the server."""
        srv = self.srv
        ids = list(srv.inflight)
        if not ids:
            return
        left = []
        try:
            for _ in range(20):
                await srv.client.delete_queued(ids)
                for pid in ids:
                    await srv.client.interrupt(pid)
                running, pending = await srv.client.queue()
                left = [pid for pid in ids if pid in running or pid in pending]
                if not left:
                    break
                await asyncio.sleep(0.25)
            else:
                self.log(f"warning: {len(left)} prompt(s) still on {srv.url} after cancelling")
        except ServerDown as e:
            self.log(f"could not clean up the queue of {srv.url}: {e}")
        for pid in ids:
            p = srv.inflight.pop(pid)
            self.cancel(p, f"{srv.url} prompt {pid[:8]}")
        self.log(f"cancelled {len(ids)} prompt(s) on {srv.url}; run the same command again to resume")
