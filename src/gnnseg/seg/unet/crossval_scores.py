"""Cross-validation Dice as nnU-Net v2 scores it (``nnunetv2.evaluation.evaluate_predictions``), the numbers model
selection compares (:mod:`gnnseg.seg.unet.model_selection`).

Per case and per label or region (a region is the union of labels, for region-based datasets), Dice = 2 TP / (2 TP +
FP + FN), counted outside the voxels the reference marks with the ignore label; undefined (NaN) where neither map has
it. Per label or region the mean over the cases where it is defined (``nanmean``); a candidate's score is the mean of
those means, the foreground mean Dice (NaN if a label or region is undefined in every case, as nnU-Net's). These
differ from :mod:`gnnseg.seg.folder_scoring` (every label of either map, both-empty scored 1) on purpose: model
selection must decide as nnU-Net decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.core.progress import progress
from gnnseg.seg.io import MedicalImage, read_any
from gnnseg.seg.io.dataset_labels import DatasetLabels, paint_regions
from gnnseg.seg.unet.postprocess import LabelOrRegion, PostprocessingRule, region_mask


def member_key(label_or_region: LabelOrRegion) -> str:
    """A label or region as a JSON key, as nnU-Net writes them: ``"1"``, ``"(1, 2)"``."""
    return str(label_or_region)


@dataclass(frozen=True)
class LabelScheme:
    """What is scored and how labels are read.

    ``scored``: the foreground labels, or the regions of a region-based dataset, in the dataset's order;
    ``foreground_labels``: every foreground label value (the first post-processing step reduces their union);
    ``ignore_label``: voxels of this reference label are left out of every count; ``regions_class_order``: the label
    painted for each region when probabilities become a label map (region-based datasets only)."""

    scored: tuple[LabelOrRegion, ...]
    foreground_labels: tuple[int, ...]
    ignore_label: int | None = None
    regions_class_order: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.scored:
            raise ValueError("no foreground label or region to score")
        if self.has_regions and (self.regions_class_order is None
                                 or len(self.regions_class_order) != len(self.scored)):
            raise ValueError(f"regions {list(self.scored)} need a regions_class_order with one label per region, got "
                             f"{self.regions_class_order}")

    @property
    def has_regions(self) -> bool:
        return any(isinstance(member, tuple) for member in self.scored)

    @classmethod
    def from_dataset_json(cls, dataset: Mapping[str, Any]) -> LabelScheme:
        """An nnU-Net ``dataset.json``'s labels: an ``ignore`` entry, regions (lists of labels) with their
        ``regions_class_order``, as nnU-Net's ``LabelManager`` reads them (:class:`DatasetLabels`)."""
        return cls.from_model(DatasetLabels.from_json(dataset["labels"], dataset.get("regions_class_order")))

    @classmethod
    def from_model(cls, model: DatasetLabels) -> LabelScheme:
        """What a dataset's labels score (a gnnseg plans' ``label_model``, or an nnU-Net ``dataset.json``'s)."""
        return cls(scored=tuple(model.scored), foreground_labels=tuple(model.foreground_labels),
                   ignore_label=model.ignore_label, regions_class_order=model.regions_class_order
                   if model.has_regions else None)

    def to_json(self) -> dict[str, Any]:
        return {"scored": [list(m) if isinstance(m, tuple) else m for m in self.scored],
                "foreground_labels": list(self.foreground_labels), "ignore_label": self.ignore_label,
                "regions_class_order": None if self.regions_class_order is None else list(self.regions_class_order)}

    def segmentation(self, probabilities: np.ndarray) -> np.ndarray:
        """Labels from probabilities ``(K, *spatial)``: the arg-max, or for regions each one above 0.5 painted in
        ``regions_class_order`` (later regions over earlier ones)."""
        if not self.has_regions:
            return probabilities.argmax(0)
        return paint_regions(probabilities, self.regions_class_order, np.zeros(probabilities.shape[1:], np.uint16))


def case_dice(reference: np.ndarray, prediction: np.ndarray, scheme: LabelScheme) -> dict[LabelOrRegion, float]:
    """Dice per scored label or region of one case (NaN where both maps lack it), outside the ignore label."""
    counted = None if scheme.ignore_label is None else reference != scheme.ignore_label
    scores = {}
    for member in scheme.scored:
        truth, predicted = region_mask(reference, member), region_mask(prediction, member)
        if counted is not None:
            truth, predicted = truth & counted, predicted & counted
        tp = int(np.count_nonzero(truth & predicted))
        fp = int(np.count_nonzero(predicted & ~truth))
        fn = int(np.count_nonzero(truth & ~predicted))
        scores[member] = math.nan if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return scores


@dataclass(frozen=True)
class DiceSummary:
    """Dice per case and label or region, the mean per label or region over the cases where it is defined, and the
    mean of those means (the foreground mean Dice, the number configurations are compared by)."""

    per_case: dict[str, dict[LabelOrRegion, float]]
    mean: dict[LabelOrRegion, float]
    foreground_mean: float

    @classmethod
    def of(cls, per_case: dict[str, dict[LabelOrRegion, float]], scheme: LabelScheme) -> DiceSummary:
        mean = {}
        for member in scheme.scored:
            values = np.array([scores[member] for scores in per_case.values()], dtype=np.float64)
            mean[member] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        return cls(per_case, mean, float(np.mean([mean[member] for member in scheme.scored])))

    def means_to_json(self) -> dict[str, Any]:
        return {"foreground_mean": json_number(self.foreground_mean),
                "mean": {member_key(k): json_number(v) for k, v in self.mean.items()}}

    def to_json(self) -> dict[str, Any]:
        return {**self.means_to_json(), "per_case": {case: {member_key(k): json_number(v) for k, v in scores.items()}
                                                     for case, scores in self.per_case.items()}}


def json_number(value: float) -> float | None:
    """A score for JSON: undefined (NaN) becomes null."""
    return None if math.isnan(value) else value


def read_label_map(path: Path) -> MedicalImage:
    """A label map, or an error naming the missing file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label map not found")
    return read_any(path)


def score_predictions(predictions: Mapping[str, Path], references: Mapping[str, Path], scheme: LabelScheme,
                      rule: PostprocessingRule = PostprocessingRule(), *, show_progress: bool | None = None,
                      description: str = "score") -> DiceSummary:
    """Dice of every predicted case (after ``rule``) against its reference, cases in file-name order (a bar on stderr
    counts them)."""
    per_case = {}
    cases = sorted(predictions, key=lambda c: predictions[c].name)
    for case in progress(cases, desc=description, total=len(cases), enabled=show_progress):
        if case not in references:
            raise FileNotFoundError(f"{predictions[case]}: no reference label map for case {case}")
        reference = read_label_map(references[case]).array
        predicted = read_label_map(predictions[case]).array
        if predicted.shape != reference.shape:
            raise ValueError(f"{predictions[case]}: shape {predicted.shape} differs from its reference "
                             f"{references[case]} {reference.shape}")
        per_case[case] = case_dice(reference, rule.apply(predicted), scheme)
    return DiceSummary.of(per_case, scheme)
