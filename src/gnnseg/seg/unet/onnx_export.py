"""ONNX export of a U-Net with what prediction needs beside it, for :mod:`gnnseg.seg.unet.onnx_predictor` (no torch).

An export folder holds:

- ``network.onnx`` (one model) or ``fold_<f>.onnx`` (one graph per fold, their logits averaged at prediction): input
  ``image (batch, C, *patch)``, output ``logits (batch, K, *patch)``, float32, the batch dynamic. The spatial size is
  fixed to the plans' patch size: the sliding window pads every case to at least the patch and feeds only whole
  patches, so dynamic spatial axes would buy nothing.
- ``plans.json`` and ``dataset.json``: gnnseg's plans with the channel names, labels and file ending, or an nnU-Net
  v2 model's own two files, copied as they are;
- ``inference.json``: the plans format, configuration, patch size, the axes the model may be mirrored on, the default
  window step, each channel's normalisation, the labels, the graphs with their folds, where they came from (run
  folders or model folder, checkpoint), the gnnseg version, the opset and how closely onnxruntime reproduced each
  network on a random patch.

The entrances take any network module with the plans it predicts by: :func:`export_unet_onnx` (gnnseg's plans),
:func:`export_nnunet_onnx` (an nnU-Net model's files); :func:`export_unet_runs` and :func:`export_nnunet_model`
export gnnseg training runs and nnU-Net model folders. The folder is written whole or not at all: into a temporary
folder beside it, renamed at the end; a folder that already holds anything is refused before any work.

onnx and onnxruntime are optional (``pip install 'gnnseg[onnx]'``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnnseg.core.atomic import atomic_folder
from gnnseg.seg.unet.inference_network import sharing_copy
from gnnseg.seg.unet.onnx_predictor import (
    DATASET_FILE,
    EXPORT_FORMAT,
    INFERENCE_FILE,
    INPUT_NAME,
    OUTPUT_NAME,
    PLANS_FILE,
)
from gnnseg.seg.unet.plans import Plans

OPSET = 17
"""The ONNX opset, as SAM's export (:mod:`gnnseg.seg.sam.export`)."""

DEFAULT_STEP_SIZE = 0.5
VERIFY_TOLERANCE = 1e-3
"""Largest difference between onnxruntime's and PyTorch's logits on the check patch, relative to the largest logit
(at least 1): beyond it the graph does not compute the network and the export is refused."""


class FullResolutionLogits(nn.Module):
    """A network's full-resolution logits: the first output of a deep-supervision network (a list, full resolution
    first, as gnnseg's and nnU-Net's networks return), the output itself otherwise."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: Tensor) -> Tensor:
        output = self.network(image)
        return output[0] if isinstance(output, (list, tuple)) else output


def refuse_nonempty_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a path if it is new or an empty folder; anything else is refused, untouched."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} exists and is not an empty folder; choose a new or empty one")
    return folder


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        raise ImportError("ONNX export needs onnx and onnxruntime: pip install 'gnnseg[onnx]'") from exc
    return onnxruntime


def _gnnseg_version() -> str:
    try:
        return metadata.version("gnnseg")
    except metadata.PackageNotFoundError:
        return "unknown"


def _graph_names(count: int, folds: Sequence[int | str] | None) -> list[str]:
    if count == 1:
        return ["network.onnx"]
    return [f"fold_{fold}.onnx" for fold in (folds if folds is not None else range(count))]


def _export_graph(network: nn.Module, patch: Tensor, path: Path, onnxruntime) -> float:
    """Write ``network``'s graph to ``path`` and return the largest difference between its logits under
    onnxruntime and under PyTorch on ``patch (1, C, *patch_size)``, checked against :data:`VERIFY_TOLERANCE`."""
    module = FullResolutionLogits(network).eval()
    with torch.no_grad(), warnings.catch_warnings():
        # the traced spatial shapes are the export's fixed patch size; the legacy exporter's deprecation notice is moot
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # instance norm normalises by the input's own statistics in eval mode too, as the exported graph does
        warnings.filterwarnings("ignore", message=".*instance_norm.*", category=UserWarning)
        expected = module(patch).numpy()
        torch.onnx.export(module, (patch,), path, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    produced = session.run([OUTPUT_NAME], {INPUT_NAME: patch.numpy()})[0]
    difference = float(np.abs(produced - expected).max())
    if difference > VERIFY_TOLERANCE * max(1.0, float(np.abs(expected).max())):
        raise RuntimeError(f"{path.name}: onnxruntime's logits differ from PyTorch's by up to {difference:.3g}; the "
                           "network holds an operation the ONNX export does not reproduce")
    return difference


def _write_export(networks: Sequence[nn.Module], folds: Sequence[int | str] | None, output: Path, *,
                  patch_size: Sequence[int], channels: int, outputs: int, mirror_axes: Sequence[int],
                  step_size: float, settings: Mapping[str, Any], files: Mapping[str, str], seed: int) -> dict[str, Any]:
    """The export folder: one graph per network (each checked against its network on one random patch), ``files``
    (name -> text) and ``inference.json`` (``settings`` plus what every export records), all or nothing."""
    output = refuse_nonempty_folder(output)
    onnxruntime = _require_onnx()
    if not networks:
        raise ValueError("no network to export")
    if folds is not None and (len(folds) != len(networks) or len(set(map(str, folds))) != len(folds)):
        raise ValueError(f"folds {list(folds)} must name each of the {len(networks)} networks once")
    dims = len(patch_size)
    axes = [int(a) for a in mirror_axes]
    if len(set(axes)) != len(axes) or any(not 0 <= a < dims for a in axes):
        raise ValueError(f"mirror_axes {list(mirror_axes)} must be distinct axes of the {dims}D patch (0..{dims - 1})")
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    patch = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, channels, *patch_size),
                                                                         dtype=np.float32))
    names = _graph_names(len(networks), folds)
    with atomic_folder(output) as temporary:        # an empty folder there (checked above) gives way
        differences = {}
        for network, name in zip(networks, names):
            network = network.eval().float().to("cpu")
            try:
                with torch.no_grad():
                    shape = tuple(FullResolutionLogits(network)(patch).shape)
            except (ValueError, RuntimeError) as exc:   # the network's own check, or a layer's shape error
                raise ValueError(f"the network for {name} does not take a patch {tuple(patch.shape)} of the plans' "
                                 f"{channels} channels: {exc}") from None
            if shape != (1, outputs, *patch_size):
                raise ValueError(f"the network for {name} maps a patch {tuple(patch.shape)} to logits {shape}, not "
                                 f"{(1, outputs, *patch_size)} as the plans' {channels} channels and {outputs} "
                                 "outputs need")
            differences[name] = _export_graph(network, patch, temporary / name, onnxruntime)
        record = {"format": EXPORT_FORMAT, **settings, "patch_size": list(patch_size), "input_channels": channels,
                  "num_classes": outputs, "graphs": names, "folds": list(folds) if folds is not None else None,
                  "ensemble": "mean of the graphs' logits", "mirror_axes": axes, "step_size": step_size,
                  "gnnseg_version": _gnnseg_version(), "opset": OPSET, "verified_max_abs_difference": differences}
        for name, text in {**files, INFERENCE_FILE: json.dumps(record, indent=2) + "\n"}.items():
            (temporary / name).write_text(text)
    return {"output": str(output), "graphs": names, "configuration": settings["configuration"],
            "patch_size": list(patch_size), "mirror_axes": axes, "verified_max_abs_difference": differences}


def export_unet_onnx(networks: nn.Module | Sequence[nn.Module], plans: Plans, configuration: str,
                     output: str | os.PathLike, *, mirror_axes: Sequence[int],
                     dataset: Mapping[str, Any] | None = None, folds: Sequence[int | str] | None = None,
                     step_size: float = DEFAULT_STEP_SIZE, source: Mapping[str, Any] | None = None,
                     seed: int = 0) -> dict[str, Any]:
    """Export ``networks`` (one module, or one per fold: their logits are averaged at prediction) that segment by
    gnnseg's ``plans`` and its ``configuration`` into the new folder ``output``.

    ``networks`` map ``(B, C, *patch)`` to logits ``(B, K, *patch)`` (or a deep-supervision list, full resolution
    first), with ``C`` the plans' channels and ``K`` their labels; they are put in eval mode on the CPU in float32.
    ``mirror_axes``: the spatial axes (of the configuration's patch) the model was trained to be mirrored on, the
    ones test-time mirroring may use. ``dataset``: the model's ``dataset.json`` (default: the plans' channel
    names, labels and file ending). ``folds`` names the networks' folds; ``source`` is stored as given (where the
    weights came from). Each graph is checked against its network on one random patch (``seed``).
    """
    planned = plans.configuration(configuration)
    dataset = dict(dataset) if dataset is not None else {
        "channel_names": plans.channel_names, "labels": plans.labels, "file_ending": plans.file_ending or ".nii.gz",
        **({"regions_class_order": list(plans.regions_class_order)} if plans.regions_class_order else {})}
    channels = len(plans.channel_names)
    settings = {"plans_format": "gnnseg", "configuration": configuration,
                "file_ending": dataset.get("file_ending") or ".nii.gz",
                "normalization": [{"channel": plans.channel_names[str(c)], "scheme": plans.normalization_schemes[c],
                                   "inside_nonzero_only": bool(plans.use_mask_for_norm[c])} for c in range(channels)],
                "labels": plans.labels, "source": dict(source or {})}
    files = {PLANS_FILE: json.dumps(plans.to_json(), indent=2, sort_keys=True) + "\n",
             DATASET_FILE: json.dumps(dataset, indent=2) + "\n"}
    networks = [networks] if isinstance(networks, nn.Module) else list(networks)
    return _write_export(networks, folds, Path(output), patch_size=planned.patch_size, channels=channels,
                         outputs=plans.label_model.num_outputs, mirror_axes=mirror_axes, step_size=step_size,
                         settings=settings, files=files, seed=seed)


def export_nnunet_onnx(networks: nn.Module | Sequence[nn.Module], plans_file: str | os.PathLike,
                       dataset_file: str | os.PathLike, configuration: str, output: str | os.PathLike, *,
                       mirror_axes: Sequence[int], folds: Sequence[int | str] | None = None,
                       step_size: float = DEFAULT_STEP_SIZE, source: Mapping[str, Any] | None = None,
                       seed: int = 0) -> dict[str, Any]:
    """Export the networks of an nnU-Net v2 model (one per fold, built from its plans with its weights: whatever
    module computes them) with its own ``plans.json`` and ``dataset.json`` (copied as they are) into the new folder
    ``output``; the ONNX predictor then preprocesses and maps back as nnU-Net does
    (:class:`~gnnseg.seg.unet.case_recipes.NnUNetCases`). ``mirror_axes``: the checkpoint's
    ``inference_allowed_mirroring_axes`` (empty for none); the rest as :func:`export_unet_onnx`."""
    from gnnseg.seg.unet.nnunet_plans import NnUNetLabels, NnUNetPlans

    plans, labels = NnUNetPlans.load(plans_file), NnUNetLabels.load(dataset_file)
    planned = plans.configuration(configuration)
    settings = {"plans_format": "nnunet", "configuration": configuration, "file_ending": labels.file_ending,
                "normalization": [{"channel": name, "scheme": scheme, "inside_nonzero_only": bool(masked)}
                                  for name, scheme, masked in zip(labels.channel_names.values(),
                                                                  planned.normalization_schemes,
                                                                  planned.use_mask_for_norm)],
                "labels": dict(labels.labels), "source": dict(source or {})}
    files = {PLANS_FILE: Path(plans_file).read_text(), DATASET_FILE: Path(dataset_file).read_text()}
    networks = [networks] if isinstance(networks, nn.Module) else list(networks)
    return _write_export(networks, folds, Path(output), patch_size=planned.patch_size, channels=labels.num_channels,
                         outputs=labels.num_outputs, mirror_axes=mirror_axes, step_size=step_size,
                         settings=settings, files=files, seed=seed)


def export_nnunet_model(model_dir: str | os.PathLike, output: str | os.PathLike, *,
                        folds: Sequence[int | str] | None = None, checkpoint: str | None = None) -> dict[str, Any]:
    """Export an nnU-Net v2 model folder (``nnUNet_results/DatasetXXX/Trainer__Plans__configuration``; ``folds``
    default: every fold with ``checkpoint``, default nnU-Net's ``checkpoint_final.pth``), opened and checked by
    :func:`~gnnseg.seg.unet.nnunet_models.open_nnunet_model`, into the new folder ``output``."""
    from gnnseg.seg.unet.nnunet_models import DEFAULT_CHECKPOINT, open_nnunet_model

    refuse_nonempty_folder(output)  # before any checkpoint loads
    checkpoint = checkpoint or DEFAULT_CHECKPOINT
    model = open_nnunet_model(model_dir, folds, checkpoint)
    networks = []
    for weights in model.fold_weights:       # a copy per fold, its parameters that fold's tensors
        network = sharing_copy(model.network)
        network.load_state_dict(weights, assign=True)
        networks.append(network)
    folder = Path(model_dir)
    return export_nnunet_onnx(networks, folder / "plans.json", folder / "dataset.json", model.configuration.name,
                              output, mirror_axes=model.mirror_axes or (), folds=list(model.folds),
                              source={"nnunet_model_dir": str(folder.resolve()), "checkpoint": checkpoint,
                                      "trainer": model.trainer_name})


def export_unet_runs(run_dirs: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike, *,
                     checkpoint: str = "checkpoint_final.pth") -> dict[str, Any]:
    """Export gnnseg U-Net training runs (``gnnseg seg train``'s run folders: one, or one per fold of the same plans
    and configuration) into the new folder ``output`` (``gnnseg seg export-onnx --unet RUN_DIR``).

    The runs are opened as prediction opens them (:func:`~gnnseg.seg.unet.fold_ensemble.open_trained_folds`: one
    plan, configuration and mirroring; one run per fold); each graph is named by its run's fold."""
    from gnnseg.seg.unet.fold_ensemble import open_trained_folds, run_fold

    runs = [Path(run_dirs)] if isinstance(run_dirs, (str, os.PathLike)) else [Path(r) for r in run_dirs]
    refuse_nonempty_folder(output)  # before any checkpoint loads
    missing = [str(run / checkpoint) for run in runs if not (run / checkpoint).is_file()]
    if missing:
        raise FileNotFoundError(f"no {checkpoint} in {', '.join(missing)}: give gnnseg U-Net run folders "
                                "(`gnnseg seg train` writes them)")
    trained = open_trained_folds(runs, checkpoint=checkpoint)
    folds = [run_fold(run) for run in runs]
    folds = folds if None not in folds else list(range(len(runs)))
    return export_unet_onnx(list(trained.network.folds), trained.plans, trained.configuration, output,
                            mirror_axes=list(trained.mirror_axes), folds=folds,
                            source={"run_dirs": [str(run.resolve()) for run in runs], "checkpoint": checkpoint})


def export_unet_folders(model_dirs: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike, *,
                        checkpoint: str | None = None, folds: Sequence[int | str] | None = None) -> dict[str, Any]:
    """``gnnseg seg export-onnx --unet DIR [--unet DIR ...]``: one model folder in nnU-Net's results layout, trained by
    nnU-Net v2 or by gnnseg (``folds`` of it, default all), or gnnseg run folders (one per fold); ``checkpoint``
    default: ``checkpoint_final.pth``."""
    from gnnseg.seg.unet.fold_ensemble import fold_dirs_of
    from gnnseg.seg.unet.nnunet_models import is_nnunet_model_folder
    from gnnseg.seg.unet.results_layout import is_gnnseg_model_folder

    folders = [Path(model_dirs)] if isinstance(model_dirs, (str, os.PathLike)) else [Path(d) for d in model_dirs]
    nnunet = [folder for folder in folders if is_nnunet_model_folder(folder) and not is_gnnseg_model_folder(folder)]
    if nnunet and len(folders) > 1:
        raise ValueError(f"{nnunet[0]} is an nnU-Net model folder, which holds its folds itself: give it alone")
    if nnunet:
        return export_nnunet_model(nnunet[0], output, folds=folds, checkpoint=checkpoint)
    checkpoint = checkpoint or "checkpoint_final.pth"
    if any(is_gnnseg_model_folder(folder) for folder in folders):
        folders = fold_dirs_of(folders, folds, checkpoint)       # its fold_<k> folders are gnnseg runs
    elif folds is not None:
        raise ValueError("folds choose among a model folder's fold_<k> folders; a gnnseg run is one fold: give the "
                         "runs")
    return export_unet_runs(folders, output, checkpoint=checkpoint)
