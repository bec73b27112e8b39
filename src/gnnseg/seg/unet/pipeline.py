"""The U-Net pipeline behind the command line, as library functions: plan -> preprocess -> train -> predict -> metrics.

A *work folder* holds one dataset's ``dataset_fingerprint.json``, ``plans.json`` and ``preprocessed/``;
it records the raw dataset's location. Training creates ``runs/seg-train/<time>/`` (or continues one
with ``resume``); prediction reads only a run folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.core.runs import new_run, reopen_run
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
from gnnseg.seg.unet.case_inputs import inputs_by_case
from gnnseg.seg.unet.case_preprocessing import preprocess_dataset
from gnnseg.seg.unet.fingerprint import extract_fingerprint
from gnnseg.seg.unet.planner import plan_experiment
from gnnseg.seg.unet.planner_presets import preset_named
from gnnseg.seg.unet.plans import Plans
from gnnseg.seg.unet.postprocess import keep_largest_component
from gnnseg.seg.unet.predict import predict_case
from gnnseg.seg.unet.train import (
    TrainConfig,
    load_trained_network,
    train_fold,
    trained_augmentation,
    training_device,
)


def plan_dataset(dataset_dir: str | os.PathLike, work_dir: str | os.PathLike, *, memory_gb: float | None = None,
                 device: str = "gpu", base_features: int = 32, overwrite: bool = False,
                 planner: str = "default") -> dict[str, Any]:
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
    fingerprint.save(work / "dataset_fingerprint.json")
    plans = replace(plan_experiment(fingerprint, memory_gb=memory_gb, device=device, base_features=base_features,
                                    planner=planner),
                    raw_dataset=str(Path(dataset_dir).resolve()), file_ending=dataset.file_ending)
    plans.save(work / "plans.json")
    return {"work_dir": str(work), "plans": str(work / "plans.json"), "planner": planner,
            "configurations": {name: {"patch_size": list(c.patch_size), "batch_size": c.batch_size,
                                      "spacing": list(c.spacing), "stages": c.network.num_stages}
                               for name, c in plans.configurations.items()}}


def _work(work_dir) -> tuple[Path, Plans, RawDataset]:
    work = Path(work_dir)
    plans = Plans.load(work / "plans.json")
    if plans.raw_dataset is None:
        raise ValueError(f"{work / 'plans.json'} does not say where its raw dataset is; make it with `gnnseg seg plan`")
    return work, plans, RawDataset.open(plans.raw_dataset)


def preprocess(work_dir: str | os.PathLike, configuration: str) -> dict[str, Any]:
    work, plans, dataset = _work(work_dir)
    folder = preprocess_dataset(dataset, plans, configuration, work / "preprocessed")
    return {"configuration": configuration, "folder": str(folder), "cases": len(list(folder.glob("*.json")))}


def train(work_dir: str | os.PathLike, configuration: str, fold: int | str, config: TrainConfig, *,
          runs_root: str | os.PathLike = "runs", resume_run: str | os.PathLike | None = None,
          show_progress: bool | None = None, device: str | None = None) -> dict[str, Any]:
    work, plans, dataset = _work(work_dir)
    run_dir = (reopen_run(resume_run) if resume_run else new_run("seg-train", runs_root)).path
    summary = train_fold(work / "preprocessed", plans, configuration, fold, run_dir, config, raw_dataset=dataset,
                         resume=resume_run is not None, show_progress=show_progress, device=device)
    return {"run_dir": str(run_dir), **summary}


def predict_image(network, channels: Sequence[MedicalImage], plans: Plans, configuration: str,
                  **options: Any) -> MedicalImage:
    """Labels for one case given as one image per channel, on the first channel's grid (``options`` go to
    :func:`predict_case`). A volume whose axes run otherwise than the training volumes' (``plans.axis_codes``,
    e.g. an LAS DICOM series for a network trained on RAS NIfTIs) is predicted in the training axis order and
    its labels put back, so the network never sees a scan mirrored or transposed."""
    reference = channels[0]
    codes = plans.axis_codes
    turn = (codes is not None and reference.affine is not None and len(reference.spacing) == 3
            and "".join(axis_codes(reference)) != codes)
    if turn:
        channels = [reorient(channel, tuple(codes)) for channel in channels]
    data = np.stack([channel.array.astype(np.float32) for channel in channels])
    labels, _ = predict_case(network, data, channels[0].spacing, plans, configuration, **options)
    result = MedicalImage(labels.astype(np.uint8), channels[0].spacing, channels[0].affine)
    return reorient_like(result, reference) if turn else result


def predict_folder(run_dir: str | os.PathLike, input_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                   checkpoint: str = "checkpoint_best.pt", step: float = 0.5,
                   mirror: bool = False, keep_largest: Sequence[int] = (),
                   device: str | None = None) -> dict[str, Any]:
    """Segment every case in ``input_dir`` (nnU-Net naming) into ``output_dir`` (never overwriting); each label in
    ``keep_largest`` is reduced to its largest connected component (:mod:`gnnseg.seg.unet.postprocess`). The network
    runs on ``device`` (default: the GPU where there is one)."""
    trained = _TrainedForPrediction.load(run_dir, checkpoint, device, mirror, keep_largest)
    plans = trained.plans
    ending = plans.file_ending or ".nii.gz"     # the raw dataset itself is not needed to predict
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    cases = inputs_by_case(Path(input_dir), ending, len(plans.channel_names))
    if not cases:
        raise FileNotFoundError(f"no input files ending in {ending} in {input_dir}")
    existing = [str(output / f"{case_id}{ending}") for case_id in cases if (output / f"{case_id}{ending}").exists()]
    if existing:
        raise FileExistsError(f"{len(existing)} predictions already exist in {output} (e.g. {existing[0]}); "
                              f"choose a new output folder")
    written = []
    for case_id, paths in cases.items():
        image = trained.predict([read_any(p) for p in paths], step)
        target = write_any(image, output / f"{case_id}{ending}")
        written.append(str(target))
    return {"run_dir": str(run_dir), "configuration": trained.configuration, "predictions": written,
            "mirror_axes": list(trained.mirror_axes), "keep_largest": list(keep_largest)}


def predict_dicom_seg(run_dir: str | os.PathLike, series_dir: str | os.PathLike, output: str | os.PathLike, *,
                      checkpoint: str = "checkpoint_best.pt", step: float = 0.5, mirror: bool = False,
                      keep_largest: Sequence[int] = (), device: str | None = None) -> dict[str, Any]:
    """Segment one DICOM series (a folder of its slices) and write the labels as the DICOM-SEG ``output``, its
    segments named by the run's labels and referencing the series (:mod:`gnnseg.seg.io.dicom_seg`). The output and
    the series are checked before the network loads; options as :func:`predict_folder`."""
    from gnnseg.seg.io.dicom_seg import dicom_seg_source, refuse_non_dicom_source, require_highdicom, write_dicom_seg

    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output} exists; choose another output path")
    refuse_non_dicom_source(series_dir, output)
    require_highdicom()
    source = dicom_seg_source(series_dir)
    trained = _TrainedForPrediction.load(run_dir, checkpoint, device, mirror, keep_largest)
    if len(trained.plans.channel_names) != 1:
        raise ValueError(f"the run takes {len(trained.plans.channel_names)} channels per case; a DICOM series gives "
                         "one")
    image = trained.predict([read_any(series_dir)], step)
    names = {int(value): name for name, value in trained.plans.labels.items() if int(value) > 0}
    write_dicom_seg(image.array, source, output, label_names=names,
                    model=f"U-Net {Path(run_dir).name} {trained.configuration}")
    return {"run_dir": str(run_dir), "configuration": trained.configuration, "predictions": [str(output)],
            "mirror_axes": list(trained.mirror_axes), "keep_largest": list(keep_largest),
            "voxels_per_label": {int(k): int((image.array == k).sum()) for k in np.unique(image.array) if k}}


@dataclass(frozen=True)
class _TrainedForPrediction:
    """A trained network with what prediction needs from its run: plans, configuration, mirroring, kept labels."""

    network: Any
    plans: Plans
    configuration: str
    mirror_axes: tuple[int, ...]
    keep_largest: tuple[int, ...]

    @classmethod
    def load(cls, run_dir, checkpoint: str, device: str | None, mirror: bool,
             keep_largest: Sequence[int]) -> _TrainedForPrediction:
        network, plans, configuration = load_trained_network(Path(run_dir) / checkpoint)
        network.to(device or training_device())
        unknown = sorted(set(keep_largest) - {int(v) for v in plans.labels.values() if int(v) > 0})
        if unknown:
            raise ValueError(f"keep-largest labels {unknown} are not foreground labels of this run ({plans.labels})")
        dims = len(plans.configuration(configuration).patch_size)
        # test-time mirroring along the axes the run was trained to be mirrored on (all, unless trained without)
        trained_axes = (trained_augmentation(run_dir) or {}).get("mirror_axes")
        mirror_axes = (tuple(range(dims)) if trained_axes is None else tuple(trained_axes)) if mirror else ()
        return cls(network, plans, configuration, mirror_axes, tuple(keep_largest))

    def predict(self, channels: Sequence[MedicalImage], step: float) -> MedicalImage:
        """Labels of one case on its first channel's grid, the kept labels reduced to their largest component."""
        image = predict_image(self.network, channels, self.plans, self.configuration, step=step,
                              mirror_axes=self.mirror_axes)
        if self.keep_largest:
            image = MedicalImage(keep_largest_component(image.array, self.keep_largest), image.spacing,
                                 image.affine)
        return image


def metrics_folder(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, *, tolerance_mm: float = 2.0,
                   labels: list[int] | None = None) -> dict[str, Any]:
    """Dice, NSD and HD95 per case and label for files present in both folders (same names), and their mean per
    label; ``labels`` default: those of either map (:func:`~gnnseg.seg.folder_scoring.score_folders`)."""
    scores = score_folders(pred_dir, gt_dir, labels=labels or "union", tolerance_mm=tolerance_mm)
    return {"cases": len(scores.per_case),
            "mean": {str(label): means for label, means in scores.mean_per_label().items()},
            "per_case": {name: {str(label): values for label, values in case.items()}
                         for name, case in scores.per_case.items()}}
