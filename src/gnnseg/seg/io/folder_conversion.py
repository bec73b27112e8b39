"""A folder of images and a folder of masks, paired by file name, as an nnU-Net v2 raw dataset (``seg convert folder``).

Images and masks are matched by their stem (``case7.png`` with ``case7.png``, ``liver_3.nii.gz`` with
``liver_3.mha``); each pair becomes ``imagesTr/<stem>_0000<ending>`` (colour 2D images: one file per channel,
``_0000`` to ``_0002``) and ``labelsTr/<stem><ending>``, with a ``dataset.json`` whose labels are those given or those
found in the masks. 2D pairs are written as PNG; 3D pairs as NIfTI, or as MetaImage / NRRD when every image is one.
Everything is checked before anything is written (every file unmatched, 2D mixed with 3D, masks that are not integer
label maps or not on their image's grid), and the dataset is written into a temporary folder that is renamed into
place at the end, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from gnnseg.core.atomic import atomic_folder
from gnnseg.seg.io.any_format import read_any
from gnnseg.seg.io.dataset_labels import DatasetLabels
from gnnseg.seg.io.image import ImageFormatError, MedicalImage
from gnnseg.seg.io.raw_dataset import RawDataset, write_raw_dataset

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def _stem(path: Path) -> str | None:
    """The case name of a readable file (``.nii.gz`` stripped whole), ``None`` for other files."""
    lower = path.name.lower()
    for suffix in VOLUME_SUFFIXES + IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _files_by_stem(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = _stem(path) if path.is_file() and not path.name.startswith(".") else None
        if stem is None:
            continue
        if stem in files:
            raise ImageFormatError(f"{folder}: {files[stem].name} and {path.name} are both case {stem!r}")
        files[stem] = path
    if not files:
        raise ImageFormatError(f"{folder}: no images ({', '.join(VOLUME_SUFFIXES + IMAGE_SUFFIXES)})")
    return files


def _integer_mask(mask: MedicalImage, path: Path) -> np.ndarray:
    array = mask.array
    if mask.num_channels != 1:
        raise ImageFormatError(f"{path}: a mask must have one channel, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        fractional = array[array != np.round(array)]
        if fractional.size or not np.all(np.isfinite(array)):
            raise ImageFormatError(f"{path}: not an integer label map (values such as {fractional[:3].tolist()})")
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ImageFormatError(f"{path}: label values must be >= 0, found {int(array.min())}")
    return array


def _output_ending(images: list[Path], dims: int) -> str:
    if dims == 2:
        return ".png"
    endings = {next(s for s in VOLUME_SUFFIXES if p.name.lower().endswith(s)) for p in images}
    return endings.pop() if endings in ({".mha"}, {".nrrd"}) else ".nii.gz"


def _label_dtype(values: list[int]) -> type:
    return np.uint8 if max(values) < 256 else np.uint16


def convert_folder(images: str | os.PathLike, masks: str | os.PathLike, output: str | os.PathLike, *,
                   name: str | None = None, labels: Mapping[str, int] | None = None) -> RawDataset:
    """Pair ``images`` with ``masks`` by stem and write the raw dataset ``output`` (a new folder).

    ``labels`` (name -> value) names the label values; without it they are those found in the masks, named
    ``label_<value>`` (masks holding only 0 and one other value, such as 0/255, become background and ``foreground``
    = 1). ``name``: the dataset's name (default: the output folder's)."""
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"{output} exists and is not an empty folder; choose a new one")
    image_files, mask_files = _files_by_stem(Path(images), "images"), _files_by_stem(Path(masks), "masks")
    unmatched = sorted(set(image_files) ^ set(mask_files))
    if unmatched:
        lonely = [str(image_files.get(stem) or mask_files[stem]) for stem in unmatched]
        raise ImageFormatError(f"{len(lonely)} files have no partner of the same name: {', '.join(lonely[:5])}"
                               + (" ..." if len(lonely) > 5 else ""))
    cases = sorted(image_files)
    dims, channels, found = set(), set(), set()
    for case in cases:
        image = read_any(image_files[case])
        mask = read_any(mask_files[case], grayscale=True)
        dims.add((len(image.spacing), image_files[case].name))
        channels.add(image.num_channels)
        if len({d for d, _ in dims}) > 1:
            examples = {d: n for d, n in dims}
            raise ImageFormatError(f"images mix 2D and 3D ({examples[2]} is 2D, {examples[3]} is 3D); convert one "
                                   "kind at a time")
        if mask.spatial_shape != image.spatial_shape:
            raise ImageFormatError(f"case {case}: mask {mask_files[case].name} has shape {mask.spatial_shape}, "
                                   f"image {image.spatial_shape}")
        if not np.allclose(mask.spacing, image.spacing, rtol=1e-4) or (
                mask.affine is not None and image.affine is not None
                and not np.allclose(mask.affine, image.affine, atol=1e-3)):
            raise ImageFormatError(f"case {case}: mask {mask_files[case].name} is not on its image's grid (spacing "
                                   f"{tuple(mask.spacing)} vs {tuple(image.spacing)}, or another position or "
                                   "orientation); resample it onto the image first")
        found.update(np.unique(_integer_mask(mask, mask_files[case])).tolist())
    if len(channels) > 1:
        raise ImageFormatError(f"images have different channel counts {sorted(channels)}; one dataset has one")
    remap = None
    if labels is None:
        foreground = sorted(found - {0})
        if len(foreground) == 1 and foreground[0] != 1:
            remap, labels = foreground[0], {"background": 0, "foreground": 1}
        else:
            labels = {"background": 0, **{f"label_{v}": v for v in foreground}}
    else:
        labels = {"background": 0, **dict(labels)}
        undeclared = sorted(found - set(labels.values()))
        if undeclared:
            raise ImageFormatError(f"the masks hold label values {undeclared} that the given labels {labels} lack")
    model = DatasetLabels.from_json(labels, where="the labels")
    dimensionality = dims.pop()[0]
    ending = _output_ending([image_files[c] for c in cases], dimensionality)
    label_dtype = _label_dtype(model.all_labels)

    def training():
        for case in cases:
            image = read_any(image_files[case])
            mask = read_any(mask_files[case], grayscale=True)
            values = _integer_mask(mask, mask_files[case])
            if remap is not None:
                values = (values == remap).astype(values.dtype)
            parts = [MedicalImage(np.ascontiguousarray(channel), image.spacing, image.affine, metadata=image.metadata)
                     for channel in image.channels()]
            yield case, parts, MedicalImage(values.astype(label_dtype), image.spacing, image.affine,
                                            metadata=image.metadata)

    count = channels.pop()
    channel_names = ["image"] if count == 1 else ["R", "G", "B"] if count == 3 else [f"channel_{i}"
                                                                                     for i in range(count)]
    with atomic_folder(output) as temporary:
        write_raw_dataset(temporary, channel_names=channel_names, labels=model.to_json(), file_ending=ending,
                          training=training(), name=name or output.name)
    return RawDataset.open(output)
