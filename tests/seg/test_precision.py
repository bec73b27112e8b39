"""bfloat16 prediction: the convolutions really run in bfloat16, the logits come back float32 and close to the exact
ones, and an unknown precision or an ONNX export asked for it is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnseg.cli import main
from gnnseg.seg.unet.nnunet_models import open_nnunet_model
from gnnseg.seg.unet.nnunet_predict import NnUNetPredictor
from gnnseg.seg.unet.precision import InPrecision, in_precision
from tests.seg.test_nnunet_models import plans_2d, write_model_folder


def first_conv_dtypes(predictor: NnUNetPredictor) -> list[torch.dtype]:
    """The dtype of every output of the predictor's first convolution, recorded as it runs."""
    seen = []
    conv = next(m for m in predictor.network.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    return seen


@pytest.fixture
def model(tmp_path):
    plans, dataset = plans_2d()
    return open_nnunet_model(write_model_folder(tmp_path / "results", plans, dataset, "2d", folds=(0, 1)))


def test_bfloat16_runs_the_convolutions_in_bfloat16_and_stays_close(model):
    image = np.random.default_rng(0).normal(size=(1, 1, 44, 40)).astype(np.float32)
    exact_predictor = NnUNetPredictor(model, half_precision=False)
    seen = first_conv_dtypes(exact_predictor)
    exact = exact_predictor.predict(image, (999.0, 1.0, 1.0), return_probabilities=True)
    assert set(seen) == {torch.float32}
    forwards = len(seen)
    fast_predictor = NnUNetPredictor(model, half_precision=False, precision="bfloat16")
    seen = first_conv_dtypes(fast_predictor)
    fast = fast_predictor.predict(image, (999.0, 1.0, 1.0), return_probabilities=True)
    assert set(seen) == {torch.bfloat16} and len(seen) == forwards
    difference = np.abs(fast.probabilities - exact.probabilities)
    assert fast.probabilities.dtype == np.float32
    assert 1e-4 < difference.max() < 0.1                              # rounded, but only slightly
    assert np.mean(fast.segmentation == exact.segmentation) > 0.97


def test_in_precision_leaves_float32_networks_alone_and_returns_float32_logits():
    network = torch.nn.Conv2d(1, 2, 3, padding=1)
    assert in_precision(network, "float32", torch.device("cpu")) is network
    wrapped = InPrecision(network, "bfloat16")
    image = torch.randn(1, 1, 8, 8)
    logits = wrapped(image)
    assert logits.dtype == torch.float32 and torch.allclose(logits, network(image), atol=0.1)
    assert not torch.equal(logits, network(image))


def test_an_unknown_precision_is_refused(model):
    with pytest.raises(ValueError, match=r"precision must be one of \['float32', 'bfloat16'\], got 'float16'"):
        NnUNetPredictor(model, precision="float16")


def test_an_onnx_export_refuses_bfloat16(tmp_path, capsys):
    from gnnseg.seg.unet.onnx_predictor import EXPORT_FORMAT, INFERENCE_FILE

    export = tmp_path / "export"
    export.mkdir()
    (export / INFERENCE_FILE).write_text(f'{{"format": "{EXPORT_FORMAT}"}}')
    assert main(["seg", "predict", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "-m", str(export),
                 "--precision", "bfloat16"]) == 2
    assert "--precision: not for an ONNX export" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
