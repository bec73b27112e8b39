"""Box-prompted segmentation with an exported model: :class:`~gnnseg.seg.sam.predictor.SamPredictor`'s interface
(``set_image`` once, ``predict`` many times, numpy in and out) over :class:`~gnnseg.seg.sam.onnx_model.OnnxSam`,
without importing torch.

The export answers boxes with one mask each, on whole-image models (SAM, MedSAM, Lite MedSAM); the image chain,
box scaling, embedding memo and mask upscaling are the ones the PyTorch predictor uses
(:mod:`gnnseg.seg.sam.preprocess`, :mod:`gnnseg.seg.sam.prediction`).
"""

from __future__ import annotations

import numpy as np

from gnnseg.seg.io.intensity import to_rgb_uint8
from gnnseg.seg.sam.onnx_model import OnnxSam
from gnnseg.seg.sam.prediction import (
    EmbeddingMemo,
    Prediction,
    to_input_coords,
    whole_image_masks,
)
from gnnseg.seg.sam.preprocess import validate_boxes


class OnnxPredictor:
    """``set_image`` once, ``predict(boxes=...)`` many times, with an ONNX export."""

    def __init__(self, model: OnnxSam, *, cache_size: int = 16) -> None:
        if model.config.crop_margin is not None:
            raise ValueError("box-centred models (crop_margin set, such as vit_cpu) are not run from ONNX exports; "
                             "use the PyTorch checkpoint")
        self.model = model
        self.cache_size = cache_size
        self.encoder_calls = 0
        self._memo = EmbeddingMemo(cache_size)
        self._image: np.ndarray | None = None
        self._embedding: np.ndarray | None = None
        self._input_hw: tuple[int, int] | None = None

    @property
    def image_shape(self) -> tuple[int, int]:
        if self._image is None:
            raise RuntimeError("no image set: call set_image(image) before predict()")
        return self._image.shape[:2]

    def set_image(self, image: np.ndarray) -> None:
        """Take an ``(H, W)`` or ``(H, W, 3)`` image (already windowed / clipped to 0..255 for CT and MR)."""
        rgb = to_rgb_uint8(image)
        self._image = rgb
        self._embedding, self._input_hw, encoded = self._memo.embedding(rgb, self.model.config, self.model.encode)
        self.encoder_calls += encoded

    def predict(self, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, *, multimask: bool = False) -> Prediction:
        """Segment the object in each ``(4,)`` or ``(N, 4)`` box ``x0, y0, x1, y1`` (pixel indices)."""
        if points is not None or point_labels is not None or multimask or boxes is None:
            raise ValueError("the ONNX decoder answers boxes with one mask each (no points, mask inputs or "
                             "multimask output)")
        image_hw = self.image_shape
        config = self.model.config
        scaled = to_input_coords(validate_boxes(boxes, image_hw), image_hw, self._input_hw, config.image_size,
                                 config.layout, config.preprocessing)
        low_res, iou = self.model.decode_boxes(self._embedding, scaled)
        logits, masks = whole_image_masks(low_res, config.layout, config.image_size, self._input_hw, image_hw)
        return Prediction(masks, iou, logits)
