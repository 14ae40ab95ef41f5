"""LoRA training on the tiny I2V checkpoint (CPU) and the result in core ComfyUI: the file that core "Load LoRA
(model only)" applies to the pack's MODEL gives the trainer's in-memory model's UNet output, strength 0 the
base model bit for bit, a peft-keyed file of the same weights the same output; the loss falls on an overfit
batch, the base weights stay as they were, a resumed run is bit-identical, bad LoRA options are refused."""
import os

import pytest
import safetensors
import safetensors.torch
import torch

import comfy_host
import train_util
from conftest import rel_err
from test_train_stages import InterruptAfter, snapshot, changed

ALL_GROUPS = "attn1,attn2,temporal,ff,conv"
RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def mods(pack, one_torch_thread):
    return {"config": comfy_host.pack("vc_train.config"), "trainer": comfy_host.pack("vc_train.trainer"),
            "training": comfy_host.pack("vc_train.comfy_models"), "lora": comfy_host.pack("vc_train.lora")}


@pytest.fixture(scope="module")
def data_dir(module_tmp):
    return train_util.make_dataset(str(module_tmp("lora_data")), count=2)


@pytest.fixture(scope="module")
def loras_dir(module_model_folder):
    """A models/loras folder registered with ComfyUI (where the node writes a LoRA)."""
    return module_model_folder("loras")


def lora_config(tmp_path, data_dir, **overrides):
    values = dict(stage="finetune", adapter="lora", lora_rank=RANK, lora_alpha=ALPHA, lora_targets=ALL_GROUPS,
                  finetune_steps=4, save_fp16=False)
    values.update(overrides)
    return train_util.small_config(tmp_path, data_dir, **values)


def build(mods, values):
    cfg = mods["config"].TrainConfig.from_dict(values)
    return cfg, mods["training"].VideoCrafterTrainingModels.from_files(cfg.checkpoint)


def unet_inputs(models):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, models.latent_channels, 4, 8, 8, generator=g)
    with torch.no_grad():
        image_context = models.projector(models.image_tokens(torch.rand(1, 64, 64, 3, generator=g)))
    return dict(x=x, timesteps=torch.tensor([500.0]), context=models.encode_text(["a colourful wave"]),
                fps=torch.tensor([4.0]), image_context=image_context)


def unet_output(unet, inputs):
    with torch.no_grad():
        return unet(inputs["x"], inputs["timesteps"], context=inputs["context"], fps=inputs["fps"],
                    image_context=inputs["image_context"]).float()


def core_output(patcher, inputs):
    """The MODEL's UNet output with its patches applied as model management applies them for sampling."""
    import comfy.model_management
    comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    return unet_output(patcher.model.diffusion_model, inputs)


@pytest.fixture(scope="module")
def trained(mods, module_tmp, data_dir, loras_dir):
    """A LoRA on every target group, trained on an overfit batch into models/loras."""
    tmp_path = module_tmp("lora_run")
    values = lora_config(tmp_path, data_dir, overfit_batch=True, text_dropout=0.0, image_dropout=0.0,
                         finetune_lr=1e-2, max_grad_norm=0, lora_dropout=0.1, checkpoint_dir=str(loras_dir),
                         name="tiny_lora", gradient_checkpointing=True, sample_every=4, sample_steps=2)
    cfg, models = build(mods, values)
    before = snapshot(models)
    result = mods["trainer"].train(cfg, models)
    models.unet.eval()
    return {"cfg": cfg, "models": models, "result": result, "before": before, "inputs": unet_inputs(models)}


def test_lora_overfits_and_trains_only_the_adapters(mods, trained):
    result, models = trained["result"], trained["models"]
    losses = [r["loss"] for r in result.history]
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0], losses
    assert changed(trained["before"], snapshot(models)) == []  # UNet, projector, encoders untouched
    path = result.outputs["lora"]
    assert os.path.dirname(path) == os.path.dirname(trained["cfg"].checkpoint_dir + "/")
    with safetensors.safe_open(path, "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["base_model"] == "vc1_i2v_512" and meta["lora_rank"] == str(RANK) and meta["steps"] == "4"
    assert meta["dataset_size"] == "2" and meta["lora_targets"] == ALL_GROUPS and meta["pack_version"]
    assert all(k.startswith("diffusion_model.") for k in keys)
    # every group got adapters: spatial/temporal attention, feed-forward, a temporal 3-D convolution
    for part in (".attn1.to_q.lora_up", ".attn2.to_k_ip.lora_down", ".ff.net.2.lora_up", ".temopral_conv.conv1.2.lora_down",
                 ".in_layers.2.lora_down"):
        assert any(part in k for k in keys), part
    assert not any(n.startswith(".") for n in os.listdir(os.path.dirname(path)))  # no partial file left


def test_the_preview_is_base_and_base_plus_lora_side_by_side(trained):
    import av
    import numpy as np
    with av.open(trained["result"].outputs["last_sample"]) as container:
        frames = [f.to_ndarray(format="rgb24").astype(np.float32) for f in container.decode(video=0)]
    cfg = trained["cfg"]
    assert len(frames) == cfg.frames and frames[0].shape == (cfg.height, 2 * cfg.width, 3)
    video = np.stack(frames)
    base, with_lora = video[:, :, :cfg.width], video[:, :, cfg.width:]
    assert np.abs(base - with_lora).mean() > 1.0  # the trained LoRA shows (same seed, same prompt and image)


def test_core_load_lora_model_only_matches_the_trainer(pack, mods, trained, models_dir):
    import nodes as core
    import folder_paths
    inputs, result = trained["inputs"], trained["result"]
    ours = unet_output(trained["models"].unet, inputs)
    loader = pack.vc_nodes.NODE_CLASSES["VideoCrafterCheckpointLoader"]
    model = loader.execute("tiny_i2v_v1.safetensors", "default")[0]
    base = core_output(model, inputs)
    name = os.path.basename(result.outputs["lora"])
    assert name in folder_paths.get_filename_list("loras")

    (with_lora,) = core.LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)
    adapted_layers = len(safetensors.torch.load_file(result.outputs["lora"])) // 3  # down, up, alpha each
    assert len(with_lora.patches) == adapted_layers  # every adapter became a patch of its weight
    error, moved = rel_err(core_output(with_lora, inputs), ours), rel_err(base, ours)
    print(f"relative L2 to the trainer's UNet: core Load LoRA {error:.2e}, base model {moved:.2e}")
    assert error <= 1e-5
    assert moved > 1e-3  # the LoRA changes the output (the comparison above can fail)

    (zero,) = core.LoraLoaderModelOnly().load_lora_model_only(model, name, 0.0)
    assert torch.equal(core_output(zero, inputs), base)

    # the same weights as peft saves them: base_model.model.<module>.lora_A / lora_B, the scale in B, no alpha
    lora = safetensors.torch.load_file(result.outputs["lora"])
    peft = {}
    for key, value in lora.items():
        module, _, kind = key[len("diffusion_model."):].rpartition(".lora_")
        if kind == "down.weight":
            peft[f"base_model.model.{module}.lora_A.weight"] = value
        elif kind == "up.weight":
            peft[f"base_model.model.{module}.lora_B.weight"] = value * (ALPHA / RANK)
    peft_name = "tiny_lora_peft.safetensors"
    safetensors.torch.save_file(peft, os.path.join(os.path.dirname(result.outputs["lora"]), peft_name))
    (with_peft,) = core.LoraLoaderModelOnly().load_lora_model_only(model, peft_name, 1.0)
    assert len(with_peft.patches) == len(with_lora.patches)
    error = rel_err(core_output(with_peft, inputs), ours)
    print(f"relative L2 to the trainer's UNet: peft-keyed LoRA {error:.2e}")
    assert error <= 1e-5


def test_lora_resume_is_bitwise_exact(mods, tmp_path, data_dir):
    common = dict(finetune_steps=3, lora_dropout=0.2, text_dropout=0.5, image_dropout=0.5, finetune_lr=1e-3)
    cfg, models = build(mods, lora_config(tmp_path / "straight", data_dir, **common))
    straight = mods["trainer"].train(cfg, models)

    values = lora_config(tmp_path / "resumed", data_dir, **common)
    cfg, models = build(mods, values)
    with pytest.raises(InterruptAfter.Stop):
        mods["trainer"].Trainer(cfg, models, InterruptAfter(1)).run()
    cfg, models = build(mods, values)  # a fresh process would rebuild too
    resumed = mods["trainer"].train(cfg, models)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    a = safetensors.torch.load_file(straight.outputs["lora"])
    b = safetensors.torch.load_file(resumed.outputs["lora"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_in_bf16_autocast(mods, tmp_path, data_dir):
    """bf16 autocast (the GPU default) on the CPU: the adapters train in float32, the file is float32."""
    cfg, models = build(mods, lora_config(tmp_path, data_dir, precision="bf16", finetune_steps=2, finetune_lr=1e-2,
                                          lora_targets="attn1,temporal", gradient_checkpointing=True))
    result = mods["trainer"].train(cfg, models)
    assert all(r["loss"] == r["loss"] for r in result.history) and len(result.history) == 2
    lora = safetensors.torch.load_file(result.outputs["lora"])
    ups = [v for k, v in lora.items() if k.endswith(".lora_up.weight")]
    assert all(v.dtype == torch.float32 for v in ups) and any(v.abs().max() > 0 for v in ups)


@pytest.mark.parametrize("option, message", [
    ({"lora_rank": 0}, "lora_rank must be at least 1"),
    ({"lora_targets": "attn1,mlp"}, "unknown target group(s) ['mlp']"),
    ({"lora_dropout": 1.0}, "lora_dropout must be in [0, 1)"),
    ({"sharding": "fsdp"}, "use sharding 'ddp'"),
])
def test_bad_lora_options_are_refused_before_any_model_loads(mods, tmp_path, data_dir, option, message):
    with pytest.raises(ValueError) as error:
        mods["config"].TrainConfig.from_dict(lora_config(tmp_path, data_dir, **option))
    assert message in str(error.value)


def test_a_rank_larger_than_a_layer_names_the_layer_before_any_model_loads(mods, tmp_path, data_dir, monkeypatch):
    """The front ends' check (the UNet built on the meta device from the file's layout) refuses it before the
    models load; the trainer refuses it too if handed loaded models."""
    cfg = mods["config"].TrainConfig.from_dict(lora_config(tmp_path, data_dir, lora_rank=10**4, lora_targets="attn1"))
    training = mods["training"]
    monkeypatch.setattr(training.VideoCrafterTrainingModels, "from_files",
                        classmethod(lambda *a, **k: pytest.fail("a model was loaded before the rank check")))
    with pytest.raises(ValueError) as error:
        mods["trainer"].check_before_loading(cfg, layout_unet=training.layout_unet)
    text = str(error.value)
    assert "lora_rank 10000 is larger than layer " in text and ".attn1.to_q" in text and "use lora_rank <=" in text
    monkeypatch.undo()
    cfg, models = build(mods, lora_config(tmp_path, data_dir, lora_rank=10**4, lora_targets="attn1"))
    with pytest.raises(ValueError, match="lora_rank 10000 is larger than layer "):
        mods["trainer"].Trainer(cfg, models)
