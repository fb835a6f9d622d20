"""Plots a person wants to look at: learning curves, the confusion matrix and a 2-D map of source and target
features before and after adaptation (PNG, headless).

Every string drawn is plain text: class names, domain names and run names are data, and matplotlib would parse
``$...$`` in them as math (``$\\notacommand{x}$`` raises, after the whole run has trained). Each plotting function
runs under :func:`_plain_text`, which switches matplotlib's math parsing and LaTeX off for the texts it creates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from transferkit.runs import atomic_path
from transferkit.ui import console

F = TypeVar("F", bound=Callable[..., Any])
# text.parse_math is read when each Text is created, so every label, tick, legend entry and title made inside the
# context stays literal; usetex off too, in case a user's matplotlibrc turns LaTeX on for all text
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def _plain_text(fn: F) -> F:
    """Run ``fn`` with matplotlib drawing every string literally (no mathtext, no LaTeX)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with plt.rc_context(PLAIN_TEXT):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@_plain_text
def plot_learning_curves(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Loss and accuracy per epoch (train and source-validation), one line per phase and seed; a regression primary
    head shows its validation MAE instead of accuracy."""
    if not records:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for r in records:  # one pass: a foreign metrics.jsonl of 20,000 seeds was rescanned once per curve
        groups.setdefault((r.get("phase", "train"), r.get("seed", 0)), []).append(r)
    every = sorted(groups, key=lambda k: (str(k[0]), k[1] if isinstance(k[1], int) else 0, str(k[1])))
    keys = every[:MAX_CURVES]
    val = next((k for k in ("val_acc", "val_mae", "val_micro_f1") if any(k in r for r in records)), "val_acc")
    mae = val == "val_mae"
    for phase, seed in keys:
        rs = groups[(phase, seed)]
        epochs = [r["epoch"] + 1 for r in rs]
        label = phase if len({k[1] for k in keys}) == 1 else f"{phase} s{seed}"
        ax_loss.plot(epochs, [r["train_loss"] for r in rs], marker=".", label=f"{label} train")
        if any("train_acc" in r for r in rs):
            ax_acc.plot(epochs, [r.get("train_acc") for r in rs], marker=".", label=f"{label} train")
        if any(val in r for r in rs):
            ax_loss.plot(epochs, [r.get("val_loss") for r in rs], ls="--", marker=".", label=f"{label} val")
            ax_acc.plot(epochs, [r.get(val) for r in rs], ls="--", marker=".", label=f"{label} val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    if mae:
        ax_acc.set(xlabel="epoch", ylabel="MAE", title="validation MAE (source)")
    elif val == "val_micro_f1":
        ax_acc.set(xlabel="epoch", ylabel="micro-F1", title="micro-F1 (source)", ylim=(0, 1.02))
    else:
        ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (source)", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # records without accuracy leave the right panel empty
            ax.legend(fontsize=7)
    if len(every) > MAX_CURVES:
        title = f"{title} (the first {MAX_CURVES} of {len(every)} phase/seed curves)".strip()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# A plot is drawn from a run folder that may come from elsewhere: its size follows the data, within bounds. Tick
# labels past a few dozen classes are unreadable (and cost seconds per hundred); a matrix past a thousand classes is
# an unreadable million-cell image, and a report naming 20,000 classes drew for minutes and gigabytes.
MAX_LABELLED_CLASSES = 60
MAX_CONFUSION_CLASSES = 1000
MAX_CURVES = 24


@_plain_text
def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str = ""
) -> Path | None:
    """Row-normalised confusion matrix with counts in the cells (rows: true class, columns: predicted); class names
    on the axes up to :data:`MAX_LABELLED_CLASSES`; None (nothing drawn) past :data:`MAX_CONFUSION_CLASSES` or for
    a matrix that is not classes x classes."""
    import numpy as np

    n = len(classes)
    if n > MAX_CONFUSION_CLASSES or not _square(matrix, n):
        return None
    cm = np.asarray(matrix, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(12.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    if n <= MAX_LABELLED_CLASSES:
        names = [short_label(c) for c in classes]
        ax.set_xticks(range(n), names, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
        ax.set_yticks(range(n), names)
        ax.set(xlabel="predicted", ylabel="true")
    else:
        ax.set(xlabel="predicted (class index)", ylabel="true (class index)")
    ax.set(title=title or "confusion matrix")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    return _save(fig, path)


def _square(matrix: Sequence[Sequence[int]], n: int) -> bool:
    try:
        return len(matrix) == n and all(len(row) == n for row in matrix)
    except TypeError:  # a row that is a number
        return False


@_plain_text
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


# Fewer points than this get a PCA map: t-SNE's neighbourhoods (perplexity 30) need a few times more points.
TSNE_MIN_POINTS = 100
SOURCE_COLOUR, TARGET_COLOUR = "#3b6fb6", "#e0812f"


def map_method(n_points: int) -> str:
    """The 2-D embedding a feature map of ``n_points`` uses: ``"t-SNE"``, or ``"PCA"`` for few points."""
    return "t-SNE" if n_points >= TSNE_MIN_POINTS else "PCA"


def embed_2d(x: Any, method: str, seed: int = 0) -> Any:
    """``(N, D)`` features -> ``(N, 2)`` with ``method`` ("t-SNE" or "PCA"; deterministic for one ``seed``)."""
    import numpy as np
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    x = np.nan_to_num(x - x.mean(0))
    n, d = x.shape
    if n < 3 or d < 2:  # nothing to project: pad to two columns
        return np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - min(d, 2)))))
    if method == "PCA":
        return PCA(2, random_state=seed).fit_transform(x)
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    if d > 50:  # the usual first step: t-SNE on the 50 leading principal components
        x = PCA(min(50, n), random_state=seed).fit_transform(x)
    # 500 iterations (250 of them early exaggeration) settle a map of ~1,000 points: 40% quicker than 1,000.
    tsne = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", learning_rate="auto", max_iter=500,
                random_state=seed)
    # One thread: on a map's ~1,000 points OpenMP threads gain little, and on a busy machine their spin-waiting
    # makes t-SNE several times slower (measured: 4.6 s with 2 threads vs 0.6 s with 1 for 132 points).
    with threadpool_limits(limits=1):
        return tsne.fit_transform(x)


@_plain_text
def plot_feature_map(
    after: tuple[Any, Any], path: str | Path, *, before: tuple[Any, Any] | None = None,
    source_labels: Any = None, classes: Sequence[str] | None = None, title: str = "",
) -> tuple[Path, str]:
    """Source and target features in 2-D, coloured by domain: the source-only model's ("before", when given)
    beside the adapted model's ("after"). Each ``(source, target)`` pair is embedded on its own (the panels'
    axes are not comparable). ``source_labels`` (source items only) add a row coloured by source class, with the
    target in grey: target labels take no part. Returns the path and the embedding used (``map_method``)."""
    import numpy as np

    panels = [("before adaptation (source-only model)", before)] if before is not None else []
    panels.append(("after adaptation (adapted model)" if before is not None else "features of the model", after))
    n_points = len(after[0]) + len(after[1])
    method = map_method(n_points)
    embedded = []

    # a transient one-line status in a terminal (a t-SNE takes seconds); nothing in a log
    with console.status(f"feature map: {method} of {n_points} points x {len(panels)}"):
        for _, (src, tgt) in panels:
            src, tgt = np.asarray(src), np.asarray(tgt)
            z = embed_2d(np.concatenate([src, tgt]), method)
            embedded.append((z[: len(src)], z[len(src):]))
    by_class = source_labels is not None and len(source_labels) == len(after[0]) and len(after[0]) > 0
    # two models: one column each, the class colouring below; one model: its two colourings side by side
    shape = (2 if by_class else 1, 2) if len(panels) == 2 else (1, 2 if by_class else 1)
    fig, axes = plt.subplots(*shape, figsize=(5.2 * shape[1], 4.6 * shape[0]), squeeze=False)
    size = 14 if n_points <= 400 else 8
    for col, ((name, _), (zs, zt)) in enumerate(zip(panels, embedded, strict=True)):
        ax = axes[0, col]
        ax.scatter(zt[:, 0], zt[:, 1], s=size, c=TARGET_COLOUR, alpha=0.55, linewidths=0, label=f"target ({len(zt)})")
        ax.scatter(zs[:, 0], zs[:, 1], s=size, c=SOURCE_COLOUR, alpha=0.55, linewidths=0, label=f"source ({len(zs)})")
        ax.set_title(f"{name}\nby domain", fontsize=10)
        ax.legend(fontsize=8, loc="best", markerscale=1.5, frameon=False)
        if by_class:
            ax = axes[1, col] if len(panels) == 2 else axes[0, 1]
            labels = np.asarray(source_labels)
            ax.scatter(zt[:, 0], zt[:, 1], s=size, c="#c8c8c8", alpha=0.5, linewidths=0, label="target (unlabelled)")
            palette = _class_colours(int(labels.max()) + 1 if len(labels) else 0)
            for k in np.unique(labels):
                name_k = classes[int(k)] if classes is not None and 0 <= int(k) < len(classes) else str(k)
                m = labels == k
                ax.scatter(zs[m, 0], zs[m, 1], s=size, color=palette[int(k) % len(palette)], alpha=0.8,
                           linewidths=0, label=short_label(name_k))
            ax.set_title(("" if len(panels) == 2 else f"{name}\n") + "source coloured by its class, target grey",
                         fontsize=10)
            if len(np.unique(labels)) <= 12:
                ax.legend(fontsize=7, loc="best", markerscale=1.5, frameon=False, ncol=2)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_color("#bbbbbb")
    fig.suptitle(f"{title + ': ' if title else ''}{method} of the model's features", fontsize=11)
    fig.tight_layout()
    return _save(fig, path), method


def short_label(name: Any, limit: int = 40) -> str:
    """A class name as a tick or legend label: plain text, cut to ``limit`` characters (a name is data, and a
    10,000-character one would push the plot off its figure)."""
    text = " ".join(str(name).split())  # a newline or tab in a name would break the layout too
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _class_colours(n: int) -> list[Any]:
    """Colours of ``n`` classes; up to 7 avoid the domains' blue and orange (and the target's grey)."""
    tab10 = plt.get_cmap("tab10").colors
    if n <= 7:
        return [tab10[i] for i in (2, 3, 4, 5, 6, 8, 9)]
    return list(tab10) if n <= 10 else list(plt.get_cmap("tab20").colors)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
