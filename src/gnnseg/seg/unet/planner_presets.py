"""The planner presets: nnU-Net v2's default planner and its Residual Encoder (ResEnc) M / L / XL planners.

nnU-Net Revisited (Isensee et al., MICCAI 2024) made the ResEnc presets nnU-Net's recommended default. They plan with
the same spacing, topology and patch rules as the default planner (:mod:`gnnseg.seg.unet.planner`) and differ in four
numbers and one network:

* **Network**: ``dynamic_network_architectures``' ``ResidualEncoderUNet``: a stem conv, then per stage ``1, 3, 4, 6,
  6, 6, ...`` ResNet-D basic blocks (two convs each), and a decoder of one conv per level (the default: a plain U-Net
  of two convs per stage and level). :mod:`gnnseg.seg.unet.nnunet_networks` builds it.
* **Memory estimate**: the feature-map elements of that network for one patch
  (:func:`residual_encoder_unet_elements`), compared with the reference *as is*; the default planner compares
  ``elements / reference_batch * 2``, i.e. asks for batch 2 (3D) / 12 (2D) at the reference.
* **Reference**: activation elements that fit the preset's GPU memory at batch 2 (3D) / 12 (2D): M 680e6 / 135e6 at
  8 GB, L 2.1e9 / 380e6 at 24 GB, XL 3.6e9 / 560e6 at 40 GB (default 560e6 / 85e6 at 8 GB). A budget of
  ``memory_gb`` scales it by ``memory_gb / reference_gb``.
* **Dataset coverage**: a batch may cover the whole dataset (the default caps it at 5 % of the dataset's voxels).

The plans name (``nnUNetResEncUNetMPlans``, ...) is nnU-Net's identifier of the preset's plans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RESIDUAL_ENCODER_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
ENCODER_BLOCKS_PER_STAGE = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)
"""ResEnc's residual blocks per encoder stage (stage 0 first); a network takes as many entries as it has stages."""


@dataclass(frozen=True)
class PlannerPreset:
    """One planner: its network, memory reference and batch rules (see the module docstring)."""

    name: str                                  # what ``plan_experiment(planner=...)`` and the CLI call it
    plans_name: str                            # nnU-Net's plans identifier
    network_class_name: str | None             # None: gnnseg's plain U-Net (nnU-Net's PlainConvUNet)
    reference_elements: dict[int, int]         # per dims: activation elements that fit reference_gb
    reference_gb: float                        # the GPU memory the reference was measured for; the default budget
    max_dataset_fraction: float                # a batch's patches cover at most this share of the dataset's voxels
    batch_of_two_at_reference: bool            # the default planner's estimate / reference_batch * 2 comparison
    decoder_convs_per_stage: int = 1           # ResEnc's decoder; the default planner's U-Net has its own

    @property
    def is_residual_encoder(self) -> bool:
        return self.network_class_name == RESIDUAL_ENCODER_UNET

    def exceeds(self, elements: int, reference: float, reference_batch: int) -> bool:
        """Whether a network of ``elements`` activation elements is too large for ``reference`` (the patch shrinks)."""
        if self.batch_of_two_at_reference:
            return elements / reference_batch * 2 > reference
        return elements > reference


def _resenc(name: str, plans_name: str, elements_3d: int, elements_2d: int, gb: float) -> PlannerPreset:
    return PlannerPreset(name=name, plans_name=plans_name, network_class_name=RESIDUAL_ENCODER_UNET,
                         reference_elements={3: elements_3d, 2: elements_2d}, reference_gb=gb,
                         max_dataset_fraction=1.0, batch_of_two_at_reference=False)


PRESETS: dict[str, PlannerPreset] = {
    "default": PlannerPreset(name="default", plans_name="nnUNetPlans", network_class_name=None,
                             reference_elements={3: 560_000_000, 2: 85_000_000}, reference_gb=8.0,
                             max_dataset_fraction=0.05, batch_of_two_at_reference=True),
    "resenc_m": _resenc("resenc_m", "nnUNetResEncUNetMPlans", 680_000_000, 135_000_000, 8.0),
    "resenc_l": _resenc("resenc_l", "nnUNetResEncUNetLPlans", 2_100_000_000, 380_000_000, 24.0),
    "resenc_xl": _resenc("resenc_xl", "nnUNetResEncUNetXLPlans", 3_600_000_000, 560_000_000, 40.0),
}
"""The presets by name: nnU-Net's ``ExperimentPlanner``, ``nnUNetPlannerResEncM``, ``...L`` and ``...XL``."""


def preset_named(name: str) -> PlannerPreset:
    """The preset called ``name``; an unknown name is refused with the names there are."""
    if name not in PRESETS:
        raise ValueError(f"unknown planner {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def residual_encoder_unet_elements(patch_size: Sequence[int], strides: Sequence[Sequence[int]],
                                   features: Sequence[int], blocks_per_stage: Sequence[int],
                                   decoder_convs_per_stage: Sequence[int], num_classes: int) -> int:
    """Feature-map elements a ResidualEncoderUNet produces for one patch (no deep supervision), the quantity the ResEnc
    planners compare with their reference.

    Counted: the stem conv at full resolution; per residual block its two convs at the stage's resolution, plus the
    skip's 1x1 conv output where the block strides or changes the width; per decoder level its convs, the transposed
    conv's output and, at full resolution only, the segmentation head. Sizes are floor-divided stage by stage.
    """
    size = [int(v) for v in patch_size]
    total = features[0] * int(np.prod(size, dtype=np.int64))                       # stem (stride 1)
    in_channels = features[0]
    skip_sizes = []
    for stage, stride in enumerate(strides):
        strided = [s // k for s, k in zip(size, stride)]
        voxels = int(np.prod(strided, dtype=np.int64))
        for block in range(blocks_per_stage[stage]):
            total += 2 * features[stage] * voxels                                  # conv1, conv2
            changes = in_channels != features[stage] or (block == 0 and strided != size)
            total += features[stage] * voxels if changes else 0                    # projection skip
            in_channels = features[stage]
        size = strided
        skip_sizes.append(size)
    for level in range(len(strides) - 1):                                          # level 0: above the bottleneck
        skip = len(strides) - 2 - level
        voxels = int(np.prod(skip_sizes[skip], dtype=np.int64))
        total += decoder_convs_per_stage[level] * features[skip] * voxels
        total += features[skip] * voxels                                           # transposed conv
        if skip == 0:
            total += num_classes * voxels                                          # the full-resolution head
    return int(total)


def residual_encoder_architecture(dims: int, features: Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                                  strides: Sequence[Sequence[int]], decoder_convs_per_stage: int) -> dict[str, Any]:
    """The configuration's ``architecture`` entry as nnU-Net's ResEnc planners write it (``network_class_name``,
    ``arch_kwargs`` with torch.nn operators by dotted name, ``_kw_requires_import``), which
    :func:`gnnseg.seg.unet.nnunet_networks.build_network` and nnU-Net both build a network from."""
    stages = len(strides)
    conv, norm = ("Conv2d", "InstanceNorm2d") if dims == 2 else ("Conv3d", "InstanceNorm3d")
    return {
        "network_class_name": RESIDUAL_ENCODER_UNET,
        "arch_kwargs": {
            "n_stages": stages,
            "features_per_stage": [int(f) for f in features],
            "conv_op": f"torch.nn.modules.conv.{conv}",
            "kernel_sizes": [[int(k) for k in kernel] for kernel in kernel_sizes],
            "strides": [[int(s) for s in stride] for stride in strides],
            "n_blocks_per_stage": list(ENCODER_BLOCKS_PER_STAGE[:stages]),
            "n_conv_per_stage_decoder": [decoder_convs_per_stage] * (stages - 1),
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.{norm}",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
