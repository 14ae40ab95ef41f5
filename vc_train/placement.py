"""Where a run's trainable parameters live: which ones each stage trains (the UNet's and the projector's, or a LoRA
run's adapters), the trained ones in float32 on the device, the frozen ones in the frozen dtype (the exact float32
values of those a state holds kept aside), and with sharding fsdp the UNet sharded across the ranks."""
import torch

from . import lora as lora_adapters
from . import sharding
from . import stages


def resolve_device(cfg, dist_local_rank=0):
    if cfg.device != "auto":
        return torch.device(cfg.device)
    if torch.cuda.is_available():
        return torch.device("cuda", dist_local_rank)
    return torch.device("cpu")


def autocast_dtype(cfg, device):
    if cfg.precision == "fp32" or (cfg.precision == "auto" and device.type == "cpu"):
        return None
    if cfg.precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]


def named_trainable_parameters(models, adapter=None):
    """{full name: parameter}: "unet.…", "projector.…" and a LoRA run's "lora.…"."""
    out = {}
    for prefix, module in (("unet", models.unet), ("projector", models.projector)):
        for name, p in (module.named_parameters() if module is not None else ()):
            out[f"{prefix}.{name}"] = p
    if adapter is not None:
        out.update({f"lora.{name}": p for name, p in adapter.named_adapter_parameters().items()})
    return out


class Placement:
    def __init__(self, cfg, models, device, world_size, plan):
        self.cfg, self.models, self.device = cfg, models, device
        self.amp_dtype = autocast_dtype(cfg, device)
        # frozen weights in half precision only where it pays (GPU); the CPU keeps float32. Sharded: float32
        # shards (1/N of the memory), gathered block by block in the autocast dtype
        sharded = cfg.sharding == "fsdp"
        half_frozen = self.amp_dtype and device.type == "cuda" and not sharded
        self.frozen_dtype = self.amp_dtype if half_frozen else torch.float32
        self.sharder = None
        if sharded:
            self.sharder = sharding.Sharding(device, world_size, self.amp_dtype if device.type == "cuda" else None)
        self.sharded = False  # the UNet is sharded (at the first stage's placement)
        self.kinds = models.unet_parameter_kinds()
        # a LoRA run: adapters beside the UNet (a rank no targeted layer allows is refused here, before training)
        self.adapter = (lora_adapters.LoraAdapters(models.unet, self.kinds, cfg.lora_rank, cfg.lora_alpha,
                                                   cfg.lora_dropout, cfg.lora_targets, cfg.seed)
                        if cfg.adapter == "lora" else None)
        self.params = named_trainable_parameters(models, self.adapter)
        self.projector_names = [n for n, _ in models.projector.named_parameters()] if models.projector is not None else []
        self.state_names = self._state_names(plan)
        self.frozen_master = {}  # fp32 CPU values of state parameters while held frozen in half precision

    # ------------------------------------------------------------ which parameters train
    def stage_names(self, stage):
        """Sorted full names the stage updates: with a LoRA adapter, a UNet stage trains only the adapters (the
        `images` stage those of spatial layers, as it trains the spatial layers of a full finetune)."""
        if stage in stages.UNET_STAGES and self.adapter is not None:
            names = sorted(f"lora.{n}" for n in self.adapter.named_adapter_parameters()
                           if stage != "images" or self.kinds.get(n.rsplit(".lora_", 1)[0] + ".weight") != "temporal")
            if not names:
                raise ValueError(f"lora_targets {self.cfg.lora_targets!r} select no spatial layer: the 'images' stage "
                                 "trains spatial layers only (add attn1, attn2 or ff)")
            return names
        return stages.trainable_names(stage, self.kinds, self.projector_names, self.cfg.finetune_layers)

    def _state_names(self, plan):
        """Every parameter some stage of the plan may change: what a training state holds."""
        if self.adapter is None:
            return stages.state_names(plan, self.kinds, self.projector_names, self.cfg.finetune_layers)
        others = [(stage, n) for stage, n in plan if stage not in stages.UNET_STAGES]
        names = stages.state_names(others, self.kinds, self.projector_names, self.cfg.finetune_layers) if others else []
        return sorted(set(names).union(*(self.stage_names(stage) for stage, _ in plan if stage in stages.UNET_STAGES)))

    # ------------------------------------------------------------ placement
    def set_stage(self, stage):
        """Place every parameter for `stage` and mark the ones it trains; returns (the trained parameters in name
        order, whether the projector trains)."""
        names = set(self.stage_names(stage))
        in_state = set(self.state_names)
        for name, p in self.params.items():
            trainable = name in names
            if not self.sharded:  # sharded parameters were placed once, before sharding, in float32
                self._place(name, p, trainable, in_state)
            p.requires_grad_(trainable)
            p.grad = None
        if not self.sharded:
            for buf_owner in (self.models.unet, self.models.projector, self.adapter):
                if buf_owner is not None:
                    buf_owner.to(self.device)
        if self.sharder is not None and not self.sharded:
            self.sharder.shard(self.models.unet)  # replaces the UNet's parameters by their shards
            self.sharded = True
            self.params = named_trainable_parameters(self.models, self.adapter)
        for module in (self.models.unet, self.models.projector):
            if module is not None:
                module.train()  # the temporal convolutions carry dropout 0.1, as the original
        self.models.unet.gradient_checkpointing = self.cfg.gradient_checkpointing
        return [self.params[n] for n in sorted(names)], any(n.startswith("projector.") for n in names)

    def _place(self, name, p, trainable, in_state):
        """Trained parameters in float32 on the device, frozen ones in the frozen dtype (exact values of those a
        state holds kept aside)."""
        if trainable and name in self.frozen_master:
            p.data = self.frozen_master.pop(name).to(self.device, torch.float32)
        elif trainable and p.dtype != torch.float32:
            # held in half precision and never trained: take the full-precision original
            p.data = self.models.original_parameter(name).to(self.device, torch.float32)
        elif not trainable and p.dtype != self.frozen_dtype:
            if name in in_state:  # keep its exact value for states and exports
                self.frozen_master[name] = p.detach().float().cpu().clone()
            p.data = p.data.to(self.device, self.frozen_dtype)
        else:
            p.data = p.data.to(self.device)

    # ------------------------------------------------------------ values
    def state_weights(self):
        """fp32 CPU values of every parameter the plan may change (exact even while held in half precision).
        Sharded: the full values on every rank (a collective: every rank calls it)."""
        return {n: sharding.full_value(self.frozen_master.get(n, self.params[n]).detach()).float().cpu()
                for n in self.state_names}

    def weights_for_main(self, is_main):
        """The state weights on rank 0 (None elsewhere); every rank takes part in gathering sharded ones."""
        return self.state_weights() if (is_main or self.sharded) else None

    def load_weights(self, weights):
        """Set the parameters from a state's `weights` (before the first stage's placement)."""
        with torch.no_grad():
            for name, value in weights.items():
                if name in self.params:
                    self.params[name].data = value.to(self.params[name].dtype)
