"""File-level tasks behind ``gnnseg seg finetune | distill | export-onnx | evaluate``: read files, call the library,
write files (``gnnseg seg segment`` is :mod:`gnnseg.seg.sam.segment_files`).

Everything here takes paths and returns a JSON-able summary; nothing overwrites an existing output.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.core.devices import resolve_device
from gnnseg.seg.io import read_image_2d, read_nifti
from gnnseg.seg.io.any_format import READABLE_SUFFIXES, is_nifti
from gnnseg.seg.io.pairs import paired_files
from gnnseg.seg.metrics import evaluate_case
from gnnseg.seg.sam.checkpoint import save_sam
from gnnseg.seg.sam.inference.box_prompted import predicted_masks
from gnnseg.seg.sam.inference.onnx_model import OnnxSam
from gnnseg.seg.sam.inference.simulated_user import objects_summary
from gnnseg.seg.sam.modeling.config import Normalization
from gnnseg.seg.sam.modeling.sam import build_sam
from gnnseg.seg.sam.segment_files import refuse_existing
from gnnseg.seg.sam.shipped import DEFAULT_MODEL, ModelChoice, load_model
from gnnseg.seg.sam.training.distill import (
    DistillConfig,
    cache_teacher_embeddings,
    distill_encoder,
    student_from_teacher,
)
from gnnseg.seg.sam.training.finetune import FinetuneConfig, finetune
from gnnseg.seg.sam.training.prepared import PreparedSet
from gnnseg.seg.sam.training.samples import PromptSample, samples_from_image, samples_from_volume


def load_samples(images: str | os.PathLike, masks: str | os.PathLike, modality: str = "ct", *,
                 allow_unmatched: bool = False) -> list[PromptSample]:
    """Samples from image/mask pairs with the same name (:func:`~gnnseg.seg.io.pairs.paired_files`): 2D images, or
    NIfTI volumes cut into axial slices. An image without a mask is an error unless ``allow_unmatched``."""
    samples = []
    for image_path, mask_path in paired_files(Path(images), Path(masks), READABLE_SUFFIXES,
                                              allow_unmatched=allow_unmatched):
        if is_nifti(image_path):
            volume, labels = read_nifti(image_path), read_nifti(mask_path)
            samples += samples_from_volume(volume.array, labels.array.astype(np.int64), image_path.name,
                                           modality=modality)
        else:
            image = read_image_2d(image_path).array
            labels = read_image_2d(mask_path, grayscale=True).array
            samples += samples_from_image(image, labels, image_path.name)
    if not samples:
        raise ValueError(f"the masks in {masks} hold no object of at least 100 pixels")
    return samples


def finetune_folders(images: str, masks: str, output: str, *, val_images: str | None = None,
                     val_masks: str | None = None, checkpoint: str | None = None, model: str | None = None,
                     normalization: Normalization | None = None, modality: str = "ct",
                     config: FinetuneConfig | None = None, resume: bool = False,
                     allow_unmatched: bool = False, device: str | None = None) -> dict[str, Any]:
    """Fine-tune a checkpoint (or the default model, or a fresh ``model`` configuration) on folder pairs;
    ``normalization`` overrides the checkpoint's input normalisation; on ``device``
    (:func:`~gnnseg.core.devices.resolve_device`'s: default the GPU where there is one)."""
    if checkpoint and model:
        raise ValueError("give either --checkpoint (to fine-tune) or --model (to train from scratch), not both")
    target = resolve_device(device)
    sam = build_sam(model) if model else load_model(checkpoint, normalization)
    train = load_samples(images, masks, modality, allow_unmatched=allow_unmatched)
    val = load_samples(val_images, val_masks, modality, allow_unmatched=allow_unmatched) \
        if val_images and val_masks else []
    summary = finetune(sam, train, val, config or FinetuneConfig(), output, resume=resume, device=target,
                       meta={"trained_on": str(images), "started_from": checkpoint or model or DEFAULT_MODEL})
    return {**summary, "train_objects": len(train), "val_objects": len(val), "output": str(output),
            "device": str(target)}


def distill_folders(images: str, masks: str, output: str, *, teacher: str, student: str = "lite_medsam",
                    teacher_normalization: Normalization | None = None, modality: str = "ct",
                    distill: DistillConfig | None = None, config: FinetuneConfig | None = None,
                    allow_unmatched: bool = False, device: str | None = None) -> dict[str, Any]:
    """Lite MedSAM's two stages on folder pairs: distil ``student``'s encoder from the ``teacher`` checkpoint
    (embeddings cached in ``output``; ``teacher_normalization`` overrides the teacher's input normalisation), hand
    it the teacher's prompt encoder and decoder, fine-tune everything; on ``device``
    (:func:`~gnnseg.core.devices.resolve_device`'s)."""
    output_path = Path(output)
    refuse_existing(output_path / "model.pt")
    target = resolve_device(device)
    teacher_model = load_model(teacher, teacher_normalization)
    student_model = build_sam(student)
    if student_model.config.crop_margin is not None:
        raise ValueError(f"{student} is a box-centred model; distillation needs a whole-image student")
    samples = load_samples(images, masks, modality, allow_unmatched=allow_unmatched)
    prepared = PreparedSet.from_samples(samples, student_model.config)
    cache = cache_teacher_embeddings(teacher_model, prepared, output_path / "teacher_embeddings.npy", device=target)
    stage1 = distill_encoder(student_model, prepared, cache, distill or DistillConfig(), output_path, device=target)
    student_from_teacher(student_model, teacher_model)
    stage2 = config or FinetuneConfig(box_shift=5, freeze_prompt_encoder=False)
    summary = finetune(student_model, prepared, [], stage2, output_path / "stage2", device=target,
                       meta={"distilled_from": str(teacher), "trained_on": str(images)})
    save_sam(student_model, output_path / "model.pt", meta={"distilled_from": str(teacher),
                                                             "distill_mse_last": stage1["loss"][-1]})
    return {"objects": len(prepared), "images": len(prepared.images), "distill_mse_first": stage1["loss"][0],
            "distill_mse_last": stage1["loss"][-1], **summary, "output": str(output_path / "model.pt")}


def export_onnx_folder(output: str | os.PathLike, *, choice: ModelChoice | None = None) -> dict[str, Any]:
    """Write a model (``choice``'s: its checkpoint, normalisation and preprocessing; default: the default model) as
    ``encoder.onnx``, ``decoder.onnx`` and ``prompt_decoder.onnx`` into a new folder (``gnnseg seg export-onnx``)."""
    from gnnseg.seg.sam.export import export_onnx

    output_path = Path(output)
    if output_path.exists() and any(output_path.iterdir()):
        raise FileExistsError(f"{output_path} is not empty; choose another output folder")
    choice = choice or ModelChoice()
    model = choice.load()
    if isinstance(model, OnnxSam):
        raise ValueError(f"{choice.name} is already an ONNX export; export the PyTorch checkpoint it came from")
    encoder, decoder = export_onnx(model, output_path)
    return {"encoder": str(encoder), "decoder": str(decoder), "image_size": model.config.image_size}


def evaluate_folders(images: str | os.PathLike, masks: str | os.PathLike, *, choice: ModelChoice | None = None,
                     box_margin: int = 5, tolerance: float = 2.0, modality: str = "ct",
                     allow_unmatched: bool = False, clicks: int = 0) -> dict[str, Any]:
    """DSC and NSD (tolerance in pixels) of every object, prompted by its ground-truth box grown by ``box_margin``,
    answered by ``choice`` (:class:`~gnnseg.seg.sam.shipped.ModelChoice`; default: the default model).

    With ``clicks``, the challenge's simulated user then corrects each object with up to that many clicks
    (:mod:`gnnseg.seg.sam.inference.simulated_user`), and the result adds its figures under ``"interactive"``.
    """
    if isinstance(clicks, bool) or not isinstance(clicks, int) or not 0 <= clicks <= 20:
        raise ValueError(f"clicks must be a whole number from 0 to 20, got {clicks!r}")
    choice = choice or ModelChoice()
    samples = load_samples(images, masks, modality, allow_unmatched=allow_unmatched)
    started = time.perf_counter()
    predictor = choice.predictor()
    predicted = predicted_masks(predictor, samples, box_margin)
    scores = [evaluate_case(mask, sample.mask, [1], tolerance_mm=tolerance)[1]  # a boolean mask: its object is 1
              for mask, sample in zip(predicted, samples)]
    dsc, nsd = [score["dice"] for score in scores], [score["nsd"] for score in scores]
    interactive = {}
    if clicks:
        interactive = {"interactive": objects_summary(predictor, samples, margin=box_margin, clicks=clicks,
                                                      tolerance=tolerance)}
    return {"dsc_mean": float(np.mean(dsc)), "nsd_mean": float(np.mean(nsd)), "n": len(samples),
            "box_margin": box_margin, **choice.describe(), **interactive, "seconds": time.perf_counter() - started,
            "per_object": [{"source": s.source, "dsc": float(d), "nsd": float(n)}
                           for s, d, n in zip(samples, dsc, nsd)]}

