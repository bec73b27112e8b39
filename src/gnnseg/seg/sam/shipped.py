"""The box-prompted models that ship inside the package, so segmentation works offline on a fresh machine.

- ``vit_cpu`` (the default): a box-centred ``vit_cpu`` model trained from scratch on a 2-core CPU by
  ``benchmarks/sam_train_cpu_model.py`` on five modalities of public data;
- ``lite_medsam``: Lite MedSAM's architecture (TinyViT, whole image at 256), distilled from a ViT teacher and
  fine-tuned by ``benchmarks/lite_medsam_train.py``.

- ``lite_medsam_fast``: a lighter TinyViT distilled from ``lite_medsam`` for CPUs.

All are stored in half precision; docs/MODEL_CARD.md gives their data, scores and limits. :func:`load_model` also
takes any checkpoint path (SAM, MedSAM, MobileSAM, Lite MedSAM or gnnseg layout) or a folder written by
:func:`gnnseg.seg.sam.export.export_onnx`, which then runs with onnxruntime; :func:`make_predictor` gives the
predictor for either. torch is imported only when a PyTorch model is loaded, so segmenting with an export starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gnnseg.seg.sam.augmented_predictor import AugmentedPredictor, symmetries
from gnnseg.seg.sam.config import Normalization
from gnnseg.seg.sam.onnx_model import OnnxSam
from gnnseg.seg.sam.onnx_predictor import OnnxPredictor

if TYPE_CHECKING:
    from gnnseg.seg.sam.model import Sam
    from gnnseg.seg.sam.predictor import SamPredictor
    from gnnseg.seg.sam.zoom import ZoomedPredictor

WEIGHTS = Path(__file__).resolve().parent / "weights"
PACKAGED_MODELS = {"vit_cpu": WEIGHTS / "medsam_cpu.pt", "lite_medsam": WEIGHTS / "lite_medsam.pt",
                   "lite_medsam_fast": WEIGHTS / "lite_medsam_fast.pt"}
DEFAULT_MODEL = "vit_cpu"
SHIPPED_MODEL_PATH = PACKAGED_MODELS[DEFAULT_MODEL]


def load_shipped_model(name: str = DEFAULT_MODEL) -> Sam:
    """A packaged model (see :data:`PACKAGED_MODELS`) in eval mode."""
    from gnnseg.core.checkpoint import CheckpointError
    from gnnseg.seg.sam.checkpoint import load_sam

    if name not in PACKAGED_MODELS:
        raise ValueError(f"no packaged model {name!r}; choose one of {sorted(PACKAGED_MODELS)}")
    path = PACKAGED_MODELS[name]
    if not path.is_file():
        raise CheckpointError(f"the packaged model is missing ({path}); reinstall gnnseg or pass a checkpoint")
    model, _ = load_sam(path)
    return model


def load_model(checkpoint: str | Path | None = None, normalization: Normalization | None = None) -> Sam | OnnxSam:
    """The packaged default (``None``), a packaged model by name, an ONNX export folder, or a checkpoint path."""
    if checkpoint is None:
        return load_shipped_model()
    if str(checkpoint) in PACKAGED_MODELS:
        return load_shipped_model(str(checkpoint))
    if Path(checkpoint).is_dir():
        return OnnxSam(checkpoint)
    from gnnseg.seg.sam.checkpoint import load_sam

    model, _ = load_sam(checkpoint, normalization=normalization)
    return model


def check_test_time(augmentation: str, zoom: float | None, zoom_scales: int = 1) -> None:
    """Refuse an unknown augmentation or a bad zoom context or scale count before any work is done."""
    symmetries(augmentation)
    if zoom is None:
        if zoom_scales != 1:
            raise ValueError(f"zoom scales ({zoom_scales!r}) need a zoom context: give zoom as well")
        return
    from gnnseg.seg.sam.zoom import (  # imports torch: only when zooming, for ONNX runs
        check_scales,
        check_zoom,
    )

    check_zoom(zoom)
    check_scales(zoom_scales)


def make_predictor(model: Sam | OnnxSam, *, cache_size: int = 16, augmentation: str = "none",
                   zoom: float | None = None, zoom_scales: int = 1) -> SamPredictor | OnnxPredictor | AugmentedPredictor | ZoomedPredictor:
    """The predictor for a model from :func:`load_model`: ``set_image`` once, ``predict`` many times.

    The embeddings of the last ``cache_size`` images are remembered. ``augmentation`` (``"flip"``, ``"d4"``)
    averages over symmetric copies of each image (:mod:`gnnseg.seg.sam.augmented_predictor`); the memo then keeps
    every copy of those images (at least of one, so that ``predict`` does not encode them again). ``zoom``: answer
    each box on a window ``zoom`` box sizes wider on each side and at least the model's input size
    (:mod:`gnnseg.seg.sam.zoom`); the memo then holds windows rather than images. ``zoom_scales``: windows per
    box, each half as wide as the one before (enlarged up to ``2**(scales - 1)`` times), averaged.
    """
    check_test_time(augmentation, zoom, zoom_scales)
    copies = len(symmetries(augmentation))
    cache_size = cache_size if augmentation == "none" else max(cache_size, 1) * copies
    if isinstance(model, OnnxSam):
        predictor = OnnxPredictor(model, cache_size=cache_size)
    else:
        from gnnseg.seg.sam.predictor import SamPredictor

        predictor = SamPredictor(model, cache_size=cache_size)
    if zoom is not None:
        from gnnseg.seg.sam.zoom import ZoomedPredictor

        predictor = ZoomedPredictor(predictor, zoom, scales=zoom_scales)
    return predictor if augmentation == "none" else AugmentedPredictor(predictor, augmentation)
