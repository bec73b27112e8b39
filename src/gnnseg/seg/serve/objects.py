"""The objects the service's clients are correcting with clicks.

An object lives on one uploaded image (one slice of a volume) and is an object of an
:class:`~gnnseg.seg.sam.inference.session.InteractiveSession` kept for that slice, so a click costs one decoder pass.
Objects are kept within a memory budget (each state's logits, each session's image); the least recently used go
first, and a request for one that went (or never was) is a 404 that says so. Its id is random, like an image's.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from gnnseg.seg.sam.inference.session import InteractiveSession, ObjectState
from gnnseg.seg.serve.uploads import UploadedImage, UploadError

T = TypeVar("T")


@dataclass
class TrackedObject:
    """An object as the service knows it: where it lives and which object of which session it is."""

    id: str
    image_id: str
    slice: int
    session: InteractiveSession
    inner_id: int

    @property
    def state(self) -> ObjectState:
        return self.session.state(self.inner_id)

    @property
    def nbytes(self) -> int:
        return sum(state.logits.nbytes for state in self.session.history(self.inner_id))


class ObjectStore:
    """Objects by id within ``max_bytes``. ``run`` calls a function on the model's thread: every change to the
    objects happens there, one at a time (a click reaches the predictor, and an undo or a deletion must not cross a
    click on the same object); the lock keeps lookups from other threads consistent."""

    def __init__(self, max_bytes: int, run: Callable[[Callable[[], T]], T], *, undo_depth: int = 8,
                 max_objects_per_image: int = 64) -> None:
        self.max_bytes, self.run = max_bytes, run
        self.undo_depth, self.max_objects_per_image = undo_depth, max_objects_per_image
        self._objects: OrderedDict[str, TrackedObject] = OrderedDict()
        self._sessions: dict[tuple[str, int], InteractiveSession] = {}
        self._lock = threading.Lock()

    def create(self, image: UploadedImage, slice_index: int, predictor: Any, box: np.ndarray | None,
               points: np.ndarray | None, labels: np.ndarray | None) -> TrackedObject:
        """A new object on ``image`` (slice ``slice_index``) from its box and/or clicks, answered once."""
        def create() -> TrackedObject:
            if len(self.on_image(image.id)) >= self.max_objects_per_image:
                raise UploadError(f"the image already has {self.max_objects_per_image} objects; delete some first",
                                  status=409)
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

    def get(self, image_id: str, object_id: str) -> TrackedObject:
        with self._lock:
            tracked = self._objects.get(object_id)
            if tracked is None or tracked.image_id != image_id:
                raise UploadError(f"no object {object_id!r} on image {image_id!r} (never made, deleted, or let go "
                                  "to free memory: start it again from its box)", status=404)
            self._objects.move_to_end(object_id)
            return tracked

    def click(self, image_id: str, object_id: str, x: float, y: float, positive: bool) -> TrackedObject:
        def click() -> TrackedObject:
            tracked = self.get(image_id, object_id)
            tracked.session.click(tracked.inner_id, x, y, positive)
            self._evict()
            return tracked

        return self.run(click)

    def undo(self, image_id: str, object_id: str) -> TrackedObject:
        def undo() -> TrackedObject:
            tracked = self.get(image_id, object_id)
            tracked.session.undo(tracked.inner_id)
            return tracked

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
            images = sum(session.rgb.nbytes for session in self._sessions.values())
            return images + sum(tracked.nbytes for tracked in self._objects.values())
