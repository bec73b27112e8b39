"""gnnseg's own training in nnU-Net v2's results layout, for ``gnnseg seg train -d``.

nnU-Net keeps a trained model as ``$nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>/`` with the
``plans.json`` and ``dataset.json`` it was trained with, and one ``fold_<k>/`` per trained fold (checkpoints,
``progress.png``, ``training_log_*.txt``, ``validation/``). gnnseg writes the same tree: the trainer is
``gnnsegTrainer`` (or the name given with ``-tr``, which keeps other experiments apart), the plans identifier is
``gnnsegPlans`` (the work folder's ``plans.json``: gnnseg keeps one plans file per work folder), and each fold folder is
what a run folder of ``--runs-dir`` holds (the same files: ``checkpoint_final.pth``, ``checkpoint_best.pth``,
``checkpoint_latest.pth``, ``progress.png``, the text log, ``train_config.json``, ``summary.json``, ``validation/``).

The model folder is told apart from one trained by nnU-Net by its ``plans.json`` (gnnseg's format), so
``gnnseg seg predict -m`` and ``-d`` open either. Only training imports torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gnnseg.core.atomic import atomic_path
from gnnseg.seg.unet.plans import PLANS_VERSION

if TYPE_CHECKING:
    from gnnseg.seg.unet.train import TrainConfig

TRAINER = "gnnsegTrainer"
"""The trainer name of gnnseg's training in a results folder name."""
PLANS_IDENTIFIER = "gnnsegPlans"
"""The plans identifier of a work folder's ``plans.json`` in a results folder name."""
NNUNET_TRAINER = "nnUNetTrainer"
NNUNET_PLANS = "nnUNetPlans"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def model_folder_name(trainer: str, plans_identifier: str, configuration: str) -> str:
    """``<trainer>__<plans>__<configuration>``; each part a plain name without ``__``."""
    for what, name in (("trainer", trainer), ("plans", plans_identifier), ("configuration", configuration)):
        if not _NAME.fullmatch(name) or "__" in name:
            raise ValueError(f"{what} name {name!r}: use letters, digits, '_', '.' and '-' (not '__')")
    return f"{trainer}__{plans_identifier}__{configuration}"


def is_gnnseg_model_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a results folder of gnnseg's training (gnnseg plans and ``fold_*`` folders)."""
    folder = Path(folder)
    plans = folder / "plans.json"
    if not plans.is_file() or not any(child.is_dir() and child.name.startswith("fold_") for child in folder.iterdir()):
        return False
    try:
        return json.loads(plans.read_text()).get("format") == PLANS_VERSION
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def model_folder(results_dataset: Path, configuration: str, trainer: str, plans_identifier: str) -> Path:
    """The existing ``<trainer>__<plans>__<configuration>`` folder of a results dataset folder; when missing, the
    error lists the model folders there are."""
    folder = results_dataset / model_folder_name(trainer, plans_identifier, configuration)
    if not results_dataset.is_dir():
        raise FileNotFoundError(f"{results_dataset}: no trained models of this dataset (train one with `gnnseg seg "
                                "train -d ...`)")
    if not folder.is_dir():
        present = sorted(child.name for child in results_dataset.iterdir() if child.is_dir() and "__" in child.name)
        raise FileNotFoundError(f"{folder}: model folder missing (there: {', '.join(present) or 'none'}; choose one "
                                "with -tr TRAINER -p PLANS -c CONFIGURATION)")
    return folder


def train_in_results(work_dir: str | os.PathLike, results_dataset: str | os.PathLike, configuration: str,
                     fold: int | str, config: TrainConfig, *, trainer: str = TRAINER, resume: bool = False,
                     show_progress: bool | None = None, device: str | None = None) -> dict[str, Any]:
    """Train ``fold`` of ``configuration`` from the work folder into
    ``results_dataset/<trainer>__gnnsegPlans__<configuration>/fold_<fold>/``, beside the ``plans.json`` and
    ``dataset.json`` it is trained with. A fold folder that holds anything is continued with ``resume`` and refused
    without; a model folder of other plans is refused. Everything is checked before anything is written."""
    from gnnseg.seg.unet.pipeline import open_work_folder  # torch: imported by training only
    from gnnseg.seg.unet.train import CHECKPOINT_LATEST, train_fold

    work, plans, dataset = open_work_folder(work_dir)
    if configuration not in plans.configurations:
        raise ValueError(f"configuration {configuration!r} is not in {work / 'plans.json'} "
                         f"({sorted(plans.configurations)})")
    model = Path(results_dataset) / model_folder_name(trainer, PLANS_IDENTIFIER, configuration)
    fold_dir = model / f"fold_{fold}"
    if resume and not (fold_dir / CHECKPOINT_LATEST).is_file():
        raise FileNotFoundError(f"cannot continue: {fold_dir / CHECKPOINT_LATEST} does not exist")
    if not resume and fold_dir.is_dir() and any(fold_dir.iterdir()):
        raise FileExistsError(f"{fold_dir} holds a trained fold; continue it with --c, or choose another trainer "
                              "name with -tr")
    plans_document = plans.to_json()
    if (model / "plans.json").is_file() and json.loads((model / "plans.json").read_text()) != plans_document:
        raise ValueError(f"{model / 'plans.json'} differs from {work / 'plans.json'}: the model folder was trained "
                         "with other plans; choose another trainer name with -tr")
    raw_dataset_json = Path(dataset.root) / "dataset.json"
    model.mkdir(parents=True, exist_ok=True)
    plans.save(model / "plans.json")
    if not (model / "dataset.json").is_file():
        with atomic_path(model / "dataset.json") as temporary:
            shutil.copyfile(raw_dataset_json, temporary)
    summary = train_fold(work / "preprocessed", plans, configuration, fold, fold_dir, config, raw_dataset=dataset,
                         resume=resume, show_progress=show_progress, device=device)
    return {"model_dir": str(model), "run_dir": str(fold_dir), **summary}
