"""The nnU-Net v2 raw dataset layout: ``dataset.json``, ``imagesTr/CASE_0000.ext``, ``labelsTr/CASE.ext``.

``dataset.json`` holds ``channel_names`` (``{"0": "CT"}``), ``labels`` (``{"background": 0, "liver": 1}``),
``numTraining`` and ``file_ending`` (``.nii.gz``, ``.png``, ...). Each case has one file per channel,
``CASE_XXXX.ext``, and one label map ``CASE.ext`` (Isensee et al. 2021; nnU-Net v2 documentation
``dataset_format.md``). Test images, when present, live in ``imagesTs`` (labels in ``labelsTs``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gnnseg.seg.io.any_format import read_any, write_any
from gnnseg.seg.io.image import ImageFormatError, MedicalImage

REQUIRED_KEYS = ("channel_names", "labels", "file_ending")


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


@dataclass
class RawDataset:
    root: Path
    channel_names: dict[str, str]
    labels: dict[str, int]
    file_ending: str
    name: str = ""

    @classmethod
    def open(cls, root: str | os.PathLike) -> RawDataset:
        root = Path(root)
        manifest = root / "dataset.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{root} is not an nnU-Net raw dataset: {manifest} is missing")
        try:
            content = json.loads(manifest.read_text())
        except json.JSONDecodeError as exc:
            raise ImageFormatError(f"{manifest} is not valid JSON: {exc}") from exc
        missing = [key for key in REQUIRED_KEYS if key not in content]
        if missing:
            raise ImageFormatError(f"{manifest} lacks {missing}")
        labels = {str(k): int(v) for k, v in content["labels"].items()}
        if labels.get("background") != 0:
            raise ImageFormatError(f"{manifest}: labels must map 'background' to 0, got {labels}")
        return cls(root=root, channel_names={str(k): str(v) for k, v in content["channel_names"].items()},
                   labels=labels, file_ending=content["file_ending"], name=content.get("name", root.name))

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def case_ids(self, split: str = "Tr") -> list[str]:
        """Case identifiers found in ``images<split>`` (from the ``_0000`` files)."""
        folder = self.root / f"images{split}"
        if not folder.is_dir():
            return []
        suffix = f"_0000{self.file_ending}"
        return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))

    def image_paths(self, case_id: str, split: str = "Tr") -> list[Path]:
        return [self.root / f"images{split}" / f"{case_id}_{c:04d}{self.file_ending}" for c in range(self.num_channels)]

    def label_path(self, case_id: str, split: str = "Tr") -> Path:
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
            unknown = sorted(set(values.astype(int).tolist()) - set(self.labels.values()))
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


def write_raw_dataset(root: str | os.PathLike, *, channel_names: Sequence[str], labels: dict[str, int],
                      file_ending: str, training: Iterable[tuple[str, Sequence[MedicalImage], MedicalImage]],
                      test: Iterable[tuple[str, Sequence[MedicalImage], MedicalImage | None]] = (),
                      name: str = "", extra: dict | None = None) -> RawDataset:
    """Create a raw dataset folder. Refuses to write into an existing ``dataset.json`` folder."""
    root = Path(root)
    if (root / "dataset.json").exists():
        raise FileExistsError(f"{root} already holds a dataset; choose a new folder")
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
