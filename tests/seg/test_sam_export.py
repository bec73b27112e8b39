"""ONNX export: onnxruntime gives PyTorch's embeddings and masks, for any number of boxes, without torch."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from gnnseg.seg.sam.inference.predictor import SamPredictor
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, build_sam

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[test]')")
pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[test]')")

from gnnseg.core.onnx_sessions import default_threads
from gnnseg.seg.sam.export import export_onnx
from gnnseg.seg.sam.inference.chain import make_predictor
from gnnseg.seg.sam.inference.onnx_model import OnnxSam
from gnnseg.seg.sam.inference.onnx_predictor import OnnxPredictor
from gnnseg.seg.sam.shipped import load_model


def exported_model(config, folder):
    """A model of ``config`` with every parameter moved off its initial value (so that every path carries signal),
    exported into ``folder``."""
    torch.manual_seed(0)
    model = build_sam(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    export_onnx(model, folder)
    return model.eval(), folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return exported_model("tiny_vit_mini", tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def box_centred(tmp_path_factory):
    return exported_model(replace(SAM_CONFIGS["vit_mini"], crop_margin=0.25), tmp_path_factory.mktemp("box_centred"))


@pytest.mark.parametrize("count", [1, 3])
def test_onnx_runtime_matches_pytorch(exported, count):
    model, folder = exported
    image = (np.random.default_rng(1).random((50, 80, 3)) * 255).astype(np.uint8)
    boxes = np.array([[5, 5, 40, 30], [30, 10, 79, 49], [0, 0, 20, 20]])[:count]
    torch_predictor, onnx_predictor = SamPredictor(model), OnnxPredictor(OnnxSam(folder, threads=1))
    torch_predictor.set_image(image)
    onnx_predictor.set_image(image)
    np.testing.assert_allclose(onnx_predictor._embedding, torch_predictor._embedding.numpy(), atol=1e-3, rtol=1e-3)
    expected, actual = torch_predictor.predict(boxes=boxes), onnx_predictor.predict(boxes=boxes)
    assert actual.masks.shape == (count, 1, 50, 80)
    np.testing.assert_allclose(actual.logits, expected.logits, atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(actual.iou, expected.iou, atol=1e-3)


def test_test_time_augmentation_over_an_export_matches_pytorchs(exported):
    model, folder = exported
    image = (np.random.default_rng(2).random((50, 80, 3)) * 255).astype(np.uint8)
    boxes = np.array([[5, 5, 40, 30], [30, 10, 79, 49]])
    predictions = []
    for runner in (model, OnnxSam(folder, threads=1)):
        predictor = make_predictor(runner, augmentation="d4")
        predictor.set_image(image)
        predictions.append(predictor.predict(boxes=boxes))
        assert predictor.encoder_calls == 8
    expected, actual = predictions
    np.testing.assert_allclose(actual.logits, expected.logits, atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(actual.iou, expected.iou, atol=1e-3)


def test_clicks_and_previous_logits_through_the_export_match_pytorch(exported):
    model, folder = exported
    image = (np.random.default_rng(3).random((50, 80, 3)) * 255).astype(np.uint8)
    boxes = np.array([[5, 5, 40, 30], [30, 10, 79, 49]])
    points = np.array([[[10, 12], [30, 20]], [[50, 30], [70, 40]]])
    labels = np.array([[1, 0], [1, 1]])
    previous = np.random.default_rng(4).normal(0, 4, (2, 50, 80)).astype(np.float32)
    answers = []
    for predictor in (SamPredictor(model), OnnxPredictor(OnnxSam(folder, threads=1))):
        predictor.set_image(image)
        answers.append([predictor.predict(boxes=boxes, points=points, point_labels=labels),
                        predictor.predict(boxes=boxes, points=points, point_labels=labels, mask_logits=previous),
                        predictor.predict(boxes=boxes[:1], points=points[:1, :1], point_labels=labels[:1, :1])])
    for expected, actual in zip(*answers):
        np.testing.assert_allclose(actual.logits, expected.logits, atol=1e-3, rtol=1e-3)
        np.testing.assert_allclose(actual.iou, expected.iou, atol=1e-3)
    assert not np.allclose(answers[1][0].logits, answers[1][1].logits)   # the previous logits are read


def test_a_box_centred_export_answers_as_pytorch_in_the_same_windows(box_centred):
    model, folder = box_centred
    image = (np.random.default_rng(5).random((60, 90, 3)) * 255).astype(np.uint8)
    boxes = np.array([[5, 5, 40, 30], [0, 0, 10, 12], [30, 10, 89, 59]])   # the second's window leaves the image
    points = np.array([[[10, 12], [30, 20]], [[4, 5], [2, 2]], [[50, 30], [88, 58]]])
    labels = np.array([[1, 0], [1, 1], [1, 0]])
    previous = np.random.default_rng(6).normal(0, 4, (3, 60, 90)).astype(np.float32)
    answers = []
    for predictor in (SamPredictor(model), OnnxPredictor(OnnxSam(folder, threads=1))):
        predictor.set_image(image)
        answers.append([predictor.predict(boxes=boxes),
                        predictor.predict(boxes=boxes, points=points, point_labels=labels),
                        predictor.predict(boxes=boxes, points=points, point_labels=labels, mask_logits=previous),
                        predictor.predict(boxes=boxes[:1], points=points[:1, :1], point_labels=labels[:1, :1])])
    for expected, actual in zip(*answers):
        assert actual.logits.shape == expected.logits.shape and actual.iou.shape == expected.iou.shape
        np.testing.assert_allclose(actual.logits, expected.logits, atol=2e-3, rtol=1e-3)
        np.testing.assert_allclose(actual.iou, expected.iou, atol=1e-3)
    assert not np.allclose(answers[1][1].logits, answers[1][2].logits)   # the previous logits are read


def test_a_box_centred_export_keeps_the_window_of_a_click_inside_the_box(box_centred, monkeypatch):
    _, folder = box_centred
    model = OnnxSam(folder, threads=1)
    encoded = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda pixels: encoded.append(len(pixels)) or encode(pixels))
    predictor = make_predictor(model)
    image = np.random.default_rng(7).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    predictor.set_image(image)
    box = np.array([8, 6, 30, 28])
    first = predictor.predict(boxes=box)
    predictor.predict(boxes=box, points=np.array([[20, 15]]), point_labels=np.array([1]), mask_logits=first.logits[0])
    assert encoded == [1]                                   # one window, encoded once for the box and the click
    predictor.predict(boxes=box, points=np.array([[45, 35]]), point_labels=np.array([1]))
    assert encoded == [1, 1]                                # outside the box: a wider window
    predictor.set_image(image)                              # set again: a new image whose windows are its own
    predictor.predict(boxes=np.stack([box, box]))
    assert encoded == [1, 1, 1] and predictor.encoder_calls == 0   # encoder_calls counts whole images, as in PyTorch
    with pytest.raises(ValueError, match="crop_margin is set"):
        make_predictor(model, zoom=0.5)


def test_onnx_model_refuses_prompts_it_was_not_exported_for(exported, tmp_path):
    _, folder = exported
    predictor = OnnxPredictor(OnnxSam(folder, threads=1))
    predictor.set_image(np.zeros((32, 32), np.uint8) + 5)
    with pytest.raises(ValueError, match="clicks refine a box"):
        predictor.predict(points=np.array([[3, 3]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="multimask"):
        predictor.predict(boxes=np.array([2, 2, 20, 20]), multimask=True)
    with pytest.raises(ValueError, match="outside"):
        predictor.predict(boxes=np.array([40, 40, 60, 60]))
    boxes_only = tmp_path / "boxes_only"
    boxes_only.mkdir()
    for name in ("encoder.onnx", "decoder.onnx", "config.json"):
        (boxes_only / name).write_bytes((folder / name).read_bytes())
    older = OnnxPredictor(OnnxSam(boxes_only, threads=1))
    older.set_image(np.zeros((32, 32), np.uint8) + 5)
    with pytest.raises(ValueError, match="export the model again"):
        older.predict(boxes=np.array([2, 2, 20, 20]), points=np.array([[3, 3]]), point_labels=np.array([1]))


def test_load_model_and_make_predictor_pick_onnxruntime_for_an_export_folder(exported):
    _, folder = exported
    model = load_model(folder)
    assert isinstance(model, OnnxSam) and isinstance(make_predictor(model), OnnxPredictor)
    assert isinstance(make_predictor(build_sam("tiny_vit_mini")), SamPredictor)


@pytest.mark.parametrize("export", ["exported", "box_centred"])
def test_an_export_runs_in_a_process_that_never_imports_torch(export, request, tmp_path):
    _, folder = request.getfixturevalue(export)
    image = tmp_path / "image.png"
    Image.fromarray((np.random.default_rng(2).random((40, 60, 3)) * 255).astype(np.uint8)).save(image)
    script = (
        "import sys, runpy\n"
        "sys.argv = ['gnnseg', 'seg', 'segment', '--image', sys.argv[1], '--box', '5,5,40,30', '--checkpoint', "
        "sys.argv[2], '-o', sys.argv[3], '--json']\n"
        "try:\n"
        "    runpy.run_module('gnnseg.cli', run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    assert stop.code in (0, None), stop.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(image), str(folder), str(tmp_path / "mask.png")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "mask.png").is_file()


def test_a_corrupt_export_is_named(exported, tmp_path):
    _, folder = exported
    for name in ("encoder.onnx", "config.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "decoder.onnx").write_bytes(b"not an onnx graph")
    model = OnnxSam(tmp_path, threads=1)
    with pytest.raises(ValueError, match="decoder.onnx cannot be opened"):
        model.decode_boxes(np.zeros((1, 32, 16, 16), np.float32), np.array([[1.0, 1.0, 10.0, 10.0]]))


def test_missing_export_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.onnx"):
        OnnxSam(tmp_path)
    assert default_threads() >= 1


def test_an_export_is_not_exported_again(exported, tmp_path):
    from gnnseg.seg.sam.folder_commands import export_onnx_folder
    from gnnseg.seg.sam.shipped import ModelChoice

    _, folder = exported
    with pytest.raises(ValueError, match="already an ONNX export"):
        export_onnx_folder(tmp_path / "again", choice=ModelChoice(checkpoint=str(folder)))
