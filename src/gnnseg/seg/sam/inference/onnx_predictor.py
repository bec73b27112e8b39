"""Box-prompted segmentation with an exported model: :class:`~gnnseg.seg.sam.inference.predictor.SamPredictor`'s
interface (``set_image`` once, ``predict`` many times, numpy in and out) over
:class:`~gnnseg.seg.sam.inference.onnx_model.OnnxSam`, without importing torch.

The export answers boxes with one mask each, refined by clicks and previous logits where given. Whole-image models
(SAM, MedSAM, Lite MedSAM) use the PyTorch predictor's image chain, box scaling, embedding memo and mask upscaling
(:mod:`gnnseg.seg.sam.inference.model_input`, :mod:`gnnseg.seg.sam.inference.prediction`); box-centred models
(``crop_margin`` set, such as ``vit_cpu``) its windows, window memo and pasting
(:mod:`gnnseg.seg.sam.inference.box_centred`), each window normalised by the numpy normalisation of whole images
(:func:`~gnnseg.seg.sam.inference.model_input.normalize_for_model`) and decoded with its own prompt.
"""

from __future__ import annotations

import numpy as np

from gnnseg.seg.sam.inference.base import PredictorEntrance
from gnnseg.seg.sam.inference.box_centred import WindowedPrompts, WindowMemo
from gnnseg.seg.sam.inference.crop import CropWindow
from gnnseg.seg.sam.inference.model_input import normalize_for_model, resize_window
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
        self.model = model
        self.cache_size = cache_size
        self.encoder_calls = 0
        self._memo = EmbeddingMemo(cache_size)
        self._embedding: np.ndarray | None = None
        self._input_hw: tuple[int, int] | None = None
        self._windows = WindowMemo()     # box-centred: this image's windows

    @property
    def box_centred(self) -> bool:
        return self.model.config.crop_margin is not None

    def set_rgb(self, rgb: np.ndarray) -> None:
        if rgb is self._image:           # the same array again (a session's next click): embedding and windows stand
            return
        self._image, self._embedding = None, None
        self._windows.clear()
        if not self.box_centred:
            self._embedding, self._input_hw, encoded = self._memo.embedding(rgb, self.model.config, self.model.encode)
            self.encoder_calls += encoded
        self._image = rgb                # only once its embedding is made

    def answer(self, prompts: Prompts, multimask: bool = False) -> Prediction:
        """One mask per box; clicks and previous logits refine a box (the export's prompt decoder)."""
        if multimask or prompts.boxes is None:
            raise ValueError("the ONNX decoder answers boxes with one mask each (clicks refine a box; no multimask "
                             "output)")
        if self.box_centred:
            return self._predict_in_windows(prompts)
        image_hw = self.image_shape
        config = self.model.config

        def scaled(xy: np.ndarray | None) -> np.ndarray | None:
            return None if xy is None else to_input_coords(xy, image_hw, self._input_hw, config.image_size,
                                                           config.layout, config.preprocessing)

        masks = None if prompts.mask_logits is None else whole_image_mask_input(
            prompts.mask_logits, config.layout, config.image_size, self._input_hw, 4 * config.embedding_size)
        low_res, iou = self._decode(self._embedding, scaled(prompts.boxes), scaled(prompts.points), prompts.labels,
                                    masks)
        logits, masks = whole_image_masks(low_res, config.layout, config.image_size, self._input_hw, image_hw)
        return Prediction(masks, iou, logits)

    def _decode(self, embedding: np.ndarray, boxes: np.ndarray, points: np.ndarray | None, labels: np.ndarray | None,
                mask_input: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Prompts in the input grid on one ``(1, D, h, w)`` embedding -> low-resolution logits and IoU: boxes alone
        through the box decoder, with clicks or previous logits through the prompt decoder."""
        if points is None and mask_input is None:
            return self.model.decode_boxes(embedding, boxes)
        if points is None:
            points, labels = np.zeros((len(boxes), 1, 2)), np.full((len(boxes), 1), -1)
        return self.model.decode_prompts(embedding, boxes, points, labels, mask_input)

    def _encode_windows(self, windows: list[CropWindow]) -> np.ndarray:
        """``(B, D, h, w)`` embeddings of the windows of this image, each normalised as a whole image would be."""
        config = self.model.config
        pixels = np.concatenate([normalize_for_model(resize_window(window.cut(self._image), config.image_size),
                                                     config.normalization) for window in windows])
        return self.model.encode(pixels)

    def _predict_in_windows(self, prompts: Prompts) -> Prediction:
        """One window per prompt around its box and points, as the PyTorch predictor places them; each prompt is
        decoded on its own window's embedding."""
        config = self.model.config
        local = WindowedPrompts.place(prompts, config.crop_margin, config.image_size, 4 * config.embedding_size)
        embeddings = self._windows.embeddings(local.windows, self._encode_windows)
        answers = [self._decode(embedding[None], local.boxes[i : i + 1],
                                None if local.points is None else local.points[i : i + 1],
                                None if local.labels is None else local.labels[i : i + 1],
                                None if local.mask_input is None else local.mask_input[i : i + 1])
                   for i, embedding in enumerate(embeddings)]
        low_res = np.concatenate([logits for logits, _ in answers])
        logits = local.paste(low_res, self.image_shape)
        return Prediction(logits > 0, np.concatenate([iou for _, iou in answers]), logits)
