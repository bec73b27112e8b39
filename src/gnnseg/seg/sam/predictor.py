"""Box- and point-prompted segmentation with numpy in and numpy out.

:class:`SamPredictor` wraps a :class:`~gnnseg.seg.sam.model.Sam` the way the official ``SamPredictor`` does:
``set_image`` prepares the image once, ``predict`` answers many prompts in one batch. How the image reaches the
encoder depends on the model:

- **MedSAM** (``layout="square"``, min-max input, whole image): bicubic resize to a square ``S x S`` ignoring the aspect
  ratio, min-max to [0, 1]; boxes scale by ``S / [W, H, W, H]``; low-resolution probabilities are resized
  bilinearly to the image and thresholded at 0.5 (``MedSAM_Inference.py``).
- **SAM** (``layout="padded"``, ImageNet input, whole image): longest side to ``S``, ImageNet mean/std, zero
  padding to ``S x S``; logits are upscaled, the padding cut away, resized to the image and thresholded at 0 (SAM's
  ``postprocess_masks``).
- **Lite MedSAM** (``layout="padded"``, min-max input): as SAM, but min-max normalised before the padding
  (:func:`~gnnseg.seg.sam.preprocess.lite_model_input`); the same post-processing with a 0.5 probability threshold,
  which is logit 0.
- **Box-centred models** (``crop_margin`` set, such as the shipped ``vit_cpu`` model): each prompt gets its own
  window around the box (:mod:`gnnseg.seg.sam.crop`); the encoder runs once per window rather than once per
  image, which at 128 pixels is cheap.

The whole-image embedding is kept by ``set_image`` for every later ``predict``, and the last
``cache_size`` embeddings are remembered by the image's content (:class:`~gnnseg.seg.sam.prediction.EmbeddingMemo`),
so setting an image again (a slice shared by overlapping 3D boxes, the same upload twice) skips the encoder.
Box-centred windows are encoded in one batch per ``predict`` call. Models exported to ONNX have their own
predictor with the same interface (:class:`~gnnseg.seg.sam.onnx_predictor.OnnxPredictor`);
:func:`~gnnseg.seg.sam.shipped.make_predictor` picks the right one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gnnseg.seg.io.intensity import to_rgb_uint8
from gnnseg.seg.sam.crop import CropWindow, resize_crop
from gnnseg.seg.sam.model import Sam
from gnnseg.seg.sam.prediction import (
    EmbeddingMemo,
    Prediction,
    to_input_coords,
    whole_image_masks,
)
from gnnseg.seg.sam.preprocess import validate_boxes


class SamPredictor:
    """``set_image`` once, ``predict`` many times."""

    def __init__(self, model: Sam, *, cache_size: int = 16) -> None:
        self.model = model.eval()
        self.cache_size = cache_size
        self.encoder_calls = 0
        self._memo = EmbeddingMemo(cache_size)
        self._image: np.ndarray | None = None
        self._embedding: Tensor | None = None
        self._input_hw: tuple[int, int] | None = None

    @property
    def box_centred(self) -> bool:
        return self.model.config.crop_margin is not None

    @property
    def image_shape(self) -> tuple[int, int]:
        if self._image is None:
            raise RuntimeError("no image set: call set_image(image) before predict()")
        return self._image.shape[:2]

    @torch.inference_mode()
    def set_image(self, image: np.ndarray) -> None:
        """Take an ``(H, W)`` or ``(H, W, 3)`` image (already windowed / clipped to 0..255 for CT and MR)."""
        rgb = to_rgb_uint8(image)
        self._image = rgb
        self._embedding = None
        if self.box_centred:
            return
        self._embedding, self._input_hw, encoded = self._memo.embedding(rgb, self.model.config, self._encode)
        self.encoder_calls += encoded

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
    def predict(self, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, *, multimask: bool = False) -> Prediction:
        """Segment the object in each prompt.

        Args:
            boxes: ``(4,)`` or ``(N, 4)`` boxes ``x0, y0, x1, y1`` in pixel indices of the image.
            points: ``(N, P, 2)`` (or ``(P, 2)`` for one prompt) x, y clicks; with boxes, ``N`` must match.
            point_labels: ``(N, P)`` labels, 1 foreground and 0 background.
            multimask: return SAM's three candidate masks per prompt instead of one.
        """
        height, width = self.image_shape
        box_array = validate_boxes(boxes, (height, width)) if boxes is not None else None
        point_array, label_array = self._check_points(points, point_labels, box_array)
        if box_array is None and point_array is None:
            raise ValueError("give at least one prompt: boxes and/or points")
        if self.box_centred:
            logits, iou = self._predict_in_windows(box_array, point_array, label_array, multimask)
            return Prediction(logits.numpy() > 0, iou.numpy(), logits.numpy())
        return self._predict_whole_image(box_array, point_array, label_array, multimask)

    def _check_points(self, points, labels, boxes) -> tuple[np.ndarray | None, np.ndarray | None]:
        if points is None:
            if labels is not None:
                raise ValueError("point_labels given without points")
            return None, None
        coords = np.asarray(points, dtype=np.float64)
        if coords.ndim == 2:
            coords = coords[None]
        if coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[1] == 0:
            raise ValueError(f"points must have shape (N, P, 2) or (P, 2), got {np.shape(points)}")
        if labels is None:
            raise ValueError("points need point_labels (1 foreground, 0 background)")
        labels = np.asarray(labels).reshape(coords.shape[:2])
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"point labels must be 0 (background) or 1 (foreground), got {np.unique(labels)}")
        if not np.isfinite(coords).all():
            raise ValueError("points contain NaN or infinite coordinates")
        height, width = self.image_shape
        x, y = coords[..., 0], coords[..., 1]
        outside = (x < 0) | (x > width - 1) | (y < 0) | (y > height - 1)
        if outside.any():
            raise ValueError(f"points {coords[outside].tolist()} lie outside the image of height {height} "
                             f"and width {width}")
        if boxes is not None and len(boxes) != len(coords):
            raise ValueError(f"{len(boxes)} boxes but {len(coords)} point sets: give one point set per box")
        return coords, labels

    def _predict_whole_image(self, boxes, points, labels, multimask) -> Prediction:
        box_tensor = None if boxes is None else self._tensor(self._to_input_coords(boxes), torch.float32)
        point_prompt = None
        if points is not None:
            point_prompt = (self._tensor(self._to_input_coords(points), torch.float32),
                            self._tensor(labels, torch.int64))
        low_res, iou = self.model.decode(self._embedding, points=point_prompt, boxes=box_tensor, multimask=multimask)
        config = self.model.config
        logits, masks = whole_image_masks(low_res.float().cpu().numpy(), config.layout, config.image_size,
                                          self._input_hw, self.image_shape)
        return Prediction(masks, iou.float().cpu().numpy(), logits)

    def _predict_in_windows(self, boxes, points, labels, multimask) -> tuple[Tensor, Tensor]:
        """One window per prompt around its box (or, without a box, around its points)."""
        config = self.model.config
        size = self.model.image_size
        extents = boxes if boxes is not None else np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1)
        windows = [CropWindow.around(extent, config.crop_margin) for extent in extents]
        pixels = torch.stack([resize_crop(window.cut(self._image), size) for window in windows])
        embeddings = self.model.encode(self.model.normalize(pixels.to(self.device)))
        box_tensor = None
        if boxes is not None:
            box_tensor = self._tensor(np.stack([w.to_input(b, size) for w, b in zip(windows, boxes)]), torch.float32)
        point_prompt = None
        if points is not None:
            local = np.stack([w.to_input(p, size) for w, p in zip(windows, points)])
            point_prompt = (self._tensor(local, torch.float32), self._tensor(labels, torch.int64))
        low_res, iou = self.model.decode(embeddings, points=point_prompt, boxes=box_tensor, multimask=multimask)
        low_res, iou = low_res.float().cpu(), iou.float().cpu()
        image_hw = self.image_shape
        logits = torch.cat([window.paste(low_res[i : i + 1], image_hw) for i, window in enumerate(windows)])
        return logits, iou
