"""Random training patches from preprocessed cases, with nnU-Net's foreground oversampling.

A fraction (``oversample_foreground``, 33% by default) of every batch is centred on a voxel of a randomly
chosen foreground class (from the coordinates stored at preprocessing); the rest is drawn uniformly.
Cases smaller than the patch are padded (image with 0, labels with background). For a 2D configuration
of volumetric data, a slice is drawn first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from gnnseg.seg.unet.case_preprocessing import load_preprocessed


class PatchSampler:
    def __init__(self, folder: str | os.PathLike, case_ids: Sequence[str], patch_size: Sequence[int],
                 batch_size: int, *, oversample_foreground: float = 0.33, seed: int = 0) -> None:
        if not case_ids:
            raise ValueError("PatchSampler needs at least one case")
        self.folder, self.case_ids = Path(folder), list(case_ids)
        self.patch_size, self.batch_size = tuple(int(p) for p in patch_size), int(batch_size)
        self.oversample_foreground = oversample_foreground
        self.rng = np.random.default_rng(seed)
        self.cases = {case_id: load_preprocessed(self.folder, case_id) for case_id in self.case_ids}

    def _forced_foreground(self, index: int) -> bool:
        """The last ``round(B * p)`` samples of a batch (at least one when p > 0) are foreground-centred."""
        count = max(1, round(self.batch_size * self.oversample_foreground)) if self.oversample_foreground > 0 else 0
        return index >= self.batch_size - count

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        data, seg, properties = self.cases[self.case_ids[self.rng.integers(len(self.case_ids))]]
        dims = len(self.patch_size)
        center = None
        locations = {k: v for k, v in properties["class_locations"].items() if v}
        if self._forced_foreground(index) and locations:
            chosen = locations[list(locations)[self.rng.integers(len(locations))]]
            center = chosen[self.rng.integers(len(chosen))]
        if dims == 2 and data.ndim == 4:     # 2D configuration: pick the slice, then work in-plane
            z = center[0] if center is not None else int(self.rng.integers(data.shape[1]))
            data, seg = data[:, z], seg[:, z]
            center = None if center is None else center[1:]
        return self._crop(np.asarray(data), np.asarray(seg), center)

    def _crop(self, data: np.ndarray, seg: np.ndarray, center) -> tuple[np.ndarray, np.ndarray]:
        shape = np.array(data.shape[1:])
        patch = np.array(self.patch_size)
        if center is None:
            low = np.minimum(0, shape - patch)             # negative when the case is smaller: padding
            high = np.maximum(0, shape - patch)
            start = np.array([self.rng.integers(lo, hi + 1) for lo, hi in zip(low, high)])
        else:
            jitter = np.array([self.rng.integers(-(p // 4), p // 4 + 1) for p in patch])
            start = np.asarray(center) - patch // 2 + jitter
            start = np.clip(start, np.minimum(0, shape - patch), np.maximum(0, shape - patch))
        stop = start + patch
        source = tuple(slice(max(a, 0), min(b, s)) for a, b, s in zip(start, stop, shape))
        target = tuple(slice(max(a, 0) - a, max(a, 0) - a + (sl.stop - sl.start)) for a, sl in zip(start, source))
        image = np.zeros((data.shape[0], *patch), np.float32)
        labels = np.zeros((1, *patch), np.int64)
        image[(slice(None), *target)] = data[(slice(None), *source)]
        labels[(slice(None), *target)] = seg[(slice(None), *source)]
        labels[labels < 0] = 0                              # outside the nonzero region counts as background
        return image, labels

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, *patch)`` float32 images and ``(B, 1, *patch)`` int64 labels."""
        samples = [self.sample(index) for index in range(self.batch_size)]
        return (torch.from_numpy(np.stack([s[0] for s in samples])),
                torch.from_numpy(np.stack([s[1] for s in samples])))
