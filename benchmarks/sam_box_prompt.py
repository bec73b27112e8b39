"""Box-prompted segmentation: the SAM-architecture model against box baselines and a specialist U-Net.

MedSAM (Ma et al., "Segment anything in medical images", Nat Commun 15:654, 2024) claims that one box-prompted
generalist, trained on many modalities, matches specialist U-Nets trained on one. This script puts that claim to
the test on the held-out objects of :mod:`gnnseg.seg.sam.training.corpus` (endoscopy, EM, fundus, CT, MR): every method
gets the same objects and the same box, and is scored per object.

Protocol:

- **Box**: the object's tight box grown by ``--box-margin`` pixels per side (default 5), clipped to the image.
- **Methods**:
  ``box_fill`` (the whole box is the object), ``ellipse`` (the ellipse inscribed in the box): what a box says
  by itself, the floor any model must beat;
  ``grabcut`` (OpenCV's GrabCut from the rectangle, 5 iterations, fixed seed): the classic box-prompted method
  with no learning; needs ``opencv-python-headless`` (the ``bench`` extra) and is skipped without it. Where the
  colours inside the box are as well explained by the rest of the image (EM cells, MR organs, some polyps),
  GrabCut gives up the whole box and returns an empty mask, which scores 0: that is its answer, kept as is;
  ``specialist_unet`` (endoscopy only): a small 2D U-Net that sees the crop around the box plus a box channel,
  trained on the 160 Kvasir training images with random box jitter for ``--specialist-minutes`` of one CPU
  thread, scored on the 40 held-out images (41 polyps);
  ``sam_model``: the packaged box-prompted model (or ``--checkpoint``) through :class:`SamPredictor`.
- **Metrics**: per object DSC and NSD at a 2-pixel tolerance (spacing 1, since the objects are 2D slices and
  images); means per modality, and the seconds per object of each method (the specialist's training excluded).

Writes ``sam_box_prompt.json``, ``sam_box_prompt.md`` and ``sam_box_prompt_examples.png`` to ``--out-dir``::

    python benchmarks/sam_box_prompt.py
    python benchmarks/sam_box_prompt.py --max-objects 5 --specialist-minutes 0.1 --untrained-model \\
        --out-dir /tmp/sbp    # smoke test
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from gnnseg.core import CheckpointError, machine_info, seed_everything, write_json
from gnnseg.seg.metrics import dice, normalized_surface_dice
from gnnseg.seg.sam.inference.box_prompted import grown_box
from gnnseg.seg.sam.inference.crop import CropWindow
from gnnseg.seg.sam.inference.predictor import SamPredictor, paste_window, resize_crop
from gnnseg.seg.sam.modeling.sam import Sam, build_sam
from gnnseg.seg.sam.shipped import load_model
from gnnseg.seg.sam.training.corpus import MODALITIES, load_corpus
from gnnseg.seg.sam.training.finetune import resize_mask_crop
from gnnseg.seg.sam.training.samples import PromptSample, jittered_box
from gnnseg.seg.unet.network import UNet, features_per_stage

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("box_fill", "ellipse", "grabcut", "specialist_unet", "sam_model")
SPECIALIST_MODALITIES = ("endoscopy",)
NSD_TOLERANCE_PIXELS = 2.0
GRABCUT_ITERATIONS = 5
SPECIALIST_CROP_SIZE = 128
SPECIALIST_CROP_MARGIN = 0.25
SPECIALIST_BOX_JITTER = 20
SPECIALIST_BATCH_SIZE = 16
SPECIALIST_LR = 1e-3
SPECIALIST_REPORTED_DSC = 0.92
"""What the issue reports for a specialist U-Net on the 40 held-out Kvasir images (41 polyps)."""

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(image (H, W, 3) uint8, boxes (N, 4))`` -> masks ``(N, H, W)`` bool, one per box."""


def box_masks(image_hw: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` masks that are true inside each (inclusive) box."""
    rows, cols = np.arange(image_hw[0])[:, None], np.arange(image_hw[1])[None, :]
    return np.stack([(cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1) for x0, y0, x1, y1 in boxes])


# ----------------------------------------------------------------------------------------------------
# Methods without learning
# ----------------------------------------------------------------------------------------------------

def box_fill(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The whole box is foreground."""
    return box_masks(image.shape[:2], boxes)


def ellipse(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The ellipse inscribed in each box (pixel centres inside it)."""
    rows, cols = np.arange(image.shape[0])[:, None], np.arange(image.shape[1])[None, :]
    masks = []
    for x0, y0, x1, y1 in boxes:
        centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
        half_width, half_height = (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
        masks.append(((cols - centre_x) / half_width) ** 2 + ((rows - centre_y) / half_height) ** 2 <= 1)
    return np.stack(masks)


def grabcut_method(seed: int) -> Method:
    """OpenCV's GrabCut initialised with each box; raises ImportError without OpenCV."""
    import cv2

    def grabcut(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(image)
        masks = []
        for x0, y0, x1, y1 in boxes.astype(int):
            labels = np.zeros(image.shape[:2], np.uint8)
            rectangle = (int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1))
            cv2.setRNGSeed(seed)
            try:
                cv2.grabCut(pixels, labels, rectangle, np.zeros((1, 65)), np.zeros((1, 65)), GRABCUT_ITERATIONS,
                            cv2.GC_INIT_WITH_RECT)
            except cv2.error as error:  # too few pixels outside the box to model the background
                print(f"grabcut failed on box {rectangle} (x, y, w, h), kept the box: {error.msg}")
                labels[y0 : y1 + 1, x0 : x1 + 1] = cv2.GC_FGD
            masks.append((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD))
        return np.stack(masks)

    return grabcut


# ----------------------------------------------------------------------------------------------------
# Specialist U-Net (benchmark only): crop around the box + a box channel
# ----------------------------------------------------------------------------------------------------

def specialist_network() -> UNet:
    """A small 2D U-Net: 5 stages of 16-128 channels, instance norm, 4 inputs (RGB + box), 1 logit."""
    stages = 5
    return UNet(4, 1, dims=2, features_per_stage=features_per_stage(stages, dims=2, base=16, cap=128),
                kernel_sizes=[[3, 3]] * stages, strides=[[1, 1]] + [[2, 2]] * (stages - 1), norm="instance")


def specialist_input(image: np.ndarray, box: np.ndarray, window: CropWindow) -> Tensor:
    """``(4, S, S)``: the window's pixels z-scored per crop, then 1 inside the box and 0 outside."""
    pixels = resize_crop(window.cut(image), SPECIALIST_CROP_SIZE)
    pixels = (pixels - pixels.mean()) / pixels.std().clamp_min(1.0)
    inside = resize_mask_crop(window.cut(box_masks(image.shape[:2], box[None])[0]), SPECIALIST_CROP_SIZE)
    return torch.cat([pixels, inside[None]])


def specialist_batch(samples: Sequence[PromptSample], rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """``(B, 4, S, S)`` inputs and ``(B, 1, S, S)`` masks with jittered boxes, random flips and quarter turns."""
    inputs, masks = [], []
    for index in rng.integers(len(samples), size=SPECIALIST_BATCH_SIZE):
        sample = samples[index]
        box = jittered_box(sample, rng, SPECIALIST_BOX_JITTER)
        window = CropWindow.around(box, SPECIALIST_CROP_MARGIN)
        pair = torch.cat([specialist_input(sample.image, box, window),
                          resize_mask_crop(window.cut(sample.mask), SPECIALIST_CROP_SIZE)[None]])
        pair = torch.rot90(pair, int(rng.integers(4)), dims=(1, 2))
        if rng.integers(2):
            pair = pair.flip(-1)
        inputs.append(pair[:4])
        masks.append(pair[4:])
    return torch.stack(inputs), torch.stack(masks)


def dice_bce_loss(logits: Tensor, masks: Tensor) -> Tensor:
    """Soft Dice (per sample, averaged) + binary cross-entropy, both on ``(B, 1, S, S)`` logits."""
    probabilities = torch.sigmoid(logits)
    dims = (1, 2, 3)
    overlap = (probabilities * masks).sum(dims)
    soft_dice = (2 * overlap + 1e-5) / (probabilities.sum(dims) + masks.sum(dims) + 1e-5)
    return (1 - soft_dice).mean() + F.binary_cross_entropy_with_logits(logits, masks)


def train_specialist(samples: Sequence[PromptSample], minutes: float, seed: int) -> tuple[UNet, dict[str, Any]]:
    """Train on one thread for ``minutes`` of wall clock: AdamW, learning rate on a cosine of the elapsed time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network = specialist_network().train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=SPECIALIST_LR, weight_decay=1e-4)
    budget = 60.0 * minutes
    started, iterations, losses = time.perf_counter(), 0, []
    while (elapsed := time.perf_counter() - started) < budget:
        for group in optimizer.param_groups:
            group["lr"] = 0.5 * SPECIALIST_LR * (1 + math.cos(math.pi * elapsed / budget))
        inputs, masks = specialist_batch(samples, rng)
        loss = dice_bce_loss(network(inputs), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        iterations += 1
    torch.set_num_threads(threads)
    info = {"train_objects": len(samples), "iterations": iterations, "batch_size": SPECIALIST_BATCH_SIZE,
            "train_seconds": time.perf_counter() - started, "final_loss": float(np.mean(losses[-20:])),
            "parameters": sum(p.numel() for p in network.parameters()), "crop_size": SPECIALIST_CROP_SIZE,
            "crop_margin": SPECIALIST_CROP_MARGIN, "box_jitter": SPECIALIST_BOX_JITTER, "lr": SPECIALIST_LR}
    return network.eval(), info


def specialist_method(network: UNet) -> Method:
    """Each box's window through the U-Net, logits pasted back into the image, thresholded at 0."""

    @torch.inference_mode()
    def specialist_unet(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        windows = [CropWindow.around(box, SPECIALIST_CROP_MARGIN) for box in boxes]
        inputs = torch.stack([specialist_input(image, box, window) for box, window in zip(boxes, windows)])
        logits = network(inputs)
        return np.stack([(paste_window(window, logits[i : i + 1], image.shape[:2]) > 0)[0, 0].numpy()
                         for i, window in enumerate(windows)])

    return specialist_unet


# ----------------------------------------------------------------------------------------------------
# The SAM-architecture model
# ----------------------------------------------------------------------------------------------------

def sam_model_to_test(checkpoint: str | None, untrained: bool) -> tuple[Sam, str]:
    """The model and a description of it: a checkpoint, the packaged model, or (smoke tests) random weights."""
    if untrained:
        print("WARNING: sam_model is an UNTRAINED vit_cpu model (--untrained-model): its scores mean nothing")
        return build_sam("vit_cpu"), "untrained vit_cpu (smoke test)"
    return load_model(checkpoint), checkpoint or "packaged model (gnnseg.seg.sam.shipped)"


def sam_method(model: Sam) -> Method:
    """All boxes of an image through one ``SamPredictor.set_image`` and one batched ``predict``."""
    predictor = SamPredictor(model)

    def sam_model(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        predictor.set_image(image)
        return predictor.predict(boxes=boxes).masks[:, 0]

    return sam_model


# ----------------------------------------------------------------------------------------------------
# Evaluation and reports
# ----------------------------------------------------------------------------------------------------

def evaluate(method: Method, samples: Sequence[PromptSample], boxes: np.ndarray) -> dict[str, Any]:
    """Per-object DSC and NSD, seconds per object (the method only), and the first object's mask.

    Objects that share an image are passed to the method together, in one call.
    """
    by_image: dict[int, list[int]] = {}
    for index, sample in enumerate(samples):
        by_image.setdefault(id(sample.image), []).append(index)
    dsc, nsd = np.zeros(len(samples)), np.zeros(len(samples))
    seconds, first_mask = 0.0, None
    for indices in by_image.values():
        started = time.perf_counter()
        masks = method(samples[indices[0]].image, boxes[indices])
        seconds += time.perf_counter() - started
        for index, mask in zip(indices, masks):
            truth = samples[index].mask
            dsc[index] = dice(mask, truth)
            nsd[index] = normalized_surface_dice(mask, truth, tolerance_mm=NSD_TOLERANCE_PIXELS, spacing=(1.0, 1.0))
            if index == 0:
                first_mask = mask
    return {"dsc": dsc, "nsd": nsd, "seconds_per_object": seconds / len(samples), "first_mask": first_mask}


def markdown_tables(scores: dict[str, dict[str, dict[str, Any]]], counts: dict[str, int],
                    methods: Sequence[str]) -> str:
    """Mean DSC / NSD per modality and method, then milliseconds per object; ``-`` where a method did not run."""
    header = "| modality | n | " + " | ".join(methods) + " |\n|---|---|" + "---|" * len(methods) + "\n"
    accuracy, speed = header, header
    for modality, by_method in scores.items():
        n = counts[modality]
        cells = [f"{by_method[m]['dsc'].mean():.3f} / {by_method[m]['nsd'].mean():.3f}" if m in by_method else "-"
                 for m in methods]
        times = [f"{1000 * by_method[m]['seconds_per_object']:.1f}" if m in by_method else "-" for m in methods]
        accuracy += f"| {modality} | {n} | " + " | ".join(cells) + " |\n"
        speed += f"| {modality} | {n} | " + " | ".join(times) + " |\n"
    return (f"Mean DSC / NSD ({NSD_TOLERANCE_PIXELS:g}-pixel tolerance) per held-out object\n\n{accuracy}\n"
            f"Milliseconds per object\n\n{speed}")


def save_figure(samples: dict[str, list[PromptSample]], boxes: dict[str, np.ndarray],
                scores: dict[str, dict[str, dict[str, Any]]], methods: Sequence[str], path: Path) -> Path:
    """One row per modality (its first held-out object): image with box, ground truth, each method's mask."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    columns = ["image + box", "ground truth", *methods]
    figure, axes = plt.subplots(len(scores), len(columns), figsize=(2.2 * len(columns), 2.3 * len(scores)),
                                squeeze=False)
    for row, (modality, by_method) in enumerate(scores.items()):
        sample, (x0, y0, x1, y1) = samples[modality][0], boxes[modality][0]
        overlays = {"ground truth": sample.mask, **{m: by_method[m]["first_mask"] for m in by_method}}
        for column, name in enumerate(columns):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=9)
            if name not in overlays and name != "image + box":
                axis.text(0.5, 0.5, "not run", ha="center", va="center", transform=axis.transAxes)
                continue
            axis.imshow(sample.image)
            if name == "image + box":
                axis.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, color="yellow"))
            elif name in overlays:
                axis.imshow(np.ma.masked_where(~overlays[name], overlays[name]), cmap="autumn", alpha=0.5,
                            vmin=0, vmax=1)
                if name in by_method:
                    axis.set_xlabel(f"DSC {by_method[name]['dsc'][0]:.2f}", fontsize=8)
        axes[row, 0].set_ylabel(modality)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--box-margin", type=int, default=5, help="pixels added to each side of the tight box")
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--max-objects", type=int, default=None, help="first N held-out objects per modality")
    parser.add_argument("--specialist-minutes", type=float, default=7.0, help="one-thread training budget")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", default=None, help="sam_model weights (default: the packaged model)")
    model.add_argument("--untrained-model", action="store_true", help="random sam_model weights (smoke tests)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads outside specialist training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.max_objects is not None and args.max_objects < 1:
        parser.error(f"--max-objects must be at least 1, got {args.max_objects}")
    return args


def build_methods(args: argparse.Namespace) -> tuple[dict[str, Method], dict[str, str], dict[str, Any]]:
    """The methods that can run, the skipped ones with the reason, and what to record about the trained ones."""
    methods: dict[str, Method] = {}
    skipped: dict[str, str] = {}
    details: dict[str, Any] = {}
    for name in args.methods:
        if name == "box_fill":
            methods[name] = box_fill
        elif name == "ellipse":
            methods[name] = ellipse
        elif name == "grabcut":
            try:
                methods[name] = grabcut_method(args.seed)
            except ImportError as error:
                skipped[name] = f"OpenCV is missing ({error}); pip install 'gnnseg[bench]'"
        elif name == "sam_model":
            try:
                model, details[name] = sam_model_to_test(args.checkpoint, args.untrained_model)
            except (CheckpointError, FileNotFoundError) as error:
                raise SystemExit(f"sam_model: {error} (--untrained-model runs a smoke test without weights)") \
                    from error
            methods[name] = sam_method(model)
        elif not set(SPECIALIST_MODALITIES) & set(args.modalities):
            skipped[name] = f"runs only on {', '.join(SPECIALIST_MODALITIES)}"
        else:
            train = load_corpus(args.data, "train", SPECIALIST_MODALITIES)
            print(f"training the specialist U-Net for {args.specialist_minutes:g} min on one thread ...")
            network, details[name] = train_specialist(
                [s for m in SPECIALIST_MODALITIES for s in train[m]], args.specialist_minutes, args.seed)
            print(f"  {details[name]['iterations']} iterations, final loss {details[name]['final_loss']:.3f}")
            methods[name] = specialist_method(network)
    for name, reason in skipped.items():
        print(f"skipping {name}: {reason}")
    return methods, skipped, details


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    started = time.perf_counter()
    methods, skipped, details = build_methods(args)
    held_out = load_corpus(args.data, "val", tuple(args.modalities))
    samples = {m: objects[: args.max_objects] for m, objects in held_out.items()}
    boxes = {m: np.stack([grown_box(s, args.box_margin) for s in objects]) for m, objects in samples.items()}
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    for modality, objects in samples.items():
        scores[modality] = {}
        for name, method in methods.items():
            if name == "specialist_unet" and modality not in SPECIALIST_MODALITIES:
                continue
            print(f"{modality}: {name} on {len(objects)} objects ...")
            scores[modality][name] = evaluate(method, objects, boxes[modality])

    names = [name for name in METHODS if name in methods]
    tables = markdown_tables(scores, {m: len(objects) for m, objects in samples.items()}, names)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "sam_box_prompt", "machine": machine_info(),
        "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])), "arguments": vars(args),
        "box": f"tight box + {args.box_margin} px per side, clipped to the image",
        "nsd_tolerance_pixels": NSD_TOLERANCE_PIXELS, "skipped": skipped, "methods": details,
        "results": {modality: {name: {"dsc": s["dsc"].mean(), "nsd": s["nsd"].mean(), "n": len(s["dsc"]),
                                      "seconds_per_object": s["seconds_per_object"]} for name, s in by.items()}
                    for modality, by in scores.items()},
        "targets": {"specialist_unet_endoscopy_dsc": SPECIALIST_REPORTED_DSC},
        "reference": "MedSAM (Ma et al., Nat Commun 15:654, 2024): one box-prompted model matches or beats "
                     "modality-specific U-Nets",
        "total_seconds": time.perf_counter() - started,
    }
    if "endoscopy" in scores:
        result["endoscopy_per_object"] = {"source": [s.source for s in samples["endoscopy"]],
                                          **{f"dsc_{n}": s["dsc"] for n, s in scores["endoscopy"].items()}}
    write_json(args.out_dir / "sam_box_prompt.json", result)
    (args.out_dir / "sam_box_prompt.md").write_text(f"# Box-prompted segmentation\n\n{tables}")
    save_figure(samples, boxes, scores, names, args.out_dir / "sam_box_prompt_examples.png")
    print(tables)


if __name__ == "__main__":
    main()
