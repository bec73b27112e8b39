"""Medical image I/O: round trips, DICOM ordering and rescaling, raw-layout checks, converters."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from gnnseg.seg.io import (
    ImageFormatError,
    MedicalImage,
    RawDataset,
    axis_codes,
    convert_drive,
    convert_isbi2012,
    convert_kvasir,
    read_dicom_files,
    read_dicom_series,
    read_image_2d,
    read_nifti,
    reorient,
    reorient_like,
    write_image_2d,
    write_nifti,
    write_raw_dataset,
)
from gnnseg.seg.io.challenge_npz import read_challenge_npz
from gnnseg.seg.io.image import ImageTooLargeError
from tests.conftest import require_dataset

TOTALSEG = "totalsegmentator_examples"


def test_nifti_round_trip_keeps_values_spacing_and_affine(tmp_path):
    affine = np.array([[-1.5, 0, 0, 10], [0, 0.8, 0, -20], [0, 0, 3.0, 5], [0, 0, 0, 1]])
    data = np.random.default_rng(0).integers(-1000, 1000, size=(7, 6, 5)).astype(np.int16)   # (x, y, z)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "ct.nii.gz")
    image = read_nifti(tmp_path / "ct.nii.gz")
    assert image.array.shape == (5, 6, 7) and image.array.dtype == np.int16   # (z, y, x)
    assert image.spacing == pytest.approx((3.0, 0.8, 1.5))   # the header stores float32
    np.testing.assert_array_equal(image.array[2, 3, 4], data[4, 3, 2])
    write_nifti(image, tmp_path / "copy.nii.gz")
    again = nib.load(tmp_path / "copy.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(again.dataobj), data)
    np.testing.assert_allclose(again.affine, affine)
    with pytest.raises(FileExistsError, match="copy.nii.gz exists"):
        write_nifti(image, tmp_path / "copy.nii.gz")


def test_nifti_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        read_nifti(tmp_path / "missing.nii.gz")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(ImageFormatError, match="cannot read NIfTI file .*broken.nii.gz"):
        read_nifti(broken)


def test_real_ct_volume():
    image = read_nifti(require_dataset(f"{TOTALSEG}/example_ct_sm.nii.gz"))
    assert image.array.shape == (30, 101, 122) and image.spacing == (3.0, 3.0, 3.0)
    assert image.array.min() == -1100 and image.array.max() == 1207


def test_dicom_series_sorted_by_position_and_rescaled(tmp_path):
    source = require_dataset(f"{TOTALSEG}/example_ct_dicom")
    shuffled = tmp_path / "series"
    shuffled.mkdir()
    files = sorted(source.iterdir())
    for k, path in enumerate(reversed(files)):            # file names now run against slice order
        shutil.copy(path, shuffled / f"slice_{k:03d}.dcm")
    (shuffled / "README.txt").write_text("not a DICOM file")
    volume = read_dicom_series(shuffled)
    assert volume.array.shape == (20, 512, 512)
    assert volume.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    positions = [float(pydicom.dcmread(shuffled / name).ImagePositionPatient[2]) for name in volume.metadata["files"]]
    assert positions == sorted(positions)
    first = pydicom.dcmread(shuffled / volume.metadata["files"][0])
    expected = first.pixel_array.astype(np.int32) * int(first.RescaleSlope) + int(first.RescaleIntercept)
    np.testing.assert_array_equal(volume.array[0], expected)
    assert volume.array.min() == -1024                     # air in Hounsfield units after the intercept


def test_dicom_orientation_matches_its_label_map():
    volume = read_dicom_series(require_dataset(f"{TOTALSEG}/example_ct_dicom"))
    labels = read_nifti(require_dataset(f"{TOTALSEG}/example_seg_dicom.nii.gz"))
    aligned = reorient_like(volume, labels)
    np.testing.assert_allclose(aligned.affine, labels.affine, atol=1e-2)
    liver = aligned.array[labels.array == 5]
    assert 40 < liver.mean() < 150          # enhanced liver parenchyma in HU: the grids really line up
    spleen = aligned.array[labels.array == 1]
    assert 40 < spleen.mean() < 150


def test_reorient_stores_the_same_voxels_in_the_training_images_axis_order():
    """The DICOM series is LAS, the TotalSegmentator training volume RAS: reoriented to RAS, the liver moves to
    the side of the x axis where the training volume has it, and reorienting back restores the series."""
    training = read_nifti(require_dataset(f"{TOTALSEG}/example_seg.nii.gz"))
    labels = read_nifti(require_dataset(f"{TOTALSEG}/example_seg_dicom.nii.gz"))
    assert axis_codes(training) == ("R", "A", "S") and axis_codes(labels) == ("L", "A", "S")

    def liver_side(image):  # mean x of the liver (label 5) as a fraction of the width
        return np.argwhere(image.array == 5)[:, 2].mean() / image.array.shape[2]

    as_training = reorient(labels, axis_codes(training))
    assert axis_codes(as_training) == ("R", "A", "S")
    assert liver_side(training) > 0.5 and liver_side(labels) < 0.5 and liver_side(as_training) > 0.5
    np.testing.assert_array_equal(as_training.array, labels.array[:, :, ::-1])
    corner = np.array([labels.array.shape[2] - 1, 0, 0, 1])  # the first stored voxel of as_training
    np.testing.assert_allclose(as_training.affine @ [0, 0, 0, 1], labels.affine @ corner)
    back = reorient_like(as_training, labels)
    np.testing.assert_array_equal(back.array, labels.array)
    with pytest.raises(ImageFormatError, match="needs an affine"):
        reorient(MedicalImage(labels.array, labels.spacing), ("R", "A", "S"))


def test_dicom_errors(tmp_path):
    with pytest.raises(ImageFormatError, match="no DICOM image files"):
        (tmp_path / "empty").mkdir()
        read_dicom_series(tmp_path / "empty")
    source = require_dataset(f"{TOTALSEG}/example_ct_dicom")
    twins = tmp_path / "twins"
    twins.mkdir()
    first = sorted(source.iterdir())[0]
    shutil.copy(first, twins / "a.dcm")
    shutil.copy(first, twins / "b.dcm")
    with pytest.raises(ImageFormatError, match="share the position"):
        read_dicom_series(twins)


def _series_copy(tmp_path, name="series"):
    source = require_dataset(f"{TOTALSEG}/example_ct_dicom")
    series = tmp_path / name
    shutil.copytree(source, series)
    return series, sorted(series.iterdir())


def test_a_series_with_a_missing_or_broken_slice_is_refused_by_name(tmp_path):
    """A gap would put every slice after it 2 mm off; a garbage file is not passed over as a note."""
    series, files = _series_copy(tmp_path, "gap")
    files[7].unlink()
    with pytest.raises(ImageFormatError, match=r"not evenly spaced \(1 uneven gap\(s\)\).*4\.000 mm where the "
                                                r"series steps 2\.000 mm"):
        read_dicom_series(series)
    series, files = _series_copy(tmp_path, "garbage")
    files[5].write_bytes(b"\x00" * 64 + b"not dicom at all")
    with pytest.raises(ImageFormatError, match=f"{files[5].name} is not a readable DICOM file"):
        read_dicom_series(series)
    series, files = _series_copy(tmp_path, "truncated")
    files[3].write_bytes(files[3].read_bytes()[:-4000])
    with pytest.raises(ImageFormatError, match=files[3].name):
        read_dicom_series(series)


def test_sizes_are_refused_from_the_headers_before_decoding(tmp_path):
    series, files = _series_copy(tmp_path)
    with pytest.raises(ImageTooLargeError, match="declares 20 x 512 x 512 = 5,242,880 voxels, over the limit"):
        read_dicom_series(series, max_voxels=5_000_000)
    in_memory = read_dicom_files({path.name: path.read_bytes() for path in files}, "upload.zip")
    np.testing.assert_array_equal(in_memory.array, read_dicom_series(series).array)

    header = nib.Nifti1Header()
    header.set_data_shape((32767, 32767, 32767))
    header.set_data_dtype(np.int16)
    huge = tmp_path / "huge.nii"
    huge.write_bytes(header.binaryblock + b"\x00" * 4 + b"\x00" * 1000)
    with pytest.raises(ImageTooLargeError, match="32767 x 32767 x 32767"):
        read_nifti(huge, max_voxels=10**8)
    with pytest.raises(ImageFormatError, match="truncated: its header declares 32767 x 32767 x 32767"):
        read_nifti(huge)

    from PIL import Image
    Image.new("L", (3000, 2000)).save(tmp_path / "wide.png")
    with pytest.raises(ImageTooLargeError, match="2000 x 3000 = 6,000,000 pixels"):
        read_image_2d(tmp_path / "wide.png", max_pixels=1_000_000)
    assert read_image_2d(tmp_path / "wide.png", max_pixels=6_000_000).array.shape == (2000, 3000)

    np.savez(tmp_path / "2D_boxes.npz", imgs=np.zeros((8, 8, 3), np.uint8), boxes=np.tile([[0, 0, 4, 4]], (500, 1)))
    with pytest.raises(ImageTooLargeError, match="500 boxes, over the limit of 64"):
        read_challenge_npz(tmp_path / "2D_boxes.npz", max_boxes=64)
    with pytest.raises(ImageTooLargeError, match="imgs \\(8, 8, 3\\)"):
        read_challenge_npz(tmp_path / "2D_boxes.npz", max_values=100)


def test_a_folder_given_as_a_file_says_so(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):
        read_image_2d(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):
        read_nifti(tmp_path)


def test_2d_round_trip_and_errors(tmp_path):
    array = np.random.default_rng(1).integers(0, 255, size=(9, 11, 3)).astype(np.uint8)
    write_image_2d(array, tmp_path / "rgb.png")
    image = read_image_2d(tmp_path / "rgb.png")
    np.testing.assert_array_equal(image.array, array)
    assert image.num_channels == 3 and image.spatial_shape == (9, 11)
    with pytest.raises(ImageFormatError, match="lossless"):
        write_image_2d(array, tmp_path / "x.jpg")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageFormatError, match="cannot read image .*bad.png"):
        read_image_2d(tmp_path / "bad.png")


def _grey(values) -> MedicalImage:
    return MedicalImage(array=np.asarray(values, dtype=np.uint8), spacing=(1.0, 1.0))


def test_raw_dataset_checks_name_the_case(tmp_path):
    image, label = _grey(np.zeros((4, 5))), _grey(np.eye(4, 5))
    dataset = write_raw_dataset(tmp_path / "ds", channel_names=["grey"], labels={"background": 0, "thing": 1},
                                file_ending=".png", training=[("case_a", [image], label), ("case_b", [image], label)])
    assert dataset.case_ids() == ["case_a", "case_b"]
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["numTraining"] == 2
    case = dataset.load_case("case_b")
    assert case.stacked().shape == (1, 4, 5) and case.label.array.sum() == 4

    write_image_2d(np.zeros((4, 6), np.uint8), dataset.label_path("case_b"), overwrite=True)
    with pytest.raises(ImageFormatError, match="case case_b: label has shape \\(4, 6\\) but image has \\(4, 5\\)"):
        dataset.load_case("case_b")
    write_image_2d((np.eye(4, 5) * 3).astype(np.uint8), dataset.label_path("case_b"), overwrite=True)
    with pytest.raises(ImageFormatError, match="case case_b: label values \\[3\\] are not declared"):
        dataset.load_case("case_b")
    dataset.label_path("case_a").unlink()
    with pytest.raises(ImageFormatError, match="case case_a: label file .* is missing"):
        dataset.load_case("case_a")
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        write_raw_dataset(tmp_path / "ds", channel_names=["grey"], labels={"background": 0}, file_ending=".png",
                          training=[])


def test_raw_dataset_spacing_mismatch_and_non_integer_labels(tmp_path):
    image = MedicalImage(array=np.zeros((3, 4, 5), np.float32), spacing=(2.0, 1.0, 1.0))
    shifted = MedicalImage(array=np.zeros((3, 4, 5), np.float32), spacing=(2.5, 1.0, 1.0))
    fractional = MedicalImage(array=np.full((3, 4, 5), 0.5, np.float32), spacing=(2.0, 1.0, 1.0))
    dataset = write_raw_dataset(tmp_path / "vol", channel_names=["MR"], labels={"background": 0, "x": 1},
                                file_ending=".nii.gz", training=[("v1", [image], shifted), ("v2", [image], fractional)])
    with pytest.raises(ImageFormatError, match="case v1: label has spacing \\(2.5, 1.0, 1.0\\)"):
        dataset.load_case("v1")
    with pytest.raises(ImageFormatError, match="case v2: label map has non-integer values \\[0.5\\]"):
        dataset.load_case("v2")


def test_raw_dataset_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.json is missing"):
        RawDataset.open(tmp_path)
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0}}')
    with pytest.raises(ImageFormatError, match="lacks \\['channel_names', 'file_ending'\\]"):
        RawDataset.open(tmp_path)


@pytest.mark.parametrize("converter,source,cases,test_cases,channels,foreground", [
    (convert_isbi2012, "isbi2012_em", 30, 30, 1, (0.15, 0.3)),
    (convert_drive, "drive", 20, 20, 3, (0.05, 0.15)),
    (convert_kvasir, "kvasir_seg_subset", 200, 0, 3, (0.1, 0.5)),
])
def test_converters_on_real_data(tmp_path, converter, source, cases, test_cases, channels, foreground):
    dataset = converter(require_dataset(source), tmp_path / source)
    assert len(dataset.case_ids()) == cases and len(dataset.case_ids("Ts")) == test_cases
    assert dataset.num_channels == channels
    case = dataset.load_case(dataset.case_ids()[0])
    assert set(np.unique(case.label.array).tolist()) == {0, 1}
    assert foreground[0] < case.label.array.mean() < foreground[1]


def test_images_pair_with_masks_by_their_whole_name(tmp_path):
    from gnnseg.seg.io.pairs import file_stem, paired_files

    suffixes = (".png", ".jpg", ".nii", ".nii.gz")
    assert file_stem("Case.1.JPG", suffixes) == "case.1" and file_stem("ct.nii.gz", suffixes) == "ct"
    assert file_stem("notes.txt", suffixes) is None
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for name in ("case.1.jpg", "case.2.jpg", "ct.nii.gz", "1.2.840.113619.2.55.jpg"):
        (images / name).write_bytes(b"")
    for name in ("case.1.png", "case.2.png", "ct.nii.gz", "1.2.840.113619.2.56.png"):
        (masks / name).write_bytes(b"")
    unmatched = r"1 image\(s\) .* 1\.2\.840\.113619\.2\.55\.jpg \(pass --allow-unmatched"
    with pytest.raises(FileNotFoundError, match=unmatched):
        paired_files(images, masks, suffixes)
    pairs = paired_files(images, masks, suffixes, allow_unmatched=True)
    assert [(image.name, mask.name) for image, mask in pairs] == [
        ("case.1.jpg", "case.1.png"), ("case.2.jpg", "case.2.png"), ("ct.nii.gz", "ct.nii.gz")]
    (masks / "case.1.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="two files named 'case.1'"):
        paired_files(images, masks, suffixes)
    with pytest.raises(FileNotFoundError, match="masks folder .* does not exist"):
        paired_files(images, tmp_path / "none", suffixes)


def test_one_dispatch_reads_and_writes_every_format(tmp_path):
    from gnnseg.seg.io import read_any, write_any

    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    volume = MedicalImage(np.arange(24, dtype=np.int16).reshape(2, 3, 4), (2.0, 1.0, 1.0))
    np.testing.assert_array_equal(read_any(write_any(MedicalImage(grey, (1.0, 1.0)), tmp_path / "a.png")).array, grey)
    np.testing.assert_array_equal(read_any(write_any(volume, tmp_path / "v.nii.gz")).array, volume.array)
    assert read_any(require_dataset(f"{TOTALSEG}/example_ct_dicom")).array.shape == (20, 512, 512)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ImageFormatError, match="unsupported file type .*notes.txt"):
        read_any(tmp_path / "notes.txt")
