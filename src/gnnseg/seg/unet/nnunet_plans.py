"""nnU-Net v2's own ``plans.json`` and ``dataset.json``, read as what inference needs from them.

gnnseg's plans (:mod:`gnnseg.seg.unet.plans`) keep nnU-Net's key names but are a format of their own; a model trained
by ``nnunetv2`` comes with nnU-Net's files, read here: :class:`NnUNetPlans` (transpose, intensity statistics, reader,
configurations with nnU-Net's ``inherits_from``), :class:`NnUNetConfiguration` (target spacing, patch, normalisation
per channel, the three resampling functions and the network) and :class:`NnUNetLabels` (labels or regions, the
ignore label, the number of network outputs). Everything is checked on reading: a setting gnnseg cannot reproduce
(a custom preprocessor, resampling function, normalisation or label manager) is refused naming the file and the value
rather than predicted differently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gnnseg.seg.io.dataset_labels import DatasetLabels
from gnnseg.seg.io.raw_dataset import IMAGE_READERS

NORMALIZATION_SCHEMES = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization",
                         "RGBTo01Normalization")
"""nnU-Net's built-in intensity normalisations (:func:`gnnseg.seg.unet.nnunet_preprocessing.normalize_channel`)."""

RESAMPLING_FUNCTIONS = ("resample_data_or_seg_to_shape",)
"""nnU-Net's default resampling (:mod:`gnnseg.seg.unet.nnunet_resampling`); other functions are refused."""

READERS = tuple(IMAGE_READERS)
"""nnU-Net image readers whose array order gnnseg's readers reproduce (:data:`gnnseg.seg.io.raw_dataset.IMAGE_READERS`):
``(z, y, x)`` as stored, 2D images as one slice. ``NibabelIOWithReorient`` (reorients to RAS first) and the TIFF
readers are refused."""


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing or unreadable file is one error naming it and ``what`` it should be."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what})")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a JSON file ({error})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object ({what}), found {type(document).__name__}")
    return document


def _require(document: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in document:
        raise ValueError(f"{where} lacks {key!r}")
    return document[key]


@dataclass(frozen=True)
class ResamplingFunction:
    """One of a configuration's resampling entries: nnU-Net's default function with its spline orders."""

    order: int
    order_z: int
    force_separate_z: bool | None

    @classmethod
    def from_plans(cls, configuration: Mapping[str, Any], kind: str, where: str) -> ResamplingFunction:
        name = _require(configuration, f"resampling_fn_{kind}", where)
        if name not in RESAMPLING_FUNCTIONS:
            raise ValueError(f"{where}: resampling_fn_{kind} {name!r} is not nnU-Net's default "
                             f"({', '.join(RESAMPLING_FUNCTIONS)}); gnnseg does not reproduce custom resampling")
        kwargs = dict(configuration.get(f"resampling_fn_{kind}_kwargs") or {})
        unknown = sorted(set(kwargs) - {"is_seg", "order", "order_z", "force_separate_z"})
        if unknown:
            raise ValueError(f"{where}: resampling_fn_{kind}_kwargs has unknown {unknown}")
        return cls(order=int(kwargs.get("order", 3)), order_z=int(kwargs.get("order_z", 0)),
                   force_separate_z=kwargs.get("force_separate_z", False))


@dataclass(frozen=True)
class NnUNetConfiguration:
    """One configuration (``"2d"``, ``"3d_fullres"``, ...) after ``inherits_from`` is resolved; axes transposed."""

    name: str
    spacing: tuple[float, ...]             # target spacing; 2 entries for a 2D configuration
    patch_size: tuple[int, ...]
    normalization_schemes: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    resampling_data: ResamplingFunction
    resampling_probabilities: ResamplingFunction
    architecture: Mapping[str, Any]

    @classmethod
    def from_plans(cls, name: str, configuration: Mapping[str, Any], where: str) -> NnUNetConfiguration:
        if configuration.get("previous_stage"):
            raise ValueError(f"{where}: {name!r} is a cascade stage (needs the predictions of "
                             f"{configuration['previous_stage']!r}); gnnseg does not run nnU-Net cascades")
        preprocessor = configuration.get("preprocessor_name", "DefaultPreprocessor")
        if preprocessor != "DefaultPreprocessor":
            raise ValueError(f"{where}: preprocessor {preprocessor!r} is not nnU-Net's DefaultPreprocessor")
        schemes = tuple(_require(configuration, "normalization_schemes", where))
        unknown = [s for s in schemes if s not in NORMALIZATION_SCHEMES]
        if unknown:
            raise ValueError(f"{where}: normalization {unknown} not supported "
                             f"(known: {', '.join(NORMALIZATION_SCHEMES)})")
        return cls(name=name, spacing=tuple(float(s) for s in _require(configuration, "spacing", where)),
                   patch_size=tuple(int(p) for p in _require(configuration, "patch_size", where)),
                   normalization_schemes=schemes,
                   use_mask_for_norm=tuple(bool(u) for u in _require(configuration, "use_mask_for_norm", where)),
                   resampling_data=ResamplingFunction.from_plans(configuration, "data", where),
                   resampling_probabilities=ResamplingFunction.from_plans(configuration, "probabilities", where),
                   architecture=_require(configuration, "architecture", where))


@dataclass(frozen=True)
class NnUNetPlans:
    """The parts of an nnU-Net v2 ``plans.json`` that prediction reads. ``document`` is the file as parsed."""

    source: str
    document: Mapping[str, Any]
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    image_reader_writer: str
    intensity_properties: Mapping[str, Mapping[str, float]]   # per channel index ("0"): mean, std, percentiles

    @classmethod
    def load(cls, path: str | Path) -> NnUNetPlans:
        path = Path(path)
        document = read_json_file(path, "nnU-Net plans")
        where = str(path)
        if not isinstance(document.get("configurations"), dict) or not document["configurations"]:
            raise ValueError(f"{where}: not nnU-Net v2 plans (no 'configurations')")
        label_manager = document.get("label_manager", "LabelManager")
        if label_manager != "LabelManager":
            raise ValueError(f"{where}: label_manager {label_manager!r} is not nnU-Net's LabelManager")
        reader = document.get("image_reader_writer", "SimpleITKIO")
        if reader not in READERS:
            raise ValueError(f"{where}: image_reader_writer {reader!r} is not supported (known: {', '.join(READERS)})")
        return cls(source=where, document=document,
                   transpose_forward=tuple(int(a) for a in _require(document, "transpose_forward", where)),
                   transpose_backward=tuple(int(a) for a in _require(document, "transpose_backward", where)),
                   image_reader_writer=reader,
                   intensity_properties=_require(document, "foreground_intensity_properties_per_channel", where))

    def configuration_names(self) -> list[str]:
        return sorted(self.document["configurations"])

    def configuration(self, name: str) -> NnUNetConfiguration:
        """The configuration ``name`` with its ``inherits_from`` chain merged (the child's keys win)."""
        configurations = self.document["configurations"]
        if name not in configurations:
            raise ValueError(f"{self.source}: no configuration {name!r} (have {self.configuration_names()})")
        merged: dict[str, Any] = {}
        chain, current = [], name
        while current is not None:
            if current in chain or current not in configurations:
                raise ValueError(f"{self.source}: configuration {name!r} inherits from missing or circular "
                                 f"{current!r}")
            chain.append(current)
            current = configurations[current].get("inherits_from")
        for link in reversed(chain):
            merged.update({k: v for k, v in configurations[link].items() if k != "inherits_from"})
        return NnUNetConfiguration.from_plans(name, merged, f"{self.source}: configurations[{name!r}]")


@dataclass(frozen=True)
class NnUNetLabels:
    """``dataset.json``'s labels as nnU-Net's LabelManager reads them (:class:`~gnnseg.seg.io.dataset_labels.
    DatasetLabels`, ``model``), with the file ending and channels a model's inputs need.

    With plain labels the network has one output per label (softmax, argmax gives the label); with regions (a label
    given as a list of values) one output per foreground region (sigmoid, each region painted with its
    ``regions_class_order`` value where its probability exceeds 0.5, in that order). ``ignore`` is never predicted.
    """

    model: DatasetLabels
    file_ending: str
    channel_names: Mapping[str, str]

    @classmethod
    def load(cls, path: str | Path) -> NnUNetLabels:
        path = Path(path)
        document = read_json_file(path, "nnU-Net dataset.json")
        where = str(path)
        channels = document.get("channel_names", document.get("modality"))
        if not isinstance(channels, dict) or not channels:
            raise ValueError(f"{where}: lacks 'channel_names'")
        model = DatasetLabels.from_json(_require(document, "labels", where), document.get("regions_class_order"),
                                        where=where)
        return cls(model=model, file_ending=str(_require(document, "file_ending", where)), channel_names=channels)

    @property
    def labels(self) -> dict[str, Any]:
        """The ``labels`` object as ``dataset.json`` holds it."""
        return self.model.to_json()

    @property
    def has_regions(self) -> bool:
        return self.model.has_regions

    @property
    def regions_class_order(self) -> tuple[int, ...] | None:
        return self.model.regions_class_order

    @property
    def all_labels(self) -> list[int]:
        return self.model.all_labels

    @property
    def num_outputs(self) -> int:
        return self.model.num_outputs

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)
