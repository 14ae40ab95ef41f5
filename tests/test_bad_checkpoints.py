"""Files that are not usable VideoCrafter checkpoints get errors that say what is wrong."""
import os

import pytest
import torch

import comfy_host


@pytest.fixture(scope="module")
def loader(pack):
    return comfy_host.pack("vc_models.loader")


def error_of(loader, path):
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    with pytest.raises(ckpt_file.CheckpointError) as info:
        loader.load_videocrafter(str(path))
    return str(info.value)


def test_truncated_safetensors(loader, tmp_path):
    src = os.path.join(comfy_host.GOLDEN, "tiny_t2v_v2.safetensors")
    data = open(src, "rb").read()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    message = error_of(loader, path)
    assert "cut.safetensors" in message and "truncated" in message


def test_truncated_ckpt(loader, tmp_path):
    full = tmp_path / "full.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}}, full)
    data = full.read_bytes()
    path = tmp_path / "model.ckpt"
    path.write_bytes(data[: len(data) - 100])
    message = error_of(loader, path)
    assert "model.ckpt" in message and "Download it again" in message


def test_stable_diffusion_checkpoint(loader, tmp_path):
    """An SD1.5-layout file (no temporal layers) is named as such, and where to load it instead."""
    import safetensors.torch
    sd = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": torch.zeros(32, 32),
        "model.diffusion_model.out.2.weight": torch.zeros(4, 32, 3, 3),
        "first_stage_model.decoder.conv_in.weight": torch.zeros(32, 4, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.zeros(1, 77),
    }
    path = tmp_path / "v1-5-pruned-emaonly.safetensors"
    safetensors.torch.save_file(sd, str(path))
    message = error_of(loader, path)
    assert "not a VideoCrafter model" in message and "Load Checkpoint" in message


def test_unrelated_file(loader, tmp_path):
    import safetensors.torch
    path = tmp_path / "lora.safetensors"
    safetensors.torch.save_file({"lora_unet_down.weight": torch.zeros(2, 2)}, str(path))
    message = error_of(loader, path)
    assert "not a VideoCrafter checkpoint" in message and "lora_unet_down" in message


# ------------------------------------------------------------------ through a real server (the loader node)
def tiny_checkpoint_with(server, name, change):
    """The tiny VideoCrafter2 checkpoint with `change(state dict)` applied, as `name` in the server's
    models/checkpoints; returns its path."""
    import safetensors.torch
    sd = safetensors.torch.load_file(os.path.join(comfy_host.GOLDEN, "tiny_t2v_v2.safetensors"))
    change(sd)
    path = os.path.join(server.models_dir, "checkpoints", name)
    safetensors.torch.save_file(sd, path)
    return path


def load_error(server, ckpt_name, graph="vc2_t2v_512", **loader_inputs):
    """The execution error of a shipped graph on `ckpt_name` (tiny sizes); no video is written."""
    from server_util import START_IMAGE, fill_inputs, load_workflow, run_prompt
    before = sorted(os.listdir(server.output_dir))
    workflow = fill_inputs(load_workflow(graph), {"ckpt_name": ckpt_name, "width": 128, "height": 64,
                                                  "frames": 2, "steps": 2, "image": START_IMAGE})
    loader = next(n for n in workflow.values() if n["class_type"] == "VideoCrafterCheckpointLoader")
    loader["inputs"].update(loader_inputs)
    entry = run_prompt(server, workflow, timeout=180)
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "error" and errors, (entry["status"], server.log_tail())
    assert sorted(os.listdir(server.output_dir)) == before
    return errors[0]


def int8_weights(sd):
    for key in [k for k in sd if k.startswith("model.diffusion_model.")]:
        sd[key] = sd[key].to(torch.int8)


def short_negative_schedule(sd):
    sd["alphas_cumprod"] = torch.linspace(0.9, -0.5, 7)


@pytest.mark.parametrize("name,change,said", [
    ("int8_weights.safetensors", int8_weights, "is int8; VideoCrafter weights are floating point"),
    ("short_schedule.safetensors", short_negative_schedule,
     "noise schedule 'alphas_cumprod' has shape [7]; the models of this family have 1000 timesteps"),
    ("negative_schedule.safetensors", lambda sd: sd.__setitem__("alphas_cumprod", -sd["alphas_cumprod"]),
     "noise schedule 'alphas_cumprod' holds values outside (0, 1]"),
    ("rising_schedule.safetensors", lambda sd: sd.__setitem__("alphas_cumprod", sd["alphas_cumprod"].flip(0)),
     "noise schedule 'alphas_cumprod' does not decrease"),
    ("int_schedule.safetensors", lambda sd: sd.__setitem__("scale_arr", (sd["scale_arr"] * 10).to(torch.int32)),
     "noise schedule 'scale_arr' is int32, not floating point"),
])
def test_loader_node_refuses_integer_weights_and_a_broken_schedule(server, name, change, said):
    """D4: int8 weights, or an alphas_cumprod of length 7 with negative values, loaded and sampled black frames:
    the loader refuses them, naming the file, the tensor and what to do."""
    path = tiny_checkpoint_with(server, name, change)
    try:
        error = load_error(server, name)
    finally:
        os.remove(path)
    assert error["node_type"] == "VideoCrafterCheckpointLoader", error
    message = error["exception_message"]
    assert name in message and said in message, message
    assert "download" in message.lower() or "released file" in message, message


def projector_tensors():
    """The tiny I2V checkpoint's projector and image key/value tensors: a stage-1 file's content."""
    import safetensors.torch
    projector_file = comfy_host.pack("vc_models.projector_file")
    sd = safetensors.torch.load_file(os.path.join(comfy_host.GOLDEN, "tiny_i2v_v1.safetensors"))
    return {k: v for k, v in sd.items() if projector_file.is_projector_file_key(k)}


def write_projector(path, kind):
    import safetensors.torch
    if kind == "zero_byte":
        open(path, "wb").close()
        return
    tensors = projector_tensors()
    if kind == "int64":
        tensors = {k: (v * 100).to(torch.int64) for k, v in tensors.items()}
    safetensors.torch.save_file(tensors, path)
    if kind == "truncated":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)


@pytest.mark.parametrize("kind,said", [("zero_byte", "It is damaged or truncated"),
                                       ("truncated", "It is damaged or truncated"),
                                       ("int64", "is int64; VideoCrafter projector weights are floating point")])
def test_loader_node_refuses_a_broken_projector_file_naming_it(pack, server, kind, said):
    """D5: a zero-byte or truncated projector file gave a bare 'SafetensorError: header too small' (no file name);
    an int64 one was applied. The loader's error names the file and how to get a good one."""
    name = f"{kind}_projector.safetensors"
    path = os.path.join(server.models_dir, "checkpoints", name)
    write_projector(path, kind)
    try:
        error = load_error(server, "tiny_i2v_v1.safetensors", "vc1_i2v_512", projector_file=name)
    finally:
        os.remove(path)
    assert error["node_type"] == "VideoCrafterCheckpointLoader", error
    message = error["exception_message"]
    assert name in message and said in message and "stage 'projector'" in message, message


def test_nan_weights_fail_the_sampler_instead_of_a_black_video(server):
    """Doubtful case (docs/hardening.md): a NaN in the weights sampled black frames silently. The sampler checks
    its result (no cost) and says what to do; no video is written."""
    def nan_weight(sd):
        sd["model.diffusion_model.out.2.weight"][0, 0, 0, 0] = float("nan")
    path = tiny_checkpoint_with(server, "nan_weight.safetensors", nan_weight)
    try:
        error = load_error(server, "nan_weight.safetensors")
    finally:
        os.remove(path)
    assert error["node_type"] == "VideoCrafterKSampler", error
    assert "holds NaN or infinite values" in error["exception_message"] and "download" in error["exception_message"]
