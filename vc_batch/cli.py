"""Command line: python scripts/vc_batch.py JOBS [options]  (or python -m vc_batch)."""
import argparse
import asyncio
import json
import os
import sys

from . import workflow as wfm
from .columns import COLUMNS
from .manifest import Manifest, ManifestLocked
from .plan import Planner
from .table import TableError, load_jobs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_T2V = os.path.join(REPO, "workflows", "api", "vc2_t2v_512.json")
DEFAULT_I2V = os.path.join(REPO, "workflows", "api", "vc1_i2v_512.json")


def build_parser():
    p = argparse.ArgumentParser(
        prog="vc_batch",
        description="Run a table of VideoCrafter jobs (CSV or JSONL) through a running ComfyUI server, or "
                    "spread it over several ComfyUI workers with Ray (--ray). Rerun the same command to resume.",
        epilog=f"Columns: {', '.join(COLUMNS)} (+ roles from --roles). Blank cells keep the workflow's values. "
               "See docs/batch.md.")
    p.add_argument("jobs", help="job table: .csv (header row) or .jsonl")
    p.add_argument("--delimiter", default=",",
                   help="CSV field separator, one character (default: comma; use ';' or '\\t' for tab); "
                        "never guessed")
    p.add_argument("--server", action="append", dest="servers", metavar="URL",
                   help="ComfyUI address (default http://127.0.0.1:8188); with --ray give it once per existing "
                        "server to run one Ray worker per server")
    p.add_argument("--out", "-o", default="vc_batch_out",
                   help="output folder; each job's files go to OUT/<job name>/ (default %(default)s)")
    p.add_argument("--manifest", help="manifest path (default OUT/manifest.jsonl)")
    p.add_argument("--workflow", help="API workflow for every row (default: T2V or I2V by whether the row has an image)")
    p.add_argument("--t2v-workflow", default=DEFAULT_T2V, help="API workflow for rows without an image "
                   "(default workflows/api/vc2_t2v_512.json)")
    p.add_argument("--i2v-workflow", default=DEFAULT_I2V, help="API workflow for rows with an image "
                   "(default workflows/api/vc1_i2v_512.json)")
    p.add_argument("--image-root", action="append", dest="image_roots", metavar="DIR",
                   help="a folder the rows' images may come from (they are uploaded to the server); give it once per "
                        "folder (default: the table's folder only)")
    p.add_argument("--roles", help='JSON mapping file overriding/adding roles: {"prompt": ["6", "text"], '
                   '"fps": [["9", "fps"], ["12", "fps"]], "eta": ["3", "eta"]}')
    p.add_argument("--max-queued", type=int, metavar="N",
                   help="one server: prompts of this batch on it at once (default 2); a Ray worker runs one "
                        "job at a time")
    p.add_argument("--max-attempts", type=int, default=3,
                   help="submissions per job over all runs before it is recorded as failed: a job whose "
                        "prompt dies with its server, or is interrupted there, is retried (default %(default)s)")
    p.add_argument("--prefix", default="vc_batch",
                   help="server-side filename_prefix folder: files are saved as PREFIX/<job>/<job>_NNNNN_.ext")
    p.add_argument("--skip-failed", action="store_true", help="on a rerun, do not retry jobs that failed")
    p.add_argument("--retry-timeout", type=float, default=600.0,
                   help="seconds to keep retrying while no server is reachable (default %(default)s)")
    p.add_argument("--poll-interval", type=float, default=2.0,
                   help="seconds between queue checks besides websocket events (default %(default)s)")
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds per HTTP read (default %(default)s)")
    ray = p.add_argument_group("several workers with Ray (pip install -r requirements-cluster.txt; docs/batch.md)")
    ray.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="run the jobs on Ray workers: 'local' (the default: a private Ray on this machine), "
                          "'auto' (the cluster `ray start` joined here) or a head's host:port / ray://host:port")
    ray.add_argument("--workers", type=int, metavar="N",
                     help="with --comfyui: how many ComfyUI workers to launch (default 1)")
    ray.add_argument("--comfyui", metavar="PATH",
                     help="ComfyUI folder (holding main.py, this pack in custom_nodes) each worker launches on "
                          "its node, with its own port and input/output folders")
    ray.add_argument("--comfyui-args", default="", metavar="ARGS",
                     help="extra arguments of every launched ComfyUI, one string, e.g. "
                          "\"--extra-model-paths-config /models/paths.yaml\" (the same model paths for all)")
    ray.add_argument("--comfyui-python", metavar="PYTHON",
                     help="interpreter of the launched ComfyUI (default: the one running the worker)")
    ray.add_argument("--worker-dir", metavar="DIR",
                     help="where launched workers keep their ComfyUI folders and logs (default: the node's temp dir)")
    ray.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray CPUs per worker (default %(default)s)")
    ray.add_argument("--gpus-per-worker", type=float,
                     help="Ray GPUs per worker (default 1 where the cluster has GPUs, else 0)")
    ray.add_argument("--max-restarts", type=int, default=3,
                     help="restarts of a worker whose ComfyUI dies, before it is left out (default %(default)s)")
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
        check_executor_args(args)
    except (TableError, wfm.WorkflowError, OSError, ValueError) as e:
        warn(f"error: {e}")
        return 2
    manifest_path = args.manifest or os.path.join(args.out, "manifest.jsonl")
    planner = Planner(jobs, Manifest(manifest_path, warn=warn), t2v_workflow=args.t2v_workflow,
                      i2v_workflow=args.i2v_workflow, workflow=args.workflow, role_map=role_map, prefix=args.prefix,
                      skip_failed=args.skip_failed, log=warn,
                      image_roots=args.image_roots or [os.path.dirname(os.path.abspath(args.jobs))])
    if args.dry_run:
        return dry_run(planner)
    ray = None
    if args.ray is not None:
        from .ray_executor import RayUnavailable, connect
        try:  # before the manifest is touched: an address that does not answer changes nothing
            ray = connect(args.ray, num_cpus=args.workers_cpus)
        except RayUnavailable as e:
            warn(f"error: {e}")
            return 2
    try:
        planner.manifest.lock()
    except ManifestLocked as e:
        warn(f"error: {e}")
        return 2
    try:
        planner.manifest.load()
        try:
            if ray is not None:
                return ray_executor(args, planner, ray).run()
            from .runner import BatchRunner
            runner = BatchRunner(planner, args.out, server=(args.servers or ["http://127.0.0.1:8188"])[0],
                                 max_queued=args.max_queued or 2, retry_timeout=args.retry_timeout,
                                 max_attempts=args.max_attempts, poll_interval=args.poll_interval,
                                 request_timeout=args.request_timeout, progress=args.progress)
            return asyncio.run(runner.run())
        except (KeyboardInterrupt, asyncio.CancelledError):
            return 130
    finally:
        planner.manifest.unlock()
        if ray is not None:
            ray.shutdown()


def check_executor_args(args):
    """One server without Ray; several workers only with --ray.  Sets args.workers_cpus: the
    CPUs a private local Ray needs."""
    servers = args.servers or []
    if args.ray is None:
        if len(servers) > 1:
            raise ValueError(f"--server given {len(servers)} times: spreading a batch over several servers runs "
                             "on Ray; add --ray (pip install \"ray[default]\")")
        for name in ("workers", "comfyui"):
            if getattr(args, name) is not None:
                raise ValueError(f"--{name} needs --ray")
        return
    if args.max_queued is not None:
        raise ValueError("--max-queued is for one server without --ray; a Ray worker runs one job at a time "
                         "(more workers: --workers)")
    if servers and args.comfyui:
        raise ValueError("give either --comfyui (workers launch their own ComfyUI) or --server (a worker per "
                         "existing server), not both")
    if not servers and not args.comfyui:
        raise ValueError("--ray needs --comfyui PATH (each worker launches a ComfyUI) or --server URL "
                         "(once per existing server)")
    if servers and args.workers not in (None, len(servers)):
        raise ValueError(f"--workers {args.workers} with {len(servers)} --server: a worker per server")
    if args.comfyui and not os.path.isfile(os.path.join(args.comfyui, "main.py")):
        raise ValueError(f"--comfyui {args.comfyui}: no main.py there; give the ComfyUI folder")
    args.workers = len(servers) if servers else (args.workers or 1)
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    args.workers_cpus = max(1, int(args.workers * args.cpus_per_worker + 0.999))


def ray_executor(args, planner, ray):
    from .ray_executor import RayExecutor
    return RayExecutor(planner, args.out, ray=ray, workers=args.workers, servers=args.servers or (),
                       comfyui=args.comfyui, comfyui_python=args.comfyui_python, comfyui_args=args.comfyui_args,
                       work_dir=args.worker_dir, cpus_per_worker=args.cpus_per_worker,
                       gpus_per_worker=args.gpus_per_worker, max_restarts=args.max_restarts,
                       max_attempts=args.max_attempts, retry_timeout=args.retry_timeout,
                       poll_interval=args.poll_interval, request_timeout=args.request_timeout,
                       progress=args.progress)


def dry_run(planner):
    """Print the roles found and the first filled workflow; the manifest is only read (seeds
    drawn by an earlier run are shown, new ones are not kept)."""
    planner.manifest.load()
    seen, first = set(), None
    for job in planner.jobs:
        try:
            report = planner.roles_report(job)
            planned = planner.plan(job, seed=planner.draw_seed(job))
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


if __name__ == "__main__":
    sys.exit(main())
