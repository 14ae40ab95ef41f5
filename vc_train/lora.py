"""LoRA adapters on the UNet's linear and convolution layers, by target group.

Each targeted layer `m` computes `m(x) + alpha / rank * up(down(dropout(x)))`: `down` is a layer of
`m`'s kind (same kernel, stride, padding) to `rank` outputs, `up` a 1x1 map back to `m`'s outputs,
zero at the start (training starts from the base model exactly). The adapters sit beside the UNet
(forward hooks), not inside it: the UNet's parameter names stay the checkpoint's keys, so its state
dict, exports and previews are the base model's.

The result file holds `diffusion_model.<module>.lora_down.weight`, `.lora_up.weight` and `.alpha`
per layer: the generic key format ComfyUI's LoRA loading maps for every model from its state dict
(`comfy.lora.model_lora_keys_unet`), so core "Load LoRA (model only)" applies it to this pack's MODEL
as `weight + strength * alpha / rank * up @ down` (the same map, with dropout off).

No ComfyUI import here: the trainer core runs without it.
"""
import math
import os
import tomllib

import torch
from torch import nn

# target group -> which layers (module names as in the checkpoint, under `model.diffusion_model.`)
TARGET_GROUPS = {
    "attn1": "spatial self-attention: to_q, to_k, to_v, to_out.0 of attn1 in the spatial transformers",
    "attn2": "spatial cross-attention: to_q, to_k, to_v, to_out.0 (and the image to_k_ip, to_v_ip) of attn2",
    "temporal": "temporal attention: to_q, to_k, to_v, to_out.0 of both attentions in the temporal transformers",
    "ff": "feed-forward: the GEGLU projections of every transformer block (spatial and temporal)",
    "conv": "convolutions: the residual blocks' 2-D / temporal 3-D convolutions, down/upsampling, in/out",
}
DEFAULT_TARGETS = "attn1,attn2,temporal"
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0", "to_k_ip", "to_v_ip")
WEIGHT_PREFIX = "diffusion_model."  # core's generic LoRA key format for the model's UNet
FORMAT = "videocrafter-lora"


def parse_targets(text):
    """'attn1, temporal' -> ('attn1', 'temporal'); an unknown or empty group list is a clear error."""
    groups = tuple(dict.fromkeys(g.strip() for g in str(text).split(",") if g.strip()))
    unknown = [g for g in groups if g not in TARGET_GROUPS]
    if unknown:
        raise ValueError(f"lora_targets: unknown target group(s) {unknown}; known groups: "
                         + "; ".join(f"{k} ({v})" for k, v in TARGET_GROUPS.items()))
    if not groups:
        raise ValueError(f"lora_targets is empty: name one or more of {list(TARGET_GROUPS)}")
    return groups


def validate_options(rank, alpha, dropout, targets):
    """The checks that need no model (config validation)."""
    if int(rank) < 1:
        raise ValueError(f"lora_rank must be at least 1, got {rank}")
    if not alpha > 0:
        raise ValueError(f"lora_alpha must be positive, got {alpha} (the LoRA's scale is alpha / rank)")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"lora_dropout must be in [0, 1), got {dropout}")
    parse_targets(targets)


def target_group(name, module, kinds):
    """The target group of UNet module `name`, or None. `kinds`: parameter name -> 'temporal' | 'spatial'."""
    temporal = kinds.get(f"{name}.weight") == "temporal"
    if isinstance(module, nn.Linear):
        if any(name.endswith("." + p) for p in ATTENTION_PROJECTIONS):
            if temporal:
                return "temporal"
            return "attn1" if ".attn1." in name else "attn2" if ".attn2." in name else None
        return "ff" if ".ff." in name else None
    if isinstance(module, (nn.Conv2d, nn.Conv3d)) and module.groups == 1:
        # a transformer's 1x1 in/out projections are not convolutions of the image (older layouts only)
        return None if name.endswith((".proj_in", ".proj_out")) else "conv"
    return None


def _matrix_shape(module):
    """(out, in) of the layer's weight as a matrix (a convolution's kernel counts into `in`)."""
    w = module.weight
    return w.shape[0], w[0].numel()


def _autocast_on(device_type):
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know (meta, in scripts/training_memory.py)
        return False


class LoraLayer(nn.Module):
    def __init__(self, base, rank, alpha, dropout):
        super().__init__()
        if isinstance(base, nn.Linear):
            self.lora_down = nn.Linear(base.in_features, rank, bias=False)
            self.lora_up = nn.Linear(rank, base.out_features, bias=False)
        else:
            conv = nn.Conv2d if isinstance(base, nn.Conv2d) else nn.Conv3d
            self.lora_down = conv(base.in_channels, rank, base.kernel_size, base.stride, base.padding, base.dilation,
                                  bias=False)
            self.lora_up = conv(rank, base.out_channels, 1, bias=False)
        self.rank, self.alpha, self.dropout = rank, float(alpha), float(dropout)
        self.scale = self.alpha / rank

    def reset(self, generator):
        """peft's start: down Kaiming-uniform (a = sqrt 5, as torch's layers), up zero."""
        fan_in = self.lora_down.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_ with a = sqrt(5)
        with torch.no_grad():
            self.lora_down.weight.uniform_(-bound, bound, generator=generator)
            self.lora_up.weight.zero_()

    def delta(self, x, training):
        if x.dtype != self.lora_down.weight.dtype and not _autocast_on(x.device.type):
            x = x.to(self.lora_down.weight.dtype)  # autocast casts by itself; without it the input may be half
        if self.dropout:
            x = nn.functional.dropout(x, self.dropout, training)
        return self.lora_up(self.lora_down(x)) * self.scale


def targeted_layers(unet, kinds, rank, targets):
    """[(module name, module)] of the UNet's layers in the target groups; a rank larger than one of them allows is
    a clear error naming the layer. Works on a UNet built on the meta device (the check before any model loads)."""
    targets = parse_targets(targets) if isinstance(targets, str) else targets
    picked = [(name, m) for name, m in unet.named_modules() if target_group(name, m, kinds) in targets]
    if not picked:
        raise ValueError(f"lora_targets {list(targets)} select no layer of this UNet")
    too_small = [(name, _matrix_shape(m)) for name, m in picked if int(rank) > min(_matrix_shape(m))]
    if too_small:
        name, (out, inp) = too_small[0]
        smallest = min(min(s) for _, s in too_small)
        raise ValueError(f"lora_rank {int(rank)} is larger than layer {name} ({inp} inputs, {out} outputs) "
                         f"allows: a LoRA's rank is at most min(inputs, outputs) of every targeted layer; "
                         f"{len(too_small)} layers are smaller; use lora_rank <= {smallest} or other targets.")
    return picked


class LoraAdapters(nn.Module):
    """The adapters of one UNet, keyed by module name; `parameters()` are what a LoRA run trains."""

    def __init__(self, unet, kinds, rank, alpha, dropout, targets, seed=0):
        super().__init__()
        self.rank, self.alpha, self.dropout = int(rank), float(alpha), float(dropout)
        self.targets = parse_targets(targets)
        picked = targeted_layers(unet, kinds, self.rank, self.targets)
        self.names = [name for name, _ in picked]
        self.layers = nn.ModuleList(LoraLayer(m, self.rank, self.alpha, self.dropout) for _, m in picked)
        generator = torch.Generator().manual_seed(int(seed))  # the same start on every rank
        for layer in self.layers:
            layer.reset(generator)
        self._hooks = [m.register_forward_hook(self._hook(layer)) for (_, m), layer in zip(picked, self.layers)]

    @staticmethod
    def _hook(layer):
        def add_delta(module, inputs, output):
            # dropout follows the UNet's train / eval mode (the adapters are not its submodules)
            return output + layer.delta(inputs[0], module.training).to(output.dtype)
        return add_delta

    def remove(self):
        """Detach the adapters from the UNet (it computes the base model again)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def named_adapter_parameters(self):
        """{'<module>.lora_down.weight' / '<module>.lora_up.weight': parameter}."""
        out = {}
        for name, layer in zip(self.names, self.layers):
            out[f"{name}.lora_down.weight"] = layer.lora_down.weight
            out[f"{name}.lora_up.weight"] = layer.lora_up.weight
        return out

    def layer_count(self):
        return len(self.names)


def export_tensors(adapter_values, alpha, dtype=torch.float32):
    """The LoRA file's tensors from {'<module>.lora_down.weight' / '.lora_up.weight': value}: core's generic
    keys `diffusion_model.<module>.lora_{down,up}.weight` plus `diffusion_model.<module>.alpha`."""
    out = {}
    for key, value in adapter_values.items():
        out[WEIGHT_PREFIX + key] = value.detach().to("cpu", dtype).contiguous()
        module = key.rsplit(".lora_", 1)[0]
        out[f"{WEIGHT_PREFIX}{module}.alpha"] = torch.tensor(float(alpha))
    return out


def pack_version():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["version"]


def metadata(base_model, rank, alpha, dropout, targets, steps, dataset_size):
    """The LoRA file's header (strings, as safetensors metadata are)."""
    return {"format": FORMAT, "base_model": base_model, "lora_rank": str(rank), "lora_alpha": str(alpha),
            "lora_dropout": str(dropout), "lora_targets": ",".join(parse_targets(targets)), "steps": str(steps),
            "dataset_size": str(dataset_size), "pack_version": pack_version()}
