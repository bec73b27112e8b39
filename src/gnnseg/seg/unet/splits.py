"""Cross-validation folds over case ids (5 folds, shuffled with a fixed seed, as nnU-Net does)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gnnseg.core.runs import write_json


def make_splits(case_ids: Sequence[str], folds: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    """``[{"train": [...], "val": [...]}, ...]``: every case is validated in exactly one fold."""
    case_ids = sorted(case_ids)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if len(case_ids) < folds:
        raise ValueError(f"{len(case_ids)} cases cannot fill {folds} folds")
    order = np.random.default_rng(seed).permutation(len(case_ids))
    chunks = np.array_split(order, folds)
    return [{"train": sorted(case_ids[i] for c in chunks[:k] + chunks[k + 1:] for i in c),
             "val": sorted(case_ids[i] for i in chunks[k])} for k in range(folds)]


def load_or_create_splits(path: str | os.PathLike, case_ids: Sequence[str], folds: int = 5
                          ) -> list[dict[str, list[str]]]:
    """Reuse ``splits_final.json`` when it exists (so every fold and rerun sees the same split)."""
    path = Path(path)
    if path.is_file():
        splits = json.loads(path.read_text())
        stored = {c for split in splits for c in split["val"]}
        if stored != set(case_ids):
            raise ValueError(f"{path} was made for other cases ({len(stored - set(case_ids))} no longer present, "
                             f"{len(set(case_ids) - stored)} new); delete it to split again")
        return splits
    splits = make_splits(case_ids, folds)
    write_json(path, splits)
    return splits


def fold_cases(splits: list[dict[str, list[str]]], fold: int) -> tuple[list[str], list[str]]:
    """Train and validation ids of ``fold``."""
    fold = int(fold)
    if not 0 <= fold < len(splits):
        raise ValueError(f"fold {fold} does not exist; choose 0..{len(splits) - 1} or 'all'")
    return splits[fold]["train"], splits[fold]["val"]
