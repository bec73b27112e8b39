"""Stage 1 of Lite MedSAM: a small image encoder learns to reproduce a large one's image embeddings.

Lite MedSAM (``distillation/distill_multi_gpu.py`` of the LiteMedSAM branch) trains TinyViT at 256 input to match
MedSAM's ViT-B embeddings at 1024 input with a mean squared error; stage 2 then fine-tunes the whole model
(:func:`gnnseg.seg.sam.training.finetune.finetune`), starting from the teacher's prompt encoder and mask decoder
(:func:`student_from_teacher`), which read embeddings of the same shape.

The teacher costs seconds per image on a CPU, and its embeddings do not change, so they are computed once and kept
on disk as a memory-mapped float16 array (:class:`EmbeddingCache`): 256 x 64 x 64 values, 2 MiB per image. The
teacher sees each image through its own input chain (:func:`~gnnseg.seg.sam.inference.model_input.whole_image_input`),
so a 1024-input MedSAM teacher and a 256-input student see the same picture.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from gnnseg.core.progress import progress
from gnnseg.core.runs import write_json
from gnnseg.core.seed import seed_everything
from gnnseg.seg.sam.inference.model_input import whole_image_input
from gnnseg.seg.sam.inference.symmetry import DIHEDRAL, Symmetry
from gnnseg.seg.sam.modeling.sam import Sam
from gnnseg.seg.sam.training.finetune import learning_rate
from gnnseg.seg.sam.training.prepared import PreparedSet


class EmbeddingCache:
    """``(N, C, h, w)`` float16 embeddings in ``<path>`` (raw, memory-mapped) with their shape in ``<path>.json``."""

    def __init__(self, path: str | os.PathLike, array: np.memmap) -> None:
        self.path = Path(path)
        self.array = array

    @classmethod
    def create(cls, path: str | os.PathLike, count: int, shape: tuple[int, int, int],
               meta: dict[str, Any] | None = None) -> EmbeddingCache:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        full_shape = (count, *shape)
        Path(f"{path}.json").write_text(json.dumps({"shape": list(full_shape), "dtype": "float16",
                                                    "meta": meta or {}}))
        return cls(path, np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=full_shape))

    @classmethod
    def open(cls, path: str | os.PathLike) -> EmbeddingCache:
        path = Path(path)
        if not path.is_file() or not Path(f"{path}.json").is_file():
            raise FileNotFoundError(f"no embedding cache at {path} (and {path}.json)")
        array = np.load(path, mmap_mode="r")
        expected = tuple(json.loads(Path(f"{path}.json").read_text())["shape"])
        if array.shape != expected:
            raise ValueError(f"{path} holds {array.shape}, its description says {expected}: the cache is incomplete")
        return cls(path, array)

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads(Path(f"{self.path}.json").read_text())["meta"]

    @property
    def views(self) -> list[Symmetry]:
        """The views each image has, in order, as :func:`cache_teacher_embeddings` recorded them: embedding
        ``image * len(views) + k`` is image ``image`` under ``views[k]``."""
        return [Symmetry(int(turns), bool(mirror)) for turns, mirror in self.meta["symmetries"]]

    def __len__(self) -> int:
        return self.array.shape[0]

    def batch(self, indices: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.array[np.asarray(indices)])).to(device).float()


@torch.inference_mode()
def cache_teacher_embeddings(teacher: Sam, prepared: PreparedSet, path: str | os.PathLike, *, batch_size: int = 4,
                             symmetries: Sequence[Symmetry] = DIHEDRAL[:1], device: torch.device | str = "cpu",
                             show_progress: bool | None = None) -> EmbeddingCache:
    """Encode every image of ``prepared`` (the part inside its padding) with ``teacher`` into a new cache.

    With several ``symmetries`` each image is encoded as each of them shows it (turned, then given the model's
    padding, as test-time augmentation does): embedding ``image * len(symmetries) + k`` is image ``image`` under
    ``symmetries[k]``.
    """
    device = torch.device(device)
    teacher = teacher.eval().to(device)
    config = teacher.config
    grid = config.embedding_size
    views = [(image, symmetry) for image in range(len(prepared.images)) for symmetry in symmetries]
    cache = EmbeddingCache.create(path, len(views), (config.prompt_dim, grid, grid),
                                  meta={"teacher": config.to_dict(), "images": len(prepared.images),
                                        "symmetries": [[s.quarter_turns, s.mirror] for s in symmetries]})
    starts = range(0, len(views), batch_size)
    for start in progress(starts, desc="teacher embeddings", total=len(starts), enabled=show_progress):
        inputs = []
        for index, symmetry in views[start : start + batch_size]:
            height, width = prepared.extents[index]
            inputs.append(whole_image_input(symmetry.image(prepared.images[index, :height, :width]),
                                            config.image_size, layout=config.layout,
                                            normalization=config.normalization,
                                            preprocessing=config.preprocessing)[0])
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            embeddings = teacher.encode(torch.from_numpy(np.concatenate(inputs)).to(device))
        cache.array[start : start + len(inputs)] = embeddings.float().cpu().numpy().astype(np.float16)
    cache.array.flush()
    return cache


@dataclass(frozen=True)
class DistillConfig:
    iterations: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_iterations: int = 100
    seed: int = 0


def distill_encoder(student: Sam, prepared: PreparedSet, cache: EmbeddingCache, config: DistillConfig,
                    output: str | os.PathLike | None = None, *, device: torch.device | str = "cpu",
                    show_progress: bool | None = None) -> dict[str, Any]:
    """Train ``student.image_encoder`` to match the cached teacher embeddings (MSE); returns the loss log.

    The student reads each cached view as the teacher saw it: the prepared image itself, or with a cache of several
    symmetries (:func:`cache_teacher_embeddings`) the image turned or mirrored, which multiplies the data without
    a second teacher pass. With ``output``, ``distill_log.json`` is written there.
    """
    prepared.check_fits(student.config)
    views = cache.views
    student_shape = (student.config.prompt_dim, student.config.embedding_size, student.config.embedding_size)
    needed = len(prepared.images) * len(views)
    if tuple(cache.array.shape[1:]) != student_shape or len(cache) != needed:
        raise ValueError(f"the cache holds {len(cache)} embeddings of shape {tuple(cache.array.shape[1:])}; the "
                         f"student needs {needed} of shape {student_shape} ({len(prepared.images)} images x "
                         f"{len(views)} views)")
    device = torch.device(device)
    seed_everything(config.seed)
    encoder = student.image_encoder.to(device).train()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    began = time.perf_counter()
    bar = progress(range(config.iterations), desc="distill", total=config.iterations, enabled=show_progress)
    for iteration in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, iteration)
        indices = np.sort(rng.choice(len(cache), size=config.batch_size, replace=len(cache) < config.batch_size))
        image_indices, view_indices = np.divmod(indices, len(views))
        pixels = prepared.pixels(image_indices, student.config.normalization, device,
                                 views=[views[k] for k in view_indices])
        target = cache.batch(indices, device)
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            predicted = encoder(pixels)
        loss = F.mse_loss(predicted.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if hasattr(bar, "set_postfix") and iteration % 20 == 0:
            bar.set_postfix(mse=f"{np.mean(losses[-20:]):.4f}")
    encoder.eval()
    log = {"config": asdict(config), "loss": losses, "seconds": time.perf_counter() - began}
    if output is not None:
        write_json(Path(output) / "distill_log.json", log)
    return log


def student_from_teacher(student: Sam, teacher: Sam) -> Sam:
    """Give ``student`` copies of the teacher's prompt encoder and mask decoder (Lite MedSAM's stage-2 start).

    Both must read embeddings of one width; the prompt encoder's Fourier features are scale-free, so a teacher
    with another input size hands over the same weights.
    """
    for part in ("prompt_encoder", "mask_decoder"):
        theirs = getattr(teacher, part).state_dict()
        ours = getattr(student, part).state_dict()
        mismatched = [key for key in ours if key not in theirs or theirs[key].shape != ours[key].shape]
        if mismatched or set(theirs) != set(ours):
            raise ValueError(f"the teacher's {part} does not fit the student's (first differences: "
                             f"{mismatched[:3] or sorted(set(theirs) ^ set(ours))[:3]})")
        getattr(student, part).load_state_dict(theirs)
    return student


def neck_from_teacher(student: Sam, teacher: Sam) -> list[str]:
    """Start ``student``'s encoder neck from the teacher's wherever the shapes agree; returns the names copied.

    The neck's last layers (a 3 x 3 convolution and two layer norms at the prompt width) set the scale and offset
    of every embedding channel; a student that starts with the teacher's begins with embeddings on the teacher's
    scale, and its budget goes into the features instead (a CPU's few hundred steps cannot move a layer norm's
    gain far). Only the first 1 x 1 convolution, from the student's own width, differs when the widths differ.
    """
    theirs = {key: value for key, value in teacher.image_encoder.state_dict().items() if key.startswith("neck.")}
    ours = student.image_encoder.state_dict()
    copied = [key for key, value in theirs.items() if key in ours and ours[key].shape == value.shape]
    if not copied:
        raise ValueError("the teacher's neck has no layer of the student's shapes")
    student.image_encoder.load_state_dict({key: theirs[key].to(ours[key].dtype) for key in copied}, strict=False)
    return copied
