"""A local stand-in for the Hugging Face file endpoints, for downloader tests (HF_ENDPOINT=hub.url).

Serves `HEAD/GET /<owner>/<repo>/resolve/<revision>/<filename>` with the headers huggingface_hub 2.4
reads (X-Repo-Commit, X-Linked-Etag = sha256 of the file, X-Linked-Size, Content-Length, Accept-Ranges)
and byte ranges (`Range: bytes=N-` -> 206 with Content-Range). Knobs for failure cases:
- `cut_after[path] = n`: the next GET of that file announces the full length but closes the
  connection after n bytes (a dropped connection); each cut is used once.
- `fail_gets[path] = k`: the next k GETs of that file after any pending cut answer 503 (the hub gave up).
- `corrupt.add(path)`: serve the file with one byte flipped while the headers keep the true sha256.
- `etag[path]`: what the hub says of the file's hash instead: "missing" (no ETag at all), "weak" (a weak ETag
  `W/"..."`, no X-Linked-Etag) or "git" (a 40-hex git blob hash, as for files not in LFS).
- `redirect[path] = base_url`: HEAD and GET answer 302 to base_url + the same path, with no hash or size (a
  redirect to another host, as the hub's to its CDN, that lost them).
- `claimed_size[path] = n`: HEAD claims the file has n bytes.
- `throttle[path] = s`: GET sleeps s seconds per MiB it sends (a slow connection).
`requests` records (method, path, Range header) of every request.
"""
import hashlib
import http.server
import threading
import time


class FakeHub:
    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self):
        self.files = {}  # "owner/repo/filename" -> bytes
        self.cut_after = {}
        self.fail_gets = {}
        self.corrupt = set()
        self.etag = {}
        self.redirect = {}
        self.claimed_size = {}
        self.throttle = {}
        self.requests = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _resolve(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                # owner/repo/resolve/revision/filename
                if len(parts) < 5 or parts[2] != "resolve":
                    return None, None
                key = "/".join(parts[:2] + parts[4:])
                return key, hub.files.get(key)

            def _headers(self, data, status, start=0, key=None):
                self.send_response(status)
                self.send_header("X-Repo-Commit", hub.COMMIT)
                mode = hub.etag.get(key)
                if mode is None:
                    self.send_header("X-Linked-Etag", '"%s"' % hashlib.sha256(data).hexdigest())
                    self.send_header("ETag", '"%s"' % hashlib.sha256(data).hexdigest())
                elif mode == "weak":
                    self.send_header("ETag", 'W/"%x-%x"' % (len(data), hash(data) & 0xFFFFFFFF))
                elif mode == "git":
                    self.send_header("ETag", '"%s"' % hashlib.sha1(data).hexdigest())
                size = hub.claimed_size.get(key, len(data)) if self.command == "HEAD" else len(data)
                self.send_header("X-Linked-Size", str(size))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()

            def _not_found(self):
                body = b'{"error":"Entry not found"}'
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Repo-Commit", hub.COMMIT)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            def _redirected(self, key):
                if key not in hub.redirect:
                    return False
                self.send_response(302)
                self.send_header("X-Repo-Commit", hub.COMMIT)
                self.send_header("Location", hub.redirect[key] + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path, self.headers.get("Range")))
                key, data = self._resolve()
                if data is None:
                    return self._not_found()
                if not self._redirected(key):
                    self._headers(data, 200, key=key)

            def do_GET(self):
                rng = self.headers.get("Range")
                hub.requests.append(("GET", self.path, rng))
                key, data = self._resolve()
                if data is None:
                    return self._not_found()
                if self._redirected(key):
                    return
                if hub.fail_gets.get(key) and key not in hub.cut_after:
                    hub.fail_gets[key] -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if key in hub.corrupt:
                    sent = bytearray(data)
                    sent[len(sent) // 2] ^= 0xFF
                    sent = bytes(sent)
                else:
                    sent = data
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[len("bytes="):].split("-")[0])
                self._headers(data, 206 if start else 200, start, key)
                body = sent[start:]
                cut = hub.cut_after.pop(key, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if key in hub.throttle:
                    for offset in range(0, len(body), 1 << 20):
                        self.wfile.write(body[offset:offset + (1 << 20)])
                        self.wfile.flush()
                        time.sleep(hub.throttle[key])
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, repo_id, filename, data):
        self.files[f"{repo_id}/{filename}"] = data

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def gets(self, repo_id, filename):
        """Range headers of the GETs of one file, in order (None: a request from the start)."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith(f"{repo_id}/resolve/main/{filename}")]
