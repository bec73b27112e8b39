"""ONNX export of a SAM-architecture model and inference with onnxruntime on the CPU.

The model is split where its cost splits (as the CVPR 2024 "MedSAM on Laptop" entries did): the image encoder,
run once per image, and the box path (prompt encoder + mask decoder), run once per batch of boxes with a dynamic
number of boxes. :class:`OnnxSam` runs the two graphs with onnxruntime behind the same ``encode`` / ``decode``
interface as :class:`~gnnseg.seg.sam.model.Sam`, so :class:`~gnnseg.seg.sam.predictor.SamPredictor` drives either.

onnx and onnxruntime are optional (``pip install 'gnnseg[onnx]'``); nothing else in gnnseg needs them.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from gnnseg.seg.sam.model import Sam, SamConfig, SamGlue

OPSET = 17


class BoxDecoder(nn.Module):
    """``(1, D, h, w)`` embedding and ``(N, 4)`` boxes in the input grid -> ``(N, 1, 4h, 4w)`` logits, ``(N, 1)`` IoU."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder

    def forward(self, embeddings: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        sparse, dense = self.prompt_encoder(None, boxes, None)
        masks, iou = self.mask_decoder.predict_all(embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense)
        return masks[:, :1], iou[:, :1]


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ImportError("ONNX export needs onnx and onnxruntime: pip install 'gnnseg[onnx]'") from exc


def export_onnx(model: Sam, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` (dynamic number of boxes) for ``model`` into ``folder``."""
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
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    return encoder_path, decoder_path


def default_threads() -> int:
    """Physical cores where the platform says, else all logical ones: onnxruntime gains nothing from SMT siblings."""
    logical = os.cpu_count() or 1
    try:
        siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text()
        per_core = len(siblings.replace("-", ",").split(",")) if siblings.strip() else 1
        return max(1, logical // max(per_core, 1))
    except OSError:
        return logical


class OnnxSam(SamGlue):
    """The exported model run by onnxruntime, with :class:`Sam`'s ``encode`` / ``decode`` / ``upscale``."""

    def __init__(self, folder: str | os.PathLike, *, threads: int | None = None) -> None:
        _require_onnx()
        import onnxruntime

        folder = Path(folder)
        for name in ("encoder.onnx", "decoder.onnx", "config.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} is missing: export the model with export_onnx first")
        self.config = SamConfig.from_dict(json.loads((folder / "config.json").read_text()))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.encoder = onnxruntime.InferenceSession(str(folder / "encoder.onnx"), options, providers=providers)
        self.decoder = onnxruntime.InferenceSession(str(folder / "decoder.onnx"), options, providers=providers)

    def eval(self) -> OnnxSam:
        return self

    def parameters(self):
        yield torch.zeros(0)  # the predictor asks for the model's device: onnxruntime here runs on the CPU

    def encode(self, images: Tensor) -> Tensor:
        outputs = [self.encoder.run(None, {"image": image[None].numpy().astype(np.float32)})[0] for image in images]
        return torch.from_numpy(np.concatenate(outputs))

    def decode(self, embeddings: Tensor, *, points=None, boxes: Tensor | None = None, mask_inputs=None,
               multimask: bool = False) -> tuple[Tensor, Tensor]:
        if points is not None or mask_inputs is not None or multimask or boxes is None or embeddings.shape[0] != 1:
            raise ValueError("the ONNX decoder answers boxes on one image with one mask each "
                             "(no points, mask inputs or multimask output)")
        logits, iou = self.decoder.run(None, {"embeddings": embeddings.numpy().astype(np.float32),
                                              "boxes": boxes.numpy().astype(np.float32)})
        return torch.from_numpy(logits), torch.from_numpy(iou)
