"""The U-Net pipeline behind the command line, as library functions: plan -> preprocess -> train -> predict -> metrics.

A *work folder* holds one dataset's ``dataset_fingerprint.json``, ``plans.json`` and ``preprocessed/``; it records
the raw dataset's location (with ``-d``, the work folder is ``$nnUNet_preprocessed/DatasetXXX_Name/``,
:mod:`gnnseg.seg.unet.nnunet_paths`, and the fingerprint ``gnnseg_dataset_fingerprint.json``). Training creates
``runs/seg-train/<time>/`` (or continues one with ``resume``), or with ``-d`` nnU-Net's results layout
(:mod:`gnnseg.seg.unet.results_layout`); prediction reads only the trained folds
(:mod:`gnnseg.seg.unet.fold_ensemble`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gnnseg.core import progress
from gnnseg.core.atomic import atomic_path
from gnnseg.core.devices import resolve_device
from gnnseg.core.runs import new_run, reopen_run, write_json
from gnnseg.seg.folder_scoring import score_folders
from gnnseg.seg.io import (
    MedicalImage,
    RawDataset,
    axis_codes,
    read_any,
    reorient,
    reorient_like,
)
from gnnseg.seg.io.any_format import write_any
from gnnseg.seg.unet.case_inputs import fresh_outputs, inputs_by_case
from gnnseg.seg.unet.case_preprocessing import preprocess_dataset
from gnnseg.seg.unet.fingerprint import extract_fingerprint
from gnnseg.seg.unet.fold_ensemble import TrainedFolds, open_trained_folds
from gnnseg.seg.unet.inference_network import prediction_network
from gnnseg.seg.unet.planner import plan_experiment
from gnnseg.seg.unet.planner_presets import preset_named
from gnnseg.seg.unet.plans import Plans
from gnnseg.seg.unet.postprocess import PostprocessingRule, keep_largest_component
from gnnseg.seg.unet.precision import autocast, in_precision
from gnnseg.seg.unet.predict import predict_case
from gnnseg.seg.unet.prediction_ensemble import LABELS_FILE, write_prediction_labels
from gnnseg.seg.unet.train import CHECKPOINT_FINAL, TrainConfig, train_fold
from gnnseg.seg.unet.validation_predictions import PROBABILITIES_KEY

FINGERPRINT_FILE = "dataset_fingerprint.json"
NNUNET_FOLDER_FINGERPRINT_FILE = "gnnseg_dataset_fingerprint.json"
"""In ``$nnUNet_preprocessed/DatasetXXX_Name`` (the work folder of ``-d``): nnU-Net reads a ``dataset_fingerprint.json``
it finds there instead of computing its own, so gnnseg's never takes that name."""


def plan_dataset(dataset_dir: str | os.PathLike, work_dir: str | os.PathLike, *, memory_gb: float | None = None,
                 device: str = "gpu", base_features: int = 32, overwrite: bool = False,
                 planner: str = "default", fingerprint_name: str = FINGERPRINT_FILE) -> dict[str, Any]:
    """Fingerprint and plan with the ``planner`` preset (``memory_gb`` defaults to its reference memory); an existing
    ``plans.json`` (perhaps hand-edited) is replaced only with ``overwrite``."""
    preset_named(planner)                      # an unknown planner is refused before the fingerprint is taken
    dataset = RawDataset.open(dataset_dir)
    work = Path(work_dir)
    if (work / "plans.json").exists() and not overwrite:
        raise FileExistsError(f"{work / 'plans.json'} exists; pass --overwrite to re-plan (preprocessed cases made "
                              "with the old plan are then redone)")
    work.mkdir(parents=True, exist_ok=True)
    fingerprint = extract_fingerprint(dataset)
    fingerprint_file = fingerprint.save(work / fingerprint_name)
    plans = replace(plan_experiment(fingerprint, memory_gb=memory_gb, device=device, base_features=base_features,
                                    planner=planner),
                    raw_dataset=str(Path(dataset_dir).resolve()), file_ending=dataset.file_ending)
    plans.save(work / "plans.json")
    return {"work_dir": str(work), "plans": str(work / "plans.json"), "fingerprint": str(fingerprint_file),
            "planner": planner,
            "configurations": {name: {"patch_size": list(c.patch_size), "batch_size": c.batch_size,
                                      "spacing": list(c.spacing), "stages": c.network.num_stages}
                               for name, c in plans.configurations.items()}}


def open_work_folder(work_dir: str | os.PathLike) -> tuple[Path, Plans, RawDataset]:
    """A work folder's path, its plans and the raw dataset they were planned from."""
    work = Path(work_dir)
    plans = Plans.load(work / "plans.json")
    if plans.raw_dataset is None:
        raise ValueError(f"{work / 'plans.json'} does not say where its raw dataset is; make it with `gnnseg seg plan`")
    return work, plans, RawDataset.open(plans.raw_dataset)


def preprocess(work_dir: str | os.PathLike, configuration: str) -> dict[str, Any]:
    work, plans, dataset = open_work_folder(work_dir)
    folder = preprocess_dataset(dataset, plans, configuration, work / "preprocessed")
    return {"configuration": configuration, "folder": str(folder), "cases": len(list(folder.glob("*.json")))}


def train(work_dir: str | os.PathLike, configuration: str, fold: int | str, config: TrainConfig, *,
          runs_root: str | os.PathLike = "runs", resume_run: str | os.PathLike | None = None,
          show_progress: bool | None = None, device: str | None = None) -> dict[str, Any]:
    work, plans, dataset = open_work_folder(work_dir)
    run_dir = (reopen_run(resume_run) if resume_run else new_run("seg-train", runs_root)).path
    summary = train_fold(work / "preprocessed", plans, configuration, fold, run_dir, config, raw_dataset=dataset,
                         resume=resume_run is not None, show_progress=show_progress, device=device)
    return {"run_dir": str(run_dir), **summary}


def predict_image(network, channels: Sequence[MedicalImage], plans: Plans, configuration: str,
                  **options: Any) -> MedicalImage:
    """Labels for one case given as one image per channel, on the first channel's grid (:func:`segment_image`)."""
    return segment_image(network, channels, plans, configuration, with_probabilities=False, **options)[0]


def segment_image(network, channels: Sequence[MedicalImage], plans: Plans, configuration: str, *,
                  with_probabilities: bool = True, **options: Any) -> tuple[MedicalImage, np.ndarray | None]:
    """Labels and probabilities ``(K, *spatial)`` float32 for one case given as one image per channel, both on the
    first channel's grid (``options`` go to :func:`predict_case`; ``with_probabilities=False`` gives None for them).
    A volume whose axes run otherwise than the training volumes' (``plans.axis_codes``, e.g. an LAS DICOM series for
    a network trained on RAS NIfTIs) is predicted in the training axis order and put back, so the network never sees
    a scan mirrored or transposed; its probabilities are put back only when asked for (K volumes)."""
    reference = channels[0]
    codes = plans.axis_codes
    turn = (codes is not None and reference.affine is not None and len(reference.spacing) == 3
            and "".join(axis_codes(reference)) != codes)
    if turn:
        channels = [reorient(channel, tuple(codes)) for channel in channels]
    data = np.stack([channel.array.astype(np.float32) for channel in channels])
    labels, probabilities = predict_case(network, data, channels[0].spacing, plans, configuration, **options)
    result = MedicalImage(labels.astype(np.uint8), channels[0].spacing, channels[0].affine)
    if not with_probabilities:
        return (reorient_like(result, reference) if turn else result), None
    if not turn:
        return result, probabilities
    back = [reorient_like(MedicalImage(p, channels[0].spacing, channels[0].affine), reference).array
            for p in probabilities]
    return reorient_like(result, reference), np.stack(back)


def predict_folder(model: str | os.PathLike | Sequence[str | os.PathLike], input_dir: str | os.PathLike,
                   output_dir: str | os.PathLike, *, folds: Sequence[str | int] | None = None,
                   checkpoint: str = CHECKPOINT_FINAL, step: float = 0.5, mirror: bool = True,
                   keep_largest: Sequence[int] = (), postprocessing: PostprocessingRule | None = None,
                   save_probabilities: bool = False, device: str | None = None, precision: str = "float32",
                   show_progress: bool | None = None) -> dict[str, Any]:
    """Segment every case in ``input_dir`` (nnU-Net naming) into ``output_dir`` (never overwriting), as
    ``nnUNetv2_predict`` does by default: every fold of ``model`` (a results folder's ``fold_<k>``, or ``folds``; or
    run folders, one fold each) ensembled by their mean logits (:mod:`gnnseg.seg.unet.fold_ensemble`), from their
    ``checkpoint``, mirrored along the axes the folds were trained to mirror (``mirror=False``: not), windows
    ``step`` of a patch apart. Each label in ``keep_largest`` is reduced to its largest connected component
    (:mod:`gnnseg.seg.unet.postprocess`); ``postprocessing`` (chosen by cross-validation) reduces each case's labels
    before they are written. ``save_probabilities`` adds ``<case>.npz`` (``probabilities (K,
    *spatial)`` float32 on the case's grid, before any component is removed) and ``<case>.json`` (the case's
    spacing and shape, and the K classes: label values, or regions as lists of values). The network runs on
    ``device`` (default: the GPU where there is one), in ``precision`` (:mod:`gnnseg.seg.unet.precision`); a bar on
    stderr counts the cases. Everything is checked before the first file is written."""
    trained = _TrainedForPrediction.load(model, folds, checkpoint, device, mirror, keep_largest, precision,
                                         postprocessing)
    plans = trained.folds.plans
    ending = plans.file_ending or ".nii.gz"     # the raw dataset itself is not needed to predict
    output = Path(output_dir)
    cases = inputs_by_case(Path(input_dir), ending, len(plans.channel_names))
    if not cases:
        raise FileNotFoundError(f"no input files ending in {ending} in {input_dir}")
    outputs = fresh_outputs(output, cases, ending, with_probabilities=save_probabilities,
                            folder_files=[LABELS_FILE] if save_probabilities else [])
    output.mkdir(parents=True, exist_ok=True)
    written = []
    label_model = plans.label_model
    if save_probabilities:
        write_prediction_labels(output, label_model, ending)
    classes = [list(c) if isinstance(c, tuple) else c
               for c in (label_model.regions if label_model.has_regions else label_model.all_labels)]
    description = f"U-Net {trained.folds.configuration} ({len(trained.folds.fold_dirs)} folds)"
    for case_id in progress(list(cases), desc=description, enabled=show_progress):
        image, probabilities = trained.predict([read_any(p) for p in cases[case_id]], step, save_probabilities)
        paths = outputs[case_id]
        if save_probabilities:
            with atomic_path(paths[1]) as temporary:
                np.savez_compressed(temporary, **{PROBABILITIES_KEY: probabilities.astype(np.float32)})
            write_json(paths[2], {"spacing": [float(s) for s in image.spacing], "shape": list(image.array.shape),
                                  "classes": classes, "configuration": trained.folds.configuration})
        written.append(str(write_any(image, paths[0])))
    return {**trained.describe(checkpoint, step), "predictions": written}


def predict_dicom_seg(model: str | os.PathLike | Sequence[str | os.PathLike], series_dir: str | os.PathLike,
                      output: str | os.PathLike, *, folds: Sequence[str | int] | None = None,
                      checkpoint: str = CHECKPOINT_FINAL, step: float = 0.5, mirror: bool = True,
                      keep_largest: Sequence[int] = (), postprocessing: PostprocessingRule | None = None,
                      device: str | None = None, precision: str = "float32") -> dict[str, Any]:
    """Segment one DICOM series (a folder of its slices) and write the labels as the DICOM-SEG ``output``, its
    segments named by the model's labels and referencing the series (:mod:`gnnseg.seg.io.dicom_seg`). The output and
    the series are checked before the network loads; options as :func:`predict_folder`."""
    from gnnseg.seg.io.dicom_seg import dicom_seg_source, refuse_non_dicom_source, require_highdicom, write_dicom_seg

    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output} exists; choose another output path")
    refuse_non_dicom_source(series_dir, output)
    require_highdicom()
    source = dicom_seg_source(series_dir)
    trained = _TrainedForPrediction.load(model, folds, checkpoint, device, mirror, keep_largest, precision,
                                         postprocessing)
    plans = trained.folds.plans
    if len(plans.channel_names) != 1:
        raise ValueError(f"the model takes {len(plans.channel_names)} channels per case; a DICOM series gives one")
    image, _ = trained.predict([read_any(series_dir)], step, with_probabilities=False)
    write_dicom_seg(image.array, source, output, label_names=plans.label_model.predicted_names(),
                    model=f"U-Net {trained.folds.fold_dirs[0].name} {trained.folds.configuration}")
    return {**trained.describe(checkpoint, step), "predictions": [str(output)],
            "voxels_per_label": {int(k): int((image.array == k).sum()) for k in np.unique(image.array) if k}}


@dataclass(frozen=True)
class _TrainedForPrediction:
    """A model's folds with what prediction adds: the mirroring axes used and the labels kept whole."""

    folds: TrainedFolds
    mirror_axes: tuple[int, ...]
    keep_largest: tuple[int, ...]
    network: torch.nn.Module            # the folds' ensemble in the precision asked for
    precision: str
    postprocessing: PostprocessingRule | None

    @classmethod
    def load(cls, model, folds: Sequence[str | int] | None, checkpoint: str, device: str | None, mirror: bool,
             keep_largest: Sequence[int], precision: str = "float32",
             postprocessing: PostprocessingRule | None = None) -> _TrainedForPrediction:
        autocast(precision)    # an unknown precision is refused before any checkpoint loads
        models = [model] if isinstance(model, (str, os.PathLike)) else list(model)
        device = resolve_device(device)
        trained = open_trained_folds(models, folds, checkpoint=checkpoint, device=str(device))
        foreground = trained.plans.label_model.foreground_labels
        unknown = sorted(set(keep_largest) - set(foreground))
        if unknown:
            raise ValueError(f"keep-largest labels {unknown} are not foreground labels of this model ({foreground})")
        if postprocessing is not None:
            postprocessing.check_labels(foreground, str(trained.fold_dirs[0].parent))
        return cls(trained, trained.mirror_axes if mirror else (), tuple(keep_largest),
                   in_precision(prediction_network(trained.network, precision, device), precision, device), precision,
                   postprocessing)

    def predict(self, channels: Sequence[MedicalImage], step: float,
                with_probabilities: bool = True) -> tuple[MedicalImage, np.ndarray | None]:
        """Labels of one case on its first channel's grid, the kept labels reduced to their largest component and
        the post-processing applied, and the probabilities as the network gave them (or None)."""
        image, probabilities = segment_image(self.network, channels, self.folds.plans, self.folds.configuration,
                                             with_probabilities=with_probabilities, step=step,
                                             mirror_axes=self.mirror_axes)
        if self.keep_largest:
            image = MedicalImage(keep_largest_component(image.array, self.keep_largest), image.spacing,
                                 image.affine)
        if self.postprocessing is not None:
            image = MedicalImage(self.postprocessing.apply(image.array), image.spacing, image.affine)
        return image, probabilities

    def describe(self, checkpoint: str, step: float) -> dict[str, Any]:
        return {"model": [str(path) for path in self.folds.fold_dirs], "configuration": self.folds.configuration,
                "checkpoint": checkpoint, "mirror_axes": list(self.mirror_axes), "step_size": step,
                "keep_largest": list(self.keep_largest), "precision": self.precision,
                "postprocessing": None if self.postprocessing is None else self.postprocessing.to_json()}


def metrics_folder(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, *, tolerance_mm: float = 2.0,
                   labels: list[int] | None = None) -> dict[str, Any]:
    """Dice, NSD and HD95 per case and label for files present in both folders (same names), and their mean per
    label; ``labels`` default: those of either map (:func:`~gnnseg.seg.folder_scoring.score_folders`)."""
    scores = score_folders(pred_dir, gt_dir, labels=labels or "union", tolerance_mm=tolerance_mm)
    return {"cases": len(scores.per_case),
            "mean": {str(label): means for label, means in scores.mean_per_label().items()},
            "per_case": {name: {str(label): values for label, values in case.items()}
                         for name, case in scores.per_case.items()}}
