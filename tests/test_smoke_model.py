"""The smoke checkpoints that stand in for the tiny reference models when ../shared is absent: same keys,
shapes and schedule as the reference tiny models (checked against them when the reference is there), and
each is detected as the variant its reference counterpart shrinks."""

import pytest
import torch

import comfy_host
from conftest import require_reference

VARIANT = {"tiny_t2v_v1": "vc1_t2v_1024", "tiny_t2v_v2": "vc2_t2v_512", "tiny_i2v_v1": "vc1_i2v_512",
           "tiny_dc_256": "dc_256", "tiny_dc_512": "dc_512", "tiny_toon_512": "toon_512"}
# reference files a tiny model is made of (the tiny ToonCrafter is tiny_dc_512 updated with its decoder delta)
REFERENCE_FILES = {"tiny_toon_512": ("tiny_dc_512.safetensors", "tiny_toon_512.delta.safetensors")}


@pytest.fixture(scope="module")
def smoke_sd(pack):
    """name -> the smoke state dict, built once per module."""
    import smoke_model as smoke  # scripts/ (on sys.path via comfy_host), built on the booted pack
    cache = {}
    return lambda name: cache.setdefault(name, smoke.build_smoke_state_dict(name)) if name not in cache else cache[name]


@pytest.mark.parametrize("name", sorted(VARIANT))
def test_same_layout_and_schedule_as_the_reference_tiny_model(smoke_sd, name):
    paths = require_reference(*(f"golden/{file}" for file in REFERENCE_FILES.get(name, (f"{name}.safetensors",))))
    from safetensors import safe_open
    ckpt_file = comfy_host.pack("vc_models.checkpoint_file")
    sd = smoke_sd(name)
    ref_shapes, ref_schedule = {}, {}
    schedule = ckpt_file.SCHEDULE_KEYS + ckpt_file.DERIVED_SCHEDULE_KEYS
    for path in paths:
        with safe_open(path, "pt") as f:
            ref_shapes.update({k: list(f.get_slice(k).get_shape()) for k in f.keys()})
            ref_schedule.update({k: f.get_tensor(k).float() for k in schedule if k in f.keys()})
    assert {k: list(v.shape) for k, v in sd.items()} == ref_shapes
    for k, ref in ref_schedule.items():  # the reference stores them in fp16
        assert torch.allclose(sd[k], ref, atol=2e-3, rtol=2e-3), (k, (sd[k] - ref).abs().max())


@pytest.mark.parametrize("name", sorted(VARIANT))
def test_detected_as_the_variant_it_stands_in_for(smoke_sd, name):
    ckpt = comfy_host.pack("vc_models.checkpoint")
    sd = smoke_sd(name)
    assert ckpt.inspect_checkpoint(sd, name).variant == VARIANT[name]
    assert all(torch.isfinite(v.float()).all() for v in sd.values())
