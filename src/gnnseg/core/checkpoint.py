"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts; nothing is unpickled
beyond what ``torch.load(weights_only=True)`` allows, so loading a file from a stranger cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gnnseg.core.atomic import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not what the caller expected."""


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save ``payload`` to ``path`` through a temporary file and an atomic rename.

    An interrupted save leaves the previous checkpoint intact.
    """
    path = Path(path)
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def load_checkpoint(path: str | os.PathLike, *, required_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check that ``required_keys`` are present."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, expected a dict")
    missing = [key for key in required_keys if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks keys {missing}; it has {sorted(payload)}")
    return payload
