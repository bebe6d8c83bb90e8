"""Score nucleus segmentation against the expert masks of segwbc (mask value 255 = nucleus).

For each dataset folder (dataset1, dataset2) and each method it reports the mean per-image
Dice and IoU of the cleaned mask (``segment_nuclei``) and, for comparison, of the raw colour
threshold before morphology. Methods: Otsu on the purple index, fixed PI thresholds
(a sweep), and the per-channel RGB threshold.

Example:
    python scripts/benchmark_segmentation.py --data ../shared/data/segwbc --out docs/seg.md
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]

NUCLEUS_VALUE = 255


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


@click.command()
@click.option(
    "--data",
    "data_dir",
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
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the Markdown table here (atomically) as well as to stdout.",
)
def main(data_dir, theta_min, theta_max, theta_step, rgb_directions, pixel_stats, out):
    """Mean Dice/IoU of nucleus masks per segwbc dataset and method."""
    from all_tf.io import atomic_write_text
    from all_tf.segmentation import clean_mask, raw_nucleus_mask
    from all_tf.segmentation.purple_index import RGB_TAUS, as_unit_rgb

    thetas = np.round(np.arange(theta_min, theta_max + 1e-9, theta_step), 4)
    groups = find_pairs(data_dir)
    data = {name: load_pairs(pairs) for name, pairs in groups.items()}
    lines = [
        "| dataset | images | method | Dice (cleaned) | IoU (cleaned) | Dice (raw) | IoU (raw) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    best = {}
    t0 = time.perf_counter()
    for name, (images, truths) in data.items():
        rows = []
        for label, cfg in methods(thetas):

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
        fixed = [r for r in rows if r[0].startswith("PI >")]
        best[name] = max(fixed, key=lambda r: r[1])
        for label, d, i, rd, ri in rows:
            mark = " (best fixed)" if label == best[name][0] else ""
            lines.append(
                f"| {name} | {len(images)} | {label}{mark} | {d:.3f} | {i:.3f} | {rd:.3f} | {ri:.3f} |"
            )
    seconds = time.perf_counter() - t0
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
    click.echo(text)
    click.echo(
        f"\n({sum(len(v[0]) for v in data.values())} images, {seconds:.1f} s for the main table)"
    )
    if out:
        atomic_write_text(out, text + "\n")


if __name__ == "__main__":
    main()
