"""A training run's cross-validation predictions: its fold's validation cases, segmented at the end of training and
kept in the run folder, where model selection (:mod:`gnnseg.seg.unet.model_selection`) reads them.

``<run>/validation/<case><file ending>``
    the label map on the case's own grid (the geometry of its reference label), as ``nnUNetv2_train`` keeps
    ``fold_<k>/validation/``;
``<run>/validation/<case>.npz``
    ``probabilities (K, *spatial)``: the softmax per class on the same grid, float32 (their arg-max is the label map),
    which ensembles of configurations average (nnU-Net keeps them with ``--npz``). A 3D case costs K x 4 bytes a
    voxel before compression.

The folder is written whole or not at all (a temporary folder renamed at the end); a resumed run that reaches the
end of training again replaces the folder its earlier end wrote, as it replaces ``summary.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np

from gnnseg.core.atomic import atomic_folder
from gnnseg.seg.io import MedicalImage
from gnnseg.seg.io.any_format import write_any

VALIDATION_FOLDER = "validation"
PROBABILITIES_KEY = "probabilities"


def label_map_dtype(labels: np.ndarray) -> type:
    """The smallest unsigned type every writer takes for these labels (uint8, or uint16 beyond 255)."""
    return np.uint8 if labels.size == 0 or int(labels.max()) < 256 else np.uint16


class ValidationPredictionWriter:
    """Collects a fold's validation predictions in a temporary folder beside ``<run>/validation`` and puts it in
    place when the ``with`` block ends without an error (removed otherwise)."""

    def __init__(self, run_dir: str | os.PathLike, file_ending: str) -> None:
        self.folder = atomic_folder(Path(run_dir) / VALIDATION_FOLDER, replace=True)
        self.file_ending = file_ending

    def __enter__(self) -> ValidationPredictionWriter:
        self.partial = self.folder.__enter__()
        return self

    def save(self, case_id: str, labels: np.ndarray, probabilities: np.ndarray, reference: MedicalImage) -> None:
        """One case: ``labels`` and ``probabilities (K, *labels.shape)`` on the grid of ``reference`` (its label)."""
        if labels.shape != reference.array.shape or probabilities.shape[1:] != labels.shape:
            raise ValueError(f"validation case {case_id}: labels {labels.shape} and probabilities "
                             f"{probabilities.shape} do not lie on its reference grid {reference.array.shape}")
        image = MedicalImage(labels.astype(label_map_dtype(labels)), reference.spacing, reference.affine)
        write_any(image, self.partial / f"{case_id}{self.file_ending}")
        np.savez_compressed(self.partial / f"{case_id}.npz", **{PROBABILITIES_KEY: probabilities.astype(np.float32)})

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.folder.__exit__(kind, error, traceback)
