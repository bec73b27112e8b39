"""The simulated user of the CVPR 2025 interactive segmentation challenge, and the scores of its loop.

The challenge ("Foundation Models for Interactive 3D Biomedical Image Segmentation"; evaluation code
``CVPR25_iter_eval.py`` in JunMa11/CVPR-MedSegFMCompetition) gives the model a box, then up to five correction
clicks, and scores every step. :func:`next_click` places a click as that code does:

- the error region is every pixel where the mask and the truth disagree (missed and spilled together);
- its largest connected component counts (full connectivity: 8 neighbours in 2D, 26 in 3D; a tie in size goes to
  the component labelled first);
- the click goes where that component is deepest: the maximum of its Euclidean distance transform in pixels, the
  image's edge counting as a boundary; ties are broken by NumPy's legacy generator seeded with 42 before each draw,
  as the challenge reseeds;
- it is positive where the truth holds the object and negative where it does not; with no error, no click.

:func:`click_scores` runs the loop on one object (the box stays a prompt at every step, and the previous answer is
fed back) and :func:`area_under_steps` is the challenge's AUC: the trapezoid over the click steps 1..5 only,
without the box step and without normalisation (so five clicks give 0..4). Where this differs from the challenge:
objects are 2D images or slices scored one object at a time rather than 3D volumes with all classes at once; NSD's
tolerance is in pixels (as gnnseg's box benchmarks score 2D objects); and the model's own logits, not the hard
mask, are fed back (the challenge lets a model use its previous mask or not).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from gnnseg.core.progress import progress
from gnnseg.seg.metrics import dice, normalized_surface_dice
from gnnseg.seg.sam.inference.base import Predictor
from gnnseg.seg.sam.inference.box_prompted import LabelledObject, grown_box
from gnnseg.seg.sam.inference.session import InteractiveSession

CLICKS = 5
"""Correction clicks after the box, as the challenge gives."""

NSD_FLOOR_DSC = 0.2
"""The challenge computes NSD only for a case whose DSC is above this; below, NSD counts as 0."""


def next_click(mask: np.ndarray, truth: np.ndarray) -> tuple[tuple[int, ...], int] | None:
    """Where the simulated user clicks next on a 2D or 3D ``mask`` against ``truth``: the click's index (``(y, x)``
    or ``(z, y, x)``) and its label (1 foreground, 0 background); None when the mask is right everywhere."""
    mask, truth = np.asarray(mask, dtype=bool), np.asarray(truth, dtype=bool)
    if mask.shape != truth.shape:
        raise ValueError(f"mask shape {mask.shape} != truth shape {truth.shape}")
    error = mask != truth
    if not error.any():
        return None
    components, _ = ndimage.label(error, structure=np.ones((3,) * error.ndim, dtype=bool))
    sizes = np.bincount(components.ravel())[1:]
    region = components == int(np.argmax(sizes)) + 1
    depth = ndimage.distance_transform_edt(np.pad(region, 1))[(slice(1, -1),) * region.ndim]
    deepest = np.argwhere(depth == depth.max())
    chosen = deepest[np.random.RandomState(42).choice(len(deepest))] if len(deepest) > 1 else deepest[0]
    index = tuple(int(i) for i in chosen)
    return index, int(truth[index])


def area_under_steps(values: Sequence[float]) -> float:
    """The challenge's AUC of per-step scores: the trapezoid over the click steps (every value after the first,
    which is the box step), spacing 1, not normalised."""
    clicks = np.asarray(values[1:], dtype=np.float64)
    if len(clicks) < 2:
        raise ValueError(f"the AUC needs at least two click steps, got {len(clicks)}")
    return float(np.sum((clicks[1:] + clicks[:-1]) / 2))


@dataclass(frozen=True)
class ClickScores:
    """One object's loop: DSC and NSD after the box (step 0) and after each click, and the seconds each step took."""

    dsc: list[float]
    nsd: list[float]
    seconds: list[float]
    clicks: list[tuple[int, int, int]]   # (x, y, label) of each click given

    @property
    def dsc_auc(self) -> float:
        return area_under_steps(self.dsc)

    @property
    def nsd_auc(self) -> float:
        return area_under_steps(self.nsd)


def click_scores(predictor: Predictor, image: np.ndarray, truth: np.ndarray, box: np.ndarray, *,
                 clicks: int = CLICKS, tolerance: float = 2.0) -> ClickScores:
    """The simulated user's loop on one 2D object: the box, then up to ``clicks`` clicks from :func:`next_click`,
    each answered from the box, every click so far and the previous logits. A step without an error to correct
    keeps the mask (the prompts would not change). NSD uses ``tolerance`` pixels, and is 0 where DSC is at most
    :data:`NSD_FLOOR_DSC`, as the challenge scores."""
    truth = np.asarray(truth, dtype=bool)
    session = InteractiveSession(predictor, image)
    started = time.perf_counter()
    object_id = session.add(box=box)
    seconds = [time.perf_counter() - started]
    masks, given = [session.state(object_id).mask], []
    for _ in range(clicks):
        click = next_click(masks[-1], truth)
        started = time.perf_counter()
        if click is not None:
            (y, x), label = click
            given.append((x, y, label))
            masks.append(session.click(object_id, x, y, positive=bool(label)).mask)
        else:
            masks.append(masks[-1])
        seconds.append(time.perf_counter() - started)
    dsc = [dice(mask, truth) for mask in masks]
    nsd = [normalized_surface_dice(mask, truth, tolerance) if score > NSD_FLOOR_DSC else 0.0
           for mask, score in zip(masks, dsc)]
    return ClickScores(dsc, nsd, seconds, given)


def loop_summary(scores: Sequence[ClickScores]) -> dict[str, Any]:
    """The challenge's figures over many objects' loops: mean DSC and NSD after each step (0: the box), the mean
    DSC_AUC and NSD_AUC, the mean final DSC and NSD, and the median and 95th percentile of a click's seconds."""
    if not scores:
        raise ValueError("no loops to summarize")
    dsc, nsd = np.array([s.dsc for s in scores]), np.array([s.nsd for s in scores])
    click_seconds = np.concatenate([s.seconds[1:] for s in scores])
    return {"clicks": dsc.shape[1] - 1, "objects": len(scores),
            "dsc_per_step": dsc.mean(axis=0).tolist(), "nsd_per_step": nsd.mean(axis=0).tolist(),
            "dsc_auc": float(np.mean([s.dsc_auc for s in scores])),
            "nsd_auc": float(np.mean([s.nsd_auc for s in scores])),
            "dsc_final": float(dsc[:, -1].mean()), "nsd_final": float(nsd[:, -1].mean()),
            "click_seconds_p50": float(np.percentile(click_seconds, 50)),
            "click_seconds_p95": float(np.percentile(click_seconds, 95))}


def objects_summary(predictor: Predictor, objects: Sequence[LabelledObject], *, margin: int, clicks: int = CLICKS,
                    tolerance: float = 2.0, desc: str = "clicks") -> dict[str, Any]:
    """:func:`loop_summary` of the loop on every object, each first prompted with its tight box grown by
    ``margin`` pixels (the box benchmarks' prompt)."""
    return loop_summary([click_scores(predictor, o.image, o.mask, grown_box(o, margin), clicks=clicks,
                                      tolerance=tolerance) for o in progress(objects, desc=desc)])
