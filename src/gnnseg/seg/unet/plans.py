"""Fingerprint -> plans: nnU-Net v2's rules for spacing, topology, patch and batch size.

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

**Reading plans.** ``plans.json`` keeps nnU-Net v2's layout and key names; code reads it through the frozen views
:class:`Plans` and :class:`Configuration` (nnU-Net's ``PlansManager`` / ``ConfigurationManager``, as plain data), whose
field names are the file's keys. :meth:`Plans.from_json` checks the document once (its format version, then every
object's keys, naming the file and what is missing or unknown) and :meth:`Plans.to_json` gives the same document
back, so a plans file, the copy a run keeps and a checkpoint's plans all round-trip unchanged.

**Memory budget.** nnU-Net calibrates a reference count of activation elements (560e6 in 3D, 85e6 in
2D) to 8 GB of GPU memory at batch 2 / 12 with mixed precision. ``device="gpu"`` scales that reference by
``memory_gb / 8``, exactly as nnU-Net does. ``device="cpu"`` trains in float32, whose activations take twice
the bytes, so the reference is scaled by ``memory_gb / 8 / 2``: pass the RAM you want training to use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gnnseg.core.runs import write_json
from gnnseg.seg.unet.fingerprint import Fingerprint
from gnnseg.seg.unet.network import features_per_stage
from gnnseg.seg.unet.resampling import ANISOTROPY_THRESHOLD

FEATUREMAP_MIN_EDGE = 4
REFERENCE_ELEMENTS = {2: 85_000_000, 3: 560_000_000}
REFERENCE_BATCH = {2: 12, 3: 2}
REFERENCE_GB = 8.0
MIN_BATCH_SIZE = 2
MAX_DATASET_FRACTION_PER_BATCH = 0.05
CONVS_PER_STAGE = 2
PLANS_VERSION = "gnnseg.plans/1"


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
                       reference: float, base_features: int = 32) -> dict[str, Any]:
    """One configuration (2D or 3D) as its plans entry: patch size, batch size, network kwargs."""
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
        return activation_elements(topo["patch_size"], topo["strides"], feats, num_classes)

    reference_batch = REFERENCE_BATCH[dims]
    elements = estimate(topology)
    while elements / reference_batch * 2 > reference:
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
    five_percent = round(dataset_voxels * MAX_DATASET_FRACTION_PER_BATCH / float(np.prod(patch, dtype=np.float64)))
    batch = max(min(batch, five_percent), MIN_BATCH_SIZE)
    return {
        "spacing": [float(s) for s in spacing],
        "median_image_size_in_voxels": [float(s) for s in median_shape],
        "patch_size": [int(p) for p in patch],
        "batch_size": int(batch),
        "estimated_activation_elements": elements,
        "network": {
            "dims": dims,
            "features_per_stage": features_per_stage(len(topology["strides"]), dims=dims, base=base_features),
            "kernel_sizes": topology["kernel_sizes"],
            "strides": topology["strides"],
            "convs_per_stage": CONVS_PER_STAGE,
        },
    }


def normalization_schemes(fingerprint: Fingerprint) -> tuple[list[str], list[bool]]:
    schemes = ["ct" if name.strip().lower() == "ct" else "zscore" for name in fingerprint.channel_names.values()]
    crop_matters = fingerprint.median_relative_size_after_cropping < 0.75
    return schemes, [crop_matters and scheme == "zscore" for scheme in schemes]


def plan_experiment(fingerprint: Fingerprint, *, memory_gb: float = REFERENCE_GB,
                    device: Literal["gpu", "cpu"] = "gpu", base_features: int = 32) -> Plans:
    """Derive the plans from a fingerprint. See the module docstring for the rules.

    ``base_features`` (nnU-Net: 32) sets the first stage's width; halving it makes a CPU epoch about four
    times cheaper, at some cost in accuracy.
    """
    if memory_gb <= 0:
        raise ValueError(f"memory_gb must be positive, got {memory_gb}")
    if device not in ("gpu", "cpu"):
        raise ValueError(f"device must be 'gpu' or 'cpu', got {device!r}")
    spacings = np.asarray(fingerprint.spacings, float)
    shapes = np.asarray(fingerprint.shapes_after_crop, float)
    if spacings.ndim != 2 or spacings.shape[1] != 3 or spacings.shape != shapes.shape:
        raise ValueError(f"fingerprint spacings {spacings.shape} and shapes {shapes.shape} must both be (cases, 3)")
    scale = memory_gb / REFERENCE_GB / (2.0 if device == "cpu" else 1.0)

    spacing = target_spacing(spacings, shapes)
    coarsest = int(np.argmax(spacing))
    transpose_forward = [coarsest] + [a for a in range(3) if a != coarsest]
    transpose_backward = [int(np.argwhere(np.array(transpose_forward) == a)[0][0]) for a in range(3)]
    new_shapes = np.array([resampled_shape(s, sp, spacing) for s, sp in zip(shapes, spacings)])
    median_shape = np.median(new_shapes, axis=0)[transpose_forward]
    spacing_t = spacing[transpose_forward]
    dataset_voxels = float(np.prod(median_shape, dtype=np.float64) * fingerprint.num_training)
    num_channels, num_classes = len(fingerprint.channel_names), len(fingerprint.labels)

    configurations = {}
    if not fingerprint.is_2d and median_shape[0] != 1:
        configurations["3d_fullres"] = plan_configuration(
            spacing_t, median_shape, num_channels=num_channels, num_classes=num_classes,
            dataset_voxels=dataset_voxels, reference=REFERENCE_ELEMENTS[3] * scale, base_features=base_features)
    configurations["2d"] = plan_configuration(
        spacing_t[1:], median_shape[1:], num_channels=num_channels, num_classes=num_classes,
        dataset_voxels=dataset_voxels, reference=REFERENCE_ELEMENTS[2] * scale, base_features=base_features)

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
    }, source=f"the plans of {fingerprint.dataset_name}")


# ------------------------------------------------------------------------------------------------ reading
def _json_object(document: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(document, Mapping):
        raise ValueError(f"{where} must be a JSON object, not {type(document).__name__}")
    return document


def _fields_of(view: type, document: Any, where: str, optional: tuple[str, ...] = ()) -> Mapping[str, Any]:
    """``document`` if it is a JSON object with a key for every field of the dataclass ``view`` (those in ``optional``
    may be missing) and no other key; else a ``ValueError`` naming ``where`` and the keys."""
    document = _json_object(document, where)
    known = [field.name for field in fields(view)]
    missing = [key for key in known if key not in document and key not in optional]
    unknown = sorted(set(document) - set(known))
    if missing or unknown:
        problems = [f"lacks {', '.join(map(repr, missing))}"] if missing else []
        if unknown:
            problems.append(f"has unknown {', '.join(map(repr, unknown))} (known: {', '.join(known)})")
        raise ValueError(f"{where} {' and '.join(problems)}")
    return document


def as_json(value: Any) -> Any:
    """A view (or a part of one) as the JSON it was read from: dataclasses as objects, tuples as lists."""
    if is_dataclass(value):
        return {field.name: as_json(getattr(value, field.name)) for field in fields(value)}
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [as_json(item) for item in value]
    return value


@dataclass(frozen=True)
class NetworkTopology:
    """One configuration's U-Net, the keyword arguments of :class:`~gnnseg.seg.unet.network.UNet` (nnU-Net's
    ``arch_kwargs``): one entry per stage, stage 0 at full resolution."""

    dims: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]      # strides[0] is all ones
    convs_per_stage: int

    @property
    def num_stages(self) -> int:
        return len(self.strides)

    @classmethod
    def from_json(cls, document: Any, where: str) -> NetworkTopology:
        network = _fields_of(cls, document, where)
        return cls(dims=network["dims"], features_per_stage=tuple(network["features_per_stage"]),
                   kernel_sizes=tuple(map(tuple, network["kernel_sizes"])),
                   strides=tuple(map(tuple, network["strides"])), convs_per_stage=network["convs_per_stage"])


@dataclass(frozen=True)
class Configuration:
    """One entry of the plans' ``configurations`` (``"2d"``, ``"3d_fullres"``); axes in the transposed order, a 2D
    configuration's without the slicing axis."""

    spacing: tuple[float, ...]                       # the target spacing preprocessing resamples to
    median_image_size_in_voxels: tuple[float, ...]   # at that spacing
    patch_size: tuple[int, ...]
    batch_size: int                                  # per process
    estimated_activation_elements: int               # what the memory budget was compared with
    network: NetworkTopology

    @classmethod
    def from_json(cls, document: Any, where: str) -> Configuration:
        configuration = _fields_of(cls, document, where)
        return cls(spacing=tuple(configuration["spacing"]),
                   median_image_size_in_voxels=tuple(configuration["median_image_size_in_voxels"]),
                   patch_size=tuple(configuration["patch_size"]), batch_size=configuration["batch_size"],
                   estimated_activation_elements=configuration["estimated_activation_elements"],
                   network=NetworkTopology.from_json(configuration["network"], f"{where}.network"))


@dataclass(frozen=True)
class IntensityProperties:
    """One channel's foreground intensities over the training set (the fingerprint's; ``None`` where it found no
    foreground). CT normalisation clips to the percentiles, then subtracts the mean and divides by the std."""

    mean: float | None
    median: float | None
    std: float | None
    min: float | None
    max: float | None
    percentile_99_5: float | None
    percentile_00_5: float | None


@dataclass(frozen=True)
class Resampling:
    """Spline orders: images, labels (each label resampled as a mask), and the coarse axis of anisotropic data."""

    image_order: int
    label_order: int
    anisotropic_axis_order: int


_WRITTEN_WHEN_SET = ("raw_dataset", "file_ending")
"""Plans keys written only when set (the pipeline records them; plans made in code have neither)."""


@dataclass(frozen=True)
class Plans:
    """A ``plans.json`` as read by preprocessing, training and prediction: a frozen view whose field names are the
    file's keys. Make one with :func:`plan_experiment`, :meth:`load` or :meth:`from_json`; per-configuration
    settings come from :meth:`configuration`. Axes are ``(z, y, x)`` after ``transpose_forward``."""

    dataset_name: str
    memory_budget: dict[str, Any]                 # the planner's device, memory_gb and base_features, as a record
    channel_names: dict[str, str]                 # channel index ("0") -> name; "CT" selects CT normalisation
    labels: dict[str, int]                        # label name -> value, background 0
    axis_codes: str | None                        # where the training volumes' axes point ("RAS"); None for 2D
    transpose_forward: tuple[int, ...]            # the coarsest axis first
    transpose_backward: tuple[int, ...]
    original_median_spacing_after_transp: tuple[float, ...]
    original_median_shape_after_transp: tuple[int, ...]
    normalization_schemes: tuple[str, ...]        # per channel: "ct" or "zscore"
    use_mask_for_norm: tuple[bool, ...]           # per channel: z-score inside the nonzero region only
    foreground_intensity_properties_per_channel: dict[str, IntensityProperties]
    resampling: Resampling
    configurations: dict[str, Configuration]
    raw_dataset: str | None = None                # the raw dataset's folder and its images' file ending
    file_ending: str | None = None

    def configuration(self, name: str) -> Configuration:
        """The configuration called ``name``; an unknown name is refused with the names there are."""
        if name not in self.configurations:
            raise ValueError(f"configuration {name!r} is not in the plans (have {sorted(self.configurations)})")
        return self.configurations[name]

    @classmethod
    def from_json(cls, document: Any, source: str = "plans") -> Plans:
        """The view of a parsed plans document (a ``plans.json``, or the copy a checkpoint keeps), checked once: the
        format version, then the keys of every object. ``source`` names the document in the errors."""
        document = _json_object(document, source)
        if document.get("format") != PLANS_VERSION:
            raise ValueError(f"{source} is not a gnnseg plans file (format {document.get('format')!r}, expected "
                             f"{PLANS_VERSION!r})")
        # axis_codes: plans made before gnnseg recorded it lack the key
        entries = _fields_of(cls, {key: value for key, value in document.items() if key != "format"}, source,
                             optional=("axis_codes", *_WRITTEN_WHEN_SET))
        intensities = f"{source}: foreground_intensity_properties_per_channel"
        return cls(
            dataset_name=entries["dataset_name"], memory_budget=dict(entries["memory_budget"]),
            channel_names=dict(entries["channel_names"]), labels=dict(entries["labels"]),
            axis_codes=entries.get("axis_codes"), transpose_forward=tuple(entries["transpose_forward"]),
            transpose_backward=tuple(entries["transpose_backward"]),
            original_median_spacing_after_transp=tuple(entries["original_median_spacing_after_transp"]),
            original_median_shape_after_transp=tuple(entries["original_median_shape_after_transp"]),
            normalization_schemes=tuple(entries["normalization_schemes"]),
            use_mask_for_norm=tuple(entries["use_mask_for_norm"]),
            foreground_intensity_properties_per_channel={
                channel: IntensityProperties(**_fields_of(IntensityProperties, stats, f"{intensities}[{channel!r}]"))
                for channel, stats in _json_object(entries["foreground_intensity_properties_per_channel"],
                                                   intensities).items()},
            resampling=Resampling(**_fields_of(Resampling, entries["resampling"], f"{source}: resampling")),
            configurations={name: Configuration.from_json(configuration, f"{source}: configurations[{name!r}]")
                            for name, configuration in _json_object(entries["configurations"],
                                                                    f"{source}: configurations").items()},
            raw_dataset=entries.get("raw_dataset"), file_ending=entries.get("file_ending"))

    def to_json(self) -> dict[str, Any]:
        """The plans document: what :meth:`from_json` read (or :func:`plan_experiment` made), key for key."""
        document = {"format": PLANS_VERSION, **as_json(self)}
        for key in _WRITTEN_WHEN_SET:
            if document[key] is None:
                del document[key]
        return document

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plans:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"plans file not found: {path}; run `gnnseg seg plan` first")
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not a JSON file ({error})") from None
        return cls.from_json(document, source=str(path))

    def save(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.to_json())
