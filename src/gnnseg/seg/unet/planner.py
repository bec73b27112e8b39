"""Fingerprint -> plans: nnU-Net v2's rules for spacing, topology, patch and batch size (the result is read as
:class:`~gnnseg.seg.unet.plans.Plans`).

Follows the default planner of nnU-Net v2 (Isensee et al., Nature Methods 2021, and the v2 code:
``ExperimentPlanner`` in ``default_experiment_planner.py`` and ``get_pool_and_conv_props`` in
``network_topology.py``), rewritten here:

* **Target spacing**: the median spacing per axis. If one axis is much coarser (spacing > 3x the others)
  *and* has far fewer voxels (3x fewer than the others), take the 10th percentile of that axis's spacings
  instead, but never finer than the other axes.
* **Axis order**: the coarsest axis goes first (``transpose_forward``).
* **Topology**: pool an axis while its feature map stays >= 8 (so the bottleneck edge is >= 4), and
  only while its current spacing is within 2x of the finest axis (anisotropic data first pools in-plane).
  Convolution kernels are 3 on an axis once it is within 2x of the finest spacing, else 1. The patch is
  padded to a multiple of ``2 ** pools`` per axis.
* **Patch size**: start from a 256^3 (3D) / 2048^2 (2D) volume shaped like ``1 / spacing``, clip to the
  median image shape, then shrink the axis that is largest relative to the median shape until the
  estimated activation memory fits the budget.
* **Batch size**: what the budget allows, at least 2, and at most 5% of the dataset's voxels per batch.
* **Features**: 32 doubling per stage, capped at 320 (3D) / 512 (2D); two convs per stage; instance norm.
  (``base_features`` changes the 32, for CPUs.)
* **Normalisation**: channels named CT get CT normalisation (clip to the foreground 0.5/99.5 percentiles,
  then the foreground mean and std); all others a per-case z-score, restricted to the nonzero region when
  cropping removed more than a quarter of the median image.

**Memory budget.** nnU-Net calibrates a reference count of activation elements (560e6 in 3D, 85e6 in
2D) to 8 GB of GPU memory at batch 2 / 12 with mixed precision. ``device="gpu"`` scales that reference by
``memory_gb / 8``, exactly as nnU-Net does. ``device="cpu"`` trains in float32, whose activations take twice
the bytes, so the reference is scaled by ``memory_gb / 8 / 2``: pass the RAM you want training to use.

**Presets** (``planner=``, :mod:`gnnseg.seg.unet.planner_presets`): ``"default"`` is the planner above;
``"resenc_m"``, ``"resenc_l"`` and ``"resenc_xl"`` are nnU-Net's Residual Encoder planners (8, 24 and 40 GB
references, a ResidualEncoderUNet whose size is estimated instead of the plain U-Net's, no 5 % batch cap). Their
configurations also carry nnU-Net's ``architecture`` entry; ``memory_gb`` defaults to the preset's reference and
scales it as above.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from gnnseg.seg.io.dataset_labels import DatasetLabels
from gnnseg.seg.unet.fingerprint import Fingerprint
from gnnseg.seg.unet.network import features_per_stage
from gnnseg.seg.unet.planner_presets import (
    ENCODER_BLOCKS_PER_STAGE,
    PRESETS,
    PlannerPreset,
    preset_named,
    residual_encoder_architecture,
    residual_encoder_unet_elements,
)
from gnnseg.seg.unet.plans import PLANS_VERSION, Plans
from gnnseg.seg.unet.resampling import ANISOTROPY_THRESHOLD

FEATUREMAP_MIN_EDGE = 4
REFERENCE_BATCH = {2: 12, 3: 2}
MIN_BATCH_SIZE = 2
CONVS_PER_STAGE = 2


# ------------------------------------------------------------------------------------------------- spacing
def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Median spacing, with the anisotropy rule for one much coarser, much shorter axis."""
    target = np.percentile(spacings, 50, axis=0)
    median_shape = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [axis for axis in range(len(target)) if axis != worst]
    coarse = target[worst] > ANISOTROPY_THRESHOLD * max(target[others])
    short = median_shape[worst] * ANISOTROPY_THRESHOLD < min(median_shape[others])
    if coarse and short:
        candidate = float(np.percentile(spacings[:, worst], 10))
        if candidate < max(target[others]):
            candidate = max(target[others]) + 1e-5
        target[worst] = candidate
    return target


def resampled_shape(shape, spacing, new_spacing) -> np.ndarray:
    """``round(shape * spacing / new_spacing)`` per axis."""
    return np.round(np.asarray(spacing, float) / np.asarray(new_spacing, float) * np.asarray(shape, float)).astype(int)


# ------------------------------------------------------------------------------------------------ topology
def pad_to_multiple(shape, divisor) -> np.ndarray:
    shape, divisor = np.asarray(shape, int), np.asarray(divisor, int)
    return ((shape + divisor - 1) // divisor) * divisor


def pooling_and_kernels(spacing, patch_size, min_edge: int = FEATUREMAP_MIN_EDGE) -> dict[str, Any]:
    """Strides and kernel sizes per stage for ``patch_size`` at ``spacing`` (nnU-Net's topology rules).

    Returns ``strides`` (stage 0 is all ones), ``kernel_sizes`` (one per stage, bottleneck included),
    ``pools_per_axis``, ``divisor`` (``2 ** pools`` per axis) and the ``patch_size`` padded to it.
    """
    dims = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [float(s) for s in patch_size]
    strides = [[1] * dims]
    kernel_sizes: list[list[int]] = []
    pools = [0] * dims
    kernel = [1] * dims
    while True:
        poolable = [a for a in range(dims) if current_size[a] >= 2 * min_edge]
        if not poolable:
            break
        finest = min(current_spacing[a] for a in poolable)
        poolable = [a for a in poolable if current_spacing[a] / finest < 2]
        if len(poolable) == 1 and current_size[poolable[0]] < 3 * min_edge:
            break
        if not poolable:
            break
        for axis in range(dims):
            if kernel[axis] != 3 and current_spacing[axis] / min(current_spacing) < 2:
                kernel[axis] = 3
        stride = [2 if axis in poolable else 1 for axis in range(dims)]
        for axis in poolable:
            pools[axis] += 1
            current_spacing[axis] *= 2
            current_size[axis] = np.ceil(current_size[axis] / 2)
        strides.append(stride)
        kernel_sizes.append(list(kernel))
    kernel_sizes.append([3] * dims)  # the bottleneck always uses 3^d convolutions
    divisor = [2 ** p for p in pools]
    return {"strides": strides, "kernel_sizes": kernel_sizes, "pools_per_axis": pools, "divisor": divisor,
            "patch_size": [int(v) for v in pad_to_multiple(patch_size, divisor)]}


def activation_elements(patch_size, strides, features, num_classes: int,
                        convs_per_stage: int = CONVS_PER_STAGE) -> int:
    """Number of feature-map elements the U-Net's convolutions produce for one patch (one sample).

    Counts every conv output in the encoder and decoder, each transposed conv output and each deep
    supervision head, the quantity nnU-Net compares against its reference.
    """
    size = np.asarray(patch_size, np.int64)
    total = np.int64(0)
    skip_sizes = []
    for stage, stride in enumerate(strides):
        size = size // np.asarray(stride, np.int64)
        total += convs_per_stage * features[stage] * np.prod(size)
        if stage < len(strides) - 1:
            skip_sizes.append(size.copy())
    for level in range(len(skip_sizes) - 1, -1, -1):
        voxels = np.prod(skip_sizes[level])
        total += convs_per_stage * features[level] * voxels   # decoder convs
        total += features[level] * voxels                       # transposed conv output
        total += num_classes * voxels                           # segmentation head (deep supervision)
    return int(total)


def plan_configuration(spacing, median_shape, *, num_channels: int, num_classes: int, dataset_voxels: float,
                       reference: float, base_features: int = 32,
                       preset: PlannerPreset = PRESETS["default"]) -> dict[str, Any]:
    """One configuration (2D or 3D) as its plans entry: patch size, batch size, network kwargs (and, for the ResEnc
    presets, nnU-Net's ``architecture``)."""
    dims = len(spacing)
    spacing = np.asarray(spacing, float)
    median_shape = np.asarray(median_shape, float)[:dims]
    inverse = 1.0 / spacing
    side = 256 if dims == 3 else 2048
    initial = np.round(inverse * (side ** dims / np.prod(inverse)) ** (1 / dims))
    patch = np.minimum(initial, median_shape).astype(int)
    topology = pooling_and_kernels(spacing, patch)
    patch = topology["patch_size"]

    def estimate(topo) -> int:
        feats = features_per_stage(len(topo["strides"]), dims=dims, base=base_features)
        if preset.is_residual_encoder:
            stages = len(topo["strides"])
            return residual_encoder_unet_elements(topo["patch_size"], topo["strides"], feats,
                                                  ENCODER_BLOCKS_PER_STAGE[:stages],
                                                  [preset.decoder_convs_per_stage] * (stages - 1), num_classes)
        return activation_elements(topo["patch_size"], topo["strides"], feats, num_classes)

    reference_batch = REFERENCE_BATCH[dims]
    elements = estimate(topology)
    while preset.exceeds(elements, reference, reference_batch):
        axis = int(np.argsort([p / m for p, m in zip(patch, median_shape)])[-1])
        trial = list(patch)
        trial[axis] -= topology["divisor"][axis]
        step = pooling_and_kernels(spacing, trial)["divisor"][axis]
        patch = list(patch)
        patch[axis] -= step
        topology = pooling_and_kernels(spacing, patch)
        patch = topology["patch_size"]
        elements = estimate(topology)

    if len(topology["strides"]) < 2:
        raise ValueError(f"the memory budget leaves a {patch} patch with a single resolution stage, too small for a "
                         f"U-Net; raise memory_gb (images of median shape {median_shape.astype(int).tolist()})")
    batch = round(reference / elements * reference_batch)
    dataset_cap = round(dataset_voxels * preset.max_dataset_fraction / float(np.prod(patch, dtype=np.float64)))
    batch = max(min(batch, dataset_cap), MIN_BATCH_SIZE)
    features = features_per_stage(len(topology["strides"]), dims=dims, base=base_features)
    configuration = {
        "spacing": [float(s) for s in spacing],
        "median_image_size_in_voxels": [float(s) for s in median_shape],
        "patch_size": [int(p) for p in patch],
        "batch_size": int(batch),
        "estimated_activation_elements": elements,
        "network": {
            "dims": dims,
            "features_per_stage": features,
            "kernel_sizes": topology["kernel_sizes"],
            "strides": topology["strides"],
            "convs_per_stage": preset.decoder_convs_per_stage if preset.is_residual_encoder else CONVS_PER_STAGE,
        },
    }
    if preset.is_residual_encoder:
        configuration["architecture"] = residual_encoder_architecture(
            dims, features, topology["kernel_sizes"], topology["strides"], preset.decoder_convs_per_stage)
    return configuration


def normalization_schemes(fingerprint: Fingerprint) -> tuple[list[str], list[bool]]:
    schemes = ["ct" if name.strip().lower() == "ct" else "zscore" for name in fingerprint.channel_names.values()]
    crop_matters = fingerprint.median_relative_size_after_cropping < 0.75
    return schemes, [crop_matters and scheme == "zscore" for scheme in schemes]


def plan_experiment(fingerprint: Fingerprint, *, memory_gb: float | None = None,
                    device: Literal["gpu", "cpu"] = "gpu", base_features: int = 32, planner: str = "default") -> Plans:
    """Derive the plans from a fingerprint. See the module docstring for the rules.

    ``planner`` names the preset (``"default"``, ``"resenc_m"``, ``"resenc_l"``, ``"resenc_xl"``); ``memory_gb``
    defaults to its reference memory (8, 8, 24, 40 GB). ``base_features`` (nnU-Net: 32) sets the first stage's width;
    halving it makes a CPU epoch about four times cheaper, at some cost in accuracy.
    """
    preset = preset_named(planner)
    if memory_gb is None:
        memory_gb = preset.reference_gb
    if memory_gb <= 0:
        raise ValueError(f"memory_gb must be positive, got {memory_gb}")
    if device not in ("gpu", "cpu"):
        raise ValueError(f"device must be 'gpu' or 'cpu', got {device!r}")
    spacings = np.asarray(fingerprint.spacings, float)
    shapes = np.asarray(fingerprint.shapes_after_crop, float)
    if spacings.ndim != 2 or spacings.shape[1] != 3 or spacings.shape != shapes.shape:
        raise ValueError(f"fingerprint spacings {spacings.shape} and shapes {shapes.shape} must both be (cases, 3)")
    scale = memory_gb / preset.reference_gb / (2.0 if device == "cpu" else 1.0)

    spacing = target_spacing(spacings, shapes)
    coarsest = int(np.argmax(spacing))
    transpose_forward = [coarsest] + [a for a in range(3) if a != coarsest]
    transpose_backward = [int(np.argwhere(np.array(transpose_forward) == a)[0][0]) for a in range(3)]
    new_shapes = np.array([resampled_shape(s, sp, spacing) for s, sp in zip(shapes, spacings)])
    median_shape = np.median(new_shapes, axis=0)[transpose_forward]
    spacing_t = spacing[transpose_forward]
    dataset_voxels = float(np.prod(median_shape, dtype=np.float64) * fingerprint.num_training)
    num_channels = len(fingerprint.channel_names)
    num_classes = DatasetLabels.from_json(fingerprint.labels, fingerprint.regions_class_order,
                                          where=f"the fingerprint of {fingerprint.dataset_name}").num_outputs

    configurations = {}
    if not fingerprint.is_2d and median_shape[0] != 1:
        configurations["3d_fullres"] = plan_configuration(
            spacing_t, median_shape, num_channels=num_channels, num_classes=num_classes,
            dataset_voxels=dataset_voxels, reference=preset.reference_elements[3] * scale,
            base_features=base_features, preset=preset)
    configurations["2d"] = plan_configuration(
        spacing_t[1:], median_shape[1:], num_channels=num_channels, num_classes=num_classes,
        dataset_voxels=dataset_voxels, reference=preset.reference_elements[2] * scale,
        base_features=base_features, preset=preset)

    schemes, use_mask = normalization_schemes(fingerprint)
    return Plans.from_json({
        "format": PLANS_VERSION,
        "dataset_name": fingerprint.dataset_name,
        "memory_budget": {"device": device, "memory_gb": memory_gb, "base_features": base_features},
        "channel_names": fingerprint.channel_names,
        "labels": fingerprint.labels,
        "axis_codes": fingerprint.axis_codes,
        "transpose_forward": transpose_forward,
        "transpose_backward": transpose_backward,
        "original_median_spacing_after_transp": [float(v) for v in np.median(spacings, 0)[transpose_forward]],
        "original_median_shape_after_transp": [int(round(v)) for v in np.median(shapes, 0)[transpose_forward]],
        "normalization_schemes": schemes,
        "use_mask_for_norm": use_mask,
        "foreground_intensity_properties_per_channel": fingerprint.foreground_intensity_properties_per_channel,
        "resampling": {"image_order": 3, "label_order": 1, "anisotropic_axis_order": 0},
        "configurations": configurations,
        **({} if preset.name == "default" else {"plans_name": preset.plans_name}),
        **({} if fingerprint.regions_class_order is None else
           {"regions_class_order": list(fingerprint.regions_class_order)}),
    }, source=f"the plans of {fingerprint.dataset_name}")
