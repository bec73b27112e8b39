"""ONNX export: onnxruntime gives PyTorch's embeddings and masks, for any number of boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnseg.seg.sam.model import build_sam
from gnnseg.seg.sam.predictor import SamPredictor

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[test]')")
pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[test]')")

from gnnseg.seg.sam.export import OnnxSam, default_threads, export_onnx


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_sam("tiny_vit_mini")
    with torch.no_grad():  # move the zero-initialised parts off zero so that every path carries signal
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    folder = tmp_path_factory.mktemp("onnx")
    export_onnx(model, folder)
    return model.eval(), folder


@pytest.mark.parametrize("count", [1, 3])
def test_onnx_runtime_matches_pytorch(exported, count):
    model, folder = exported
    image = (np.random.default_rng(1).random((50, 80, 3)) * 255).astype(np.uint8)
    boxes = np.array([[5, 5, 40, 30], [30, 10, 79, 49], [0, 0, 20, 20]])[:count]
    torch_predictor, onnx_predictor = SamPredictor(model), SamPredictor(OnnxSam(folder, threads=1))
    torch_predictor.set_image(image)
    onnx_predictor.set_image(image)
    torch.testing.assert_close(onnx_predictor._embedding, torch_predictor._embedding, atol=1e-3, rtol=1e-3)
    expected, actual = torch_predictor.predict(boxes=boxes), onnx_predictor.predict(boxes=boxes)
    assert actual.masks.shape == (count, 1, 50, 80)
    np.testing.assert_allclose(actual.logits, expected.logits, atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(actual.iou, expected.iou, atol=1e-3)


def test_onnx_model_refuses_prompts_it_was_not_exported_for(exported):
    _, folder = exported
    predictor = SamPredictor(OnnxSam(folder, threads=1))
    predictor.set_image(np.zeros((32, 32), np.uint8) + 5)
    with pytest.raises(ValueError, match="no points"):
        predictor.predict(points=np.array([[3, 3]]), point_labels=np.array([1]))


def test_missing_export_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.onnx"):
        OnnxSam(tmp_path)
    assert default_threads() >= 1
