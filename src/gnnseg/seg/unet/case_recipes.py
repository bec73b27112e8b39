"""How a case enters a U-Net export and how its logits leave it, by the plans the model was trained with; no torch.

A U-Net export (:mod:`gnnseg.seg.unet.onnx_export`) carries either gnnseg's plans or an nnU-Net v2 model's own
``plans.json`` and ``dataset.json``; the two differ before and after the network, not in the sliding window:

- :class:`GnnsegCases` (gnnseg's plans): :mod:`~gnnseg.seg.unet.inference_preprocessing`; windows padded after the
  image, gnnseg's analytic Gaussian; softmax (sigmoid per region for region-based plans), probabilities resampled
  back to the cropped box (linear), argmax (regions: painted in ``regions_class_order``)
  (:func:`gnnseg.seg.unet.predict.predict_case`'s steps).
- :class:`NnUNetCases` (nnU-Net's plans): :func:`~gnnseg.seg.unet.nnunet_preprocessing.preprocess_nnunet_case`;
  windows padded on both sides, nnU-Net's Gaussian (a filtered impulse, scaled to 10 and stored in float16), the
  window sums in float16 as nnU-Net's predictor keeps them; logits resampled back by the plans'
  ``resampling_fn_probabilities``, then argmax (softmax labels) or sigmoid > 0.5 painted in ``regions_class_order``
  (regions) (nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape``). As
  :mod:`gnnseg.seg.unet.nnunet_predict` does with PyTorch.

Either way the result is pasted into the uncropped volume (background outside the nonzero box) and transposed back.
When only labels are wanted, the gnnseg rule resamples one class at a time into a running maximum, so that no
full-size ``(K, *spatial)`` array is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy.ndimage import gaussian_filter1d

from gnnseg.seg.unet.inference_preprocessing import CaseGeometry, as_volume, preprocess_for_prediction
from gnnseg.seg.unet.nnunet_plans import NnUNetConfiguration, NnUNetLabels, NnUNetPlans
from gnnseg.seg.unet.nnunet_preprocessing import preprocess_nnunet_case
from gnnseg.seg.unet.nnunet_resampling import resample_to_shape
from gnnseg.seg.unet.plans import Plans
from gnnseg.seg.unet.resampling import resample_image
from gnnseg.seg.unet.sliding_window import gaussian_importance

PLANS_FORMATS = ("gnnseg", "nnunet")


class CaseRecipe(Protocol):
    """What the ONNX predictor asks of a plans format."""

    channels: int
    num_outputs: int
    patch_size: tuple[int, ...]
    file_ending: str
    files_per_case: int | None       # gnnseg counts one file per channel; nnU-Net reads colour images as several
    label_values: list[int]
    axis_codes: str | None           # the axis directions the network expects volumes in (None: as stored)
    centered_padding: bool
    importance: np.ndarray           # the window weights, the patch's shape, float32
    accumulation_dtype: type         # the window sums' dtype: the model's own predictor's

    def preprocess(self, data: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, Any]:
        """``data (C, *spatial)`` -> the network's input ``(C, z, y, x)`` float32 and what undoes it."""

    def outputs(self, logits: np.ndarray, geometry: Any, with_probabilities: bool
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits ``(K, z, y, x)`` on the network's grid (overwritten) -> labels ``(*spatial)`` int16 on the case's
        grid and, ``with_probabilities``, probabilities ``(K, *spatial)`` float32 there."""


def _softmax_in_place(logits: np.ndarray) -> np.ndarray:
    np.subtract(logits, logits.max(axis=0, keepdims=True), out=logits)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=0, keepdims=True)
    return logits


def _back_to_input_axes(array: np.ndarray, transpose_backward: Sequence[int], leading: int,
                        was_2d: bool) -> np.ndarray:
    """Undo the plans' transpose on the spatial axes after ``leading`` ones, and drop a 2D image's slice axis."""
    array = array.transpose(*range(leading), *[axis + leading for axis in transpose_backward])
    return array[(slice(None),) * leading + (0,)] if was_2d else array


@dataclass
class GnnsegCases:
    """Cases by gnnseg's plans (``plans.json`` of format ``gnnseg.plans/1``) and one of their configurations."""

    plans: Plans
    configuration: str
    file_ending: str
    centered_padding = False
    accumulation_dtype = np.float32

    def __post_init__(self) -> None:
        planned = self.plans.configuration(self.configuration)
        self.channels = len(self.plans.channel_names)
        self.files_per_case = self.channels
        self.label_model = self.plans.label_model
        self.num_outputs = self.label_model.num_outputs
        self.patch_size = tuple(int(p) for p in planned.patch_size)
        self.label_values = self.label_model.all_labels
        self.axis_codes = self.plans.axis_codes
        self.importance = gaussian_importance(self.patch_size)

    def preprocess(self, data: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, CaseGeometry]:
        return preprocess_for_prediction(data, spacing, self.plans, self.configuration)

    def outputs(self, logits: np.ndarray, geometry: CaseGeometry, with_probabilities: bool
                ) -> tuple[np.ndarray, np.ndarray | None]:
        if self.label_model.has_regions:
            return self._region_outputs(logits, geometry, with_probabilities)
        probabilities = _softmax_in_place(logits)
        transposed_shape = [geometry.original_shape[a] for a in self.plans.transpose_forward]
        box = tuple(slice(a, b) for a, b in geometry.box)
        backward = self.plans.transpose_backward
        if with_probabilities:
            full = np.zeros((self.num_outputs, *transposed_shape), np.float32)
            full[0] = 1.0                                   # outside the nonzero box: background
            full[(slice(None), *box)] = self._to_crop(probabilities, geometry)
            full = _back_to_input_axes(full, backward, 1, geometry.was_2d)
            return full.argmax(0).astype(np.int16), full
        best = self._to_crop(probabilities[:1], geometry)[0]
        winners = np.zeros(best.shape, np.int16)
        for label in range(1, self.num_outputs):            # the first maximum wins, as argmax
            candidate = self._to_crop(probabilities[label:label + 1], geometry)[0]
            better = candidate > best
            winners[better] = label
            np.maximum(best, candidate, out=best)
        labels = np.zeros(transposed_shape, np.int16)
        labels[box] = winners
        return _back_to_input_axes(labels, backward, 0, geometry.was_2d), None

    def _region_outputs(self, logits: np.ndarray, geometry: CaseGeometry, with_probabilities: bool
                        ) -> tuple[np.ndarray, np.ndarray | None]:
        """Sigmoid per region, resampled back to the cropped box, each region above 0.5 painted in
        ``regions_class_order``; zero probability (and background) outside the box."""
        probabilities = 1 / (1 + np.exp(-logits))
        transposed_shape = [geometry.original_shape[a] for a in self.plans.transpose_forward]
        full = np.zeros((self.num_outputs, *transposed_shape), np.float32)
        full[(slice(None), *(slice(a, b) for a, b in geometry.box))] = self._to_crop(probabilities, geometry)
        full = _back_to_input_axes(full, self.plans.transpose_backward, 1, geometry.was_2d)
        labels = self.label_model.paint_regions(full, np.zeros(full.shape[1:], np.int16))
        return labels, full if with_probabilities else None

    @staticmethod
    def _to_crop(probabilities: np.ndarray, geometry: CaseGeometry) -> np.ndarray:
        return resample_image(probabilities, geometry.spacing, geometry.transposed_spacing,
                              new_shape=geometry.shape_after_crop, order=1)


def nnunet_importance(patch_size: Sequence[int], sigma_scale: float = 1 / 8, value_scaling: float = 10.0
                      ) -> np.ndarray:
    """nnU-Net v2's window weights: a unit impulse at the patch centre (``size // 2``) filtered by a Gaussian of
    sigma ``size * sigma_scale`` (truncated at 4 sigma), scaled to a maximum of ``value_scaling``, stored in float16
    as its predictor keeps it, zeros raised to the smallest nonzero weight; returned as float32, equal bit for bit to
    ``nnunetv2``'s ``compute_gaussian`` (tested).

    ``scipy.ndimage.gaussian_filter`` filters the impulse one axis after another, and each of its sums then holds a
    single nonzero term, so the result is the outer product of the axes' filtered 1D impulses, multiplied in the
    same order: the same float64 values, without filtering the whole patch (0.1 s for a 512 x 512 patch)."""
    weights = np.ones(())
    for size in patch_size:
        impulse = np.zeros(size)
        impulse[size // 2] = 1
        weights = np.multiply.outer(weights, gaussian_filter1d(impulse, size * sigma_scale, 0, mode="constant", cval=0))
    # to float16 through float32, as torch converts the float64 map for nnU-Net: rounded directly, 24 of a 512 x 512
    # patch's weights and 12 of a 32 x 112 x 128 one's would end one float16 step away from nnU-Net's
    weights = (weights / (weights.max() / value_scaling)).astype(np.float32).astype(np.float16)
    weights[weights == 0] = weights[weights != 0].min()
    return weights.astype(np.float32)


@dataclass
class NnUNetGeometry:
    """nnU-Net's properties of a preprocessed case (transposed axes), and whether it came as a 2D image."""

    properties: dict[str, Any]
    was_2d: bool


@dataclass
class NnUNetCases:
    """Cases by an nnU-Net v2 model's ``plans.json`` and ``dataset.json`` and one of its configurations.

    ``half_precision`` (the default) keeps the window sums, the folds' mean and the logits resampled back in float16,
    as nnU-Net v2's predictor does (and :class:`gnnseg.seg.unet.nnunet_predict.NnUNetPredictor` by default): the
    Gaussian's tails fall below float16's normal range, so at image borders this moves probabilities by more than
    rounding, and only then are the labels nnU-Net's. ``False`` keeps them in float32 (better numbers)."""

    plans: NnUNetPlans
    labels: NnUNetLabels
    configuration: NnUNetConfiguration
    half_precision: bool = True
    centered_padding = True

    def __post_init__(self) -> None:
        self.accumulation_dtype = np.float16 if self.half_precision else np.float32
        self.channels = self.labels.num_channels
        self.files_per_case = None
        self.num_outputs = self.labels.num_outputs
        self.patch_size = tuple(int(p) for p in self.configuration.patch_size)
        self.file_ending = self.labels.file_ending
        self.label_values = self.labels.all_labels
        self.axis_codes = None       # nnU-Net's readers that gnnseg accepts keep the stored axis order
        self.importance = nnunet_importance(self.patch_size)

    def preprocess(self, data: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, NnUNetGeometry]:
        if data.ndim != len(spacing) + 1:
            raise ValueError(f"data of shape {data.shape} does not match a spacing of {len(spacing)} axes")
        if not np.all(np.isfinite(data)):
            raise ValueError("image contains NaN or infinite values")
        volume, volume_spacing = as_volume(data, spacing)
        preprocessed, properties = preprocess_nnunet_case(volume, volume_spacing, self.plans, self.configuration)
        return preprocessed, NnUNetGeometry(properties, was_2d=len(spacing) == 2)

    def outputs(self, logits: np.ndarray, geometry: NnUNetGeometry, with_probabilities: bool
                ) -> tuple[np.ndarray, np.ndarray | None]:
        properties = geometry.properties
        spacing_t = [properties["spacing"][a] for a in self.plans.transpose_forward]
        cropped_shape = properties["shape_after_cropping_and_before_resampling"]
        planned = self.configuration.spacing
        current = list(planned) if len(planned) == len(cropped_shape) else [spacing_t[0], *planned]
        resampling = self.configuration.resampling_probabilities
        logits = resample_to_shape(logits, cropped_shape, current, spacing_t, resampling.order, resampling.order_z,
                                   resampling.force_separate_z)
        box = tuple(slice(a, b) for a, b in properties["bbox_used_for_cropping"])
        backward = self.plans.transpose_backward
        labels = np.zeros(properties["shape_before_cropping"], np.int16)
        probabilities = None
        if self.labels.has_regions:
            probabilities = 1 / (1 + np.exp(-logits.astype(np.float32)))
            labels[box] = self.labels.model.paint_regions(probabilities, np.zeros(cropped_shape, np.int16))
        else:
            labels[box] = logits.argmax(0)
            if with_probabilities:
                probabilities = _softmax_in_place(logits.astype(np.float32))
        labels = _back_to_input_axes(labels, backward, 0, geometry.was_2d)
        if not with_probabilities:
            return labels, None
        full = np.zeros((self.num_outputs, *properties["shape_before_cropping"]), np.float32)
        if not self.labels.has_regions:
            full[0] = 1.0                                   # outside the nonzero box: background
        full[(slice(None), *box)] = probabilities
        return labels, _back_to_input_axes(full, backward, 1, geometry.was_2d)


def cases_for(folder: Path, settings: dict[str, Any], plans_file: str, dataset_file: str, *,
              half_precision: bool | None = None) -> CaseRecipe:
    """The recipe of an export folder, by its ``inference.json`` ``settings``; ``half_precision`` (nnU-Net models
    only; default: as nnU-Net) as :class:`NnUNetCases` takes it."""
    plans_format = settings["plans_format"]
    if plans_format == "gnnseg":
        if half_precision:
            raise ValueError("half-precision window sums are nnU-Net's; a gnnseg model sums in float32")
        return GnnsegCases(Plans.load(folder / plans_file), settings["configuration"], settings["file_ending"])
    if plans_format == "nnunet":
        plans = NnUNetPlans.load(folder / plans_file)
        return NnUNetCases(plans, NnUNetLabels.load(folder / dataset_file),
                           plans.configuration(settings["configuration"]),
                           half_precision=True if half_precision is None else half_precision)
    raise ValueError(f"{folder}: plans_format {plans_format!r} is not one of {list(PLANS_FORMATS)}")
