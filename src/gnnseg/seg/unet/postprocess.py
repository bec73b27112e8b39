"""Post-processing of predicted label maps: keep only the largest connected component of chosen labels.

nnU-Net's one post-processing step (Isensee et al. 2021, "non-largest component suppression"): every region of a
label that is not its largest 3D (or 2D) connected component becomes background. nnU-Net v2 decides per label on
its cross-validation predictions whether this helps (``nnunetv2.postprocessing.remove_connected_components``:
applied where a label's Dice improves). An organ that is one connected structure (liver, spleen, a kidney) is the
typical case, and a run trained on a single volume has no validation cases to decide on, so here the labels are
chosen by the user (``gnnseg seg predict --keep-largest``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage


def keep_largest_component(labels: np.ndarray, keep: Iterable[int]) -> np.ndarray:
    """A copy of ``labels`` where each label in ``keep`` is reduced to its largest connected component (face
    connectivity); its other components become background (0). Labels absent from the map are skipped."""
    result = np.array(labels, copy=True)
    for label in keep:
        if label <= 0:
            raise ValueError(f"keep-largest labels must be foreground labels (>= 1), got {label}")
        mask = labels == label
        components, count = ndimage.label(mask)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0  # background
        result[mask & (components != sizes.argmax())] = 0
    return result
