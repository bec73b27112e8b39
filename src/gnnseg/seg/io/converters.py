"""Turn the 2D datasets in ``../shared/datasets`` into nnU-Net raw folders (PNG, one grey file per channel).

* ISBI 2012 EM (Cardona et al. 2010; the U-Net paper's data): 30 labelled 512x512 sections; label 1 =
  membrane (the source's black pixels), 0 = cell interior. The 30 unlabelled test sections go to imagesTs.
* DRIVE (Staal et al. 2004): 20 training and 20 test fundus photographs, RGB as 3 channels; label 1 =
  vessel. The field-of-view masks, needed for evaluation, are written to ``fovTr`` / ``fovTs``.
* Kvasir-SEG subset (Jha et al. 2020): 200 RGB 256x256 colonoscopy frames; the lossy JPEG masks are
  binarised at 127 (label 1 = polyp).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gnnseg.seg.io.image import ImageFormatError, MedicalImage
from gnnseg.seg.io.image2d import read_image_2d, write_image_2d
from gnnseg.seg.io.raw_dataset import RawDataset, write_raw_dataset


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"expected {path}; is this the right source folder?")
    return path


def _grey(array: np.ndarray) -> MedicalImage:
    return MedicalImage(array=np.ascontiguousarray(array), spacing=(1.0, 1.0))


def _rgb_channels(image: MedicalImage) -> list[MedicalImage]:
    if image.num_channels != 3:
        raise ImageFormatError(f"{image.source}: expected an RGB image, got shape {image.array.shape}")
    return [_grey(channel) for channel in image.channels()]


def _binary(path: Path, threshold: int = 127, foreground_dark: bool = False) -> MedicalImage:
    mask = read_image_2d(path, grayscale=True).array
    foreground = mask <= threshold if foreground_dark else mask > threshold
    return _grey(foreground.astype(np.uint8))


def convert_isbi2012(source: str | os.PathLike, target: str | os.PathLike) -> RawDataset:
    source = Path(source)
    images = sorted(_require(source / "train" / "image").glob("*.png"), key=lambda p: int(p.stem))
    training = [(f"isbi_{int(p.stem):03d}", [read_image_2d(p, grayscale=True)],
                 _binary(_require(source / "train" / "label" / p.name), foreground_dark=True)) for p in images]
    test_images = sorted((source / "test" / "image").glob("*.png"), key=lambda p: int(p.stem))
    test = [(f"isbi_test_{int(p.stem):03d}", [read_image_2d(p, grayscale=True)], None) for p in test_images]
    return write_raw_dataset(target, channel_names=["EM"], labels={"background": 0, "membrane": 1},
                             file_ending=".png", training=training, test=test, name="ISBI2012_EM")


def convert_drive(source: str | os.PathLike, target: str | os.PathLike) -> RawDataset:
    source, target = Path(source), Path(target)

    def cases(split: str, suffix: str):
        for path in sorted(_require(source / split / "images").glob("*.tif")):
            number = path.stem.split("_")[0]
            label = _binary(_require(source / split / "1st_manual" / f"{number}_manual1.gif"))
            fov = _binary(_require(source / split / "mask" / f"{number}_{suffix}_mask.gif"))
            write_image_2d(fov.array, target / f"fov{'Tr' if split == 'training' else 'Ts'}" / f"drive_{number}.png")
            yield f"drive_{number}", _rgb_channels(read_image_2d(path)), label

    target.mkdir(parents=True, exist_ok=True)
    if (target / "dataset.json").exists():
        raise FileExistsError(f"{target} already holds a dataset; choose a new folder")
    return write_raw_dataset(target, channel_names=["R", "G", "B"], labels={"background": 0, "vessel": 1},
                             file_ending=".png", training=cases("training", "training"),
                             test=cases("test", "test"), name="DRIVE",
                             extra={"field_of_view_masks": {"Tr": "fovTr", "Ts": "fovTs"}})


def convert_kvasir(source: str | os.PathLike, target: str | os.PathLike) -> RawDataset:
    source = Path(source)
    images = sorted(_require(source / "images").glob("*.jpg"))
    training = [(f"kvasir_{p.stem}", _rgb_channels(read_image_2d(p)), _binary(_require(source / "masks" / p.name)))
                for p in images]
    return write_raw_dataset(target, channel_names=["R", "G", "B"], labels={"background": 0, "polyp": 1},
                             file_ending=".png", training=training, name="Kvasir_SEG_subset")


CONVERTERS = {"isbi2012": convert_isbi2012, "drive": convert_drive, "kvasir": convert_kvasir}
