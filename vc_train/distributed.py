"""torchrun-style data parallelism: NCCL on GPUs (gloo where torch has no NCCL, as on Windows), gloo on the CPU.

Gradients are averaged by hand with one all-reduce per optimizer step instead of wrapping the
model in DistributedDataParallel: most parameters are frozen (stage 1 trains a few K/V matrices),
gradient accumulation needs no `no_sync`, and all ranks end with bit-identical weights because
every rank applies the same averaged gradient.
"""
import datetime
import os

import torch
import torch.distributed as dist


class RankFailed(RuntimeError):
    """Another rank failed in a step all ranks take together; this rank stops too instead of waiting."""


class Distributed:
    def __init__(self, rank=0, world_size=1, local_rank=0, initialised_here=False):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.initialised_here = initialised_here

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type="cpu"):
        """Join the process group torchrun describes in the environment; a single process otherwise."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), local_rank)
        # torch's Windows builds have no NCCL: gloo there (it reduces CUDA tensors too)
        backend = "nccl" if device_type == "cuda" and dist.is_nccl_available() else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        return cls(rank, world_size, local_rank, initialised_here=True)

    def average_gradients(self, params):
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def mean(self, value, device="cpu"):
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def gather(self, obj):
        """[obj of every rank] (on every rank)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's obj on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn):
        """fn() on rank 0, its result on every rank. If it raises, rank 0 re-raises and every other
        rank raises RankFailed with the message at once (instead of waiting for a broadcast that never comes)."""
        if not self.enabled:
            return fn()
        error = None
        if self.is_main:
            try:
                box = (fn(), None)
            except Exception as e:
                error, box = e, (None, f"{type(e).__name__}: {e}")
        else:
            box = None
        value, message = self.broadcast(box)
        if error is not None:
            raise error
        if message is not None:
            raise RankFailed(f"rank 0 failed: {message}")
        return value

    def on_all(self, fn):
        """fn() on every rank; [result of every rank] on every rank. If any rank raises, all raise together."""
        if not self.enabled:
            return [fn()]
        error = None
        try:
            mine = (fn(), None)
        except Exception as e:
            error, mine = e, (None, f"{type(e).__name__}: {e}")
        everyone = self.gather(mine)
        if error is not None:
            raise error
        failed = [f"rank {rank} failed: {message}" for rank, (_, message) in enumerate(everyone) if message]
        if failed:
            raise RankFailed("; ".join(failed))
        return [value for value, _ in everyone]

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def shutdown(self):
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()
