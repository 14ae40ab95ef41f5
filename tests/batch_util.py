"""Helpers of the batch tests (test_batch.py, test_batch_ray.py): job tables of tiny jobs, the
manifest and output folders as a user reads them, and what a server's history says was run."""
import csv
import json
import os
import time

from server_util import GOLDEN, REPO, http_json

CLI = os.path.join(REPO, "scripts", "vc_batch.py")
T2V_WF = os.path.join(REPO, "workflows", "api", "vc2_t2v_512.json")
COND_IMAGE = os.path.join(GOLDEN, "tiny_i2v_v1.case1.cond_image.png")
T2V_CKPT = "tiny_t2v_v2.safetensors"
I2V_CKPT = "tiny_i2v_v1.safetensors"
TINY = {"width": 128, "height": 64, "frames": 4, "steps": 2}


def write_table(path, rows):
    if str(path).endswith(".jsonl"):
        with open(path, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    else:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in rows:
                w.writerow(r)
    return str(path)


def t2v_row(name, seed, **kw):
    return dict(name=name, prompt=f"a red ball {name}", seed=seed, checkpoint=T2V_CKPT, **TINY, **kw)


def i2v_row(name, seed, image, **kw):
    return dict(name=name, prompt=f"the picture moves {name}", seed=seed, image=image, checkpoint=I2V_CKPT,
                **TINY, **kw)


def read_manifest(out):
    path = os.path.join(out, "manifest.jsonl")
    if not os.path.exists(path):
        return {}
    entries = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                e = json.loads(line)
                entries[e["job"]] = e
    return entries


def job_files(out, name):
    d = os.path.join(out, name)
    return sorted(f for f in os.listdir(d) if not f.endswith(".part")) if os.path.isdir(d) else []


def assert_video(path):
    with open(path, "rb") as f:
        head = f.read(12)
    assert os.path.getsize(path) > 1000 and head[4:8] == b"ftyp", path


def history_of(server):
    return http_json(server.url + "/history?max_items=1000")


def runs_per_job(history, names):
    """How many prompts the server executed for each job (by its SaveVideo filename_prefix)."""
    counts = dict.fromkeys(names, 0)
    for entry in history.values():
        for node in entry["prompt"][2].values():
            prefix = node["inputs"].get("filename_prefix")
            if isinstance(prefix, str) and prefix.startswith("vc_batch/"):
                job = prefix.split("/")[1]
                if job in counts and entry.get("status", {}).get("status_str") == "success":
                    counts[job] += 1
    return counts


def wait_for(predicate, timeout, what, interval=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
