"""`sharding: fsdp` under torchrun with 2 CPU ranks (gloo): killed with SIGKILL after its first state and
resumed, the run ends with the loss curve and the consolidated checkpoint of the data-parallel run (same ranks,
data and noise; only the sharding differs), each rank holding about half of the optimizer states; the state
refuses another world size."""
import csv
import json
import os
import signal
import subprocess
import time

import pytest
import safetensors.torch

import comfy_host
import train_util
from conftest import rel_err
from test_train_ddp import torchrun_two_ranks, torchrun_two_ranks_command

STEPS = 3


def losses(run):
    with open(run / "loss_log.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def kill_tree(pid):
    """SIGKILL torchrun and its ranks at once (the ranks run in sessions of their own: not its process group)."""
    import psutil
    try:
        parent = psutil.Process(pid)
        processes = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in processes:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def run_killed_after_first_state(tmp_path, values, timeout=300):
    """Start the run, SIGKILL every process of it once a complete state of step 1 exists; returns its exit code
    and log."""
    cmd, env = torchrun_two_ranks_command(tmp_path, values, "fsdp.yaml")
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    states = os.path.join(values["output_dir"], "states")
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(os.path.isfile(os.path.join(states, run, "step_00000001", "meta.json"))
                   for run in (os.listdir(states) if os.path.isdir(states) else [])):
                kill_tree(proc.pid)
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
        log.close()
    return proc.returncode, (tmp_path / "killed.log").read_text()


def test_fsdp_two_ranks_matches_ddp_and_resumes_after_kill(pack, tmp_path, monkeypatch):
    data = train_util.make_dataset(str(tmp_path / "data"), count=4)
    common = dict(stage="finetune", finetune_steps=STEPS, device="cpu", save_fp16=False, finetune_lr=1e-3,
                  max_grad_norm=0.05)  # clipping active: the sharded norm is checked too
    fsdp_run, ddp_run = tmp_path / "fsdp", tmp_path / "ddp"
    fsdp = train_util.small_config(tmp_path, data, output_dir=str(fsdp_run), sharding="fsdp", save_every=1, **common)

    code, log = run_killed_after_first_state(tmp_path, fsdp)
    assert code == -signal.SIGKILL, log[-3000:]
    assert not os.path.exists(fsdp_run / "tiny.safetensors"), "the run finished before the kill"
    (run_id,) = os.listdir(fsdp_run / "states")
    first = fsdp_run / "states" / run_id / "step_00000001"
    assert sorted(os.listdir(first)) == ["meta.json", "optimizer.pt", "optimizer.rank0.pt", "optimizer.rank1.pt",
                                         "weights.safetensors"]

    resumed = torchrun_two_ranks(tmp_path, fsdp, config_name="fsdp.yaml")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert "Resumed from" in resumed.stdout + resumed.stderr and "step_00000001 at step 1" in resumed.stderr, \
        resumed.stderr[-3000:]
    reference = torchrun_two_ranks(tmp_path, train_util.small_config(tmp_path, data, output_dir=str(ddp_run),
                                                                      save_every=0, **common), config_name="ddp.yaml")
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-5000:]

    sharded_losses, ddp_losses = losses(fsdp_run), losses(ddp_run)
    print("loss fsdp", sharded_losses, "ddp", ddp_losses)
    assert len(sharded_losses) == STEPS
    assert max(abs(a - b) for a, b in zip(sharded_losses, ddp_losses)) <= 1e-5
    ours = safetensors.torch.load_file(fsdp_run / "tiny.safetensors")
    theirs = safetensors.torch.load_file(ddp_run / "tiny.safetensors")
    assert ours.keys() == theirs.keys()
    unet = [k for k in ours if k.startswith("model.diffusion_model.")]
    moved = max(rel_err(theirs[k], safetensors.torch.load_file(train_util.TINY_I2V)[k]) for k in unet[:20])
    assert moved > 1e-5  # the finetune changed the weights
    assert max(rel_err(ours[k], theirs[k]) for k in unet) <= 1e-5

    sharded = json.loads((fsdp_run / "summary.json").read_text())["optimizer_state_bytes_by_rank"]
    replicated = json.loads((ddp_run / "summary.json").read_text())["optimizer_state_bytes_by_rank"]
    print("optimizer state bytes per rank: fsdp", sharded, "ddp", replicated)
    assert all(0.45 <= b / replicated[0] <= 0.55 for b in sharded)

    # another world size: refused before any model loads, naming the world size it needs
    trainer = comfy_host.pack("vc_train.trainer")
    config = comfy_host.pack("vc_train.config")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ValueError) as error:
        trainer.check_before_loading(config.TrainConfig.from_dict(dict(fsdp, finetune_steps=STEPS + 1)))
    assert "world size 2 -> 1" in str(error.value) and "--nproc_per_node 2" in str(error.value)
    monkeypatch.delenv("WORLD_SIZE")  # not under torchrun at all
    with pytest.raises(ValueError) as error:
        trainer.check_before_loading(config.TrainConfig.from_dict(dict(fsdp, output_dir=str(tmp_path / "fresh"))))
    assert "sharding 'fsdp' needs several ranks: start the trainer with torchrun" in str(error.value)
