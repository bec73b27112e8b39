"""Preprocessing of cases for training and prediction: transpose, crop to nonzero, normalise, resample; everything read
from the plans.

Each training case is written as ``<case>.npy`` (``(C, *spatial)`` float32, memory-mappable),
``<case>_seg.npy`` (``(1, *spatial)`` int8, ``-1`` outside the nonzero region) and ``<case>.json``
(geometry needed to undo the preprocessing, and sampled foreground coordinates per class for
oversampling).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.core import progress
from gnnseg.core.runs import write_json
from gnnseg.seg.io import RawDataset
from gnnseg.seg.unet.cropping import crop_to_nonzero
from gnnseg.seg.unet.inference_preprocessing import as_volume, normalize, target_spacing_for
from gnnseg.seg.unet.plans import Plans, as_json
from gnnseg.seg.unet.resampling import resample_image, resample_labels

MAX_LOCATIONS_PER_CLASS = 10_000


def preprocess_case(data: np.ndarray, seg: np.ndarray | None, spacing, plans: Plans,
                    configuration: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``data (C, *spatial)``, ``seg (1, *spatial)`` or None, spacing in the data's axis order.

    Returns the preprocessed data, labels and the properties needed to map predictions back.
    """
    planned = plans.configuration(configuration)
    if data.shape[0] != len(plans.channel_names):
        raise ValueError(f"data has {data.shape[0]} channels, the plans expect {len(plans.channel_names)}")
    if not np.all(np.isfinite(data)):
        raise ValueError("image contains NaN or infinite values")
    if seg is not None and seg.shape[1:] != data.shape[1:]:
        raise ValueError(f"labels of shape {seg.shape[1:]} do not match the image's {data.shape[1:]}")
    seg = None if seg is None else as_volume(seg, spacing)[0]
    data, spacing = as_volume(data, spacing)
    original_shape = list(data.shape[1:])
    order = plans.transpose_forward
    data = data.transpose(0, *[a + 1 for a in order])
    seg = None if seg is None else seg.transpose(0, *[a + 1 for a in order])
    spacing_t = [float(spacing[a]) for a in order]

    data, seg, box = crop_to_nonzero(data, seg)
    shape_after_crop = list(data.shape[1:])
    data = normalize(data, seg[0] >= 0, plans)
    new_spacing = target_spacing_for(planned, spacing_t)
    data = resample_image(data, spacing_t, new_spacing, order=plans.resampling.image_order)
    seg = resample_labels(seg, spacing_t, new_spacing, new_shape=data.shape[1:],
                          order=plans.resampling.label_order).astype(np.int8)
    properties = {"original_shape": original_shape, "original_spacing": [float(s) for s in spacing],
                  "transposed_spacing": spacing_t, "bbox": [list(b) for b in box],
                  "shape_after_crop": shape_after_crop, "spacing": new_spacing,
                  "shape_after_resampling": list(data.shape[1:])}
    return data, seg, properties


def class_locations(seg: np.ndarray, labels, rng: np.random.Generator) -> dict[str, list[list[int]]]:
    """Up to 10,000 random voxel coordinates ``(z, y, x)`` per foreground label or region (any of its labels; nnU-Net
    oversamples regions of region-based datasets), for oversampling."""
    locations = {}
    for label in labels:
        if label == 0:
            continue
        coordinates = np.argwhere(np.isin(seg[0], label))
        if len(coordinates) > MAX_LOCATIONS_PER_CLASS:
            coordinates = coordinates[rng.choice(len(coordinates), MAX_LOCATIONS_PER_CLASS, replace=False)]
        locations[str(label)] = coordinates.tolist()
    return locations


def preprocess_dataset(dataset: RawDataset, plans: Plans, configuration: str,
                       output: str | os.PathLike, *, seed: int = 1234,
                       show_progress: bool | None = None) -> Path:
    """Preprocess every training case into ``output/<configuration>/``.

    Cases already done under the same plan are kept (an interrupted run continues). The folder records a
    signature of the plan it was made with; when the plan has changed since (re-planned with another memory
    budget, say), the stale cases are derived data and are redone rather than silently mixed with new ones.
    """
    signature = plan_signature(plans, configuration)
    folder = Path(output) / configuration
    folder.mkdir(parents=True, exist_ok=True)
    signature_file = folder / "plan_signature.txt"  # not .json: every .json here names a preprocessed case
    if signature_file.is_file() and signature_file.read_text().strip() != signature:
        for stale in folder.glob("*.json"):
            stale.unlink()  # the per-case .json marks completion; without it the case is redone
    signature_file.write_text(signature + "\n")
    rng = np.random.default_rng(seed)
    for case_id in progress(dataset.case_ids(), desc=f"preprocess {configuration}", enabled=show_progress):
        if (folder / f"{case_id}.json").is_file():
            continue
        case = dataset.load_case(case_id)
        data, seg, properties = preprocess_case(case.stacked(), case.label.array[None].astype(np.int16),
                                                case.spacing, plans, configuration)
        properties["class_locations"] = class_locations(seg, plans.label_model.scored, rng)
        np.save(folder / f"{case_id}.npy", data)
        np.save(folder / f"{case_id}_seg.npy", seg)
        write_json(folder / f"{case_id}.json", properties)  # written last: marks the case complete
    return folder


def plan_signature(plans: Plans, configuration: str) -> str:
    """A hash of the plans file's entries that preprocessing reads for ``configuration``."""
    relevant = {"configuration": as_json(plans.configuration(configuration)), "labels": plans.labels,
                "intensity": as_json(plans.foreground_intensity_properties_per_channel),
                "normalization": plans.normalization_schemes}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_preprocessed(folder: str | os.PathLike, case_id: str, mmap: bool = True):
    """``(data, seg, properties)`` of one preprocessed case (arrays memory-mapped by default)."""
    folder = Path(folder)
    mode = "r" if mmap else None
    return (np.load(folder / f"{case_id}.npy", mmap_mode=mode), np.load(folder / f"{case_id}_seg.npy", mmap_mode=mode),
            json.loads((folder / f"{case_id}.json").read_text()))
