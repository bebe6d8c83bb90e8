"""How often the gate rejects: held-out all4 folds against inputs the model does not know.

For every fold run of a contiguous cross-validation (``all-tf protocol``), the gate is
fitted as it is for a released model (input bounds on the fold's training images, the
Mahalanobis feature distance on their pooled features, its threshold 3 times the 99th
percentile of the validation part, the temperature on the validation part) and then applied
to:

* ``all4 held-out``: the fold's test part (in-distribution; the rejection rate should be low);
* ``synthetic``: black, white, noise, grayscale, inverted, heavily blurred and colour-shuffled
  versions of the fold's test fields;
* ``natural photographs``: the images that ship with scikit-image and scikit-learn, whole and
  as 224 px crops;
* ``segwbc``: single white cells at another magnification and stain (optional).

Results per fold are cached in ``<protocol>/rejection/<run id>.json`` (rerun to continue; a
fold whose cached bounds lack one of the gate's statistics is measured again) and pooled into
``<protocol>/rejection.md``. The AUROC columns compare out-of-distribution scores
(the set against the held-out all4 images): Mahalanobis (the one the gate uses), kNN distance
on L2-normalised features (k = 10) and the maximum softmax probability.

Example:
    all-tf rejection results/cv_mnv3 --data-dir <path to all4> \\
        --segwbc-dir <path to segwbc>
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from all_tf.cli.options import fail

SYNTHETIC = ("black", "white", "noise", "grayscale", "inverted", "blurred", "colour_shuffled")
N_SOURCE = 30  # test fields per fold used to make the synthetic sets


def synthetic_images(kind: str, sources: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """``len(sources)`` images of one synthetic out-of-distribution kind (RGB uint8)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for k, rgb in enumerate(sources):
        h, w = rgb.shape[:2]
        if kind == "black":
            out.append(np.zeros((h, w, 3), np.uint8))
        elif kind == "white":
            out.append(np.full((h, w, 3), 255, np.uint8))
        elif kind == "noise":
            out.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        elif kind == "grayscale":
            out.append(np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2))
        elif kind == "inverted":
            out.append(255 - rgb)
        elif kind == "blurred":
            out.append(cv2.GaussianBlur(rgb, (0, 0), sigmaX=6))
        elif kind == "colour_shuffled":
            perm = [(1, 2, 0), (2, 0, 1), (1, 0, 2), (0, 2, 1), (2, 1, 0)][k % 5]
            out.append(np.ascontiguousarray(rgb[..., list(perm)]))
        else:
            raise ValueError(f"unknown synthetic kind {kind!r}")
    return out


def natural_images() -> list[np.ndarray]:
    """Photographs bundled with scikit-image and scikit-learn, whole and as 224 px crops."""
    import skimage.data as data
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "camera", "chelsea", "coffee", "coins", "horse", "hubble_deep_field",
             "immunohistochemistry", "moon", "page", "rocket", "text", "retina", "brick",
             "grass", "gravel", "colorwheel", "logo", "clock")
    whole = []
    for name in names:
        image = getattr(data, name)()
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        whole.append(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    whole += list(load_sample_images().images)
    crops = []
    for image in whole:
        h, w = image.shape[:2]
        if min(h, w) >= 448:
            crops += [image[:224, :224], image[-224:, -224:], image[:224, -224:],
                      image[-224:, :224]]
    return whole + [np.ascontiguousarray(c) for c in crops]


def segwbc_images(root: Path) -> list[np.ndarray]:
    from all_tf.io import read_image

    return [read_image(p) for p in sorted(root.glob("*/images/*.png"))]


def _auroc(in_scores, out_scores) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(y, np.r_[in_scores, out_scores]))


def evaluate_fold(run_dir: Path, data_dir: str | None, segwbc: Path | None) -> dict:
    """Rejection counts and AUROCs of one fold run (see the module docstring)."""
    from sklearn.neighbors import NearestNeighbors

    from all_tf.evaluation.calibration import apply_temperature, fit_temperature
    from all_tf.evaluation.runs import load_config, load_model, load_split
    from all_tf.inference.analysis import (
        analyse_images,
        analyse_records,
        fit_gate,
        probabilities_and_features,
    )
    from all_tf.io import read_image

    cfg = load_config(run_dir)
    split = load_split(run_dir, data_dir or cfg.data_dir)
    fn = probabilities_and_features(load_model(run_dir))
    train = analyse_records(split.train, cfg, fn)
    val = analyse_records(split.val, cfg, fn)
    test = analyse_records(split.test, cfg, fn)
    gate = fit_gate(train, val)
    temperature = fit_temperature(val.probabilities, val.labels)

    def unit(f):
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    knn = NearestNeighbors(n_neighbors=10).fit(unit(train.features))

    def scores(a):
        return {"mahalanobis": gate.distance.score(a.features),
                "knn": knn.kneighbors(unit(a.features))[0][:, -1],
                "msp": -apply_temperature(a.probabilities, temperature).max(axis=1)}

    def summary(a):
        probs = apply_temperature(a.probabilities, temperature)
        ood = gate.distance.score(a.features)
        statuses = [gate.status(s, float(o), float(p.max()), cfg.uncertainty_threshold)
                    for s, o, p in zip(a.statistics, ood, probs, strict=True)]
        reasons: dict[str, int] = {}
        for s in statuses:
            if s.startswith("rejected:"):
                reasons[s.split(":", 1)[1]] = reasons.get(s.split(":", 1)[1], 0) + 1
        return {"n": len(statuses), "rejected": sum(s.startswith("rejected") for s in statuses),
                "uncertain": statuses.count("uncertain"), "reasons": reasons,
                "statuses": statuses}

    test_scores = scores(test)
    sources = [read_image(split.test[k].path)
               for k in np.linspace(0, len(split.test) - 1, N_SOURCE).astype(int)]
    sets = {f"synthetic:{kind}": synthetic_images(kind, sources, seed=k)
            for k, kind in enumerate(SYNTHETIC)}
    sets["natural photographs"] = natural_images()
    if segwbc is not None:
        sets["segwbc"] = segwbc_images(segwbc)
    held_out = summary(test)
    wrong = test.probabilities.argmax(1) != test.labels
    stopped = [s != "ok" for s, w in zip(held_out.pop("statuses"), wrong, strict=True) if w]
    result = {"run_dir": str(run_dir), "temperature": temperature,
              "ood_threshold": gate.distance.threshold, "bounds": gate.bounds,
              # wrong held-out predictions that the gate rejects or flags uncertain
              "all4_errors": {"n": len(stopped), "rejected_or_uncertain": int(sum(stopped))},
              "sets": {"all4 held-out": {**held_out, "auroc": None}}}
    for name, images in sets.items():
        a = analyse_images(images, cfg, fn)
        out_scores = scores(a)
        counts = summary(a)
        counts.pop("statuses")
        result["sets"][name] = {**counts, "auroc": {
            k: _auroc(test_scores[k], out_scores[k]) for k in test_scores}}
    return result


def pooled_markdown(folds: list[dict]) -> str:
    names = list(folds[0]["sets"])
    errors = sum(f["all4_errors"]["n"] for f in folds)
    stopped = sum(f["all4_errors"]["rejected_or_uncertain"] for f in folds)
    lines = ["| set | images | rejected % | uncertain % | rejected or uncertain % | AUROC "
             "Mahalanobis | AUROC kNN | AUROC max-softmax | main reasons |",
             "|" + "---|" * 9]
    for name in names:
        rows = [f["sets"][name] for f in folds]
        n = sum(r["n"] for r in rows)
        rej = sum(r["rejected"] for r in rows)
        unc = sum(r["uncertain"] for r in rows)
        reasons: dict[str, int] = {}
        for r in rows:
            for k, v in r["reasons"].items():
                reasons[k] = reasons.get(k, 0) + v
        top = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        au = [r["auroc"] for r in rows if r["auroc"]]
        auc = ["–"] * 3 if not au else [f"{np.mean([a[k] for a in au]):.3f}"
                                         for k in ("mahalanobis", "knn", "msp")]
        lines.append(f"| {name} | {n} | {100 * rej / n:.1f} | {100 * unc / n:.1f} | "
                     f"{100 * (rej + unc) / n:.1f} | {' | '.join(auc)} | {top} |")
    lines += ["", f"Wrong predictions on the held-out all4 folds: {errors}, of which "
              f"{stopped} ({100 * stopped / max(errors, 1):.1f} %) are rejected or uncertain."]
    return "\n".join(lines) + "\n"


@click.command()
@click.argument("protocol_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="all4 root (default: the data_dir stored in each run's config).")
@click.option("--segwbc-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="segwbc root (dataset1/, dataset2/); omitted: no segwbc row.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Markdown table (default <protocol_dir>/rejection.md).")
def main(protocol_dir, data_dir, segwbc_dir, output):
    """Measure the gate on every contiguous fold run in PROTOCOL_DIR."""
    from all_tf.inference.gate import STATISTICS
    from all_tf.io import atomic_write_text

    runs = sorted((protocol_dir / "runs").glob("*_contiguous_f*"))
    runs = [r for r in runs if (r / "metrics.json").exists()]
    if not runs:
        fail(ValueError(f"{protocol_dir}: no finished contiguous fold runs in runs/"))
    cache = protocol_dir / "rejection"
    cache.mkdir(exist_ok=True)
    folds = []
    for run in runs:
        path = cache / f"{run.name}.json"
        if path.exists():
            cached = json.loads(path.read_text())
            if set(STATISTICS) <= set(cached.get("bounds", {})):  # else fitted by an older gate
                folds.append(cached)
                continue
        click.echo(f"gate on {run.name} ...", err=True)
        result = evaluate_fold(run, data_dir, segwbc_dir)
        atomic_write_text(path, json.dumps(result, indent=1))
        folds.append(result)
    text = (f"# Rejection: {len(folds)} fold runs of {protocol_dir}\n\n"
            "Gate fitted per fold on its training part (feature-distance threshold: 3 x the "
            "99th percentile of the validation part); statuses after temperature scaling.\n\n" + pooled_markdown(folds))
    out = output or protocol_dir / "rejection.md"
    atomic_write_text(out, text)
    click.echo(text)


if __name__ == "__main__":
    main()
