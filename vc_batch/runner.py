"""The one-server executor: keep up to N prompts of the planned jobs queued on one ComfyUI
server, check on them, fetch outputs, record everything in the manifest, wait for the server
through restarts, and clean up on Ctrl-C.  The server and its waiting: batch_server.py; its websocket
and step bar: server_events.py; Ctrl-C: interrupts.py; outputs: outputs.py.  Spreading a batch
over several workers is ray_executor.py's job."""
import asyncio
import collections
import os
import time
import uuid

from .client import MalformedAnswer, PromptRejected, RequestFailed, ServerDown, partial_rejection
from .interrupts import Interrupts
from .ledger import Ledger
from .outputs import JobFolder, OutputsUnavailable, fetch_outputs
from .batch_server import GiveUp, Server
from .server_events import ServerEvents


class BatchRunner(Ledger):
    """Runs the planned jobs on one ComfyUI server (several workers: ray_executor.RayExecutor)."""

    def __init__(self, planner, out_dir, *, server="http://127.0.0.1:8188", max_queued=2, retry_timeout=600.0,
                 max_attempts=3, poll_interval=2.0, request_timeout=60.0, progress=None, log=None):
        super().__init__(planner, max_attempts, progress, log)
        self.out_dir = os.path.abspath(out_dir)
        self.client_id = uuid.uuid4().hex
        self.srv = Server(server, self.client_id, request_timeout, max(1, int(max_queued)), self.log)
        self.retry_timeout = retry_timeout
        self.poll_interval = poll_interval
        self.pending = collections.deque()
        self.interrupts = Interrupts(self.log, "the server")
        self.wake = None

    @property
    def stop_requested(self):
        return self.interrupts.requested

    # -- main ----------------------------------------------------------------------------
    async def run(self):
        """Returns the process exit code: 0 all done, 1 some failed, 3 server gone, 130 stopped."""
        self.wake = asyncio.Event()
        with self.interrupts.on_loop(asyncio.get_running_loop(), asyncio.current_task(), self.wake):
            try:
                todo, adopt, failed = self.planner.select()
                self.counts["failed"] += failed
                show_steps = self.open_bar() is not None
                async with self.srv.client, ServerEvents(self.srv, self.wake, show_steps):
                    return await self._main(todo, adopt)
            finally:
                if self.bar is not None:
                    self.bar.close()

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
                srv.mark_down(e)
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

    async def _wait_server(self):
        await self.srv.wait_up(self.retry_timeout, self._sleep, lambda: self.stop_requested)

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
            try:
                names[name] = await srv.upload(local, name)
            except (RequestFailed, OSError) as e:
                self.fail(p, f"{role} upload failed: {e}")
                return
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
            await srv.client.withdraw([got])
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
                result = await srv.client.result(pid)
            except MalformedAnswer as e:  # the job's error: the server did answer
                if srv.inflight.get(pid) is p:
                    del srv.inflight[pid]
                    self.fail(p, f"{e} (prompt {pid[:8]} on {srv.url})")
                continue
            if srv.inflight.get(pid) is not p:
                continue
            if result is None:
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
        folder = JobFolder(self.out_dir, p.name)
        try:
            fetched = await fetch_outputs(srv.client, result, folder)  # ServerDown propagates
        except (OutputsUnavailable, MalformedAnswer) as e:
            del srv.inflight[p.prompt_id]
            self.fail(p, str(e) if isinstance(e, OutputsUnavailable) else
                      f"{e} (prompt {p.prompt_id[:8]} on {srv.url})")
            return
        del srv.inflight[p.prompt_id]
        self.done(p, folder.listed(fetched), result.seconds)

    # -- Ctrl-C ------------------------------------------------------------------------------
    async def _cancel_ours(self):
        """Take this batch's prompts off the server; the jobs are cancelled, not failed."""
        srv = self.srv
        ids = list(srv.inflight)
        if not ids:
            return
        await srv.withdraw(ids)
        for pid in ids:
            self.cancel(srv.inflight.pop(pid), f"{srv.url} prompt {pid[:8]}")
        self.log(f"cancelled {len(ids)} prompt(s) on {srv.url}; run the same command again to resume")
