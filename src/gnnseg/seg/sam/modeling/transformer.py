"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Each layer (Kirillov et al. 2023, Fig. 14): token self-attention, token-to-image cross-attention, an MLP on the
tokens, then image-to-token cross-attention that updates the image tokens. Positional encodings are added to
queries and keys at every attention (not to values); the first layer's self-attention skips them. A final
token-to-image attention closes the stack. Cross-attentions work in a ``dim / downsample`` internal width.

Cross-attention between a few prompt tokens (``n``, 7 for a box) and thousands of image tokens (``N``) is computed
without projecting the image tokens: a head's score ``(W_q a + b_q) . (W_k b + b_k)`` is linear in each side, so
the projection matrices are applied to the few tokens instead (``W_k^T q_h`` or ``W_q^T k_h``), and likewise the
value and output projections (``W_o (A V) = A (W_o V)`` per head). A key-side bias adds the same number to every
score of a query, which softmax ignores. The result is the same attention (up to float rounding) with
``2 * heads * n * N * dim`` multiply-adds instead of ``2 * N * dim * width`` for the projections: 2.3x fewer for a
box prompt in SAM's decoder (8 heads, width 128). The fold is used when ``heads * n < width``.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from gnnseg.seg.sam.modeling.common import FeedForward


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
        """``(B, n, D)`` queries, ``(B, m, D)`` keys and values; the image-token side may have batch 1 for all."""
        queries, keys = q.shape[1], k.shape[1]
        if queries < keys and self.heads * queries < self.q_proj.out_features:
            return self._few_queries(q, k, v)
        if keys < queries and self.heads * keys < self.q_proj.out_features:
            return self._few_keys(q, k, v)
        batch = max(q.shape[0], k.shape[0])
        q, k, v = (x.expand(batch, -1, -1) for x in (q, k, v))
        out = F.scaled_dot_product_attention(self._heads(self.q_proj(q)), self._heads(self.k_proj(k)),
                                             self._heads(self.v_proj(v)))
        batch, _, tokens, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, -1))

    def _per_head(self, layer: nn.Linear) -> Tensor:
        """A projection's ``(width, dim)`` weight as ``(heads, width / heads, dim)``."""
        return layer.weight.reshape(self.heads, -1, layer.in_features)

    def _few_queries(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention of ``n`` queries to ``N >> n`` keys without projecting the keys and values."""
        q = q.expand(max(q.shape[0], k.shape[0]), -1, -1)  # one prompt against several images' tokens
        batch, tokens, _ = q.shape
        head_dim = self.q_proj.out_features // self.heads
        query = self._heads(self.q_proj(q)) * head_dim ** -0.5  # (B, h, n, d)
        folded = (query @ self._per_head(self.k_proj)).flatten(1, 2)  # (B, h n, D): W_k^T q per head
        weights = _scores(k, folded).softmax(dim=-1)  # (B, h n, N); b_k shifts a row: no effect
        mixed = _times(weights, v).unflatten(1, (self.heads, tokens))  # (B, h, n, D): A V before W_v
        out = mixed @ self._per_head(self.v_proj).transpose(1, 2) + self.v_proj.bias.view(self.heads, 1, -1)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, -1))

    def _few_keys(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention of ``N >> n`` queries to ``n`` keys without projecting the queries or the output."""
        keys = k.shape[1]
        head_dim = self.q_proj.out_features // self.heads
        key = self._heads(self.k_proj(k)) * head_dim ** -0.5  # (B, h, n, d)
        folded = (key @ self._per_head(self.q_proj)).flatten(1, 2)  # (B, h n, D): W_q^T k per head
        bias = (key @ self.q_proj.bias.view(self.heads, -1, 1)).flatten(1, 2)  # (B, h n, 1): b_q . k per key
        # softmax over the n keys of a head as a middle axis of (B, h, n, N), far faster than over a short last axis
        weights = (_scores(q, folded) + bias).unflatten(1, (self.heads, keys)).softmax(dim=2).flatten(1, 2)
        value = self._heads(self.v_proj(v))  # (B, h, n, d)
        output_weight = self.out_proj.weight.reshape(-1, self.heads, head_dim).permute(1, 2, 0)  # (h, d, D)
        # W_o v per key, with b_o / h added to each: a head's weights sum to 1, so the h heads add b_o once
        values_out = (value @ output_weight + self.out_proj.bias / self.heads).flatten(1, 2)  # (B, h n, D)
        return weights.transpose(1, 2) @ values_out


def _scores(many: Tensor, folded: Tensor) -> Tensor:
    """``(1 or B, N, D)`` tokens against ``(B, m, D)`` folded queries -> ``(B, m, N)`` dot products.

    Multiplied as ``many @ folded^T`` and the small ``(N, m)`` result transposed: bfloat16 matrix products copy a
    transposed operand first, and ``folded @ many^T`` would copy all ``N x D`` tokens. Tokens shared by the batch
    (one image, many prompts) meet all ``B m`` queries in one product.
    """
    batch, rows, _ = folded.shape
    if many.shape[0] == 1 < batch:
        return (many[0] @ folded.flatten(0, 1).T).view(-1, batch, rows).permute(1, 2, 0).contiguous()
    return (many @ folded.transpose(1, 2)).transpose(1, 2).contiguous()


def _times(weights: Tensor, values: Tensor) -> Tensor:
    """``(B, m, N) @ (1 or B, N, D)``; values shared by the batch are one product of ``B m`` rows."""
    if values.shape[0] == 1 < weights.shape[0]:
        return (weights.flatten(0, 1) @ values[0]).view(*weights.shape[:2], -1)
    return weights @ values


class TwoWayAttentionBlock(nn.Module):
    """One layer of the two-way transformer; returns updated ``(queries, keys)``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, downsample: int = 2, skip_first_pe: bool = False,
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.self_attn = ProjectedAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.cross_attn_token_to_image = ProjectedAttention(dim, heads, downsample)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = FeedForward(dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm4 = nn.LayerNorm(dim, eps=norm_eps)
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
    """``(B, D, h, w)`` image embedding + ``(B, N, D)`` tokens -> updated ``(B, N, D)`` tokens and ``(B, h*w, D)``.

    The ``(1 or B, D, h, w)`` positional encoding is broadcast over the batch, and so is an image embedding of
    batch 1: every prompt then reads the same image tokens in the first layer, which updates them per prompt."""

    def __init__(self, *, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048,
                 attention_downsample_rate: int = 2, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate, skip_first_pe=i == 0,
                                 norm_eps=norm_eps)
            for i in range(depth)
        )
        self.final_attn_token_to_image = ProjectedAttention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim, eps=norm_eps)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        # tokens with their channels contiguous, as every product and LayerNorm below reads them
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attended = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attended), keys
