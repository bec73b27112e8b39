"""The plans file as typed data.

``plans.json`` keeps nnU-Net v2's layout and key names; code reads it through the frozen views :class:`Plans` and
:class:`Configuration` (nnU-Net's ``PlansManager`` / ``ConfigurationManager``, as plain data), whose field names are
the file's keys. :meth:`Plans.from_json` checks the document once (its format version, then every object's keys,
naming the file and what is missing or unknown) and :meth:`Plans.to_json` gives the same document back, so a plans
file, the copy a run keeps and a checkpoint's plans all round-trip unchanged. The planner
(:mod:`gnnseg.seg.unet.planner`) writes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from gnnseg.seg.io.dataset_labels import DatasetLabels

PLANS_VERSION = "gnnseg.plans/1"


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
    convs_per_stage: int                      # with an ``architecture`` (ResEnc): its decoder's convs per level

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
    # nnU-Net's network entry (network_class_name, arch_kwargs), written by the ResEnc planner presets; when present
    # the network is built from it (gnnseg.seg.unet.nnunet_networks), else from ``network``
    architecture: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, document: Any, where: str) -> Configuration:
        configuration = _fields_of(cls, document, where, optional=("architecture",))
        architecture = configuration.get("architecture")
        if architecture is not None:
            architecture = dict(_json_object(architecture, f"{where}.architecture"))
            missing = [key for key in ("network_class_name", "arch_kwargs") if key not in architecture]
            if missing:
                raise ValueError(f"{where}.architecture lacks {', '.join(map(repr, missing))}")
        return cls(spacing=tuple(configuration["spacing"]),
                   median_image_size_in_voxels=tuple(configuration["median_image_size_in_voxels"]),
                   patch_size=tuple(configuration["patch_size"]), batch_size=configuration["batch_size"],
                   estimated_activation_elements=configuration["estimated_activation_elements"],
                   network=NetworkTopology.from_json(configuration["network"], f"{where}.network"),
                   architecture=architecture)


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


_WRITTEN_WHEN_SET = ("raw_dataset", "file_ending", "plans_name", "regions_class_order")
"""Plans keys written only when set (the pipeline records the first two; plans made in code have neither; the planner
presets other than the default name their plans as nnU-Net does; region-based datasets record their
``regions_class_order``)."""


@dataclass(frozen=True)
class Plans:
    """A ``plans.json`` as read by preprocessing, training and prediction: a frozen view whose field names are the
    file's keys. Make one with :func:`~gnnseg.seg.unet.planner.plan_experiment`, :meth:`load` or :meth:`from_json`;
    per-configuration settings come from :meth:`configuration`. Axes are ``(z, y, x)`` after ``transpose_forward``."""

    dataset_name: str
    memory_budget: dict[str, Any]                 # the planner's device, memory_gb and base_features, as a record
    channel_names: dict[str, str]                 # channel index ("0") -> name; "CT" selects CT normalisation
    labels: dict[str, Any]                        # dataset.json's labels: name -> value or region, "ignore"
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
    plans_name: str | None = None                 # nnU-Net's plans identifier of a ResEnc preset; None: default
    regions_class_order: tuple[int, ...] | None = None   # region-based datasets: the label painted per region

    @property
    def label_model(self) -> DatasetLabels:
        """The labels as the network is trained on them: plain labels or regions, the ignore label, the number of
        network outputs."""
        return DatasetLabels.from_json(self.labels, self.regions_class_order, where=f"the plans of {self.dataset_name}")

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
            raw_dataset=entries.get("raw_dataset"), file_ending=entries.get("file_ending"),
            plans_name=entries.get("plans_name"),
            regions_class_order=None if entries.get("regions_class_order") is None else
            tuple(entries["regions_class_order"]))

    def to_json(self) -> dict[str, Any]:
        """The plans document: what :meth:`from_json` read (or :func:`plan_experiment` made), key for key."""
        document = {"format": PLANS_VERSION, **as_json(self)}
        for key in _WRITTEN_WHEN_SET:
            if document[key] is None:
                del document[key]
        for configuration in document["configurations"].values():
            if configuration["architecture"] is None:
                del configuration["architecture"]
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
        from gnnseg.core.runs import write_json  # here: reading plans (the torch-free ONNX predictor) needs no torch

        return write_json(path, self.to_json())
