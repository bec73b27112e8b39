"""The multi-modality corpus that gnnseg's box-prompted model trains and is evaluated on.

MedSAM's point is one model for many modalities. The public data in ``../shared/datasets`` gives five, each split
into training and held-out parts here (the split is part of the model card):

========== =========================================== ====================================================
modality   training                                    held out
========== =========================================== ====================================================
endoscopy  Kvasir-SEG subset, first 160 in sorted order the other 40 (the issue's protocol)
EM         ISBI 2012 training images 0-23, each cell    images 24-29
fundus     DRIVE training set (vessel trees)            DRIVE test images 01-05
CT         ``example_ct_sm`` (every labelled slice)     the independent DICOM series ``example_ct_dicom``
MR         ``example_mr_sm`` slices 0-13                slices 14-19 (same scan: a weaker test)
========== =========================================== ====================================================

Each object is a connected component of a label (:mod:`gnnseg.seg.sam.training.samples`); ISBI's objects are the cells
between membranes.

More polyps come from the public repository the Kvasir subset was cut from, where a copy of it is at hand
(:func:`more_polyps`, :func:`cvc_clinicdb`): 698 further Kvasir images to train on, 100 that stay unseen, and the
CVC-ClinicDB frames of another centre as a test of a new source. More CT comes from the whole scan that
``example_ct_sm`` was cut from (:func:`more_ct`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gnnseg.seg.io import read_dicom_series, read_image_2d, read_nifti, reorient_like
from gnnseg.seg.sam.training.samples import PromptSample, box_3d_samples, samples_from_image, samples_from_volume

MODALITIES = ("endoscopy", "EM", "fundus", "CT", "MR")
SHARES = {"endoscopy": 0.35, "EM": 0.2, "fundus": 0.05, "CT": 0.25, "MR": 0.15}
"""How often each modality is drawn when the packaged models train: fixed shares rather than object counts (EM has
2,465 cells, DRIVE 26 vessel trees)."""


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"dataset file not found: {path}")
    return path


def kvasir(root: Path, part: str) -> list[PromptSample]:
    """Kvasir-SEG polyps; ``part`` is ``train`` (first 160 sorted) or ``val`` (the last 40)."""
    images = sorted(_require(root / "kvasir_seg_subset" / "images").glob("*.jpg"))
    return _polyps(images[:160] if part == "train" else images[160:], root / "kvasir_seg_subset" / "masks", "kvasir")


def _polyps(images: list[Path], masks: Path, prefix: str) -> list[PromptSample]:
    """Each polyp of ``images``; its mask has the image's file name in ``masks`` (white on black)."""
    samples = []
    for path in images:
        image = read_image_2d(path).array
        mask = read_image_2d(_require(masks / path.name), grayscale=True).array > 127
        samples += samples_from_image(image, mask.astype(np.uint8), f"{prefix}/{path.stem}")
    return samples


MORE_POLYPS_SOURCE = "github.com/ViniciusSimm/Colo-Retal-Induscon2023 at f459d0c668838c383b5b09e2c89db4efa3cee03a"
"""The repository the shared Kvasir subset was cut from (its first 200 pairs in sorted order): 998 Kvasir-SEG pairs
and 609 CVC-ClinicDB frames, all resized to 256 x 256, in ``datasets/``."""
UNSEEN_POLYPS = slice(200, 300)
"""Kvasir images after the shared subset that no model here trains on or is chosen with: a test of new images."""


def more_polyps(datasets: Path, part: str) -> list[PromptSample]:
    """Kvasir-SEG polyps beyond the shared subset, from ``datasets`` of a copy of :data:`MORE_POLYPS_SOURCE`:
    ``train`` is the pairs after :data:`UNSEEN_POLYPS` in sorted order (698), ``unseen`` those 100. Check the copy
    with :func:`check_polyp_copy` first: its first 200 pairs must be the shared subset, or a held-out polyp could
    train."""
    if part not in ("train", "unseen"):
        raise ValueError(f"part must be 'train' or 'unseen', got {part!r}")
    folder = Path(datasets) / "Kvasir-SEG"
    images = sorted(_require(folder / "images").glob("*.jpg"))
    if len(images) <= UNSEEN_POLYPS.stop:
        raise ValueError(f"{folder / 'images'} holds {len(images)} images; the copy of {MORE_POLYPS_SOURCE} "
                         f"has 998")
    chosen = images[UNSEEN_POLYPS] if part == "unseen" else images[UNSEEN_POLYPS.stop:]
    return _polyps(chosen, folder / "masks", "kvasir_more")


def check_polyp_copy(datasets: Path, shared_root: Path) -> None:
    """Refuse a copy whose first 200 Kvasir images (sorted) are not, byte for byte, the shared subset's: its later
    images would then not be new to the models trained on the subset's first 160."""
    ours = sorted(_require(Path(shared_root) / "kvasir_seg_subset" / "images").glob("*.jpg"))
    theirs = sorted(_require(Path(datasets) / "Kvasir-SEG" / "images").glob("*.jpg"))[:len(ours)]
    for mine, copy in zip(ours, theirs, strict=False):
        if mine.name != copy.name or mine.read_bytes() != copy.read_bytes():
            raise ValueError(f"{copy} is not the shared subset's {mine.name}: the polyp copy must be "
                             f"{MORE_POLYPS_SOURCE}, whose first {len(ours)} sorted pairs are the subset")
    if len(theirs) < len(ours):
        raise ValueError(f"{Path(datasets) / 'Kvasir-SEG' / 'images'} holds fewer images than the shared subset")


def cvc_clinicdb(datasets: Path) -> list[PromptSample]:
    """Every polyp of the CVC-ClinicDB frames in ``datasets`` of a copy of :data:`MORE_POLYPS_SOURCE` (another
    centre and camera than Kvasir's: a test of a new source, never trained on)."""
    folder = Path(datasets) / "CVC-ClinicDB"
    images = sorted(_require(folder / "images").glob("*.jpg"), key=lambda path: (len(path.stem), path.stem))
    return _polyps(images, folder / "masks", "cvc")


MORE_CT_SOURCE = "github.com/wasserth/TotalSegmentator at 0e65a448d557382b1e925276212b3bec7f5aff83"
"""Where ``example_ct_sm`` (the CT training scan) comes from (``tests/reference_files``): the whole scan,
``example_ct.nii.gz`` (112 slices, of which ``example_ct_sm`` keeps 82-111), and TotalSegmentator's labels of it all,
``example_seg_fast_force_split.nii.gz``."""
MORE_CT_SLICES = range(82)


def _whole_ct_scan(folder: Path, shared_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The CT training scan and its labels from ``folder`` holding the two files of :data:`MORE_CT_SOURCE`; its last
    30 slices must be ``example_ct_sm`` in ``shared_root``, voxel for voxel."""
    volume = read_nifti(_require(Path(folder) / "example_ct.nii.gz")).array
    labels = read_nifti(_require(Path(folder) / "example_seg_fast_force_split.nii.gz")).array
    known = read_nifti(_require(Path(shared_root) / "totalsegmentator_examples" / "example_ct_sm.nii.gz")).array
    if volume.shape != labels.shape or not np.array_equal(volume[MORE_CT_SLICES.stop:], known):
        raise ValueError(f"{folder}: example_ct.nii.gz {volume.shape} and its labels {labels.shape} are not the whole "
                         f"scan of example_ct_sm {known.shape} with its labels ({MORE_CT_SOURCE})")
    return volume, labels


def more_ct(folder: Path, shared_root: Path) -> list[PromptSample]:
    """Every organ on the slices of the CT training scan that ``example_ct_sm`` leaves out (:data:`MORE_CT_SLICES`:
    pelvis and lower abdomen), from ``folder`` holding the two files of :data:`MORE_CT_SOURCE` (the same patient:
    the held-out DICOM series stays unseen)."""
    volume, labels = _whole_ct_scan(folder, shared_root)
    return samples_from_volume(volume, labels, "ct_full", modality="ct", slices=MORE_CT_SLICES)


def box_3d_prompts(ct_folder: Path, shared_root: Path) -> list[PromptSample]:
    """Organs prompted with their 3D box's rectangle on every slice they cross
    (:func:`~gnnseg.seg.sam.training.samples.box_3d_samples`): on the CT slices :func:`more_ct` reads (3D boxes over
    those slices; ``example_ct_sm``, the challenge-format 3D case, stays out) and on the MR training slices."""
    volume, labels = _whole_ct_scan(ct_folder, shared_root)
    ct = box_3d_samples(volume, labels, "ct_full", modality="ct", slices=MORE_CT_SLICES)
    folder = Path(shared_root) / "totalsegmentator_examples"
    mr_volume = read_nifti(_require(folder / "example_mr_sm.nii.gz")).array
    mr_labels = read_nifti(_require(folder / "example_seg_mr.nii.gz")).array
    return ct + box_3d_samples(mr_volume, mr_labels, "mr_sm", modality="mr", slices=MR_TRAINING_SLICES)


def isbi_cells(root: Path, part: str) -> list[PromptSample]:
    """ISBI 2012 EM: every cell (dark membranes separate them) of images 0-23 (train) or 24-29 (val)."""
    folder = root / "isbi2012_em" / "train"
    numbers = range(24) if part == "train" else range(24, 30)
    samples = []
    for number in numbers:
        image = read_image_2d(_require(folder / "image" / f"{number}.png"), grayscale=True).array
        cells = read_image_2d(folder / "label" / f"{number}.png", grayscale=True).array > 127
        samples += samples_from_image(image, cells.astype(np.uint8), f"isbi/{number}")
    return samples


def drive_vessels(root: Path, part: str) -> list[PromptSample]:
    """DRIVE vessel trees: the 20 training images (train) or test images 01-05 (val)."""
    folder = _require(root / "drive" / ("training" if part == "train" else "test"))
    paths = sorted((folder / "images").glob("*.tif"))
    if part != "train":
        paths = paths[:5]
    samples = []
    for path in paths:
        number = path.stem.split("_")[0]
        vessels = read_image_2d(folder / "1st_manual" / f"{number}_manual1.gif", grayscale=True).array > 127
        samples += samples_from_image(read_image_2d(path).array, vessels.astype(np.uint8), f"drive/{number}")
    return samples


def ct_organs(root: Path, part: str) -> list[PromptSample]:
    """CT organs: ``example_ct_sm`` (train) or the DICOM series on its label map's grid (val)."""
    folder = root / "totalsegmentator_examples"
    if part == "train":
        volume = read_nifti(_require(folder / "example_ct_sm.nii.gz"))
        labels = read_nifti(folder / "example_seg.nii.gz")
        return samples_from_volume(volume.array, labels.array, "ct_sm", modality="ct")
    labels = read_nifti(_require(folder / "example_seg_dicom.nii.gz"))
    series = reorient_like(read_dicom_series(folder / "example_ct_dicom"), labels)
    return samples_from_volume(series.array, labels.array, "ct_dicom", modality="ct")


MR_TRAINING_SLICES = range(14)


def mr_organs(root: Path, part: str) -> list[PromptSample]:
    """MR organs of ``example_mr_sm``: slices 0-13 (train) or 14-19 (val)."""
    folder = root / "totalsegmentator_examples"
    volume = read_nifti(_require(folder / "example_mr_sm.nii.gz")).array
    labels = read_nifti(_require(folder / "example_seg_mr.nii.gz")).array
    slices = MR_TRAINING_SLICES if part == "train" else range(MR_TRAINING_SLICES.stop, volume.shape[0])
    return samples_from_volume(volume, labels, "mr_sm", modality="mr", slices=slices)


_READERS = {"endoscopy": kvasir, "EM": isbi_cells, "fundus": drive_vessels, "CT": ct_organs, "MR": mr_organs}


def pooled(sets: dict[str, list[PromptSample]]) -> tuple[list[PromptSample], np.ndarray, np.ndarray]:
    """The modalities' objects in one list, each object's modality, and its draw weight (its modality's share of
    :data:`SHARES` spread over the modality's objects)."""
    samples = [sample for modality in MODALITIES for sample in sets[modality]]
    modality_of = np.array([modality for modality in MODALITIES for _ in sets[modality]])
    return samples, modality_of, np.array([SHARES[m] / len(sets[m]) for m in modality_of])


def load_corpus(root: str | Path, part: str, modalities: tuple[str, ...] = MODALITIES) -> dict[str, list[PromptSample]]:
    """Samples per modality for ``part`` in ``{"train", "val"}``."""
    if part not in ("train", "val"):
        raise ValueError(f"part must be 'train' or 'val', got {part!r}")
    unknown = sorted(set(modalities) - set(_READERS))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; choose from {list(MODALITIES)}")
    return {modality: _READERS[modality](Path(root), part) for modality in modalities}
