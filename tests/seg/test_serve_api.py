"""The HTTP API: every route, every error, formats, geometry and concurrent clients (small model, no network)."""

from __future__ import annotations

import copy
import io
import json
import shutil
import tempfile
import threading
import types
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="fastapi is not installed (pip install -e '.[test]')")
pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[test]')")
from fastapi.testclient import TestClient  # noqa: E402

from gnnseg.seg.io import MedicalImage, read_dicom_series, read_nifti, write_nifti  # noqa: E402
from gnnseg.seg.sam.inference.chain import make_predictor  # noqa: E402
from gnnseg.seg.sam.modeling.sam import build_sam  # noqa: E402
from gnnseg.seg.sam.shipped import ModelChoice  # noqa: E402
from gnnseg.seg.serve.app import ModelOptions, Segmenter, ServiceLimits, create_app  # noqa: E402
from gnnseg.seg.serve.encoding import rle_decode  # noqa: E402
from tests.conftest import require_dataset  # noqa: E402


def local_client(app) -> TestClient:
    """A client that calls the service as a local browser or script does (Host 127.0.0.1)."""
    return TestClient(app, base_url="http://127.0.0.1:8000")


@pytest.fixture(scope="module")
def model():
    return build_sam("tiny_vit_mini")


@pytest.fixture
def client(model):
    return local_client(create_app(model, limits=ServiceLimits(max_boxes=4, max_upload_bytes=2_000_000)))


def png_upload(height=48, width=64, seed=0) -> bytes:
    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def flat_png(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), 7, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def nifti_upload(shape=(5, 20, 24)) -> tuple[bytes, MedicalImage]:
    volume = np.random.default_rng(1).normal(40, 300, shape).astype(np.float32)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = [10, -20, 5]
    image = MedicalImage(volume, (2.5, 0.9, 0.8), affine)
    with tempfile.TemporaryDirectory() as folder:
        path = write_nifti(image, Path(folder) / "ct.nii.gz")
        return path.read_bytes(), read_nifti(path)


def upload(client, data: bytes, name: str = "image.png", **form):
    return client.post("/v1/images", files={"file": (name, data)}, data=form)


def error_of(response) -> str:
    return response.json()["error"]["message"]


def test_health_openapi_and_page(client):
    assert client.get("/healthz").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/images", "/v1/images/{image_id}/segment", "/v1/images/{image_id}/slices/{index}"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text


def test_2d_upload_then_png_npz_and_json_masks(client):
    response = upload(client, png_upload())
    assert response.status_code == 201
    described = response.json()
    assert described["kind"] == "2d" and described["shape"] == [48, 64] and described["slices"] == 1
    again = upload(client, png_upload()).json()["id"]  # ids are not derived from the file: nobody can guess one
    assert again != described["id"] and len(again) >= 24
    assert client.delete(f"/v1/images/{again}").status_code == 204
    assert client.get(f"/v1/images/{described['id']}").status_code == 200  # another holder's copy stays
    image_id = described["id"]
    png = client.post(f"/v1/images/{image_id}/segment", json={"boxes": [[5, 5, 40, 30]]})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    mask = np.asarray(Image.open(io.BytesIO(png.content)))
    assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 255}
    assert len(png.headers["x-predicted-iou"].split(",")) == 1
    npz = client.post(f"/v1/images/{image_id}/segment", json={"boxes": [[5, 5, 40, 30], [30, 10, 63, 47]],
                                                             "format": "npz"})
    arrays = np.load(io.BytesIO(npz.content))
    assert arrays["segs"].shape == (48, 64) and arrays["iou"].shape == (2,)
    listed = client.post(f"/v1/images/{image_id}/segment", json={"boxes": [[5, 5, 40, 30]], "format": "json"})
    first = listed.json()["masks"][0]
    assert rle_decode(first["rle"]).shape == (48, 64) and rle_decode(first["rle"]).sum() == first["pixels"]
    assert np.array_equal(rle_decode(first["rle"]), mask > 0)
    slice_png = client.get(f"/v1/images/{image_id}/slices/0")
    assert np.asarray(Image.open(io.BytesIO(slice_png.content))).shape == (48, 64, 3)


def test_volume_upload_slices_3d_boxes_and_nifti_in_the_original_geometry(client):
    data, original = nifti_upload()
    described = upload(client, data, "ct.nii.gz").json()
    assert described["kind"] == "3d" and described["shape"] == [5, 20, 24] and described["slices"] == 5
    image_id = described["id"]
    assert np.asarray(Image.open(io.BytesIO(client.get(f"/v1/images/{image_id}/slices/4").content))).shape == \
        (20, 24, 3)
    response = client.post(f"/v1/images/{image_id}/segment", json={"boxes3d": [[2, 2, 1, 15, 12, 3]],
                                                                   "format": "nifti"})
    assert response.status_code == 200
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mask.nii.gz"
        path.write_bytes(response.content)
        mask = read_nifti(path)
    assert mask.array.shape == (5, 20, 24) and np.allclose(mask.affine, original.affine)
    assert not mask.array[0].any() and not mask.array[4].any()  # outside the box's slices
    iou = [float(v) for v in response.headers["X-Predicted-IoU"].split(",")]
    assert len(iou) == 1 and np.isfinite(iou[0])   # the IoU head is unbounded; the test model is untrained
    described_masks = client.post(f"/v1/images/{image_id}/segment", json={"boxes3d": [[2, 2, 1, 15, 12, 3]],
                                                                          "format": "json"}).json()["masks"]
    assert described_masks[0]["iou"] == pytest.approx(iou[0], abs=1e-4)
    on_slice = client.post(f"/v1/images/{image_id}/segment", json={"boxes": [[2, 2, 15, 12]], "slice": 2})
    assert np.asarray(Image.open(io.BytesIO(on_slice.content))).shape == (20, 24)


def test_dicom_zip_and_challenge_npz_uploads(client, tmp_path):
    series = require_dataset("totalsegmentator_examples/example_ct_dicom")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "a note beside the series")  # the series folder is still found
        for path in sorted(series.iterdir()):
            archive.write(path, f"series/{path.name}")
    limits = ServiceLimits(max_upload_bytes=64_000_000)
    client = local_client(create_app(build_sam("tiny_vit_mini"), limits=limits))
    described = upload(client, buffer.getvalue(), "ct.zip").json()
    assert described["kind"] == "3d" and described["shape"] == list(read_dicom_series(series).array.shape)
    case = io.BytesIO()
    np.savez(case, imgs=np.zeros((30, 40, 3), np.uint8) + 9, boxes=np.array([[1, 2, 20, 25]]))
    described = upload(client, case.getvalue(), "2D_case.npz").json()
    assert described["kind"] == "2d" and described["boxes"] == [[1, 2, 20, 25]]


@pytest.mark.parametrize("body, status, message", [
    ({"boxes": [[50, 5, 40, 30]]}, 422, "x1 > x0"),
    ({"boxes": [[100, 5, 400, 30]]}, 422, "outside the image"),
    ({"boxes": [[1, 1, 5, 5]] * 5}, 422, "limit of 4"),
    ({"boxes": []}, 422, "empty"),
    ({"boxes": [[1, 2, 3]]}, 422, "shape"),
    ({"boxes": [[1, 1, 5, 5]], "boxes3d": [[1, 1, 0, 5, 5, 0]]}, 422, "not both"),
    ({"boxes3d": [[1, 1, 0, 5, 5, 0]]}, 422, "need a volume"),
    ({"boxes": [[1, 1, 5, 5]], "slice": 3}, 422, "only slice 0"),
    ({"boxes": [[1, 1, 5, 5]], "format": "nifti"}, 422, "for volumes"),
    ({"boxes": [[1, 1, 5, 5]], "format": "gif"}, 422, "format"),
    ({"boxes": "none"}, 422, "boxes"),
])
def test_bad_segment_requests_are_refused_with_the_reason(client, body, status, message):
    image_id = upload(client, png_upload()).json()["id"]
    response = client.post(f"/v1/images/{image_id}/segment", json=body)
    assert response.status_code == status and message in error_of(response), response.json()


def test_volume_requests_need_a_slice_and_stay_in_range(client):
    image_id = upload(client, nifti_upload()[0], "v.nii.gz").json()["id"]
    missing = client.post(f"/v1/images/{image_id}/segment", json={"boxes": [[1, 1, 5, 5]]})
    assert missing.status_code == 422 and "slice" in error_of(missing)
    outside = client.post(f"/v1/images/{image_id}/segment", json={"boxes": [[1, 1, 5, 5]], "slice": 9})
    assert outside.status_code == 404 and "outside 0..4" in error_of(outside)
    assert client.get(f"/v1/images/{image_id}/slices/5").status_code == 404
    png_3d = client.post(f"/v1/images/{image_id}/segment", json={"boxes3d": [[1, 1, 0, 5, 5, 2]]})
    assert png_3d.status_code == 422 and "npz or nifti" in error_of(png_3d)
    flipped = client.post(f"/v1/images/{image_id}/segment", json={"boxes3d": [[1, 1, 3, 5, 5, 2]]})
    assert flipped.status_code == 422 and "z_min <= z_max" in error_of(flipped)


def test_bad_uploads_are_refused_with_the_reason(model):
    client = local_client(create_app(model, limits=ServiceLimits(max_upload_bytes=5_000, max_pixels=2_000)))
    cases = [
        (b"", 422, "empty"),
        (b"hello, world", 415, "unsupported"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, 422, "could not be read"),
        (png_upload(10, 10) + b"\0" * 6_000, 413, "exceeds 5,000 bytes"),
        (flat_png(50, 60), 413, "declares 50 x 60 = 3,000 pixels, over the limit of 2,000"),
    ]
    for data, status, message in cases:
        response = upload(client, data)
        assert response.status_code == status and message in error_of(response), (message, response.json())
    assert client.post("/v1/images").status_code == 422  # no file field
    assert len(client.app.state.store) == 0  # nothing of a failed upload is kept


def test_unknown_deleted_and_evicted_ids_are_404(model):
    client = local_client(create_app(model, limits=ServiceLimits(store_bytes=2 * 48 * 64 * 3)))
    first = upload(client, png_upload(seed=1)).json()["id"]
    second = upload(client, png_upload(seed=2)).json()["id"]
    assert client.delete(f"/v1/images/{second}").status_code == 204
    for method, path in [("get", f"/v1/images/{second}"), ("delete", f"/v1/images/{second}"),
                         ("get", "/v1/images/nope/slices/0")]:
        response = getattr(client, method)(path)
        assert response.status_code == 404 and "no image" in error_of(response)
    upload(client, png_upload(seed=3))
    upload(client, png_upload(seed=4))  # the store holds two images: the first one is evicted
    assert client.get(f"/v1/images/{first}").status_code == 404
    assert client.get("/v1/nothing").status_code == 404


def test_concurrent_clients_get_their_own_answers(client):
    ids = [upload(client, png_upload(seed=seed)).json()["id"] for seed in range(3)]
    boxes = [[[2, 2, 30, 30]], [[10, 5, 60, 40]], [[0, 0, 63, 47]]]

    def ask(index: int) -> bytes:
        return client.post(f"/v1/images/{ids[index % 3]}/segment",
                           json={"boxes": boxes[index % 3], "format": "npz"}).content

    expected = [ask(i) for i in range(3)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(12)))
    for index, answer in enumerate(answers):
        assert np.array_equal(np.load(io.BytesIO(answer))["segs"], np.load(io.BytesIO(expected[index % 3]))["segs"])
    assert json.loads(client.get("/healthz").content)["images"] == 3


def test_the_model_is_loaded_and_called_on_one_thread_of_its_own(model):
    callers = []

    def load():
        callers.append(threading.get_ident())
        return model

    segmenter = Segmenter(load, cache_bytes=2**20)
    answer = segmenter.predictor.answer
    segmenter.predictor.answer = lambda *prompts: callers.append(threading.get_ident()) or answer(*prompts)
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: segmenter.segment_2d(rgb, np.array([[2.0, 2.0, 30.0, 30.0]])), range(6)))
    assert len(callers) == 7 and len(set(callers)) == 1 and callers[0] != threading.get_ident()


def test_bfloat16_decoder_gives_nearly_the_same_masks(model):
    data = png_upload(seed=7)
    answers = []
    for dtype in ("float32", "bfloat16"):
        client = local_client(create_app(copy.deepcopy(model), options=ModelOptions(decoder_dtype=dtype)))
        image_id = upload(client, data).json()["id"]
        answer = client.post(f"/v1/images/{image_id}/segment", json={"boxes": [[4, 4, 50, 40]], "format": "npz"})
        assert answer.status_code == 200
        answers.append(np.load(io.BytesIO(answer.content)))
    assert client.app.state.segmenter.predictor.model.decoder_dtype == torch.bfloat16
    assert (answers[0]["segs"] == answers[1]["segs"]).mean() > 0.98
    assert np.allclose(answers[0]["iou"], answers[1]["iou"], atol=0.05)


def test_test_time_augmentation_answers_as_the_augmented_predictor(model):
    rgb = np.random.default_rng(5).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    boxes = np.array([[4.0, 4.0, 50.0, 40.0], [0.0, 0.0, 20.0, 30.0]])
    client = local_client(create_app(model, choice=ModelChoice(augmentation="flip")))
    assert client.get("/healthz").json()["augmentation"] == "flip"
    segmenter = client.app.state.segmenter
    masks, iou = segmenter.segment_2d(rgb, boxes)
    expected = make_predictor(model, augmentation="flip")
    expected.set_image(rgb)
    prediction = expected.predict(boxes=boxes)
    assert np.array_equal(masks, prediction.masks[:, 0]) and np.allclose(iou, prediction.iou[:, 0])
    assert segmenter.predictor.predictor.encoder_calls == 2  # the image and its mirror, once each
    with pytest.raises(ValueError, match="unknown test-time augmentation 'd8'"):
        ModelChoice(augmentation="d8")


@pytest.mark.parametrize("scales", [1, 2])
def test_zoom_answers_each_box_on_its_windows_as_the_zoomed_predictor(model, scales):
    rgb = np.random.default_rng(6).integers(0, 255, (96, 128, 3), dtype=np.uint8)   # larger than the 64-pixel input
    boxes = np.array([[70.0, 50.0, 81.0, 59.0], [0.0, 0.0, 20.0, 30.0]])
    client = local_client(create_app(model, choice=ModelChoice(zoom=0.5, zoom_scales=scales)))
    health = client.get("/healthz").json()
    assert health["zoom"] == 0.5 and health["zoom_scales"] == scales
    segmenter = client.app.state.segmenter
    masks, iou = segmenter.segment_2d(rgb, boxes)
    expected = make_predictor(model, zoom=0.5, zoom_scales=scales)
    expected.set_image(rgb)
    prediction = expected.predict(boxes=boxes)
    assert np.array_equal(masks, prediction.masks[:, 0]) and np.allclose(iou, prediction.iou[:, 0])
    assert segmenter.predictor.encoder_calls == 2 * scales  # one window per box and scale
    with pytest.raises(ValueError, match="zoom context must be a finite number >= 0"):
        ModelChoice(zoom=-1.0)
    with pytest.raises(ValueError, match="zoom scales must be a whole number >= 1"):
        ModelChoice(zoom=0.5, zoom_scales=0)


def test_a_bfloat16_decoder_needs_a_pytorch_model(model):
    exported = types.SimpleNamespace(config=model.config)  # what an ONNX export offers: no mask_decoder module
    with pytest.raises(ValueError, match="^a bfloat16 decoder: only for PyTorch models"):
        Segmenter(lambda: exported, cache_bytes=2**20, options=ModelOptions(decoder_dtype="bfloat16"))
    with pytest.raises(ValueError, match="^a compiled decoder: only for PyTorch models"):
        Segmenter(lambda: exported, cache_bytes=2**20, options=ModelOptions(compile_decoder=True))


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile needs a C++ compiler (g++)")
def test_compiled_single_box_decoder_answers_as_the_eager_one(model):
    rgb = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    one, several = np.array([[4.0, 4.0, 50.0, 40.0]]), np.array([[4.0, 4.0, 50.0, 40.0], [0.0, 0.0, 20.0, 30.0]])
    from torch._dynamo.utils import counters

    eager = Segmenter(lambda: copy.deepcopy(model), cache_bytes=2**20)
    graphs = counters["stats"]["unique_graphs"]
    compiled = Segmenter(lambda: copy.deepcopy(model), cache_bytes=2**20,
                         options=ModelOptions(compile_decoder=True))
    assert counters["stats"]["unique_graphs"] == graphs + 1  # compiled while warming up
    for boxes in (one, several, one):  # one box: the compiled graph; several: the eager decoder
        (expected_masks, expected_iou), (masks, iou) = eager.segment_2d(rgb, boxes), compiled.segment_2d(rgb, boxes)
        assert (masks == expected_masks).mean() > 0.99
        assert np.allclose(iou, expected_iou, atol=1e-4)
    assert counters["stats"]["unique_graphs"] == graphs + 1  # and never again for a request
