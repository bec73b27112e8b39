"""dataset.json read in full (regions, ignore label, readers, numTraining, case lists), MetaImage / NRRD round
trips, and `seg convert folder`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gnnseg.seg.io import ImageFormatError, MedicalImage, RawDataset, read_any, write_any
from gnnseg.seg.io.dataset_labels import DatasetLabels
from gnnseg.seg.io.folder_conversion import convert_folder
from gnnseg.seg.io.image2d import write_image_2d

BRATS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}


def _dataset(root: Path, cases: int = 2, **manifest) -> Path:
    """A 2D raw dataset of ``cases`` 8x8 cases whose labels hold 0..3; ``manifest`` overrides dataset.json keys."""
    for k in range(cases):
        write_image_2d(np.full((8, 8), 10 + k, np.uint8), root / "imagesTr" / f"c{k}_0000.png")
        label = np.zeros((8, 8), np.uint8)
        label[2:6, 2:6], label[3:5, 3:5], label[4, 4] = 1, 2, 3
        write_image_2d(label, root / "labelsTr" / f"c{k}.png")
    document = {"channel_names": {"0": "grey"}, "labels": {"background": 0, "a": 1, "b": 2, "c": 3},
                "numTraining": cases, "file_ending": ".png", **manifest}
    (root / "dataset.json").write_text(json.dumps({k: v for k, v in document.items() if v is not None}))
    return root


def test_region_labels_with_their_order_and_ignore_label(tmp_path):
    dataset = RawDataset.open(_dataset(tmp_path, labels={**BRATS, "ignore": 4}, regions_class_order=[1, 2, 3]))
    model = dataset.label_model
    assert model.has_regions and model.regions == [(1, 2, 3), (2, 3), 3]
    assert (model.ignore_label, model.num_outputs, model.all_labels) == (4, 3, [0, 1, 2, 3])
    assert dataset.regions_class_order == (1, 2, 3)
    assert dataset.load_case("c0").label.array.max() == 3
    plain = RawDataset.open(_dataset(tmp_path / "plain", labels={"background": 0, "a": 1, "b": 2, "c": 3,
                                                                 "ignore": 4})).label_model
    assert (plain.has_regions, plain.num_outputs, plain.scored, plain.ignore_label) == (False, 4, [1, 2, 3], 4)


def test_paint_regions_in_order_later_regions_win():
    model = DatasetLabels.from_json(BRATS, [1, 2, 3])
    probabilities = np.array([[0.9, 0.9, 0.9, 0.1], [0.2, 0.8, 0.7, 0.1], [0.1, 0.1, 0.6, 0.9]])
    np.testing.assert_array_equal(model.paint_regions(probabilities, np.zeros(4, np.int16)), [1, 2, 3, 3])
    # a predicted map's values are named after the region painted with them (DICOM-SEG segment names)
    assert model.predicted_names() == {1: "whole_tumor", 2: "tumor_core", 3: "enhancing_tumor"}
    plain = DatasetLabels.from_json({"background": 0, "liver": 1, "spleen": 2, "ignore": 3})
    assert plain.predicted_names() == {1: "liver", 2: "spleen"}


@pytest.mark.parametrize(("manifest", "message"), [
    ({"labels": BRATS}, "need 'regions_class_order'"),
    ({"labels": BRATS, "regions_class_order": [1, 2]}, "regions_class_order has 2 entries for 3 regions"),
    ({"labels": {"background": 0, "a": 1, "b": 1}}, "labels 'a' and 'b' both have value 1"),
    ({"labels": {"background": 1, "a": 2}}, "label 'background' must be 0"),
    ({"labels": {"a": 1}}, "labels lack 'background'"),
    ({"labels": {"background": 0, "a": 1, "b": 2, "c": 3, "r": [2, 9]}, "regions_class_order": [1, 2, 3, 3]},
     "region 'r' names [9], which is not a foreground label"),
    ({"labels": {"background": 0, "a": 1, "b": 2, "c": 3, "ignore": 7}}, "ignore label must be the highest value"),
    ({"labels": {"background": 0, "a": 1, "b": 2, "r": [1, 3], "ignore": 3}, "regions_class_order": [1, 2, 1]},
     "region 'r' names the ignore label 3"),
    ({"labels": {"background": 0, "a": 1, "b": 2, "c": 3, "ignore": [4]}}, "ignore label must be one integer"),
    ({"labels": {"background": 0, "a": 1, "c": 3}}, "must be consecutive"),
    ({"labels": {"background": 0, "a": 1.5}}, "not an integer"),
    ({"labels": {"background": 0}}, "labels name background only"),
    ({"labels": BRATS, "regions_class_order": 3}, "regions_class_order must be a list of label values"),
    ({"overwrite_image_reader_writer": ["SimpleITKIO"]}, "overwrite_image_reader_writer must be one reader's name"),
    ({"file_ending": ".mhd"}, "file_ending '.mhd' keeps header and data apart"),
    ({"numTraining": 5}, "numTraining is 5 but 2 training cases are there"),
    ({"modalities": {"0": "CT"}}, "unknown keys ['modalities']"),
    ({"overwrite_image_reader_writer": "NibabelIOWithReorient"}, "'NibabelIOWithReorient' is not supported"),
    ({"overwrite_image_reader_writer": "Tiff3DIO"}, "'Tiff3DIO' is not supported"),
    ({"overwrite_image_reader_writer": "MyReader"}, "'MyReader' is not one of nnU-Net's readers"),
    ({"overwrite_image_reader_writer": "NibabelIO"}, "NibabelIO does not read '.png' files"),
    ({"channel_names": {"1": "CT"}}, "channel_names must map '0', '1', ..."),
    ({"dataset": {"c0": {"images": ["imagesTr/c0_0000.png", "imagesTr/c1_0000.png"], "label": "labelsTr/c0.png"}},
      "numTraining": 1}, "dataset['c0'] lists 2 images for 1 channels"),
])
def test_inconsistent_dataset_json_is_one_line_naming_the_file(tmp_path, manifest, message):
    root = _dataset(tmp_path, **manifest)
    with pytest.raises(ImageFormatError) as error:
        RawDataset.open(root)
    assert message in str(error.value) and str(root / "dataset.json") in str(error.value)
    assert "\n" not in str(error.value)


def test_readers_by_name_and_case_lists(tmp_path):
    dataset = RawDataset.open(_dataset(tmp_path, overwrite_image_reader_writer="NaturalImage2DIO",
                                       name="Dataset501_X", description="two squares"))
    assert (dataset.image_reader, dataset.name, dataset.case_ids()) == ("NaturalImage2DIO", "Dataset501_X",
                                                                         ["c0", "c1"])
    nifti = tmp_path / "nifti"
    write_any(MedicalImage(np.ones((2, 3, 3), np.float32), (2.0, 1.0, 1.0)), nifti / "imagesTr" / "v_0000.nii.gz")
    write_any(MedicalImage(np.ones((2, 3, 3), np.uint8), (2.0, 1.0, 1.0)), nifti / "labelsTr" / "v.nii.gz")
    (nifti / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1}, "numTraining": 1,
        "file_ending": ".nii.gz", "overwrite_image_reader_writer": "SimpleITKIO"}))
    assert RawDataset.open(nifti).load_case("v").spacing == (2.0, 1.0, 1.0)
    listed = RawDataset.open(_dataset(tmp_path / "listed", numTraining=1, dataset={
        "only": {"images": ["imagesTr/c1_0000.png"], "label": "labelsTr/c1.png"}}))
    assert listed.case_ids() == ["only"]
    assert listed.load_case("only").channels[0].array[0, 0] == 11      # c1's file


def test_label_values_beyond_the_declared_ones_are_refused_by_case(tmp_path):
    root = _dataset(tmp_path, labels={"background": 0, "a": 1, "b": 2})
    with pytest.raises(ImageFormatError, match=r"case c0: label values \[3\] are not declared"):
        RawDataset.open(root).load_case("c0")


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_metaimage_and_nrrd_round_trip_array_spacing_origin_direction(tmp_path, suffix):
    sitk = pytest.importorskip("SimpleITK")
    array = np.random.default_rng(0).integers(0, 300, (4, 5, 6)).astype(np.int16)
    source = sitk.GetImageFromArray(array)
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    source.SetSpacing((0.5, 0.75, 2.5))
    source.SetOrigin((12.5, -7.25, 30.0))
    source.SetDirection(rotation.ravel().tolist())
    sitk.WriteImage(source, str(tmp_path / f"a{suffix}"))
    image = read_any(tmp_path / f"a{suffix}")
    np.testing.assert_array_equal(image.array, array)
    np.testing.assert_allclose(image.spacing, (2.5, 0.75, 0.5), rtol=1e-12)
    # the RAS affine: LPS flipped on x and y, columns scaled by the x, y, z voxel sizes
    expected = np.diag([-1.0, -1.0, 1.0]) @ rotation @ np.diag([0.5, 0.75, 2.5])
    np.testing.assert_allclose(image.affine[:3, :3], expected, atol=1e-12)
    np.testing.assert_allclose(image.affine[:3, 3], (-12.5, 7.25, 30.0))
    write_any(image, tmp_path / f"b{suffix}")
    back = sitk.ReadImage(str(tmp_path / f"b{suffix}"))
    read_first = sitk.ReadImage(str(tmp_path / f"a{suffix}"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)
    assert back.GetSpacing() == read_first.GetSpacing() and back.GetOrigin() == read_first.GetOrigin()
    assert back.GetDirection() == read_first.GetDirection()
    with pytest.raises(FileExistsError):
        write_any(image, tmp_path / f"b{suffix}")


def test_a_nifti_and_a_metaimage_of_one_volume_read_the_same(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    source = sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    source.SetSpacing((0.8, 0.9, 3.0))
    source.SetOrigin((1.0, 2.0, 3.0))
    for suffix in (".nii.gz", ".mha"):
        sitk.WriteImage(source, str(tmp_path / f"v{suffix}"))
    nifti, meta = read_any(tmp_path / "v.nii.gz"), read_any(tmp_path / "v.mha")
    np.testing.assert_array_equal(nifti.array, meta.array)
    np.testing.assert_allclose(nifti.affine, meta.affine, atol=1e-6)


def _pairs(root: Path, masks: dict[str, np.ndarray], suffix: str = ".png") -> tuple[Path, Path]:
    for stem, mask in masks.items():
        image = np.arange(mask.size, dtype=np.uint8).reshape(mask.shape)
        if suffix == ".png":
            write_image_2d(image, root / "images" / f"{stem}.png")
            write_image_2d(mask.astype(np.uint8), root / "masks" / f"{stem}.png")
        else:
            write_any(MedicalImage(image, (2.0, 1.0, 1.0)), root / "images" / f"{stem}{suffix}")
            write_any(MedicalImage(mask.astype(np.uint8), (2.0, 1.0, 1.0)), root / "masks" / f"{stem}{suffix}")
    return root / "images", root / "masks"


def test_convert_folder_round_trip_2d_and_3d(tmp_path):
    binary = {f"case{k}": np.pad(np.full((3, 3), 255), 2) for k in range(3)}     # 0/255 masks: one foreground
    dataset = convert_folder(*_pairs(tmp_path / "2d", binary), tmp_path / "Dataset501_Spots")
    assert (dataset.name, dataset.file_ending, dataset.labels) == ("Dataset501_Spots", ".png",
                                                                    {"background": 0, "foreground": 1})
    assert dataset.case_ids() == ["case0", "case1", "case2"]
    case = dataset.load_case("case1")
    np.testing.assert_array_equal(case.label.array, binary["case1"] // 255)
    assert json.loads((tmp_path / "Dataset501_Spots" / "dataset.json").read_text())["numTraining"] == 3

    volumes = {"a": np.zeros((2, 4, 4), int), "b": np.ones((2, 4, 4), int) * 2}
    volumes["a"][1, 1:3, 1:3] = 1
    dataset = convert_folder(*_pairs(tmp_path / "3d", volumes, ".mha"), tmp_path / "vol", name="Dataset502_V",
                             labels={"liver": 1, "tumor": 2})
    assert (dataset.name, dataset.file_ending) == ("Dataset502_V", ".mha")
    assert dataset.labels == {"background": 0, "liver": 1, "tumor": 2}
    case = dataset.load_case("a")
    assert case.spacing == (2.0, 1.0, 1.0)
    np.testing.assert_array_equal(case.label.array, volumes["a"])


def test_convert_folder_refusals_leave_nothing_behind(tmp_path):
    images, masks = _pairs(tmp_path / "in", {"x": np.eye(4, dtype=int), "y": np.eye(4, dtype=int)})
    write_image_2d(np.zeros((4, 4), np.uint8), images / "lonely.png")
    with pytest.raises(ImageFormatError, match=r"1 files have no partner of the same name: .*lonely.png"):
        convert_folder(images, masks, tmp_path / "out")
    (images / "lonely.png").unlink()
    write_any(MedicalImage(np.zeros((2, 4, 4), np.uint8), (1.0, 1.0, 1.0)), images / "z.nii.gz")
    write_any(MedicalImage(np.zeros((2, 4, 4), np.uint8), (1.0, 1.0, 1.0)), masks / "z.nii.gz")
    with pytest.raises(ImageFormatError, match="images mix 2D and 3D"):
        convert_folder(images, masks, tmp_path / "out")
    (images / "z.nii.gz").unlink()
    (masks / "z.nii.gz").unlink()
    write_any(MedicalImage(np.full((4, 4), 0.5, np.float32), (1.0, 1.0)), images / "f.nii.gz")
    write_any(MedicalImage(np.full((4, 4), 0.5, np.float32), (1.0, 1.0)), masks / "f.nii.gz")
    with pytest.raises(ImageFormatError, match=r"f.nii.gz: not an integer label map \(values such as \[0.5"):
        convert_folder(images, masks, tmp_path / "out")
    (images / "f.nii.gz").unlink()
    (masks / "f.nii.gz").unlink()
    with pytest.raises(ImageFormatError, match=r"label values \[1\] that the given labels"):
        convert_folder(images, masks, tmp_path / "out", labels={"other": 2})
    volumes = _pairs(tmp_path / "grid", {"v": np.ones((2, 4, 4), int)}, ".mha")
    (volumes[1] / "v.mha").unlink()
    write_any(MedicalImage(np.ones((2, 4, 4), np.uint8), (3.0, 1.0, 1.0)), volumes[1] / "v.mha")
    with pytest.raises(ImageFormatError, match=r"case v: mask v.mha is not on its image's grid \(spacing"):
        convert_folder(*volumes, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        convert_folder(images, masks, tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_cli_convert_folder_writes_the_dataset_and_refuses_mixed_arguments(tmp_path, capsys, last_json):
    from gnnseg.cli import main

    masks = {f"case{k}": np.pad(np.full((3, 3), k + 1), 2) for k in range(2)}
    images, mask_folder = _pairs(tmp_path, masks)
    out = tmp_path / "Dataset503_Two"
    assert main(["seg", "convert", "folder", "--images", str(images), "--masks", str(mask_folder), "--out", str(out),
                 "--labels", "cyst=1,tumour=2", "--json"]) == 0
    answer = last_json()
    assert answer["training_cases"] == 2 and answer["labels"] == {"background": 0, "cyst": 1, "tumour": 2}
    assert RawDataset.open(out).load_case("case1").label.array.max() == 2
    assert main(["seg", "convert", "isbi2012", "src", "dst", "--images", str(images)]) == 2
    assert "--images belong to seg convert folder" in capsys.readouterr().err
    assert main(["seg", "convert", "folder", "--images", str(images), "--out", str(tmp_path / "x")]) == 2
    assert "takes --images DIR --masks DIR --out DIR" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
