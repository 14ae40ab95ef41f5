"""scripts/gpu_check.sh --cpu-dry-run: every step of the GPU check on the CPU at tiny sizes, so it cannot rot
between the rare runs on a GPU box. The steps run the same commands as there (benchmark.py per weight dtype, a
whole video, the memory targets (VideoCrafter2 and DynamiCrafter 512 under 8 GB, ToonCrafter 512 under 10 GB,
VideoCrafter1 576x1024 under 12 GB), a real server on the shipped vc2_t2v_512 graph, tests/test_gpu.py, 64 frames,
576x1024, the original's UNet); on the CPU the GPU tests skip, the cap is reported as not applied and the original's
UNet is skipped unless its code was given.
"""
import json
import os
import subprocess
import sys

import comfy_host

LIMIT_S = 600  # the dry run took 1.5-3 min on the shared 2-core machine (load 4-7)


def test_cpu_dry_run_runs_every_step(tmp_path):
    out = tmp_path / "gpu_check"
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_OUT=str(out), GPU_CHECK_WORK=str(tmp_path / "work"))
    proc = subprocess.run(["bash", os.path.join(comfy_host.REPO, "scripts", "gpu_check.sh"), "--cpu-dry-run"],
                          capture_output=True, text=True, timeout=LIMIT_S, env=env)
    records = [json.loads(line) for line in (out / "gpu_check.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in records}
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    capped = ["video_16_bf16_cap_8gb", "video_16_dc_512_bf16_cap_8gb", "video_16_toon_512_bf16_cap_10gb",
              "video_16_vc1_1024_bf16_cap_12gb"]
    expected = {"unet_step_bf16", "unet_step_fp16", "unet_step_fp32", "unet_step_fp8", "video_16_bf16", *capped,
                "server_vc2_t2v_512", "gpu_tests", "frames_64_bf16", "size_576x1024_bf16",
                "original_unet_fp32", "original_unet_fp16_autocast", "original_unet_fp16_xformers", "targets"}
    assert set(steps) == expected
    for name in ("unet_step_bf16", "unet_step_fp16", "unet_step_fp32", "unet_step_fp8", "frames_64_bf16",
                 "size_576x1024_bf16"):
        (result,) = steps[name]["results"]
        assert steps[name]["status"] == "ok" and result["seconds_per_step"] > 0, steps[name]
        assert result["unet_calls_per_step"] == 1.0 and result["call_batch"] == 2  # CFG as one batch-2 call
        assert result["estimate_bytes"] > 0 and result["sampling_peak_bytes"] > 0
    assert steps["unet_step_bf16"]["results"][0]["weights"] == "bf16"
    for name in ["video_16_bf16", *capped]:
        video = steps[name]["results"][-1]
        assert steps[name]["status"] == "ok" and video["finite"] and video["video_seconds"] > 0, steps[name]
        assert video["vram_cap_gb"] is None  # no cap on a CPU: reported as not applied
    # each memory target names its model and cap, and the dry run's peak is read from its step
    targets = steps["targets"]["ratios"]
    for model, cap in (("vc2_t2v_512", 8), ("dc_512", 8), ("toon_512", 10), ("vc1_t2v_1024", 12)):
        target = targets[f"{model}_16_frames_within_{cap}gb"]
        assert target["ok"] and target["target_gb"] == cap and target["peak_gib"] > 0, target
    server = steps["server_vc2_t2v_512"]
    assert server["status"] == "ok" and server["results"][0]["success"], server
    assert server["results"][0]["peak_bytes"] >= server["results"][0]["idle_bytes"] > 0
    gpu_tests = steps["gpu_tests"]
    assert gpu_tests["status"] == "skipped" and "CUDA" in gpu_tests["reason"], gpu_tests
    for mode in ("fp32", "fp16_autocast", "fp16_xformers"):
        assert steps[f"original_unet_{mode}"]["status"] == "skipped"
    assert steps["targets"]["dry_run"] is True
    assert sum(r.get("limit_s", 0) for r in records) > 0


def test_full_size_weights_are_detected_as_the_model_each_step_names():
    """The GPU steps build random weights at each released layout (scripts/benchmark.py --full-size): they must
    pass the loader's checks (a release's noise schedule) and be detected as the model the step names; on the GPU
    machine a wrong layout would only show after minutes. The weights as shapes (meta), the schedule as released."""
    import benchmark  # scripts/, on sys.path through comfy_host
    inspect = comfy_host.pack("vc_models.checkpoint").inspect_checkpoint
    for model_id, model in benchmark.BENCH_MODELS.items():
        sd = benchmark.full_size_state_dict(model.layout, weights_device="meta")
        assert inspect(sd, f"{model_id}.safetensors").entry.id == model_id
