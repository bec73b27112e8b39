"""The trained folds of one gnnseg model as one network whose logits are the mean of the folds' logits.

nnU-Net v2 predicts with every fold of a model and averages the folds' logits (not their probabilities) before the
softmax. The sliding window (:func:`gnnseg.seg.unet.predict.sliding_window_logits`) is linear in the network's output:
it weights and sums window logits and averages the mirrored views, so a network that returns the mean of the folds'
window logits gives exactly the mean of the folds' sliding-window logits, and every prediction path of
:mod:`gnnseg.seg.unet.pipeline` (axis reorientation, DICOM-SEG, kept components) serves one fold or five alike.

A model is given as gnnseg's results folder (``<Trainer>__<Plans>__<configuration>/`` with ``fold_<k>/`` folders,
:mod:`gnnseg.seg.unet.results_layout`; every fold holding the checkpoint, or those asked for) or as run folders of
``--runs-dir`` (each one fold). The folds must share their plans, configuration and test-time mirroring axes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gnnseg.seg.unet.nnunet_models import available_folds
from gnnseg.seg.unet.plans import Plans
from gnnseg.seg.unet.train import TRAIN_CONFIG, load_trained_network, trained_augmentation


class FoldEnsemble(nn.Module):
    """Networks of one plan and configuration; ``forward`` returns the mean of their logits."""

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        super().__init__()
        if not networks:
            raise ValueError("a fold ensemble needs at least one network")
        self.folds = nn.ModuleList(networks)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        total = self.folds[0](image)
        for network in self.folds[1:]:
            total = total + network(image)
        return total if len(self.folds) == 1 else total / len(self.folds)


@dataclass(frozen=True)
class TrainedFolds:
    """The opened folds: their ensemble, plans, configuration, folders and the axes they may be mirrored on."""

    network: FoldEnsemble
    plans: Plans
    configuration: str
    fold_dirs: tuple[Path, ...]
    mirror_axes: tuple[int, ...]        # the axes the folds were trained to be mirrored on


def run_fold(run_dir: Path) -> int | str | None:
    """The fold a run folder trained (its ``train_config.json``), or None when it does not say."""
    saved = run_dir / TRAIN_CONFIG
    return json.loads(saved.read_text()).get("fold") if saved.is_file() else None


def fold_dirs_of(models: Sequence[str | os.PathLike], folds: Sequence[str | int] | None,
                 checkpoint: str) -> list[Path]:
    """The fold folders to predict with: a results folder's ``fold_<k>`` holding ``checkpoint`` (``folds``, or
    every one but ``fold_all``), or run folders as given (each must hold ``checkpoint``)."""
    paths = [Path(model) for model in models]
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: model folder not found")
    in_results = [path for path in paths if any(child.name.startswith("fold_") for child in path.iterdir())]
    if in_results:
        if len(paths) > 1:
            raise ValueError(f"{in_results[0]} is a model folder of fold_<k> folders; give it alone (choose its folds "
                             "with -f)")
        folder = paths[0]
        chosen = [str(fold) for fold in folds] if folds else available_folds(folder, checkpoint)
        if not chosen:
            trained_on_all = (folder / "fold_all" / checkpoint).is_file()
            raise FileNotFoundError(f"{folder}: no fold_<k> folder holds {checkpoint}"
                                    + ("; the model was trained on every case: choose it with -f all"
                                       if trained_on_all else ""))
        paths = [folder / f"fold_{fold}" for fold in chosen]
    elif folds:
        raise ValueError("-f chooses folds of a model folder (<Trainer>__<Plans>__<configuration>/fold_<k>); run "
                         "folders are one fold each: give every one with -m")
    for path in paths:
        if not (path / checkpoint).is_file():
            raise FileNotFoundError(f"{path / checkpoint}: checkpoint missing (an unfinished training has "
                                    "checkpoint_latest.pth and checkpoint_best.pth: choose one with --checkpoint)")
    return paths


def open_trained_folds(models: Sequence[str | os.PathLike], folds: Sequence[str | int] | None = None, *,
                       checkpoint: str, device: str | torch.device = "cpu") -> TrainedFolds:
    """Load the folds (:func:`fold_dirs_of`) onto ``device`` and check that they make one model."""
    paths = fold_dirs_of(models, folds, checkpoint)
    named = [str(fold) for fold in map(run_fold, paths) if fold is not None]
    repeated = sorted({fold for fold in named if named.count(fold) > 1})
    if repeated:
        raise ValueError(f"several runs train fold {', '.join(repeated)}; a model ensembles one run per fold")
    networks, reference, axes = [], None, None
    for path in paths:
        network, plans, configuration = load_trained_network(path / checkpoint)
        dims = len(plans.configuration(configuration).patch_size)
        trained_axes = (trained_augmentation(path) or {}).get("mirror_axes")
        fold_axes = tuple(range(dims)) if trained_axes is None else tuple(int(a) for a in trained_axes)
        if reference is None:
            reference, axes = (plans.to_json(), configuration), fold_axes
        elif (plans.to_json(), configuration) != reference or fold_axes != axes:
            raise ValueError(f"{path / checkpoint} was trained with other plans, configuration or mirroring than "
                             f"{paths[0] / checkpoint}; the folds of one model share them")
        networks.append(network)
    ensemble = FoldEnsemble(networks).to(device).eval()
    return TrainedFolds(ensemble, plans, reference[1], tuple(paths), axes)
