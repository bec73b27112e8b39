"""Model selection after cross-validation, by nnU-Net v2's rules (``nnUNetv2_find_best_configuration``).

Given the cross-validation predictions of one or more configurations (every case predicted by the fold that held it
out) and the reference labels:

1. **Scores**: each candidate's foreground mean Dice by nnU-Net's rules (:mod:`gnnseg.seg.unet.crossval_scores`:
   the ignore label, empty cases, the mean of the per-label means).
2. **Ensembles** of every pair of configurations: per case the members' probabilities averaged (in float32, as
   nnU-Net's ``ensemble_crossvalidations``), then the arg-max (labels) or each region above 0.5 painted in
   ``regions_class_order``; scored the same way.
3. **Best**: the highest foreground mean Dice; a tie goes to the first candidate (single configurations, in the order
   given, before ensembles).
4. **Post-processing** of the best (nnU-Net's ``determine_postprocessing``): first keep the largest connected
   component of all foreground labels together; accepted if the foreground mean Dice rises strictly and no label or
   region's mean Dice falls. Then, where more than one label or region is scored, for each in the dataset's order on
   the predictions as they stand: keep its largest component, accepted if its own mean Dice rises strictly.
   Components connect through faces, edges and corners (:func:`~gnnseg.seg.unet.postprocess.
   keep_largest_foreground_component`).

Everything is written into a new folder at once (built under a temporary name, renamed when complete):
``<name>/summary.json`` per candidate (per-case Dice, means, foreground mean), ``ensemble__<a>__<b>/`` with the
ensemble's label maps, ``postprocessing.json`` (the rule and the numbers that decided it; ``gnnseg seg predict
--postprocessing`` applies it) and ``inference_information.json`` (every candidate's score, the winner, how to
predict with it). :func:`select_configuration` takes any predictions laid out as files (nnU-Net's
``fold_<k>/validation`` as well); :mod:`gnnseg.seg.unet.trained_folds` finds them among a work folder's training runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.core.atomic import atomic_folder
from gnnseg.core.progress import progress
from gnnseg.core.runs import write_json
from gnnseg.seg.io import MedicalImage
from gnnseg.seg.io.any_format import write_any
from gnnseg.seg.unet.crossval_scores import (
    DiceSummary,
    LabelScheme,
    json_number,
    member_key,
    read_label_map,
    score_predictions,
)
from gnnseg.seg.unet.postprocess import POSTPROCESSING_FORMAT, LabelOrRegion, PostprocessingRule
from gnnseg.seg.unet.validation_predictions import PROBABILITIES_KEY, label_map_dtype

INFERENCE_INFORMATION_FORMAT = "gnnseg.inference_information/1"


@dataclass(frozen=True)
class CrossValidationPredictions:
    """One candidate's cross-validation predictions: a label-map file per case and, for ensembling, a probability
    file (``.npz`` with ``probabilities (K, *spatial)``) per case, by default ``<case>.npz`` beside its label map (as
    gnnseg's runs and nnU-Net's ``fold_<k>/validation`` keep them). ``members``: the configurations it averages
    (itself for a single configuration); ``sources``: where its predictions came from (runs per fold)."""

    name: str
    labels: Mapping[str, Path]
    probabilities: Mapping[str, Path] = field(default_factory=dict)
    members: tuple[str, ...] = ()
    sources: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError(f"{self.name}: no cross-validation predictions")
        object.__setattr__(self, "labels", {case: Path(path) for case, path in self.labels.items()})
        object.__setattr__(self, "probabilities", {case: Path(path) for case, path in self.probabilities.items()})
        if not self.members:
            object.__setattr__(self, "members", (self.name,))


@dataclass(frozen=True)
class PostprocessingTrial:
    """One step tried: the scores before and after it, and whether it was kept."""

    step: tuple[LabelOrRegion, ...]
    criterion: str
    before: DiceSummary
    after: DiceSummary
    accepted: bool

    def to_json(self) -> dict[str, Any]:
        return {"keep_largest_component_of": PostprocessingRule((self.step,)).to_json()[0],
                "criterion": self.criterion, "accepted": self.accepted,
                "before": self.before.means_to_json(), "after": self.after.means_to_json()}


@dataclass(frozen=True)
class PostprocessingDecision:
    """The rule chosen on cross-validation predictions, with the scores before and after it and every trial."""

    rule: PostprocessingRule
    before: DiceSummary
    after: DiceSummary
    trials: tuple[PostprocessingTrial, ...]

    def to_json(self, scheme: LabelScheme, source: str) -> dict[str, Any]:
        """The ``postprocessing.json`` document (:meth:`PostprocessingRule.load` reads its ``steps``)."""
        return {"format": POSTPROCESSING_FORMAT, "steps": self.rule.to_json(),
                "rule": "each step keeps the largest connected component (full connectivity) of the union of its "
                        "labels or regions; the rest of that union becomes background",
                "decided_on": source, "labels": scheme.to_json(),
                "cross_validation_dice": {"before": self.before.means_to_json(),
                                          "after": self.after.means_to_json()},
                "trials": [trial.to_json() for trial in self.trials]}


def determine_postprocessing(predictions: Mapping[str, Path], references: Mapping[str, Path], scheme: LabelScheme,
                             *, baseline: DiceSummary | None = None,
                             show_progress: bool | None = None) -> PostprocessingDecision:
    """nnU-Net's choice of "keep the largest component" steps on cross-validation predictions (module docstring,
    step 4); ``baseline``: the predictions' scores when already known. Nothing is written; predictions are re-read
    for each trial, so memory holds one case at a time."""
    def score(rule: PostprocessingRule, description: str) -> DiceSummary:
        return score_predictions(predictions, references, scheme, rule, show_progress=show_progress,
                                 description=f"post-processing: {description}")

    baseline = baseline if baseline is not None else score(PostprocessingRule(), "as predicted")
    all_foreground = tuple(scheme.foreground_labels)
    candidate = PostprocessingRule().then(all_foreground)
    after = score(candidate, "largest foreground component")
    accepted = after.foreground_mean > baseline.foreground_mean and not any(
        after.mean[member] < baseline.mean[member] for member in scheme.scored)
    trials = [PostprocessingTrial(all_foreground, "foreground mean Dice rises, no label or region falls", baseline,
                                  after, accepted)]
    rule, current = (candidate, after) if accepted else (PostprocessingRule(), baseline)
    if len(scheme.scored) > 1:
        for member in scheme.scored:
            candidate = rule.then((member,))
            after = score(candidate, f"largest component of {member_key(member)}")
            accepted = after.mean[member] > current.mean[member]
            trials.append(PostprocessingTrial((member,), "its own mean Dice rises", current, after, accepted))
            if accepted:
                rule, current = candidate, after
    return PostprocessingDecision(rule, baseline, current, tuple(trials))


def load_case_probabilities(path: Path, label_map: Path, shape: tuple[int, ...]) -> np.ndarray:
    """One case's saved ``probabilities (K, *spatial)``, checked against the grid of its label map."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: probabilities not found (ensembling needs each case's .npz; select "
                                "without ensembles otherwise)")
    with np.load(path) as stored:
        if PROBABILITIES_KEY not in stored:
            raise ValueError(f"{path}: no '{PROBABILITIES_KEY}' array")
        probabilities = stored[PROBABILITIES_KEY]
    spatial = probabilities.shape[1:]
    if spatial != shape:
        if tuple(s for s in spatial if s != 1) != tuple(s for s in shape if s != 1):   # (K, 1, y, x) for (y, x)
            raise ValueError(f"{path}: probabilities of shape {probabilities.shape} do not fit the label map "
                             f"{label_map} of shape {shape}")
        probabilities = probabilities.reshape(probabilities.shape[0], *shape)
    return probabilities


def mean_case_probabilities(paths: Sequence[Path], label_map: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The mean (float32) of one case's probabilities saved at ``paths``, on the grid of ``label_map``."""
    average = None
    for path in paths:
        loaded = load_case_probabilities(path, label_map, shape)
        if average is not None and loaded.shape != average.shape:
            raise ValueError(f"{path}: {loaded.shape[0]} probability channels, {paths[0]} has {average.shape[0]}")
        average = loaded.astype(np.float32) if average is None else average + loaded
    return average / len(paths)


def ensemble_predictions(members: Sequence[CrossValidationPredictions], scheme: LabelScheme, parent: Path,
                         file_ending: str, *, show_progress: bool | None = None) -> CrossValidationPredictions:
    """The members' probabilities averaged per case (float32) and turned into label maps in the new folder
    ``parent/ensemble__<a>__<b>``, on the grid of the first member's label map."""
    name = "ensemble__" + "__".join(member.name for member in members)
    cases = set(members[0].labels)
    for member in members[1:]:
        if set(member.labels) != cases:
            missing = sorted(cases ^ set(member.labels))
            raise ValueError(f"{members[0].name} and {member.name} predict different cases (e.g. {missing[0]}); an "
                             "ensemble needs both for every case")
    folder = parent / name
    folder.mkdir(parents=True)
    labels = {}
    for case in progress(sorted(cases), desc=name, total=len(cases), enabled=show_progress):
        grid = read_label_map(members[0].labels[case])
        paths = [Path(member.probabilities.get(case, member.labels[case].with_name(f"{case}.npz")))
                 for member in members]
        segmentation = scheme.segmentation(mean_case_probabilities(paths, members[0].labels[case], grid.array.shape))
        image = MedicalImage(segmentation.astype(label_map_dtype(segmentation)), grid.spacing, grid.affine)
        labels[case] = write_any(image, folder / f"{case}{file_ending}")
    return CrossValidationPredictions(name, labels, members=tuple(m.name for m in members),
                                      sources={m.name: dict(m.sources) for m in members})


def _check_files(candidates: Sequence[CrossValidationPredictions], references: Mapping[str, Path],
                 ensembling: bool) -> None:
    """Every file the selection will read exists (checked before anything is written)."""
    for candidate in candidates:
        for case, path in sorted(candidate.labels.items()):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path}: cross-validation prediction of {candidate.name} not found")
            if case not in references or not Path(references[case]).is_file():
                raise FileNotFoundError(f"{references.get(case, case)}: reference label map of case {case} not "
                                        "found")
            if ensembling:
                npz = Path(candidate.probabilities.get(case, Path(path).with_name(f"{case}.npz")))
                if not npz.is_file():
                    raise FileNotFoundError(f"{npz}: probabilities of {candidate.name} not found (ensembling needs "
                                            "them; select without ensembles otherwise)")


def select_configuration(candidates: Sequence[CrossValidationPredictions], references: Mapping[str, Path],
                         scheme: LabelScheme, output: str | os.PathLike, *, file_ending: str,
                         allow_ensembling: bool = True, inference: Mapping[str, Any] | None = None,
                         how_to_predict: Callable[[dict[str, Any], Path], list[str]] | None = None,
                         show_progress: bool | None = None) -> dict[str, Any]:
    """Score the candidates and their pairwise ensembles, pick the best, decide its post-processing, and write all of
    it into the new folder ``output`` (module docstring). Returns the ``inference_information.json`` document;
    ``inference`` adds entries to it, and ``how_to_predict(document, output)`` the commands that predict with the
    winner. Bars on stderr count the cases of each pass."""
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output} exists; remove it or choose another output folder")
    if len({c.name for c in candidates}) != len(candidates) or not candidates:
        raise ValueError(f"candidates need distinct names, got {[c.name for c in candidates]}")
    ensembling = allow_ensembling and len(candidates) > 1
    _check_files(candidates, references, ensembling)
    with atomic_folder(output) as partial:
        information = _select_into(candidates, references, scheme, partial, output, file_ending, ensembling,
                                   show_progress)
        information.update(inference or {})
        if how_to_predict is not None:
            information["how_to_predict"] = how_to_predict(information, output)
        write_json(partial / "inference_information.json", information)
    return information


def _select_into(candidates: Sequence[CrossValidationPredictions], references: Mapping[str, Path],
                 scheme: LabelScheme, folder: Path, final: Path, file_ending: str, ensembling: bool,
                 show_progress: bool | None) -> dict[str, Any]:
    """The selection's files in ``folder`` (to become ``final``); the ``inference_information.json`` document."""
    pool = list(candidates)
    if ensembling:
        pool += [ensemble_predictions([first, second], scheme, folder, file_ending, show_progress=show_progress)
                 for i, first in enumerate(candidates) for second in candidates[i + 1:]]
    scores = {}
    for candidate in pool:
        scores[candidate.name] = score_predictions(candidate.labels, references, scheme, show_progress=show_progress,
                                                   description=f"score {candidate.name}")
        write_json(folder / candidate.name / "summary.json",
                   {"members": list(candidate.members), "sources": candidate.sources,
                    **scores[candidate.name].to_json()})
    results = {name: summary.foreground_mean for name, summary in scores.items()}
    defined = [value for value in results.values() if not math.isnan(value)]
    if not defined:
        raise ValueError("no candidate has a defined Dice (every reference and prediction is empty)")
    best = next(candidate for candidate in pool if results[candidate.name] == max(defined))
    decision = determine_postprocessing(best.labels, references, scheme, baseline=scores[best.name],
                                        show_progress=show_progress)
    write_json(folder / "postprocessing.json", decision.to_json(scheme, best.name))
    return {
        "format": INFERENCE_INFORMATION_FORMAT,
        "labels": scheme.to_json(),
        "ensembling_allowed": ensembling,
        "all_results": {name: json_number(value) for name, value in results.items()},
        "best_model_or_ensemble": {
            "name": best.name, "configurations": list(best.members),
            "result_on_crossval_pre_pp": json_number(decision.before.foreground_mean),
            "result_on_crossval_post_pp": json_number(decision.after.foreground_mean),
            "postprocessing_steps": decision.rule.to_json(),
            "postprocessing_file": str(final / "postprocessing.json"),
            "cases": sorted(best.labels),
        },
    }
