"""The batch loop: plan jobs, keep up to N prompts queued on each server, follow progress,
fetch outputs, record everything in the manifest, survive server restarts, move the jobs of a
server that stays away to the others, and clean up on Ctrl-C."""
import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import sys
import time
import uuid

import aiohttp

from . import workflow as wfm
from .client import ComfyClient, PromptRejected, RequestFailed, ServerDown, format_rejection, parse_history
from .columns import IMAGE_COLUMNS

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm comes with ComfyUI
    tqdm = None

DONE_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


class GiveUp(Exception):
    pass


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
        self.server = None
        self.submitted = None
        self.started = None  # seen running on the server
        self.may_have_run = False

    def workflow_for(self, server_names):
        """The filled workflow, images under the names one server stored them as."""
        values = dict(self.values)
        for role, (_, name) in self.uploads.items():
            values[role] = server_names.get(name, name)
        return wfm.fill(self.template, self.roles, values, output_prefix=self.output_prefix)


class Server:
    """One ComfyUI server of the batch and this run's view of it."""

    def __init__(self, url, client_id, request_timeout, max_queued):
        self.client = ComfyClient(url, client_id, request_timeout)
        self.url = self.client.base  # scheme added, trailing slash dropped
        self.max_queued = max_queued
        self.inflight = {}  # prompt_id -> Planned
        self.uploaded = {}  # upload name -> name on this server
        self.down_since = None  # monotonic time it stopped answering
        self.seen = False  # has answered in this run
        self.next_probe = 0.0
        self.probe_delay = 0.5
        self.abandoned = set()  # prompt ids moved to other servers: remove them if it comes back
        self.ws_task = None

    @property
    def up(self):
        return self.down_since is None

    def free(self):
        return self.max_queued - len(self.inflight) if self.up else 0


class BatchRunner:
    def __init__(self, jobs, manifest, out_dir, *, server="http://127.0.0.1:8188", servers=None,
                 t2v_workflow=None, i2v_workflow=None, workflow=None, role_map=None, max_queued=2,
                 prefix="vc_batch", skip_failed=False, retry_timeout=600.0, failover_after=60.0,
                 max_attempts=3, poll_interval=2.0, request_timeout=60.0, progress=None, log=None):
        self.jobs = jobs
        self.manifest = manifest
        self.out_dir = os.path.abspath(out_dir)
        urls = list(dict.fromkeys(servers or [server]))
        self.t2v_workflow = t2v_workflow
        self.i2v_workflow = i2v_workflow
        self.workflow = workflow
        self.role_map = role_map or {}
        if isinstance(max_queued, (list, tuple)):
            if len(max_queued) not in (1, len(urls)):
                raise ValueError(f"--max-queued given {len(max_queued)} times for {len(urls)} servers: "
                                 "give it once (every server) or once per --server, in the same order")
            per_server = list(max_queued) * (len(urls) if len(max_queued) == 1 else 1)
        else:
            per_server = [max_queued] * len(urls)
        self.client_id = uuid.uuid4().hex
        self.servers = [Server(u, self.client_id, request_timeout, max(1, int(n))) for u, n in zip(urls, per_server)]
        self.prefix = prefix.strip("/")
        self.skip_failed = skip_failed
        self.retry_timeout = retry_timeout
        self.failover_after = failover_after
        self.max_attempts = max(1, int(max_attempts))
        self.poll_interval = poll_interval
        self.progress = progress  # None: auto (on a terminal)
        self._log = log
        self._wf_cache = {}
        self.pending = collections.deque()
        self.stop_requested = False
        self.wake = None
        self.counts = collections.Counter()
        self.bar = self.step_bar = None
        self._closing = False

    @property
    def server(self):
        return self.servers[0].url

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

    def plan(self, job, seed=None):
        """Planned job; `seed` replaces a `random` seed cell (the caller draws and records it)."""
        path, (wf, roles) = self._workflow_for(job)
        values = dict(job.values)
        if is_random_seed(values.get("seed")):
            if seed is None:
                raise wfm.WorkflowError("seed 'random' must be drawn before planning")
            values["seed"] = seed
        uploads = {}
        for role in IMAGE_COLUMNS:
            if role in values:
                local = values[role]
                if not os.path.isfile(local):
                    raise wfm.WorkflowError(f"{role} not found: {local}")
                uploads[role] = (local, wfm.upload_name(local))
        return Planned(job, path, wf, roles, values, uploads, output_prefix=f"{self.prefix}/{job.name}/{job.name}")

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

    # -- main ----------------------------------------------------------------------------
    async def run(self):
        """Returns the process exit code: 0 all done, 1 some failed, 3 servers gone, 130 stopped."""
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
            async with contextlib.AsyncExitStack() as stack:
                for srv in self.servers:
                    await stack.enter_async_context(srv.client)
                    srv.ws_task = asyncio.create_task(self._ws_loop(srv))
                try:
                    return await self._main(todo, adopt)
                finally:
                    self._closing = True
                    for srv in self.servers:
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

    def _select(self):
        """Plan the jobs still to do; failures while planning are recorded at once.  Returns
        (jobs to submit, (server, Planned) pairs submitted by an earlier run)."""
        todo, adopt = [], []
        by_url = {srv.url: srv for srv in self.servers}
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
            srv = by_url.get(entry.get("server") or self.servers[0].url)
            if status in ("queued", "cancelled") and pid and entry.get("fingerprint") == planned.fingerprint:
                if srv is not None:
                    planned.prompt_id, planned.server = pid, srv
                    # an earlier run that died cannot tell us whether it started; one we cancelled did not crash
                    planned.may_have_run = status == "queued"
                    adopt.append((srv, planned))  # maybe still there: look before resubmitting
                    continue
                self.log(f"warning: {job.name} was submitted to {entry.get('server')}, which is not a --server "
                         "of this run: submitting it again (remove it from that server's queue)")
            todo.append(planned)
        self.manifest.save()  # drawn seeds are on disk before anything is submitted
        return todo, adopt

    async def _main(self, todo, adopt):
        self.pending.extend(todo)
        try:
            await self._wait_any_server(first=True)
        except GiveUp as g:
            self.log(str(g))
            self._finish_summary()
            return 3
        for srv, p in adopt:
            srv.inflight[p.prompt_id] = p
        if adopt:
            self.log(f"checking {len(adopt)} prompt(s) submitted by an earlier run")
        while True:
            try:
                await self._probe_down_servers()
                self._failover()
                if not self.stop_requested:
                    await self._fill_servers()
                if self.stop_requested:
                    break
                if not self.pending and not any(srv.inflight for srv in self.servers):
                    break
                if not any(srv.up for srv in self.servers):
                    await self._wait_any_server()
                    continue
                await self._sleep(self.poll_interval)
                if self.stop_requested:
                    break
                await self._each_server(self._check_inflight, [s for s in self.servers if s.up and s.inflight])
            except RequestFailed as e:  # an unexpected answer: note it and keep going
                self.log(f"warning: {e}")
                await self._sleep(self.poll_interval)
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

    async def _each_server(self, fn, servers, *args):
        """Run fn(server, *args) for the servers at once, so that a server that hangs (answers
        nothing until --request-timeout) holds up no other; a server that fails is marked down."""
        results = await asyncio.gather(*(fn(srv, *args) for srv in servers), return_exceptions=True)
        for srv, res in zip(servers, results):
            if isinstance(res, ServerDown):
                self._mark_down(srv, res)
            elif isinstance(res, RequestFailed):
                self.log(f"warning: {srv.url}: {res}")
            elif isinstance(res, BaseException):
                raise res

    # -- servers coming and going ------------------------------------------------------------
    def _mark_down(self, srv, error):
        if srv.up:
            srv.down_since = time.monotonic()
            srv.probe_delay = 0.5
            srv.next_probe = srv.down_since + srv.probe_delay
            self.log(f"server {srv.url} unreachable ({error}); retrying with backoff")

    async def _probe(self, srv):
        """True if srv answers; a server that comes back forgets its uploads and is rid of
        the prompts this run moved elsewhere meanwhile."""
        try:
            await srv.client.system_stats()
            if srv.abandoned:
                ids = list(srv.abandoned)
                await srv.client.delete_queued(ids)
                for pid in ids:
                    await srv.client.interrupt(pid)
                srv.abandoned.clear()
        except ServerDown:
            return False
        if not srv.up and srv.seen:
            self.log(f"server {srv.url} is back after {time.monotonic() - srv.down_since:.0f}s; "
                     "checking what it still has")
        srv.down_since = None
        srv.seen = True
        srv.uploaded.clear()
        return True

    async def _probe_down_servers(self):
        now = time.monotonic()
        await self._each_server(self._probe_again, [s for s in self.servers if not s.up and now >= s.next_probe])

    async def _probe_again(self, srv):
        if not await self._probe(srv):
            srv.probe_delay = min(srv.probe_delay * 2, 15.0)
            srv.next_probe = time.monotonic() + srv.probe_delay

    async def _wait_any_server(self, first=False):
        """Block until some server answers (all of them are probed), or give up."""
        start = time.monotonic()
        if first:
            for srv in self.servers:
                srv.down_since = start  # unknown until it answers
        delay, said = 0.5, False
        while True:
            await self._each_server(self._probe, [s for s in self.servers if not s.up])
            if any(srv.up for srv in self.servers) or self.stop_requested:
                for srv in self.servers:
                    if not srv.up:  # already marked down (keeps its down_since): probe it again later
                        srv.next_probe = time.monotonic() + srv.probe_delay
                return
            waited = time.monotonic() - start
            if waited > self.retry_timeout:
                raise GiveUp(f"giving up: no server answered for {waited:.0f}s "
                             f"({', '.join(s.url for s in self.servers)}); run the same command again to resume")
            if not said:
                self.log(f"waiting for {', '.join(s.url for s in self.servers)} ...")
                said = True
            await self._sleep(delay)
            delay = min(delay * 2, 15.0)

    def _failover(self):
        """Move the prompts of a server unreachable for --failover-after seconds to the
        pending queue, if another server answers; the manifest keeps which server had them."""
        others_up = [srv for srv in self.servers if srv.up]
        if not others_up:
            return
        now = time.monotonic()
        for srv in self.servers:
            if srv.up or not srv.inflight or now - srv.down_since < self.failover_after:
                continue
            self.log(f"server {srv.url} unreachable for {now - srv.down_since:.0f}s: moving its "
                     f"{len(srv.inflight)} unfinished job(s) to {', '.join(s.url for s in others_up)}")
            for pid, p in list(srv.inflight.items()):
                srv.abandoned.add(pid)
                self._lost(srv, p, f"moved off {srv.url} (unreachable for {now - srv.down_since:.0f}s)")

    def _lost(self, srv, p, why):
        """p's prompt is gone from srv (server restarted, or moved away): queue the job again.
        The attempt counts only if the prompt was seen running (it may be what killed the server)."""
        del srv.inflight[p.prompt_id]
        entry = self.manifest.get(p.name) or {}
        attempts = entry.get("attempts") or 0
        ran = p.started is not None or p.may_have_run
        note = f"{srv.url} prompt {p.prompt_id[:8]}: {why}" + ("" if ran else " before it ran (not counted)")
        self.manifest.update(p.name, status="pending", attempts=attempts if ran else max(0, attempts - 1),
                             attempt_log=(entry.get("attempt_log") or []) + [note], error=why)
        self.log(f"{p.name}: {note}; submitting it again")
        p.prompt_id = p.server = None
        p.may_have_run = False
        self.pending.appendleft(p)

    # -- submitting ------------------------------------------------------------------------
    async def _fill_servers(self):
        """Give each pending job to the server with the most room, then submit to all at once."""
        batches = {srv: [] for srv in self.servers}
        while self.pending:
            srv = max(self.servers, key=lambda s: s.free() - len(batches[s]))
            if srv.free() - len(batches[srv]) <= 0:
                break
            batches[srv].append(self.pending.popleft())
        await self._each_server(self._submit_batch, [s for s in self.servers if batches[s]], batches)

    async def _submit_batch(self, srv, batches):
        jobs = batches[srv]
        for i, p in enumerate(jobs):
            if self.stop_requested:
                self.pending.extendleft(reversed(jobs[i:]))
                return
            try:
                await self._submit(srv, p)
            except ServerDown:
                # not submitted (or the POST may have arrived: then it stays in flight on srv)
                rest = jobs[i:] if p.prompt_id is None else jobs[i + 1:]
                self.pending.extendleft(reversed(rest))
                raise

    async def _submit(self, srv, p):
        entry = self.manifest.get(p.name) or {}
        attempts = entry.get("attempts") or 0
        if attempts >= self.max_attempts:
            log = "; ".join(entry.get("attempt_log") or [])
            self._fail(p, f"gave up after {attempts} attempt(s) (--max-attempts {self.max_attempts})"
                          + (f": {log}" if log else ""))
            return
        names = {}
        for role, (local, name) in p.uploads.items():
            if name not in srv.uploaded:
                try:
                    srv.uploaded[name] = await srv.client.upload_image(local, name)
                except (RequestFailed, OSError) as e:
                    self._fail(p, f"{role} upload failed: {e}")
                    return
            names[name] = srv.uploaded[name]
        wf = p.workflow_for(names)  # the final workflow, with this server's image names
        pid = str(uuid.uuid4())
        # recorded before the POST: if we die in between, the next run looks for this id there
        self.manifest.update(p.name, status="queued", prompt_id=pid, server=srv.url, attempts=attempts + 1,
                             fingerprint=p.fingerprint, workflow=p.workflow_path, error=None, files=[],
                             seconds=None)
        p.prompt_id, p.server, p.submitted, p.started = pid, srv, time.monotonic(), None
        srv.inflight[pid] = p
        try:
            got, node_errors = await srv.client.submit(wf, pid)
        except (PromptRejected, RequestFailed) as e:
            del srv.inflight[pid]
            self._fail(p, f"rejected by the server: {e}" if isinstance(e, PromptRejected) else str(e))
            return
        except ServerDown:
            # the POST may or may not have arrived: the prompt stays in flight under its id, and
            # the queue/history check (or the failover) settles it
            raise
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
            self._fail(p, "the server accepted only part of the workflow and was told to drop it: "
                          + format_rejection({"node_errors": node_errors}, wf))

    def _fail(self, p, error):
        self.manifest.update(p.name, status="failed", error=error)
        self.counts["failed"] += 1
        self.log(f"FAILED {p.name}: {error}")
        if self.bar is not None:
            self.bar.update(1)

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
            entry = await srv.client.history(pid)
            if srv.inflight.get(pid) is not p:
                continue
            if entry is None:
                # not queued, not in history: the server restarted (history is in memory) or
                # the prompt never arrived; its outputs were never fetched, so run it again
                self._lost(srv, p, "gone from the server (restarted?)")
                continue
            await self._finished(srv, p, parse_history(entry))

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
            self._fail(p, result.error if not result.interrupted else
                       f"{result.error}, {attempts} time(s) (--max-attempts {self.max_attempts})")
            return
        if not result.outputs:
            del srv.inflight[p.prompt_id]
            self._fail(p, "the workflow finished but produced no output files")
            return
        job_dir = os.path.join(self.out_dir, p.name)
        os.makedirs(job_dir, exist_ok=True)
        files, names = [], set()
        for it in result.outputs:
            fname = os.path.basename(it["filename"])
            if fname in names:
                fname = f"{it['node']}_{fname}"
            names.add(fname)
            try:
                await srv.client.download(it, os.path.join(job_dir, fname))  # ServerDown propagates
            except RequestFailed as e:
                del srv.inflight[p.prompt_id]
                self._fail(p, f"could not download its output: {e}")
                return
            files.append(os.path.join(p.name, fname))
        del srv.inflight[p.prompt_id]
        seconds = result.seconds
        if seconds is None and p.submitted is not None:
            seconds = round(time.monotonic() - p.submitted, 3)
        self.manifest.update(p.name, status="done", files=files, seconds=seconds, error=None)
        self.counts["done"] += 1
        self.log(f"done {p.name}: {', '.join(files)} ({seconds}s" + (f", {srv.url})" if len(self.servers) > 1 else ")"))
        if self.bar is not None:
            self.bar.update(1)

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
        """Delete this batch's queued prompts and interrupt its running ones, on every server."""
        for srv in self.servers:
            ids = list(srv.inflight)
            if not ids:
                continue
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
                self.manifest.update(p.name, status="cancelled")
            self.log(f"cancelled {len(ids)} prompt(s) on {srv.url}; run the same command again to resume")


def is_random_seed(value):
    return isinstance(value, str) and value.strip().lower() == "random"
