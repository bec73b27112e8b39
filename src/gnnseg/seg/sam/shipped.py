"""The box-prompted model that ships inside the package, so segmentation works offline on a fresh machine.

It is the ``vit_cpu`` configuration trained from scratch by ``benchmarks/sam_train_cpu_model.py`` on five
modalities of public data (see docs/MODEL_CARD.md for its data, scores and limits), stored in half precision.
"""

from __future__ import annotations

from pathlib import Path

from gnnseg.core.checkpoint import CheckpointError
from gnnseg.seg.sam.checkpoint import load_sam
from gnnseg.seg.sam.model import Normalization, Sam

SHIPPED_MODEL_PATH = Path(__file__).resolve().parent / "weights" / "medsam_cpu.pt"


def load_shipped_model() -> Sam:
    """The packaged model in eval mode."""
    if not SHIPPED_MODEL_PATH.is_file():
        raise CheckpointError(f"the packaged model is missing ({SHIPPED_MODEL_PATH}); reinstall gnnseg or pass "
                              "a checkpoint explicitly")
    model, _ = load_sam(SHIPPED_MODEL_PATH)
    return model


def load_model(checkpoint: str | Path | None = None, normalization: Normalization | None = None) -> Sam:
    """A checkpoint given by path (SAM, MedSAM or gnnseg layout), or the packaged model when ``None``."""
    if checkpoint is None:
        return load_shipped_model()
    model, _ = load_sam(checkpoint, normalization=normalization)
    return model
