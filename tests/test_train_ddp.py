"""scripts/vc_train.py under torchrun with 2 CPU ranks (gloo): it finishes, the ranks end with
identical weights, every sample is used once per epoch across ranks, and only rank 0 writes."""
import json
import os
import subprocess

import comfy_host
import train_util
from server_util import free_port, venv_python


def test_torchrun_two_ranks_gloo(tmp_path):
    data = train_util.make_dataset(str(tmp_path / "data"), count=4)
    out = tmp_path / "run"
    config = tmp_path / "train.yaml"
    values = train_util.small_config(tmp_path, data, output_dir=str(out), stage="both", projector_steps=1,
                                     finetune_steps=1, device="cpu")
    config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [venv_python(), "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           os.path.join(comfy_host.REPO, "scripts", "vc_train.py"), "--config", str(config), "--cpu"]
    proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 2
    digests = summary["rank_weight_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # 2 steps x batch 1 x 2 ranks = 4 samples = one epoch of the 4 videos, each exactly once
    used = summary["epoch0_indices_by_rank"]
    assert sorted(used[0] + used[1]) == [0, 1, 2, 3]
    assert (out / "tiny.safetensors").exists() and (out / "tiny_projector.safetensors").exists()
    assert sorted(os.listdir(out / "states")) == ["step_00000001", "step_00000002"]
    leftovers = [n for n in os.listdir(out) if n.startswith(".")]
    assert not leftovers
