"""scripts/vc_train.py under torchrun with 2 CPU ranks (gloo): it finishes, the ranks end with
identical weights, every sample is used once per epoch across ranks, the ranks share the probing,
only rank 0 writes, and a failure on one rank stops all of them with its reason."""
import json
import os
import subprocess

import comfy_host
import train_util
from server_util import free_port, venv_python


def torchrun_two_ranks_command(tmp_path, values, config_name="train.yaml"):
    """(command, environment) of scripts/vc_train.py under torchrun with 2 CPU ranks on the config `values`."""
    config = tmp_path / config_name
    config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [venv_python(), "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           os.path.join(comfy_host.REPO, "scripts", "vc_train.py"), "--config", str(config), "--cpu"]
    return cmd, env


def torchrun_two_ranks(tmp_path, values, timeout=400, config_name="train.yaml"):
    cmd, env = torchrun_two_ranks_command(tmp_path, values, config_name)
    return subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=timeout)


def test_torchrun_two_ranks_gloo(tmp_path):
    data = train_util.make_dataset(str(tmp_path / "data"), count=4)
    out = tmp_path / "run"
    values = train_util.small_config(tmp_path, data, output_dir=str(out), stage="both", projector_steps=1,
                                     finetune_steps=1, device="cpu")
    proc = torchrun_two_ranks(tmp_path, values)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 2
    digests = summary["rank_weight_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # 2 steps x batch 1 x 2 ranks = 4 samples = one epoch of the 4 videos, each exactly once
    used = summary["epoch0_indices_by_rank"]
    assert sorted(used[0] + used[1]) == [0, 1, 2, 3]
    assert (out / "tiny.safetensors").exists() and (out / "tiny_projector.safetensors").exists()
    assert summary["probed_by_rank"] == [2, 2]  # each rank opened half of the videos (issue 11)
    (run_id,) = os.listdir(out / "states")
    assert run_id == summary["run_id"] and sorted(os.listdir(out / "states" / run_id)) == ["step_00000001", "step_00000002"]
    leftovers = [n for n in os.listdir(out) if n.startswith(".")]
    assert not leftovers


def test_an_error_on_rank_0_fails_every_rank_promptly(tmp_path):
    """Issue 11: rank 0 alone read the data; when it failed, the other ranks waited on a broadcast
    (30-minute timeout) until torchrun killed them, without saying why."""
    values = train_util.small_config(tmp_path, tmp_path / "no_such_data", output_dir=str(tmp_path / "run"), device="cpu")
    proc = torchrun_two_ranks(tmp_path, values, timeout=300)
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert "DatasetError: Training data not found" in log, log[-5000:]
    # rank 1 stops by itself with rank 0's reason (not killed while waiting)
    assert "RankFailed: rank 0 failed: DatasetError: Training data not found" in log, log[-5000:]


RANKS_SCRIPT = r'''
import datetime, json, os, sys, types
import torch.distributed as dist
import torch.multiprocessing as mp

pack = types.ModuleType("vcpack"); pack.__path__ = [sys.argv[1]]; sys.modules["vcpack"] = pack
from vcpack.vc_train.distributed import Distributed


def worker(rank, out, port):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(minutes=30))
    d = Distributed(rank, 2)
    result = {"probed": d.on_all(lambda: [rank * 10 + i for i in range(2)])}
    def probe_fails_on_rank_1():
        if rank == 1:
            raise OSError("disk gone (simulated)")
        return "ok"
    try:
        d.on_all(probe_fails_on_rank_1)
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    # as vc_train.distributed does at the end: a process that exits with a live gloo group can abort
    # ("terminate called without an active exception")
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[2], int(sys.argv[3])), nprocs=2)
'''


def test_an_error_on_any_rank_reaches_every_rank(tmp_path):
    """Issue 11: the ranks exchange what each probed; a failure on rank 1 stops rank 0 at once with
    rank 1's reason (no 30-minute wait on a collective)."""
    import time
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    started = time.time()
    proc = subprocess.run([venv_python(), str(script), comfy_host.REPO, str(tmp_path), str(free_port())], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.time() - started < 60
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["probed"] == ranks[1]["probed"] == [[0, 1], [10, 11]]
    assert ranks[1]["error"] == "OSError: disk gone (simulated)"
    assert ranks[0]["error"] == "RankFailed: rank 1 failed: OSError: disk gone (simulated)"
