"""What both executors (runner.py: one server, ray_executor.py: Ray workers) record in the
manifest about a job's outcome, and how they tell the user."""
import collections
import sys
import time

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm comes with ComfyUI
    tqdm = None


class Ledger:
    def __init__(self, planner, max_attempts=3, progress=None, log=None):
        self.planner = planner
        self.jobs = planner.jobs
        self.manifest = planner.manifest
        self.max_attempts = max(1, int(max_attempts))
        self.progress = progress  # None: bars only on a terminal
        self._log = log
        self.counts = collections.Counter()
        self.bar = None  # the batch's bar over jobs

    def log(self, msg):
        if self._log:
            self._log(msg)
        elif tqdm is not None:
            tqdm.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def open_bar(self):
        """The bar over jobs (None when not shown); says how many an earlier run finished."""
        total, done_before = len(self.jobs), self.planner.done_count()
        if done_before:
            self.log(f"resuming: {done_before} of {total} job(s) already done")
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        if tqdm is not None and show:
            self.bar = tqdm(total=total, initial=done_before, unit="job", position=0, desc="jobs",
                            dynamic_ncols=True, file=sys.stderr)
        return self.bar

    def attempts(self, p):
        return (self.manifest.get(p.name) or {}).get("attempts") or 0

    def out_of_attempts(self, p):
        """True (and p failed) when p was submitted --max-attempts times already."""
        entry = self.manifest.get(p.name) or {}
        attempts = entry.get("attempts") or 0
        if attempts < self.max_attempts:
            return False
        log = "; ".join(entry.get("attempt_log") or [])
        self.fail(p, f"gave up after {attempts} attempt(s) (--max-attempts {self.max_attempts})"
                     + (f": {log}" if log else ""))
        return True

    def retry(self, p, note, counted):
        """p's prompt was lost: record why and make the job pending again.  `counted`: the attempt
        may have run (it may be what killed its server), so it counts against --max-attempts."""
        entry = self.manifest.get(p.name) or {}
        attempts = entry.get("attempts") or 0
        note = note + ("" if counted else " before it ran (not counted)")
        uncount = not counted and not p.attempt_returned
        self.manifest.update(p.name, status="pending", attempts=max(0, attempts - 1) if uncount else attempts,
                             attempt_log=(entry.get("attempt_log") or []) + [note], error=note)
        self.log(f"{p.name}: {note}; submitting it again")
        p.prompt_id = None
        p.may_have_run = p.attempt_returned = False

    def cancel(self, p, where):
        """p was stopped by this batch's own interrupt (Ctrl-C): not a failed attempt, so the attempt its
        submission counted is given back (a rerun with --max-attempts 1 runs it)."""
        entry = self.manifest.get(p.name) or {}
        attempts = entry.get("attempts") or 0
        note = f"{where}: cancelled by this batch's interrupt (not counted)"
        self.manifest.update(p.name, status="cancelled", attempts=max(0, attempts - 1),
                             attempt_log=(entry.get("attempt_log") or []) + [note])

    def fail(self, p, error):
        self.manifest.update(p.name, status="failed", error=error)
        self.counts["failed"] += 1
        self.log(f"FAILED {p.name}: {error}")
        if self.bar is not None:
            self.bar.update(1)

    def done(self, p, files, seconds, where="", **fields):
        """Mark p done: its files are complete in the output folder already.  seconds: the
        server's execution time; None: the time since p was submitted."""
        if seconds is None and p.submitted is not None:
            seconds = round(time.monotonic() - p.submitted, 3)
        self.manifest.update(p.name, status="done", files=files, seconds=seconds, error=None, **fields)
        self.counts["done"] += 1
        self.log(f"done {p.name}: {', '.join(files)} ({seconds}s{where})")
        if self.bar is not None:
            self.bar.update(1)

    def end(self, code, message=None):
        if message:
            self.log(message)
        self.log(self.planner.summary())
        return code

    def exit_code(self):
        return 1 if self.counts["failed"] else 0
