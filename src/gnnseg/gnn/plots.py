"""Figures for graph tasks: training curves and 2D node embeddings (PNG, matplotlib Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402


def plot_training_curves(history: dict[str, list[float]], path: Path, title: str) -> Path:
    """Loss (left) and accuracy (right) per epoch for every split in ``history``."""
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, values in history.items():
        if not values:
            continue
        axis = loss_axis if key.endswith("_loss") else acc_axis
        axis.plot(range(1, len(values) + 1), values, label=key.rsplit("_", 1)[0])
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for axis in (loss_axis, acc_axis):
        axis.legend(), axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_embeddings(panels: Sequence[tuple[str, Tensor]], labels: Tensor, highlighted: Tensor, path: Path,
                    title: str, class_names: Sequence[str]) -> Path:
    """One scatter panel per ``(caption, embedding (N, 2))``; points coloured by ``labels``, the nodes in
    ``highlighted`` (a bool mask, e.g. the labeled ones) drawn as large outlined stars."""
    figure, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.6), squeeze=False)
    colours = plt.get_cmap("tab10")
    for axis, (caption, embedding) in zip(axes[0], panels):
        points = embedding.detach().cpu().numpy()
        for label, name in enumerate(class_names):
            chosen = (labels == label).numpy()
            axis.scatter(points[chosen, 0], points[chosen, 1], s=28, color=colours(label), label=name, alpha=0.85)
        marked = highlighted.numpy()
        axis.scatter(points[marked, 0], points[marked, 1], s=220, marker="*", facecolors="none",
                     edgecolors="black", linewidths=1.4, label="labeled")
        axis.set_title(caption, fontsize=10)
        axis.set_xticks([]), axis.set_yticks([])
    axes[0][0].legend(fontsize=8, loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
