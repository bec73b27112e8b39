"""Plain JSON values from whatever results hold (numpy, tensors, paths, non-finite floats), without importing torch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def jsonable(value: Any) -> Any:
    """Turn tensors, numpy scalars, paths and non-finite floats into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0:   # numpy arrays and tensors
        return jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):  # numpy scalars and 0-d tensors
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
