"""The dataset fingerprint: what nnU-Net measures before it plans (Isensee et al. 2021, Fig. 2).

Per case: spacing, shape after cropping to the nonzero region, and how much the crop kept. Over the
dataset: intensity statistics of the foreground voxels per channel. nnU-Net v2 draws the same number of
foreground voxels from every case (``1e8 / num_cases``, with replacement), so every case weighs the same
however large its foreground; here each case's foreground voxels (at most that many, drawn without
replacement) carry weights summing to one per case, which gives the statistics nnU-Net's sampling
estimates, without its sampling noise.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.core import progress
from gnnseg.core.runs import write_json
from gnnseg.seg.io import RawDataset, axis_codes
from gnnseg.seg.unet.cropping import crop_to_nonzero
from gnnseg.seg.unet.inference_preprocessing import as_volume

FOREGROUND_SAMPLES_TOTAL = 10e7


@dataclass
class Fingerprint:
    """Everything the planner reads. Spacings and shapes are ``(z, y, x)`` (2D: ``(1, y, x)`` with spacing
    999 on the first axis, as nnU-Net stores 2D data as single-slice volumes)."""

    dataset_name: str
    channel_names: dict[str, str]
    labels: dict[str, Any]          # dataset.json's labels as written (regions as lists, "ignore")
    num_training: int
    spacings: list[list[float]]
    shapes_after_crop: list[list[int]]
    median_relative_size_after_cropping: float
    foreground_intensity_properties_per_channel: dict[str, dict[str, float]]
    is_2d: bool
    axis_codes: str | None = None   # where the training volumes' x, y, z axes point ("RAS"); None for 2D
    regions_class_order: list[int] | None = None   # region-based datasets: the label painted per region

    def save(self, path: str | os.PathLike) -> Path:
        return write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Fingerprint:
        return cls(**json.loads(Path(path).read_text()))


def weighted_percentile(values: np.ndarray, weights: np.ndarray, percent: float) -> float:
    """Linearly interpolated weighted percentile; with equal weights it equals ``np.percentile``."""
    order = np.argsort(values, kind="stable")
    ordered, share = values[order], weights[order] / weights.sum()
    if ordered.size == 1:
        return float(ordered[0])
    positions = (np.cumsum(share) - share) / (1.0 - share[-1])       # 0 for the smallest, 1 for the largest
    return float(np.interp(percent / 100.0, positions, ordered))


def intensity_statistics(values: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """Mean, std, median, extremes and 0.5 / 99.5 percentiles of ``values`` under ``weights``."""
    if values.size == 0:
        return {key: float("nan") for key in ("mean", "median", "std", "min", "max", "percentile_99_5",
                                              "percentile_00_5")}
    weights = np.ones_like(values) if weights is None else weights
    mean = float(np.average(values, weights=weights))
    return {"mean": mean, "median": weighted_percentile(values, weights, 50.0),
            "std": float(np.sqrt(np.average((values - mean) ** 2, weights=weights))),
            "min": float(values.min()), "max": float(values.max()),
            "percentile_99_5": weighted_percentile(values, weights, 99.5),
            "percentile_00_5": weighted_percentile(values, weights, 0.5)}


def extract_fingerprint(dataset: RawDataset, *, seed: int = 1234, show_progress: bool | None = None) -> Fingerprint:
    """Measure ``dataset`` (every training case is read and checked once)."""
    case_ids = dataset.case_ids()
    if not case_ids:
        raise ValueError(f"{dataset.root} has no training cases in imagesTr")
    rng = np.random.default_rng(seed)
    per_case_samples = int(FOREGROUND_SAMPLES_TOTAL // len(case_ids))
    spacings, shapes, relative_sizes = [], [], []
    samples: list[list[np.ndarray]] = [[] for _ in range(dataset.num_channels)]
    is_2d = None
    orientations: list[str] = []
    for case_id in progress(case_ids, desc="fingerprint", enabled=show_progress):
        case = dataset.load_case(case_id)
        if len(case.spacing) == 3 and case.channels[0].affine is not None:
            orientations.append("".join(axis_codes(case.channels[0])))
        data, spacing = as_volume(case.stacked(), case.spacing)
        seg, _ = as_volume(case.label.array[None].astype(np.int16), case.spacing)
        is_2d = len(case.spacing) == 2 if is_2d is None else is_2d
        cropped, cropped_seg, _ = crop_to_nonzero(data, seg)
        spacings.append([float(s) for s in spacing])
        shapes.append([int(s) for s in cropped.shape[1:]])
        relative_sizes.append(np.prod(cropped.shape[1:]) / np.prod(data.shape[1:]))
        foreground = cropped_seg[0] > 0
        for channel in range(dataset.num_channels):
            values = cropped[channel][foreground]
            if values.size > per_case_samples:
                values = rng.choice(values, per_case_samples, replace=False)
            samples[channel].append(values.astype(np.float64))
    properties = {}
    for channel in range(dataset.num_channels):
        weights = np.concatenate([np.full(v.size, 1.0 / v.size) for v in samples[channel] if v.size])
        values = np.concatenate([v for v in samples[channel] if v.size]) if weights.size else np.empty(0)
        properties[str(channel)] = intensity_statistics(values, weights if weights.size else None)
    return Fingerprint(dataset_name=dataset.name, channel_names=dataset.channel_names, labels=dataset.labels,
                       num_training=len(case_ids), spacings=spacings, shapes_after_crop=shapes,
                       median_relative_size_after_cropping=float(np.median(relative_sizes)),
                       foreground_intensity_properties_per_channel=properties, is_2d=bool(is_2d),
                       axis_codes=Counter(orientations).most_common(1)[0][0] if orientations else None,
                       regions_class_order=None if dataset.regions_class_order is None else
                       list(dataset.regions_class_order))
