"""The objects the service's clients are correcting with clicks.

A 2D object lives on one uploaded image (one slice of a volume) and is an object of an
:class:`~gnnseg.seg.sam.inference.session.InteractiveSession` kept for that slice, so a click costs one decoder pass;
its changes run on the model's thread, one at a time. A 3D object lives on a volume and is the one object of a
:class:`~gnnseg.seg.sam.inference.volume_session.VolumeSession` of its own (over the upload's pixels, not a copy):
its propagation and every click's re-propagation run on the request's thread through a predictor whose every slice is
one call on the model thread (``Segmenter.slice_by_slice``), so other requests take turns with its slices, and the
object's own lock keeps two requests from changing it at once.

Objects are kept within a memory budget (each kept state: a 2D object's logits, a 3D object's packed mask, clicks and
slice IoUs; each image a session holds, counted once); the least recently used go first, and a request for one that
went (or never was) is a 404 that says so. Its id is random, like an image's.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from gnnseg.seg.sam.inference.session import InteractiveSession, ObjectState
from gnnseg.seg.sam.inference.volume_session import VolumeObjectState, VolumeSession
from gnnseg.seg.serve.uploads import UploadedImage, UploadError

T = TypeVar("T")


@dataclass
class TrackedObject:
    """An object as the service knows it: where it lives and which object of which session it is."""

    id: str
    image_id: str
    slice: int | None
    """The slice a 2D object is on (0 on a 2D image); ``None`` for a 3D object."""
    session: InteractiveSession | VolumeSession
    inner_id: int
    busy: threading.Lock = field(default_factory=threading.Lock)
    """Held while a request changes a 3D object (off the model thread)."""

    @property
    def is_3d(self) -> bool:
        return isinstance(self.session, VolumeSession)

    @property
    def state(self) -> ObjectState | VolumeObjectState:
        return self.session.state(self.inner_id)

    @property
    def nbytes(self) -> int:
        """Bytes of the states it keeps (its image not included: see :attr:`held_image`)."""
        return sum(state.nbytes for state in self.session.history(self.inner_id))

    @property
    def held_image(self) -> tuple[tuple[str, int | None], int]:
        """Which image its session holds (a 2D object's slice, a 3D object's volume) and its bytes: objects that
        share an image count it once."""
        return (self.image_id, self.slice), self.session.image_nbytes


class ObjectStore:
    """Objects by id within ``max_bytes``. ``run`` calls a function on the model's thread: every change to a 2D
    object happens there, one at a time (a click reaches the predictor, and an undo or a deletion must not cross a
    click on the same object), as do deletions and evictions of any object; a 3D object is changed on its request's
    thread under its own lock (a deletion meanwhile makes that request a 404). The store's lock keeps lookups from
    other threads consistent."""

    def __init__(self, max_bytes: int, run: Callable[[Callable[[], T]], T], *, undo_depth: int = 8,
                 max_objects_per_image: int = 64) -> None:
        self.max_bytes, self.run = max_bytes, run
        self.undo_depth, self.max_objects_per_image = undo_depth, max_objects_per_image
        self._objects: OrderedDict[str, TrackedObject] = OrderedDict()
        self._sessions: dict[tuple[str, int], InteractiveSession] = {}
        self._lock = threading.Lock()

    def create(self, image: UploadedImage, slice_index: int, predictor: Any, box: np.ndarray | None,
               points: np.ndarray | None, labels: np.ndarray | None) -> TrackedObject:
        """A new 2D object on ``image`` (slice ``slice_index``) from its box and/or clicks, answered once."""
        def create() -> TrackedObject:
            self._check_room(image.id)
            key = (image.id, slice_index)
            session = self._sessions.get(key) or InteractiveSession(predictor, image.slice_rgb(slice_index),
                                                                     undo_depth=self.undo_depth)
            tracked = TrackedObject(secrets.token_hex(8), image.id, slice_index, session,
                                    session.add(box=box, points=points, labels=labels))
            with self._lock:
                self._sessions[key] = session
                self._objects[tracked.id] = tracked
            self._evict()
            return tracked

        return self.run(create)

    def create_3d(self, image: UploadedImage, box3d: np.ndarray, predictor: Any) -> TrackedObject:
        """A new 3D object on the volume ``image`` from its 3D box, propagated on this thread through ``predictor``
        (one model call per slice)."""
        if not image.is_volume:
            raise UploadError("a 3D box (box3d) needs a volume; this is a 2D image: give a box and/or points")
        self._check_room(image.id)
        session = VolumeSession(predictor, image.pixels, undo_depth=self.undo_depth)
        tracked = TrackedObject(secrets.token_hex(8), image.id, None, session, session.add(box3d))
        with self._lock:
            self._objects[tracked.id] = tracked
        self.run(self._evict)
        return tracked

    def get(self, image_id: str, object_id: str) -> TrackedObject:
        with self._lock:
            tracked = self._objects.get(object_id)
            if tracked is None or tracked.image_id != image_id:
                raise UploadError(f"no object {object_id!r} on image {image_id!r} (never made, deleted, or let go "
                                  "to free memory: start it again from its box)", status=404)
            self._objects.move_to_end(object_id)
            return tracked

    def click(self, image_id: str, object_id: str, x: float, y: float, positive: bool,
              slice_index: int | None = None, predictor: Any = None) -> TrackedObject:
        """A click at ``(x, y)``: a 3D object needs the ``slice_index`` clicked and is answered through ``predictor``
        (one model call per slice); a 2D object is answered on its own slice and takes none."""
        tracked = self.get(image_id, object_id)
        if not tracked.is_3d:
            if slice_index is not None:
                raise UploadError(f"object {object_id!r} is 2D (on slice {tracked.slice}): its clicks take no slice")

            def click() -> TrackedObject:
                current = self.get(image_id, object_id)   # still there once its turn comes
                current.session.click(current.inner_id, x, y, positive)
                self._evict()
                return current

            return self.run(click)
        if slice_index is None:
            box = tracked.state.box
            raise UploadError(f"object {object_id!r} is 3D: a click on it needs the slice it is on "
                              f"({box[2]}..{box[5]})")

        def click_3d(session: VolumeSession) -> None:
            session.predictor = predictor
            session.click(tracked.inner_id, slice_index, x, y, positive)

        self._change_3d(tracked, click_3d)
        self.run(self._evict)
        return tracked

    def undo(self, image_id: str, object_id: str) -> TrackedObject:
        tracked = self.get(image_id, object_id)
        if tracked.is_3d:
            return self._change_3d(tracked, lambda session: session.undo(tracked.inner_id))

        def undo() -> TrackedObject:
            current = self.get(image_id, object_id)
            current.session.undo(current.inner_id)
            return current

        return self.run(undo)

    def delete(self, image_id: str, object_id: str) -> None:
        self.run(lambda: self._drop(self.get(image_id, object_id)))

    def forget_image(self, image_id: str) -> None:
        def forget() -> None:
            for tracked in self.on_image(image_id):
                self._drop(tracked)

        self.run(forget)

    def on_image(self, image_id: str) -> list[TrackedObject]:
        """The image's objects, oldest first."""
        with self._lock:
            return [o for o in self._objects.values() if o.image_id == image_id]

    def __len__(self) -> int:
        return len(self._objects)

    def _check_room(self, image_id: str) -> None:
        if len(self.on_image(image_id)) >= self.max_objects_per_image:
            raise UploadError(f"the image already has {self.max_objects_per_image} objects; delete some first",
                              status=409)

    def _change_3d(self, tracked: TrackedObject, change: Callable[[VolumeSession], Any]) -> TrackedObject:
        """``change(session)`` of a 3D object on this thread, one request at a time per object; an object deleted or
        evicted meanwhile (its session no longer knows it) is a 404."""
        with tracked.busy:
            try:
                change(tracked.session)
            except KeyError:
                if tracked.inner_id in tracked.session.object_ids:
                    raise
                raise UploadError(f"object {tracked.id!r} was deleted or let go to free memory while it was being "
                                  "answered", status=404) from None
        return tracked

    def _drop(self, tracked: TrackedObject) -> None:
        with self._lock:
            self._objects.pop(tracked.id, None)
            tracked.session.remove(tracked.inner_id)
            if not tracked.session.object_ids:
                self._sessions.pop((tracked.image_id, tracked.slice), None)

    def _evict(self) -> None:
        """Let the least recently used objects go while the budget is exceeded (never the one just used)."""
        while len(self._objects) > 1 and self._nbytes() > self.max_bytes:
            self._drop(next(iter(self._objects.values())))

    def _nbytes(self) -> int:
        with self._lock:
            objects = list(self._objects.values())
        images = dict(tracked.held_image for tracked in objects)
        return sum(images.values()) + sum(tracked.nbytes for tracked in objects)
