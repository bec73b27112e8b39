"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts; nothing is unpickled
beyond what ``torch.load(weights_only=True)`` allows, so loading a file from a stranger cannot run code.
"""

from __future__ import annotations

import os
import pickle
import re
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
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # the unpickler met code to import, not just a foreign file
            raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint ({_first_line(exc)})") \
                from None
        raise CheckpointError(f"checkpoint {path} holds Python objects besides tensors, which only a full unpickle "
                              "could load, and that can run any code; gnnseg reads weights only. Where the file is "
                              "trusted, re-save its state_dict (torch.save(model.state_dict(), ...))") from None
    except Exception as exc:  # torch raises several types (KeyError, IndexError, RuntimeError) for foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint, or a corrupt one "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, expected a dict")
    missing = [key for key in required_keys if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks keys {missing}; it has {sorted(payload)}")
    return payload


def _first_line(exc: Exception) -> str:
    """The first line of an exception's message, without terminal colour codes, at most 200 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
