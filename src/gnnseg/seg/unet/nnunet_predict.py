"""Prediction with a model trained by nnU-Net v2, as ``nnUNetPredictor`` makes it by default.

Per case: nnU-Net's preprocessing (:mod:`gnnseg.seg.unet.nnunet_preprocessing`); per fold, Gaussian-weighted sliding
windows (gnnseg's :func:`~gnnseg.seg.unet.predict.sliding_window_logits` with nnU-Net's importance map,
``case_recipes.nnunet_importance``, and its centred padding of images smaller than the patch), a 2D configuration
slice by slice, test-time mirroring along the axes the checkpoint allows (every combination: 4 views in 2D, 8 in 3D;
off with ``use_mirroring=False``); the folds' logits averaged (nnU-Net v2 averages logits, not probabilities); then
export as ``export_prediction.py`` does it (:class:`~gnnseg.seg.unet.case_recipes.NnUNetCases`, shared with the
torch-free ONNX predictor): logits resampled back to the cropped shape with the plans' probability resampling,
softmax (sigmoid for region-based labels), the segmentation put into the uncropped box (background outside;
probabilities there are background 1) and transposed back.

On a CPU in float32 the folds load into a copy of the network whose instance norms are computed as group norms
(:mod:`gnnseg.seg.unet.inference_network`): the same arithmetic in another summation order, in half the time.

Precision follows nnU-Net too: it sums the weighted window logits, the folds and their mean in float16 (to save GPU
memory) and resamples them into a float16 array; only the softmax is float32. This matters more than rounding: the
Gaussian's tails fall below float16's normal range, so where only a window's border covers a voxel (image corners,
images barely larger than the patch) nnU-Net's logits are coarsely quantised. ``half_precision=False`` sums in float32
instead (better numbers, no longer nnU-Net's). Outputs never replace a file: everything is checked before the first
case, and each file is written to a temporary name and renamed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gnnseg.core import progress
from gnnseg.core.atomic import atomic_path
from gnnseg.core.devices import resolve_device
from gnnseg.core.runs import write_json
from gnnseg.seg.io import ImageFormatError, MedicalImage, read_any
from gnnseg.seg.io.any_format import write_any
from gnnseg.seg.unet.case_inputs import fresh_outputs, inputs_by_case
from gnnseg.seg.unet.case_recipes import NnUNetCases
from gnnseg.seg.unet.inference_network import prediction_network
from gnnseg.seg.unet.inference_preprocessing import DUMMY_SLICE_SPACING
from gnnseg.seg.unet.nnunet_models import DEFAULT_CHECKPOINT, NnUNetModel, open_nnunet_model
from gnnseg.seg.unet.postprocess import PostprocessingRule
from gnnseg.seg.unet.precision import in_precision
from gnnseg.seg.unet.predict import sliding_window_logits
from gnnseg.seg.unet.prediction_ensemble import LABELS_FILE, write_prediction_labels


@dataclass(frozen=True)
class NnUNetPrediction:
    """One case's result in nnU-Net's reader axis order ``(z, y, x)`` (a 2D image as ``(1, y, x)``)."""

    segmentation: np.ndarray             # uint8 (uint16 with 255 or more foreground labels)
    probabilities: np.ndarray | None     # (outputs, z, y, x) float32, when asked for
    properties: dict[str, Any]


class NnUNetPredictor:
    """Predicts cases with an opened :class:`~gnnseg.seg.unet.nnunet_models.NnUNetModel` (all its folds)."""

    def __init__(self, model: NnUNetModel, *, step_size: float = 0.5, use_mirroring: bool = True,
                 device: str | torch.device = "cpu", batch_size: int | None = None, half_precision: bool = True,
                 precision: str = "float32"):
        if not 0 < step_size <= 1:
            raise ValueError(f"step size must be in (0, 1], got {step_size}")
        self.model = model
        self.step_size = step_size
        self.mirror_axes = tuple(model.mirror_axes or ()) if use_mirroring else ()
        self.device = torch.device(device)
        # the network the folds load into: on a CPU in float32 a copy with faster instance norms (the same
        # parameters, the same numbers up to float32 summation order); in_precision refuses an unknown precision,
        # before any weight moves
        self.fold_network = prediction_network(model.network, precision, self.device)
        self.network = in_precision(self.fold_network, precision, self.device)
        self.batch_size = batch_size
        self.dtype = torch.float16 if half_precision else torch.float32
        self.cases = NnUNetCases(model.plans, model.labels, model.configuration, half_precision=half_precision)
        self.importance = torch.from_numpy(self.cases.importance)
        # every fold's weights on the device once (on the CPU the same tensors: nothing copied; on a GPU all folds
        # stay there, 5 x 30-120 MB for nnU-Net's networks, so that switching folds per case copies nothing)
        self.fold_weights = [{key: value.to(self.device) for key, value in weights.items()}
                             for weights in model.fold_weights]

    def logits(self, data: np.ndarray) -> Tensor:
        """Preprocessed ``data (C, z, y, x)`` -> the folds' mean logits ``(outputs, z, y, x)`` on the CPU (float16 with
        ``half_precision``, as nnU-Net computes them)."""
        image = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        patch = self.model.configuration.patch_size
        options = {"step": self.step_size, "mirror_axes": self.mirror_axes, "batch_size": self.batch_size,
                   "importance": self.importance, "centered_padding": True, "accumulation_dtype": self.dtype}
        outputs = self.model.labels.num_outputs
        network = self.network
        total = None
        for weights in self.fold_weights:
            self.fold_network.load_state_dict(weights, assign=True)
            if len(patch) == 3:
                fold = sliding_window_logits(network, image, patch, outputs, **options)
            else:
                fold = torch.stack([sliding_window_logits(network, image[:, z], patch, outputs, **options)
                                    for z in range(image.shape[1])], dim=1)
            total = fold if total is None else total + fold
        self.fold_network.load_state_dict(self.fold_weights[0], assign=True)   # the first fold's, as documented
        return total / len(self.fold_weights)

    def predict(self, data: np.ndarray, spacing: Sequence[float], *,
                return_probabilities: bool = False) -> NnUNetPrediction:
        """One case ``data (C, z, y, x)`` with ``spacing (sz, sy, sx)`` as nnU-Net's readers give them."""
        if data.ndim != 4 or len(spacing) != 3:
            raise ValueError(f"expected data (C, z, y, x) and 3 spacings, got {data.shape} and {tuple(spacing)}")
        if data.shape[0] != self.model.labels.num_channels:
            raise ValueError(f"the case has {data.shape[0]} channels, the model takes "
                             f"{self.model.labels.num_channels} ({self.model.labels.channel_names})")
        preprocessed, geometry = self.cases.preprocess(data, spacing)
        with torch.inference_mode():
            logits = self.logits(preprocessed)
        labels, probabilities = self.cases.outputs(logits.numpy(), geometry, return_probabilities)
        foreground = len([v for v in self.model.labels.all_labels if v != 0])
        segmentation = labels.astype(np.uint8 if foreground < 255 else np.uint16)
        return NnUNetPrediction(np.ascontiguousarray(segmentation), probabilities, geometry.properties)


def read_nnunet_case(paths: Sequence[Path]) -> tuple[np.ndarray, tuple[float, float, float], MedicalImage]:
    """The channel files of one case as nnU-Net's readers give them: ``(C, z, y, x)`` float32 and ``(sz, sy, sx)``;
    a 2D image is one slice of spacing 999 (colour images give their 3 channels); also the first file's image, whose
    geometry the segmentation is written with."""
    channels, spacing, reference = [], None, None
    for path in paths:
        image = read_any(path)
        reference = reference or image
        arrays = image.channels() if image.array.ndim > len(image.spacing) else [image.array]
        for array in arrays:
            volume = array[None] if array.ndim == 2 else array
            channels.append(volume.astype(np.float32))
        this_spacing = ((DUMMY_SLICE_SPACING, *image.spacing) if len(image.spacing) == 2 else tuple(image.spacing))
        if spacing is None:
            spacing = this_spacing
        if channels[-1].shape != channels[0].shape:
            raise ImageFormatError(f"{path}: shape {channels[-1].shape} differs from {paths[0]}'s {channels[0].shape}")
    return np.stack(channels), tuple(float(s) for s in spacing), reference


def _segmentation_image(segmentation: np.ndarray, reference: MedicalImage) -> MedicalImage:
    if len(reference.spacing) == 2:
        return MedicalImage(segmentation[0], reference.spacing, reference.affine)
    return MedicalImage(segmentation, reference.spacing, reference.affine)


def predict_nnunet_folder(model_folder: str | os.PathLike, input_dir: str | os.PathLike,
                          output_dir: str | os.PathLike, *, folds: Sequence[str | int] | None = None,
                          checkpoint: str = DEFAULT_CHECKPOINT, step_size: float = 0.5, use_mirroring: bool = True,
                          save_probabilities: bool = False, device: str | None = None,
                          precision: str = "float32", postprocessing: PostprocessingRule | None = None,
                          show_progress: bool | None = None) -> dict[str, Any]:
    """Segment every case of ``input_dir`` (nnU-Net naming, the model's ``file_ending``) into ``output_dir`` with the
    nnU-Net model folder ``model_folder`` (the network on ``device``, default the GPU where there is one; a bar on
    stderr counts the cases); ``save_probabilities`` adds ``<case>.npz`` (``probabilities``, as nnU-Net
    writes it) and ``<case>.json`` (the properties nnU-Net keeps in a pickle). ``precision="bfloat16"`` runs the
    forwards under bfloat16 autocast (:mod:`gnnseg.seg.unet.precision`: faster on CPUs with AMX, no longer
    nnU-Net's numbers). ``postprocessing`` (chosen by cross-validation) reduces each case's labels before they are
    written; the probabilities stay as the network gave them. The model, the inputs and every output name are
    checked before the first case is predicted; no existing file is replaced."""
    model = open_nnunet_model(model_folder, folds, checkpoint)
    if postprocessing is not None:
        postprocessing.check_labels([v for v in model.labels.all_labels if v != 0], str(model.folder))
    ending = model.labels.file_ending
    input_dir, output = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: input folder not found")
    cases = inputs_by_case(input_dir, ending, None)
    if not cases:
        raise FileNotFoundError(f"{input_dir}: no input files ending in {ending}")
    outputs = fresh_outputs(output, cases, ending, with_probabilities=save_probabilities,
                            folder_files=[LABELS_FILE] if save_probabilities else [])
    predictor = NnUNetPredictor(model, step_size=step_size, use_mirroring=use_mirroring,
                                device=resolve_device(device), precision=precision)
    output.mkdir(parents=True, exist_ok=True)
    if save_probabilities:
        write_prediction_labels(output, model.labels.model, ending)
    written = []
    for case_id in progress(list(cases), desc=f"nnU-Net {model.configuration.name} ({len(model.folds)} folds)",
                            enabled=show_progress):
        data, spacing, reference = read_nnunet_case(cases[case_id])
        try:
            prediction = predictor.predict(data, spacing, return_probabilities=save_probabilities)
        except ValueError as error:   # e.g. NaN in the image: name the case (the cases before it are written)
            raise ValueError(f"{cases[case_id][0]}: {error}") from None
        paths = outputs[case_id]
        if save_probabilities:
            with atomic_path(paths[1]) as temporary:
                np.savez_compressed(temporary, probabilities=prediction.probabilities)
            write_json(paths[2], prediction.properties)
        segmentation = prediction.segmentation
        if postprocessing is not None:
            segmentation = postprocessing.apply(segmentation).astype(segmentation.dtype, copy=False)
        written.append(str(write_any(_segmentation_image(segmentation, reference), paths[0])))
    return {"model": str(model.folder), "trainer": model.trainer_name, "configuration": model.configuration.name,
            "folds": list(model.folds), "checkpoint": checkpoint,
            "mirror_axes": list(predictor.mirror_axes), "step_size": step_size, "precision": precision,
            "postprocessing": None if postprocessing is None else postprocessing.to_json(), "predictions": written}
