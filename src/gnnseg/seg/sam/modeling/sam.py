"""The Segment Anything model as a composition of its three parts.

``Sam`` receives its image encoder, prompt encoder and mask decoder through its constructor (as the official
``segment-anything`` code does) and adds only what ties them together: input normalisation, the embedding grid
shared by the prompt encoder and decoder. The heavy encoder runs once per image
(:meth:`Sam.encode`); the cheap prompt path runs once per prompt (:meth:`Sam.decode`). The configurations live in
:mod:`gnnseg.seg.sam.modeling.config`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gnnseg.seg.io.intensity import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD
from gnnseg.seg.sam.modeling.config import (
    SAM_CONFIGS,
    Normalization,
    SamConfig,
    with_input_chain,
)
from gnnseg.seg.sam.modeling.image_encoder import ImageEncoderViT
from gnnseg.seg.sam.modeling.mask_decoder import MaskDecoder
from gnnseg.seg.sam.modeling.prompt_encoder import PromptEncoder
from gnnseg.seg.sam.modeling.tiny_vit import TinyViT
from gnnseg.seg.sam.modeling.transformer import TwoWayTransformer

__all__ = ["SAM_CONFIGS", "Normalization", "Sam", "SamConfig", "build_sam", "imagenet_normalize",
           "with_input_chain"]


def imagenet_normalize(pixels: Tensor) -> Tensor:
    """``(B, 3, H, W)`` pixels in 0..255 -> SAM's input: ImageNet mean and standard deviation per channel."""
    mean = torch.tensor(IMAGENET_PIXEL_MEAN, device=pixels.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_PIXEL_STD, device=pixels.device).view(-1, 1, 1)
    return (pixels - mean) / std


class Sam(nn.Module):
    """Image encoder + prompt encoder + mask decoder, and the input normalisation that feeds them (mask upscaling is
    :func:`gnnseg.seg.sam.inference.prediction.whole_image_masks`, shared with the ONNX runtime)."""

    def __init__(self, image_encoder: ImageEncoderViT | TinyViT, prompt_encoder: PromptEncoder,
                 mask_decoder: MaskDecoder, config: SamConfig) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.config = config

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def decoder_dtype(self) -> torch.dtype:
        """The mask decoder's dtype: ``model.mask_decoder.to(torch.bfloat16)`` halves a box's cost on CPUs with
        bfloat16 instructions (AVX512-BF16, AMX) while the encoder stays in float32."""
        return self.mask_decoder.iou_token.weight.dtype

    def normalize(self, pixels: Tensor) -> Tensor:
        """``(B, 3, S, S)`` pixels in 0..255 -> the encoder's input under the configured normalisation."""
        if self.config.normalization == "imagenet":
            return imagenet_normalize(pixels)
        low = pixels.amin(dim=(1, 2, 3), keepdim=True)
        high = pixels.amax(dim=(1, 2, 3), keepdim=True)
        return (pixels - low) / (high - low).clamp_min(1e-8)

    def encode(self, images: Tensor) -> Tensor:
        """``(B, 3, S, S)`` encoder input (already normalised) -> ``(B, prompt_dim, S/p, S/p)`` embeddings."""
        return self.image_encoder(images)

    def decode(self, embeddings: Tensor, *, points: tuple[Tensor, Tensor] | None = None, boxes: Tensor | None = None,
               mask_inputs: Tensor | None = None, multimask: bool = False) -> tuple[Tensor, Tensor]:
        """Prompts in the model's input pixel grid -> ``(B, M, 4h, 4w)`` low-resolution logits, ``(B, M)`` IoU.

        ``embeddings`` is ``(1, D, h, w)`` (one image, many prompts) or ``(B, D, h, w)`` (one image per prompt).
        ``M`` is 3 with ``multimask`` and 1 without.
        """
        sparse, dense = self.prompt_encoder(points, boxes, mask_inputs)
        return self.mask_decoder(embeddings, self.prompt_encoder.get_dense_pe(self.decoder_dtype), sparse, dense,
                                 multimask)


def build_sam(config: SamConfig | str) -> Sam:
    """Build an untrained model from a config or a registry name (see :data:`SAM_CONFIGS`)."""
    if isinstance(config, str):
        if config not in SAM_CONFIGS:
            raise ValueError(f"unknown SAM model {config!r}; choose one of {sorted(SAM_CONFIGS)}")
        config = SAM_CONFIGS[config]
    grid = config.embedding_size
    if config.encoder == "tiny_vit":
        encoder = TinyViT(img_size=config.image_size, patch_size=config.patch_size, embed_dims=config.stage_dims,
                          depths=config.stage_depths, num_heads=config.stage_heads,
                          window_sizes=config.stage_windows, merge_strides=config.merge_strides,
                          out_chans=config.prompt_dim)
    elif config.encoder == "vit":
        encoder = ImageEncoderViT(
            img_size=config.image_size, patch_size=config.patch_size, embed_dim=config.encoder_dim,
            depth=config.encoder_depth, num_heads=config.encoder_heads, out_chans=config.prompt_dim,
            window_size=config.window_size, global_attn_indexes=config.global_attention,
        )
    else:
        raise ValueError(f"unknown image encoder {config.encoder!r}; choose 'vit' or 'tiny_vit'")
    prompt_encoder = PromptEncoder(embed_dim=config.prompt_dim, image_embedding_size=(grid, grid),
                                   input_image_size=(config.image_size, config.image_size),
                                   mask_in_chans=config.mask_in_chans)
    transformer = TwoWayTransformer(depth=config.decoder_depth, embedding_dim=config.prompt_dim,
                                    num_heads=config.decoder_heads, mlp_dim=config.decoder_mlp_dim,
                                    norm_eps=config.decoder_norm_eps)
    decoder = MaskDecoder(transformer_dim=config.prompt_dim, transformer=transformer,
                          iou_head_hidden_dim=config.iou_head_hidden)
    return Sam(encoder, prompt_encoder, decoder, config).eval()
