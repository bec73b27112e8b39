"""The numbers that define a Segment Anything model, and the registry of named configurations.

Torch-free, so that a process which only runs an exported model (onnxruntime) can read them.

Configurations (:data:`SAM_CONFIGS`): ``vit_b``, ``vit_l``, ``vit_h`` are SAM's (Kirillov et al. 2023: 1024 input,
patch 16, window 14, global attention every quarter of the depth); MedSAM (Ma et al. 2024) is ``vit_b`` with
min-max input instead of ImageNet normalisation. ``vit_cpu`` is a small model that trains on a 2-core CPU (the model
shipped with gnnseg); ``vit_mini`` is for tests. ``lite_medsam`` is Lite MedSAM (MobileSAM's TinyViT at 256 input,
longest side resized and padded, min-max input; :mod:`gnnseg.seg.sam.modeling.tiny_vit`); ``lite_medsam_fast`` is a
lighter TinyViT for CPUs (stride-4 stem, every stage at the 64 x 64 grid, fewer blocks), distilled from the Lite
model; ``mobile_sam`` is MobileSAM's ``vit_t`` and ``tiny_vit_mini`` a TinyViT for tests. ``vit_teacher_256`` is a
ViT with Lite MedSAM's input and embedding grid (256 in, 64 x 64 out), the teacher that gnnseg's Lite model is
distilled from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

Normalization = Literal["imagenet", "minmax"]
"""``imagenet``: SAM's per-channel mean/std on 0-255 pixels. ``minmax``: MedSAM's rescale of each image to [0, 1]."""
NORMALIZATIONS = ("imagenet", "minmax")
Preprocessing = Literal["gnnseg", "official"]
"""How a Lite MedSAM-style model's input and box are made. ``gnnseg``: the image shrunk by area averaging in floating
point, boxes scaled with their fractions kept. ``official``: as the released LiteMedSAM inference code does it
(``CVPR24_LiteMedSAM_infer.py``): OpenCV's area interpolation on the uint8 image (rounded to uint8), each box
coordinate scaled and truncated to a whole pixel."""
PREPROCESSINGS = ("gnnseg", "official")
EncoderKind = Literal["vit", "tiny_vit"]
ImageLayout = Literal["square", "padded"]


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
    decoder_norm_eps: float = 1e-5
    """The two-way transformer's LayerNorm eps: PyTorch's default, which SAM was trained with; transformers'
    converted SAM configs say 1e-6 (``mask_decoder_config.layer_norm_eps``), and such a model keeps it."""
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
    preprocessing: Preprocessing = "gnnseg"
    """:data:`Preprocessing`; ``official`` only for padded min-max whole-image models (Lite MedSAM's chain)."""

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.preprocessing not in PREPROCESSINGS:
            raise ValueError(f"preprocessing must be one of {PREPROCESSINGS}, got {self.preprocessing!r}")
        if self.preprocessing == "official" and (self.layout != "padded" or self.normalization != "minmax"
                                                 or self.crop_margin is not None):
            raise ValueError("preprocessing 'official' is Lite MedSAM's chain (longest side resized and padded, "
                             "min-max input, whole image); this model has layout "
                             f"{self.layout!r}, normalization {self.normalization!r}, crop_margin {self.crop_margin!r}")

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


def with_input_chain(config: SamConfig, normalization: Normalization | None = None,
                     preprocessing: Preprocessing | None = None) -> SamConfig:
    """The same model with the input normalisation and / or preprocessing given (``None`` keeps the config's)."""
    return replace(config, normalization=normalization or config.normalization,
                   preprocessing=preprocessing or config.preprocessing)
