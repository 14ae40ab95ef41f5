"""The UNet's activation layout on the CPU: channels-last through every layer (what makes oneDNN's convolutions
run without reordering, docs/performance.md), with the same result as the default layout."""
import dataclasses

import pytest
import torch

import comfy_host
import benchmark  # scripts/, on sys.path through comfy_host
from conftest import require_reference

LAYOUTS = ("t2v_512_v2.0", "t2v_512_v1.0", "i2v_512_v1.0", "dynamicrafter_512_v1.0")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_activations_stay_channels_last_and_the_result_does_not_depend_on_it(pack, monkeypatch, layout):
    unet = comfy_host.pack("vc_models.unet")
    # the released layout (its switches: temporal convs, relative positions, image attention, fps...) at width 64
    require_reference(f"keys/{layout}.keys.tsv")
    config = dataclasses.replace(benchmark.released_unet_config(layout), model_channels=64)
    generator = torch.Generator().manual_seed(0)
    net = unet.VideoCrafterUNet(config, dtype=torch.float32).eval()
    for p in net.parameters():
        p.data = torch.randn(p.shape, generator=generator) * 0.05
    x, timesteps, context, extra = benchmark.unet_inputs(config, (2, config.in_channels, 6, 16, 24), device="cpu",
                                                         dtype=torch.float32)
    x = torch.randn(x.shape, generator=generator)
    context = torch.randn(context.shape, generator=generator)
    if "image_context" in extra:
        extra["image_context"] = torch.randn(extra["image_context"].shape, generator=generator)

    other_layout = []

    def check(module, inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() in (4, 5) and output.shape[1] > 8:
            fmt = torch.channels_last if output.dim() == 4 else torch.channels_last_3d
            if not output.is_contiguous(memory_format=fmt):
                other_layout.append((type(module).__name__, tuple(output.shape), output.stride()))
    hooks = [m.register_forward_hook(check) for m in net.modules() if m is not net]
    with torch.no_grad():
        out = net(x, timesteps, context, transformer_options={}, **extra)
        for hook in hooks:
            hook.remove()
        monkeypatch.setattr(unet, "ACTIVATION_FORMAT", torch.contiguous_format)
        reference = net(x, timesteps, context, transformer_options={}, **extra)
    assert not other_layout, other_layout[:5]
    assert out.shape == x.shape[:1] + (config.out_channels,) + x.shape[2:] and out.is_contiguous()
    assert reference.is_contiguous()
    # the same computation in another memory order: equal to float32 rounding
    assert ((out - reference).norm() / reference.norm()).item() < 1e-5
    assert not torch.equal(out, torch.zeros_like(out))
