"""The napari plugin driven headless: the dock widget on a viewer, boxes and clicks added to its layers as a user's
drawing adds them, answers read back from its Labels layer; the readers' layers and scales; the npe2 manifest.

Qt runs on its offscreen platform (set here, before Qt loads). napari's full ``Viewer`` draws with OpenGL, which the
offscreen platform does not give (vispy reads no GL extensions there), so the widget is docked on a
``ViewerModel``: the layers, the events and the dims the widget works with, without a canvas. The model is the real
default one (``vit_cpu_clicks``) where the figures matter, and a stand-in where a test needs an exact answer or a
slow one.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("napari", reason="napari is not installed (pip install -e '.[napari]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed (pip install -e '.[test]')")
try:
    from qtpy.QtCore import QTimer
except Exception as error:  # no Qt binding, or its libraries cannot load on this machine
    pytest.skip(f"Qt cannot load here: {error}", allow_module_level=True)

from napari.components import ViewerModel  # noqa: E402
from napari.utils.notifications import notification_manager  # noqa: E402

from gnnseg.seg.io import MedicalImage, read_dicom_series, write_nifti  # noqa: E402
from gnnseg.seg.metrics import dice  # noqa: E402
from gnnseg.seg.napari.readers import (  # noqa: E402
    dicom_folder_reader,
    nifti_or_npz_reader,
)
from gnnseg.seg.napari.widget import SegmentWidget, load_predictor  # noqa: E402
from gnnseg.seg.sam.shipped import DEFAULT_MODEL, ModelChoice  # noqa: E402
from tests.conftest import require_dataset  # noqa: E402
from tests.seg.stand_in_predictors import BoxAndClicks, BoxFill, CutsAtNegativeClicks  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[2] / "src" / "gnnseg" / "seg" / "napari" / "napari.yaml"
ANSWER_TIMEOUT_MS = 120_000

YY, XX = np.mgrid[:256, :256]
DISC = (YY - 120) ** 2 + (XX - 130) ** 2 < 50 ** 2      # rows 71..169, columns 81..179
LEFT = (YY - 128) ** 2 + (XX - 90) ** 2 < 40 ** 2
RIGHT = (YY - 128) ** 2 + (XX - 175) ** 2 < 40 ** 2
CORNER = (YY >= 4) & (YY < 16) & (XX >= 4) & (XX < 26)   # a small second object, in the disc image's corner


@pytest.fixture(scope="module")
def default_predictor():
    """The service's predictor of the packaged default model, loaded once for the module."""
    return load_predictor(ModelChoice())


@pytest.fixture
def viewer():
    model = ViewerModel()
    yield model
    model.layers.clear()


@pytest.fixture
def refusals():
    """The error notifications napari shows during the test."""
    shown: list[str] = []

    def collect(notification) -> None:
        shown.append(notification.message)

    notification_manager.notification_ready.connect(collect)
    yield shown
    notification_manager.notification_ready.disconnect(collect)


def started(qtbot, viewer, image_name: str, predictor, **settings) -> SegmentWidget:
    """The widget on ``viewer`` with ``predictor`` for every model, started on ``image_name``."""
    widget = SegmentWidget(viewer, load_predictor=lambda choice: predictor)
    qtbot.addWidget(widget)
    widget.image_box.setCurrentText(image_name)
    for name, value in settings.items():
        getattr(widget, name).setValue(value)
    widget.start()
    qtbot.waitUntil(lambda: not widget.busy, timeout=ANSWER_TIMEOUT_MS)
    return widget


def answered(qtbot, widget: SegmentWidget, action) -> None:
    """Run ``action`` (a drawing) and wait until the widget pasted its answer."""
    with qtbot.waitSignal(widget.answered, timeout=ANSWER_TIMEOUT_MS):
        action()
    qtbot.waitUntil(lambda: not widget.busy, timeout=ANSWER_TIMEOUT_MS)


def rectangle(y0: float, x0: float, y1: float, x1: float, z: int | None = None) -> np.ndarray:
    """A rectangle as napari's ``add_rectangles`` takes it: two corners, or on slice ``z`` of a volume its four."""
    if z is None:
        return np.array([[y0, x0], [y1, x1]], dtype=float)
    return np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], dtype=float)


def test_a_box_drawn_on_a_disc_gives_its_label_with_the_default_model(qtbot, viewer, default_predictor):
    viewer.add_image(np.where(DISC, 200.0, np.where(CORNER, 150.0, 40.0)), name="disc", scale=(0.5, 0.5))
    widget = started(qtbot, viewer, "disc", default_predictor)
    assert [layer.name for layer in viewer.layers] == ["disc", "disc boxes", "disc add", "disc remove"]

    boxes = viewer.layers["disc boxes"]
    answered(qtbot, widget, lambda: boxes.add_rectangles(rectangle(65, 75, 175, 185)))
    labels = viewer.layers["disc objects"]
    assert labels.data.shape == (256, 256) and tuple(labels.scale) == (0.5, 0.5)
    assert set(np.unique(labels.data)) == {0, 1}
    assert dice(labels.data == 1, DISC) >= 0.95          # 0.988 measured on 2 CPU cores
    assert "object 1 answered" in widget.status.text()

    answered(qtbot, widget, lambda: boxes.add_rectangles(rectangle(0, 0, 20, 30)))   # a second object: label 2
    assert set(np.unique(labels.data)) == {0, 1, 2} and dice(labels.data == 1, DISC) >= 0.95
    assert dice(labels.data == 2, CORNER) >= 0.8
    assert not (labels.data[21:] == 2).any()


def test_clicks_correct_the_object_their_box_holds_and_undo_takes_them_back(qtbot, viewer, default_predictor):
    viewer.add_image(np.where(LEFT, 200.0, np.where(RIGHT, 150.0, 40.0)), name="discs")
    widget = started(qtbot, viewer, "discs", default_predictor)
    answered(qtbot, widget, lambda: viewer.layers["discs boxes"].add_rectangles(rectangle(83, 45, 173, 220)))
    labels = viewer.layers["discs objects"]
    by_box = labels.data.copy()
    right_share = [(by_box == 1)[RIGHT].mean()]

    answered(qtbot, widget, lambda: viewer.layers["discs remove"].add(np.array([128.0, 175.0])))
    right_share.append((labels.data == 1)[RIGHT].mean())
    answered(qtbot, widget, lambda: viewer.layers["discs add"].add(np.array([128.0, 175.0])))
    right_share.append((labels.data == 1)[RIGHT].mean())
    # measured: 0.29 of the right disc by the box, 0.23 after the removing click, 0.26 after the adding one
    assert right_share[1] <= right_share[0] - 0.03 and right_share[2] >= right_share[1] + 0.015

    answered(qtbot, widget, widget.undo)
    answered(qtbot, widget, widget.undo)
    assert np.array_equal(labels.data, by_box)               # both clicks taken back: the box's answer again
    answered(qtbot, widget, widget.undo)
    assert not labels.data.any() and "object 1 removed" in widget.status.text()


def test_a_click_goes_to_the_object_whose_box_holds_it(qtbot, viewer):
    viewer.add_image(np.zeros((40, 60), np.uint8), name="flat")
    widget = started(qtbot, viewer, "flat", BoxAndClicks())
    boxes = viewer.layers["flat boxes"]
    answered(qtbot, widget, lambda: boxes.add_rectangles(rectangle(2, 2, 12, 12)))
    answered(qtbot, widget, lambda: boxes.add_rectangles(rectangle(20, 30, 30, 50)))
    labels = viewer.layers["flat objects"].data
    assert (labels[2:13, 2:13] == 1).all() and (labels[20:31, 30:51] == 2).all() and labels.sum() == 121 + 2 * 231

    answered(qtbot, widget, lambda: viewer.layers["flat remove"].add(np.array([5.0, 5.0])))   # in box 1
    assert labels[5, 5] == 0 and (labels[20:31, 30:51] == 2).all()
    answered(qtbot, widget, lambda: viewer.layers["flat add"].add(np.array([35.0, 10.0])))    # in no box: the last
    assert labels[35, 10] == 1 and labels[5, 5] == 0


def test_a_box_on_one_slice_of_a_volume_propagates_to_its_neighbours(qtbot, viewer, default_predictor):
    zz, yy, xx = np.mgrid[:15, :96, :96]
    ball = (zz - 7) ** 2 * 16 + (yy - 48) ** 2 + (xx - 46) ** 2 < 28 ** 2
    viewer.add_image(np.where(ball, 180, 30).astype(np.uint8), name="ball", scale=(2.0, 0.8, 0.8))
    widget = started(qtbot, viewer, "ball", default_predictor, depth_box=3)
    progress: list[tuple[int, int]] = []
    widget.progress_bar.valueChanged.connect(lambda value: progress.append((value, widget.progress_bar.maximum())))
    answered(qtbot, widget, lambda: viewer.layers["ball boxes"].add_rectangles(rectangle(19.5, 17.5, 77.5, 75.5, z=7)))
    labels = viewer.layers["ball objects"]
    assert labels.data.shape == ball.shape and tuple(labels.scale) == (2.0, 0.8, 0.8)
    painted = (labels.data == 1).any(axis=(1, 2))
    assert painted.tolist() == [False] * 4 + [True] * 7 + [False] * 4            # slices 7 - 3 .. 7 + 3
    assert dice(labels.data[4:11] == 1, ball[4:11]) >= 0.95                      # 0.986 measured
    assert progress[:8] == [(k, 7) for k in range(8)]          # a step a slice answered, of the box's 7


def test_a_click_on_a_slice_of_a_3d_object_repropagates_from_it(qtbot, viewer):
    viewer.add_image(np.zeros((9, 21, 23), np.uint8), name="vol")
    widget = started(qtbot, viewer, "vol", CutsAtNegativeClicks(), depth_box=6)     # slices -2..10: all 9
    maxima: list[int] = []
    widget.progress_bar.valueChanged.connect(lambda _: maxima.append(widget.progress_bar.maximum()))
    answered(qtbot, widget, lambda: viewer.layers["vol boxes"].add_rectangles(rectangle(5, 4, 16, 18, z=4)))
    labels = viewer.layers["vol objects"].data
    assert (labels[:, 5:17, 4:19] == 1).all() and labels.sum() == 9 * 12 * 15
    assert maxima[:10] == [9] * 10                          # the progress counts the slices within the volume

    answered(qtbot, widget, lambda: viewer.layers["vol remove"].add(np.array([6.0, 10.0, 12.0])))
    columns = [np.flatnonzero(labels[z].any(axis=0)) for z in range(9)]
    # cut at x = 12 on slice 6, then propagated both ways, each slice's box grown by 3 up to the 3D box (x <= 18)
    assert [(c[0], c[-1]) for c in columns] == [(4, 18)] * 4 + [(4, 17), (4, 14), (4, 11), (4, 14), (4, 17)]
    assert (labels[:, :5] == 0).all() and (labels[:, 17:] == 0).all()


def test_the_gui_thread_runs_while_a_slow_model_answers(qtbot, viewer):
    class SlowBoxFill(BoxFill):
        def set_rgb(self, rgb: np.ndarray) -> None:
            time.sleep(1.0)
            super().set_rgb(rgb)

    viewer.add_image(np.zeros((32, 32), np.uint8), name="slow")
    widget = started(qtbot, viewer, "slow", SlowBoxFill())
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(20)
    began = time.perf_counter()
    viewer.layers["slow boxes"].add_rectangles(rectangle(4, 4, 20, 20))
    returned_after = time.perf_counter() - began
    assert returned_after < 0.5 and widget.busy and "slow objects" not in viewer.layers
    with qtbot.waitSignal(widget.answered, timeout=ANSWER_TIMEOUT_MS):
        pass
    timer.stop()
    answer_after = time.perf_counter() - began
    during = [tick for tick in ticks if tick < began + answer_after]
    assert answer_after >= 1.0 and len(during) >= 10        # the timer kept firing (blocked, it would fire once)
    assert (viewer.layers["slow objects"].data[4:21, 4:21] == 1).all()


@pytest.mark.parametrize(("data", "rgb", "expected"), [
    (np.zeros((2, 5, 32, 32)), False, "has 4 dimensions (shape (2, 5, 32, 32))"),
    (np.zeros((5, 32, 32, 3), np.uint8), True, "is an RGB stack of shape (5, 32, 32, 3)"),
    (np.zeros((32, 32, 3), np.uint8), False, "looks like an RGB image that napari did not open as RGB"),
])
def test_a_layer_of_the_wrong_dimensionality_is_one_message_and_changes_nothing(qtbot, viewer, refusals, data, rgb,
                                                                              expected):
    viewer.add_image(data, name="odd", rgb=rgb)
    widget = SegmentWidget(viewer, load_predictor=lambda choice: BoxFill())
    qtbot.addWidget(widget)
    with qtbot.waitSignal(widget.failed, timeout=ANSWER_TIMEOUT_MS) as failed:
        widget.start()
    qtbot.waitUntil(lambda: not widget.busy, timeout=ANSWER_TIMEOUT_MS)
    assert expected in failed.args[0] and "'odd'" in failed.args[0]
    assert refusals == [failed.args[0]] and widget.status.text() == failed.args[0]
    assert [layer.name for layer in viewer.layers] == ["odd"]


def test_a_shape_that_is_not_a_rectangle_or_a_click_before_a_box_is_refused(qtbot, viewer, refusals):
    viewer.add_image(np.zeros((40, 40), np.uint8), name="img")
    predictor = BoxFill()
    widget = started(qtbot, viewer, "img", predictor)
    boxes = viewer.layers["img boxes"]
    boxes.add_ellipses(np.array([[5.0, 5.0], [20.0, 20.0]]))
    assert refusals == ["shape 0 of layer 'img boxes' is a ellipse: gnnseg takes rectangles as boxes; draw it with "
                        "the rectangle tool"]
    assert not widget.busy and predictor.encoder_calls == 0 and "img objects" not in viewer.layers
    assert len(boxes.data) == 1                               # the user's shape stays

    with qtbot.waitSignal(widget.failed, timeout=ANSWER_TIMEOUT_MS) as failed:
        viewer.layers["img add"].add(np.array([10.0, 10.0]))
    qtbot.waitUntil(lambda: not widget.busy, timeout=ANSWER_TIMEOUT_MS)
    assert failed.args[0] == "a click corrects an object: draw its box first"
    assert "img objects" not in viewer.layers and predictor.encoder_calls == 0


def test_the_model_picker_loads_the_chosen_model_for_the_next_request(qtbot, viewer):
    loaded: list[str] = []

    def load(choice: ModelChoice):
        loaded.append(choice.name)
        return BoxFill()

    viewer.add_image(np.zeros((40, 40), np.uint8), name="img")
    widget = SegmentWidget(viewer, load_predictor=load)
    qtbot.addWidget(widget)
    assert widget.model_box.currentText() == DEFAULT_MODEL
    widget.start()
    qtbot.waitUntil(lambda: not widget.busy, timeout=ANSWER_TIMEOUT_MS)
    answered(qtbot, widget, lambda: viewer.layers["img boxes"].add_rectangles(rectangle(2, 2, 9, 9)))
    widget.model_box.setCurrentText("lite_medsam_fast")
    widget._add_model("/models/export")                      # as the ONNX export button adds a folder
    assert widget.choice == ModelChoice(checkpoint="/models/export")
    widget.model_box.setCurrentText("lite_medsam_fast")
    answered(qtbot, widget, lambda: viewer.layers["img boxes"].add_rectangles(rectangle(20, 20, 30, 30)))
    assert loaded == [DEFAULT_MODEL, "lite_medsam_fast"]     # each loaded once, when first asked for
    assert (viewer.layers["img objects"].data[2:10, 2:10] == 1).all()


def test_the_manifest_validates_and_names_the_widget_and_readers():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    manifest.validate_imports()
    assert manifest.name == "gnnseg"
    commands = {command.id: command.python_name for command in manifest.contributions.commands}
    assert commands[manifest.contributions.widgets[0].command] == "gnnseg.seg.napari.widget:SegmentWidget"
    patterns = {reader.command: (reader.filename_patterns, reader.accepts_directories)
                for reader in manifest.contributions.readers}
    assert patterns == {"gnnseg.read_nifti_or_npz": (["*.nii", "*.nii.gz", "*.npz"], False),
                        "gnnseg.read_dicom_folder": ([], True)}

    plugins = npe2.PluginManager()                            # not napari's own: nothing leaks into other tests
    plugins.register(manifest)
    readers = {name: [reader.command for reader in plugins.iter_compatible_readers([name])]
               for name in ("ct.NII.GZ", "case.npz", "photo.png", str(MANIFEST.parent))}
    assert readers == {"ct.NII.GZ": ["gnnseg.read_nifti_or_npz"], "case.npz": ["gnnseg.read_nifti_or_npz"],
                       "photo.png": [], str(MANIFEST.parent): ["gnnseg.read_dicom_folder"]}


def test_readers_give_zyx_arrays_with_the_spacing_as_scale(tmp_path):
    volume = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 300
    path = write_nifti(MedicalImage(volume, (2.5, 0.8, 0.7)), tmp_path / "ct.nii.gz")
    reader = nifti_or_npz_reader(str(path))
    [(data, attributes, kind)] = reader(str(path))
    assert kind == "image" and np.array_equal(data, volume) and attributes["name"] == "ct"
    assert attributes["scale"] == pytest.approx((2.5, 0.8, 0.7))
    assert attributes["contrast_limits"] == (-160.0, 240.0)          # CT: the soft-tissue window

    np.savez(tmp_path / "3DBox_case.npz", imgs=np.zeros((3, 8, 9), np.uint8), boxes=np.array([[1, 1, 0, 5, 5, 2]]),
             spacing=np.array([3.0, 1.0, 1.5]))
    [(data, attributes, _)] = nifti_or_npz_reader(str(tmp_path / "3DBox_case.npz"))(str(tmp_path / "3DBox_case.npz"))
    assert data.shape == (3, 8, 9) and attributes["scale"] == (3.0, 1.0, 1.5)
    np.savez(tmp_path / "2DBox_case.npz", imgs=np.zeros((8, 9, 3), np.uint8), boxes=np.array([[1, 1, 5, 5]]))
    [(data, attributes, _)] = nifti_or_npz_reader(str(tmp_path / "2DBox_case.npz"))(str(tmp_path / "2DBox_case.npz"))
    assert data.shape == (8, 9, 3) and attributes["rgb"] is True and "scale" not in attributes

    assert nifti_or_npz_reader(str(tmp_path / "photo.png")) is None
    assert dicom_folder_reader(str(path)) is None and dicom_folder_reader(str(tmp_path)) is not None


def test_the_dicom_folder_reader_gives_the_series_with_its_spacing():
    folder = require_dataset("totalsegmentator_examples/example_ct_dicom")
    [(data, attributes, kind)] = dicom_folder_reader(str(folder))(str(folder))
    series = read_dicom_series(folder)
    assert kind == "image" and data.shape == series.array.shape and len(attributes["scale"]) == 3
    assert attributes["scale"] == pytest.approx(series.spacing) and attributes["scale"][0] != attributes["scale"][1]
