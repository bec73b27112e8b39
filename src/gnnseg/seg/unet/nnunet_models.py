"""A model folder trained by nnU-Net v2 (``nnUNet_results/DatasetXXX/Trainer__Plans__configuration/``), opened safely.

The folder holds ``plans.json``, ``dataset.json`` and ``fold_<k>/checkpoint_final.pth`` (``checkpoint_best.pth`` on
request) per trained fold. A checkpoint is the dict ``nnUNetTrainer.save_checkpoint`` writes: ``network_weights``,
``init_args`` (plans, configuration, fold, dataset_json, device), ``trainer_name``,
``inference_allowed_mirroring_axes``, the optimizer and grad-scaler state, ``logging`` lists, ``_best_ema``,
``current_epoch``.

Checkpoints load with ``torch.load(weights_only=True)``. nnU-Net's logging and ``_best_ema`` hold numpy float64
scalars, whose unpickling needs numpy's scalar and dtype reconstructors; exactly those (:data:`NUMPY_SCALAR_GLOBALS`)
are allowed, the globals a file asks for are listed before it is read, and a file that asks for anything else is
refused naming it. Only trainers whose inference is nnU-Net's default are accepted (:data:`KNOWN_TRAINERS`): their
variants change training (epochs, loss, optimizer, augmentation, mirroring during training) but build the network
from the plans and predict as ``nnUNetTrainer`` does; the mirroring axes they allow at inference are read from the
checkpoint. A trainer that builds another network (``nnUNetTrainerBN`` swaps instance for batch norm) or any
unknown class is refused by name.

:func:`open_nnunet_model` checks everything (files, folds, trainer, configuration, every fold's weights against the
plans' network) before anything is predicted.
"""

from __future__ import annotations

import copy
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gnnseg.seg.unet.nnunet_networks import NnUNetNetwork, build_network, load_nnunet_weights
from gnnseg.seg.unet.nnunet_plans import NnUNetConfiguration, NnUNetLabels, NnUNetPlans

DEFAULT_CHECKPOINT = "checkpoint_final.pth"

KNOWN_TRAINERS = frozenset({
    "nnUNetTrainer", "nnUNetTrainerNoMirroring", "nnUNetTrainer_onlyMirror01", "nnUNetTrainer_onlyMirror01_1500ep",
    "nnUNetTrainer_onlyMirror01_DA5", "nnUNetTrainer_onlyMirror01_DASegOrd0", "nnUNetTrainerDA5",
    "nnUNetTrainerDA5ord0", "nnUNetTrainerDA5Segord0", "nnUNetTrainerDA5_10epochs", "nnUNetTrainerNoDA",
    "nnUNetTrainer_DASegOrd0", "nnUNetTrainer_DASegOrd0_NoMirroring", "nnUNetTrainer_noDummy2DDA",
    "nnUNetTrainer_warmup", "nnUNetTrainerCosAnneal", "nnUNetTrainerAdam", "nnUNetTrainerVanillaAdam",
    "nnUNetTrainerVanillaAdam1en3", "nnUNetTrainerVanillaAdam3en4", "nnUNetTrainerAdam1en3", "nnUNetTrainerAdam3en4",
    "nnUNetTrainerAdan", "nnUNetTrainerAdan1en3", "nnUNetTrainerAdan3en4", "nnUNetTrainerAdan1en1",
    "nnUNetTrainerAdanCosAnneal", "nnUNetTrainerDiceLoss", "nnUNetTrainerDiceCELoss_noSmooth",
    "nnUNetTrainerTopk10Loss", "nnUNetTrainerTopk10LossLS01", "nnUNetTrainerDiceTopK10Loss", "nnUNetTrainerCELoss",
    "nnUNetTrainerCELoss_5epochs", "nnUNetTrainerNoDeepSupervision", "nnUNetTrainer_probabilisticOversampling",
    "nnUNetTrainer_probabilisticOversampling_033", "nnUNetTrainer_probabilisticOversampling_010",
    "nnUNetTrainerBenchmark_5epochs", "nnUNetTrainerBenchmark_5epochs_noDataLoading",
})
"""nnU-Net v2 trainers whose inference is ``nnUNetTrainer``'s (besides those matching :data:`EPOCH_VARIANT`)."""

EPOCH_VARIANT = re.compile(r"nnUNetTrainer_\d+epochs?(_NoMirroring)?")
"""``nnUNetTrainer_250epochs``, ``nnUNetTrainer_1epoch``, ``nnUNetTrainer_2000epochs_NoMirroring``, ..."""

_NUMPY_CORE = getattr(np, "_core", None) or np.core       # numpy >= 2 / numpy 1.26
NUMPY_SCALAR_GLOBALS = {
    "numpy._core.multiarray.scalar": _NUMPY_CORE.multiarray.scalar,
    "numpy.core.multiarray.scalar": _NUMPY_CORE.multiarray.scalar,   # the same function, pickled under numpy < 2
    "numpy.dtype": np.dtype,
    **{f"numpy.dtypes.{cls.__name__}": cls for cls in (
        np.dtypes.Float16DType, np.dtypes.Float32DType, np.dtypes.Float64DType, np.dtypes.Int32DType,
        np.dtypes.Int64DType, np.dtypes.BoolDType)},
}
"""Globals a checkpoint may need beyond torch's own safe set: numpy numeric scalars and their dtypes (data only)."""


def is_known_trainer(name: str) -> bool:
    return name in KNOWN_TRAINERS or EPOCH_VARIANT.fullmatch(name) is not None


def read_nnunet_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path``, unpickled with ``weights_only=True``.

    Refused with one ``ValueError`` naming the file: not a torch zip checkpoint, or asking for a global outside torch's
    safe set and :data:`NUMPY_SCALAR_GLOBALS` (the names are listed), or not an nnU-Net checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint missing")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a torch checkpoint (torch.save's zip format)")
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as error:  # a damaged archive raises many types
        raise ValueError(f"{path}: unreadable checkpoint ({error})") from None
    unsafe = [name for name in needed if name not in NUMPY_SCALAR_GLOBALS]
    if unsafe:
        raise ValueError(f"{path}: refused, it would unpickle {', '.join(unsafe)} (only tensors, plain Python data "
                         "and numpy scalars are loaded)")
    # the dtype classes are not listed by the scan (numpy.dtype's reduce builds them), so all of them are allowed
    allowed = [(value, name) for name, value in NUMPY_SCALAR_GLOBALS.items()]
    try:
        with torch.serialization.safe_globals(allowed):
            try:   # mapped: only the tensors used are read (below: the weights, never the optimizer state)
                checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception:   # a file system without memory maps; a refused file fails again, with its reason
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: refused by weights_only loading ({str(error).splitlines()[0]})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected an nnU-Net checkpoint dict, found {type(checkpoint).__name__}")
    missing = [key for key in ("network_weights", "trainer_name", "init_args") if key not in checkpoint]
    if missing:
        raise ValueError(f"{path}: not an nnU-Net v2 checkpoint (lacks {', '.join(missing)})")
    if not isinstance(checkpoint["init_args"], dict) or "configuration" not in checkpoint["init_args"]:
        raise ValueError(f"{path}: init_args lacks 'configuration'")
    # only the weights are read into memory (the optimizer state, as large again, never is), and nothing stays backed
    # by a file that a training run may rewrite; deepcopy keeps shared tensors shared
    checkpoint = {**checkpoint, "network_weights": copy.deepcopy(checkpoint["network_weights"])}
    checkpoint.pop("optimizer_state", None)
    checkpoint.pop("grad_scaler_state", None)
    return checkpoint


def is_nnunet_model_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like an nnU-Net results folder (plans + dataset.json, or ``fold_*`` folders)."""
    path = Path(path)
    return path.is_dir() and (((path / "plans.json").exists() and (path / "dataset.json").exists())
                              or any(child.is_dir() and child.name.startswith("fold_") for child in path.iterdir()))


def available_folds(folder: Path, checkpoint: str) -> list[str]:
    """Folds whose folder holds ``checkpoint``, numbered ones in order; ``fold_all`` is left out, as nnU-Net's
    automatic fold detection does (ask for it with ``folds=["all"]``)."""
    folds = [child.name.removeprefix("fold_") for child in folder.iterdir()
             if child.is_dir() and child.name.startswith("fold_") and child.name != "fold_all"
             and (child / checkpoint).is_file()]
    return sorted(folds, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))


@dataclass(frozen=True)
class NnUNetModel:
    """An opened nnU-Net model: its plans, labels, configuration, one weight set per fold and the mirroring axes."""

    folder: Path
    plans: NnUNetPlans
    labels: NnUNetLabels
    configuration: NnUNetConfiguration
    trainer_name: str
    folds: tuple[str, ...]
    fold_weights: tuple[dict[str, torch.Tensor], ...]   # canonical state dicts, one per fold
    mirror_axes: tuple[int, ...] | None                 # what the trainer allows at inference; None: no mirroring
    network: NnUNetNetwork                              # built from the plans, holding the first fold's weights
    # (assigned: a fold's tensors are the network's parameters, so load another fold with assign=True, never by
    # copying into them, which would overwrite the fold they belong to)

    @property
    def dims(self) -> int:
        return len(self.configuration.patch_size)


def open_nnunet_model(folder: str | Path, folds: Sequence[str | int] | None = None,
                      checkpoint: str = DEFAULT_CHECKPOINT) -> NnUNetModel:
    """Open and check an nnU-Net v2 model folder; ``folds`` default: every ``fold_<k>`` holding ``checkpoint``.

    Every problem is one error naming the file and what is wrong: a missing ``plans.json`` / ``dataset.json``, a
    requested fold without its checkpoint, a checkpoint refused by :func:`read_nnunet_checkpoint`, an unknown
    trainer, folds of different trainers or configurations, weights that do not fit the plans' network.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: model folder not found")
    plans = NnUNetPlans.load(folder / "plans.json")
    labels = NnUNetLabels.load(folder / "dataset.json")
    if folds is None:
        chosen = available_folds(folder, checkpoint)
        if not chosen:
            raise FileNotFoundError(f"{folder}: no fold_<k> folder holds {checkpoint}")
    else:
        chosen = [str(f) for f in folds]
        for fold in chosen:
            if not (folder / f"fold_{fold}" / checkpoint).is_file():
                raise FileNotFoundError(f"{folder / f'fold_{fold}' / checkpoint}: checkpoint missing (fold {fold})")
    first: dict[str, Any] | None = None
    weights, network = [], None
    for fold in chosen:
        path = folder / f"fold_{fold}" / checkpoint
        loaded = read_nnunet_checkpoint(path)
        trainer = str(loaded["trainer_name"])
        if not is_known_trainer(trainer):
            raise ValueError(f"{path}: trainer {trainer!r} is not one gnnseg knows to predict like nnUNetTrainer "
                             "(nnUNetTrainer and its epoch, loss, optimizer, augmentation and mirroring variants)")
        if first is None:
            first = loaded
            configuration = plans.configuration(str(loaded["init_args"]["configuration"]))
            with torch.device("meta"):   # no initialisation: every fold's tensors are assigned below
                network = build_network(configuration.architecture, labels.num_channels, labels.num_outputs,
                                        f"{plans.source}: configurations[{configuration.name!r}].architecture")
        for what, value, reference in (("trainer", trainer, first["trainer_name"]),
                                       ("configuration", loaded["init_args"]["configuration"],
                                        first["init_args"]["configuration"])):
            if value != reference:
                raise ValueError(f"{path}: {what} {value!r} differs from fold {chosen[0]}'s {reference!r}")
        weights.append(load_nnunet_weights(network, loaded["network_weights"], str(path), assign=True))
    assert first is not None and network is not None
    network.load_state_dict(weights[0], assign=True)
    network.eval()
    axes = first.get("inference_allowed_mirroring_axes")
    if axes is not None and not set(axes) <= set(range(len(configuration.patch_size))):
        raise ValueError(f"{folder / f'fold_{chosen[0]}' / checkpoint}: inference_allowed_mirroring_axes {axes} do "
                         f"not fit the {len(configuration.patch_size)}D configuration {configuration.name!r}")
    return NnUNetModel(folder=folder, plans=plans, labels=labels, configuration=configuration,
                       trainer_name=str(first["trainer_name"]), folds=tuple(chosen), fold_weights=tuple(weights),
                       mirror_axes=None if axes is None else tuple(int(a) for a in axes), network=network)
