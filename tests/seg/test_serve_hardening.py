"""The service against hostile and broken input: every class of the probe, each with a small generated input.

Sizes are refused from headers before decoding, bodies before spooling, archives before unpacking; hosts, origins
and tokens before anything; 2D requests do not wait for a whole 3D request; errors never show server paths.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="fastapi is not installed (pip install -e '.[test]')")
pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[test]')")

from gnnseg.seg.sam.modeling.sam import build_sam  # noqa: E402
from gnnseg.seg.serve.app import ServiceLimits, create_app  # noqa: E402
from gnnseg.seg.serve.guard import ServiceAccess  # noqa: E402
from tests.seg.crafted_inputs import nifti_declaring, npz_declaring, png_declaring  # noqa: E402
from tests.seg.test_serve_api import error_of, local_client, nifti_upload, png_upload, upload  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return build_sam("tiny_vit_mini")


@pytest.fixture
def client(model):
    return local_client(create_app(model, limits=ServiceLimits(max_boxes=4, max_upload_bytes=2_000_000,
                                                               max_pixels=4_000_000)))


@pytest.mark.parametrize(("data", "name", "message"), [
    (png_declaring(30_000, 30_000), "bomb.png", "pixels"),
    (png_declaring(3_000, 2_000), "wide.png", "declares 2000 x 3000 = 6,000,000 pixels, over the limit of 4,000,000"),
    (nifti_declaring((1024, 1024, 256)), "ct.nii.gz", "declares 1024 x 1024 x 256 = 268,435,456 voxels"),
    (npz_declaring((10**6, 10**6, 3)), "2D_case.npz", "imgs (1000000, 1000000, 3)"),
])
def test_sizes_are_refused_from_the_header_before_decoding(client, data, name, message):
    response = upload(client, data, name)
    assert response.status_code == 413 and message in error_of(response), response.json()


def test_a_challenge_case_with_too_many_boxes_is_refused_and_boxes_are_never_echoed_unbounded(client):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, imgs=np.zeros((8, 8, 3), np.uint8), boxes=np.tile([[0, 0, 4, 4]], (2_000_000, 1)))
    assert len(buffer.getvalue()) < 300_000
    response = upload(client, buffer.getvalue(), "2D_case.npz")
    assert response.status_code == 413 and "2,000,000 boxes, over the limit of 4" in error_of(response)
    buffer = io.BytesIO()
    np.savez(buffer, imgs=np.zeros((8, 8, 3), np.uint8), boxes=np.tile([[0, 0, 4, 4]], (3, 1)))
    assert len(upload(client, buffer.getvalue(), "2D_case.npz").json()["boxes"]) == 3


def test_zip_bombs_and_unsafe_zips_are_refused_before_unpacking(client):
    for entries, message in [({"series/a.dcm": bytes(16 << 20)}, "expands"),
                             ({f"series/{k}.dcm": b"" for k in range(5000)}, "5,000 entries"),
                             ({"../../escape.dcm": b"x"}, "unsafe path")]:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in entries.items():
                archive.writestr(name, data)
        response = upload(client, buffer.getvalue(), "series.zip")
        assert response.status_code == 413 and message in error_of(response), response.json()


def test_bodies_over_the_limit_are_refused_without_being_read(model):
    client = local_client(create_app(model, limits=ServiceLimits(max_upload_bytes=10_000)))
    declared = client.post("/v1/images", content=b"x" * 10, headers={"Content-Length": str(10**9),
                                                                     "Content-Type": "multipart/form-data"})
    assert declared.status_code == 413 and "1000000000 bytes" in error_of(declared)
    assert client.post("/v1/images", files={"file": ("a.png", png_upload())}).status_code == 201


def test_a_streamed_body_is_cut_off_at_the_limit():
    """Without a Content-Length the body is counted as it arrives: no more than the limit is taken from the
    connection, and the client gets a 413 whatever the application made of the cut-off body."""
    import asyncio

    from gnnseg.seg.serve.guard import BodyLimit

    async def application(scope, receive, send):  # reads everything, like a multipart parser
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"parse error"})

    delivered, sent = 0, []

    async def receive():
        nonlocal delivered
        delivered += 8192
        return {"type": "http.request", "body": b"x" * 8192, "more_body": delivered < 8_192_000}

    async def send(message):
        sent.append(message)

    asyncio.run(BodyLimit(application, max_bytes=20_000)({"type": "http", "headers": []}, receive, send))
    assert delivered <= 20_000 + 8192                      # not the 8 MB the client meant to send
    assert sent[0]["status"] == 413 and b"exceeds the limit of 20,000 bytes" in sent[1]["body"]


def test_host_origin_and_token_checks(model):
    app = create_app(model, access=ServiceAccess(token="s3cret"))
    client = local_client(app)
    assert client.get("/").status_code == 200          # the page holds no data
    refused = client.get("/v1/images/x")
    assert refused.status_code == 401 and "token" in error_of(refused)
    authorised = {"Authorization": "Bearer s3cret"}
    assert client.get("/v1/images/x", headers=authorised).status_code == 404
    rebound = client.get("/healthz", headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 421 and "attacker.example" in error_of(rebound)
    forged = client.post("/v1/images", files={"file": ("a.png", png_upload())},
                         headers={**authorised, "Origin": "http://evil.example"})
    assert forged.status_code == 403 and "evil.example" in error_of(forged)
    same_page = client.post("/v1/images", files={"file": ("a.png", png_upload())},
                            headers={**authorised, "Origin": "http://127.0.0.1:8000"})
    assert same_page.status_code == 201


def test_errors_name_the_users_file_not_the_servers_paths(client):
    data, _ = nifti_upload()
    response = upload(client, data[: len(data) // 2], "patient.nii.gz")
    message = error_of(response)
    assert response.status_code == 422 and "patient.nii.gz" in message
    assert "/tmp" not in message and "gnnseg-upload" not in message


def test_a_2d_request_is_answered_while_a_3d_request_runs(model):
    client = local_client(create_app(model))
    data, _ = nifti_upload(shape=(40, 20, 24))
    volume = upload(client, data, "ct.nii.gz").json()["id"]
    image = upload(client, png_upload()).json()["id"]
    finished = {}

    def long_3d():
        client.post(f"/v1/images/{volume}/segment", json={"boxes3d": [[2, 2, 0, 15, 12, 39]] * 4, "format": "npz"})
        finished["3d"] = time.perf_counter()

    worker = threading.Thread(target=long_3d)
    worker.start()
    time.sleep(0.3)
    response = client.post(f"/v1/images/{image}/segment", json={"boxes": [[5, 5, 30, 30]]})
    answered = time.perf_counter()
    worker.join()
    assert response.status_code == 200
    assert answered < finished["3d"]  # it did not wait for the 160 slices behind it


def test_a_3d_request_past_its_time_budget_stops_with_503(model):
    client = local_client(create_app(model, limits=ServiceLimits(max_request_seconds=0.0)))
    data, _ = nifti_upload()
    volume = upload(client, data, "ct.nii.gz").json()["id"]
    response = client.post(f"/v1/images/{volume}/segment", json={"boxes3d": [[2, 2, 0, 15, 12, 4]], "format": "npz"})
    assert response.status_code == 503 and "budget" in error_of(response)


def test_a_body_that_stalls_is_refused_with_408():
    import asyncio

    from gnnseg.seg.serve.guard import BodyLimit

    async def application(scope, receive, send):
        while (await receive()).get("more_body"):
            pass

    async def receive():
        await asyncio.sleep(5)
        return {"type": "http.request", "body": b"", "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    began = time.perf_counter()
    asyncio.run(BodyLimit(application, max_bytes=100, idle_seconds=0.2)({"type": "http", "headers": []}, receive,
                                                                         send))
    assert time.perf_counter() - began < 2
    assert sent[0]["status"] == 408 and b"stalled for 0.2 s" in sent[1]["body"]


def test_memory_per_request_does_not_grow_with_the_number_of_boxes(model):
    """At the limits (every pixel, every box) a request holds the labels and one box's mask and logits at full
    resolution: under PER_PIXEL_BYTES per pixel (docs/serve.md), where masks kept per box would cost 5 per box."""
    import tracemalloc

    from PIL import Image

    from gnnseg.seg.serve.app import PER_PIXEL_BYTES

    side, boxes = 1600, 16
    client = local_client(create_app(model, limits=ServiceLimits(max_pixels=side * side, max_boxes=boxes,
                                                                 max_upload_bytes=20_000_000)))
    ramp = np.add.outer(np.arange(side), np.arange(side)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(buffer, format="PNG")
    image = upload(client, buffer.getvalue()).json()["id"]
    request = {"boxes": [[10 + 90 * k, 10, 200 + 90 * k, 1500] for k in range(boxes)], "format": "json"}
    client.post(f"/v1/images/{image}/segment", json={"boxes": request["boxes"][:1]})  # embedding cached
    tracemalloc.start()
    try:
        response = client.post(f"/v1/images/{image}/segment", json=request)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200 and len(response.json()["masks"]) == boxes
    assert peak < PER_PIXEL_BYTES * side * side, peak / side ** 2


def test_work_stops_once_the_client_has_left(model):
    from gnnseg.seg.sam.inference.volume import segment_box_3d
    from gnnseg.seg.serve.app import RequestBudget, Segmenter, UploadError

    segmenter = Segmenter(lambda: model, 2**20)
    calls = []
    budget = RequestBudget(60.0, client_gone=lambda: calls.append(1) or len(calls) > 3)
    volume = np.random.default_rng(0).integers(0, 255, (12, 32, 32), dtype=np.uint8)
    with pytest.raises(UploadError, match="closed the connection") as refused:
        segment_box_3d(segmenter.slice_by_slice(budget), volume, np.array([2, 2, 0, 20, 20, 11]))
    assert refused.value.status == 499 and len(calls) == 4  # three slices, then nothing more for nobody


def test_after_the_body_the_connection_may_stay_quiet():
    """Waiting for a disconnect once the body is in (a long answer) is not a stalled body."""
    import asyncio

    from gnnseg.seg.serve.guard import BodyLimit

    async def application(scope, receive, send):
        await receive()                                   # the whole body
        assert (await receive())["type"] == "http.disconnect"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    messages = iter([{"type": "http.request", "body": b"{}", "more_body": False}, {"type": "http.disconnect"}])

    async def receive():
        message = next(messages)
        if message["type"] == "http.disconnect":
            await asyncio.sleep(0.5)
        return message

    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(BodyLimit(application, max_bytes=100, idle_seconds=0.2)({"type": "http", "headers": []}, receive,
                                                                         send))
    assert sent[0]["status"] == 200
