"""SAM's mask decoder: output tokens read the image through the two-way transformer and become masks.

An IoU token and ``1 + multimask`` mask tokens are prepended to the prompt tokens. After the transformer, the image
tokens are upscaled 4x by two transposed convs (to ``D/8`` channels); each mask token passes through its own 3-layer
MLP (a hypernetwork) to a ``D/8`` vector whose dot product with every upscaled pixel is that mask's logit. The IoU
token predicts each mask's IoU. Mask 0 is the single-mask output; masks 1..3 are the multimask outputs for
ambiguous prompts.

The upscaling runs on the image tokens as they leave the transformer, ``(B, h w, D)``: a stride-2, kernel-2
transposed convolution maps each pixel to its own 2x2 block, and the LayerNorm, GELUs and hypernetwork product act
on each pixel alone, so the stack is two matrix products over the tokens in their original order, and one final
permutation of the logits places each token's 4x4 block. The weights are those of ``output_upscaling``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gnnseg.seg.sam.modeling.common import LayerNorm2d, PerceptronStack
from gnnseg.seg.sam.modeling.transformer import TwoWayTransformer


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
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return self.predict_all(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, chosen)

    def predict_all(self, image_embeddings: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor,
                    outputs: slice = slice(None)) -> tuple[Tensor, Tensor]:
        """Logits and IoU estimates of the ``outputs`` among the ``num_mask_tokens`` (all by default).

        Inputs are cast to the decoder's own dtype, so a decoder converted with ``.to(torch.bfloat16)`` runs in
        bfloat16 behind a float32 image and prompt encoder (and returns bfloat16 logits).
        """
        dtype = self.iou_token.weight.dtype
        batch = sparse.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([output_tokens.expand(batch, -1, -1), sparse.to(dtype)], dim=1)
        if image_embeddings.shape[0] == 1 and dense.stride(0) == 0:
            dense = dense[:1]  # the same dense map for every prompt (no mask input): one image for the whole batch
        elif image_embeddings.shape[0] != batch:
            image_embeddings = image_embeddings.expand(batch, -1, -1, -1)
        src = image_embeddings.to(dtype) + dense.to(dtype)
        height, width = src.shape[-2:]
        hidden, src = self.transformer(src, image_pe.to(dtype), tokens)
        mask_out = hidden[:, 1 : 1 + self.num_mask_tokens]
        chosen = range(self.num_mask_tokens)[outputs]
        hyper = torch.stack([self.output_hypernetworks_mlps[i](mask_out[:, i]) for i in chosen], dim=1)
        return self._mask_logits(src, hyper, height, width), self.iou_prediction_head(hidden[:, 0])[:, outputs]

    def _mask_logits(self, tokens: Tensor, hyper: Tensor, height: int, width: int) -> Tensor:
        """``(B, h w, D)`` image tokens and ``(B, M, D/8)`` hypernetwork outputs -> ``(B, M, 4h, 4w)`` logits.

        ``output_upscaling`` holds the layers (and the checkpoint keys); they are applied here in token order, its
        two GELUs as ``F.gelu``, so a change to that Sequential must be mirrored here.
        """
        first, norm, _, second, _ = self.output_upscaling
        batch, masks = tokens.shape[0], hyper.shape[1]
        # each token's 2 x 2 block, channels last; the biases join the products (one pass instead of two)
        x = F.linear(tokens, _per_subpixel(first.weight), first.bias.repeat(4)).reshape(batch, -1, first.out_channels)
        x = F.gelu(F.layer_norm(x, (norm.channels,), norm.weight, norm.bias, norm.eps))
        x = F.linear(x, _per_subpixel(second.weight), second.bias.repeat(4))
        x = F.gelu(x.reshape(batch, -1, second.out_channels))  # (B, h w 16, D/8): tokens in (i, j, a, c, a', c')
        logits = (x @ hyper.transpose(1, 2)).reshape(batch, height, width, 2, 2, 2, 2, masks)
        # pixel (4i + 2a + a', 4j + 2c + c')
        return logits.permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(batch, masks, 4 * height, 4 * width)


def _per_subpixel(weight: Tensor) -> Tensor:
    """A kernel-2 transposed convolution's ``(in, out, 2, 2)`` weight as a linear layer's ``(4 out, in)`` weight, its
    outputs in (row, column, channel) order."""
    return weight.permute(2, 3, 1, 0).flatten(0, 2)
