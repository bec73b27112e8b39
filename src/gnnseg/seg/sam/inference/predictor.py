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
  window around the box (:mod:`gnnseg.seg.sam.inference.crop`); the encoder runs once per window rather than once per
  image, which at 128 pixels is cheap.

The whole-image embedding is kept by ``set_image`` for every later ``predict``, and the last
``cache_size`` embeddings are remembered by the image's content
(:class:`~gnnseg.seg.sam.inference.prediction.EmbeddingMemo`), so setting an image again (a slice shared by overlapping
3D boxes, the same upload twice) skips the encoder. Box-centred windows are encoded in one batch per ``predict`` call.
Models exported to ONNX have their own predictor with the same interface
(:class:`~gnnseg.seg.sam.inference.onnx_predictor.OnnxPredictor`);
:func:`~gnnseg.seg.sam.inference.chain.make_predictor` picks the right one.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from gnnseg.seg.sam.inference.base import PredictorEntrance
from gnnseg.seg.sam.inference.crop import BACKGROUND_LOGIT, CropWindow
from gnnseg.seg.sam.inference.prediction import (
    EmbeddingMemo,
    Prediction,
    to_input_coords,
    whole_image_mask_input,
    whole_image_masks,
    window_mask_input,
)
from gnnseg.seg.sam.inference.prompts import Prompts, prompt_extents
from gnnseg.seg.sam.modeling.sam import Sam


def resize_crop(crop: np.ndarray, size: int) -> Tensor:
    """``(s, s, 3)`` uint8 crop -> ``(3, size, size)`` float pixels in 0..255 (bilinear, antialiased when shrinking).

    Channels are resized one at a time (they are independent), so a large window costs one float channel at a time
    rather than three.
    """
    if crop.shape[0] == size:
        return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float()
    channels = []
    for channel in range(crop.shape[2]):
        plane = torch.from_numpy(np.ascontiguousarray(crop[:, :, channel]))[None, None].float()
        channels.append(F.interpolate(plane, (size, size), mode="bilinear", align_corners=False,
                                      antialias=plane.shape[-1] > size)[0, 0])
        del plane
    return torch.stack(channels).clamp(0, 255)


def paste_window(window: CropWindow, logits: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """``(B, M, s, s)`` logits over ``window`` (any ``s``) -> ``(B, M, H, W)`` logits over the whole image, background
    (:data:`~gnnseg.seg.sam.inference.crop.BACKGROUND_LOGIT`) outside the window."""
    side = window.side
    resized = F.interpolate(logits, (side, side), mode="bilinear", align_corners=False)
    height, width = image_hw
    out = logits.new_full((*logits.shape[:2], height, width), BACKGROUND_LOGIT)
    y0, x0 = max(window.top, 0), max(window.left, 0)
    y1, x1 = min(window.top + side, height), min(window.left + side, width)
    if y0 < y1 and x0 < x1:
        out[..., y0:y1, x0:x1] = resized[..., y0 - window.top : y1 - window.top, x0 - window.left : x1 - window.left]
    return out


WINDOW_MEMO = 64
"""Window embeddings a box-centred model keeps for the current image."""


class SamPredictor(PredictorEntrance):
    """``set_image`` once, ``predict`` many times."""

    def __init__(self, model: Sam, *, cache_size: int = 16) -> None:
        self.model = model.eval()
        self.cache_size = cache_size
        self.encoder_calls = 0
        self._memo = EmbeddingMemo(cache_size)
        self._embedding: Tensor | None = None
        self._input_hw: tuple[int, int] | None = None
        self._windows: OrderedDict[CropWindow, Tensor] = OrderedDict()   # box-centred: this image's windows

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
            logits, iou = self._predict_in_windows(prompts, multimask)
            return Prediction(logits.numpy() > 0, iou.numpy(), logits.numpy())
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

    def _window_embeddings(self, windows: list[CropWindow]) -> Tensor:
        """The windows' embeddings: those this image already had are kept (a click inside the box keeps its
        window), the others encoded in one batch. At most ``WINDOW_MEMO`` are kept per image."""
        missing = list(dict.fromkeys(w for w in windows if w not in self._windows))
        if missing:
            size = self.model.image_size
            pixels = torch.stack([resize_crop(window.cut(self._image), size) for window in missing])
            encoded = self.model.encode(self.model.normalize(pixels.to(self.device)))
            for window, embedding in zip(missing, encoded):
                self._windows[window] = embedding
        for window in windows:
            self._windows.move_to_end(window)
        found = torch.stack([self._windows[window] for window in windows])
        while len(self._windows) > WINDOW_MEMO:
            self._windows.popitem(last=False)
        return found

    def _predict_in_windows(self, prompts: Prompts, multimask: bool) -> tuple[Tensor, Tensor]:
        """One window per prompt around its box and points: its box's when all its points lie in the box (a box
        alone keeps the window it always had), else around both."""
        config = self.model.config
        size = self.model.image_size
        boxes, points = prompts.boxes, prompts.points
        windows = [CropWindow.around(extent, config.crop_margin) for extent in prompt_extents(prompts)]
        embeddings = self._window_embeddings(windows)
        box_tensor = None
        if boxes is not None:
            box_tensor = self._tensor(np.stack([w.to_input(b, size) for w, b in zip(windows, boxes)]), torch.float32)
        point_prompt = None
        if points is not None:
            local = np.stack([w.to_input(p, size) for w, p in zip(windows, points)])
            point_prompt = (self._tensor(local, torch.float32), self._tensor(prompts.labels, torch.int64))
        masks = None
        if prompts.mask_logits is not None:
            masks = self._tensor(np.stack([window_mask_input(logits, window, self._mask_input_size)
                                           for logits, window in zip(prompts.mask_logits, windows)]), torch.float32)
        low_res, iou = self.model.decode(embeddings, points=point_prompt, boxes=box_tensor, mask_inputs=masks,
                                         multimask=multimask)
        low_res, iou = low_res.float().cpu(), iou.float().cpu()
        image_hw = self.image_shape
        logits = torch.cat([paste_window(window, low_res[i : i + 1], image_hw) for i, window in enumerate(windows)])
        return logits, iou
