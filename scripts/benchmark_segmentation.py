"""Score nucleus segmentation against the expert masks of segwbc (mask value 255 = nucleus).

For each dataset folder (dataset1, dataset2) and each method it reports the mean per-image
Dice and IoU of the cleaned mask (``clean_mask``, no lobe merging) and, for comparison, of the
raw colour threshold before morphology. Methods: Otsu and three-class Otsu on the purple
index, fixed PI thresholds (a sweep), and the per-channel RGB threshold. The best by mean
Dice over the datasets is named (the ``SegmentationConfig.method`` default).

A second table counts objects (8-connected components, what the input gate counts as
nuclei) per image, with lobe merging off and on (``merge_lobes``): segwbc has exactly one
white cell per image (the expert masks are counted too); ``--all4`` adds smear fields of
several cells, which have no ground truth (the distribution only).

Example:
    python scripts/benchmark_segmentation.py --data-dir ../shared/data/segwbc -o docs/seg.md
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]

NUCLEUS_VALUE = 255
NEUTROPHIL = 1  # segwbc labels.csv class of the multi-lobed nuclei
METHOD_LABELS = {"otsu": "Otsu-PI", "multiotsu": "3-class Otsu-PI", "rgb": "RGB threshold"}


def find_pairs(root: Path) -> dict[str, list[tuple[Path, Path]]]:
    """{dataset name: [(image, mask)]} for ``root/<dataset>/{images,masks}/NNN.png``.

    A flat layout ``root/{images,masks}/<dataset>_NNN.png`` (the shipped sample) is also read.
    """
    groups: dict[str, list[tuple[Path, Path]]] = {}
    if (root / "images").is_dir():
        for img in sorted((root / "images").glob("*.png")):
            groups.setdefault(img.stem.split("_")[0], []).append((img, root / "masks" / img.name))
    else:
        for ds in sorted(p for p in root.iterdir() if (p / "images").is_dir()):
            groups[ds.name] = [
                (img, ds / "masks" / img.name) for img in sorted((ds / "images").glob("*.png"))
            ]
    for name, pairs in groups.items():
        missing = [str(m) for _, m in pairs if not m.is_file()]
        if missing:
            raise click.ClickException(f"{name}: {len(missing)} masks missing, e.g. {missing[0]}")
    if not groups:
        raise click.ClickException(f"{root}: no images/ folders with .png images found")
    return groups


def load_pairs(pairs):
    from all_tf.io import read_image

    images, truths = [], []
    for img, mask in pairs:
        images.append(read_image(img))
        m = read_image(mask)[..., 0]
        truths.append(m == NUCLEUS_VALUE)
    return images, truths


def load_labels(pairs) -> list[int | None]:
    """segwbc class per image from ``<dataset>/labels.csv`` (None where there is none)."""
    table: dict[Path, dict[int, int]] = {}
    out = []
    for img, _ in pairs:
        path = img.parent.parent / "labels.csv"
        if path not in table:
            rows = list(csv.reader(path.open())) if path.is_file() else []
            table[path] = {int(r[0]): int(r[1]) for r in rows[1:] if len(r) >= 2}
        out.append(table[path].get(int(img.stem)) if img.stem.isdigit() else None)
    return out


def score(images, truths, mask_fn) -> tuple[float, float]:
    """Mean Dice and IoU of ``mask_fn(rgb)`` over the images."""
    from all_tf.segmentation import dice_iou

    scores = np.array([dice_iou(mask_fn(rgb), t) for rgb, t in zip(images, truths, strict=True)])
    return float(scores[:, 0].mean()), float(scores[:, 1].mean())


def stats_lines(data_dir: Path, groups) -> list[str]:
    """Per dataset and mask class: mean and 5th-percentile RGB, median purple index; and the
    median per-image Otsu / 3-class Otsu thresholds of the purple index."""
    from skimage.filters import threshold_multiotsu, threshold_otsu

    from all_tf.io import read_image
    from all_tf.segmentation import purple_index
    from all_tf.segmentation.purple_index import as_unit_rgb

    lines = [
        "",
        "| dataset | class | mean RGB | 5th pct RGB | median PI |",
        "| --- | --- | --- | --- | --- |",
    ]
    thr_lines = [
        "",
        "| dataset | median Otsu threshold | median 3-class Otsu upper threshold |",
        "| --- | --- | --- |",
    ]
    for name, pairs in groups.items():
        pix = {0: [], 128: [], 255: []}
        otsu, multi = [], []
        for img, mask in pairs:
            rgb = as_unit_rgb(read_image(img))
            m = read_image(mask)[..., 0]
            for v in pix:
                pix[v].append(rgb[m == v])
            pi = purple_index(rgb)
            otsu.append(threshold_otsu(pi))
            multi.append(threshold_multiotsu(pi, classes=3)[-1])
        for v, cls in ((0, "background"), (128, "cytoplasm"), (255, "nucleus")):
            a = np.concatenate(pix[v])
            pi = (a[:, 0] + a[:, 2]) / 2 - a[:, 1]
            fmt = lambda x: "(" + ", ".join(f"{c:.2f}" for c in x) + ")"  # noqa: E731
            lines.append(
                f"| {name} | {cls} | {fmt(a.mean(0))} | {fmt(np.percentile(a, 5, axis=0))} "
                f"| {np.median(pi):.2f} |"
            )
        thr_lines.append(f"| {name} | {np.median(otsu):.3f} | {np.median(multi):.3f} |")
    return lines + thr_lines


def methods(thetas):
    """(name, SegmentationConfig) of every method scored."""
    from all_tf.config import SegmentationConfig

    base = SegmentationConfig()
    out = [
        ("Otsu-PI", dataclasses.replace(base, method="otsu")),
        ("3-class Otsu-PI", dataclasses.replace(base, method="multiotsu")),
    ]
    out += [
        (f"PI > {t:.2f}", dataclasses.replace(base, method="fixed", threshold=t)) for t in thetas
    ]
    out.append(("RGB threshold", dataclasses.replace(base, method="rgb")))
    return out


def parse_merge(text: str) -> tuple[float, str]:
    """``FRACTION:BRIDGE`` (e.g. ``0.5:colour``) -> (0.5, "colour")."""
    from all_tf.config import MERGE_BRIDGES

    fraction, _, bridge = text.partition(":")
    try:
        value = float(fraction)
    except ValueError:
        value = -1.0
    if value <= 0 or bridge not in MERGE_BRIDGES:
        raise click.BadParameter(
            f"{text!r}: expected FRACTION:BRIDGE, FRACTION > 0, BRIDGE one of "
            f"{', '.join(MERGE_BRIDGES)}"
        )
    return value, bridge


def _distribution(counts: np.ndarray) -> str:
    p10, p90 = np.percentile(counts, [10, 90])
    return f"{counts.mean():.2f} | {p10:.0f}-{p90:.0f} | {100 * np.mean(counts == 1):.1f} %"


def large_joins(before: np.ndarray, after: np.ndarray) -> int:
    """Joins between objects of ``before`` that each have at least half the median object
    area of the image, in ``after`` (a superset of ``before``): in a field of several cells,
    mostly two cells' nuclei made one; in a single-cell image, lobes of similar size."""
    import cv2

    n0, lab0, stats, _ = cv2.connectedComponentsWithStats(before.astype(np.uint8),
                                                          connectivity=8)
    if n0 <= 2:
        return 0
    _, lab1 = cv2.connectedComponents(after.astype(np.uint8), connectivity=8)
    group = np.zeros(n0, np.int64)
    group[lab0[before]] = lab1[before]  # the merged object holding each object
    area = stats[1:, cv2.CC_STAT_AREA]
    large = group[1:][area >= 0.5 * np.median(area)]
    return int(np.maximum(np.bincount(large) - 1, 0).sum())


def components_lines(sets, seg_methods, merges) -> list[str]:
    """Objects per image for each data set, method and merging (off, then ``merges``).

    Args:
        sets: [(name, images, truths or None, labels or None)].
        seg_methods: segmentation methods (``SegmentationConfig.method`` values).
        merges: [(fraction, bridge)] besides "off".
    """
    from all_tf.config import SegmentationConfig
    from all_tf.segmentation import (
        clean_mask,
        count_objects,
        dice_iou,
        merge_lobes,
        raw_nucleus_mask,
    )

    lines = [
        "| data | images | method | merging | objects/image | 10th-90th pct | exactly 1 "
        "| neutrophils: exactly 1 | large joins/image | Dice |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, images, truths, labels in sets:
        neutro = (
            np.array([lab == NEUTROPHIL for lab in labels])
            if labels is not None and any(lab is not None for lab in labels)
            else None
        )

        def row(method, merging, counts, joins, dice, name=name, images=images, neutro=neutro):
            n1 = "–" if neutro is None or not neutro.any() else (
                f"{100 * np.mean(counts[neutro] == 1):.1f} % ({int(neutro.sum())})")
            j = "–" if joins is None else f"{np.mean(joins):.2f}"
            d = "–" if dice is None else f"{dice:.3f}"
            return (
                f"| {name} | {len(images)} | {method} | {merging} | {_distribution(counts)} "
                f"| {n1} | {j} | {d} |"
            )

        if truths is not None:
            lines.append(row("expert masks", "–", np.array([count_objects(t) for t in truths]),
                             None, None))
        for method in seg_methods:
            cfg = dataclasses.replace(SegmentationConfig(), method=method)
            raws = [raw_nucleus_mask(rgb, cfg) for rgb in images]
            cleaned = [
                clean_mask(r, cfg.opening_radius, cfg.min_object_px, cfg.smooth_sigma)
                for r in raws
            ]
            for fraction, bridge in [(0.0, "")] + list(merges):
                masks = cleaned if fraction == 0 else [
                    merge_lobes(m, fraction, r if bridge == "colour" else None)
                    for m, r in zip(cleaned, raws, strict=True)
                ]
                counts = np.array([count_objects(m) for m in masks])
                joins = None if fraction == 0 else [
                    large_joins(c, m) for c, m in zip(cleaned, masks, strict=True)]
                dice = None if truths is None else float(np.mean(
                    [dice_iou(m, t)[0] for m, t in zip(masks, truths, strict=True)]))
                merging = "off" if fraction == 0 else f"{fraction:g}, {bridge}"
                lines.append(row(METHOD_LABELS.get(method, method), merging, counts, joins,
                                 dice))
    return lines


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=REPO.parent / "shared" / "data" / "segwbc",
    show_default=True,
    help="segwbc root: <dataset>/{images,masks}/NNN.png (or the flat sample layout).",
)
@click.option("--theta-min", default=0.05, show_default=True, help="Smallest fixed PI threshold.")
@click.option("--theta-max", default=0.35, show_default=True, help="Largest fixed PI threshold.")
@click.option("--theta-step", default=0.05, show_default=True, help="Sweep step.")
@click.option(
    "--rgb-directions",
    is_flag=True,
    help="Also score all 8 inequality directions of the RGB threshold (raw masks).",
)
@click.option(
    "--pixel-stats",
    is_flag=True,
    help="Also print colour statistics of the expert classes and the per-image Otsu thresholds.",
)
@click.option(
    "--all4",
    "all4_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Also count objects per field on these smear fields (<class>/*.jpg, *.png; "
    "e.g. ../shared/data/all4).",
)
@click.option(
    "--merge",
    "merges",
    multiple=True,
    metavar="FRACTION:BRIDGE",
    help="Lobe merging to count besides 'off' (repeatable; BRIDGE colour or closing). "
    "Default: the SegmentationConfig default, 0.2:closing and closing at the default "
    "fraction.",
)
@click.option(
    "--output",
    "-o",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the Markdown tables here (atomically) as well as to stdout.",
)
def main(data_dir, theta_min, theta_max, theta_step, rgb_directions, pixel_stats, all4_dir,
         merges, out):
    """Mean Dice/IoU of nucleus masks per segwbc dataset and method, and objects per white
    cell with and without lobe merging."""
    from all_tf.config import SegmentationConfig
    from all_tf.io import atomic_write_text, read_image
    from all_tf.segmentation import clean_mask, raw_nucleus_mask
    from all_tf.segmentation.purple_index import RGB_TAUS, as_unit_rgb

    default = SegmentationConfig()
    defaults = [(default.merge_lobes, default.merge_bridge), (0.2, "closing"),
                (default.merge_lobes, "closing")]
    merge_list = [parse_merge(m) for m in merges] or [
        m for m in dict.fromkeys(defaults) if m[0] > 0]

    thetas = np.round(np.arange(theta_min, theta_max + 1e-9, theta_step), 4)
    groups = find_pairs(data_dir)
    data = {name: load_pairs(pairs) for name, pairs in groups.items()}
    lines = [
        "| dataset | images | method | Dice (cleaned) | IoU (cleaned) | Dice (raw) | IoU (raw) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    best = {}
    mean_dice: dict[str, list[float]] = {}
    method_of = {}
    t0 = time.perf_counter()
    for name, (images, truths) in data.items():
        rows = []
        for label, cfg in methods(thetas):
            method_of[label] = (
                f"fixed, threshold {cfg.threshold:.2f}" if cfg.method == "fixed" else cfg.method
            )

            def cleaned(rgb, cfg=cfg):
                return clean_mask(
                    raw_nucleus_mask(rgb, cfg),
                    cfg.opening_radius,
                    cfg.min_object_px,
                    cfg.smooth_sigma,
                )

            d, i = score(images, truths, cleaned)
            rd, ri = score(images, truths, lambda rgb, cfg=cfg: raw_nucleus_mask(rgb, cfg))
            rows.append((label, d, i, rd, ri))
            mean_dice.setdefault(label, []).append(d)
        fixed = [r for r in rows if r[0].startswith("PI >")]
        best[name] = max(fixed, key=lambda r: r[1])
        for label, d, i, rd, ri in rows:
            mark = " (best fixed)" if label == best[name][0] else ""
            lines.append(
                f"| {name} | {len(images)} | {label}{mark} | {d:.3f} | {i:.3f} | {rd:.3f} | {ri:.3f} |"
            )
    seconds = time.perf_counter() - t0
    chosen = max(mean_dice, key=lambda k: np.mean(mean_dice[k]))
    lines += [
        "",
        f"Best by mean Dice (cleaned) over the datasets: {chosen} "
        f"(method {method_of[chosen]}, {np.mean(mean_dice[chosen]):.3f}); "
        f"SegmentationConfig default: {default.method}.",
    ]
    text = "\n".join(lines)
    if rgb_directions:
        dl = [
            "",
            "RGB threshold directions (raw masks, mean Dice), "
            f"taus R {RGB_TAUS[0]}, G {RGB_TAUS[1]}, B {RGB_TAUS[2]}:",
            "",
            "| R | G | B | " + " | ".join(data) + " |",
            "| --- | --- | --- | " + " | ".join("---" for _ in data) + " |",
        ]
        taus = [float(t) for t in RGB_TAUS]
        for signs in itertools.product("<>", repeat=3):

            def fn(rgb, signs=signs):
                x = as_unit_rgb(rgb)
                m = np.ones(x.shape[:2], bool)
                for c, s in enumerate(signs):
                    m &= (x[..., c] < taus[c]) if s == "<" else (x[..., c] > taus[c])
                return m

            ds = [score(images, truths, fn)[0] for images, truths in data.values()]
            dl.append(
                f"| {signs[0]} {taus[0]} | {signs[1]} {taus[1]} | {signs[2]} {taus[2]} | "
                + " | ".join(f"{d:.3f}" for d in ds)
                + " |"
            )
        text += "\n" + "\n".join(dl)
    if pixel_stats:
        text += "\n" + "\n".join(stats_lines(data_dir, groups))
    t1 = time.perf_counter()
    sets = [
        (name, images, truths, load_labels(groups[name]))
        for name, (images, truths) in data.items()
    ]
    if all4_dir is not None:
        fields = sorted(
            p for p in all4_dir.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        if not fields:
            raise click.ClickException(f"{all4_dir}: no <class>/*.jpg or *.png fields found")
        sets.append((all4_dir.name, [read_image(p) for p in fields], None, None))
    seg_methods = list(dict.fromkeys([default.method, "otsu"]))
    text += "\n\n" + "\n".join([
        "Objects (8-connected components) per image, lobe merging off and on "
        "(FRACTION, BRIDGE of merge_lobes):",
        "",
        *components_lines(sets, seg_methods, merge_list),
    ])
    click.echo(text)
    click.echo(
        f"\n({sum(len(v[0]) for v in data.values())} images, {seconds:.1f} s for the main table, "
        f"{time.perf_counter() - t1:.1f} s for the objects table)"
    )
    if out:
        atomic_write_text(out, text + "\n")


if __name__ == "__main__":
    main()
