"""Following one ComfyUI server's websocket while runner.py runs a batch on it: the step bar of
the batch's prompt being executed, and a nudge (`wake`) to the runner's main loop when one of
its prompts ends or the connection comes or goes, so that it looks at the server's queue then
rather than at its next poll.  The queue and history stay the truth: a lost event costs a poll."""
import asyncio
import json
import sys
import time

import aiohttp

from .client import DONE_EVENTS

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm comes with ComfyUI
    tqdm = None


class ServerEvents:
    """`async with ServerEvents(srv, wake, show_steps):` follows srv's events (srv.inflight names
    the batch's prompts) until the block ends, reconnecting with backoff."""

    def __init__(self, srv, wake, show_steps):
        self.srv = srv
        self.wake = wake
        self.step_bar = None
        if show_steps and tqdm is not None:
            self.step_bar = tqdm(total=1, unit="step", position=1, leave=False, desc="waiting",
                                 dynamic_ncols=True, file=sys.stderr)
        self._closing = False
        self._task = None

    async def __aenter__(self):
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc):
        self._closing = True
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass
        if self.step_bar is not None:
            self.step_bar.close()

    async def _follow(self):
        client = self.srv.client
        delay = 0.5
        while not self._closing:
            try:
                async with client.session.ws_connect(client.ws_url, heartbeat=30) as ws:
                    delay = 0.5
                    self.wake.set()
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            try:
                                self._on_event(json.loads(msg.data))
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

    def _on_event(self, msg):
        kind, data = msg.get("type"), msg.get("data") or {}
        pid = data.get("prompt_id")
        p = self.srv.inflight.get(pid) if pid else None
        if p is None:
            return  # another client's prompt
        bar = self.step_bar
        if kind == "execution_start":
            p.started = time.monotonic()
            if bar is not None:
                bar.reset(total=1)
                bar.set_description(p.name)
        elif kind == "executing":
            if data.get("node") is None:
                self.wake.set()
            elif bar is not None:
                node = p.wf.get(str(data.get("node")), {})
                bar.set_description(f"{p.name} {node.get('class_type', '')}")
        elif kind == "progress" and bar is not None:
            total = data.get("max") or 1
            if bar.total != total:
                bar.reset(total=total)
            bar.n = data.get("value", 0)
            bar.refresh()
        elif kind in DONE_EVENTS:
            self.wake.set()
