"""Objects corrected with clicks over HTTP: create from a box or clicks (2D) or a 3D box (volumes), click, get the
mask, undo, delete, and every refusal (bad click, unknown or let-go object, a volume without its slice, a 3D box
without a volume) leaving the object as it was. 3D objects are answered by a stand-in predictor whose negative clicks
cut the mask, so where the propagation went can be read off the columns."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="fastapi is not installed (pip install -e '.[test]')")
pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[test]')")

from gnnseg.seg.io import read_nifti  # noqa: E402
from gnnseg.seg.sam.inference.predictor import SamPredictor  # noqa: E402
from gnnseg.seg.sam.inference.session import InteractiveSession  # noqa: E402
from gnnseg.seg.sam.inference.volume_session import VolumeSession  # noqa: E402
from gnnseg.seg.sam.modeling.sam import build_sam  # noqa: E402
from gnnseg.seg.serve.app import ServiceLimits, create_app  # noqa: E402
from gnnseg.seg.serve.encoding import rle_decode  # noqa: E402
from tests.seg.stand_in_predictors import CutsAtNegativeClicks  # noqa: E402
from tests.seg.test_serve_api import local_client, nifti_upload, png_upload, upload  # noqa: E402
from tests.seg.test_volume_session import columns  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return build_sam("tiny_vit_mini")


@pytest.fixture
def client(model):
    return local_client(create_app(model, limits=ServiceLimits(max_boxes=4, undo_depth=2)))


def stand_in_service(model, predictor: CutsAtNegativeClicks | None = None, **limits):
    """A client of a service whose model answers as the stand-in does (the model is loaded, never called)."""
    app = create_app(model, limits=ServiceLimits(max_boxes=4, undo_depth=2, **limits))
    app.state.segmenter.predictor = predictor or CutsAtNegativeClicks()
    return local_client(app)


def upload_volume(client) -> tuple[str, str]:
    """A (5, 20, 24) volume: its id and the URL of its objects."""
    image_id = upload(client, nifti_upload()[0], "ct.nii.gz").json()["id"]
    return image_id, f"/v1/images/{image_id}/objects"


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


BOX3D = [4, 3, 1, 18, 15, 4]   # columns 4..18, rows 3..15, slices 1..4 of a (5, 20, 24) volume


def test_a_3d_object_is_made_clicked_on_a_slice_undone_and_deleted(model, tmp_path):
    client = stand_in_service(model)
    image_id, objects = upload_volume(client)
    predictor = client.app.state.segmenter.predictor
    made = client.post(objects, json={"box3d": BOX3D})
    assert made.status_code == 201
    first = made.json()
    assert first["kind"] == "3d" and first["box3d"] == BOX3D and first["clicks"] == [] and first["shape"] == [5, 20, 24]
    assert first["iou"] == pytest.approx(0.7) and len(predictor.images) == 4          # one model call a slice
    boxed = rle_decode(first["mask"])
    assert boxed.shape == (5, 20, 24) and boxed[1:5, 3:16, 4:19].all() and boxed.sum() == 4 * 13 * 15

    url = f"{objects}/{first['id']}"
    predictor.images.clear()
    clicked = client.post(f"{url}/clicks", json={"x": 10, "y": 8, "label": 0, "slice": 2}).json()
    assert len(predictor.images) == 4                                                   # slice 2, then 3, 4 and 1
    assert clicked["clicks"] == [{"slice": 2, "points": [[10.0, 8.0]], "labels": [0]}] and clicked["seconds"] >= 0
    mask = rle_decode(clicked["mask"])
    assert [columns(mask[z]) for z in (1, 2, 3, 4)] == [(4, 12), (4, 9), (4, 12), (4, 15)] and not mask[0].any()
    session = VolumeSession(CutsAtNegativeClicks(), client.app.state.store.get(image_id).pixels)
    local = session.add(np.array(BOX3D))
    assert np.array_equal(mask, session.click(local, 2, 10, 8, positive=False).mask)   # as the session in-process

    png = client.get(f"{url}?format=png&slice=3")
    assert png.status_code == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))) > 0, mask[3])
    nifti = client.get(f"{url}?format=nifti")
    assert nifti.status_code == 200 and nifti.headers["X-Predicted-IoU"] == "0.7000"
    (tmp_path / "mask.nii.gz").write_bytes(nifti.content)
    assert np.array_equal(read_nifti(tmp_path / "mask.nii.gz").array > 0, mask)
    listed = client.get(objects).json()["objects"]
    assert [(o["id"], o["kind"]) for o in listed] == [(first["id"], "3d")] and "mask" not in listed[0]

    undone = client.post(f"{url}/undo").json()
    assert undone["clicks"] == [] and undone["mask"] == first["mask"]
    assert client.post(f"{url}/undo").status_code == 422
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404


def test_refused_3d_requests_name_the_problem_and_leave_the_object_as_it_was(model):
    client = stand_in_service(model)
    image_id, objects = upload_volume(client)
    made = client.post(objects, json={"box3d": BOX3D}).json()
    url = f"{objects}/{made['id']}"
    predictor = client.app.state.segmenter.predictor
    calls = len(predictor.images)
    for click, message in [({"x": 10, "y": 8, "label": 0}, "is 3D: a click on it needs the slice it is on (1..4)"),
                           ({"x": 10, "y": 8, "label": 0, "slice": 0}, "slice 0 lies outside the 3D box's slices 1..4"),
                           ({"x": 24, "y": 8, "label": 1, "slice": 2}, "outside the image of height 20 and width 24"),
                           ({"x": 10, "y": 8, "label": 2, "slice": 2}, "label")]:
        response = client.post(f"{url}/clicks", json=click)
        assert response.status_code == 422 and message in response.json()["error"]["message"], response.json()
    for query, message in [("format=png", "add slice=z (0..4)"), ("format=png&slice=5", "slice 5 is outside"),
                           ("slice=2", "the JSON holds the whole mask")]:
        response = client.get(f"{url}?{query}")
        assert response.status_code == 422 and message in response.json()["error"]["message"], response.json()
    assert client.get(url).json()["mask"] == made["mask"] and len(predictor.images) == calls

    for body, message in [({"box3d": BOX3D, "box": [1, 1, 5, 5]}, "box3d starts a 3D object on its own"),
                          ({"box3d": BOX3D, "slice": 2}, "box3d starts a 3D object on its own"),
                          ({"box3d": [4, 3, 4, 18, 15, 1]}, "need finite z_min <= z_max"),
                          ({"box3d": [4, 3, 1, 18, 15]}, "shape (N, 6)")]:
        response = client.post(objects, json=body)
        assert response.status_code == 422 and message in response.json()["error"]["message"], response.json()
    flat = upload(client, png_upload(seed=6)).json()["id"]
    response = client.post(f"/v1/images/{flat}/objects", json={"box3d": BOX3D})
    assert response.status_code == 422 and "needs a volume" in response.json()["error"]["message"]
    two_d = client.post(objects, json={"box": [4, 3, 18, 15], "slice": 2}).json()
    assert two_d["kind"] == "2d"
    for path, message in [("/clicks", "is 2D (on slice 2): its clicks take no slice")]:
        response = client.post(f"{objects}/{two_d['id']}{path}", json={"x": 5, "y": 5, "label": 1, "slice": 2})
        assert response.status_code == 422 and message in response.json()["error"]["message"]
    response = client.get(f"{objects}/{two_d['id']}?format=nifti")
    assert response.status_code == 422 and "NIfTI holds a 3D object's mask" in response.json()["error"]["message"]
    assert len(client.app.state.objects.on_image(image_id)) == 2


def test_3d_objects_count_their_packed_states_and_their_volume_once(model):
    # a (5, 20, 24) volume: 2,400 bytes; a state: 300 bytes of packed mask and 40 of slice IoUs
    roomy = stand_in_service(model, objects_bytes=2400 + 2 * 340)
    _, objects = upload_volume(roomy)
    made = [roomy.post(objects, json={"box3d": BOX3D}).json()["id"] for _ in range(2)]
    assert all(roomy.get(f"{objects}/{oid}").status_code == 200 for oid in made)   # the volume counted once
    tight = stand_in_service(model, objects_bytes=2400 + 2 * 340 - 1)
    _, objects = upload_volume(tight)
    made = [tight.post(objects, json={"box3d": BOX3D}).json()["id"] for _ in range(2)]
    gone = tight.get(f"{objects}/{made[0]}")
    assert gone.status_code == 404 and "free memory" in gone.json()["error"]["message"]
    assert tight.get(f"{objects}/{made[1]}").status_code == 200


class SlowSlices(CutsAtNegativeClicks):
    """The stand-in at 20 ms a call: a 3D object over 40 slices takes most of a second."""

    def answer(self, prompts, multimask=False):
        time.sleep(0.02)
        return super().answer(prompts, multimask)


def test_a_2d_request_is_answered_while_a_3d_object_propagates(model):
    client = stand_in_service(model, SlowSlices())
    volume = upload(client, nifti_upload(shape=(40, 20, 24))[0], "ct.nii.gz").json()["id"]
    image = upload(client, png_upload()).json()["id"]
    finished = {}

    def long_3d():
        finished["status"] = client.post(f"/v1/images/{volume}/objects", json={"box3d": [2, 2, 0, 15, 12, 39]}
                                          ).status_code
        finished["3d"] = time.perf_counter()

    worker = threading.Thread(target=long_3d)
    worker.start()
    time.sleep(0.2)
    response = client.post(f"/v1/images/{image}/segment", json={"boxes": [[5, 5, 30, 30]]})
    answered = time.perf_counter()
    worker.join()
    assert response.status_code == 200 and finished["status"] == 201
    assert answered < finished["3d"]  # it waited for one slice, not the 40 behind it


def test_clicks_on_one_3d_object_take_turns_and_a_deletion_meanwhile_is_a_404(model):
    client = stand_in_service(model, SlowSlices())
    volume = upload(client, nifti_upload(shape=(20, 20, 24))[0], "ct.nii.gz").json()["id"]
    objects = f"/v1/images/{volume}/objects"
    first, second = (f"{objects}/" + client.post(objects, json={"box3d": [2, 2, 0, 15, 12, 19]}).json()["id"]
                     for _ in range(2))

    def click(url: str, z: int):
        return client.post(f"{url}/clicks", json={"x": 8, "y": 6, "label": 0, "slice": z})

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(click, (first, first), (5, 15)))
    assert [a.status_code for a in answers] == [200, 200]
    assert sorted(c["slice"] for c in client.get(first).json()["clicks"]) == [5, 15]   # neither click lost
    with ThreadPoolExecutor(max_workers=1) as pool:
        late = pool.submit(click, second, 10)            # 20 slices at 20 ms
        time.sleep(0.15)
        assert client.delete(second).status_code == 204
        answer = late.result()
    assert answer.status_code == 404 and "while it was being answered" in answer.json()["error"]["message"]
