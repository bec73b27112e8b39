"""ONNX export of a SAM-architecture model and inference with onnxruntime on the CPU.

The model is split where its cost splits (as the CVPR 2024 "MedSAM on Laptop" entries did): the image encoder,
run once per image (once per window for box-centred models, whose windows are resized to the same input), and the
box path (prompt encoder + mask decoder), run once per batch of boxes with a dynamic number of boxes. A third graph
answers corrections: boxes with a dynamic number of clicks each and the previous logits as a dense prompt
(``has_mask`` 0 where there are none, as the official SAM export does).
:class:`~gnnseg.seg.sam.inference.onnx_model.OnnxSam` runs the graphs with onnxruntime, without torch, and
:class:`~gnnseg.seg.sam.inference.onnx_predictor.OnnxPredictor` answers boxes with them as ``SamPredictor`` does;
``config.json`` carries what else the predictor needs (the input size and normalisation, a box-centred model's
``crop_margin``).

onnx and onnxruntime are optional (``pip install 'gnnseg[onnx]'``); nothing else in gnnseg needs them.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from gnnseg.seg.sam.modeling.sam import Sam

OPSET = 17


class BoxDecoder(nn.Module):
    """``(1, D, h, w)`` embedding and ``(N, 4)`` boxes in the input grid -> ``(N, 1, 4h, 4w)`` logits and
    ``(N, 1)`` IoU."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder

    def forward(self, embeddings: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        sparse, dense = self.prompt_encoder(None, boxes, None)
        return self.mask_decoder.predict_all(embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, slice(0, 1))


class PromptDecoder(nn.Module):
    """``(1, D, h, w)`` embedding, ``(N, 4)`` boxes, ``(N, P, 2)`` clicks with ``(N, P)`` labels (1, 0, or -1 for
    padding), ``(N, 1, 4h, 4w)`` previous logits and ``(N,)`` ``has_mask`` in {0, 1}, all in the input grid ->
    ``(N, 1, 4h, 4w)`` logits and ``(N, 1)`` IoU: :meth:`Sam.decode` with boxes, points and mask inputs."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder

    def forward(self, embeddings: Tensor, boxes: Tensor, points: Tensor, labels: Tensor, mask_input: Tensor,
                has_mask: Tensor) -> tuple[Tensor, Tensor]:
        encoder = self.prompt_encoder
        sparse = torch.cat([encoder.embed_points(points, labels, pad=False), encoder.embed_boxes(boxes)], dim=1)
        weight = has_mask.reshape(-1, 1, 1, 1)
        dense = encoder.mask_downscaling(mask_input) * weight + \
            encoder.no_mask_embed.weight.reshape(1, -1, 1, 1) * (1 - weight)
        return self.mask_decoder.predict_all(embeddings, encoder.get_dense_pe(), sparse, dense, slice(0, 1))


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ImportError("ONNX export needs onnx and onnxruntime: pip install 'gnnseg[onnx]'") from exc


def export_onnx(model: Sam, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``encoder.onnx``, ``decoder.onnx`` (dynamic number of boxes) and ``prompt_decoder.onnx`` (boxes with
    dynamic numbers of clicks, previous logits) for ``model`` into ``folder``.

    The export is float32: ``model`` is converted in place (a bfloat16 decoder too)."""
    _require_onnx()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    size, grid = model.config.image_size, model.config.embedding_size
    image = torch.zeros(1, 3, size, size)
    embeddings = torch.zeros(1, model.config.prompt_dim, grid, grid)
    boxes = torch.tensor([[1.0, 2.0, size / 2, size / 3], [0.0, 0.0, size - 1.0, size - 1.0]])
    encoder_path, decoder_path = folder / "encoder.onnx", folder / "decoder.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        # the traced shapes are the export's fixed input size; the legacy exporter's deprecation notice is moot
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.image_encoder, (image,), encoder_path, input_names=["image"],
                          output_names=["embeddings"], opset_version=OPSET, dynamo=False)
        torch.onnx.export(BoxDecoder(model), (embeddings, boxes), decoder_path,
                          input_names=["embeddings", "boxes"], output_names=["low_res_logits", "iou"],
                          dynamic_axes={"boxes": {0: "boxes"}, "low_res_logits": {0: "boxes"}, "iou": {0: "boxes"}},
                          opset_version=OPSET, dynamo=False)
        low = 4 * grid
        points = torch.tensor([[[3.0, 4.0], [5.0, 6.0]], [[7.0, 8.0], [0.0, 0.0]]])
        torch.onnx.export(PromptDecoder(model), (embeddings, boxes, points, torch.tensor([[1, 0], [1, -1]]),
                                                  torch.zeros(2, 1, low, low), torch.tensor([1.0, 0.0])),
                          folder / "prompt_decoder.onnx",
                          input_names=["embeddings", "boxes", "points", "labels", "mask_input", "has_mask"],
                          output_names=["low_res_logits", "iou"],
                          dynamic_axes={"boxes": {0: "prompts"}, "points": {0: "prompts", 1: "clicks"},
                                        "labels": {0: "prompts", 1: "clicks"}, "mask_input": {0: "prompts"},
                                        "has_mask": {0: "prompts"}, "low_res_logits": {0: "prompts"},
                                        "iou": {0: "prompts"}},
                          opset_version=OPSET, dynamo=False)
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    return encoder_path, decoder_path
