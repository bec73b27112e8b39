"""Box- and point-prompted segmentation with numpy in and numpy out.

:class:`SamPredictor` wraps a :class:`~gnnseg.seg.sam.modeling.sam.Sam` the way the official ``SamPredictor`` does:
``set_image`` prepares the image once, ``predict`` answers many prompts in one batch. How the image reaches the
encoder depends on the model:

- **MedSAM** (``layout="square"``, min-max input, whole image): bicubic resize to a square ``S x S`` ignoring the aspect
  ratio, min-max to [0, 1]; boxes scale by ``S / [W, H, W, H]``; low-resolution probabilities are resized
  bilinearly to the image and thresholded at 0.5 (``MedSAM_Inference.py``).
- **SAM** (``layout="padded"``, ImageNet input, whole image): longest side to ``S``, ImageNet mean/std, zero
  padding to ``S x S``; logits are upscaled, the padding cut away, resized to the image and thresholded at 0 (SAM's
  ``postprocess_masks``).
- **Lite MedSAM** (``layout="padded"``, min-max input): as SAM, but min-max normalised before the padding
  (:func:`~gnnseg.seg.sam.inference.model_input.lite_model_input`); the same post-processing with a 0.5 probability
  threshold, which is logit 0.
- **Box-centred models** (``crop_margin`` set, such as the shipped ``vit_cpu`` model): each prompt gets its own
  window around the box (:mod:`gnnseg.seg.sam.inference.crop`, answered as
  :mod:`gnnseg.seg.sam.inference.box_centred` says); the encoder runs once per window rather than once per image,
  which at 128 pixels is cheap.

The whole-image embedding is kept by ``set_image`` for every later ``predict``, and the last
``cache_size`` embeddings are remembered by the image's content
(:class:`~gnnseg.seg.sam.inference.prediction.EmbeddingMemo`), so setting an image again (a slice shared by overlapping
3D boxes, the same upload twice) skips the encoder. Box-centred windows are encoded in one batch per ``predict`` call.
Models exported to ONNX have their own predictor with the same interface
(:class:`~gnnseg.seg.sam.inference.onnx_predictor.OnnxPredictor`);
:func:`~gnnseg.seg.sam.inference.chain.make_predictor` picks the right one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gnnseg.seg.sam.inference.base import PredictorEntrance
from gnnseg.seg.sam.inference.box_centred import WindowedPrompts, WindowMemo, paste_logits
from gnnseg.seg.sam.inference.crop import CropWindow
from gnnseg.seg.sam.inference.model_input import resize_window
from gnnseg.seg.sam.inference.prediction import (
    EmbeddingMemo,
    Prediction,
    to_input_coords,
    whole_image_mask_input,
    whole_image_masks,
)
from gnnseg.seg.sam.inference.prompts import Prompts
from gnnseg.seg.sam.modeling.sam import Sam


def resize_crop(crop: np.ndarray, size: int) -> Tensor:
    """``(s, s, 3)`` uint8 crop -> ``(3, size, size)`` float pixels in 0..255: the box-centred window's pixels
    (:func:`~gnnseg.seg.sam.inference.model_input.resize_window`) as a tensor, for this predictor and for training."""
    return torch.from_numpy(resize_window(crop, size)).permute(2, 0, 1)


def paste_window(window: CropWindow, logits: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """:func:`~gnnseg.seg.sam.inference.box_centred.paste_logits` on tensors: ``(B, M, s, s)`` logits over ``window``
    -> ``(B, M, H, W)`` float32 logits over the whole image (CPU)."""
    return torch.from_numpy(paste_logits(window, logits.detach().float().cpu().numpy(), image_hw))


class SamPredictor(PredictorEntrance):
    """``set_image`` once, ``predict`` many times."""

    def __init__(self, model: Sam, *, cache_size: int = 16) -> None:
        self.model = model.eval()
        self.cache_size = cache_size
        self.encoder_calls = 0
        self._memo = EmbeddingMemo(cache_size)
        self._embedding: Tensor | None = None
        self._input_hw: tuple[int, int] | None = None
        self._windows = WindowMemo()     # box-centred: this image's windows

    @property
    def box_centred(self) -> bool:
        return self.model.config.crop_margin is not None

    @torch.inference_mode()
    def set_rgb(self, rgb: np.ndarray) -> None:
        if rgb is self._image:           # the same array again (a session's next click): embedding and windows stand
            return
        self._image, self._embedding = None, None
        self._windows.clear()
        if not self.box_centred:
            self._embedding, self._input_hw, encoded = self._memo.embedding(rgb, self.model.config, self._encode)
            self.encoder_calls += encoded
        self._image = rgb                # only once its embedding is made

    def _encode(self, pixels: np.ndarray) -> Tensor:
        """The embedding in the decoder's dtype (a bfloat16 decoder then reads a cached embedding without a cast)."""
        return self.model.encode(torch.from_numpy(pixels).to(self.device)).to(self.model.decoder_dtype)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _tensor(self, values: np.ndarray, dtype: torch.dtype) -> Tensor:
        return torch.as_tensor(values, dtype=dtype, device=self.device)

    def _to_input_coords(self, xy: np.ndarray) -> np.ndarray:
        config = self.model.config
        return to_input_coords(xy, self.image_shape, self._input_hw, config.image_size, config.layout,
                               config.preprocessing)

    @torch.inference_mode()
    def answer(self, prompts: Prompts, multimask: bool = False) -> Prediction:
        if self.box_centred:
            return self._predict_in_windows(prompts, multimask)
        return self._predict_whole_image(prompts, multimask)

    @property
    def _mask_input_size(self) -> int:
        return 4 * self.model.config.embedding_size

    def _predict_whole_image(self, prompts: Prompts, multimask: bool) -> Prediction:
        config = self.model.config
        boxes = None if prompts.boxes is None else self._tensor(self._to_input_coords(prompts.boxes), torch.float32)
        points = None
        if prompts.points is not None:
            points = (self._tensor(self._to_input_coords(prompts.points), torch.float32),
                      self._tensor(prompts.labels, torch.int64))
        masks = None
        if prompts.mask_logits is not None:
            masks = self._tensor(whole_image_mask_input(prompts.mask_logits, config.layout, config.image_size,
                                                        self._input_hw, self._mask_input_size), torch.float32)
        low_res, iou = self.model.decode(self._embedding, points=points, boxes=boxes, mask_inputs=masks,
                                         multimask=multimask)
        logits, masks = whole_image_masks(low_res.float().cpu().numpy(), config.layout, config.image_size,
                                          self._input_hw, self.image_shape)
        return Prediction(masks, iou.float().cpu().numpy(), logits)

    def _encode_windows(self, windows: list[CropWindow]) -> Tensor:
        """``(B, D, h, w)`` embeddings of the windows of this image, in one batch."""
        size = self.model.image_size
        pixels = torch.stack([resize_crop(window.cut(self._image), size) for window in windows])
        return self.model.encode(self.model.normalize(pixels.to(self.device)))

    def _predict_in_windows(self, prompts: Prompts, multimask: bool) -> Prediction:
        """One window per prompt around its box and points (:class:`WindowedPrompts`); the windows this image already
        had keep their embeddings (:class:`WindowMemo`)."""
        config = self.model.config
        local = WindowedPrompts.place(prompts, config.crop_margin, config.image_size, self._mask_input_size)
        embeddings = torch.stack(self._windows.embeddings(local.windows, self._encode_windows))
        box_tensor = None if local.boxes is None else self._tensor(local.boxes, torch.float32)
        point_prompt = None
        if local.points is not None:
            point_prompt = (self._tensor(local.points, torch.float32), self._tensor(local.labels, torch.int64))
        masks = None if local.mask_input is None else self._tensor(local.mask_input, torch.float32)
        low_res, iou = self.model.decode(embeddings, points=point_prompt, boxes=box_tensor, mask_inputs=masks,
                                         multimask=multimask)
        logits = local.paste(low_res.float().cpu().numpy(), self.image_shape)
        return Prediction(logits > 0, iou.float().cpu().numpy(), logits)
