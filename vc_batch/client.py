"""A small asyncio client for ComfyUI's HTTP + websocket API (aiohttp; no comfy imports)."""
import asyncio
import json
import os
import re

import aiohttp

# what "the server is not there" looks like from aiohttp
CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError,
                     ConnectionError, OSError)


class ServerDown(Exception):
    """The server did not answer (refused, reset, timed out) or answered 5xx."""


class PromptRejected(Exception):
    """POST /prompt answered 400: the workflow failed validation."""

    def __init__(self, message, node_errors=None, body=None):
        super().__init__(message)
        self.node_errors = node_errors or {}
        self.body = body


class RequestFailed(Exception):
    """Any other non-2xx answer."""


class MalformedAnswer(RequestFailed):
    """The server answered, with something this client cannot use (a history entry that is no object, outputs that
    are no lists of files, a file name that is no file name): an error of the job it concerns, never the server
    being down."""


def format_rejection(body, workflow=None):
    """One readable line per problem from a 400 /prompt body: node id, class, input, message."""
    if not isinstance(body, dict):
        return str(body)
    parts = []
    for nid, ne in (body.get("node_errors") or {}).items():
        cls = ne.get("class_type") or (workflow or {}).get(nid, {}).get("class_type", "?")
        errs = ne.get("errors") or []
        by_input = {}
        for err in errs:
            name = (err.get("extra_info") or {}).get("input_name")
            details = err.get("details") or ""
            # ComfyUI prefixes custom-validation details with "<input> - "
            if name and details.startswith(name + " - "):
                details = details[len(name) + 3:]
            text = details or err.get("message") or err.get("type") or "invalid"
            by_input.setdefault(text, []).append(name)
        for text, names in by_input.items():
            names = [n for n in names if n]
            # one message attached to every input of a VALIDATE_INPUTS: keep the inputs it names
            mentioned = [n for n in names if re.search(rf"\b{re.escape(n)}\b", text)]
            names = mentioned or names
            if names:
                # a value printed from the workflow helps: width=100
                vals = []
                for n in names:
                    v = (workflow or {}).get(nid, {}).get("inputs", {}).get(n)
                    vals.append(f"{n}={v!r}" if v is not None and not isinstance(v, list) else n)
                where = f"node {nid} ({cls}) input {', '.join(vals)}"
            else:
                where = f"node {nid} ({cls})"
            parts.append(f"{where}: {text}")
    err = body.get("error")
    if not parts:
        if isinstance(err, dict):
            msg = err.get("message") or err.get("type") or "rejected"
            if err.get("details"):
                msg += f": {err['details']}"
            parts.append(msg)
        else:
            parts.append(str(err or body))
    return "; ".join(parts)


NO_OUTPUT = "the workflow finished but produced no output files"

# the websocket events (and history messages) that end a prompt
DONE_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


def partial_rejection(node_errors, workflow):
    """The error of a prompt ComfyUI queued with some output nodes left out (`node_errors` in its
    answer): not the job the row asked for, so the caller drops it from the queue."""
    return ("the server accepted only part of the workflow and was told to drop it: "
            + format_rejection({"node_errors": node_errors}, workflow))


class HistoryResult:
    """What a /history entry says about a finished prompt."""

    def __init__(self, ok, interrupted=False, error=None, seconds=None, outputs=()):
        self.ok = ok
        self.interrupted = interrupted  # stopped by an interrupt on the server
        self.error = error  # one line: node, class, exception
        self.seconds = seconds  # the server's execution time
        self.outputs = list(outputs)  # output file items {filename, subfolder, type, node}


def _object(value, what):
    if not isinstance(value, dict):
        raise MalformedAnswer(f"the server's {what} is a {type(value).__name__}, not an object")
    return value


def parse_history(entry):
    """The HistoryResult of a /history entry; MalformedAnswer for one this client cannot read."""
    _object(entry, "history entry")
    status = _object(entry.get("status") or {}, "history status")
    messages = status.get("messages") or []
    if not isinstance(messages, list):
        raise MalformedAnswer(f"the server's history messages are a {type(messages).__name__}, not a list")
    events = {m[0]: m[1] for m in messages if isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)}
    start = events.get("execution_start", {}).get("timestamp")
    end = next((events[k].get("timestamp") for k in DONE_EVENTS if k in events), None)
    seconds = round((end - start) / 1000.0, 3) if start and end else None
    ok = status.get("status_str") == "success" or (status.get("completed") and "execution_error" not in events)
    if not ok:
        if "execution_interrupted" in events:
            err = events["execution_interrupted"]
            return HistoryResult(False, True, f"interrupted on the server (node {err.get('node_id')})", seconds)
        err = events.get("execution_error")
        text = (f"node {err.get('node_id')} ({err.get('node_type')}): "
                f"{err.get('exception_type', 'error')}: {str(err.get('exception_message', '')).strip()}"
                if err else f"server status {status.get('status_str')!r}")
        return HistoryResult(False, False, text, seconds)
    items = []
    for nid, out in _object(entry.get("outputs") or {}, "history outputs").items():
        for val in _object(out, f"output of node {nid}").values():
            if isinstance(val, list):
                items += [dict(it, node=nid) for it in val if isinstance(it, dict) and "filename" in it]
    # saved outputs; previews (type temp) only when nothing was saved
    chosen = [it for it in items if it.get("type", "output") == "output"] or items
    return HistoryResult(True, seconds=seconds, outputs=chosen)


# characters no file name may hold on Windows (and '/' nowhere): replaced in a local name
_NOT_IN_NAMES = re.compile(r'[<>:"/\\|?*\x00-\x1f]')


def local_name(filename):
    """The name under which an output the server calls `filename` is kept locally: its last path part, with
    characters no file system takes replaced; MalformedAnswer for one that names no file ('', '.', '..', a NUL)."""
    if not isinstance(filename, str) or "\x00" in filename:
        raise MalformedAnswer(f"the server named an output {filename!r}, which is not a file name")
    name = _NOT_IN_NAMES.sub("_", filename.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    if name.strip(". ") == "":
        raise MalformedAnswer(f"the server named an output {filename!r}, which is not a file name")
    return name


def output_file_names(outputs):
    """The local file name of each output item of one prompt: its own name, prefixed with its node id (and a
    number) when another item of the prompt has it already, compared as Windows does (without case): no file
    overwrites another."""
    names, seen = [], set()
    for it in outputs:
        base = name = local_name(it.get("filename"))
        node = _NOT_IN_NAMES.sub("_", str(it.get("node", "")))
        count = 1
        while name.lower() in seen:
            name = f"{node}_{base}" if count == 1 else f"{node}_{count}_{base}"
            count += 1
        seen.add(name.lower())
        names.append(name)
    return names


class open_part:
    """`with open_part(dest) as f:` writes dest + '.part', fsyncs it and renames it to dest only
    when the block ends without an error: a job's file is either complete or absent."""

    def __init__(self, dest):
        self.dest = dest
        self.tmp = dest + ".part"

    def __enter__(self):
        self.f = open(self.tmp, "wb")
        return self.f

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                self.f.flush()
                os.fsync(self.f.fileno())
        finally:
            self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.dest)
        else:
            try:
                os.remove(self.tmp)
            except OSError:
                pass
        return False


class ComfyClient:
    def __init__(self, server, client_id, request_timeout=60.0):
        if "://" not in server:
            server = "http://" + server
        self.base = server.rstrip("/")
        self.client_id = client_id
        self.request_timeout = request_timeout
        self.session = None

    @property
    def ws_url(self):
        scheme = "wss" if self.base.startswith("https") else "ws"
        return f"{scheme}{self.base[self.base.index(':'):]}/ws?clientId={self.client_id}"

    async def __aenter__(self):
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=self.request_timeout))
        return self

    async def __aexit__(self, *exc):
        await self.session.close()

    async def _request(self, method, path, *, json_body=None, data=None, params=None, expect_json=True):
        url = self.base + path
        try:
            async with self.session.request(method, url, json=json_body, data=data, params=params) as r:
                raw = await r.read()
                status = r.status
        except CONNECTION_ERRORS as e:
            raise ServerDown(f"{method} {path}: {type(e).__name__}: {e}") from e
        if status >= 500:
            raise ServerDown(f"{method} {path}: HTTP {status}: {raw[:300]!r}")
        body = raw
        if expect_json:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
        return status, body

    async def system_stats(self):
        status, body = await self._request("GET", "/system_stats")
        if status != 200:
            raise ServerDown(f"/system_stats: HTTP {status}")
        return body

    async def queue(self):
        """(running prompt ids, pending prompt ids)."""
        status, body = await self._request("GET", "/queue")
        if status != 200 or not isinstance(body, dict):
            raise ServerDown(f"/queue: HTTP {status}")
        # items are [number, prompt id, ...]: anything else names no prompt of ours
        running, pending = (
            {item[1] for item in (body.get(key) if isinstance(body.get(key), list) else [])
             if isinstance(item, list) and len(item) > 1 and isinstance(item[1], str)}
            for key in ("queue_running", "queue_pending"))
        return running, pending

    async def history(self, prompt_id):
        """The history entry of prompt_id, or None if the server does not know it."""
        status, body = await self._request("GET", f"/history/{prompt_id}")
        if status != 200:
            raise RequestFailed(f"/history/{prompt_id}: HTTP {status}")
        return _object(body, "/history answer").get(prompt_id)

    async def result(self, prompt_id):
        """The HistoryResult of finished prompt_id, or None if the server does not know it;
        MalformedAnswer for an entry this client cannot read (the job's error)."""
        entry = await self.history(prompt_id)
        return None if entry is None else parse_history(entry)

    async def submit(self, workflow, prompt_id):
        """Queue workflow as prompt_id; returns (prompt id, node_errors).  ComfyUI queues a
        prompt when at least one output validates: node_errors then lists the outputs it left out."""
        payload = {"prompt": workflow, "client_id": self.client_id, "prompt_id": prompt_id}
        status, body = await self._request("POST", "/prompt", json_body=payload)
        if status == 400:
            raise PromptRejected(format_rejection(body, workflow), body.get("node_errors") if isinstance(body, dict) else None, body)
        if status != 200 or not isinstance(body, dict) or "prompt_id" not in body:
            raise RequestFailed(f"POST /prompt: HTTP {status}: {str(body)[:300]}")
        return body["prompt_id"], body.get("node_errors") or {}

    async def upload_image(self, data, name):
        """Store `data` (the image file's bytes) in the server's input folder as `name`; returns
        the name to put in a Load Image node."""
        form = aiohttp.FormData()
        form.add_field("overwrite", "true")
        form.add_field("type", "input")
        form.add_field("image", data, filename=name, content_type="application/octet-stream")
        status, body = await self._request("POST", "/upload/image", data=form)
        if status != 200 or not isinstance(body, dict):
            raise RequestFailed(f"upload of {name}: HTTP {status}: {str(body)[:300]}")
        sub = body.get("subfolder") or ""
        return f"{sub}/{body['name']}" if sub else body["name"]

    async def download(self, item, dest=None):
        """GET /view for a history output item: into dest (written atomically), or returned as
        bytes when dest is None (a Ray worker sends them to the driver, which writes them)."""
        params = {"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                  "type": item.get("type", "output")}
        try:
            async with self.session.get(self.base + "/view", params=params) as r:
                if r.status >= 500:
                    raise ServerDown(f"/view {item['filename']}: HTTP {r.status}")
                if r.status != 200:
                    raise RequestFailed(f"/view {item['filename']}: HTTP {r.status}")
                if dest is None:
                    return await r.read()
                with open_part(dest) as f:
                    async for chunk in r.content.iter_chunked(1 << 16):
                        f.write(chunk)
        except CONNECTION_ERRORS as e:
            if isinstance(e, OSError) and not isinstance(e, (ConnectionError, aiohttp.ClientError)):
                # writing the local file failed (disk full, permission, read-only): not the server's fault
                raise RequestFailed(f"could not write {dest}: {e}") from e
            raise ServerDown(f"/view {item['filename']}: {type(e).__name__}: {e}") from e
        return dest

    async def delete_queued(self, prompt_ids):
        if prompt_ids:
            await self._request("POST", "/queue", json_body={"delete": list(prompt_ids)}, expect_json=False)

    async def interrupt(self, prompt_id=None):
        body = {"prompt_id": prompt_id} if prompt_id else {}
        await self._request("POST", "/interrupt", json_body=body, expect_json=False)

    async def withdraw(self, prompt_ids):
        """Take prompts off the server: delete those still queued, interrupt the one running."""
        await self.delete_queued(prompt_ids)
        for pid in prompt_ids:
            await self.interrupt(pid)
