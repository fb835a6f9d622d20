"""Plots a person wants to look at: learning curves and the confusion matrix (PNG, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from transferkit.runs import atomic_path


def plot_learning_curves(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Loss and accuracy per epoch (train and source-validation), one line per phase and seed."""
    if not records:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    keys = sorted({(r.get("phase", "train"), r.get("seed", 0)) for r in records})
    for phase, seed in keys:
        rs = [r for r in records if r.get("phase", "train") == phase and r.get("seed", 0) == seed]
        epochs = [r["epoch"] + 1 for r in rs]
        label = phase if len({k[1] for k in keys}) == 1 else f"{phase} s{seed}"
        ax_loss.plot(epochs, [r["train_loss"] for r in rs], marker=".", label=f"{label} train")
        ax_acc.plot(epochs, [r["train_acc"] for r in rs], marker=".", label=f"{label} train")
        if any("val_acc" in r for r in rs):
            ax_loss.plot(epochs, [r.get("val_loss") for r in rs], ls="--", marker=".", label=f"{label} val")
            ax_acc.plot(epochs, [r.get("val_acc") for r in rs], ls="--", marker=".", label=f"{label} val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (source)", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Row-normalised confusion matrix with counts in the cells (rows: true class, columns: predicted)."""
    import numpy as np

    cm = np.asarray(matrix, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    size = min(12.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    ax.set_xticks(range(n), classes, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    return _save(fig, path)


def plot_bars(rows: dict[str, tuple[float, float]], path: str | Path, title: str, ylabel: str = "accuracy") -> Path:
    """Mean ± std bars, one per named setting (the demo's comparison of strategies)."""
    fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 2, 3.8))
    names = list(rows)
    means = [rows[k][0] for k in names]
    stds = [rows[k][1] for k in names]
    bars = ax.bar(names, means, yerr=stds, capsize=4, color="#4C72B0")
    for b, m in zip(bars, means, strict=True):
        ax.text(b.get_x() + b.get_width() / 2, m + 0.02, f"{m:.3f}", ha="center", fontsize=8)
    ax.set(ylim=(0, 1.08), ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
