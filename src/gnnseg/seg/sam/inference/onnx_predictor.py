"""Box-prompted segmentation with an exported model: :class:`~gnnseg.seg.sam.inference.predictor.SamPredictor`'s
interface (``set_image`` once, ``predict`` many times, numpy in and out) over
:class:`~gnnseg.seg.sam.inference.onnx_model.OnnxSam`, without importing torch.

The export answers boxes with one mask each, refined by clicks and previous logits where given, on whole-image
models (SAM, MedSAM, Lite MedSAM); the image chain, box scaling, embedding memo and mask upscaling are the ones the
PyTorch predictor uses
(:mod:`gnnseg.seg.sam.inference.model_input`, :mod:`gnnseg.seg.sam.inference.prediction`).
"""

from __future__ import annotations

import numpy as np

from gnnseg.seg.sam.inference.base import PredictorEntrance
from gnnseg.seg.sam.inference.onnx_model import OnnxSam
from gnnseg.seg.sam.inference.prediction import (
    EmbeddingMemo,
    Prediction,
    to_input_coords,
    whole_image_mask_input,
    whole_image_masks,
)
from gnnseg.seg.sam.inference.prompts import Prompts


class OnnxPredictor(PredictorEntrance):
    """``set_image`` once, ``predict(boxes=...)`` many times, with an ONNX export."""

    def __init__(self, model: OnnxSam, *, cache_size: int = 16) -> None:
        if model.config.crop_margin is not None:
            raise ValueError("box-centred models (crop_margin set, such as vit_cpu) are not run from ONNX exports; "
                             "use the PyTorch checkpoint")
        self.model = model
        self.cache_size = cache_size
        self.encoder_calls = 0
        self._memo = EmbeddingMemo(cache_size)
        self._embedding: np.ndarray | None = None
        self._input_hw: tuple[int, int] | None = None

    def set_rgb(self, rgb: np.ndarray) -> None:
        if rgb is self._image:           # the same array again (a session's next click): its embedding stands
            return
        self._image = None
        self._embedding, self._input_hw, encoded = self._memo.embedding(rgb, self.model.config, self.model.encode)
        self.encoder_calls += encoded
        self._image = rgb                # only once its embedding is made

    def answer(self, prompts: Prompts, multimask: bool = False) -> Prediction:
        """One mask per box; clicks and previous logits refine a box (the export's prompt decoder)."""
        if multimask or prompts.boxes is None:
            raise ValueError("the ONNX decoder answers boxes with one mask each (clicks refine a box; no multimask "
                             "output)")
        image_hw = self.image_shape
        config = self.model.config
        scaled = to_input_coords(prompts.boxes, image_hw, self._input_hw, config.image_size, config.layout,
                                 config.preprocessing)
        if prompts.points is None and prompts.mask_logits is None:
            low_res, iou = self.model.decode_boxes(self._embedding, scaled)
        else:
            points = (np.zeros((len(scaled), 1, 2)) if prompts.points is None else
                      to_input_coords(prompts.points, image_hw, self._input_hw, config.image_size, config.layout,
                                      config.preprocessing))
            labels = (np.full((len(scaled), 1), -1) if prompts.labels is None else prompts.labels)
            masks = None if prompts.mask_logits is None else whole_image_mask_input(
                prompts.mask_logits, config.layout, config.image_size, self._input_hw, 4 * config.embedding_size)
            low_res, iou = self.model.decode_prompts(self._embedding, scaled, points, labels, masks)
        logits, masks = whole_image_masks(low_res, config.layout, config.image_size, self._input_hw, image_hw)
        return Prediction(masks, iou, logits)
