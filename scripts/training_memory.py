#!/usr/bin/env python3
"""GPU memory per rank of a training step of the released 1.4 B VideoCrafter UNet (VideoCrafter2 layout) at
320x512x16, batch 1, bf16 autocast, gradient checkpointing: LoRA r16 / temporal layers / full finetune, data
parallel (DDP) vs FSDP on N GPUs. Prints the markdown table of docs/training.md.

    .venv/bin/python scripts/training_memory.py

Measured: the activation peak of the real UNet code (forward + backward through the pack's VideoCrafterUNet and the
LoRA adapters of vc_train/lora.py) on meta tensors at the released layer sizes, counting every live tensor
(benchmark.activation_peak); it runs in seconds and a few hundred MB of RAM. Derived: weights, gradients and
AdamW states from the parameter counts, as the trainer holds them (frozen weights in bf16, trained ones fp32 with
fp32 gradients and two fp32 Adam moments; FSDP: fp32 shards of everything, 1/N each, plus the gathered bf16
weights of the largest UNet block, twice for the prefetch). Not counted: the frozen text / image encoders and
the VAE (ComfyUI's model management offloads them between the encodes), CUDA context and allocator slack.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import comfy_boot  # noqa: E402
from benchmark import activation_peak  # noqa: E402

LAYOUT = "t2v_512_v2.0"
FRAMES, HEIGHT, WIDTH = 16, 320, 512
GIB = 2 ** 30
RANKS = (1, 2, 4, 8)


def released_unet(torch):
    """The UNet at the released layout on the meta device (no memory), bf16 as autocast computes."""
    import comfy.ops
    unet_module, checkpoint = comfy_boot.pack("vc_models.unet"), comfy_boot.pack("vc_models.checkpoint")
    prefix, sd = "model.diffusion_model.", {}
    with open(os.path.join(comfy_boot.KEYS, f"{LAYOUT}.keys.tsv")) as f:
        for line in f:
            name, shape, _ = line.rstrip("\n").split("\t")
            if name.startswith(prefix):
                dims = [int(d) for d in shape.strip("[]").split(",") if d.strip()]
                sd[name[len(prefix):]] = torch.empty(dims, device="meta")
    unet = unet_module.VideoCrafterUNet(checkpoint.infer_unet_config(sd), dtype=torch.bfloat16, device="meta",
                                        operations=comfy.ops.disable_weight_init)
    unet.gradient_checkpointing = True
    return unet


def step_activation_peak(torch, unet, trained):
    """Peak bytes of one forward + backward with `trained` parameters requiring grad (their gradients are
    counted apart: the backward is taken towards the input only, which saves the same activations)."""
    for p in unet.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    x = torch.empty(1, 4, FRAMES, HEIGHT // 8, WIDTH // 8, device="meta", dtype=torch.bfloat16, requires_grad=True)
    context = torch.empty(1, 77, 1024, device="meta", dtype=torch.bfloat16)

    def step():
        out = unet(x, torch.zeros(1, device="meta"), context=context, fps=torch.full((1,), 8.0, device="meta"))
        torch.autograd.grad(out.float().pow(2).mean(), [x])
    unet.train()
    return activation_peak(step, grad=True)


def main():
    comfy_boot.boot(cpu=True)
    import torch
    import comfy.ldm.modules.attention as attention
    # a GPU runs PyTorch's SDPA; the CPU default (sub-quadratic) asks the device for free memory, which meta has not
    attention.optimized_attention = attention.attention_pytorch
    training = comfy_boot.pack("vc_train.comfy_models")
    lora = comfy_boot.pack("vc_train.lora")
    unet = released_unet(torch)
    kinds = training._unet_parameter_kinds(unet)
    params = dict(unet.named_parameters())
    total = sum(p.numel() for p in params.values())
    temporal = [p for n, p in params.items() if kinds[n] == "temporal"]
    adapters = lora.LoraAdapters(unet, kinds, 16, 16, 0.0, lora.DEFAULT_TARGETS).to("meta", torch.bfloat16)
    lora_params = list(adapters.parameters())
    block = max(sum(p.numel() for p in b.parameters()) for b in comfy_boot.pack("vc_train.sharding").unet_blocks(unet))
    setups = []
    for label, trained, adapter in ((f"LoRA r16 ({lora.DEFAULT_TARGETS})", lora_params, True),
                                    ("temporal layers", temporal, False), ("full UNet", list(params.values()), False)):
        if not adapter:
            adapters.remove()  # the finetunes run the plain UNet
        activations = step_activation_peak(torch, unet, trained)
        setups.append((label, sum(p.numel() for p in trained), adapter, activations))
    print(f"UNet parameters: {total / 1e9:.3f} B; largest block {block / 1e6:.0f} M; frames {FRAMES}, "
          f"{HEIGHT}x{WIDTH}, batch 1 per rank, bf16 autocast, gradient checkpointing\n")
    print("| setup | trained params | activations (measured) | sharding | GiB per GPU on N = " +
          " / ".join(str(n) for n in RANKS) + " |")
    print("|---|---|---|---|---|")
    for label, n_trained, adapter, activations in setups:
        frozen = total - (0 if adapter else n_trained)
        ddp = frozen * 2 + n_trained * (4 + 4 + 8) + activations  # the same on every rank
        print(f"| {label} | {n_trained / 1e6:.1f} M | {activations / GIB:.2f} GiB | ddp | "
              + " / ".join(f"{ddp / GIB:.1f}" for _ in RANKS) + " |")
        if adapter:
            continue  # sharding fsdp is for full finetunes
        fsdp = [(total * 4 + n_trained * (4 + 8)) / n + 2 * block * 2 + activations
                if n > 1 else None for n in RANKS]
        print(f"| {label} | {n_trained / 1e6:.1f} M | {activations / GIB:.2f} GiB | fsdp | "
              + " / ".join("-" if v is None else f"{v / GIB:.1f}" for v in fsdp) + " |")


if __name__ == "__main__":
    main()
