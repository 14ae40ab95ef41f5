"""`sharding: fsdp`: the UNet's parameters, gradients and optimizer states sharded across the ranks with
PyTorch FSDP2 (`torch.distributed.fsdp.fully_shard`), one FSDP unit per UNet block plus the root.

Each rank holds 1/world_size of every UNet parameter (dim-0 shards as DTensors) and the optimizer states
of its shards only; a block's full weights exist only while it runs (all-gather before, reduce-scatter of
its gradients after). Gradients arrive averaged over the ranks, as the data-parallel path's all-reduce
gives them. The projector is small and stays replicated (its gradients are averaged by hand).

Training states keep the full weights (gathered, rank 0 writes them) plus one optimizer file per rank
holding that rank's shards as plain tensors, so a state resumes on the same number of ranks only; results
are the full (consolidated) files a data-parallel run writes.
"""
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor


def unet_blocks(unet):
    """The UNet's blocks, one FSDP unit each (the root unit takes the embeddings and the output layers)."""
    return [*unet.input_blocks, unet.middle_block, *unet.output_blocks]


def refuse_single_process(world_size):
    if world_size < 2:
        raise ValueError("sharding 'fsdp' needs several ranks: start the trainer with torchrun "
                         "--nproc_per_node N (N >= 2), or use sharding 'ddp' on one process")


class Sharding:
    def __init__(self, device, world_size, param_dtype=None):
        refuse_single_process(world_size)
        self.mesh = init_device_mesh(device.type, (world_size,))
        # on a GPU the blocks run in the autocast dtype (gathered in it: half the traffic); gradients reduce in fp32
        self.policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)

    def shard(self, unet):
        for block in unet_blocks(unet):
            fully_shard(block, mesh=self.mesh, mp_policy=self.policy)
        fully_shard(unet, mesh=self.mesh, mp_policy=self.policy)


def is_sharded(tensor):
    return isinstance(tensor, DTensor)


def full_value(tensor):
    """The whole tensor on every rank (a collective for a sharded one: every rank must call it)."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def replicated(params):
    """The parameters every rank holds whole (their gradients are averaged by hand)."""
    return [p for p in params if not is_sharded(p)]


def clip_grad_norm(params, max_norm):
    """torch.nn.utils.clip_grad_norm_ over sharded and whole gradients together: one all-reduce of the
    shards' squared sums (the whole gradients are the same on every rank and count once)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    shards = [g.to_local().float() for g in grads if is_sharded(g)]
    whole = [g.float() for g in grads if not is_sharded(g)]
    device = grads[0].to_local().device if is_sharded(grads[0]) else grads[0].device
    sharded_sq = torch.stack([s.pow(2).sum() for s in shards]).sum() if shards else torch.zeros((), device=device)
    dist.all_reduce(sharded_sq)
    whole_sq = torch.stack([w.pow(2).sum() for w in whole]).sum() if whole else torch.zeros((), device=device)
    total = (sharded_sq + whole_sq.to(sharded_sq.device)).sqrt()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        (g.to_local() if is_sharded(g) else g).mul_(coef.to(g.dtype))


def local_optimizer_state(state_dict):
    """An optimizer state dict with each sharded state replaced by this rank's shard (a plain tensor)."""
    state = {index: {k: v.to_local() if is_sharded(v) else v for k, v in values.items()}
             for index, values in state_dict["state"].items()}
    return {"state": state, "param_groups": state_dict["param_groups"]}


def sharded_optimizer_state(local, params):
    """`local_optimizer_state`'s result back as DTensors placed as `params` (the optimizer's parameter order)."""
    state = {}
    for index, values in local["state"].items():
        param = params[int(index)]
        state[index] = {k: (DTensor.from_local(v.to(param.to_local().device), param.device_mesh, param.placements,
                                               shape=param.shape, stride=param.stride())
                            if is_sharded(param) and torch.is_tensor(v) and v.dim() > 0 else v)
                        for k, v in values.items()}
    return {"state": state, "param_groups": local["param_groups"]}


def optimizer_state_bytes(state_dict):
    """Bytes of the optimizer's tensors this rank holds."""
    total = 0
    for values in state_dict["state"].values():
        for v in values.values():
            if torch.is_tensor(v):
                t = v.to_local() if is_sharded(v) else v
                total += t.numel() * t.element_size()
    return total
