"""A folder of predicted label maps scored against a folder of ground-truth label maps, file name by file name.

Every case is scored label by label with :func:`gnnseg.seg.metrics.evaluate_case` (Dice, NSD, HD95, in the truth's
spacing); :class:`FolderScores` keeps those scores and gives the two averages the commands report: the mean of each
label over the cases (``gnnseg seg metrics``) and the mean of each case over its labels (``gnnseg seg lite
evaluate``, as the CVPR 2024 challenge averages).

What a caller chooses:

- how files are read: a reader from a path to a :class:`LabelMap` for each side (default :func:`read_label_map`,
  any format :func:`~gnnseg.seg.io.any_format.read_any` reads);
- which labels count: ``"truth"`` (every label of the truth; a truth with none is an error), ``"union"`` (of the
  truth and the prediction: a label predicted but absent from the truth counts too) or a list of label ids;
- a truth file without a prediction of the same name: ``"skip"`` it, or score it as an ``"empty"`` prediction
  (all background: 0 for every label of the truth, as the challenge counts a missing prediction).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from gnnseg.seg.io.any_format import READABLE_SUFFIXES, read_any
from gnnseg.seg.io.image import ImageFormatError
from gnnseg.seg.metrics import evaluate_case

LabelChoice = Literal["truth", "union"] | Sequence[int]
MissingPrediction = Literal["skip", "empty"]


class LabelMap(NamedTuple):
    """An integer label map as read from a file, and its voxel size per axis (``None``: 1 per axis)."""

    array: np.ndarray
    spacing: Sequence[float] | None


def read_label_map(path: Path) -> LabelMap:
    """A label map in any format :func:`~gnnseg.seg.io.any_format.read_any` reads, with the file's spacing."""
    image = read_any(path)
    return LabelMap(image.array, image.spacing)


def _labels_to_score(predicted: np.ndarray, truth: np.ndarray, labels: LabelChoice, name: str) -> list[int]:
    """The label ids of one case that ``labels`` counts (see the module docstring), in increasing order for the
    ``"truth"`` and ``"union"`` choices; ``name`` names the case in the error for a truth without labels."""
    if not isinstance(labels, str):
        return list(labels)
    found = set(np.unique(truth).tolist())
    if labels == "union":
        found |= set(np.unique(predicted).tolist())
    elif labels != "truth":
        raise ValueError(f"labels must be 'truth', 'union' or a list of label ids, got {labels!r}")
    found.discard(0)
    if not found and labels == "truth":
        raise ValueError(f"{name}: the ground truth holds no labelled object")
    return sorted(found)


def score_labels(predicted: np.ndarray, truth: np.ndarray, labels: LabelChoice, *,
                 spacing: Sequence[float] | None = None, tolerance_mm: float = 2.0,
                 name: str = "the case") -> dict[int, dict[str, float]]:
    """``{label: {"dice", "nsd", "hd95"}}`` of one case for the labels ``labels`` counts
    (:func:`~gnnseg.seg.metrics.evaluate_case`); maps of different shapes are an error that names ``name``."""
    if predicted.shape != truth.shape:
        raise ImageFormatError(f"{name}: prediction shape {predicted.shape} != ground truth {truth.shape}")
    return evaluate_case(predicted, truth, _labels_to_score(predicted, truth, labels, name), spacing=spacing,
                         tolerance_mm=tolerance_mm)


def mean_over_labels(scores: dict[int, dict[str, float]]) -> dict[str, float]:
    """``{metric: mean over the labels}`` of one case's :func:`score_labels` (empty when no label was scored)."""
    return _mean_by_metric(scores.values())


@dataclass(frozen=True)
class FolderScores:
    """What :func:`score_folders` measured.

    Attributes:
        per_case: ``{file name: {label: {"dice", "nsd", "hd95"}}}`` in file name order.
        missing: truth file names without a prediction, skipped or scored as empty by the caller's choice.
    """

    per_case: dict[str, dict[int, dict[str, float]]]
    missing: list[str]

    def mean_per_label(self) -> dict[int, dict[str, float]]:
        """``{label: {metric: mean over the cases that scored the label}}``, labels in the order first met."""
        by_label: dict[int, list[dict[str, float]]] = {}
        for scores in self.per_case.values():
            for label, values in scores.items():
                by_label.setdefault(label, []).append(values)
        return {label: _mean_by_metric(values) for label, values in by_label.items()}

    def mean_per_case(self) -> dict[str, dict[str, float]]:
        """``{file name: {metric: mean over the case's labels}}``."""
        return {name: mean_over_labels(scores) for name, scores in self.per_case.items()}


def score_folders(prediction_folder: str | os.PathLike, truth_folder: str | os.PathLike, *,
                  suffixes: Sequence[str] = READABLE_SUFFIXES,
                  read_prediction: Callable[[Path], LabelMap] = read_label_map,
                  read_truth: Callable[[Path], LabelMap] = read_label_map, labels: LabelChoice = "union",
                  missing: MissingPrediction = "skip", tolerance_mm: float = 2.0) -> FolderScores:
    """Score every file of ``truth_folder`` ending in one of ``suffixes`` (any case; hidden files left out) against
    the file of the same name in ``prediction_folder``, in the truth's spacing.

    Raises:
        FileNotFoundError: a folder that is not one, a truth folder without such files, or (with
            ``missing="skip"``) no file name the two folders share.
        ValueError: a case whose maps differ in shape, or whose truth holds no label when the truth's labels count
            (named by its file).
    """
    if missing not in ("skip", "empty"):
        raise ValueError(f"missing must be 'skip' or 'empty', got {missing!r}")
    predictions = set(_label_files(Path(prediction_folder), suffixes, "prediction"))
    truths = _label_files(Path(truth_folder), suffixes, "ground-truth")
    if not truths:
        raise FileNotFoundError(f"{truth_folder} holds no label maps ({', '.join(suffixes)})")
    absent = [name for name in truths if name not in predictions]
    if missing == "skip":
        truths = [name for name in truths if name in predictions]
        if not truths:
            raise FileNotFoundError(f"no file names shared by {prediction_folder} and {truth_folder}")
    per_case = {}
    for name in truths:
        truth = read_truth(Path(truth_folder) / name)
        predicted = (read_prediction(Path(prediction_folder) / name).array if name in predictions
                     else np.zeros_like(truth.array))
        per_case[name] = score_labels(predicted, truth.array, labels, spacing=truth.spacing,
                                      tolerance_mm=tolerance_mm, name=name)
    return FolderScores(per_case, absent)


def _label_files(folder: Path, suffixes: Sequence[str], role: str) -> list[str]:
    """Sorted names of the files of ``folder`` ending in one of ``suffixes``, hidden files left out."""
    if not folder.is_dir():
        raise FileNotFoundError(f"the {role} folder {folder} is not a folder" if folder.exists()
                                else f"the {role} folder {folder} does not exist")
    return sorted(path.name for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")
                  and path.name.lower().endswith(tuple(suffixes)))


def _mean_by_metric(scores: Iterable[dict[str, float]]) -> dict[str, float]:
    by_metric: dict[str, list[float]] = {}
    for values in scores:
        for metric, value in values.items():
            by_metric.setdefault(metric, []).append(value)
    return {metric: float(np.mean(values)) for metric, values in by_metric.items()}
