"""The dock widget: boxes and clicks drawn in napari, answered by the service's predictor and session model.

How it is used: pick an image layer and a model, press *Start*; the widget adds three layers over the image (a Shapes
layer for boxes, Points layers for clicks that add to or remove from an object) and, with the first answer, a Labels
layer with one label per object. Every rectangle drawn starts an object (on a volume, a 3D box over the rectangle's
slice +- *slices either side*, propagated from its middle slice); every point corrects the object whose box holds it
(:class:`~gnnseg.seg.napari.image_objects.ImageObjects`); *Undo* takes back the last click, or the last object.

Threads: model work never runs on the GUI thread. Each request is a napari thread worker (its progress in the
widget's bar and napari's activity dock), and requests run one after another in the order they were made; inside
them every model call runs on one model thread, as in the service (PyTorch's OpenMP workers belong to the thread that
starts them). Labels are pasted into the layer on the GUI thread when a worker returns.

Bad input (a layer of the wrong dimensionality, a shape that is not a rectangle, a click before any box) is one
napari error notification, also shown in the widget's status line, and changes nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from gnnseg.seg.io.intensity import CT_WINDOWS, VOLUME_MODALITIES
from gnnseg.seg.napari.image_objects import ImageObjects, LabelPatch
from gnnseg.seg.napari.layer_inputs import click_position, image_target, rectangle_box
from gnnseg.seg.sam.shipped import DEFAULT_MODEL, MODEL_NAMES, ModelChoice

EMBEDDING_CACHE_BYTES = 256 << 20
"""Memory for the predictor's remembered embeddings (the service sizes its cache the same way)."""


def load_predictor(choice: ModelChoice):
    """The predictor the service would run for ``choice`` (default decoder options), with its embedding cache."""
    from gnnseg.seg.sam.runtime import ModelOptions, service_predictor

    return service_predictor(choice.load(), choice, ModelOptions(), EMBEDDING_CACHE_BYTES)


class _SliceCounter:
    """A predictor that reports each slice it answered (3D propagation calls ``set_image`` then ``predict``)."""

    def __init__(self, predictor: Any, report: Callable[[], None]) -> None:
        self._predictor, self._report = predictor, report
        self.model = predictor.model

    def set_image(self, image: np.ndarray) -> None:
        self._predictor.set_image(image)

    def predict(self, **prompts):
        answer = self._predictor.predict(**prompts)
        self._report()
        return answer


class _Progress(QObject):
    """Slices answered, sent from the model thread to the GUI thread (a queued connection)."""

    slice_answered = Signal()


@dataclass
class _Segmented:
    """An image layer being segmented: its objects and the layers the widget made for it."""

    image: Any
    objects: ImageObjects
    boxes: Any
    add_clicks: Any
    remove_clicks: Any
    labels: Any = None
    answered: list[float] = field(default_factory=list)


class SegmentWidget(QWidget):
    """Box-prompted segmentation in napari (the npe2 widget contribution).

    ``load_predictor`` turns a :class:`~gnnseg.seg.sam.shipped.ModelChoice` into a predictor (default: the service's,
    :func:`load_predictor`). ``answered`` is emitted on the GUI thread once a Labels layer shows an answer, with the
    :class:`LabelPatch` pasted; ``failed`` with the message of a refused or failed request.
    """

    answered = Signal(object)
    failed = Signal(str)

    def __init__(self, napari_viewer, *, load_predictor: Callable[[ModelChoice], Any] = load_predictor) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._load_predictor = load_predictor
        self._predictors: dict[ModelChoice, Any] = {}          # touched on the model thread only
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gnnseg-napari-model")
        self._segmented: dict[int, _Segmented] = {}            # by id() of the image layer
        self._queue: deque[tuple[str, Callable[[], Any], Callable[[Any], None], int]] = deque()
        self._worker = None
        self._progress = _Progress()
        self._progress.slice_answered.connect(self._advance)
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()

    # -- the form -------------------------------------------------------------------------------------------------

    def _build(self) -> None:
        self.image_box = QComboBox()
        self.model_box = QComboBox()
        self.model_box.addItems(MODEL_NAMES)
        self.model_box.setCurrentText(DEFAULT_MODEL)
        self.model_box.setToolTip("a packaged model, a checkpoint file or an ONNX export folder")
        checkpoint = QPushButton("Checkpoint...")
        checkpoint.clicked.connect(self._pick_checkpoint)
        export = QPushButton("ONNX export...")
        export.clicked.connect(self._pick_export)
        models = QHBoxLayout()
        models.addWidget(checkpoint)
        models.addWidget(export)
        self.modality_box = QComboBox()
        self.modality_box.addItems(VOLUME_MODALITIES[::-1])     # auto first
        self.window_box = QComboBox()
        self.window_box.addItems(list(CT_WINDOWS))
        self.depth_box = QSpinBox()
        self.depth_box.setRange(0, 1000)
        self.depth_box.setValue(5)
        self.depth_box.setToolTip("a rectangle on slice z of a volume is a 3D box over slices z - n .. z + n")
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("take back the last click, or the last object if it has none")
        self.undo_button.clicked.connect(self.undo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.undo_button)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.status = QLabel("Pick an image and press Start.")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Image", self.image_box)
        form.addRow("Model", self.model_box)
        form.addRow("", models)
        form.addRow("Volume intensities", self.modality_box)
        form.addRow("CT window", self.window_box)
        form.addRow("Slices either side", self.depth_box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch()

    def _pick_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "A SAM, MedSAM or Lite MedSAM checkpoint", "",
                                              "Checkpoints (*.pt *.pth);;All files (*)")
        self._add_model(path)

    def _pick_export(self) -> None:
        self._add_model(QFileDialog.getExistingDirectory(self, "A folder written by gnnseg seg export-onnx"))

    def _add_model(self, path: str) -> None:
        if path:
            if self.model_box.findText(path) < 0:
                self.model_box.addItem(path)
            self.model_box.setCurrentText(path)

    @property
    def choice(self) -> ModelChoice:
        return ModelChoice(checkpoint=self.model_box.currentText())

    def _image_layers(self) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_images(self, *_: object) -> None:
        current = self.image_box.currentText()
        names = [layer.name for layer in self._image_layers()]
        self.image_box.clear()
        self.image_box.addItems(names)
        if current in names:
            self.image_box.setCurrentText(current)
        live = {id(layer) for layer in self.viewer.layers}
        for key in [key for key, segmented in self._segmented.items() if id(segmented.image) not in live]:
            del self._segmented[key]

    def _chosen_image(self):
        name = self.image_box.currentText()
        for layer in self._image_layers():
            if layer.name == name:
                return layer
        raise ValueError("no image layer to segment: open an image first")

    # -- requests ---------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Segment the chosen image layer: its pixels prepared and the model loaded on a worker, then the prompt
        layers added over it (nothing is added when the layer is refused)."""
        try:
            image = self._chosen_image()
        except ValueError as error:
            self._refuse(str(error))
            return
        if id(image) in self._segmented:
            self._say(f"{image.name!r} is already being segmented: draw boxes in {image.name + ' boxes'!r}")
            return
        choice, modality, window = self.choice, self.modality_box.currentText(), self.window_box.currentText()

        def prepare() -> ImageObjects:
            return ImageObjects(image_target(image, modality, window), self._predictor(choice))

        self._submit(f"preparing {image.name!r}", prepare, lambda objects: self._begin(image, objects))

    def _begin(self, image, objects: ImageObjects) -> None:
        if id(image) not in {id(layer) for layer in self.viewer.layers} or id(image) in self._segmented:
            return                                        # closed while it was prepared, or Start pressed twice
        where = {"scale": image.scale[-image.ndim:], "translate": image.translate[-image.ndim:]}
        boxes = self.viewer.add_shapes(ndim=image.ndim, name=f"{image.name} boxes", edge_color="yellow",
                                       face_color="transparent", edge_width=2, **where)
        add_clicks = self.viewer.add_points(ndim=image.ndim, name=f"{image.name} add", face_color="lime", size=6,
                                            **where)
        remove_clicks = self.viewer.add_points(ndim=image.ndim, name=f"{image.name} remove", face_color="red",
                                               size=6, **where)
        segmented = _Segmented(image, objects, boxes, add_clicks, remove_clicks)
        self._segmented[id(image)] = segmented
        boxes.events.data.connect(lambda event: self._on_boxes(segmented, event))
        add_clicks.events.data.connect(lambda event: self._on_clicks(segmented, event, positive=True))
        remove_clicks.events.data.connect(lambda event: self._on_clicks(segmented, event, positive=False))
        self.viewer.layers.selection.active = boxes
        boxes.mode = "add_rectangle"
        self._say(f"Draw a rectangle on {image.name!r}; then points in {add_clicks.name!r} or "
                  f"{remove_clicks.name!r} to correct it.")

    def _on_boxes(self, segmented: _Segmented, event) -> None:
        if event.action != "added":
            return
        for index in _new_indices(event.data_indices, len(segmented.boxes.data)):
            try:
                box = rectangle_box(segmented.image, segmented.boxes, index, self.depth_box.value())
            except ValueError as error:
                self._refuse(str(error))
                continue
            depth = segmented.objects.target.shape[0]      # the slices a 3D box propagates over, within the volume
            slices = int(min(box[5], depth - 1) - max(box[2], 0) + 1) if len(box) == 6 else 0
            self._request(segmented, f"box {index}", lambda box=box: segmented.objects.add_box(box), slices)

    def _on_clicks(self, segmented: _Segmented, event, *, positive: bool) -> None:
        if event.action != "added":
            return
        layer = segmented.add_clicks if positive else segmented.remove_clicks
        for index in _new_indices(event.data_indices, len(layer.data)):
            try:
                x, y, z = click_position(segmented.image, layer, index)
            except ValueError as error:
                self._refuse(str(error))
                continue
            self._request(segmented, f"{'adding' if positive else 'removing'} click",
                          lambda x=x, y=y, z=z: segmented.objects.click(x, y, z, positive),
                          segmented.objects.target.shape[0] if z is not None else 0)

    def undo(self) -> None:
        """Take back the last click of the object answered last, or remove that object if it has no click."""
        try:
            segmented = self._segmented[id(self._chosen_image())]
        except (ValueError, KeyError):
            self._refuse("nothing to undo: press Start on an image and draw a box first")
            return
        self._request(segmented, "undo", segmented.objects.undo, 0)

    def _request(self, segmented: _Segmented, what: str, change: Callable[[], LabelPatch], slices: int) -> None:
        """``change`` of the image's objects through the current model, its answer pasted into the labels."""
        choice, began = self.choice, time.perf_counter()

        def answer() -> LabelPatch:
            segmented.objects.predictor = self._predictor(choice)
            if slices:
                segmented.objects.predictor = _SliceCounter(segmented.objects.predictor,
                                                            self._progress.slice_answered.emit)
            return change()

        self._submit(what, answer, lambda patch: self._paste(segmented, patch, began), slices)

    def _predictor(self, choice: ModelChoice):
        """The predictor of ``choice``, loaded once (on the model thread, where every call to it runs)."""
        if choice not in self._predictors:
            self._predictors[choice] = self._load_predictor(choice)
        return self._predictors[choice]

    def _submit(self, what: str, work: Callable[[], Any], then: Callable[[Any], None], slices: int = 0) -> None:
        """Queue ``work`` (run on the model thread from a napari worker); ``then(result)`` on the GUI thread."""
        self._queue.append((what, work, then, slices))
        if self._worker is None:
            self._next()

    def _next(self) -> None:
        self._worker = None
        if not self._queue:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1)
            return
        what, work, then, slices = self._queue.popleft()
        self.progress_bar.setRange(0, slices)           # 0..0: busy, without a count
        self.progress_bar.setValue(0)
        self._say(f"gnnseg: {what}...")
        worker = create_worker(lambda: self._model_thread.submit(work).result(),
                               _progress={"desc": f"gnnseg: {what}"}, _ignore_errors=True)   # errored: shown here
        worker.returned.connect(then)
        worker.errored.connect(self._refuse_error)
        worker.finished.connect(self._next)
        self._worker = worker
        worker.start()

    @property
    def busy(self) -> bool:
        """Whether a request is running or waiting."""
        return self._worker is not None or bool(self._queue)

    def _advance(self) -> None:
        self.progress_bar.setValue(min(self.progress_bar.value() + 1, self.progress_bar.maximum()))

    # -- answers ----------------------------------------------------------------------------------------------------

    def _paste(self, segmented: _Segmented, patch: LabelPatch, began: float) -> None:
        labels = self._labels_layer(segmented)
        labels.data[patch.region] = patch.labels
        labels.refresh()
        seconds = time.perf_counter() - began
        segmented.answered.append(seconds)
        self._say(f"object {patch.object_id} removed." if patch.removed else
                  f"object {patch.object_id} answered in {seconds:.2f} s, predicted IoU {patch.iou:.2f}.")
        self.answered.emit(patch)

    def _labels_layer(self, segmented: _Segmented):
        """The Labels layer of the image's objects, made with the first answer (again if it was closed)."""
        if segmented.labels is None or segmented.labels not in self.viewer.layers:
            image = segmented.image   # a layer made again shows every object so far
            segmented.labels = self.viewer.add_labels(segmented.objects.labels(), name=f"{image.name} objects",
                                                      scale=image.scale[-image.ndim:],
                                                      translate=image.translate[-image.ndim:], opacity=0.5)
        return segmented.labels

    def _say(self, message: str) -> None:
        self.status.setText(message)

    def _refuse(self, message: str) -> None:
        """One clear message (a napari notification and the status line); nothing is changed."""
        self._say(message)
        show_error(message)
        self.failed.emit(message)

    def _refuse_error(self, error: Exception) -> None:
        """A request that failed on the worker: bad input says what it is, anything else its type too."""
        if isinstance(error, KeyError) and error.args:
            self._refuse(str(error.args[0]))
        else:
            self._refuse(str(error) if isinstance(error, ValueError | OSError) else f"{type(error).__name__}: {error}")


def _new_indices(data_indices, count: int) -> list[int]:
    """The indices an ``added`` event names, negative ones counted from the end."""
    return sorted({index % count for index in data_indices}) if count else []
