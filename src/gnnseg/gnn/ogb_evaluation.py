"""OGB's own metric for an OGB dataset, by name: ``ogb_metric("ogbn-arxiv", y_true, y_pred) -> {"acc": ...}``.

Each OGB dataset has one leaderboard metric (``eval metric`` in the ``master.csv`` files of ``ogb.nodeproppred``
and ``ogb.graphproppred``, copied into :data:`OGB_EVAL_METRICS`). With ``implementation="auto"`` the score comes
from ``ogb``'s ``Evaluator(name)`` when the package is installed and from the equal implementation here when it
is not (tested equal on the same predictions). The rules, from ``ogb/{nodeproppred,graphproppred}/evaluate.py``:

==========  ==================================================================================================
``acc``     per task, the fraction of labeled rows (``y_true`` not NaN) where ``y_pred == y_true``; mean over
            tasks. ``y_pred`` holds predicted class ids.
``rocauc``  per task whose labels hold both a 1 and a 0, ROC-AUC of ``y_pred`` (scores) over its labeled rows;
            mean over those tasks (tasks with one class are skipped, not counted as 0.5)
``ap``      the same with average precision
``rmse``    per task, the root mean squared error over its labeled rows; mean over tasks
==========  ==================================================================================================

``y_true`` and ``y_pred`` are ``(n, num_tasks)`` numpy arrays or tensors (a 1-D array is one task); NaN in
``y_true`` marks a missing label. A ranking metric with no task that has both classes is undefined and raises
:class:`UndefinedMetricError` (OGB raises a RuntimeError there).
Link-prediction datasets (``ogbl-*``, Hits@K / MRR) and ``ogbg-code2`` (F1 over token sequences) take other
inputs and are not covered.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from gnnseg.core.ranking import average_precision, roc_auc
from gnnseg.gnn.ogb_package import require_ogb

# name -> (eval metric, number of tasks), from ogb 1.3.6's nodeproppred/master.csv and graphproppred/master.csv.
OGB_EVAL_METRICS: dict[str, tuple[str, int]] = {
    "ogbn-arxiv": ("acc", 1), "ogbn-products": ("acc", 1), "ogbn-mag": ("acc", 1), "ogbn-papers100M": ("acc", 1),
    "ogbn-proteins": ("rocauc", 112),
    "ogbg-molbace": ("rocauc", 1), "ogbg-molbbbp": ("rocauc", 1), "ogbg-molclintox": ("rocauc", 2),
    "ogbg-molhiv": ("rocauc", 1), "ogbg-molsider": ("rocauc", 27), "ogbg-moltox21": ("rocauc", 12),
    "ogbg-moltoxcast": ("rocauc", 617), "ogbg-molchembl": ("rocauc", 1310),
    "ogbg-molmuv": ("ap", 17), "ogbg-molpcba": ("ap", 128),
    "ogbg-molesol": ("rmse", 1), "ogbg-molfreesolv": ("rmse", 1), "ogbg-mollipo": ("rmse", 1),
    "ogbg-ppa": ("acc", 1),
}
Implementation = Literal["auto", "ogb", "gnnseg"]
IMPLEMENTATIONS = ("auto", "ogb", "gnnseg")


class UndefinedMetricError(ValueError):
    """A ranking metric (ROC-AUC, AP) over labels in which no task has both classes."""


def is_ogb_dataset(name: str | None) -> bool:
    """Whether ``name`` is an OGB dataset that :func:`ogb_metric` scores."""
    return name in OGB_EVAL_METRICS


def eval_metric(name: str) -> str:
    """OGB's metric for dataset ``name``: ``"acc"``, ``"rocauc"``, ``"ap"`` or ``"rmse"``."""
    if name not in OGB_EVAL_METRICS:
        raise ValueError(f"no OGB metric for dataset {name!r}; known: {', '.join(OGB_EVAL_METRICS)}")
    return OGB_EVAL_METRICS[name][0]


def ogb_installed() -> bool:
    """Whether ``ogb`` imports (then ``implementation="auto"`` uses its Evaluator)."""
    try:
        importlib.import_module("ogb")
    except ImportError:
        return False
    return True


def ogb_metric(name: str, y_true: Any, y_pred: Any, implementation: Implementation = "auto") -> dict[str, float]:
    """``{eval_metric(name): value}`` for predictions on dataset ``name``, as OGB's ``Evaluator(name).eval``
    returns it. ``implementation``: ``"auto"`` (ogb's Evaluator if installed, else ours), ``"ogb"`` (an
    ImportError with the install line when missing) or ``"gnnseg"`` (ours)."""
    metric = eval_metric(name)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    y_true, y_pred = _task_columns(name, y_true, y_pred)
    if metric in ("rocauc", "ap") and not any(_has_both_classes(column) for column in y_true.T):
        raise UndefinedMetricError(f"{name}: {metric} is undefined: no task has both a positive and a negative "
                                   f"label among the {y_true.shape[0]} rows")
    if implementation == "ogb" or (implementation == "auto" and ogb_installed()):
        result = _ogb_evaluator(name).eval({"y_true": y_true, "y_pred": y_pred})
        return {key: float(value) for key, value in result.items()}
    return {metric: METRICS[metric](y_true, y_pred)}


def _task_columns(name: str, y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both as numpy ``(n, num_tasks)``; a 1-D array is one task. Shapes are checked here, naming them."""
    arrays = []
    for label, values in (("y_true", y_true), ("y_pred", y_pred)):
        array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        arrays.append(array.reshape(-1, 1) if array.ndim == 1 else array)
        if arrays[-1].ndim != 2:
            raise ValueError(f"{label} must be (n, num_tasks) or (n,), got shape {array.shape}")
    y_true, y_pred = arrays
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    tasks = OGB_EVAL_METRICS[name][1]
    if y_true.shape[1] != tasks:
        raise ValueError(f"{name} has {tasks} task(s), got {y_true.shape[1]} column(s)")
    if not y_true.shape[0]:
        raise ValueError(f"{name}: no rows to score")
    return y_true, y_pred


@functools.cache
def _ogb_evaluator(name: str) -> Any:
    module = "ogb.nodeproppred" if name.startswith("ogbn-") else "ogb.graphproppred"
    return require_ogb(module, f"OGB's Evaluator for {name}").Evaluator(name)


def _labeled(column: np.ndarray) -> np.ndarray:
    return column == column          # False exactly where the label is NaN


def _has_both_classes(column: np.ndarray) -> bool:
    return bool((column == 1).any() and (column == 0).any())


def per_task_ranking(y_true: np.ndarray, y_score: np.ndarray,
                     score: Callable[[np.ndarray, np.ndarray], float] = roc_auc) -> list[float | None]:
    """OGB's per-task rule for ROC-AUC / AP: ``score(scores, labels)`` over each task's labeled rows, ``None``
    for a task whose labels lack a positive or a negative. Arrays ``(n, T)``, NaN = missing."""
    results: list[float | None] = []
    for labels, scores in zip(np.asarray(y_true).T, np.asarray(y_score).T):
        labeled = _labeled(labels)
        results.append(score(scores[labeled], labels[labeled]) if _has_both_classes(labels) else None)
    return results


def _mean_ranking(score: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[np.ndarray, np.ndarray], float]:
    def mean(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        defined = [value for value in per_task_ranking(y_true, y_pred, score) if value is not None]
        return float(np.mean(defined))
    return mean


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[_labeled(true)] == true[_labeled(true)])
                          for true, pred in zip(y_true.T, y_pred.T)]))


def _rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean([np.sqrt(np.mean((pred[_labeled(true)] - true[_labeled(true)]) ** 2))
                          for true, pred in zip(y_true.T, y_pred.T)]))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "acc": _accuracy, "rocauc": _mean_ranking(roc_auc), "ap": _mean_ranking(average_precision), "rmse": _rmse,
}


def node_accuracy(dataset: str | None, predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of predicted class ids ``(n,)`` against ``labels (n,)``, NaN when there are none. For an OGB
    dataset scored by accuracy (ogbn-arxiv, ogbn-products, ...) it is OGB's metric (:func:`ogb_metric`)."""
    if not labels.numel():
        return float("nan")
    if is_ogb_dataset(dataset):
        if eval_metric(dataset) != "acc":
            raise ValueError(f"{dataset} is scored by {eval_metric(dataset)}, not accuracy")
        return ogb_metric(dataset, labels, predicted)["acc"]
    return float((predicted == labels).float().mean())
