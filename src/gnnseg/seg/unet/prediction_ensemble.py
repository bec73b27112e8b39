"""Ensembles of prediction folders, as ``nnUNetv2_ensemble`` makes them: the probabilities that two or more models
(configurations) saved for the same cases averaged, turned into label maps, and the post-processing that
``find-best-configuration`` chose for that ensemble applied, as the selection scored it.

``gnnseg seg predict --save-probabilities`` writes, beside each label map ``<case><ending>``, ``<case>.npz``
(``probabilities (K, *spatial)``) and once per folder ``dataset.json`` (the labels, regions and file ending the
probabilities are of: :data:`LABELS_FILE`). :func:`ensemble_folders` reads those: the folders must agree on the
labels and hold the same cases; the output is written on the first folder's grids, never over a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gnnseg.core import progress
from gnnseg.core.runs import write_json
from gnnseg.seg.io import MedicalImage, write_any
from gnnseg.seg.io.dataset_labels import DatasetLabels
from gnnseg.seg.unet.crossval_scores import LabelScheme, read_label_map
from gnnseg.seg.unet.model_selection import mean_case_probabilities
from gnnseg.seg.unet.postprocess import PostprocessingRule
from gnnseg.seg.unet.validation_predictions import label_map_dtype

LABELS_FILE = "dataset.json"


def write_prediction_labels(folder: Path, labels: DatasetLabels, file_ending: str) -> None:
    """The labels a folder's saved probabilities are of (``dataset.json``'s keys; what an ensemble reads)."""
    write_json(folder / LABELS_FILE, {"labels": labels.to_json(), "file_ending": file_ending,
                                      **({"regions_class_order": list(labels.regions_class_order)}
                                         if labels.has_regions else {})})


def _folder_labels(folder: Path) -> tuple[DatasetLabels, str]:
    manifest = folder / LABELS_FILE
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} is missing: predict into {folder} with --save-probabilities (an "
                                "ensemble averages the probabilities it keeps)")
    try:
        content = json.loads(manifest.read_text())
        return (DatasetLabels.from_json(content["labels"], content.get("regions_class_order"), where=str(manifest)),
                str(content["file_ending"]))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{manifest} is not a prediction folder's labels file ({error})") from None


def ensemble_folders(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                     postprocessing: str | os.PathLike | None = None,
                     show_progress: bool | None = None) -> dict[str, Any]:
    """Average the saved probabilities of every case in the ``inputs`` folders into label maps in the new folder
    ``output``, then apply the ``postprocessing.json`` rule when given. Everything is checked first."""
    folders = [Path(folder) for folder in inputs]
    if len(folders) < 2:
        raise ValueError("an ensemble needs two or more prediction folders")
    described = [_folder_labels(folder) for folder in folders]
    labels, ending = described[0]
    for folder, (other, other_ending) in zip(folders[1:], described[1:]):
        if (other.to_json(), other.regions_class_order, other_ending) != \
                (labels.to_json(), labels.regions_class_order, ending):
            raise ValueError(f"{folder} holds predictions of other labels or files than {folders[0]}; an ensemble "
                             "averages the same classes")
    cases = [sorted(path.stem for path in folder.glob("*.npz")) for folder in folders]
    if not cases[0]:
        raise FileNotFoundError(f"{folders[0]} holds no saved probabilities (<case>.npz)")
    for folder, found in zip(folders[1:], cases[1:]):
        if found != cases[0]:
            different = sorted(set(found) ^ set(cases[0]))
            raise ValueError(f"{folders[0]} and {folder} hold different cases (e.g. {different[0]}); an ensemble "
                             "needs every case in every folder")
    missing = [str(folders[0] / f"{case}{ending}") for case in cases[0]
               if not (folders[0] / f"{case}{ending}").is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: the label map that gives the case its grid is missing")
    rule = PostprocessingRule.load(postprocessing) if postprocessing is not None else None
    target = Path(output)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty folder; choose a new one")
    scheme = LabelScheme.from_model(labels)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for case in progress(cases[0], desc=f"ensemble of {len(folders)}", enabled=show_progress):
        grid = read_label_map(folders[0] / f"{case}{ending}")
        average = mean_case_probabilities([folder / f"{case}.npz" for folder in folders],
                                          folders[0] / f"{case}{ending}", grid.array.shape)
        segmentation = scheme.segmentation(average)
        if rule is not None:
            segmentation = rule.apply(segmentation)
        image = MedicalImage(segmentation.astype(label_map_dtype(segmentation)), grid.spacing, grid.affine)
        written.append(str(write_any(image, target / f"{case}{ending}")))
    return {"inputs": [str(folder) for folder in folders], "predictions": written,
            "postprocessing": None if rule is None else {"file": str(postprocessing), "steps": rule.to_json()}}
