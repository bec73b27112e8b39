"""The Segment Anything model as a composition of its three parts, and a registry of configurations.

``Sam`` receives its image encoder, prompt encoder and mask decoder through its constructor (as the official
``segment-anything`` code does) and adds only what ties them together: input normalisation, the embedding grid
shared by the prompt encoder and decoder, and mask upscaling. The heavy encoder runs once per image
(:meth:`Sam.encode`); the cheap prompt path runs once per prompt (:meth:`Sam.decode`).

Configurations (:data:`SAM_CONFIGS`): ``vit_b``, ``vit_l``, ``vit_h`` are SAM's (Kirillov et al. 2023: 1024 input,
patch 16, window 14, global attention every quarter of the depth); MedSAM (Ma et al. 2024) is ``vit_b`` with
min-max input instead of ImageNet normalisation. ``vit_cpu`` is a small model that trains on a 2-core CPU (the model
shipped with gnnseg); ``vit_mini`` is for tests. ``lite_medsam`` is Lite MedSAM (MobileSAM's TinyViT at 256 input,
longest side resized and padded, min-max input; :mod:`gnnseg.seg.sam.tiny_vit`); ``lite_medsam_fast`` is a
lighter TinyViT for CPUs (stride-4 stem, every stage at the 64 x 64 grid, fewer blocks), distilled from the Lite
model; ``mobile_sam`` is MobileSAM's
``vit_t`` and ``tiny_vit_mini`` a TinyViT for tests. ``vit_teacher_256`` is a ViT with Lite MedSAM's input and
embedding grid (256 in, 64 x 64 out), the teacher that gnnseg's Lite model is distilled from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gnnseg.seg.sam.image_encoder import ImageEncoderViT
from gnnseg.seg.sam.mask_decoder import MaskDecoder
from gnnseg.seg.sam.prompt_encoder import PromptEncoder
from gnnseg.seg.sam.tiny_vit import TinyViT
from gnnseg.seg.sam.transformer import TwoWayTransformer

Normalization = Literal["imagenet", "minmax"]
"""``imagenet``: SAM's per-channel mean/std on 0-255 pixels. ``minmax``: MedSAM's rescale of each image to [0, 1]."""
EncoderKind = Literal["vit", "tiny_vit"]
ImageLayout = Literal["square", "padded"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def imagenet_normalize(pixels: Tensor) -> Tensor:
    """``(B, 3, H, W)`` pixels in 0..255 -> SAM's input: ImageNet mean and standard deviation per channel."""
    mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=pixels.device).view(-1, 1, 1)
    return (pixels - mean) / std


@dataclass(frozen=True)
class SamConfig:
    """Every number needed to build a ``Sam``; stored in gnnseg checkpoints so they rebuild themselves."""

    image_size: int = 1024
    patch_size: int = 16
    """Total stride from the input to the embedding grid (the ViT's patch; TinyViT's stem and mergings together)."""
    encoder: EncoderKind = "vit"
    encoder_dim: int = 768
    encoder_depth: int = 12
    encoder_heads: int = 12
    global_attention: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    stage_dims: tuple[int, ...] = (64, 128, 160, 320)
    """TinyViT only: channels, blocks, heads and attention windows of its four stages (MobileSAM's ``vit_t``)."""
    stage_depths: tuple[int, ...] = (2, 2, 6, 2)
    stage_heads: tuple[int, ...] = (2, 4, 5, 10)
    stage_windows: tuple[int, ...] = (7, 7, 14, 7)
    merge_strides: tuple[int, ...] = (2, 2, 1)
    """TinyViT only: strides of the three patch mergings; the stem takes the rest of ``patch_size``."""
    prompt_dim: int = 256
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden: int = 256
    mask_in_chans: int = 16
    normalization: Normalization = "imagenet"
    crop_margin: float | None = None
    """Where set, the model sees the box's neighbourhood instead of the whole image: a square crop around the box,
    ``crop_margin`` box sizes wide on each side, resized to ``image_size`` (how the small CPU model keeps its
    resolution on small objects). ``None``: the whole image, as SAM and MedSAM do."""
    image_layout: ImageLayout | None = None
    """How a whole image becomes the square input: ``square`` resizes it to ``S x S`` (MedSAM), ``padded`` resizes its
    longest side to ``S`` and zero-pads (SAM, Lite MedSAM). ``None``: ``square`` for min-max models, else
    ``padded``."""

    @property
    def layout(self) -> ImageLayout:
        if self.image_layout is not None:
            return self.image_layout
        return "square" if self.normalization == "minmax" else "padded"

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SamConfig:
        known = {name for name in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SAM config fields {unknown}")
        values = {key: tuple(value) if key in _TUPLE_FIELDS else value for key, value in values.items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if key in _TUPLE_FIELDS else value for key, value in asdict(self).items()}


_TUPLE_FIELDS = ("global_attention", "stage_dims", "stage_depths", "stage_heads", "stage_windows", "merge_strides")


SAM_CONFIGS: dict[str, SamConfig] = {
    "vit_b": SamConfig(),
    "vit_l": SamConfig(encoder_dim=1024, encoder_depth=24, encoder_heads=16, global_attention=(5, 11, 17, 23)),
    "vit_h": SamConfig(encoder_dim=1280, encoder_depth=32, encoder_heads=16, global_attention=(7, 15, 23, 31)),
    "medsam_vit_b": SamConfig(normalization="minmax"),
    "vit_cpu": SamConfig(image_size=128, patch_size=8, encoder_dim=192, encoder_depth=6, encoder_heads=6,
                         global_attention=(2, 5), window_size=8, prompt_dim=128, decoder_heads=4,
                         decoder_mlp_dim=512, iou_head_hidden=128, normalization="minmax", crop_margin=0.25),
    "vit_mini": SamConfig(image_size=64, patch_size=8, encoder_dim=32, encoder_depth=2, encoder_heads=2,
                          global_attention=(1,), window_size=4, prompt_dim=32, decoder_heads=2, decoder_mlp_dim=64,
                          iou_head_hidden=32, normalization="minmax"),
    "vit_teacher_256": SamConfig(image_size=256, patch_size=4, encoder_dim=320, encoder_depth=8, encoder_heads=8,
                                 global_attention=(3, 7), window_size=16, normalization="minmax",
                                 image_layout="padded"),
    "lite_medsam": SamConfig(image_size=256, patch_size=4, encoder="tiny_vit", normalization="minmax",
                             image_layout="padded"),
    "lite_medsam_fast": SamConfig(image_size=256, patch_size=4, encoder="tiny_vit", stage_dims=(64, 128, 160, 256),
                                  stage_depths=(1, 2, 2, 1), stage_heads=(2, 4, 5, 8), merge_strides=(1, 1, 1),
                                  normalization="minmax", image_layout="padded"),
    "mobile_sam": SamConfig(patch_size=16, encoder="tiny_vit"),
    "tiny_vit_mini": SamConfig(image_size=64, patch_size=4, encoder="tiny_vit", stage_dims=(16, 32, 32, 48),
                               stage_depths=(1, 1, 1, 1), stage_heads=(1, 2, 2, 3), stage_windows=(4, 4, 4, 4),
                               prompt_dim=32, decoder_heads=2, decoder_mlp_dim=64, iou_head_hidden=32,
                               normalization="minmax", image_layout="padded"),
}


class SamGlue:
    """What ties an encoder and a decoder to images: input normalisation and mask upscaling, for any object with a
    ``config`` (the PyTorch :class:`Sam` and the onnxruntime ``OnnxSam`` alike)."""

    config: SamConfig

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def normalize(self, pixels: Tensor) -> Tensor:
        """``(B, 3, S, S)`` pixels in 0..255 -> the encoder's input under the configured normalisation."""
        if self.config.normalization == "imagenet":
            return imagenet_normalize(pixels)
        low = pixels.amin(dim=(1, 2, 3), keepdim=True)
        high = pixels.amax(dim=(1, 2, 3), keepdim=True)
        return (pixels - low) / (high - low).clamp_min(1e-8)

    def upscale(self, low_res: Tensor, input_hw: tuple[int, int], original_hw: tuple[int, int]) -> Tensor:
        """Low-resolution logits -> logits at the original image size (SAM's ``postprocess_masks``).

        Bilinear to the model's input size, crop away padding to ``input_hw``, bilinear to ``original_hw``.
        """
        logits = F.interpolate(low_res, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        logits = logits[..., : input_hw[0], : input_hw[1]]
        return F.interpolate(logits, original_hw, mode="bilinear", align_corners=False)


class Sam(SamGlue, nn.Module):
    """Image encoder + prompt encoder + mask decoder, and the glue between them."""

    def __init__(self, image_encoder: ImageEncoderViT | TinyViT, prompt_encoder: PromptEncoder,
                 mask_decoder: MaskDecoder, config: SamConfig) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.config = config

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
        return self.mask_decoder(embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask)


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
                                    num_heads=config.decoder_heads, mlp_dim=config.decoder_mlp_dim)
    decoder = MaskDecoder(transformer_dim=config.prompt_dim, transformer=transformer,
                          iou_head_hidden_dim=config.iou_head_hidden)
    return Sam(encoder, prompt_encoder, decoder, config).eval()


def with_normalization(config: SamConfig, normalization: Normalization) -> SamConfig:
    """The same architecture with another input normalisation (SAM's vs MedSAM's)."""
    if normalization not in ("imagenet", "minmax"):
        raise ValueError(f"normalization must be 'imagenet' or 'minmax', got {normalization!r}")
    return replace(config, normalization=normalization)
