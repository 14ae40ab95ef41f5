"""The one server runner.py runs a batch on, as this run sees it: the prompts it holds for the
batch, the images uploaded to it, and whether it answers; waiting for it through restarts, and
taking the batch's prompts off it on Ctrl-C."""
import asyncio
import time

from .client import ComfyClient, ServerDown


class GiveUp(Exception):
    """The server stayed away longer than --retry-timeout."""


class Server:
    """The batch's ComfyUI server and this run's view of it."""

    def __init__(self, url, client_id, request_timeout, max_queued, log):
        self.client = ComfyClient(url, client_id, request_timeout)
        self.url = self.client.base  # scheme added, trailing slash dropped
        self.max_queued = max_queued
        self.log = log
        self.inflight = {}  # prompt_id -> Planned
        self.uploaded = {}  # upload name -> name on this server
        self.down_since = None  # monotonic time it stopped answering
        self.seen = False  # has answered in this run

    @property
    def up(self):
        return self.down_since is None

    def free(self):
        return self.max_queued - len(self.inflight) if self.up else 0

    # -- the server going away and coming back ------------------------------------------------
    def mark_down(self, error):
        if self.up:
            self.down_since = time.monotonic()
            self.log(f"server {self.url} unreachable ({error}); retrying with backoff")

    async def wait_up(self, retry_timeout, sleep, stopping):
        """Block until the server answers (it forgets its uploads meanwhile), or GiveUp after
        retry_timeout seconds; returns early once stopping() is true.  sleep(seconds) waits
        between tries (the runner's: a websocket reconnecting cuts it short)."""
        start = self.down_since if self.down_since is not None else time.monotonic()
        delay, said = 0.5, self.down_since is not None
        while not stopping():
            try:
                await self.client.system_stats()
            except ServerDown:
                waited = time.monotonic() - start
                if waited > retry_timeout:
                    raise GiveUp(f"giving up: {self.url} did not answer for {waited:.0f}s; "
                                 "run the same command again to resume") from None
                if not said:
                    self.log(f"waiting for {self.url} ...")
                    said = True
                await sleep(delay)
                delay = min(delay * 2, 15.0)
                continue
            if self.seen and self.down_since is not None:
                self.log(f"server {self.url} is back after {time.monotonic() - self.down_since:.0f}s; "
                         "checking what it still has")
            self.down_since = None
            self.seen = True
            self.uploaded.clear()
            return

    # -- images ------------------------------------------------------------------------------
    async def upload(self, local, name):
        """The name the server keeps upload `name` (the file `local`) under; sent once per server start.
        OSError: the file cannot be read; RequestFailed: the server refused it."""
        if name not in self.uploaded:
            with open(local, "rb") as f:
                self.uploaded[name] = await self.client.upload_image(f.read(), name)
        return self.uploaded[name]

    # -- Ctrl-C ------------------------------------------------------------------------------
    async def withdraw(self, prompt_ids):
        """Take prompt_ids off the server (queued ones deleted, a running one interrupted), looking
        at its queue until they are gone; the server being down is logged, not raised."""
        left = []
        try:
            for _ in range(20):
                await self.client.withdraw(prompt_ids)
                running, pending = await self.client.queue()
                left = [pid for pid in prompt_ids if pid in running or pid in pending]
                if not left:
                    break
                await asyncio.sleep(0.25)
            else:
                self.log(f"warning: {len(left)} prompt(s) still on {self.url} after cancelling")
        except ServerDown as e:
            self.log(f"could not clean up the queue of {self.url}: {e}")
