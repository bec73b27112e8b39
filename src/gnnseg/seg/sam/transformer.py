"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Each layer (Kirillov et al. 2023, Fig. 14): token self-attention, token-to-image cross-attention, an MLP on the
tokens, then image-to-token cross-attention that updates the image tokens. Positional encodings are added to
queries and keys at every attention (not to values); the first layer's self-attention skips them. A final
token-to-image attention closes the stack. Cross-attentions work in a ``dim / downsample`` internal width.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from gnnseg.seg.sam.common import FeedForward


class ProjectedAttention(nn.Module):
    """Multi-head attention with separate q, k, v projections to an internal width ``dim // downsample``."""

    def __init__(self, dim: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        internal = dim // downsample
        if internal % heads:
            raise ValueError(f"attention width {internal} is not divisible by {heads} heads")
        self.heads = heads
        self.q_proj = nn.Linear(dim, internal)
        self.k_proj = nn.Linear(dim, internal)
        self.v_proj = nn.Linear(dim, internal)
        self.out_proj = nn.Linear(internal, dim)

    def _heads(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        return x.reshape(batch, tokens, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = F.scaled_dot_product_attention(self._heads(self.q_proj(q)), self._heads(self.k_proj(k)),
                                             self._heads(self.v_proj(v)))
        batch, _, tokens, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class TwoWayAttentionBlock(nn.Module):
    """One layer of the two-way transformer; returns updated ``(queries, keys)``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, downsample: int = 2, skip_first_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = ProjectedAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = ProjectedAttention(dim, heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = ProjectedAttention(dim, heads, downsample)
        self.skip_first_pe = skip_first_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> tuple[Tensor, Tensor]:
        if self.skip_first_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``(B, D, h, w)`` image embedding + ``(B, N, D)`` tokens -> updated ``(B, N, D)`` tokens and ``(B, h*w, D)``."""

    def __init__(self, *, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048,
                 attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate, skip_first_pe=i == 0)
            for i in range(depth)
        )
        self.final_attn_token_to_image = ProjectedAttention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attended = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attended), keys
