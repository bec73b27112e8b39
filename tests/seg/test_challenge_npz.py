"""CVPR 2024 "MedSAM on Laptop" npz files: reading and checking cases, writing predictions."""

from __future__ import annotations

import numpy as np
import pytest

from gnnseg.seg.io.challenge_npz import (
    ChallengeCase,
    read_challenge_npz,
    segs_from_masks,
    write_challenge_segs,
)
from gnnseg.seg.io.image import ImageFormatError


def _image_2d() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(12, 16, 3)).astype(np.uint8)


def _write_input(path, **arrays):
    np.savez_compressed(path, **arrays)
    return path


def test_2d_case_round_trip(tmp_path):
    image = _image_2d()
    boxes = np.array([[1, 2, 8, 9], [4, 0, 15, 11]])
    path = _write_input(tmp_path / "2DBox_CXR_demo.npz", imgs=image, boxes=boxes)
    case = read_challenge_npz(path)
    assert isinstance(case, ChallengeCase)
    assert case.name == "2DBox_CXR_demo" and not case.is_3d and case.spacing is None
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.boxes, boxes)
    assert case.spatial_shape == (12, 16) and case.num_boxes == 2

    first, second = np.zeros((12, 16), bool), np.zeros((12, 16), bool)
    first[2:10, 1:9] = True
    second[0:12, 4:16] = True
    segs = segs_from_masks([first, second])
    assert segs.dtype == np.uint16
    assert segs[5, 2] == 1 and segs[5, 6] == 1 and segs[5, 12] == 2 and segs[11, 0] == 0   # the smaller object wins
    baseline = segs_from_masks([first, second], overlaps="box-order")
    assert baseline[5, 2] == 1 and baseline[5, 6] == 2 and baseline[5, 12] == 2   # the later box wins

    out = write_challenge_segs(tmp_path / "segs" / f"{case.name}.npz", segs, case=case)
    with np.load(out) as written:
        assert written.files == ["segs"]
        assert written["segs"].dtype == np.uint16
        np.testing.assert_array_equal(written["segs"], segs)
    assert sorted(p.name for p in out.parent.iterdir()) == ["2DBox_CXR_demo.npz"]     # no temporary file left


def test_3d_case_round_trip(tmp_path):
    volume = np.random.default_rng(1).integers(0, 256, size=(5, 7, 9)).astype(np.uint8)
    boxes = np.array([[1, 1, 0, 6, 5, 4]])
    path = _write_input(tmp_path / "3DBox_CT_demo.npz", imgs=volume, boxes=boxes, spacing=np.array([0.8, 0.8, 2.5]))
    case = read_challenge_npz(path)
    assert case.is_3d and case.spacing == (0.8, 0.8, 2.5) and case.spatial_shape == (5, 7, 9)
    segs = np.zeros((5, 7, 9), np.int64)
    segs[0:4, 1:6, 1:7] = 1
    out = write_challenge_segs(tmp_path / "3DBox_CT_demo.npz", segs, case=case, overwrite=True)
    with np.load(out) as written:
        np.testing.assert_array_equal(written["segs"], segs)
        assert written["segs"].dtype == np.uint16


def test_write_refuses_to_overwrite(tmp_path):
    target = tmp_path / "case.npz"
    write_challenge_segs(target, np.ones((3, 3), np.uint8))
    with pytest.raises(FileExistsError, match="case.npz exists; pass overwrite=True"):
        write_challenge_segs(target, np.zeros((3, 3), np.uint8))
    with np.load(target) as kept:
        assert kept["segs"].sum() == 9
    write_challenge_segs(target, np.zeros((3, 3), np.uint8), overwrite=True)
    with np.load(target) as replaced:
        assert replaced["segs"].sum() == 0


@pytest.mark.parametrize(("arrays", "message"), [
    ({"boxes": np.array([[0, 0, 3, 3]])}, r"missing key 'imgs' \(found \['boxes'\]\)"),
    ({"imgs": _image_2d()}, r"missing key 'boxes' \(found \['imgs'\]\)"),
    ({"imgs": np.zeros((4, 6, 8), np.uint8), "boxes": np.array([[0, 0, 0, 3, 3, 3]])},
     "missing key 'spacing' \\(required for 3D cases"),
])
def test_missing_keys_are_named(tmp_path, arrays, message):
    path = _write_input(tmp_path / "case.npz", **arrays)
    with pytest.raises(ImageFormatError, match=f"case.npz: {message}"):
        read_challenge_npz(path)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"imgs": np.zeros((12, 16), np.uint8), "boxes": np.array([[0, 0, 3, 3]])},
     r"2D boxes \(N, 4\) need imgs of shape \(H, W, 3\), got \(12, 16\)"),
    ({"imgs": np.zeros((12, 16, 4), np.uint8), "boxes": np.array([[0, 0, 3, 3]])},
     r"2D boxes \(N, 4\) need imgs of shape \(H, W, 3\), got \(12, 16, 4\)"),
    ({"imgs": np.zeros((12, 16), np.uint8), "boxes": np.array([[0, 0, 0, 3, 3, 3]]), "spacing": np.ones(3)},
     r"3D boxes \(N, 6\) need imgs of shape \(D, H, W\), got \(12, 16\)"),
    ({"imgs": _image_2d(), "boxes": np.array([[0, 0, 3, 3, 3]])},
     r"'boxes' must have shape \(N, 4\) for 2D or \(N, 6\) for 3D, got \(1, 5\)"),
    ({"imgs": _image_2d(), "boxes": np.array([0, 0, 3, 3])}, r"'boxes' must have shape .* got \(4,\)"),
    ({"imgs": _image_2d(), "boxes": np.zeros((0, 4))}, "'boxes' holds no boxes"),
    ({"imgs": _image_2d(), "boxes": np.array([[0, 0, 3, 3], [5, 1, 2, 4]])},
     r"box 1 \[5, 1, 2, 4\] is inverted \(column 2 < column 0\)"),
    ({"imgs": _image_2d(), "boxes": np.array([[0.0, np.nan, 3, 3]])}, "box 0 .* NaN or infinite"),
    ({"imgs": _image_2d() * 2.0, "boxes": np.array([[0, 0, 3, 3]])},
     r"'imgs' values must lie in \[0, 255\] \(preprocessed intensities\), got \[0.0, 510.0\]"),
    ({"imgs": np.zeros((4, 6, 8)), "boxes": np.array([[0, 0, 0, 3, 3, 3]]), "spacing": np.array([1.0, 0.0, 1.0])},
     "'spacing' must be positive finite numbers"),
    ({"imgs": np.zeros((4, 6, 8)), "boxes": np.array([[0, 0, 0, 3, 3, 3]]), "spacing": np.ones(2)},
     r"'spacing' must have 3 entries for a 3D case, got \(1.0, 1.0\)"),
])
def test_bad_contents_are_refused(tmp_path, arrays, message):
    path = _write_input(tmp_path / "case.npz", **arrays)
    with pytest.raises(ImageFormatError, match=f"case.npz: {message}"):
        read_challenge_npz(path)


def test_name_prefix_must_agree_with_contents(tmp_path):
    path = _write_input(tmp_path / "3DBox_wrong.npz", imgs=_image_2d(), boxes=np.array([[0, 0, 3, 3]]))
    with pytest.raises(ImageFormatError, match="3DBox_wrong.npz: the name says 3D but the contents are 2D"):
        read_challenge_npz(path)
    path = _write_input(tmp_path / "2DBox_wrong.npz", imgs=np.zeros((3, 4, 5), np.uint8),
                        boxes=np.array([[0, 0, 0, 2, 2, 2]]), spacing=np.ones(3))
    with pytest.raises(ImageFormatError, match="the name says 2D but the contents are 3D"):
        read_challenge_npz(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        read_challenge_npz(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(ImageFormatError, match="cannot read challenge npz file .*garbage.npz"):
        read_challenge_npz(garbage)
    single = tmp_path / "single.npz"
    with open(single, "wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(ImageFormatError, match="single.npz: not an npz archive"):
        read_challenge_npz(single)
    pickled = _write_input(tmp_path / "pickled.npz", imgs=np.array([{"a": 1}], dtype=object),
                           boxes=np.array([[0, 0, 1, 1]]))
    with pytest.raises(ImageFormatError, match="cannot read challenge npz file .*pickled.npz"):
        read_challenge_npz(pickled)


def test_write_checks(tmp_path):
    case = ChallengeCase(name="c", image=np.zeros((4, 5, 3), np.uint8), boxes=np.array([[0, 0, 2, 2]]),
                         spacing=None, is_3d=False)
    with pytest.raises(ImageFormatError, match=r"segs has shape \(5, 4\) but case 'c' has spatial shape \(4, 5\)"):
        write_challenge_segs(tmp_path / "c.npz", np.zeros((5, 4), np.uint8), case=case)
    with pytest.raises(ImageFormatError, match="segs has label 2 but case 'c' has only 1 boxes"):
        write_challenge_segs(tmp_path / "c.npz", np.full((4, 5), 2, np.uint8), case=case)
    with pytest.raises(ImageFormatError, match="integer labels, got dtype float32"):
        write_challenge_segs(tmp_path / "c.npz", np.zeros((4, 5), np.float32))
    with pytest.raises(ImageFormatError, match=r"labels must lie in \[0, 65535\], got \[-1, 0\]"):
        write_challenge_segs(tmp_path / "c.npz", np.array([[-1, 0]]))
    with pytest.raises(ImageFormatError, match="c.npy: challenge predictions are .npz files"):
        write_challenge_segs(tmp_path / "c.npy", np.zeros((4, 5), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_segs_from_masks_errors():
    with pytest.raises(ValueError, match="masks is empty"):
        segs_from_masks([])
    with pytest.raises(ValueError, match=r"mask 1 has shape \(3, 3\) but the labels have shape \(2, 2\)"):
        segs_from_masks([np.zeros((2, 2)), np.zeros((3, 3))])
    with pytest.raises(ValueError, match="mask 0 contains NaN"):
        segs_from_masks([np.array([[np.nan, 0.0]])])
