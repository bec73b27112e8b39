"""Objects corrected with clicks over HTTP: create from a box or clicks, click, get the mask, undo, delete, and every
refusal (bad click, unknown or let-go object, a volume without its slice) leaving the object as it was."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="fastapi is not installed (pip install -e '.[test]')")
pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[test]')")

from gnnseg.seg.sam.inference.predictor import SamPredictor  # noqa: E402
from gnnseg.seg.sam.inference.session import InteractiveSession  # noqa: E402
from gnnseg.seg.sam.modeling.sam import build_sam  # noqa: E402
from gnnseg.seg.serve.app import ServiceLimits, create_app  # noqa: E402
from gnnseg.seg.serve.encoding import rle_decode  # noqa: E402
from tests.seg.test_serve_api import local_client, nifti_upload, png_upload, upload  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return build_sam("tiny_vit_mini")


@pytest.fixture
def client(model):
    return local_client(create_app(model, limits=ServiceLimits(max_boxes=4, undo_depth=2)))


def test_an_object_is_made_clicked_undone_and_deleted(client, model):
    image_id = upload(client, png_upload(seed=3)).json()["id"]
    made = client.post(f"/v1/images/{image_id}/objects", json={"box": [6, 5, 40, 30]})
    assert made.status_code == 201
    first = made.json()
    assert first["box"] == [6.0, 5.0, 40.0, 30.0] and first["points"] == [] and first["shape"] == [48, 64]
    url = f"/v1/images/{image_id}/objects/{first['id']}"
    clicked = client.post(f"{url}/clicks", json={"x": 20, "y": 12, "label": 1}).json()
    assert clicked["points"] == [[20.0, 12.0]] and clicked["labels"] == [1] and clicked["seconds"] >= 0
    pixels = np.asarray(Image.open(io.BytesIO(png_upload(seed=3))).convert("RGB"))
    session = InteractiveSession(SamPredictor(model), pixels)   # the same loop in-process gives the same mask
    local = session.add(box=np.array([6, 5, 40, 30]))
    expected = session.click(local, 20, 12, positive=True).mask
    assert np.array_equal(rle_decode(clicked["mask"]), expected)
    png = client.get(f"{url}?format=png")
    assert png.status_code == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))) > 0, expected)
    undone = client.post(f"{url}/undo").json()
    assert undone["points"] == [] and undone["mask"] == first["mask"]
    assert client.post(f"{url}/undo").status_code == 422
    listed = client.get(f"/v1/images/{image_id}/objects").json()["objects"]
    assert [o["id"] for o in listed] == [first["id"]] and "mask" not in listed[0]
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404


def test_refused_clicks_leave_the_object_as_it_was(client):
    image_id = upload(client, png_upload(seed=4)).json()["id"]
    made = client.post(f"/v1/images/{image_id}/objects", json={"points": [[30, 20]], "labels": [1]}).json()
    url = f"/v1/images/{image_id}/objects/{made['id']}"
    for click, status, message in [({"x": 64, "y": 10, "label": 1}, 422, "outside the image"),
                                   ({"x": 5, "y": 10, "label": 2}, 422, "label"),
                                   ({"x": float("nan"), "y": 1, "label": 0}, 422, "")]:
        response = client.post(f"{url}/clicks", content=str(click).replace("'", '"').replace("nan", "NaN"),
                               headers={"Content-Type": "application/json"})
        assert response.status_code == status and message in response.json()["error"]["message"]
    assert client.get(url).json()["mask"] == made["mask"]
    assert client.post(f"/v1/images/{image_id}/objects/ffff/clicks", json={"x": 1, "y": 1, "label": 1}
                       ).status_code == 404
    assert client.post(f"/v1/images/{image_id}/objects", json={}).status_code == 422
    assert client.post(f"/v1/images/{image_id}/objects", json={"box": [1, 1, 5, 5], "slice": 2}).status_code == 422


def test_objects_on_a_volume_need_their_slice_and_go_with_their_image(client):
    data, _ = nifti_upload()
    image_id = upload(client, data, "ct.nii.gz").json()["id"]
    refused = client.post(f"/v1/images/{image_id}/objects", json={"box": [2, 2, 15, 12]})
    assert refused.status_code == 422 and "slice" in refused.json()["error"]["message"]
    made = client.post(f"/v1/images/{image_id}/objects", json={"box": [2, 2, 15, 12], "slice": 2}).json()
    assert made["slice"] == 2 and made["shape"] == [20, 24]
    assert client.delete(f"/v1/images/{image_id}").status_code == 204
    assert client.app.state.objects.on_image(image_id) == []


def test_the_least_recently_used_objects_go_when_memory_runs_out(model):
    small = local_client(create_app(model, limits=ServiceLimits(objects_bytes=40_000)))   # room for about 2 objects
    image_id = upload(small, png_upload(seed=5)).json()["id"]
    made = [small.post(f"/v1/images/{image_id}/objects", json={"box": [4 + k, 4, 30 + k, 30]}).json()["id"]
            for k in range(4)]
    gone = small.get(f"/v1/images/{image_id}/objects/{made[0]}")
    assert gone.status_code == 404 and "free memory" in gone.json()["error"]["message"]
    assert small.get(f"/v1/images/{image_id}/objects/{made[-1]}").status_code == 200
