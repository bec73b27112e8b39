"""Post-processing of predicted label maps: keep only the largest connected component of chosen labels.

nnU-Net's one post-processing step (Isensee et al. 2021, "non-largest component suppression"): every region of a
label that is not its largest 3D (or 2D) connected component becomes background. nnU-Net v2 decides per label on
its cross-validation predictions whether this helps (``nnunetv2.postprocessing.remove_connected_components``:
applied where a label's Dice improves). An organ that is one connected structure (liver, spleen, a kidney) is the
typical case, and a run trained on a single volume has no validation cases to decide on, so here the labels are
chosen by the user (``gnnseg seg predict --keep-largest``).

Where cross-validation predictions exist, :mod:`gnnseg.seg.unet.model_selection` decides as nnU-Net does and writes
the decision as a :class:`PostprocessingRule` (``postprocessing.json``), which ``gnnseg seg predict
--postprocessing`` applies to each case before it is written, with nnU-Net's own component rule
(:func:`keep_largest_foreground_component`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


LabelOrRegion = int | tuple[int, ...]
"""What Dice is scored on and what a post-processing step reduces: a label, or a region (the union of labels)."""

POSTPROCESSING_FORMAT = "gnnseg.postprocessing/1"


def region_mask(labels: np.ndarray, label_or_region: LabelOrRegion) -> np.ndarray:
    """Where ``labels`` holds the label, or any label of the region."""
    if isinstance(label_or_region, tuple):
        return np.isin(labels, label_or_region)
    return labels == label_or_region


def keep_largest_foreground_component(labels: np.ndarray, members: Sequence[LabelOrRegion]) -> np.ndarray:
    """A copy of ``labels`` where the union of ``members`` (labels or regions) keeps only its largest connected
    component and the rest of it becomes background (0): the rule nnU-Net v2's cross-validation decides on.

    Unlike :func:`keep_largest_component` (face connectivity, one label at a time, one winner), this follows
    nnU-Net's ``remove_all_but_largest_component``: components connect through faces, edges and corners (full
    connectivity), several labels reduced together are one mask (so an organ called two names stays whole), and
    components that tie for the largest size are all kept."""
    mask = np.zeros(labels.shape, dtype=bool)
    for member in members:
        mask |= region_mask(labels, member)
    components, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(labels.ndim, labels.ndim))
    if count <= 1:
        return np.array(labels, copy=True)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    kept = np.flatnonzero(sizes == sizes.max())
    result = np.array(labels, copy=True)
    result[mask & ~np.isin(components, kept)] = 0
    return result


@dataclass(frozen=True)
class PostprocessingRule:
    """Steps applied in order; each keeps the largest connected component of the union of its labels or regions
    (:func:`keep_largest_foreground_component`). nnU-Net's rule has at most one step over all foreground labels
    first, then one per label or region. No steps: the predictions stay as they are."""

    steps: tuple[tuple[LabelOrRegion, ...], ...] = ()

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """The label map after every step (a new array; ``labels`` is not modified)."""
        result = labels
        for members in self.steps:
            result = keep_largest_foreground_component(result, members)
        return result if result is not labels else np.array(labels, copy=True)

    def check_labels(self, foreground: Iterable[int], model: str = "the model") -> None:
        """Refuse a rule naming a label that ``model``'s predictions never hold (its ``foreground`` labels)."""
        named = {label for step in self.steps for member in step
                 for label in (member if isinstance(member, tuple) else (member,))}
        unknown = sorted(named - set(foreground))
        if unknown:
            raise ValueError(f"the post-processing names labels {unknown} that {model} does not predict (its "
                             f"foreground labels: {sorted(set(foreground))}); was it chosen for another model?")

    def then(self, members: Sequence[LabelOrRegion]) -> PostprocessingRule:
        """This rule with one more step."""
        return PostprocessingRule((*self.steps, tuple(members)))

    def to_json(self) -> list[list[int | list[int]]]:
        """The steps as JSON lists (a region as the list of its labels)."""
        return [[list(member) if isinstance(member, tuple) else int(member) for member in step]
                for step in self.steps]

    @classmethod
    def from_json(cls, steps: Any, source: str = "postprocessing") -> PostprocessingRule:
        """The rule from its JSON steps; anything but lists of labels (integers >= 1) or regions (lists of them) is
        refused, naming ``source``."""
        def member(value: Any) -> LabelOrRegion:
            if isinstance(value, list) and value and all(_is_label(v) for v in value):
                return tuple(int(v) for v in value)
            if _is_label(value):
                return int(value)
            raise ValueError(f"{source}: a post-processing step holds labels (integers >= 1) or regions (lists of "
                             f"them), got {value!r}")

        if not isinstance(steps, list) or not all(isinstance(step, list) and step for step in steps):
            raise ValueError(f"{source}: 'steps' must be a list of non-empty lists of labels or regions, "
                             f"got {steps!r}")
        return cls(tuple(tuple(member(value) for value in step) for step in steps))

    @classmethod
    def load(cls, path: str | os.PathLike) -> PostprocessingRule:
        """The rule in a ``postprocessing.json`` written by model selection
        (:mod:`gnnseg.seg.unet.model_selection`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: post-processing file not found")
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not a JSON file ({error})") from None
        if not isinstance(document, dict) or document.get("format") != POSTPROCESSING_FORMAT:
            found = document.get("format") if isinstance(document, dict) else type(document).__name__
            raise ValueError(f"{path}: not a gnnseg post-processing file (format {found!r}, expected "
                             f"{POSTPROCESSING_FORMAT!r}; made by `gnnseg seg find-best-configuration`)")
        return cls.from_json(document.get("steps"), source=str(path))


def _is_label(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
