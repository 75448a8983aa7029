"""Small pieces shared by the spectrogram ViTs (EAT, Bird-MAE): attention, MLP, fixed sin-cos positions.

Kept apart (leading underscore: not a model family, not auto-registered) so that each model file stays a
readable top-to-bottom description of its own architecture. Parameter names (``qkv``, ``proj``, ``fc1``,
``fc2``) are the ones the public timm-style ViT code uses, which is what both families' checkpoints carry.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """(B, 1, frames, mel) spectrogram -> (B, patches, dim) with 16x16 patches, ordered time-major (t * 8 + f)."""

    def __init__(self, dim: int, patch: int = 16) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        # scaled_dot_product_attention = softmax(q k^T / sqrt(d)) v, the fused kernel of the same formula
        out = nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N,) positions -> (N, dim): sin of position * 1/10000^(2i/dim) for the first half, cos for the second."""
    freq = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.to(torch.float64)[:, None] * freq[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """MAE-style fixed 2-D positions for a rows x cols grid, flattened row-major: (rows * cols, dim).

    As in the MAE reference code, the first half of each vector encodes the *column* index and the second half
    the *row* index. Checkpoints store these tables; computing them here only matters for random-weight builds.
    """
    if dim % 4:
        raise ValueError(f"sin-cos positions need dim divisible by 4, got {dim}")
    row = torch.arange(rows).repeat_interleave(cols)
    col = torch.arange(cols).repeat(rows)
    return torch.cat([_sincos_1d(dim // 2, col), _sincos_1d(dim // 2, row)], dim=1).to(torch.float32)
