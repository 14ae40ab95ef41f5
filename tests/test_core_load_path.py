"""The VideoCrafter MODEL is built the way core builds its own checkpoints' models, on both hosts:
the patcher class core picks (ComfyUI 0.33's `CoreModelPatcher`, which its main.py swaps for the
dynamic-VRAM `ModelPatcherDynamic` on a GPU), weights assigned as a dynamic patcher wants them, and the
lazy weight initialisation 0.33's `comfy.ops` does under dynamic VRAM. What needs a GPU (the dynamic
patcher itself, lowvram) is in test_gpu.py."""
import pytest
import torch

import comfy_host
from model_util import sample_video as sample

CKPT = "tiny_t2v_v2.safetensors"


def load(pack, models_dir):
    return pack.vc_nodes.NODE_CLASSES["VideoCrafterCheckpointLoader"].execute(CKPT)


@pytest.fixture
def core_patcher(monkeypatch):
    """Stand core's patcher class in with a recording subclass, as ComfyUI 0.33's main.py swaps its own in."""
    import comfy.model_patcher
    name = "CoreModelPatcher" if hasattr(comfy.model_patcher, "CoreModelPatcher") else "ModelPatcher"
    base = getattr(comfy.model_patcher, name)
    built = []

    class RecordingPatcher(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(comfy.model_patcher, name, RecordingPatcher)
    return RecordingPatcher, built


def test_model_uses_the_patcher_class_core_picks(pack, models_dir, core_patcher):
    cls, built = core_patcher
    model, clip, *_ = load(pack, models_dir)
    assert type(model) is cls and model in built
    cloned = model.clone()  # what every patch node does: the clone keeps core's class
    assert isinstance(cloned, cls)
    samples = sample(pack, model, clip)
    assert torch.isfinite(samples).all() and samples.shape == (1, 4, 2, 8, 8)


def test_dynamic_patcher_class_on_the_cpu(pack, models_dir, monkeypatch):
    """With 0.33's main.py swap in place (CoreModelPatcher = ModelPatcherDynamic), a CPU load device gets core's
    reroute to the plain ModelPatcher: the pack's MODEL takes it and is not dynamic."""
    import comfy.model_patcher
    if not hasattr(comfy.model_patcher, "ModelPatcherDynamic"):
        pytest.skip("this ComfyUI has no dynamic-VRAM patcher (0.33+)")
    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcherDynamic)
    model, *_ = load(pack, models_dir)
    assert type(model) is comfy.model_patcher.ModelPatcher and not model.is_dynamic()
    assert model.load_device == torch.device("cpu")


def test_dynamic_patcher_keeps_the_loaded_tensors(pack, models_dir, monkeypatch):
    """A dynamic patcher (0.33) maps weights on demand instead of copying them: core loads with assign=True,
    and so does the pack. On the CPU core reroutes ModelPatcherDynamic to ModelPatcher, so a patcher that
    says it is dynamic stands in for it here."""
    import comfy.model_patcher
    if not hasattr(comfy.model_patcher, "ModelPatcherDynamic"):
        pytest.skip("this ComfyUI has no dynamic-VRAM patcher (0.33+)")
    ckpt, files = comfy_host.pack("vc_models.checkpoint"), comfy_host.pack("vc_models.checkpoint_file")
    model_patcher = comfy_host.pack("vc_models.model_patcher")

    class DynamicOnCpu(comfy.model_patcher.ModelPatcher):
        def is_dynamic(self):
            return True

    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", DynamicOnCpu)
    sd = files.load_state_dict(comfy_host.GOLDEN + "/" + CKPT)
    info = ckpt.inspect_checkpoint(sd, CKPT)
    unet_sd = files.split_components(sd)[files.UNET_PREFIX]
    alphas, scale = files.noise_schedule(sd)
    patcher = model_patcher.build_model_patcher(info, unet_sd, alphas, scale, torch.float32)
    assert type(patcher) is DynamicOnCpu
    loaded = patcher.model.diffusion_model.state_dict()
    assert set(loaded) == set(unet_sd)
    assert all(loaded[k].data_ptr() == v.data_ptr() for k, v in unet_sd.items())  # the tensors, not copies


def test_lazy_weight_init_of_dynamic_vram_loads_the_same_weights(pack, models_dir, monkeypatch):
    """Under dynamic VRAM 0.33's comfy.ops creates Linear/Conv layers without weights (filled when the state
    dict loads, in the file's dtype; the dynamic patcher casts them to the recorded model dtype as it moves
    them to the GPU) and model management picks the CPU as the initial device: the pack's UNet must build that
    way and hold the same weights. Sampling under dynamic VRAM needs the GPU (test_gpu.py)."""
    memory_management = pytest.importorskip("comfy.memory_management", reason="this ComfyUI has no dynamic VRAM (0.33+)")
    model, clip, *_ = load(pack, models_dir)
    assert not any(hasattr(m, "comfy_need_lazy_init_bias") for m in model.model.diffusion_model.modules())
    weights = {k: v.float().clone() for k, v in model.model.diffusion_model.state_dict().items()}
    model_dtype = model.model.get_dtype()

    monkeypatch.setattr(memory_management, "aimdo_enabled", True)
    lazy_model, *_ = load(pack, models_dir)
    lazy_layers = [m for m in lazy_model.model.diffusion_model.modules() if hasattr(m, "comfy_need_lazy_init_bias")]
    assert len(lazy_layers) > 10  # built without weights by comfy.ops, filled from the state dict
    assert all(m.weight_comfy_model_dtype == model_dtype for m in lazy_layers)  # what the dynamic patcher casts to
    lazy_weights = lazy_model.model.diffusion_model.state_dict()
    assert set(lazy_weights) == set(weights)
    assert all(torch.equal(lazy_weights[k].float(), v) for k, v in weights.items())


def test_weights_that_do_not_fit_are_an_error(pack):
    """Core only logs missing / unexpected UNet keys; the pack refuses them, naming the keys."""
    ckpt, files = comfy_host.pack("vc_models.checkpoint"), comfy_host.pack("vc_models.checkpoint_file")
    model_patcher = comfy_host.pack("vc_models.model_patcher")
    sd = files.load_state_dict(comfy_host.GOLDEN + "/" + CKPT)
    info = ckpt.inspect_checkpoint(sd, CKPT)
    unet_sd = dict(files.split_components(sd)[files.UNET_PREFIX])
    dropped = "out.2.weight"
    assert dropped in unet_sd
    del unet_sd[dropped]
    alphas, scale = files.noise_schedule(sd)
    with pytest.raises(ValueError, match=r"do not fit.*out\.2\.weight"):
        model_patcher.build_model_patcher(info, unet_sd, alphas, scale)
