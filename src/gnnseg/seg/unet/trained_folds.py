"""A work folder's trained folds and model selection over them (``gnnseg seg find-best-configuration``).

``gnnseg seg train`` writes each fold into a run folder of its own (``runs/seg-train/<time>/``, or with ``-d``
``$nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>/fold_<k>/``) with a copy of the plans,
``train_config.json`` (configuration, fold, validation cases) and, at the end of training, the fold's validation
predictions (``validation/``, :mod:`gnnseg.seg.unet.validation_predictions`). The runs of a work folder are
those whose ``plans.json`` is the work folder's; for each configuration and fold exactly one of them with validation
predictions must be found (or named). Their predictions, pooled over the folds, are the candidates of
:func:`gnnseg.seg.unet.model_selection.select_configuration`, scored against the raw dataset's ``labelsTr``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gnnseg.seg.unet.crossval_scores import LabelScheme
from gnnseg.seg.unet.model_selection import CrossValidationPredictions, select_configuration
from gnnseg.seg.unet.validation_predictions import VALIDATION_FOLDER


@dataclass(frozen=True)
class _Run:
    path: Path
    configuration: str
    fold: int | str
    val_cases: tuple[str, ...]


def _read_run(path: Path) -> _Run:
    settings = json.loads((path / "train_config.json").read_text())
    missing = [key for key in ("configuration", "fold", "val_cases") if key not in settings]
    if missing:
        raise ValueError(f"{path / 'train_config.json'}: no {', '.join(missing)} (not a `gnnseg seg train` run)")
    return _Run(path, settings["configuration"], settings["fold"], tuple(settings["val_cases"]))


def _same_plans(run: Path, plans_document: dict[str, Any]) -> bool:
    plans_file = run / "plans.json"
    return plans_file.is_file() and json.loads(plans_file.read_text()) == plans_document


def _runs_of_work(runs_dir: Path, plans_document: dict[str, Any], trainer_plans: str | None) -> list[_Run]:
    """The training runs made with these plans: under ``runs_dir`` (``runs/seg-train/<time>/`` or
    ``runs_dir/<run>/``), or with ``trainer_plans`` (``<Trainer>__<Plans>``) the folds of ``runs_dir`` (a results
    dataset folder) ``<Trainer>__<Plans>__<configuration>/fold_<k>/``."""
    if trainer_plans is not None:
        configs = runs_dir.glob(f"{trainer_plans}__*/fold_*/train_config.json")
    else:
        root = runs_dir / "seg-train" if (runs_dir / "seg-train").is_dir() else runs_dir
        configs = root.glob("*/train_config.json")
    return [_read_run(config.parent) for config in sorted(configs) if _same_plans(config.parent, plans_document)]


def _pick_runs(runs: list[_Run], configuration: str, folds: Sequence[int], where: str) -> dict[int, _Run]:
    """The one run per fold with validation predictions; an error names what is missing or ambiguous."""
    chosen = {}
    for fold in folds:
        matching = [run for run in runs if run.configuration == configuration and run.fold == fold]
        complete = [run for run in matching if (run.path / VALIDATION_FOLDER).is_dir()]
        if len(complete) > 1:
            raise ValueError(f"configuration {configuration} fold {fold} has {len(complete)} runs with validation "
                             f"predictions ({', '.join(str(r.path) for r in complete)}); choose one with --run")
        if not complete:
            if matching:
                raise FileNotFoundError(f"{matching[0].path / VALIDATION_FOLDER}: no validation predictions (the run "
                                        "was interrupted, trained without its raw dataset, or by an earlier gnnseg); "
                                        "train the fold again")
            raise FileNotFoundError(f"no run of configuration {configuration} fold {fold} in {where}")
        chosen[fold] = complete[0]
    return chosen


def find_best_configuration(work_dir: str | os.PathLike, configurations: Sequence[str] | None = None,
                            folds: Sequence[int] = (0, 1, 2, 3, 4), *, runs_dir: str | os.PathLike = "runs",
                            trainer_plans: str | None = None, runs: Sequence[str | os.PathLike] = (),
                            output: str | os.PathLike | None = None,
                            allow_ensembling: bool = True, show_progress: bool | None = None) -> dict[str, Any]:
    """Model selection over a work folder's training runs: the runs of ``runs_dir`` (with ``trainer_plans``, the
    ``<trainer_plans>__<configuration>/fold_<k>`` folders of a results dataset folder; or exactly ``runs``) made with
    its ``plans.json``, one per configuration and fold, each with its ``validation/`` predictions; the references are
    the raw dataset's ``labelsTr``. Without ``configurations``, every configuration of the plans that has a run is a
    candidate. Writes ``output`` (default ``WORK_DIR/model_selection_folds_<folds>``) with
    :func:`select_configuration` and returns the ``inference_information.json`` document."""
    from gnnseg.seg.io import RawDataset
    from gnnseg.seg.unet.plans import Plans

    work = Path(work_dir)
    plans = Plans.load(work / "plans.json")
    if plans.raw_dataset is None:
        raise ValueError(f"{work / 'plans.json'} does not say where its raw dataset is; make it with `gnnseg seg plan`")
    folds = [int(fold) for fold in folds]
    if not folds or len(set(folds)) != len(folds):
        raise ValueError(f"folds must be distinct fold numbers, got {folds}")
    plans_document = json.loads((work / "plans.json").read_text())
    if runs:
        found = []
        for path in map(Path, runs):
            if not (path / "train_config.json").is_file():
                raise FileNotFoundError(f"{path / 'train_config.json'}: not found (is {path} a `gnnseg seg train` "
                                        "run?)")
            if not _same_plans(path, plans_document):
                raise ValueError(f"{path / 'plans.json'} is not {work / 'plans.json'}: the run belongs to another "
                                 "plan")
            found.append(_read_run(path))
        where = "the runs given"
    else:
        found = _runs_of_work(Path(runs_dir), plans_document, trainer_plans)
        where = f"{runs_dir} (trained with {work / 'plans.json'})"
    unknown = sorted(set(configurations or ()) - set(plans.configurations))
    if unknown:
        raise ValueError(f"configurations {unknown} are not in {work / 'plans.json'} ({sorted(plans.configurations)})")
    names = list(configurations) if configurations else [name for name in plans.configurations
                                                          if any(run.configuration == name for run in found)]
    if not names:
        raise FileNotFoundError(f"no training run of {work / 'plans.json'} in {where}")
    dataset = RawDataset.open(plans.raw_dataset)
    ending = dataset.file_ending
    candidates, references = [], {}
    for name in names:
        chosen = _pick_runs(found, name, folds, where)
        labels: dict[str, Path] = {}
        for run in chosen.values():
            for case in run.val_cases:
                if case in labels:
                    raise ValueError(f"case {case} is validated by two folds of {name} ({labels[case].parent.parent} "
                                     f"and {run.path}); the folds must come from one split")
                labels[case] = run.path / VALIDATION_FOLDER / f"{case}{ending}"
                references[case] = dataset.label_path(case)
        candidates.append(CrossValidationPredictions(name, labels, sources={
            "runs": {str(fold): str(run.path) for fold, run in chosen.items()}}))
    target = Path(output) if output is not None else work / f"model_selection_folds_{'_'.join(map(str, folds))}"
    inference = {"work_dir": str(work), "folds": folds,
                 "runs": {c.name: c.sources["runs"] for c in candidates}}
    information = select_configuration(candidates, references, LabelScheme.from_model(plans.label_model), target,
                                       file_ending=ending, allow_ensembling=allow_ensembling, inference=inference,
                                       how_to_predict=_how_to_predict, show_progress=show_progress)
    return {"output": str(target), **information}


def _how_to_predict(information: dict[str, Any], folder: Path) -> list[str]:
    """The commands that predict new cases with the winner as its validation predictions were made: each
    configuration's folds ensembled from the network at the end of training (``checkpoint_final.pth``, `seg predict`'s
    default), mirrored; an ensemble of configurations averaged by `seg ensemble`; then the post-processing."""
    best = information["best_model_or_ensemble"]
    rule = folder / "postprocessing.json"
    models = []
    for configuration in best["configurations"]:
        paths = [Path(path) for path in information["runs"][configuration].values()]
        if len({path.parent for path in paths}) == 1 and all(path.name.startswith("fold_") for path in paths):
            models.append(f"{paths[0].parent} -f {' '.join(path.name.removeprefix('fold_') for path in paths)}")
        else:
            models.append(" ".join(str(path) for path in paths))
    if len(models) == 1:
        return [f"gnnseg seg predict -i INPUT -o OUTPUT -m {models[0]} --postprocessing {rule}"]
    outputs = [f"OUTPUT_{configuration}" for configuration in best["configurations"]]
    return [*(f"gnnseg seg predict -i INPUT -o {out} -m {model} --save-probabilities"
              for out, model in zip(outputs, models)),
            f"gnnseg seg ensemble -i {' '.join(outputs)} -o OUTPUT --postprocessing {rule}"]
