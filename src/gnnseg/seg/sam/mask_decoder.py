"""SAM's mask decoder: output tokens read the image through the two-way transformer and become masks.

An IoU token and ``1 + multimask`` mask tokens are prepended to the prompt tokens. After the transformer, the image
tokens are upscaled 4x by two transposed convs (to ``D/8`` channels); each mask token passes through its own 3-layer
MLP (a hypernetwork) to a ``D/8`` vector whose dot product with every upscaled pixel is that mask's logit. The IoU
token predicts each mask's IoU. Mask 0 is the single-mask output; masks 1..3 are the multimask outputs for
ambiguous prompts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gnnseg.seg.sam.common import LayerNorm2d, PerceptronStack
from gnnseg.seg.sam.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predict ``(B, M, 4h, 4w)`` mask logits and ``(B, M)`` IoU estimates, ``M = 1`` or ``num_multimask_outputs``."""

    def __init__(self, *, transformer_dim: int, transformer: TwoWayTransformer, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            PerceptronStack(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = PerceptronStack(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens,
                                                   iou_head_depth)

    def forward(self, image_embeddings: Tensor, image_pe: Tensor, sparse_prompt_embeddings: Tensor,
                dense_prompt_embeddings: Tensor, multimask_output: bool) -> tuple[Tensor, Tensor]:
        """``image_embeddings`` is ``(1 or B, D, h, w)``; one image's embedding is shared by all ``B`` prompts."""
        masks, iou = self.predict_all(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, chosen], iou[:, chosen]

    def predict_all(self, image_embeddings: Tensor, image_pe: Tensor, sparse: Tensor,
                    dense: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and IoU estimates for all ``num_mask_tokens`` outputs."""
        batch = sparse.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([output_tokens.expand(batch, -1, -1), sparse], dim=1)
        if image_embeddings.shape[0] != batch:
            image_embeddings = image_embeddings.expand(batch, -1, -1, -1)
        src = image_embeddings + dense
        pos = image_pe.expand(batch, -1, -1, -1)
        _, channels, height, width = src.shape
        hidden, src = self.transformer(src, pos, tokens)
        iou_out = hidden[:, 0]
        mask_out = hidden[:, 1 : 1 + self.num_mask_tokens]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(batch, channels, height, width))
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        masks = (hyper @ upscaled.flatten(2)).reshape(batch, -1, *upscaled.shape[-2:])
        return masks, self.iou_prediction_head(iou_out)
