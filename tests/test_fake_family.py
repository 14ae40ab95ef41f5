"""A family added by this test alone reaches detection, the nodes, a sampled latent through a real server and a
training step, with no edit outside the test: what docs/architecture.md says adding a family takes (one family
object and its registry entry, `vc_models.registry.register`).

The fake family: a text-to-video UNet with one more input channel that always holds a constant (its own
conditioning: the family's `unet_inputs` adds it at sampling, its objective at training). The tiny checkpoint is the
tiny VideoCrafter2 with that channel added to the first convolution; no entry of the pack matches it (5 input
channels without image cross-attention), so without the family it is refused.
"""
import importlib.util
import json
import os

import pytest
import safetensors.torch
import torch

import comfy_host
import train_util
from server_util import ComfyServer, run_prompt

CONSTANT = 1.0
FAKE_FILE = "tiny_constant_channel.safetensors"
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"

# The family and its entry, written once: imported by the test process and, as a custom node beside the pack, by
# the server (the node registers them when ComfyUI imports it, after the pack).
FAMILY_SOURCE = '''
import importlib
import sys

import torch


def pack_package():
    """The package name the host imported the pack under (its custom node folder's)."""
    return next(name[:-len(".vc_models.registry")] for name in list(sys.modules) if name.endswith(".vc_models.registry"))


def register(package, constant):
    registry = importlib.import_module(package + ".vc_models.registry")
    families = importlib.import_module(package + ".vc_models.families")
    objectives = importlib.import_module(package + ".vc_models.objectives")

    class ConstantChannelObjective(objectives.LatentScaleEps):
        def unet_input(self, x_noisy, batch, device):
            return torch.cat([x_noisy, torch.full_like(x_noisy[:, :1], constant)], dim=1)

    class ConstantChannel(families.TextToVideo):
        """Text-to-video whose UNet takes a constant channel beside the latent."""
        name = "constant-channel test family"
        train_stages = ("videos",)

        def unet_inputs(self, info, extras, num_timesteps):
            out = super().unet_inputs(info, extras, num_timesteps)
            noise = extras["noise"]
            out["c_concat"] = families.NoiseShaped(torch.full_like(noise[:, :1], constant))
            return out

        def objective(self, schedule, text_dropout, image_dropout, parameterization):
            return ConstantChannelObjective(schedule, text_dropout, image_dropout)

    entry = registry.ModelEntry(
        "constant_channel_test", "Constant-channel test model 64x128", ConstantChannel(),
        matches=lambda f: f.concat_latent and not f.image_cross_attention and f.in_channels == f.out_channels + 1,
        defaults=registry.SamplingDefaults(64, 128, 8, frames=4, steps=2))
    return registry.register(entry)
'''

NODE_INIT = f'''
from .fake_family import pack_package, register

register(pack_package(), {CONSTANT!r})
NODE_CLASS_MAPPINGS = {{}}
'''


def load_family_source(path):
    spec = importlib.util.spec_from_file_location("videocrafter_fake_family", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_fake_checkpoint(path):
    """The tiny VideoCrafter2 with a fifth input channel on the UNet's first convolution (seeded weights, as large
    as the other channels', so the constant moves the output)."""
    sd = safetensors.torch.load_file(train_util.TINY_T2V)
    conv = sd[CONV_IN]
    extra = torch.randn(conv.shape[0], 1, *conv.shape[2:], generator=torch.Generator().manual_seed(0)) * conv.float().std()
    sd[CONV_IN] = torch.cat([conv, extra.to(conv.dtype)], dim=1).contiguous()
    safetensors.torch.save_file(sd, path)
    return path


@pytest.fixture(scope="module")
def fake_checkpoint(module_tmp):
    return write_fake_checkpoint(str(module_tmp("fake_family") / FAKE_FILE))


@pytest.fixture
def registered(pack, one_torch_thread, tmp_path, monkeypatch):
    """The fake family registered in this process (the registry's list restored afterwards)."""
    registry = comfy_host.pack("vc_models.registry")
    monkeypatch.setattr(registry, "MODELS", list(registry.MODELS))
    (tmp_path / "fake_family.py").write_text(FAMILY_SOURCE)
    source = load_family_source(str(tmp_path / "fake_family.py"))
    return source.register(registry.__name__[:-len(".vc_models.registry")], CONSTANT)


def test_without_its_family_the_checkpoint_is_refused(pack, fake_checkpoint):
    checkpoint = comfy_host.pack("vc_models.checkpoint")
    CheckpointError = comfy_host.pack("vc_models.checkpoint_file").CheckpointError
    with pytest.raises(CheckpointError, match="5 input channels"):
        checkpoint.inspect_checkpoint(safetensors.torch.load_file(fake_checkpoint), FAKE_FILE)


def test_a_registered_family_is_detected_and_trains(registered, fake_checkpoint, tmp_path, module_tmp):
    checkpoint = comfy_host.pack("vc_models.checkpoint")
    info = checkpoint.inspect_checkpoint(safetensors.torch.load_file(fake_checkpoint), FAKE_FILE)
    assert info.entry is registered and info.unet.in_channels == 5
    assert comfy_host.pack("vc_models.training_gate").training_entry(fake_checkpoint) is registered

    data = train_util.make_dataset(str(module_tmp("fake_family_videos")), count=2)
    config, trainer = comfy_host.pack("vc_train.config"), comfy_host.pack("vc_train.trainer")
    cfg = config.TrainConfig.from_dict(train_util.small_config(
        tmp_path, data, checkpoint=fake_checkpoint, stage="videos", finetune_steps=2, text_dropout=0.0,
        image_dropout=0.0, finetune_lr=1e-3, max_grad_norm=0))
    trainer.check_before_loading(cfg)
    models = comfy_host.pack("vc_train.comfy_models").VideoCrafterTrainingModels.from_files(cfg.checkpoint)
    conv_in = models.unet.state_dict()["input_blocks.0.0.weight"].clone()
    result = trainer.train(cfg, models)
    losses = [r["loss"] for r in result.history]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(models.unet.state_dict()["input_blocks.0.0.weight"], conv_in)
    written = safetensors.torch.load_file(result.outputs["checkpoint"])
    assert checkpoint.inspect_checkpoint(written, "trained.safetensors").entry is registered

    # the step's function (Objective.terms, via objective_for as the trainer builds it) feeds the family's constant
    # channel, and its gradient reaches that channel's weights (a zero channel would give them none)
    objective = comfy_host.pack("vc_train.families").objective_for(models, trainer.noise_schedule(models), cfg)
    objectives = comfy_host.pack("vc_models.objectives")
    with torch.no_grad():
        text, empty = models.encode_text(["a red ball"]), models.encode_text([""])[0]
    latents = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    batch = objectives.Batch(latents=latents, context=text, fps=torch.tensor([8.0]), frame_stride=torch.tensor([2]))
    draws = objective.draw(1, latents.shape, torch.Generator().manual_seed(2))
    models.unet.zero_grad()
    terms = objective.terms(models.unet, None, batch, draws, empty, None, torch.device("cpu"))
    assert terms.unet_input.shape[1] == 5 and bool((terms.unet_input[:, 4] == CONSTANT).all())
    terms.loss.backward()
    assert dict(models.unet.named_parameters())["input_blocks.0.0.weight"].grad[:, 4].abs().sum() > 0


def test_the_loaded_model_takes_the_family_unet_inputs(registered, fake_checkpoint):
    """The MODEL Load VideoCrafter Checkpoint returns turns the sampler's conditioning into the family's inputs."""
    bundle = comfy_host.pack("vc_models.loader").load_videocrafter(fake_checkpoint)
    assert bundle.info.entry is registered and bundle.clip_vision is None
    noise = torch.zeros(2, 4, 4, 8, 16)
    conds = bundle.model.model.extra_conds(noise=noise, device=torch.device("cpu"), cross_attn=torch.zeros(2, 77, 64))
    assert conds["c_concat"].cond.shape == (2, 1, 4, 8, 16) and bool((conds["c_concat"].cond == CONSTANT).all())
    assert conds["fps"].cond.tolist() == [8.0]  # the entry's default frame rate, without an fps conditioning node


def workflow(ckpt_name):
    """Load VideoCrafter Checkpoint, CLIP Text Encode, VideoCrafter FPS Conditioning, Empty VideoCrafter Latent,
    core KSampler, Save Latent: the text-to-video graph the family's models run in."""
    return {
        "1": {"class_type": "VideoCrafterCheckpointLoader", "inputs": {"ckpt_name": ckpt_name, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red ball bouncing"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "VideoCrafterFPSConditioning", "inputs": {"positive": ["2", 0], "negative": ["3", 0], "fps": 8}},
        "5": {"class_type": "EmptyVideoCrafterLatent", "inputs": {"width": 128, "height": 64, "frames": 4, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["4", 0], "negative": ["4", 1], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "fake_family/latent"}},
    }


def test_a_family_from_another_custom_node_samples_through_a_real_server(module_tmp, fake_checkpoint):
    root = module_tmp("fake_family_server")
    nodes = root / "test_custom_nodes" / "videocrafter_fake_family"
    os.makedirs(nodes)
    (nodes / "fake_family.py").write_text(FAMILY_SOURCE)
    (nodes / "__init__.py").write_text(NODE_INIT)
    server = ComfyServer(root, checkpoints=(), extra_folders={"custom_nodes": str(root / "test_custom_nodes")})
    os.symlink(fake_checkpoint, os.path.join(server.models_dir, "checkpoints", FAKE_FILE))
    with server:
        entry = run_prompt(server, workflow(FAKE_FILE), timeout=300)
        assert entry["status"]["status_str"] == "success", (json.dumps(entry["status"])[-2000:], server.log_tail())
        files = [f for out in entry["outputs"].values() for f in out.get("latents", [])]
        assert len(files) == 1, entry["outputs"]
        latent = safetensors.torch.load_file(os.path.join(server.output_dir, files[0]["subfolder"],
                                                          files[0]["filename"]))["latent_tensor"]
        assert latent.shape == (1, 4, 4, 8, 16) and torch.isfinite(latent).all()
        assert "Constant-channel test model" in server.log_tail()  # the loader's log names the detected entry
