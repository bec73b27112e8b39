"""The nnU-Net v2 raw dataset layout: ``dataset.json``, ``imagesTr/CASE_0000.ext``, ``labelsTr/CASE.ext``.

``dataset.json`` holds ``channel_names`` (``{"0": "CT"}``), ``labels`` (``{"background": 0, "liver": 1}``; regions
and the ignore label as :mod:`gnnseg.seg.io.dataset_labels` reads them), ``regions_class_order`` for region-based
labels, ``numTraining``, ``file_ending`` (``.nii.gz``, ``.mha``, ``.png``, ...), optionally
``overwrite_image_reader_writer`` (nnU-Net's reader by name) and a ``dataset`` object naming each training case's
files. Each case has one file per channel, ``CASE_XXXX.ext``, and one label map ``CASE.ext`` (Isensee et al. 2021;
nnU-Net v2 documentation ``dataset_format.md``). Test images, when present, live in ``imagesTs`` (labels in
``labelsTs``). The whole file is read and checked when the dataset is opened: an unknown key, inconsistent labels or
a training count that the folder contradicts is one error naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.seg.io.any_format import NIFTI_SUFFIXES, read_any, write_any
from gnnseg.seg.io.dataset_labels import DatasetLabels
from gnnseg.seg.io.image import ImageFormatError, MedicalImage
from gnnseg.seg.io.image2d import SUFFIXES_2D
from gnnseg.seg.io.simpleitk_io import SIMPLEITK_SUFFIXES, WRITABLE_SUFFIXES

REQUIRED_KEYS = ("channel_names", "labels", "file_ending")
DETACHED_HEADER_SUFFIXES = tuple(sorted(set(SIMPLEITK_SUFFIXES) - set(WRITABLE_SUFFIXES)))
DESCRIPTIVE_KEYS = ("name", "description", "reference", "citation", "licence", "license", "release", "tensorImageSize",
                    "converted_by", "field_of_view_masks")
"""Keys that describe a dataset and change nothing in how it is read (nnU-Net's ``generate_dataset_json`` metadata;
``field_of_view_masks``: the folders gnnseg's DRIVE converter writes)."""
KNOWN_KEYS = (*REQUIRED_KEYS, "numTraining", "regions_class_order", "overwrite_image_reader_writer", "dataset",
              *DESCRIPTIVE_KEYS)

IMAGE_READERS: dict[str, tuple[str, ...]] = {
    "SimpleITKIO": NIFTI_SUFFIXES + SIMPLEITK_SUFFIXES,
    "NibabelIO": NIFTI_SUFFIXES,
    "NaturalImage2DIO": SUFFIXES_2D,
}
"""nnU-Net's readers that gnnseg's readers reproduce, with the file endings each reads: the same arrays in the same
``(z, y, x)`` order and the same spacing (NIfTI through nibabel whichever of the two nnU-Net names)."""
REFUSED_READERS = {
    "NibabelIOWithReorient": "it reorients every volume to RAS before training; gnnseg keeps the stored axis order "
                             "and records the axis codes in its plans instead",
    "Tiff3DIO": "3D TIFF stacks with a spacing .json beside each file are not read by gnnseg",
    "Tiff3DIO_SimpleITK": "3D TIFF stacks with a spacing .json beside each file are not read by gnnseg",
}


@dataclass
class Case:
    case_id: str
    channels: list[MedicalImage]
    label: MedicalImage | None

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.channels[0].spacing

    def stacked(self) -> np.ndarray:
        """Channels stacked first: ``(C, *spatial)`` float32."""
        return np.stack([c.array.astype(np.float32) for c in self.channels])


def _check_reader(reader: Any, file_ending: str, where: str) -> str | None:
    if reader is None:
        return None
    if not isinstance(reader, str):
        raise ImageFormatError(f"{where}: overwrite_image_reader_writer must be one reader's name, got {reader!r}")
    if reader in REFUSED_READERS:
        raise ImageFormatError(f"{where}: overwrite_image_reader_writer {reader!r} is not supported: "
                               f"{REFUSED_READERS[reader]}")
    if reader not in IMAGE_READERS:
        raise ImageFormatError(f"{where}: overwrite_image_reader_writer {reader!r} is not one of nnU-Net's readers "
                               f"gnnseg reads ({', '.join(IMAGE_READERS)})")
    if not file_ending.lower().endswith(IMAGE_READERS[reader]):
        raise ImageFormatError(f"{where}: {reader} does not read {file_ending!r} files (it reads "
                               f"{', '.join(IMAGE_READERS[reader])})")
    return reader


def _listed_files(listing: Any, root: Path, where: str) -> dict[str, tuple[list[Path], Path | None]]:
    """The ``dataset`` object: case id -> ``{"images": [paths], "label": path}`` (paths relative to the dataset)."""
    if not isinstance(listing, Mapping):
        raise ImageFormatError(f"{where}: 'dataset' must map case ids to their files, got {type(listing).__name__}")
    cases = {}
    for case_id, entry in listing.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("images"), list) or not entry["images"]:
            raise ImageFormatError(f"{where}: dataset[{case_id!r}] must hold 'images' (a list of files) and 'label'")
        label = entry.get("label")
        cases[str(case_id)] = ([root / str(p) for p in entry["images"]], None if label is None else root / str(label))
    return cases


@dataclass
class RawDataset:
    root: Path
    channel_names: dict[str, str]
    labels: dict[str, Any]             # dataset.json's labels as written: values, regions (lists), "ignore"
    file_ending: str
    name: str = ""
    regions_class_order: tuple[int, ...] | None = None
    image_reader: str | None = None    # nnU-Net's reader by name, when dataset.json names one
    listed: dict[str, tuple[list[Path], Path | None]] | None = field(default=None, repr=False)

    @property
    def label_model(self) -> DatasetLabels:
        """The labels as the network is trained on them: regions, ignore label, output count."""
        return DatasetLabels.from_json(self.labels, self.regions_class_order, where=str(self.root / "dataset.json"))

    @classmethod
    def open(cls, root: str | os.PathLike) -> RawDataset:
        """Read and check ``root/dataset.json`` in full (every key, the labels, the training count against the
        files)."""
        root = Path(root)
        manifest = root / "dataset.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{root} is not an nnU-Net raw dataset: {manifest} is missing")
        try:
            content = json.loads(manifest.read_text())
        except json.JSONDecodeError as exc:
            raise ImageFormatError(f"{manifest} is not valid JSON: {exc}") from exc
        where = str(manifest)
        if not isinstance(content, dict):
            raise ImageFormatError(f"{where}: expected a JSON object, found {type(content).__name__}")
        if "modality" in content and "channel_names" not in content:
            raise ImageFormatError(f"{where}: 'modality' is nnU-Net v1's key; nnU-Net v2 names it 'channel_names'")
        missing = [key for key in REQUIRED_KEYS if key not in content]
        if missing:
            raise ImageFormatError(f"{manifest} lacks {missing}")
        unknown = sorted(set(content) - set(KNOWN_KEYS))
        if unknown:
            raise ImageFormatError(f"{where}: unknown keys {unknown} (known: {', '.join(KNOWN_KEYS)})")
        channels = content["channel_names"]
        if not isinstance(channels, dict) or not channels or \
                sorted(channels, key=str) != sorted((str(i) for i in range(len(channels))), key=str):
            raise ImageFormatError(f"{where}: channel_names must map '0', '1', ... to names, got {channels!r}")
        try:
            labels = DatasetLabels.from_json(content["labels"], content.get("regions_class_order"), where=where)
        except ValueError as error:
            raise ImageFormatError(str(error)) from None
        file_ending = content["file_ending"]
        if not isinstance(file_ending, str) or not file_ending.startswith("."):
            raise ImageFormatError(f"{where}: file_ending must be a suffix such as '.nii.gz', got {file_ending!r}")
        if file_ending.lower().endswith(DETACHED_HEADER_SUFFIXES):
            raise ImageFormatError(f"{where}: file_ending {file_ending!r} keeps header and data apart, which "
                                   "predictions in the dataset's format cannot be written as; convert the files to "
                                   f"{' or '.join(WRITABLE_SUFFIXES)}")
        dataset = cls(root=root, channel_names={str(k): str(v) for k, v in channels.items()},
                      labels=labels.to_json(), file_ending=file_ending, name=str(content.get("name", root.name)),
                      regions_class_order=labels.regions_class_order,
                      image_reader=_check_reader(content.get("overwrite_image_reader_writer"), file_ending, where),
                      listed=_listed_files(content["dataset"], root, where) if "dataset" in content else None)
        for case_id, (images, _) in (dataset.listed or {}).items():
            if len(images) != dataset.num_channels:
                raise ImageFormatError(f"{where}: dataset[{case_id!r}] lists {len(images)} images for "
                                       f"{dataset.num_channels} channels")
        count = content.get("numTraining")
        if count is not None:
            found = len(dataset.case_ids())
            if isinstance(count, bool) or not isinstance(count, int) or count != found:
                raise ImageFormatError(f"{where}: numTraining is {count!r} but {found} training cases are there")
        return dataset

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def case_ids(self, split: str = "Tr") -> list[str]:
        """Case identifiers: those ``dataset.json`` lists (training), else those found in ``images<split>`` (from
        the ``_0000`` files)."""
        if split == "Tr" and self.listed is not None:
            return sorted(self.listed)
        folder = self.root / f"images{split}"
        if not folder.is_dir():
            return []
        suffix = f"_0000{self.file_ending}"
        return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))

    def image_paths(self, case_id: str, split: str = "Tr") -> list[Path]:
        if split == "Tr" and self.listed is not None and case_id in self.listed:
            return self.listed[case_id][0]
        return [self.root / f"images{split}" / f"{case_id}_{c:04d}{self.file_ending}" for c in range(self.num_channels)]

    def label_path(self, case_id: str, split: str = "Tr") -> Path:
        if split == "Tr" and self.listed is not None and case_id in self.listed and self.listed[case_id][1]:
            return self.listed[case_id][1]
        return self.root / f"labels{split}" / f"{case_id}{self.file_ending}"

    def load_case(self, case_id: str, split: str = "Tr", *, with_label: bool = True) -> Case:
        """Read a case and check it: every channel present, channels and label on one grid, integer labels
        that ``dataset.json`` declares. Errors name the case."""
        missing = [str(p) for p in self.image_paths(case_id, split) if not p.is_file()]
        if missing:
            raise ImageFormatError(f"case {case_id}: missing channel files {missing}")
        channels = [read_any(p) for p in self.image_paths(case_id, split)]
        for path, channel in zip(self.image_paths(case_id, split), channels):
            if channel.num_channels != 1 or channel.array.ndim != len(channel.spacing):
                raise ImageFormatError(f"case {case_id}: {path.name} has shape {channel.array.shape}; the raw layout "
                                       f"stores one single-channel file per channel (split colour into _0000.._0002)")
        for index, channel in enumerate(channels[1:], start=1):
            _same_grid(case_id, f"channel {index}", channel, "channel 0", channels[0])
        label = None
        label_file = self.label_path(case_id, split)
        if with_label and label_file.is_file():
            label = read_any(label_file)
            _same_grid(case_id, "label", label, "image", channels[0])
            values = np.unique(label.array)
            if not np.issubdtype(label.array.dtype, np.integer):
                if not np.all(values == np.round(values)):
                    raise ImageFormatError(f"case {case_id}: label map has non-integer values "
                                           f"{values[values != np.round(values)][:5].tolist()}")
                label.array = label.array.astype(np.int16)
            model = self.label_model
            declared = set(model.all_labels) | ({model.ignore_label} if model.ignore_label is not None else set())
            unknown = sorted(set(values.astype(int).tolist()) - declared)
            if unknown:
                raise ImageFormatError(f"case {case_id}: label values {unknown} are not declared in dataset.json "
                                       f"({self.labels})")
        elif with_label and split == "Tr":
            raise ImageFormatError(f"case {case_id}: label file {label_file} is missing")
        return Case(case_id, channels, label)


def _same_grid(case_id: str, name: str, image: MedicalImage, reference_name: str, reference: MedicalImage) -> None:
    if image.spatial_shape != reference.spatial_shape:
        raise ImageFormatError(f"case {case_id}: {name} has shape {image.spatial_shape} but {reference_name} has "
                               f"{reference.spatial_shape}")
    if not np.allclose(image.spacing, reference.spacing, rtol=1e-3):
        raise ImageFormatError(f"case {case_id}: {name} has spacing {image.spacing} but {reference_name} has "
                               f"{reference.spacing}")


def write_raw_dataset(root: str | os.PathLike, *, channel_names: Sequence[str], labels: dict[str, Any],
                      file_ending: str, training: Iterable[tuple[str, Sequence[MedicalImage], MedicalImage]],
                      test: Iterable[tuple[str, Sequence[MedicalImage], MedicalImage | None]] = (),
                      name: str = "", extra: dict | None = None) -> RawDataset:
    """Create a raw dataset folder. Refuses to write into an existing ``dataset.json`` folder, and labels that
    :class:`DatasetLabels` refuses (``extra`` may hold ``regions_class_order``) before any file is written."""
    root = Path(root)
    if (root / "dataset.json").exists():
        raise FileExistsError(f"{root} already holds a dataset; choose a new folder")
    DatasetLabels.from_json(labels, (extra or {}).get("regions_class_order"), where=f"labels for {root}")
    count = 0
    for split, cases in (("Tr", training), ("Ts", test)):
        for case_id, channels, label in cases:
            if len(channels) != len(channel_names):
                raise ImageFormatError(f"case {case_id}: {len(channels)} channels given, "
                                       f"dataset declares {len(channel_names)}")
            for index, channel in enumerate(channels):
                write_any(channel, root / f"images{split}" / f"{case_id}_{index:04d}{file_ending}")
            if label is not None:
                write_any(label, root / f"labels{split}" / f"{case_id}{file_ending}")
            count += split == "Tr"
    manifest = {"name": name or root.name, "channel_names": {str(i): n for i, n in enumerate(channel_names)},
                "labels": labels, "numTraining": count, "file_ending": file_ending, **(extra or {})}
    (root / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return RawDataset.open(root)
