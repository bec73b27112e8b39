"""The data beyond the shared corpus: which polyps train and which stay unseen, the CT training scan's other slices,
and refusing a copy that is not what it should be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gnnseg.seg.io import MedicalImage, write_nifti
from gnnseg.seg.sam.training.corpus import (
    MORE_CT_SLICES,
    MR_TRAINING_SLICES,
    UNSEEN_POLYPS,
    box_3d_prompts,
    check_polyp_copy,
    cvc_clinicdb,
    more_ct,
    more_polyps,
)


def write_pair(images: Path, masks: Path, name: str, seed: int) -> None:
    """A 32 x 32 colour frame and its mask: one 12 x 12 polyp (144 pixels) at a place set by ``seed``."""
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / name)
    mask = np.zeros((32, 32), np.uint8)
    top = int(rng.integers(0, 20))
    mask[top:top + 12, 4:16] = 255
    Image.fromarray(mask).save(masks / name)


@pytest.fixture
def copies(tmp_path: Path) -> tuple[Path, Path]:
    """A shared root with a 3-image subset, and a copy whose 310 sorted Kvasir images begin with that subset."""
    shared, copy = tmp_path / "shared", tmp_path / "copy"
    names = [f"img{i:03d}.jpg" for i in range(310)]
    for i, name in enumerate(names):
        write_pair(copy / "Kvasir-SEG" / "images", copy / "Kvasir-SEG" / "masks", name, i)
    for name in names[:3]:
        for part in ("images", "masks"):
            (shared / "kvasir_seg_subset" / part).mkdir(parents=True, exist_ok=True)
            (shared / "kvasir_seg_subset" / part / name).write_bytes((copy / "Kvasir-SEG" / part / name).read_bytes())
    return shared, copy


def test_unseen_and_training_polyps_come_from_their_own_images(copies):
    shared, copy = copies
    check_polyp_copy(copy, shared)
    unseen, train = more_polyps(copy, "unseen"), more_polyps(copy, "train")
    assert [s.source for s in unseen] == [f"kvasir_more/img{i:03d}" for i in range(UNSEEN_POLYPS.start, 300)]
    assert [s.source for s in train] == [f"kvasir_more/img{i:03d}" for i in range(300, 310)]
    assert all(s.mask.sum() == 144 and s.image.shape == (32, 32, 3) for s in unseen + train)


def test_a_copy_that_is_not_the_subsets_source_is_refused(copies):
    shared, copy = copies
    altered = shared / "kvasir_seg_subset" / "images" / "img001.jpg"
    altered.write_bytes(altered.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="img001.jpg"):
        check_polyp_copy(copy, shared)
    altered.rename(altered.with_name("other.jpg"))
    with pytest.raises(ValueError, match="not the shared subset"):
        check_polyp_copy(copy, shared)


def test_too_short_a_copy_and_an_unknown_part_are_refused(copies, tmp_path):
    _, copy = copies
    with pytest.raises(ValueError, match="'train' or 'unseen'"):
        more_polyps(copy, "val")
    short = tmp_path / "short"
    for i in range(5):
        write_pair(short / "Kvasir-SEG" / "images", short / "Kvasir-SEG" / "masks", f"{i}.jpg", i)
    with pytest.raises(ValueError, match="holds 5 images"):
        more_polyps(short, "unseen")
    with pytest.raises(FileNotFoundError, match="CVC-ClinicDB"):
        cvc_clinicdb(short)


def test_cvc_frames_are_read_in_frame_order(tmp_path):
    for number in (10, 2, 1):
        write_pair(tmp_path / "CVC-ClinicDB" / "images", tmp_path / "CVC-ClinicDB" / "masks", f"{number}.jpg", number)
    assert [s.source for s in cvc_clinicdb(tmp_path)] == ["cvc/1", "cvc/2", "cvc/10"]


def write_volume(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(MedicalImage(array, (3.0, 1.0, 1.0)), path)


def test_more_ct_takes_the_slices_the_training_scan_leaves_out_and_refuses_another_scan(tmp_path):
    depth = MORE_CT_SLICES.stop + 2
    volume = np.random.default_rng(0).integers(-100, 200, (depth, 20, 20)).astype(np.int16)
    labels = np.zeros((depth, 20, 20), np.uint8)
    labels[:, 2:14, 3:15] = 5                                            # one 144-pixel organ on every slice
    write_volume(tmp_path / "more" / "example_ct.nii.gz", volume)
    write_volume(tmp_path / "more" / "example_seg_fast_force_split.nii.gz", labels)
    write_volume(tmp_path / "shared" / "totalsegmentator_examples" / "example_ct_sm.nii.gz", volume[-2:])
    samples = more_ct(tmp_path / "more", tmp_path / "shared")
    assert len(samples) == MORE_CT_SLICES.stop and all(s.mask.sum() == 144 for s in samples)

    write_volume(tmp_path / "other" / "totalsegmentator_examples" / "example_ct_sm.nii.gz", volume[-2:] + 1)
    with pytest.raises(ValueError, match="not the whole scan of example_ct_sm"):
        more_ct(tmp_path / "more", tmp_path / "other")


def test_3d_box_prompts_come_from_the_scans_other_slices_and_the_mr_training_slices(tmp_path):
    depth = MORE_CT_SLICES.stop + 2
    volume = np.random.default_rng(0).integers(-100, 200, (depth, 20, 20)).astype(np.int16)
    labels = np.zeros((depth, 20, 20), np.uint8)
    labels[:MORE_CT_SLICES.stop, 2:14, 3:15] = 5
    labels[MORE_CT_SLICES.stop:, 0:20, 0:20] = 5                      # the challenge case's slices: not used
    write_volume(tmp_path / "more" / "example_ct.nii.gz", volume)
    write_volume(tmp_path / "more" / "example_seg_fast_force_split.nii.gz", labels)
    folder = tmp_path / "shared" / "totalsegmentator_examples"
    write_volume(folder / "example_ct_sm.nii.gz", volume[-2:])
    mr_depth = MR_TRAINING_SLICES.stop + 3
    mr_labels = np.zeros((mr_depth, 20, 20), np.uint8)
    mr_labels[:, 5:17, 5:17] = 2
    mr_labels[MR_TRAINING_SLICES.stop:, 0:20, 0:20] = 2               # held-out slices: not used
    write_volume(folder / "example_mr_sm.nii.gz", np.random.default_rng(1).random((mr_depth, 20, 20)) * 500)
    write_volume(folder / "example_seg_mr.nii.gz", mr_labels)
    samples = box_3d_prompts(tmp_path / "more", tmp_path / "shared")
    ct = [s for s in samples if s.source.startswith("ct_full")]
    mr = [s for s in samples if s.source.startswith("mr_sm")]
    assert len(ct) == MORE_CT_SLICES.stop and len(mr) == MR_TRAINING_SLICES.stop
    assert all(np.array_equal(s.prompt_box, [3, 2, 14, 13]) for s in ct)
    assert all(np.array_equal(s.prompt_box, [5, 5, 16, 16]) for s in mr)
