"""Answering prompts with a box-centred model (``crop_margin`` set), in numpy: what the PyTorch and the ONNX predictor
share, so that both place the same windows and read the same prompts.

Each prompt is answered on its own window (:class:`~gnnseg.seg.sam.inference.crop.CropWindow`) around its box and
points: the box's window when all its points lie in the box (a box alone keeps the window it always had, and so does a
click inside it), else a window around both. :class:`WindowedPrompts` places the windows, moves the box, the clicks and
the previous logits into each window's input grid, and pastes the windows' low-resolution logits back into the image;
:class:`WindowMemo` keeps the current image's window embeddings, so a click inside the box costs one decoder pass. The
encoder sees the window's pixels resized by :func:`~gnnseg.seg.sam.inference.model_input.resize_window`, normalised
as the model's config says.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gnnseg.seg.sam.inference.crop import BACKGROUND_LOGIT, CropWindow
from gnnseg.seg.sam.inference.prediction import bilinear_resize
from gnnseg.seg.sam.inference.prompts import Prompts, prompt_extents

WINDOW_MEMO = 64
"""Window embeddings a box-centred model keeps for the current image."""


def window_mask_input(mask_logits: np.ndarray, window: CropWindow, low_size: int) -> np.ndarray:
    """``(H, W)`` logits at the image's size -> the ``(1, L, L)`` dense prompt of a box-centred model for
    ``window`` (background where the window leaves the image)."""
    cut = window.cut(mask_logits - BACKGROUND_LOGIT) + BACKGROUND_LOGIT
    return bilinear_resize(cut, (low_size, low_size))[None]


def paste_logits(window: CropWindow, logits: np.ndarray, image_hw: Sequence[int]) -> np.ndarray:
    """``(B, M, s, s)`` logits over ``window`` (any ``s``) -> ``(B, M, H, W)`` float32 logits over the whole image:
    resized bilinearly to the window's side, background (:data:`~gnnseg.seg.sam.inference.crop.BACKGROUND_LOGIT`)
    outside the window."""
    side = window.side
    height, width = image_hw
    out = np.full((*logits.shape[:2], height, width), BACKGROUND_LOGIT, dtype=np.float32)
    y0, x0 = max(window.top, 0), max(window.left, 0)
    y1, x1 = min(window.top + side, height), min(window.left + side, width)
    if y0 < y1 and x0 < x1:   # only the part of the window inside the image is resized
        out[..., y0:y1, x0:x1] = bilinear_resize(logits, (side, side), ((y0 - window.top, y1 - window.top),
                                                                         (x0 - window.left, x1 - window.left)))
    return out


@dataclass(frozen=True)
class WindowedPrompts:
    """One call's prompts, each in its own window's ``size x size`` input grid.

    ``windows``: one per prompt; ``boxes`` ``(N, 4)``; ``points`` ``(N, P, 2)`` with their ``labels`` ``(N, P)``;
    ``mask_input`` ``(N, 1, L, L)``, the previous logits as the dense prompt. Each is None where the prompts have none.
    """

    windows: tuple[CropWindow, ...]
    boxes: np.ndarray | None
    points: np.ndarray | None
    labels: np.ndarray | None
    mask_input: np.ndarray | None

    @classmethod
    def place(cls, prompts: Prompts, margin: float, size: int, low_size: int) -> WindowedPrompts:
        """Each prompt's window (``margin`` box sizes on each side of its extent) and its prompts in that window's
        ``size x size`` input; previous logits at ``low_size x low_size``."""
        windows = tuple(CropWindow.around(extent, margin) for extent in prompt_extents(prompts))

        def local(coords: np.ndarray | None) -> np.ndarray | None:
            return None if coords is None else np.stack([w.to_input(c, size) for w, c in zip(windows, coords)])

        mask_input = None if prompts.mask_logits is None else np.stack(
            [window_mask_input(logits, window, low_size) for logits, window in zip(prompts.mask_logits, windows)])
        return cls(windows, local(prompts.boxes), local(prompts.points), prompts.labels, mask_input)

    def paste(self, low_res: np.ndarray, image_hw: Sequence[int]) -> np.ndarray:
        """``(N, M, l, l)`` low-resolution logits, prompt ``i`` over window ``i`` -> ``(N, M, H, W)`` float32 logits
        over the image (:func:`paste_logits`)."""
        return np.concatenate([paste_logits(window, low_res[i : i + 1], image_hw)
                               for i, window in enumerate(self.windows)])


class WindowMemo:
    """The current image's window embeddings, the ``size`` last used: a click inside the box keeps its window, whose
    embedding is then found here rather than encoded again."""

    def __init__(self, size: int = WINDOW_MEMO) -> None:
        self.size = size
        self._entries: OrderedDict[CropWindow, Any] = OrderedDict()

    def clear(self) -> None:
        """Forget every window (a new image)."""
        self._entries.clear()

    def embeddings(self, windows: Sequence[CropWindow], encode: Callable[[list[CropWindow]], Sequence[Any]]
                   ) -> list[Any]:
        """Each window's embedding, in order: those kept are found, the others made by one ``encode`` call that gets
        every missing window once and returns their embeddings in that order."""
        missing = list(dict.fromkeys(window for window in windows if window not in self._entries))
        if missing:
            for window, embedding in zip(missing, encode(missing), strict=True):
                self._entries[window] = embedding
        for window in windows:
            self._entries.move_to_end(window)
        found = [self._entries[window] for window in windows]
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return found
