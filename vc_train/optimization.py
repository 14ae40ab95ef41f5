"""One stage's optimization: AdamW over the parameters the stage trains at the stage's learning rate, a gradient
scaler for fp16 autocast on a GPU, and the optimizer step (gradients averaged across the ranks, then clipped)."""
import torch

from . import sharding


class StageOptimizer:
    def __init__(self, cfg, stage, trainable, device, amp_dtype, dist, sharded):
        """`trainable`: the stage's parameters in name order (a state's optimizer values follow it); `sharded`:
        the UNet's parameters are FSDP shards."""
        self.cfg, self.trainable, self.dist, self.sharded = cfg, trainable, dist, sharded
        self.lr = cfg.projector_lr if stage == "projector" else cfg.finetune_lr
        self.optimizer = torch.optim.AdamW(trainable, lr=self.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                           weight_decay=cfg.weight_decay,
                                           # foreach over hundreds of sharded tensors: a first step of minutes (CPU)
                                           foreach=not sharded)
        fp16_on_gpu = amp_dtype == torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if fp16_on_gpu else None

    def load(self, saved):
        """Continue from a state's optimizer values (`saved`: {"optimizer", "scaler", …}, this rank's shards in a
        sharded run)."""
        values = saved["optimizer"]
        if self.sharded:
            values = sharding.sharded_optimizer_state(values, self.trainable)
        self.optimizer.load_state_dict(values)
        if self.scaler and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])

    def backward(self, loss):
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self):
        """The optimizer step on the micro-steps' gradients, then the gradients dropped."""
        if self.sharded:  # the shards' gradients arrive averaged (reduce-scatter); the rest is replicated
            self.dist.average_gradients(sharding.replicated(self.trainable))
        else:
            self.dist.average_gradients(self.trainable)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.max_grad_norm
        if max_norm > 0 and self.sharded:
            sharding.clip_grad_norm(self.trainable, max_norm)
        elif max_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.zero_grad()

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)
