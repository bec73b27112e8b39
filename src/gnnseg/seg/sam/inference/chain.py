"""The predictor for a model: the PyTorch or ONNX predictor, wrapped in zoom and then in test-time augmentation.

Only the outermost predictor of the chain checks the image and the prompts (:mod:`gnnseg.seg.sam.inference.base`).
The PyTorch predictor is imported only for a PyTorch model, so a chain over an ONNX export never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gnnseg.seg.sam.inference.augmented_predictor import AugmentedPredictor, symmetries
from gnnseg.seg.sam.inference.onnx_model import OnnxSam
from gnnseg.seg.sam.inference.onnx_predictor import OnnxPredictor
from gnnseg.seg.sam.inference.zoom import ZoomedPredictor, check_scales, check_zoom

if TYPE_CHECKING:
    from gnnseg.seg.sam.inference.predictor import SamPredictor
    from gnnseg.seg.sam.modeling.sam import Sam


def check_test_time(augmentation: str, zoom: float | None, zoom_scales: int = 1) -> None:
    """Refuse an unknown augmentation or a bad zoom context or scale count before any work is done."""
    symmetries(augmentation)
    if zoom is None:
        if zoom_scales != 1:
            raise ValueError(f"zoom scales ({zoom_scales!r}) need a zoom context: give zoom as well")
        return
    check_zoom(zoom)
    check_scales(zoom_scales)


def make_predictor(model: Sam | OnnxSam, *, cache_size: int = 16, augmentation: str = "none",
                   zoom: float | None = None,
                   zoom_scales: int = 1) -> SamPredictor | OnnxPredictor | AugmentedPredictor | ZoomedPredictor:
    """The predictor for a model from :func:`~gnnseg.seg.sam.shipped.load_model`: ``set_image`` once, ``predict``
    many times.

    The embeddings of the last ``cache_size`` images are remembered. ``augmentation`` (``"flip"``, ``"d4"``)
    averages over symmetric copies of each image (:mod:`gnnseg.seg.sam.inference.augmented_predictor`); the memo then
    keeps every copy of those images (at least of one, so that ``predict`` does not encode them again). ``zoom``: answer
    each box on a window ``zoom`` box sizes wider on each side and at least the model's input size
    (:mod:`gnnseg.seg.sam.inference.zoom`); the memo then holds windows rather than images. ``zoom_scales``: windows per
    box, each half as wide as the one before (enlarged up to ``2**(scales - 1)`` times), averaged.
    """
    check_test_time(augmentation, zoom, zoom_scales)
    copies = len(symmetries(augmentation))
    cache_size = cache_size if augmentation == "none" else max(cache_size, 1) * copies
    if isinstance(model, OnnxSam):
        predictor = OnnxPredictor(model, cache_size=cache_size)
    else:
        from gnnseg.seg.sam.inference.predictor import SamPredictor

        predictor = SamPredictor(model, cache_size=cache_size)
    if zoom is not None:
        predictor = ZoomedPredictor(predictor, zoom, scales=zoom_scales)
    return predictor if augmentation == "none" else AugmentedPredictor(predictor, augmentation)
