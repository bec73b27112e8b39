"""An exported SAM-architecture model (:func:`gnnseg.seg.sam.export.export_onnx`) run by onnxruntime on the CPU.

numpy in, numpy out, and no torch import: a process that only segments with an export
(``gnnseg seg segment --checkpoint FOLDER``) starts in a fraction of a second instead of spending over one second
importing torch. :class:`~gnnseg.seg.sam.inference.onnx_predictor.OnnxPredictor` drives it.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gnnseg.core.onnx_sessions import default_threads, open_session
from gnnseg.seg.sam.modeling.config import SamConfig


class OnnxSam:
    """``encoder.onnx`` (one image), ``decoder.onnx`` (boxes on one image, one mask each) and, in exports that have
    it, ``prompt_decoder.onnx`` (boxes with clicks and previous logits), with their config."""

    def __init__(self, folder: str | os.PathLike, *, threads: int | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise ImportError("running an ONNX export needs onnxruntime: pip install 'gnnseg[onnx]'") from exc
        folder = Path(folder)
        for name in ("encoder.onnx", "decoder.onnx", "config.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} is missing: export the model with export_onnx first")
        self.config = SamConfig.from_dict(json.loads((folder / "config.json").read_text()))
        threads = threads or default_threads()
        # The encoder and decoder sessions take turns (3D propagation alternates them per slice); threads left
        # spinning by one would hold the cores the other needs.
        # The decoder's session opens in the background while the encoder's opens and runs, which shortens every new
        # process that segments one image (a failure to open it is raised by the first decode).
        def session(name: str):
            return open_session(folder / name, threads=threads, spinning=False)

        opener = ThreadPoolExecutor(max_workers=1)
        self._decoder = opener.submit(session, "decoder.onnx")
        self._prompt_decoder = (opener.submit(session, "prompt_decoder.onnx")
                                if (folder / "prompt_decoder.onnx").is_file() else None)
        opener.shutdown(wait=False)
        self.folder = folder
        self.encoder = session("encoder.onnx")

    @property
    def decoder(self):
        """The decoder's onnxruntime session (waits for it to finish opening)."""
        return self._decoder.result()

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """``(B, 3, S, S)`` encoder input -> ``(B, D, h, w)`` embeddings, one image per run."""
        return np.concatenate([self.encoder.run(None, {"image": image[None].astype(np.float32)})[0]
                               for image in pixels])

    def decode_boxes(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(1, D, h, w)`` embedding and ``(N, 4)`` boxes in the input grid -> ``(N, 1, 4h, 4w)`` low-resolution
        logits and ``(N, 1)`` predicted IoU."""
        logits, iou = self.decoder.run(None, {"embeddings": embedding.astype(np.float32),
                                              "boxes": np.asarray(boxes, dtype=np.float32)})
        return logits, iou

    def decode_prompts(self, embedding: np.ndarray, boxes: np.ndarray, points: np.ndarray, labels: np.ndarray,
                       mask_input: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Boxes with clicks and (optionally) previous low-resolution logits, all in the input grid -> logits and
        IoU as :meth:`decode_boxes`."""
        if self._prompt_decoder is None:
            raise ValueError(f"the export in {self.folder} answers boxes only (it has no prompt_decoder.onnx): export "
                             "the model again to correct with clicks")
        count = len(boxes)
        low = 4 * self.config.embedding_size
        has_mask = np.full(count, 0.0 if mask_input is None else 1.0, dtype=np.float32)
        masks = np.zeros((count, 1, low, low), np.float32) if mask_input is None else mask_input.astype(np.float32)
        logits, iou = self._prompt_decoder.result().run(None, {
            "embeddings": embedding.astype(np.float32), "boxes": np.asarray(boxes, dtype=np.float32),
            "points": np.asarray(points, dtype=np.float32), "labels": np.asarray(labels, dtype=np.int64),
            "mask_input": masks, "has_mask": has_mask})
        return logits, iou
