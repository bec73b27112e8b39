"""Molecule models as a user runs them: several seeds into a run directory with a checkpoint, and
screening a library of SMILES with a saved checkpoint."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.core import (
    CheckpointError,
    load_checkpoint,
    new_run,
    progress,
    save_checkpoint,
)
from gnnseg.gnn.datasets.molecule_tables import (
    MoleculeDataset,
    SplitKind,
    TaskType,
    load_molecule_csv,
    split_dataset,
)
from gnnseg.gnn.molecule_graphs import FEATURIZER_VERSIONS, Featurizer
from gnnseg.gnn.tasks.molecule_property import (
    MoleculeConfig,
    MoleculeGIN,
    MoleculeResult,
    predict_graphs,
    summarize_molecules,
    train_molecule_model,
)

CHECKPOINT_FORMAT = "gnnseg.molecule_model/1"
REPORTED_SKIPS = 100   # skipped rows listed in a returned summary (all of them go to the run's metrics.json)


def run_molecule_property(csv_path: str | os.PathLike, targets: Sequence[str], *, smiles_column: str = "smiles",
                          task: TaskType = "classification", split: SplitKind = "scaffold",
                          seeds: int = 1, first_seed: int = 0, runs_root: str | os.PathLike = "runs",
                          overrides: dict[str, Any] | None = None, dataset: MoleculeDataset | None = None,
                          featurizer: Featurizer = "gnnseg", show_progress: bool | None = None) -> dict[str, Any]:
    """Train ``seeds`` models (seeds ``first_seed..``) on the table at ``csv_path`` and write
    ``runs/gnn-molecules/<time>/``: ``config.json``, ``metrics.json`` (per seed, summary, skipped rows) and
    ``model.pt`` (the seed with the best validation score). The deterministic scaffold split is the same
    for every seed (only the initialisation and batch order change); the random and the balanced scaffold
    splits are redrawn with each seed.

    Returns the summary: ``test_auc_mean`` / ``test_auc_std`` (classification) or ``test_rmse_mean`` /
    ``test_rmse_std`` (regression), the same for validation, counts, ``run_dir`` and ``checkpoint``.
    ``dataset`` may pass an already loaded table (then ``csv_path`` is only recorded and its own featurizer
    is used); otherwise the table is featurized with ``featurizer`` (``"ogb"``: OGB's ``smiles2graph``).
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if not targets:
        raise ValueError("name at least one target column (--targets)")
    config = MoleculeConfig(**(overrides or {}))
    if dataset is None:
        dataset = load_molecule_csv(csv_path, smiles_column, targets, task, featurizer)
    run = new_run("gnn-molecules", runs_root)
    run.save_config({"csv": str(csv_path), "smiles_column": smiles_column, "targets": list(targets), "task": task,
                     "split": split, "seeds": seeds, "first_seed": first_seed, "featurizer": dataset.featurizer,
                     "config": asdict(config)})
    data_summary = dataset.summary()
    run.log_metrics(data=data_summary)
    results: list[MoleculeResult] = []
    split_sizes = None
    for seed in progress(range(first_seed, first_seed + seeds), desc=f"molecules ({split} split)", total=seeds,
                         enabled=show_progress):
        parts = split_dataset(dataset, split, seed=seed)
        split_sizes = [len(p) for p in parts]
        results.append(train_molecule_model(dataset, parts, config, seed, show_progress=False))
        run.log_metrics(per_seed=[r.summary() for r in results])
    best = max(results, key=lambda r: (_selection_value(r), -r.seed))
    checkpoint = save_checkpoint({
        "format": CHECKPOINT_FORMAT, "featurizer": FEATURIZER_VERSIONS[dataset.featurizer], "config": asdict(config),
        "task": task,
        "target_names": list(dataset.target_names), "smiles_column": smiles_column,
        "in_channels": dataset.graphs[0].num_features, "edge_channels": dataset.graphs[0].num_edge_features,
        "seed": best.seed, "state_dict": best.state_dict, "metrics": {"val": best.val, "test": best.test},
    }, run.path / "model.pt")
    summary = {"csv": str(csv_path), "dataset": dataset.name, "targets": list(dataset.target_names), "task": task,
               "split": split,
               "featurizer": dataset.featurizer,
               "molecules": len(dataset), "split_sizes": split_sizes, **summarize_molecules(results),
               "best_seed": best.seed, "skipped": len(dataset.skipped),
               "skipped_rows": data_summary["skipped_rows"][:REPORTED_SKIPS]}
    run.log_metrics(summary=summary)
    return {**summary, "run_dir": str(run.path), "checkpoint": str(checkpoint)}


def _selection_value(result: MoleculeResult) -> float:
    """Higher is better: the validation AUC, or minus the validation RMSE; an undefined score ranks last."""
    value = result.val_score if result.task == "classification" else -result.val_score
    return -np.inf if np.isnan(value) else float(value)


def load_molecule_model(path: str | os.PathLike) -> tuple[MoleculeGIN, dict[str, Any]]:
    """Rebuild the model saved by :func:`run_molecule_property`; returns ``(model in eval mode, payload)``.
    ``model.featurizer`` names the featurizer its molecules need."""
    payload = load_checkpoint(path, required_keys=("format", "featurizer", "config", "task", "target_names",
                                                   "in_channels", "edge_channels", "state_dict"))
    if payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a {payload['format']!r} checkpoint, not a molecule model")
    featurizers = {version: name for name, version in FEATURIZER_VERSIONS.items()}
    if payload["featurizer"] not in featurizers:
        raise CheckpointError(f"{path} was trained on features {payload['featurizer']!r}; this gnnseg makes "
                              f"{', '.join(map(repr, featurizers))}")
    known = {f.name for f in fields(MoleculeConfig)}
    config = MoleculeConfig(**{k: v for k, v in payload["config"].items() if k in known})
    model = config.build(payload["in_channels"], payload["edge_channels"], len(payload["target_names"]),
                         featurizers[payload["featurizer"]])
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit its model: missing {missing}, unexpected {unexpected}")
    return model.eval(), payload


def _write_new_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """Write a CSV that must not exist yet: a temporary file beside it, then a hard link that fails if
    ``path`` appeared meanwhile (so nothing is ever overwritten), then the temporary name is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def screen_library(checkpoint: str | os.PathLike, csv_path: str | os.PathLike, out: str | os.PathLike, *,
                   smiles_column: str = "smiles", top: int = 100, target: str | None = None,
                   ascending: bool = False, batch_size: int = 256) -> dict[str, Any]:
    """Score every molecule of ``csv_path`` with a saved model and write the ``top`` best to ``out``.

    The score is the predicted probability (classification) or value (regression) of ``target`` (default:
    the model's first task); rows are ranked high to low (``ascending=True``: low to high), ties in file
    order. ``out`` gets the columns ``rank, smiles, score`` and then the table's own columns (its SMILES
    column is already ``smiles``; a column named ``rank`` or ``score`` is kept as ``input_rank`` /
    ``input_score``). Invalid SMILES are skipped and reported. ``out`` is never overwritten: an existing
    file is refused before any work.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new --out (screening never overwrites a file)")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    model, payload = load_molecule_model(checkpoint)
    names = list(payload["target_names"])
    target = names[0] if target is None else target
    if target not in names:
        raise ValueError(f"the model predicts {names}, not {target!r}")
    library = load_molecule_csv(csv_path, smiles_column, (), "classification", model.featurizer)
    scores = predict_graphs(model, library.graphs, payload["task"], batch_size)[:, names.index(target)].numpy()
    order = np.argsort(scores if ascending else -scores, kind="stable")[:top]
    extra = [c for c in library.columns if c != smiles_column]
    renamed = [f"input_{c}" if c in ("rank", "smiles", "score") else c for c in extra]
    rows = [[rank, library.smiles[k], f"{float(scores[k]):.6g}", *(library.records[k].get(c, "") for c in extra)]
            for rank, k in enumerate(order.tolist(), start=1)]
    _write_new_csv(out, ["rank", "smiles", "score", *renamed], rows)
    skipped = [vars(s) for s in library.skipped]
    return {"out": str(out), "target": target, "task": payload["task"], "scored": len(library),
            "written": len(rows), "top_score": float(scores[order[0]]), "skipped": len(skipped),
            "skipped_rows": skipped[:REPORTED_SKIPS]}
