"""DICOM-SEG written from the 20-slice TotalSegmentator CT series and read back: the same voxels on the same grid,
every frame referencing the right slice by UID; `seg segment`, `seg predict` and the service writing it; and every
mismatch refused by name with nothing written."""

from __future__ import annotations

import io
import json
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from torch import nn

from gnnseg.cli import main
from gnnseg.seg.io import (
    ImageFormatError,
    read_dicom_headers,
    read_dicom_seg,
    read_dicom_series,
    read_nifti,
    reorient_like,
    write_dicom_seg,
    write_image_2d,
)
from gnnseg.seg.io.dicom_seg import segment_color
from tests.conftest import require_dataset

hd = pytest.importorskip("highdicom", reason="highdicom is not installed (pip install -e '.[dicom]')")

EXAMPLES = "totalsegmentator_examples"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def copy_series(source: Path, target: Path, change=None) -> Path:
    """A copy of a series, each slice's dataset passed through ``change(dataset)`` first."""
    target.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        dataset = pydicom.dcmread(path)
        if change is not None:
            change(dataset)
        dataset.save_as(target / path.name)
    return target


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    """The shared CT series with the UIDs a PACS would hold: the shipped copy was anonymised down to empty Study,
    Series, SOP Instance and SOP Class UIDs (the file meta still names each slice's SOP Instance and Class), and a
    DICOM-SEG cannot reference a slice without them."""
    study, series_uid = generate_uid(entropy_srcs=["gnnseg test study"]), generate_uid(entropy_srcs=["test series"])

    def with_uids(dataset):
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
        dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series_uid

    return copy_series(require_dataset(f"{EXAMPLES}/example_ct_dicom"),
                       tmp_path_factory.mktemp("dicom") / "ct", with_uids)


@pytest.fixture(scope="module")
def organs(series):
    """TotalSegmentator's label map of the series (31 organs) on the series' own grid, and its label names."""
    image = read_dicom_series(series)
    labels = reorient_like(read_nifti(require_dataset(f"{EXAMPLES}/example_seg_dicom.nii.gz")), image).array
    names = json.loads(require_dataset(f"{EXAMPLES}/label_names.json").read_text())["total"]
    return labels, {int(value): name for value, name in names.items()}


def two_blobs(shape=(20, 512, 512)) -> np.ndarray:
    """Label 3 on slices 2..6 and label 7 on slices 11..16 (not symmetric: frames in reversed slice order fail)."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, np.uint8)
    labels[(2 <= z) & (z <= 6) & ((y - 200) ** 2 + (x - 150) ** 2 <= 40 ** 2)] = 3
    labels[(11 <= z) & (z <= 16) & ((y - 300) ** 2 + (x - 350) ** 2 <= 25 ** 2)] = 7
    return labels


def test_the_totalsegmentator_label_map_round_trips_with_its_names_and_geometry(series, organs, tmp_path):
    labels, names = organs
    path = write_dicom_seg(labels, series, tmp_path / "organs.dcm", label_names=names, model="TotalSegmentator")
    read = read_dicom_seg(path, series)
    image = read_dicom_series(series)
    assert np.array_equal(read.image.array, labels)
    assert read.image.spacing == image.spacing == (2.0, 0.9765625, 0.9765625)
    np.testing.assert_allclose(read.image.affine, image.affine)
    present = [int(v) for v in np.unique(labels) if v]
    assert len(present) == 31 and read.names == {value: names[value] for value in present}
    assert read.names[5] == "liver" and read.names[1] == "spleen"


def test_frames_reference_the_right_slices_by_uid(series, tmp_path):
    labels = two_blobs()
    path = write_dicom_seg(labels, series, tmp_path / "blobs.dcm", label_names={3: "liver"}, model="unit test")
    headers = [dataset for _, dataset in read_dicom_headers(series)]
    files = [name for name, _ in read_dicom_headers(series)]
    assert files != sorted(files)                       # volume order is not file order here: the test can fail

    seg = pydicom.dcmread(path)                         # pydicom: the references, frame by frame
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.SegmentationType == "BINARY"
    assert seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == headers[0].StudyInstanceUID
    assert seg.SeriesInstanceUID != headers[0].SeriesInstanceUID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == headers[0].SeriesInstanceUID
    assert [item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence] == \
        [dataset.SOPInstanceUID for dataset in headers]
    slice_of = {dataset.SOPInstanceUID: z for z, dataset in enumerate(headers)}
    value_of = {1: 3, 2: 7}
    frames = seg.pixel_array
    assert len(frames) == int(seg.NumberOfFrames) == 5 + 6    # only frames holding a segment
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        z = slice_of[uid]
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, [float(v) for v in headers[z].ImagePositionPatient])
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        assert np.array_equal(frame.astype(bool), labels[z] == value_of[number])
    first, second = seg.SegmentSequence
    assert (first.SegmentLabel, second.SegmentLabel) == ("liver", "label 7")
    assert first.SegmentAlgorithmType == "AUTOMATIC" and first.SegmentAlgorithmName == "gnnseg unit test"
    assert list(first.RecommendedDisplayCIELabValue) == list(hd.color.CIELabColor.from_rgb(*segment_color(3)).value)
    assert segment_color(3) != segment_color(7)

    read = hd.seg.segread(path)                         # highdicom: a valid Segmentation it can index by slice
    assert read.segment_numbers == [1, 2] and read.segmentation_type.value == "BINARY"
    stacked = read.get_pixels_by_source_instance([d.SOPInstanceUID for d in headers], combine_segments=True)
    assert np.array_equal(stacked, np.select([labels == 3, labels == 7], [1, 2], 0))


def test_datasets_in_any_order_give_the_same_segmentation(series, tmp_path):
    datasets = [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(series.iterdir())]
    random.Random(0).shuffle(datasets)
    labels = two_blobs()
    path = write_dicom_seg(labels, datasets, tmp_path / "shuffled.dcm")
    assert np.array_equal(read_dicom_seg(path, series).image.array, labels)


def test_writing_refuses_what_it_cannot_write_and_leaves_the_folder_as_it_was(series, tmp_path):
    anonymised = require_dataset(f"{EXAMPLES}/example_ct_dicom")
    with pytest.raises(ImageFormatError, match="lacks StudyInstanceUID .*SeriesInstanceUID .*SOPInstanceUID"):
        write_dicom_seg(two_blobs(), anonymised, tmp_path / "a.dcm")
    with pytest.raises(ValueError, match="empty .*nothing was written"):
        write_dicom_seg(np.zeros((20, 512, 512), np.uint8), series, tmp_path / "b.dcm")
    with pytest.raises(ValueError, match=r"shape \(20, 256, 256\), the series \(20, 512, 512\)"):
        write_dicom_seg(np.ones((20, 256, 256), np.uint8), series, tmp_path / "c.dcm")
    with pytest.raises(ValueError, match="non-negative integers"):
        write_dicom_seg(two_blobs().astype(np.float32), series, tmp_path / "d.dcm")
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "kept.dcm"
    existing.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError, match="exists"):
        write_dicom_seg(two_blobs(), series, existing)
    assert existing.read_bytes() == b"the user's file" and list(tmp_path.iterdir()) == [existing]


def test_reading_refuses_a_segmentation_of_another_series(series, tmp_path):
    path = write_dicom_seg(two_blobs(), series, tmp_path / "blobs.dcm")
    other_frame = copy_series(series, tmp_path / "moved", lambda d: setattr(d, "FrameOfReferenceUID", "1.2.3.4"))
    with pytest.raises(ImageFormatError,
                       match="frame of reference 1.3.12.2.*, .*moved in 1.2.3.4: the segmentation was not made"):
        read_dicom_seg(path, other_frame)
    other_series = copy_series(series, tmp_path / "other", lambda d: setattr(d, "SeriesInstanceUID", "1.2.3.5"))
    with pytest.raises(ImageFormatError, match="not .*'s 1.2.3.5: the segmentation was not made on this series"):
        read_dicom_seg(path, other_series)
    shorter = copy_series(series, tmp_path / "shorter")
    last_slice = read_dicom_headers(shorter)[-1][0]    # the end slice: the rest is still evenly spaced
    (shorter / last_slice).unlink()
    with pytest.raises(ImageFormatError, match="references 1 slice\\(s\\) that .* lacks"):
        read_dicom_seg(path, shorter)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])    # frames missing
    with pytest.raises(ImageFormatError, match="truncated.dcm declares 11 frames but holds the pixels of 7: its "
                                               "frames are missing"):
        read_dicom_seg(truncated, series)
    with pytest.raises(ImageFormatError, match="not a readable DICOM Segmentation"):
        read_dicom_seg(next(series.iterdir()), series)  # a CT slice, not a segmentation


@pytest.fixture
def checkpoint(tmp_path):
    import torch

    from gnnseg.seg.sam.checkpoint import save_sam
    from gnnseg.seg.sam.modeling.sam import build_sam

    torch.manual_seed(0)
    return str(save_sam(build_sam("vit_mini"), tmp_path / "mini.pt"))


def test_seg_segment_writes_a_dicom_seg_of_the_series_and_refuses_other_inputs(series, checkpoint, tmp_path, capsys,
                                                                               last_json):
    output = tmp_path / "boxes.dcm"
    assert main(["seg", "segment", "--volume", str(series), "--box3d", "180,150,8,330,300,10",
                 "--checkpoint", checkpoint, "-o", str(output), "--json"]) == 0
    answer = last_json()
    read = read_dicom_seg(output, series)
    assert set(read.names) == {1} and read.names[1] == "label 1"
    assert read.image.array[8:11].sum() == answer["voxels_per_label"]["1"] > 0
    assert read.image.array[:8].max() == 0 and read.image.array[11:].max() == 0
    assert pydicom.dcmread(output).SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"

    png = tmp_path / "slice.png"
    write_image_2d(np.full((32, 32), 90, np.uint8), png)
    assert main(["seg", "segment", "--image", str(png), "--box", "4,4,20,20", "-o", str(tmp_path / "m.dcm")]) == 2
    assert "a .dcm output is a DICOM-SEG" in capsys.readouterr().err
    nifti = require_dataset(f"{EXAMPLES}/example_ct_sm.nii.gz")
    assert main(["seg", "segment", "--volume", str(nifti), "--box3d", "1,1,1,5,5,5", "-o",
                 str(tmp_path / "v.dcm")]) == 2
    assert "is not a DICOM series folder" in capsys.readouterr().err
    assert main(["seg", "segment", "--volume", str(series), "--box3d", "180,150,8,330,300,10",
                 "--checkpoint", checkpoint, "-o", str(output)]) == 2     # never over an existing file
    assert "exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.dcm", "mini.pt", "slice.png"]


def test_seg_predict_writes_a_dicom_seg_named_by_the_run_labels(series, tmp_path, monkeypatch, last_json):
    """The U-Net run is a stand-in (its plans from a tiny dataset, a network that labels a block): what is tested
    is that the series is predicted on its own grid and written with the run's label names."""
    from gnnseg.seg.io import MedicalImage, write_raw_dataset
    from gnnseg.seg.unet import pipeline
    from gnnseg.seg.unet.fingerprint import extract_fingerprint
    from gnnseg.seg.unet.fold_ensemble import TrainedFolds
    from gnnseg.seg.unet.planner import plan_experiment

    ras = np.diag([2.0, 2.0, 3.0, 1.0])
    volumes = [np.random.default_rng(k).normal(size=(6, 8, 10)).astype(np.float32) for k in range(2)]
    training = [(f"c{k}", [MedicalImage(v, (3.0, 2.0, 2.0), ras)],
                 MedicalImage((v > 1).astype(np.uint8), (3.0, 2.0, 2.0), ras)) for k, v in enumerate(volumes)]
    dataset = write_raw_dataset(tmp_path / "raw", channel_names=["CT"], labels={"background": 0, "liver": 1},
                                file_ending=".nii.gz", training=training)
    plans = plan_experiment(extract_fingerprint(dataset))

    def block_in_the_middle(network, data, spacing, plans, configuration, **options):
        labels = np.zeros(data.shape[1:], np.int16)
        labels[5:9, 100:200, 150:300] = 1
        return labels, np.stack([1 - labels, labels]).astype(np.float32)

    folds = TrainedFolds(nn.Identity(), plans, "3d_fullres", (tmp_path / "run",), (0, 1, 2))   # stood in for below
    monkeypatch.setattr(pipeline, "open_trained_folds", lambda models, folds_asked, **options: folds)
    monkeypatch.setattr(pipeline, "predict_case", block_in_the_middle)
    output = tmp_path / "predicted.dcm"
    assert main(["seg", "predict", "-i", str(series), "-o", str(output), "-m", str(tmp_path / "run"),
                 "--device", "cpu", "--json"]) == 0
    assert last_json()["predictions"] == [str(output)]
    read = read_dicom_seg(output, series)
    assert read.names == {1: "liver"} and read.image.array.sum() == 4 * 100 * 150
    assert read.image.array[5:9].any() and not read.image.array[:5].any()   # on the slices predicted, in DICOM order
    assert main(["seg", "predict", "-i", str(dataset.root / "imagesTr"), "-o", str(tmp_path / "cases.dcm"), "-m",
                 str(tmp_path / "run")]) == 2
    assert not (tmp_path / "cases.dcm").exists()


def test_the_service_answers_a_dicom_series_upload_as_dicom_seg(series, tmp_path):
    pytest.importorskip("fastapi", reason="fastapi is not installed (pip install -e '.[test]')")
    pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[test]')")
    import torch
    from fastapi.testclient import TestClient

    from gnnseg.seg.io import read_nifti as read_nifti_file
    from gnnseg.seg.sam.modeling.sam import build_sam
    from gnnseg.seg.serve.app import ServiceLimits, create_app
    from gnnseg.seg.serve.encoding import rle_decode

    torch.manual_seed(0)
    client = TestClient(create_app(build_sam("tiny_vit_mini"), limits=ServiceLimits(max_upload_bytes=64_000_000)),
                        base_url="http://127.0.0.1:8000")

    def upload(folder: Path) -> str:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in sorted(folder.iterdir()):
                archive.write(path, f"series/{path.name}")
        answer = client.post("/v1/images", files={"file": ("ct.zip", buffer.getvalue(), "application/zip")})
        assert answer.status_code == 201, answer.json()
        return answer.json()["id"]

    image_id = upload(series)
    request = {"boxes3d": [[180, 150, 9, 330, 300, 10]]}
    answer = client.post(f"/v1/images/{image_id}/segment", json={**request, "format": "dicom-seg"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/dicom"
    (tmp_path / "answer.dcm").write_bytes(answer.content)
    read = read_dicom_seg(tmp_path / "answer.dcm", series)
    nifti = client.post(f"/v1/images/{image_id}/segment", json={**request, "format": "nifti"})
    (tmp_path / "answer.nii.gz").write_bytes(nifti.content)
    assert np.array_equal(read.image.array, read_nifti_file(tmp_path / "answer.nii.gz").array)
    assert read.image.array[9:11].any() and read.names == {1: "label 1"}
    tracked = client.post(f"/v1/images/{image_id}/objects", json={"box3d": request["boxes3d"][0]}).json()
    answer = client.get(f"/v1/images/{image_id}/objects/{tracked['id']}", params={"format": "dicom-seg"})
    (tmp_path / "object.dcm").write_bytes(answer.content)
    mask = read_dicom_seg(tmp_path / "object.dcm", series).image.array
    assert np.array_equal(mask.ravel(), rle_decode(tracked["mask"]).ravel())

    nifti_upload = client.post("/v1/images", files={"file": ("ct.nii.gz",
                                                             require_dataset(f"{EXAMPLES}/example_ct_sm.nii.gz")
                                                             .read_bytes(), "application/gzip")})
    refused = client.post(f"/v1/images/{nifti_upload.json()['id']}/segment",
                          json={"boxes3d": [[1, 1, 1, 9, 9, 2]], "format": "dicom-seg"})
    assert refused.status_code == 422
    assert "was not uploaded as a DICOM series" in refused.json()["error"]["message"]

    anonymised = shutil.copytree(require_dataset(f"{EXAMPLES}/example_ct_dicom"), tmp_path / "anonymised")
    refused = client.post(f"/v1/images/{upload(anonymised)}/segment", json={**request, "format": "dicom-seg"})
    assert refused.status_code == 422 and "lacks StudyInstanceUID" in refused.json()["error"]["message"]
