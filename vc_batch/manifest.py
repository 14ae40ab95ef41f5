"""The batch manifest: one JSON object per job per line (JSONL), rewritten atomically.

Every change writes the whole file to `<manifest>.tmp`, fsyncs it, renames it over the
manifest and fsyncs the folder, so a crash at any moment leaves either the old or the new
complete file: finished entries are never corrupted.  A lock file (`<manifest>.lock`, held
through `filelock`: flock on Unix, msvcrt locking on Windows) stops two batch processes from
sharing one manifest.

Entry fields: job, status, prompt_id, server (which server holds prompt_id), files, seconds,
error, attempts (submissions counted against --max-attempts), attempt_log (why earlier
attempts ended), seed (a `random` seed as drawn, before the first submission), fingerprint,
workflow, updated.  Status is one of
  pending    not submitted yet (or to be submitted again)
  queued     submitted to the server as prompt_id (may or may not still be there)
  done       outputs downloaded (files are relative to the output folder)
  failed     rejected by the server or failed while running (error says why)
  cancelled  removed from the server by Ctrl-C
Only `done` is final; a rerun resubmits everything else (`failed` too unless --skip-failed).
"""
import json
import os
import time

try:
    import filelock  # ComfyUI's environment has it (a torch dependency; ComfyUI 0.33 requires it)
except ImportError:  # vc_batch is a pure client and may run elsewhere: the error comes when a lock is needed
    filelock = None

FIELDS = ("job", "status", "prompt_id", "server", "files", "seconds", "error", "attempts", "attempt_log", "seed",
          "fingerprint", "workflow", "updated")


class ManifestLocked(RuntimeError):
    pass


class Manifest:
    def __init__(self, path, warn=print):
        self.path = os.path.abspath(path)
        self.entries = {}
        self._lock = None
        self.warn = warn

    # -- locking -----------------------------------------------------------------------
    def lock(self):
        if filelock is None:
            raise RuntimeError("vc_batch locks its manifest with the 'filelock' package, which this Python lacks: "
                               "run it with ComfyUI's Python, or `python -m pip install filelock`.")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        lock = filelock.FileLock(self.path + ".lock", timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise ManifestLocked(f"{self.path} is in use by another vc_batch process") from None
        self._lock = lock
        return self

    def unlock(self):
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- reading -----------------------------------------------------------------------
    def load(self):
        self.entries = {}
        if not os.path.exists(self.path):
            return self
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    job = entry["job"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.warn(f"warning: {self.path}:{n}: unreadable manifest line skipped")
                    continue
                self.entries[job] = entry  # a later line for the same job wins
        return self

    def get(self, job):
        return self.entries.get(job)

    def status(self, job):
        e = self.entries.get(job)
        return e.get("status") if e else None

    # -- writing -----------------------------------------------------------------------
    def ensure(self, job, **fields):
        """Add a pending entry for a job the manifest does not know (no write)."""
        if job not in self.entries:
            entry = {"job": job, "status": "pending", "prompt_id": None, "files": [], "seconds": None,
                     "error": None, "attempts": 0}
            entry.update(fields)
            self.entries[job] = entry
        return self.entries[job]

    def update(self, job, **fields):
        entry = self.ensure(job)
        entry.update(fields)
        entry["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.save()
        return entry

    def save(self):
        tmp = self.path + ".tmp"
        data = "".join(json.dumps(self._ordered(e), ensure_ascii=False) + "\n" for e in self.entries.values())
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        try:
            dfd = os.open(os.path.dirname(self.path), os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)

    @staticmethod
    def _ordered(entry):
        out = {k: entry[k] for k in FIELDS if k in entry}
        out.update({k: v for k, v in entry.items() if k not in out})
        return out

    def summary(self, jobs=None):
        counts = {}
        for name, e in self.entries.items():
            if jobs is None or name in jobs:
                counts[e.get("status")] = counts.get(e.get("status"), 0) + 1
        return counts
