"""Figures as PNG files (matplotlib, Agg; no pyplot state, safe in scripts and tests).

Each function draws one figure and writes it to ``path`` (parent folders created), returning
the path. Titles and axis labels name what is shown, so the PNGs read without the code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHANNEL_NAMES = {
    "rgb": ("R", "G", "B"),
    "hsv": ("H", "S", "V"),
    "lab": ("L*", "a*", "b*"),
    "hed": ("Haematoxylin", "Eosin", "DAB"),
}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi)
    return path


def _image_axis(ax, image, title=None, cmap=None, vmin=None, vmax=None):
    ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def plot_confusion_matrix(cm, class_names, path, title: str = "Confusion matrix") -> Path:
    """Confusion matrix (rows true, columns predicted): colour = row share, text = count and %."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(class_names)
    fig = _figure(1.2 * n + 2.0, 1.1 * n + 1.4)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(cm[i, j])}\n{100 * share[i, j]:.1f}%", ha="center",
                    va="center", color=colour, fontsize=9)
    ax.set_xticks(range(n), class_names)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(f"{title} (n = {int(cm.sum())})", fontsize=10)
    fig.colorbar(im, ax=ax, label="share of the true class")
    return _save(fig, path)


def plot_parallel_coordinates(rows: list[dict], metrics, path, label_key: str = "model",
                              title: str = "Standardised metrics per model") -> Path:
    """Parallel coordinates of z-scored metrics (the paper's Figure 2).

    Args:
        rows: one dict per line (e.g. a model's mean metrics) with ``label_key`` and ``metrics``.
        metrics: the metric keys, one axis each; each is standardised over the rows
            ((x - mean) / sd; sd 0 -> 0), so axes with different spreads are comparable.
    """
    metrics = list(metrics)
    values = np.array([[float(r[m]) if r.get(m) not in (None, "") else np.nan for m in metrics]
                       for r in rows])
    mean = np.nanmean(values, axis=0)
    sd = np.nanstd(values, axis=0)
    z = np.divide(values - mean, sd, out=np.zeros_like(values), where=sd > 0)
    fig = _figure(1.3 * len(metrics) + 3.0, 4.0)
    ax = fig.add_subplot()
    for row, line in zip(rows, z, strict=True):
        ax.plot(range(len(metrics)), line, marker="o", label=str(row[label_key]))
    for i in range(len(metrics)):
        ax.axvline(i, color="grey", lw=0.5)
    lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    ax.set_xticks(range(len(metrics)), [f"{m.replace('macro_', '')}\n{100 * a:.1f}-{100 * b:.1f} %"
                                        for m, a, b in zip(metrics, lo, hi, strict=True)])
    ax.set_ylabel("z-score across models")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def history_columns(path) -> dict[str, list[float]]:
    """history.csv as column -> list of floats, one per recorded epoch.

    Raises:
        ValueError: no epoch recorded (the file is missing or empty).
    """
    from all_tf.training.callbacks import read_history

    rows = read_history(path)
    if not rows:
        raise ValueError(f"{path}: no epochs recorded")
    return {k: [float(r[k]) for r in rows] for k in rows[0]}


def plot_training_curves(history_csv, path, title: str = "Training curves") -> Path:
    """Loss and accuracy per epoch (train and validation) from a run's history.csv.

    A dotted line marks the switch from cross-entropy to focal loss when the history has a
    ``focal_weight`` (or ``focal``) column (the loss values before and after the switch are not comparable).
    """
    hist = history_columns(history_csv)
    epochs = hist.get("epoch") or list(range(len(next(iter(hist.values())))))
    epochs = np.asarray(epochs) + (1 if "epoch" in hist and min(epochs) == 0 else 0)
    panels = [("loss", "loss"), ("accuracy", "accuracy")]
    if "learning_rate" in hist:
        panels.append(("learning_rate", "learning rate"))
    fig = _figure(4.5 * len(panels), 3.5)
    for k, (name, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            if key in hist:
                ax.plot(epochs, hist[key], style, marker=".", label=key)
        focal_key = "focal_weight" if "focal_weight" in hist else "focal"
        if focal_key in hist:
            focal = np.asarray(hist[focal_key])
            switch = np.flatnonzero(focal > 0.5)
            if switch.size and switch[0] > 0:
                ax.axvline(epochs[switch[0]] - 0.5, color="grey", ls=":", label="focal loss from")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _montage(crops: np.ndarray, max_tiles: int = 4) -> np.ndarray:
    """Up to ``max_tiles`` crops side by side in a 2x2 grid (uint8)."""
    crops = crops[:max_tiles]
    size = crops.shape[1]
    grid = np.full((2 * size + 2, 2 * size + 2, 3), 255, np.uint8)
    for k, crop in enumerate(crops):
        y, x = divmod(k, 2)
        grid[y * (size + 2):y * (size + 2) + size, x * (size + 2):x * (size + 2) + size] = crop
    return grid


def plot_segmentation_panel(images, path, seg_cfg=None, title: str = "Nucleus segmentation",
                            peak_fraction: float = 0.5) -> Path:
    """Rows of: original, purple index, nucleus mask, watershed ridges (red), nucleus crops.

    Args:
        images: list of ``(name, rgb uint8 (H, W, 3))``.
        seg_cfg: ``SegmentationConfig`` (default settings if None).
    """
    from all_tf.config import SegmentationConfig
    from all_tf.segmentation import (
        nucleus_crops,
        overlay_ridges,
        purple_index,
        segment_nuclei,
        watershed_nuclei,
    )

    seg_cfg = seg_cfg or SegmentationConfig()
    fig = _figure(12.0, 2.5 * len(images) + 0.5)
    axes = fig.subplots(len(images), 5, squeeze=False)
    for row, (name, rgb) in zip(axes, images, strict=True):
        mask = segment_nuclei(rgb, seg_cfg)
        labels = watershed_nuclei(rgb, peak_fraction=peak_fraction)
        crops = nucleus_crops(rgb, mask, size=96, max_crops=4)
        n_nuclei = int(labels.max())
        crop_title = "whole image (no nucleus)" if crops.fallback else f"{len(crops.crops)} crop(s)"
        _image_axis(row[0], rgb, f"{name}")
        _image_axis(row[1], purple_index(rgb), "purple index (R+B)/2-G", cmap="magma")
        _image_axis(row[2], mask, f"nucleus mask ({seg_cfg.method})", cmap="gray")
        _image_axis(row[3], overlay_ridges(rgb, labels), f"watershed: {n_nuclei} nuclei")
        _image_axis(row[4], _montage(crops.crops), crop_title)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _stretch(channel: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(channel, (1, 99))
    return np.clip((channel - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(channel)


def plot_colour_spaces(rgb, path, spaces=("rgb", "hsv", "lab", "hed"),
                       title: str = "Colour spaces of the model input") -> Path:
    """The paper's Figure 9: per colour space, the model input and each channel.

    Column 1 shows the three mapped channels as an RGB composite on the fixed [0, 1] scale
    the model sees; the channel columns are contrast-stretched (1st-99th percentile of this
    image) for display, since smear pixels use a small part of some fixed ranges (HED).
    """
    from all_tf.preprocessing import to_colour_space

    rgb01 = np.asarray(rgb, dtype=np.float32) / 255.0
    fig = _figure(10.0, 2.4 * len(spaces) + 0.5)
    axes = fig.subplots(len(spaces), 4, squeeze=False)
    for row, space in zip(axes, spaces, strict=True):
        conv = to_colour_space(rgb01, space)
        _image_axis(row[0], conv, f"{space.upper()} as model input")
        for c in range(3):
            _image_axis(row[c + 1], _stretch(conv[..., c]),
                        f"{space.upper()}: {CHANNEL_NAMES[space][c]} (stretched)",
                        cmap="gray", vmin=0.0, vmax=1.0)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_gradcam_grid(items, path, ncols: int = 4, title: str = "Grad-CAM") -> Path:
    """Grid of Grad-CAM overlays.

    Args:
        items: list of dicts with ``overlay`` (uint8 RGB), ``true`` and ``pred`` (class names)
            and ``confidence`` (float); the title of each tile says all three.
    """
    if not items:
        raise ValueError("no Grad-CAM items to plot")
    nrows = -(-len(items) // ncols)
    fig = _figure(2.6 * ncols, 2.8 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, item in zip(axes, items, strict=False):
        ok = "" if item["true"] == item["pred"] else " (wrong)"
        empty = "\n(empty map: no positive gradient)" if item.get("empty") else ""
        _image_axis(ax, item["overlay"],
                    f"true {item['true']}\npred {item['pred']} {item['confidence']:.2f}{ok}{empty}")
    for ax in axes[len(items):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)
