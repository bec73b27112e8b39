"""SAM's prompt encoder: points and boxes become sparse tokens, a low-resolution mask becomes a dense map.

- Coordinates (in the model's input pixel grid, pixel centres at +0.5) go through a random Fourier feature map
  (Tancik et al., NeurIPS 2020): ``[sin(2 pi G u), cos(2 pi G u)]`` with ``u`` scaled to ``[-1, 1]`` and ``G`` a
  fixed Gaussian ``2 x D/2`` matrix stored in the checkpoint.
- A learned vector is added per prompt kind: negative point (0), positive point (1), box top-left (2), box
  bottom-right (3); padding points (label -1) become a learned "not a point" vector.
- A mask prompt ``(B, 1, 4h, 4w)`` is downscaled by two stride-2 convs to the embedding grid; without one, a learned
  "no mask" vector fills the dense map.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gnnseg.seg.sam.modeling.common import LayerNorm2d

NEGATIVE, POSITIVE, PADDING = 0, 1, -1
"""Point labels, as in SAM: background click, foreground click, padding token."""


class RandomFourierEncoding(nn.Module):
    """Positional encoding of 2D coordinates in ``[0, 1]^2`` by a fixed random Gaussian projection."""

    def __init__(self, features: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, features))

    def encode(self, unit_coords: Tensor) -> Tensor:
        """``(..., 2)`` coordinates in ``[0, 1]`` (x, y) -> ``(..., 2 * features)``."""
        projected = 2 * math.pi * ((2 * unit_coords - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([projected.sin(), projected.cos()], dim=-1)

    def grid(self, height: int, width: int) -> Tensor:
        """Encoding of every cell centre of an ``height x width`` grid: ``(2 * features, height, width)``."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return self.encode(coords).permute(2, 0, 1)

    def points(self, coords: Tensor, image_size: tuple[int, int]) -> Tensor:
        """``(B, N, 2)`` pixel coordinates (x, y) in an image of ``image_size = (H, W)`` -> ``(B, N, 2 * features)``."""
        scale = coords.new_tensor([image_size[1], image_size[0]])
        return self.encode(coords.float() / scale)


class PromptEncoder(nn.Module):
    """Encode points, boxes and mask prompts into sparse ``(B, N, D)`` and dense ``(B, D, h, w)`` embeddings."""

    def __init__(self, *, embed_dim: int, image_embedding_size: tuple[int, int],
                 input_image_size: tuple[int, int], mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe: tuple[tuple, Tensor] | None = None

    def get_dense_pe(self, dtype: torch.dtype | None = None) -> Tensor:
        """Positional encoding of the image-embedding grid, ``(1, D, h, w)`` (in ``dtype``, default the buffers').

        Remembered for the Gaussian matrix it came from (its storage and in-place version, so loading other
        weights or moving the model recomputes it) and the dtype: every prompt needs it, and its sines and cosines
        cost as much as a box's attention. Writes through ``.data`` bypass the version counter and are not seen.
        A traced export computes it in the graph.
        """
        if torch.jit.is_tracing():
            return self.pe_layer.grid(*self.image_embedding_size)[None]
        matrix = self.pe_layer.positional_encoding_gaussian_matrix
        key = (matrix.data_ptr(), matrix._version, matrix.device, dtype)
        if self._dense_pe is None or self._dense_pe[0] != key:
            grid = self.pe_layer.grid(*self.image_embedding_size)[None]
            self._dense_pe = (key, grid if dtype is None else grid.to(dtype))
        return self._dense_pe[1]

    def embed_points(self, coords: Tensor, labels: Tensor, pad: bool) -> Tensor:
        """``(B, N, 2)`` points and ``(B, N)`` labels in {-1, 0, 1} -> ``(B, N [+1], D)``.

        ``pad`` appends one padding point (SAM does so when no box follows the points).
        """
        coords = coords + 0.5
        if pad:
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), PADDING)], dim=1)
        encoded = self.pe_layer.points(coords, self.input_image_size)
        labels = labels[..., None]
        kind = torch.where(labels == POSITIVE, self.point_embeddings[POSITIVE].weight,
                           self.point_embeddings[NEGATIVE].weight)
        return torch.where(labels == PADDING, self.not_a_point_embed.weight, encoded + kind)

    def embed_boxes(self, boxes: Tensor) -> Tensor:
        """``(B, 4)`` boxes ``x0, y0, x1, y1`` -> two corner tokens ``(B, 2, D)``."""
        corners = self.pe_layer.points(boxes.reshape(-1, 2, 2) + 0.5, self.input_image_size)
        corner_kind = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return corners + corner_kind

    def forward(self, points: tuple[Tensor, Tensor] | None, boxes: Tensor | None,
                masks: Tensor | None) -> tuple[Tensor, Tensor]:
        """Returns ``sparse (B, N, D)`` and ``dense (B, D, h, w)``; ``B`` comes from whichever prompt is given."""
        batch = next((p.shape[0] for p in (points[0] if points else None, boxes, masks) if p is not None), 1)
        device = self.no_mask_embed.weight.device
        sparse = [torch.empty(batch, 0, self.embed_dim, device=device)]
        if points is not None:
            sparse.append(self.embed_points(*points, pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return torch.cat(sparse, dim=1), dense
