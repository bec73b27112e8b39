"""The files of a Hugging Face ``transformers`` model folder, and how to tell one from gnnseg's ONNX export folder.

Torch-free, so that choosing how to open a ``--checkpoint`` folder (:func:`is_hugging_face_folder`) costs nothing on
the ONNX path; reading and writing the folders is :mod:`gnnseg.seg.sam.hf_checkpoint`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
"""Sharded weights: ``{"weight_map": {tensor name: shard file}}``."""
PREPROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"
"""A whole processor's settings; its image processor's under ``image_processor``."""
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
"""Weights as pickles, which gnnseg never loads."""


def is_hugging_face_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder laid out as a Hugging Face model: it holds safetensors or pickled HF weights, or
    its ``config.json`` names a model type or architectures (gnnseg's ONNX export's ``config.json`` does neither)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if any((path / name).exists() for name in (WEIGHTS_FILE, WEIGHTS_INDEX_FILE, *PICKLED_WEIGHTS)):
        return True
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and ("model_type" in config or "architectures" in config)
