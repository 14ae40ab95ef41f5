"""Command line: python scripts/vc_batch.py JOBS [options]  (or python -m vc_batch)."""
import argparse
import asyncio
import json
import os
import sys

from . import workflow as wfm
from .columns import COLUMNS
from .manifest import Manifest, ManifestLocked
from .runner import BatchRunner
from .table import TableError, load_jobs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_T2V = os.path.join(REPO, "workflows", "api", "vc2_t2v_512.json")
DEFAULT_I2V = os.path.join(REPO, "workflows", "api", "vc1_i2v_512.json")


def build_parser():
    p = argparse.ArgumentParser(
        prog="vc_batch",
        description="Run a table of VideoCrafter jobs (CSV or JSONL) through a running ComfyUI server. "
                    "Rerun the same command to resume.",
        epilog=f"Columns: {', '.join(COLUMNS)} (+ roles from --roles). Blank cells keep the workflow's values. "
               "See docs/batch.md.")
    p.add_argument("jobs", help="job table: .csv (header row) or .jsonl")
    p.add_argument("--delimiter", default=",",
                   help="CSV field separator, one character (default: comma; use ';' or '\\t' for tab); "
                        "never guessed")
    p.add_argument("--server", action="append", dest="servers", metavar="URL",
                   help="ComfyUI address (default http://127.0.0.1:8188); give it several times to spread the "
                        "jobs over several servers (one per GPU)")
    p.add_argument("--out", "-o", default="vc_batch_out",
                   help="output folder; each job's files go to OUT/<job name>/ (default %(default)s)")
    p.add_argument("--manifest", help="manifest path (default OUT/manifest.jsonl)")
    p.add_argument("--workflow", help="API workflow for every row (default: T2V or I2V by whether the row has an image)")
    p.add_argument("--t2v-workflow", default=DEFAULT_T2V, help="API workflow for rows without an image "
                   "(default workflows/api/vc2_t2v_512.json)")
    p.add_argument("--i2v-workflow", default=DEFAULT_I2V, help="API workflow for rows with an image "
                   "(default workflows/api/vc1_i2v_512.json)")
    p.add_argument("--roles", help='JSON mapping file overriding/adding roles: {"prompt": ["6", "text"], '
                   '"fps": [["9", "fps"], ["12", "fps"]], "eta": ["3", "eta"]}')
    p.add_argument("--max-queued", type=int, action="append", metavar="N",
                   help="prompts of this batch on each server at once (default 2); once for every server, "
                        "or once per --server in the same order")
    p.add_argument("--max-attempts", type=int, default=3,
                   help="submissions per job over all runs before it is recorded as failed: a job whose "
                        "prompt dies with its server, or is interrupted there, is retried (default %(default)s)")
    p.add_argument("--failover-after", type=float, default=60.0,
                   help="with several servers: seconds a server may stay unreachable before its unfinished "
                        "jobs move to the others (default %(default)s)")
    p.add_argument("--prefix", default="vc_batch",
                   help="server-side filename_prefix folder: files are saved as PREFIX/<job>/<job>_NNNNN_.ext")
    p.add_argument("--skip-failed", action="store_true", help="on a rerun, do not retry jobs that failed")
    p.add_argument("--retry-timeout", type=float, default=600.0,
                   help="seconds to keep retrying while no server is reachable (default %(default)s)")
    p.add_argument("--poll-interval", type=float, default=2.0,
                   help="seconds between queue checks besides websocket events (default %(default)s)")
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds per HTTP read (default %(default)s)")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show progress bars (default: only on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")
    p.add_argument("--dry-run", action="store_true",
                   help="print the roles found in each workflow and the first filled workflow; submit nothing")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)

    def warn(msg):
        print(msg, file=sys.stderr, flush=True)

    try:
        role_map = wfm.load_role_map(args.roles) if args.roles else {}
        delimiter = "\t" if args.delimiter in ("\\t", "tab", "TAB") else args.delimiter
        jobs = load_jobs(args.jobs, extra_roles=set(role_map) - set(wfm.ROLES), warn=warn, delimiter=delimiter)
    except (TableError, wfm.WorkflowError, OSError, ValueError) as e:
        warn(f"error: {e}")
        return 2
    manifest_path = args.manifest or os.path.join(args.out, "manifest.jsonl")
    try:
        runner = BatchRunner(jobs, Manifest(manifest_path, warn=warn), args.out,
                             servers=args.servers or ["http://127.0.0.1:8188"],
                             t2v_workflow=args.t2v_workflow, i2v_workflow=args.i2v_workflow, workflow=args.workflow,
                             role_map=role_map, max_queued=args.max_queued or [2], prefix=args.prefix,
                             skip_failed=args.skip_failed, retry_timeout=args.retry_timeout,
                             failover_after=args.failover_after, max_attempts=args.max_attempts,
                             poll_interval=args.poll_interval, request_timeout=args.request_timeout,
                             progress=args.progress)
    except ValueError as e:
        warn(f"error: {e}")
        return 2
    if args.dry_run:
        runner.manifest.load()  # read only: seeds drawn by an earlier run are shown, new ones are not kept
        seen, first = set(), None
        for job in jobs:
            try:
                report = runner.roles_report(job)
                planned = runner.plan(job, seed=runner.draw_seed(job))
            except (wfm.WorkflowError, OSError) as e:
                print(f"{job.name}: error: {e}")
                continue
            if planned.workflow_path not in seen:
                seen.add(planned.workflow_path)
                print(report)
            first = first or planned
            print(f"{job.name}: {os.path.basename(planned.workflow_path)} fingerprint {planned.fingerprint}")
        if first is not None:
            print(f"--- filled workflow of {first.name} ---")
            print(json.dumps(first.wf, indent=1))
        return 0
    try:
        runner.manifest.lock()
    except ManifestLocked as e:
        warn(f"error: {e}")
        return 2
    try:
        runner.manifest.load()
        try:
            return asyncio.run(runner.run())
        except (KeyboardInterrupt, asyncio.CancelledError):
            return 130
    finally:
        runner.manifest.unlock()


if __name__ == "__main__":
    sys.exit(main())
