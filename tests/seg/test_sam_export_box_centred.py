"""The packaged box-centred models run from ONNX exports: the window resize equals torch's, and the exported
``vit_cpu_clicks`` gives PyTorch's masks on real images for boxes, clicks and previous logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.nn import functional as F

from gnnseg.seg.io import read_image_2d
from gnnseg.seg.sam.inference.model_input import resize_window
from gnnseg.seg.sam.inference.predictor import SamPredictor
from gnnseg.seg.sam.inference.prompts import boxes_from_mask
from gnnseg.seg.sam.training.samples import samples_from_image
from tests.conftest import require_dataset

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[test]')")
pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[test]')")

from gnnseg.cli import main
from gnnseg.seg.sam.export import export_onnx
from gnnseg.seg.sam.inference.onnx_model import OnnxSam
from gnnseg.seg.sam.inference.onnx_predictor import OnnxPredictor
from gnnseg.seg.sam.shipped import load_model

RESIZE_TOLERANCE = 1e-3
"""Largest difference, on the 0..255 scale, allowed between Pillow's and torch's window resize (measured: 0 when
enlarging, at most 9.2e-5 when shrinking windows of up to 2000 pixels to 128)."""


def torch_window_resize(window: np.ndarray, size: int) -> np.ndarray:
    """The resize the box-centred models were trained with: torch's bilinear interpolation per channel, antialiased
    when shrinking, clamped to 0..255; ``(size, size, 3)``."""
    planes = torch.from_numpy(np.ascontiguousarray(window.transpose(2, 0, 1))).float()[:, None]
    resized = F.interpolate(planes, (size, size), mode="bilinear", align_corners=False,
                            antialias=window.shape[0] > size)
    return resized[:, 0].clamp(0, 255).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("side", [7, 50, 127, 128, 129, 300, 777, 2000])
def test_window_resize_equals_torchs_antialiased_bilinear(side):
    window = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    window[: side // 3] = 255                                   # a hard edge and a flat part, besides the noise
    expected, actual = torch_window_resize(window, 128), resize_window(window, 128)
    assert actual.shape == (128, 128, 3) and actual.dtype == np.float32
    assert np.abs(actual - expected).max() <= RESIZE_TOLERANCE


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def two_clicks(mask: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A positive click at the object's deepest point and a negative one at the deepest background point inside its
    box; ``(2, 2)`` x, y and their labels."""
    inside = np.zeros_like(mask)
    x0, y0, x1, y1 = box.astype(int)
    inside[y0 : y1 + 1, x0 : x1 + 1] = True
    clicks = []
    for region in (mask, inside & ~mask):
        depth = ndimage.distance_transform_edt(region)
        row, column = np.unravel_index(np.argmax(depth), depth.shape)
        clicks.append([column, row])
    return np.array(clicks, dtype=np.float64), np.array([1, 0])


@pytest.fixture(scope="module")
def cases() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``(image, boxes, points, labels)`` of three held-out Kvasir polyps and four ISBI EM cells, each object's tight
    box grown by 5 pixels and two clicks per object."""
    kvasir = require_dataset("kvasir_seg_subset")
    isbi = require_dataset("isbi2012_em/train")
    pairs = []
    for path in sorted((kvasir / "images").glob("*.jpg"))[160:163]:
        mask = read_image_2d(kvasir / "masks" / path.name, grayscale=True).array > 127
        pairs.append((read_image_2d(path).array, mask.astype(np.uint8), 1))
    cells = read_image_2d(isbi / "label" / "24.png", grayscale=True).array > 127
    pairs.append((read_image_2d(isbi / "image" / "24.png", grayscale=True).array, cells.astype(np.uint8), 4))
    found = []
    for image, labels, count in pairs:
        samples = samples_from_image(image, labels, "fidelity")[:count]
        boxes = np.stack([boxes_from_mask(sample.mask, margin=5)[0] for sample in samples]).astype(np.float64)
        clicks = [two_clicks(sample.mask, box) for sample, box in zip(samples, boxes)]
        found.append((samples[0].image, boxes, np.stack([c[0] for c in clicks]), np.stack([c[1] for c in clicks])))
    return found


@pytest.fixture(scope="module")
def predictors(tmp_path_factory) -> tuple[SamPredictor, OnnxPredictor]:
    model = load_model("vit_cpu_clicks")
    folder = tmp_path_factory.mktemp("vit_cpu_clicks")
    export_onnx(model, folder)
    return SamPredictor(model), OnnxPredictor(OnnxSam(folder))


def assert_same_answers(predictors, image: np.ndarray, **prompts) -> None:
    """Per box: the ONNX mask's Dice against PyTorch's >= 0.99, predicted IoU within 1e-2."""
    answers = []
    for predictor in predictors:
        predictor.set_image(image)
        answers.append(predictor.predict(**prompts))
    expected, actual = answers
    assert actual.masks.shape == expected.masks.shape and actual.iou.shape == expected.iou.shape
    scores = [dice(a[0], e[0]) for a, e in zip(actual.masks, expected.masks)]
    assert min(scores) >= 0.99, scores
    assert np.abs(actual.iou - expected.iou).max() <= 1e-2, (actual.iou, expected.iou)


@pytest.mark.slow
@pytest.mark.parametrize("prompting", ["box", "box and two clicks", "box, clicks and previous logits"])
def test_exported_vit_cpu_clicks_gives_pytorchs_masks_on_real_images(predictors, cases, prompting):
    for image, boxes, points, labels in cases:
        prompts = {"boxes": boxes}
        if prompting != "box":
            prompts.update(points=points, point_labels=labels)
        if prompting == "box, clicks and previous logits":
            predictors[0].set_image(image)
            prompts["mask_logits"] = predictors[0].predict(boxes=boxes).logits[:, 0]
        assert_same_answers(predictors, image, **prompts)


@pytest.mark.slow
def test_exported_vit_cpu_clicks_gives_pytorchs_masks_where_the_window_leaves_the_image(predictors, cases):
    image = cases[0][0]
    height, width = image.shape[:2]
    corners = np.array([[0, 0, 40, 30], [width - 36, height - 29, width - 1, height - 1]], dtype=np.float64)
    assert_same_answers(predictors, image, boxes=corners)


@pytest.mark.slow
def test_the_default_box_centred_model_exports_from_the_command_line(tmp_path, cases):
    folder = tmp_path / "vit_cpu"
    assert main(["seg", "export-onnx", "--checkpoint", "vit_cpu", "-o", str(folder)]) == 0
    assert OnnxSam(folder).config == load_model("vit_cpu").config          # crop_margin included
    image, boxes = cases[0][0], cases[0][1]
    assert_same_answers((SamPredictor(load_model("vit_cpu")), OnnxPredictor(OnnxSam(folder))), image, boxes=boxes)
