"""The image projector of VideoCrafter1 I2V: a Perceiver-style Resampler mapping the 257 CLIP
patch tokens to 16 tokens in the text embedding space. Parameter names follow `image_proj_model.`."""
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn

import comfy.ops
import comfy.ldm.modules.attention as comfy_attention

ops = comfy.ops.disable_weight_init


@dataclass
class ProjectorConfig:
    dim: int = 1024
    depth: int = 4
    heads: int = 12
    head_dim: int = 64
    num_queries: int = 16
    embedding_dim: int = 1280
    output_dim: int = 1024
    ff_mult: int = 4

    def as_dict(self):
        return asdict(self)

    @classmethod
    def from_state_dict(cls, sd):
        """Every size from the tensors (keys without the `image_proj_model.` prefix)."""
        dim = sd["latents"].shape[2]
        inner = sd["layers.0.0.to_q.weight"].shape[0]
        depth = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
        return cls(dim=dim, depth=depth, heads=inner // 64, head_dim=64, num_queries=sd["latents"].shape[1],
                   embedding_dim=sd["proj_in.weight"].shape[1], output_dim=sd["proj_out.weight"].shape[0],
                   ff_mult=sd["layers.0.1.1.weight"].shape[0] // dim)


class PerceiverAttention(nn.Module):
    """The queries attend to the image tokens and to themselves (keys/values of both)."""

    def __init__(self, dim, heads, head_dim, dtype=None, device=None, operations=ops):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.norm1 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.norm2 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.to_q = operations.Linear(dim, inner, bias=False, dtype=dtype, device=device)
        self.to_kv = operations.Linear(dim, inner * 2, bias=False, dtype=dtype, device=device)
        self.to_out = operations.Linear(inner, dim, bias=False, dtype=dtype, device=device)

    def forward(self, x, latents):
        x = self.norm1(x)
        latents = self.norm2(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        return self.to_out(comfy_attention.optimized_attention(q, k, v, self.heads))


class ImageProjector(nn.Module):
    def __init__(self, config: ProjectorConfig = None, dtype=None, device=None, operations=ops):
        super().__init__()
        cfg = config or ProjectorConfig()
        self.config = cfg
        self.latents = nn.Parameter(torch.empty(1, cfg.num_queries, cfg.dim, dtype=dtype, device=device))
        self.proj_in = operations.Linear(cfg.embedding_dim, cfg.dim, dtype=dtype, device=device)
        self.proj_out = operations.Linear(cfg.dim, cfg.output_dim, dtype=dtype, device=device)
        self.norm_out = operations.LayerNorm(cfg.output_dim, dtype=dtype, device=device)
        inner_ff = cfg.dim * cfg.ff_mult
        self.layers = nn.ModuleList([
            nn.ModuleList([
                PerceiverAttention(cfg.dim, cfg.heads, cfg.head_dim, dtype=dtype, device=device, operations=operations),
                nn.Sequential(operations.LayerNorm(cfg.dim, dtype=dtype, device=device),
                              operations.Linear(cfg.dim, inner_ff, bias=False, dtype=dtype, device=device),
                              nn.GELU(),
                              operations.Linear(inner_ff, cfg.dim, bias=False, dtype=dtype, device=device)),
            ])
            for _ in range(cfg.depth)])

    def forward(self, image_tokens):
        """[B, 257, embedding_dim] CLIP patch tokens -> [B, num_queries, output_dim]."""
        x = self.proj_in(image_tokens)
        latents = comfy.ops.cast_to_input(self.latents, x).expand(x.shape[0], -1, -1)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
