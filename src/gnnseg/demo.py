"""``gnnseg demo``: the main job on embedded data, no network, a few minutes on two cores.

Three parts:

1. Graphs: a GCN learns 2D embeddings of Zachary's karate club from two labeled members, for 1 to 5
   layers (``karate_embeddings.png``).
2. Segmentation: the self-configuring U-Net pipeline (fingerprint, plans, preprocessing, training,
   sliding-window prediction) on generated cell images, scored on images it never saw
   (``unet_synthetic_cells.png``).
3. Box prompts: the packaged MedSAM-style model segments each generated cell inside its box, with no training
   (``box_prompted_cells.png``).

Writes ``runs/demo/<time>/`` with ``config.json``, ``metrics.json`` and the pictures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gnnseg.core import new_run  # noqa: E402
from gnnseg.gnn.datasets.karate import CLUBS  # noqa: E402
from gnnseg.gnn.plots import plot_embeddings  # noqa: E402
from gnnseg.gnn.tasks.karate_embeddings import KARATE_CONFIG, karate_embeddings  # noqa: E402
from gnnseg.seg.io import MedicalImage, write_raw_dataset  # noqa: E402
from gnnseg.seg.metrics import dice  # noqa: E402
from gnnseg.seg.sam.inference.box_prompted import box_prompted_masks, grown_box  # noqa: E402
from gnnseg.seg.sam.shipped import load_shipped_model  # noqa: E402
from gnnseg.seg.sam.training.samples import samples_from_image  # noqa: E402
from gnnseg.seg.synthetic_cells import synthetic_cells  # noqa: E402
from gnnseg.seg.unet.case_preprocessing import preprocess_dataset  # noqa: E402
from gnnseg.seg.unet.fingerprint import extract_fingerprint  # noqa: E402
from gnnseg.seg.unet.planner import plan_experiment  # noqa: E402
from gnnseg.seg.unet.predict import predict_case  # noqa: E402
from gnnseg.seg.unet.train import TrainConfig, load_trained_network, train_fold  # noqa: E402

DEMO_SEGMENTATION = {"train_images": 16, "test_images": 4, "size": 64, "epochs": 20, "iterations": 20,
                     "base_features": 8}


def segmentation_demo(folder: Path, seed: int = 0) -> dict[str, Any]:
    """Plan, train and test a small U-Net on generated cells; returns Dice on the unseen images."""
    settings = DEMO_SEGMENTATION
    def case(k):
        image, mask = synthetic_cells(settings["size"], seed=seed * 1000 + k)
        return f"cells_{k:03d}", [MedicalImage(image, (1.0, 1.0))], MedicalImage(mask, (1.0, 1.0))

    dataset = write_raw_dataset(folder / "raw", channel_names=["microscopy"], labels={"background": 0, "cell": 1},
                                file_ending=".png", training=[case(k) for k in range(settings["train_images"])])
    plans = plan_experiment(extract_fingerprint(dataset), device="cpu", memory_gb=1.0,
                            base_features=settings["base_features"])
    plans.save(folder / "plans.json")
    preprocess_dataset(dataset, plans, "2d", folder / "preprocessed")
    config = TrainConfig(epochs=settings["epochs"], iterations_per_epoch=settings["iterations"],
                         validation_iterations=2, seed=seed)
    train_fold(folder / "preprocessed", plans, "2d", "all", folder / "training", config, show_progress=False)
    network, plans, configuration = load_trained_network(folder / "training" / "checkpoint_latest.pth")
    tests = [case(10_000 + k) for k in range(settings["test_images"])]
    figure, axes = plt.subplots(2, len(tests), figsize=(3 * len(tests), 6))
    scores = []
    for column, (_, (image,), truth) in enumerate(tests):
        predicted, _ = predict_case(network, image.array[None].astype(np.float32), image.spacing, plans, configuration)
        scores.append(dice(predicted == 1, truth.array == 1))
        axes[0, column].imshow(image.array, cmap="gray")
        axes[0, column].contour(truth.array, levels=[0.5], colors="lime", linewidths=1)
        axes[0, column].set_title("image, true outline", fontsize=9)
        axes[1, column].imshow(image.array, cmap="gray")
        axes[1, column].imshow(np.ma.masked_where(predicted == 0, predicted), cmap="autumn", alpha=0.5)
        axes[1, column].set_title(f"U-Net: Dice {scores[-1]:.2f}", fontsize=9)
    for axis in axes.flat:
        axis.axis("off")
    figure.suptitle("Self-configured U-Net on unseen synthetic cells")
    figure.tight_layout()
    path = folder / "unet_synthetic_cells.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return {"test_dice_mean": float(np.mean(scores)), "test_dice": scores, "figure": str(path),
            "patch_size": list(plans.configuration("2d").patch_size)}


def box_prompt_demo(folder: Path, seed: int = 0, images: int = 3) -> dict[str, Any]:
    """The packaged box-prompted model on generated cells it never saw: one box per cell, 5 pixels of margin."""
    model = load_shipped_model()
    figure, axes = plt.subplots(1, images, figsize=(4 * images, 4.3))
    scores = []
    for column in range(images):
        image, mask = synthetic_cells(256, cells=(3, 6), seed=seed * 1000 + 50_000 + column)
        samples = samples_from_image(image, mask, f"cells_{column}", min_pixels=50)
        predicted = box_prompted_masks(model, samples, margin=5)
        scores += [dice(p, s.mask) for p, s in zip(predicted, samples)]
        axes[column].imshow(image, cmap="gray")
        for prediction, sample in zip(predicted, samples):
            x0, y0, x1, y1 = grown_box(sample, 5)
            axes[column].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="cyan", lw=1))
            axes[column].contour(prediction, levels=[0.5], colors="orange", linewidths=1.2)
        axes[column].set_title(f"{len(samples)} boxes, mean Dice {np.mean(scores[-len(samples):]):.2f}", fontsize=9)
        axes[column].axis("off")
    figure.suptitle("Packaged box-prompted model (no training here): boxes cyan, masks orange")
    figure.tight_layout()
    path = folder / "box_prompted_cells.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return {"objects": len(scores), "dice_mean": float(np.mean(scores)), "figure": str(path)}


def run_demo(runs_root: str | os.PathLike = "runs", seed: int = 0) -> dict[str, Any]:
    run = new_run("demo", runs_root)
    run.save_config({"seed": seed, "karate": {"depths": [1, 2, 3, 4, 5], "labeled_nodes": [0, 33],
                                              "training": vars(KARATE_CONFIG)},
                     "segmentation": DEMO_SEGMENTATION})
    outcomes, graph = karate_embeddings(range(1, 6), seed)
    figure = plot_embeddings(
        [(f"{o.num_layers} layer{'s' if o.num_layers > 1 else ''}: acc {o.accuracy:.2f}", o.embedding)
         for o in outcomes],
        graph.y, graph.train_mask, run.figure_path("karate_embeddings"),
        "GCN embeddings of Zachary's karate club, 2 labeled members (stars)", CLUBS)
    metrics = {"karate": {f"layers_{o.num_layers}": {"unlabeled_accuracy": o.accuracy, "train_loss": o.final_loss}
                          for o in outcomes}}
    run.log_metrics(**metrics)
    segmentation = segmentation_demo(run.path / "segmentation", seed)
    (run.path / "unet_synthetic_cells.png").write_bytes(Path(segmentation.pop("figure")).read_bytes())
    run.log_metrics(segmentation=segmentation)
    box_prompts = box_prompt_demo(run.path, seed)
    run.log_metrics(box_prompts=box_prompts)
    return {"run_dir": str(run.path),
            "figures": [str(figure), str(run.path / "unet_synthetic_cells.png"), box_prompts["figure"]],
            **metrics, "segmentation": segmentation, "box_prompts": box_prompts}
