"""Core TorchCompileModel (inductor, on the CPU) on the pack's MODEL samples the uncompiled latent.

The MODEL runs with PyTorch SDPA as its attention (an override, as core's ModelAttentionBackend node sets one): the
CPU's default, core's sub-quadratic attention, reads the free memory (psutil) inside every call, a graph break per
attention (the UNet then compiles as ~70 graphs and the first step takes minutes here); with SDPA the whole UNet is
one graph with no break, which the test checks too. docs/runtime.md says so for users.
"""
import shutil

import pytest
import torch

from model_util import tiny_graph

FRAMES, WIDTH, HEIGHT, STEPS = 4, 128, 64, 2
TOLERANCE = 1e-4  # relative L2; measured 3.5e-6 (inductor's fused kernels reorder float sums)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """See conftest.one_torch_thread."""


@pytest.fixture(scope="module")
def graph(pack, models_dir):
    import comfy.ldm.modules.attention as attention
    model, positive, negative, latent = tiny_graph(pack, models_dir, "tiny_t2v_v2", FRAMES, WIDTH, HEIGHT)
    model = model.clone()

    def sdpa(func, *args, **kwargs):
        return attention.attention_pytorch(*args, **kwargs)
    model.model_options["transformer_options"]["optimized_attention_override"] = sdpa
    return model, positive, negative, latent


def sample(model, positive, negative, latent):
    import nodes as core
    (out,) = core.KSampler().sample(model, 3, STEPS, 7.5, "euler", "normal", positive, negative, latent, denoise=1.0)
    return out["samples"]


def test_the_unet_is_one_graph(graph):
    """No graph break in a UNet call with SDPA (a break would split the compiled UNet and slow it)."""
    model = graph[0]
    base = model.model
    x = torch.randn(2, 4, FRAMES, HEIGHT // 8, WIDTH // 8)
    context = torch.randn(2, 77, base.info.unet.context_dim)
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(base.diffusion_model)(
            x, torch.tensor([500.0, 500.0]), context, fps=torch.tensor([8.0, 8.0]),
            transformer_options=dict(model.model_options["transformer_options"]))
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1


def test_torch_compile_model_inductor_samples_the_same_latent(graph):
    if not (shutil.which("g++") or shutil.which("c++")):
        pytest.fail("inductor on the CPU compiles C++: install a C++ compiler (Debian: apt-get install g++)")
    from comfy_extras.nodes_torch_compile import TorchCompileModel
    model, positive, negative, latent = graph
    reference = sample(model, positive, negative, latent)
    result = TorchCompileModel.execute(model, "inductor")
    (compiled,) = result.result if hasattr(result, "result") else result
    torch._dynamo.reset()
    try:
        first = sample(compiled, positive, negative, latent)
        again = sample(compiled, positive, negative, latent)  # the compiled graphs reused
    finally:
        torch._dynamo.reset()
    for latent_out in (first, again):
        error = ((latent_out - reference).norm() / reference.norm()).item()
        assert error < TOLERANCE, error
    assert torch.equal(first, again)
