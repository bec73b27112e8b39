"""The box-prompted models that ship inside the package, so segmentation works offline on a fresh machine.

- ``vit_cpu`` (the default): a box-centred ``vit_cpu`` model trained from scratch on a 2-core CPU by
  ``benchmarks/sam_train_cpu_model.py`` on five modalities of public data;
- ``lite_medsam``: Lite MedSAM's architecture (TinyViT, whole image at 256), distilled from a ViT teacher and
  fine-tuned by ``benchmarks/lite_medsam_train.py``.

Both are stored in half precision; docs/MODEL_CARD.md gives their data, scores and limits. :func:`load_model` also
takes any checkpoint path (SAM, MedSAM, MobileSAM, Lite MedSAM or gnnseg layout) or a folder written by
:func:`gnnseg.seg.sam.export.export_onnx`, which then runs with onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

from gnnseg.core.checkpoint import CheckpointError
from gnnseg.seg.sam.checkpoint import load_sam
from gnnseg.seg.sam.model import Normalization, Sam

WEIGHTS = Path(__file__).resolve().parent / "weights"
PACKAGED_MODELS = {"vit_cpu": WEIGHTS / "medsam_cpu.pt", "lite_medsam": WEIGHTS / "lite_medsam.pt"}
DEFAULT_MODEL = "vit_cpu"
SHIPPED_MODEL_PATH = PACKAGED_MODELS[DEFAULT_MODEL]


def load_shipped_model(name: str = DEFAULT_MODEL) -> Sam:
    """A packaged model (see :data:`PACKAGED_MODELS`) in eval mode."""
    if name not in PACKAGED_MODELS:
        raise ValueError(f"no packaged model {name!r}; choose one of {sorted(PACKAGED_MODELS)}")
    path = PACKAGED_MODELS[name]
    if not path.is_file():
        raise CheckpointError(f"the packaged model is missing ({path}); reinstall gnnseg or pass a checkpoint")
    model, _ = load_sam(path)
    return model


def load_model(checkpoint: str | Path | None = None, normalization: Normalization | None = None):
    """The packaged default (``None``), a packaged model by name, an ONNX export folder, or a checkpoint path."""
    if checkpoint is None:
        return load_shipped_model()
    if str(checkpoint) in PACKAGED_MODELS:
        return load_shipped_model(str(checkpoint))
    if Path(checkpoint).is_dir():
        from gnnseg.seg.sam.export import OnnxSam

        return OnnxSam(checkpoint)
    model, _ = load_sam(checkpoint, normalization=normalization)
    return model
