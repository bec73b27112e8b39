"""The HTTP API (FastAPI) and the web page it serves; ``gnnseg serve`` runs it with uvicorn.

Routes (all errors are JSON ``{"error": {"status": ..., "message": ...}}`` with a 4xx code naming the problem):

- ``POST /v1/images`` (multipart field ``file``; optional ``modality`` ``auto|ct|mr`` and ``window`` for volumes):
  PNG / JPEG / TIFF / GIF, NIfTI, a zip of a DICOM series or a challenge npz -> ``{id, kind, shape, spacing, ...}``.
  The id is random (it cannot be guessed from the file); an image is encoded at its first box request and its
  embedding kept by content in a memory-bounded cache, so later boxes skip the encoder.
- ``POST /v1/images/{id}/segment`` with JSON ``{"boxes": [[x0, y0, x1, y1], ...], "slice": k}`` (2D boxes; ``slice``
  for volumes) or ``{"boxes3d": [[x_min, y_min, z_min, x_max, y_max, z_max], ...]}`` and ``"format"``: ``png``
  (default; label ``k`` is box ``k``, one box gives 0/255; predicted IoU in the ``X-Predicted-IoU`` header),
  ``npz`` (``segs``, ``iou``), ``nifti`` (volumes, original geometry), ``dicom-seg`` (a DICOM Segmentation
  referencing an uploaded DICOM series, segment ``label k`` for box ``k``) or ``json`` (run-length masks and IoU).
- ``POST /v1/images/{id}/objects`` with ``{"box": [...], "points": [[x, y], ...], "labels": [...], "slice": k}`` (a
  box and/or clicks) starts a 2D object to correct (201, its id and mask as run lengths); on a volume,
  ``{"box3d": [x_min, y_min, z_min, x_max, y_max, z_max]}`` (alone) starts a 3D object, propagated from its middle
  slice; ``POST /v1/images/{id}/objects/{oid}/clicks`` with ``{"x", "y", "label"}`` (1 add, 0 remove; ``"slice": z``
  for a 3D object, refused for a 2D one) answers it again: a 2D object from its box, every click and its previous
  logits (one decoder pass), a 3D object's slice ``z`` from that slice's clicks and mask, then the slices beyond it
  propagated again up to the nearest slices with clicks of their own; ``POST .../undo``; ``GET .../{oid}`` (JSON;
  ``?format=png``, for a 3D object ``?format=png&slice=z``; ``?format=nifti`` or ``?format=dicom-seg`` for a 3D
  object);
  ``GET /v1/images/{id}/objects``; ``DELETE .../{oid}`` (:mod:`gnnseg.seg.serve.objects`).
- ``GET /v1/images/{id}``, ``GET /v1/images/{id}/slices/{k}`` (PNG), ``DELETE /v1/images/{id}``, ``GET /healthz``,
  ``GET /openapi.json`` and ``/docs``; ``GET /`` is the web page.

Model calls queue for one model thread, so concurrent requests are answered one model call at a time, and a 3D
request (a 3D box, a 3D object's creation or click) queues one slice at a time, so a 2D request sent meanwhile waits
for a slice, not a volume. A bad request is refused before it reaches the model and never changes what other clients
uploaded; sizes are refused before any decoding (:mod:`gnnseg.seg.serve.guard` for the body, the readers' header
checks for the pixels), and the Host, Origin and token checks of :mod:`gnnseg.seg.serve.guard` come first of all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import numpy as np
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gnnseg.seg.io.dicom_seg import dicom_seg_source, require_highdicom
from gnnseg.seg.io.label_painter import LabelPainter
from gnnseg.seg.sam.inference.prompts import Prompts, validate_boxes
from gnnseg.seg.sam.inference.volume import segment_box_3d, validate_boxes_3d
from gnnseg.seg.sam.runtime import ModelOptions, service_predictor
from gnnseg.seg.sam.shipped import ModelChoice
from gnnseg.seg.serve.encoding import (
    dicom_seg_bytes,
    image_png_bytes,
    nifti_bytes,
    npz_bytes,
    png_bytes,
    rle_encode,
)
from gnnseg.seg.serve.guard import BodyLimit, RequestGuard, ServiceAccess, error_body
from gnnseg.seg.serve.objects import ObjectStore, TrackedObject
from gnnseg.seg.serve.uploads import (
    ImageStore,
    UploadedImage,
    UploadError,
    decode_upload,
)

STATIC = Path(__file__).resolve().parent / "static"
LOG = logging.getLogger("gnnseg.serve")
PER_PIXEL_BYTES = 24
"""Memory a segmentation request takes per pixel of its image (labels, one box's logits and mask, resizing), at
most, however many boxes it has; the tests hold the service to it."""
MULTIPART_OVERHEAD = 64 * 2**10
"""Room for the form's boundaries and small fields around the uploaded file."""


@dataclass(frozen=True)
class ServiceLimits:
    max_upload_bytes: int = 256 * 2**20
    max_pixels: int = 4096 * 4096
    """Pixels of a 2D image (at the limit: about 0.3 GB to decode and segment, docs/serve.md)."""
    max_voxels: int = 64_000_000
    """Voxels of a volume (a 512 x 512 x 244 CT)."""
    max_boxes: int = 64
    store_bytes: int = 2 * 2**30
    """Pixels of uploaded images kept in memory; the least recently used go first."""
    embedding_cache_bytes: int = 512 * 2**20
    max_request_seconds: float = 120.0
    """Time budget of one segmentation request; a 3D request over it stops at the next slice with a 503."""
    objects_bytes: int = 512 * 2**20
    """Memory for the objects being corrected with clicks (their logits, their images); least recently used go."""
    undo_depth: int = 8
    """Clicks of an object that can be undone."""


class SegmentRequest(BaseModel):
    boxes: list[list[float]] | None = Field(None, description="2D boxes x0, y0, x1, y1 in pixel indices")
    slice: int | None = Field(None, description="the slice the 2D boxes are drawn on (volumes only)")
    boxes3d: list[list[float]] | None = Field(None, description="x_min, y_min, z_min, x_max, y_max, z_max")
    format: Literal["png", "npz", "nifti", "dicom-seg", "json"] = "png"


class ObjectRequest(BaseModel):
    box: list[float] | None = Field(None, description="x0, y0, x1, y1 in pixel indices")
    points: list[list[float]] | None = Field(None, description="clicks [[x, y], ...] in pixel indices")
    labels: list[int] | None = Field(None, description="one per click: 1 inside the object, 0 outside")
    slice: int | None = Field(None, description="the slice the object is on (volumes only)")
    box3d: list[float] | None = Field(None, description="a 3D object on a volume: x_min, y_min, z_min, x_max, "
                                                        "y_max, z_max in voxel indices (alone, without the others)")


class ClickRequest(BaseModel):
    x: float
    y: float
    label: Literal[0, 1] = Field(description="1: the object goes on here (add); 0: it does not (remove)")
    slice: int | None = Field(None, description="the slice clicked (3D objects only)")


class Segmenter:
    """The model on one thread of its own, with an embedding cache sized by memory rather than by count.

    The model is loaded, prepared and called on that thread only, so calls run one at a time, always from the same
    thread. PyTorch's OpenMP workers belong to the thread that starts a parallel region, and once a second thread
    has its own team the two slow each other on a small CPU.
    """

    def __init__(self, load: Callable[[], Any], cache_bytes: int, options: ModelOptions | None = None,
                 choice: ModelChoice | None = None) -> None:
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gnnseg-model")
        self.options = options or ModelOptions()
        self.choice = choice or ModelChoice()
        self.predictor = self._model_thread.submit(lambda: service_predictor(load(), self.choice, self.options,
                                                                             cache_bytes)).result()

    def segment_2d(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks and predicted IoUs of ``(N, 4)`` boxes already checked against the ``(H, W, 3)`` uint8 ``rgb``."""
        def segment() -> tuple[np.ndarray, np.ndarray]:
            self.predictor.set_rgb(rgb)
            prediction = self.predictor.answer(Prompts(boxes))
            return prediction.masks[:, 0], prediction.iou[:, 0]

        return self._model_thread.submit(segment).result()

    def call(self, function: Callable[[], Any]) -> Any:
        """``function()`` on the model thread, in turn with every other model call."""
        return self._model_thread.submit(function).result()

    def slice_by_slice(self, budget: RequestBudget) -> _SliceByTurns:
        """A predictor for 3D propagation on the caller's thread whose every slice is one call on the model
        thread, so other requests take turns with the slices; the ``budget`` is checked before each slice."""
        return _SliceByTurns(self, budget)


@dataclass
class RequestBudget:
    """How long a request may still work, and whether its client still waits for the answer."""

    seconds: float
    client_gone: Callable[[], bool] = lambda: False
    started: float = field(default_factory=time.monotonic)

    def check(self) -> None:
        """Raise (503 past the budget, 499 once the client left) instead of starting more model work."""
        if time.monotonic() - self.started > self.seconds:
            raise UploadError(f"the request ran past its budget of {self.seconds:g} s; ask for fewer boxes or a "
                              "smaller z range", status=503)
        if self.client_gone():
            raise UploadError("the client closed the connection; the work was stopped", status=499)


class _SliceByTurns:
    """A predictor whose every slice (``set_image`` then ``predict``) is one call on the model thread, made only
    while the request's budget allows."""

    def __init__(self, segmenter: Segmenter, budget: RequestBudget) -> None:
        self.segmenter, self.budget = segmenter, budget
        self.model = segmenter.predictor.model
        self._image: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        self._image = image

    def predict(self, **prompts):
        self.budget.check()
        predictor, image = self.segmenter.predictor, self._image

        def one_slice():
            predictor.set_image(image)
            return predictor.predict(**prompts)

        return self.segmenter._model_thread.submit(one_slice).result()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status)


def create_app(model=None, *, choice: ModelChoice | None = None, limits: ServiceLimits | None = None,
               options: ModelOptions | None = None, access: ServiceAccess | None = None) -> FastAPI:
    """The service around ``model`` (or the model ``choice`` names; default: the default model), answering as
    ``choice`` says (test-time augmentation, zoom), its decoder run as ``options`` say (:class:`ModelOptions`); a
    ``model`` passed in is changed in place by a bfloat16 or compiled decoder (give a copy to keep the original).
    ``access`` (default: loopback host names, no token) says who may use it (:mod:`gnnseg.seg.serve.guard`)."""
    limits = limits or ServiceLimits()
    access = access or ServiceAccess()
    choice = choice or ModelChoice()
    segmenter = Segmenter(lambda: model if model is not None else choice.load(), limits.embedding_cache_bytes,
                          options, choice)
    store = ImageStore(limits.store_bytes)
    objects = ObjectStore(limits.objects_bytes, segmenter.call, undo_depth=limits.undo_depth,
                          max_objects_per_image=limits.max_boxes)
    app = FastAPI(title="gnnseg box-prompted segmentation", version="1",
                  description="Upload an image or volume, then ask for the object inside each box.")
    app.state.store, app.state.segmenter, app.state.limits, app.state.objects = store, segmenter, limits, objects
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes + MULTIPART_OVERHEAD)
    app.add_middleware(RequestGuard, allowed_hosts=access.allowed_hosts, token=access.token)  # outermost: first

    @app.exception_handler(UploadError)
    async def upload_error(_: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(ValueError)
    async def value_error(_: Request, exc: ValueError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(422, f"invalid request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        LOG.error("%s %s failed", request.method, request.url.path, exc_info=exc)  # the details stay in the log
        return _error(500, f"internal error ({type(exc).__name__}); the server's log has the details")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", **segmenter.choice.describe(), "config": segmenter.predictor.model.config.to_dict(),
                "images": len(store)}

    @app.post("/v1/images", status_code=201)
    def upload(file: UploadFile = File(...), modality: Literal["auto", "ct", "mr"] = Form("auto"),
               window: str = Form("soft_tissue")) -> dict:
        data = file.file.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise UploadError(f"the upload exceeds {limits.max_upload_bytes:,} bytes", status=413)
        image = store.add(decode_upload(Path(file.filename or "").name, data, modality=modality, window=window,
                                        max_pixels=limits.max_pixels, max_voxels=limits.max_voxels,
                                        max_boxes=limits.max_boxes))
        return image.describe()

    @app.get("/v1/images/{image_id}")
    def describe(image_id: str) -> dict:
        return store.get(image_id).describe()

    @app.get("/v1/images/{image_id}/slices/{index}")
    def slice_png(image_id: str, index: int) -> Response:
        return Response(image_png_bytes(store.get(image_id).slice_rgb(index)), media_type="image/png")

    @app.delete("/v1/images/{image_id}", status_code=204)
    def delete(image_id: str) -> Response:
        store.delete(image_id)
        objects.forget_image(image_id)
        return Response(status_code=204)

    def budget_of(http_request: Request) -> RequestBudget:
        return RequestBudget(limits.max_request_seconds,
                             client_gone=lambda: anyio.from_thread.run(http_request.is_disconnected))

    @app.post("/v1/images/{image_id}/objects", status_code=201)
    def create_object(image_id: str, request: ObjectRequest, http_request: Request) -> dict:
        image = store.get(image_id)
        began = time.perf_counter()
        if request.box3d is not None:
            if any(v is not None for v in (request.box, request.points, request.labels, request.slice)):
                raise UploadError("box3d starts a 3D object on its own: give it without box, points, labels or slice "
                                  "(click on its slices afterwards)")
            tracked = objects.create_3d(image, np.array(request.box3d, dtype=np.float64),
                                        segmenter.slice_by_slice(budget_of(http_request)))
            return _object_answer(tracked, began)
        slice_index = _slice_of(image, request.slice)
        given = [None if v is None else np.array(v, dtype=np.float64) for v in (request.box, request.points,
                                                                                  request.labels)]
        tracked = objects.create(image, slice_index, segmenter.predictor, *given)   # prompts checked there
        return _object_answer(tracked, began)

    @app.get("/v1/images/{image_id}/objects")
    def list_objects(image_id: str) -> dict:
        store.get(image_id)
        return {"objects": [_object_answer(o, with_mask=False) for o in objects.on_image(image_id)]}

    @app.get("/v1/images/{image_id}/objects/{object_id}")
    def get_object(image_id: str, object_id: str, format: Literal["json", "png", "nifti", "dicom-seg"] = "json",
                   slice_index: int | None = Query(None, alias="slice", description="a 3D object's PNG slice")) -> Any:
        image = store.get(image_id)
        tracked = objects.get(image_id, object_id)
        if format == "json":
            if slice_index is not None:
                raise UploadError("slice picks the slice of a 3D object's PNG; the JSON holds the whole mask")
            return _object_answer(tracked)
        return _object_file(image, tracked, format, slice_index, segmenter.choice.name)

    @app.post("/v1/images/{image_id}/objects/{object_id}/clicks")
    def click(image_id: str, object_id: str, request: ClickRequest, http_request: Request) -> dict:
        store.get(image_id)
        began = time.perf_counter()
        tracked = objects.click(image_id, object_id, request.x, request.y, request.label == 1, request.slice,
                                segmenter.slice_by_slice(budget_of(http_request)))
        return _object_answer(tracked, began)

    @app.post("/v1/images/{image_id}/objects/{object_id}/undo")
    def undo(image_id: str, object_id: str) -> dict:
        store.get(image_id)
        began = time.perf_counter()
        return _object_answer(objects.undo(image_id, object_id), began)

    @app.delete("/v1/images/{image_id}/objects/{object_id}", status_code=204)
    def delete_object(image_id: str, object_id: str) -> Response:
        store.get(image_id)
        objects.delete(image_id, object_id)
        return Response(status_code=204)

    @app.post("/v1/images/{image_id}/segment")
    def segment(image_id: str, request: SegmentRequest, http_request: Request) -> Response:
        image = store.get(image_id)
        began = time.perf_counter()
        if request.format == "dicom-seg":
            _check_dicom_seg_source(image)          # before the model: the answer could not be given
        labels, iou, objects = _answer(image, request, segmenter, limits, budget_of(http_request))
        headers = {"X-Predicted-IoU": ",".join(f"{v:.4f}" for v in iou),
                   "X-Seconds": f"{time.perf_counter() - began:.3f}"}
        if request.format == "png":
            if labels.ndim != 2:
                raise UploadError("a PNG holds one 2D mask; ask for format npz or nifti for 3D boxes")
            return Response(png_bytes(labels), media_type="image/png", headers=headers)
        if request.format == "npz":
            return Response(npz_bytes(labels, iou),
                            media_type="application/octet-stream", headers=headers)
        if request.format == "nifti":
            if not image.is_volume:
                raise UploadError("NIfTI masks are for volumes; ask for png or npz for a 2D image")
            return Response(nifti_bytes(_as_volume(labels, image, request.slice), image.spacing, image.affine),
                            media_type="application/gzip", headers=headers)
        if request.format == "dicom-seg":
            return Response(dicom_seg_bytes(_as_volume(labels, image, request.slice), image.dicom_headers,
                                            model=segmenter.choice.name),
                            media_type="application/dicom", headers=headers)
        return JSONResponse({"shape": list(labels.shape), "masks": objects,
                             "seconds": time.perf_counter() - began})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def _slice_of(image: UploadedImage, requested: int | None) -> int:
    """The slice 2D boxes or an object are on: 0 for a 2D image, the one named for a volume."""
    if image.is_volume and requested is None:
        raise UploadError(f"2D prompts on a volume need the slice they are drawn on (0..{image.shape[0] - 1})")
    if not image.is_volume and requested not in (None, 0):
        raise UploadError("a 2D image has only slice 0")
    return requested or 0


def _as_volume(labels: np.ndarray, image: UploadedImage, slice_index: int | None) -> np.ndarray:
    """Labels of a volume: 3D labels as they are, 2D boxes' labels on their slice of an otherwise empty volume."""
    if labels.ndim == 3:
        return labels
    volume = np.zeros(image.shape, dtype=labels.dtype)
    volume[slice_index] = labels
    return volume


def _check_dicom_seg_source(image: UploadedImage) -> None:
    """Refuse a DICOM-SEG answer for an image that was not uploaded as a DICOM series the answer can reference
    (422), or when highdicom is not installed (501)."""
    if not image.dicom_headers:
        raise UploadError(f"{image.name or 'this image'} was not uploaded as a DICOM series (a zip of its slices), and "
                          "a DICOM-SEG must reference the series it segments: ask for format nifti or npz")
    try:
        require_highdicom()
    except ImportError as exc:
        raise UploadError(str(exc), status=501) from None
    dicom_seg_source(image.dicom_headers)       # UIDs present: refused by name otherwise


def _object_answer(tracked: TrackedObject, began: float | None = None, *, with_mask: bool = True) -> dict:
    """An object as the API shows it: its prompts, its predicted IoU and (``with_mask``) its mask as run lengths (a 3D
    object's whole ``(D, H, W)`` mask as one run-length code, row-major: slice ``z`` is its runs from
    ``z * H * W``)."""
    state = tracked.state
    if tracked.is_3d:
        answer = {"id": tracked.id, "kind": "3d", "box3d": state.box.tolist(),
                  "clicks": [{"slice": z, "points": points.tolist(), "labels": labels.tolist()}
                             for z, (points, labels) in sorted(state.clicks.items())],
                  "iou": state.iou, "shape": list(state.shape)}
    else:
        answer = {"id": tracked.id, "kind": "2d", "slice": tracked.slice,
                  "box": None if state.box is None else state.box.tolist(), "points": state.points.tolist(),
                  "labels": state.labels.tolist(), "iou": state.iou, "shape": list(state.logits.shape)}
    if with_mask:
        answer["mask"] = rle_encode(state.mask)
    if began is not None:
        answer["seconds"] = time.perf_counter() - began
    return answer


def _object_file(image: UploadedImage, tracked: TrackedObject, format: str, slice_index: int | None,
                 model: str) -> Response:
    """An object's mask as PNG (a 2D object's; one slice of a 3D object's), NIfTI or DICOM-SEG (a 3D object's
    volume; the DICOM-SEG for an uploaded DICOM series)."""
    state, headers = tracked.state, {"X-Predicted-IoU": f"{tracked.state.iou:.4f}"}
    if format == "dicom-seg":
        if not tracked.is_3d:
            raise UploadError("a DICOM-SEG holds a 3D object's mask; ask for format png for a 2D object")
        _check_dicom_seg_source(image)
        return Response(dicom_seg_bytes(state.mask.astype(np.uint8), image.dicom_headers, model=model),
                        media_type="application/dicom", headers=headers)
    if format == "nifti":
        if not tracked.is_3d:
            raise UploadError("NIfTI holds a 3D object's mask; ask for format png for a 2D object")
        return Response(nifti_bytes(state.mask.astype(np.uint8), image.spacing, image.affine),
                        media_type="application/gzip", headers=headers)
    if not tracked.is_3d:
        if slice_index is not None:
            raise UploadError(f"a 2D object's PNG is its mask on its own slice ({tracked.slice}): leave slice out")
        return Response(png_bytes(state.mask.astype(np.uint8)), media_type="image/png", headers=headers)
    if slice_index is None:
        raise UploadError(f"a PNG holds one slice of a 3D object: add slice=z (0..{state.shape[0] - 1}), or ask "
                          "for format nifti")
    return Response(png_bytes(state.mask_slice(slice_index).astype(np.uint8)), media_type="image/png",
                    headers=headers)


def _answer(image: UploadedImage, request: SegmentRequest, segmenter: Segmenter, limits: ServiceLimits,
            budget: RequestBudget) -> tuple[np.ndarray, np.ndarray, list[dict] | None]:
    """Labels (label ``k`` for box ``k``; a pixel two boxes claim goes to the smaller object,
    :mod:`gnnseg.seg.io.label_painter`), predicted IoU, and for JSON each box's run-length mask.

    Boxes are answered one at a time (the image's embedding is computed once and cached) and each mask is painted
    into the labels and dropped, so a request holds the labels and one box's mask at the image's resolution
    however many boxes it has (docs/serve.md: memory per request).
    """
    if (request.boxes is None) == (request.boxes3d is None):
        raise UploadError("give either boxes (2D) or boxes3d (3D), not both and not neither")
    given = request.boxes if request.boxes is not None else request.boxes3d
    if not given:
        raise UploadError("the box list is empty")
    if len(given) > limits.max_boxes:
        raise UploadError(f"{len(given)} boxes exceed the limit of {limits.max_boxes} per request")
    if request.boxes3d is not None:
        if not image.is_volume:
            raise UploadError("3D boxes need a volume; this is a 2D image")
        boxes = validate_boxes_3d(np.array(request.boxes3d, dtype=np.float64), image.shape)
        by_slices = segmenter.slice_by_slice(budget)
        answers = (segment_box_3d(by_slices, image.pixels, box) for box in boxes)
        return _painted(answers, len(boxes), image.shape, request.format == "json")
    rgb = image.slice_rgb(_slice_of(image, request.slice))
    boxes = validate_boxes(np.array(request.boxes, dtype=np.float64), rgb.shape[:2])

    def answers():
        for box in boxes:
            budget.check()
            masks, iou = segmenter.segment_2d(rgb, box[None])
            yield masks[0], float(iou[0])

    return _painted(answers(), len(boxes), rgb.shape[:2], request.format == "json")


def _painted(answers: Iterable[tuple[np.ndarray, float]], count: int, shape: tuple[int, ...],
             run_lengths: bool) -> tuple[np.ndarray, np.ndarray, list[dict] | None]:
    painter = LabelPainter(shape, count)
    ious, objects = [], [] if run_lengths else None
    for index, (mask, iou) in enumerate(answers):
        painter.paint(index, mask)
        ious.append(iou)
        if objects is not None:
            objects.append({"label": index + 1, "iou": float(iou), "pixels": int(mask.sum()),
                            "rle": rle_encode(mask)})
    return painter.labels, np.array(ious, dtype=np.float32), objects
