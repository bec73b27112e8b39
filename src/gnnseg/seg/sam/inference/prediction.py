"""What every box-prompted predictor shares, in numpy only: its answer, its embedding memo, prompt scaling and
mask upscaling.

:class:`~gnnseg.seg.sam.inference.predictor.SamPredictor` (PyTorch models) and
:class:`~gnnseg.seg.sam.inference.onnx_predictor.OnnxPredictor` (exported models, no torch import) both use these, so
the two answer the same prompt the same way; what they share for box-centred models is in
:mod:`gnnseg.seg.sam.inference.box_centred`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gnnseg.seg.sam.inference.crop import BACKGROUND_LOGIT
from gnnseg.seg.sam.inference.model_input import whole_image_input
from gnnseg.seg.sam.modeling.config import SamConfig


@dataclass
class Prediction:
    """Masks ``(N, M, H, W)`` bool, predicted IoU ``(N, M)`` and logits ``(N, M, H, W)`` at the image's size.

    ``N`` prompts, ``M`` masks per prompt (3 with ``multimask``, else 1).
    """

    masks: np.ndarray
    iou: np.ndarray
    logits: np.ndarray


def averaged(logits: Sequence[np.ndarray], ious: Sequence[np.ndarray]) -> Prediction:
    """One answer from several answers to the same prompts (copies of the image, windows of several sizes): the
    mean sigmoid probability, the mask where it is above 0.5, the logit of that mean (so ``logits > 0`` is the mask)
    and the mean predicted IoU. A single answer is returned as it is."""
    if len(logits) == 1:
        return Prediction(logits[0] > 0, ious[0], logits[0])
    probabilities = np.mean([0.5 + 0.5 * np.tanh(0.5 * np.asarray(x, dtype=np.float32)) for x in logits], axis=0)
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    mean_logits = (np.log(clipped) - np.log1p(-clipped)).astype(np.float32)
    return Prediction(probabilities > 0.5, np.mean(ious, axis=0), mean_logits)


class EmbeddingMemo:
    """The last ``size`` image embeddings, keyed by a BLAKE2 digest of the image's shape and pixels.

    Setting an image again (a slice shared by overlapping 3D boxes, the same upload twice) then skips the encoder.
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"cache_size must be >= 0, got {size}")
        self.size = size
        self._entries: OrderedDict[str, Any] = OrderedDict()

    @staticmethod
    def key(image: np.ndarray) -> str:
        digest = hashlib.blake2b(repr(image.shape).encode(), digest_size=16)
        digest.update(np.ascontiguousarray(image).data)
        return digest.hexdigest()

    def get(self, key: str) -> Any | None:
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: str, value: Any) -> None:
        if not self.size:
            return
        self._entries[key] = value
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def embedding(self, rgb: np.ndarray, config: SamConfig,
                  encode: Callable[[np.ndarray], Any]) -> tuple[Any, tuple[int, int], bool]:
        """A whole-image model's embedding of ``rgb`` and the ``(H', W')`` of the image inside its input, remembered
        or made by ``encode`` from the ``(1, 3, S, S)`` input (:func:`whole_image_input`); the flag says whether
        ``encode`` ran."""
        key = self.key(rgb)
        cached = self.get(key)
        if cached is not None:
            return (*cached, False)
        pixels, input_hw = whole_image_input(rgb, config.image_size, layout=config.layout,
                                             normalization=config.normalization, preprocessing=config.preprocessing)
        embedding = encode(pixels)
        self.put(key, (embedding, input_hw))
        return embedding, input_hw, True


def to_input_coords(xy: np.ndarray, image_hw: Sequence[int], input_hw: Sequence[int], size: int,
                    layout: str, preprocessing: str = "gnnseg") -> np.ndarray:
    """Scale ``(..., 2k)`` x, y pairs from the image to a whole-image model's input grid.

    ``square`` (MedSAM) stretches each axis to ``size``; ``padded`` (SAM, Lite MedSAM) scales each axis by its
    rounded new length ``input_hw``, as SAM's ``ResizeLongestSide`` does. ``preprocessing="official"`` (padded):
    every coordinate times ``size / max(H, W)``, truncated to a whole pixel, as the released LiteMedSAM code
    scales boxes (``int(box * ratio)``).
    """
    height, width = image_hw
    if preprocessing == "official":
        return np.trunc(np.asarray(xy, dtype=np.float64) * (size / max(height, width)))
    if layout == "square":
        factors = np.array([size / width, size / height])
    else:
        factors = np.array([input_hw[1] / width, input_hw[0] / height])
    return np.asarray(xy) * np.tile(factors, np.shape(xy)[-1] // 2)


def bilinear_resize(array: np.ndarray, hw: Sequence[int],
                    region: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """Resize the last two axes to ``hw`` by bilinear interpolation with half-pixel centres: the values of
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, without torch.

    ``region`` ``((row_start, row_stop), (column_start, column_stop))``: only that part of the resized array, the
    same values, computed without the rest (a window pasted into an image it overhangs)."""
    source = np.asarray(array, dtype=np.float32)
    region = region or ((0, int(hw[0])), (0, int(hw[1])))
    for axis, new_length, (start, stop) in ((-2, int(hw[0]), region[0]), (-1, int(hw[1]), region[1])):
        length = source.shape[axis]
        if new_length == length and (start, stop) == (0, length):
            continue
        position = np.maximum((np.arange(start, stop, dtype=np.float64) + 0.5) * (length / new_length) - 0.5, 0.0)
        low = np.minimum(np.floor(position).astype(np.int64), length - 1)
        high = np.minimum(low + 1, length - 1)
        weight = (position - low).astype(np.float32)
        shape = [1] * source.ndim
        shape[axis] = stop - start
        weight = weight.reshape(shape)
        lower, upper = np.take(source, low, axis=axis), np.take(source, high, axis=axis)
        upper -= lower  # lower + (upper - lower) * weight, in place: two arrays of the output's size at most
        upper *= weight
        lower += upper
        del upper
        source = lower
    return source


def whole_image_masks(low_res: np.ndarray, layout: str, size: int, input_hw: Sequence[int],
                      image_hw: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(N, M, h, w)`` low-resolution logits of a whole-image model -> logits and masks at the image's size.

    ``square`` (MedSAM's ``MedSAM_Inference.py``): sigmoid, bilinear to the image, probability > 0.5 (the logits
    returned are those of the resized probabilities). ``padded`` (SAM's ``postprocess_masks``): bilinear to the
    input size, padding cropped to ``input_hw``, bilinear to the image, logit > 0.
    """
    if layout == "square":
        probabilities = bilinear_resize(1.0 / (1.0 + np.exp(-low_res.astype(np.float32))), image_hw)
        clipped = np.clip(probabilities, 1e-6, 1 - 1e-6)
        return np.log(clipped / (1 - clipped)), probabilities > 0.5
    logits = bilinear_resize(low_res, (size, size), ((0, input_hw[0]), (0, input_hw[1])))
    logits = bilinear_resize(logits, image_hw)
    return logits, logits > 0


def whole_image_mask_input(mask_logits: np.ndarray, layout: str, size: int, input_hw: Sequence[int],
                           low_size: int) -> np.ndarray:
    """``(N, H, W)`` logits at the image's size -> the ``(N, 1, L, L)`` dense prompt of a whole-image model
    (``L = low_size``, four times its embedding grid): the inverse of :func:`whole_image_masks`'s upscaling.

    ``square`` stretches the image to the input, so the logits are stretched to ``L x L``; ``padded`` keeps the
    image in the top-left ``input_hw`` of the input, so the logits go there at ``L / size`` of that size and the
    padding is background (:data:`~gnnseg.seg.sam.inference.crop.BACKGROUND_LOGIT`).
    """
    if layout == "square":
        return bilinear_resize(mask_logits, (low_size, low_size))[:, None]
    height = max(1, round(input_hw[0] * low_size / size))
    width = max(1, round(input_hw[1] * low_size / size))
    dense = np.full((len(mask_logits), 1, low_size, low_size), BACKGROUND_LOGIT, dtype=np.float32)
    dense[:, 0, :height, :width] = bilinear_resize(mask_logits, (height, width))
    return dense
