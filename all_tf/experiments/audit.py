"""Dataset audit: duplicates, class balance, colour and label shortcuts.

A classifier can score well on all4 without looking at cells: staining and illumination
differ by class (patients), and a burned-in scale-bar label in the bottom-right corner has a
class-dependent style. The audit measures both cues with simple baselines under the CNN's
split, and checks a trained model with each cue removed:

* colour baseline: a random forest on per-channel RGB histograms of the whole image;
* the same after Reinhard normalisation of every image to one target (global LAB mean/std
  removed), with the label corner masked, and on the label corner alone;
* model checks: test accuracy of the trained network on the original test images, with the
  label corner painted over, and with every image Reinhard-normalised to one target first.

The forests are fitted on the train and validation parts and scored on the test part.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from all_tf import CLASS_NAMES
from all_tf.config import UNCERTAINTY_THRESHOLD
from all_tf.inference.colour_check import HIST_BINS, colour_histogram, rgb_histogram
from all_tf.preprocessing.label_corner import label_box_slices, mask_label_corner

FEATURE_SETS = {
    "colour": "RGB histograms, whole image",
    "colour_reinhard": "RGB histograms after Reinhard to one target",
    "colour_corner_masked": "RGB histograms, label corner masked",
    "corner_only": "RGB histograms of the label corner only",
}


def image_features(rgb: np.ndarray, target: dict, bins: int = HIST_BINS) -> dict[str, np.ndarray]:
    """The histogram feature vector of each ``FEATURE_SETS`` entry for one image."""
    from all_tf.preprocessing import reinhard_normalize

    rows, cols = label_box_slices(rgb.shape)
    return {
        "colour": rgb_histogram(rgb, bins),
        "colour_reinhard": rgb_histogram(reinhard_normalize(rgb, target), bins),
        "colour_corner_masked": rgb_histogram(mask_label_corner(rgb), bins),
        "corner_only": rgb_histogram(rgb[rows, cols], bins),
    }


def _read_all(records, workers: int = 2):
    from concurrent.futures import ThreadPoolExecutor

    from all_tf.io import ImageReadError, read_image

    def one(r):
        try:
            return read_image(r.path)
        except ImageReadError:
            return None

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, records))


def colour_baselines(split, target: dict | None = None, seed: int = 0,
                     bins: int = HIST_BINS) -> dict:
    """Random forests on histogram features, fitted on train+val, scored on test.

    Args:
        split: an ``all_tf.data.Split``.
        target: Reinhard target ({"mean", "std"} in OpenCV LAB units); fitted on the training
            images when None.

    Returns:
        {feature set: compute_metrics dict + "description"}, plus "reinhard_target".
    """
    from sklearn.ensemble import RandomForestClassifier

    from all_tf.evaluation.metrics import compute_metrics
    from all_tf.preprocessing import fit_reinhard_target

    fit_records = list(split.train) + list(split.val)
    fit_images = _read_all(fit_records)
    test_images = _read_all(split.test)
    if target is None:
        target = fit_reinhard_target([im for im in fit_images if im is not None])

    def table(records, images):
        feats = {k: [] for k in FEATURE_SETS}
        labels = []
        for r, im in zip(records, images, strict=True):
            if im is None:
                continue
            for k, v in image_features(im, target, bins).items():
                feats[k].append(v)
            labels.append(r.label)
        return {k: np.stack(v) for k, v in feats.items()}, np.array(labels)

    x_fit, y_fit = table(fit_records, fit_images)
    x_test, y_test = table(split.test, test_images)
    results = {"reinhard_target": target}
    for key, description in FEATURE_SETS.items():
        forest = RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=2)
        forest.fit(x_fit[key], y_fit)
        probs = np.zeros((len(y_test), len(CLASS_NAMES)))
        probs[:, forest.classes_] = forest.predict_proba(x_test[key])
        metrics = compute_metrics(y_test, probs)
        metrics["description"] = description
        results[key] = metrics
    return results


def colour_baseline_oof(data_dir: str | Path, split_cfg, folds=None,
                        seed: int = 0, block_size: int = 36, n_boot: int = 1000,
                        threshold: float = UNCERTAINTY_THRESHOLD) -> dict:
    """Colour models under the contiguous folds of ``split_cfg``, each fitted on a fold's
    training + validation part and scored on its test part, pooled over the test parts:

    * the colour baseline, a random forest on RGB histograms (label corner masked);
    * the colour check (:class:`~all_tf.inference.colour_check.ColourCheck`), whose class on
      each test image lets :func:`~all_tf.evaluation.crossval.pooled_out_of_fold` score a
      network with the check applied.

    ``folds``: the fold indices pooled (default all ``split_cfg.n_folds``); ``threshold``:
    the uncertainty threshold of the coverage and errors-flagged columns, as the networks'.

    Returns:
        ``{"raw": metrics, "ci": {...}}`` of the forest as in :func:`pooled_out_of_fold` (no
        calibration), and ``"check": {image key: class}`` of the colour check
        (:func:`~all_tf.evaluation.crossval.image_key`).
    """
    import dataclasses

    from sklearn.ensemble import RandomForestClassifier

    from all_tf.data import assign_groups, make_split, scan_dataset
    from all_tf.data.splits import sequence_numbers
    from all_tf.evaluation.crossval import block_bootstrap_ci, block_ids, image_key, oof_metrics
    from all_tf.inference.colour_check import ColourCheck

    records = assign_groups(scan_dataset(data_dir).records)
    images = _read_all(records)
    features = {r.path: rgb_histogram(mask_label_corner(im))
                for r, im in zip(records, images, strict=True) if im is not None}
    check_features = {r.path: colour_histogram(im)
                      for r, im in zip(records, images, strict=True) if im is not None}
    numbers = dict(zip((r.path for r in records), sequence_numbers(records), strict=True))
    ys, ps, nums, check = [], [], [], {}
    for fold in range(split_cfg.n_folds) if folds is None else folds:
        cfg = dataclasses.replace(split_cfg, kind="contiguous", fold=fold)
        split = make_split(records, cfg)
        fit = [r for r in split.train + split.val if r.path in features]
        test = [r for r in split.test if r.path in features]
        x_fit = np.stack([features[r.path] for r in fit])
        y_fit = np.array([r.label for r in fit])
        x_test = np.stack([features[r.path] for r in test])
        forest = RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=2)
        forest.fit(x_fit, y_fit)
        p = np.zeros((len(test), len(CLASS_NAMES)))
        p[:, forest.classes_] = forest.predict_proba(x_test)
        check_fit = ColourCheck.fit(np.stack([check_features[r.path] for r in fit]), y_fit,
                                    len(CLASS_NAMES))
        classes = check_fit.classes(np.stack([check_features[r.path] for r in test]))
        check.update({image_key(r.path): int(k) for r, k in zip(test, classes, strict=True)})
        ys.append([r.label for r in test])
        ps.append(p)
        nums.append([numbers[r.path] for r in test])
    y, p = np.concatenate(ys), np.concatenate(ps)
    blocks = block_ids(y, np.concatenate(nums), block_size)
    return {"raw": oof_metrics(y, p, threshold),
            "ci": block_bootstrap_ci(y, p, blocks, threshold, n_boot=n_boot, seed=seed),
            "check": check, "threshold": float(threshold)}


def model_shortcut_checks(run_dir, target: dict | None = None, batch_size: int = 32) -> dict:
    """Test metrics of a trained run on original, label-masked and Reinhard-normalised images.

    The label check is the protocol's (:func:`~all_tf.experiments.label_check.label_masked_metrics`:
    the run's preprocessing with the corner masked after resizing, cached in the run
    directory). For the other two, the test images are written losslessly (PNG) to a
    temporary folder and go through the run's own evaluation pipeline, so preprocessing is
    exactly the training one.

    Returns:
        {"original"|"label_masked"|"reinhard_one_target": compute_metrics dict, "notes": [..]}.
    """
    import cv2

    from all_tf.data import Record
    from all_tf.evaluation.metrics import compute_metrics
    from all_tf.evaluation.predictions import predict_split
    from all_tf.evaluation.runs import load_config, load_model, load_split
    from all_tf.experiments.label_check import label_masked_metrics
    from all_tf.preprocessing import fit_reinhard_target, reinhard_normalize

    cfg = load_config(run_dir)
    model = load_model(run_dir)
    split = load_split(run_dir, cfg.data_dir)
    notes = []
    if target is None:
        target = cfg.preprocess.reinhard_target
    if target is None:
        target = fit_reinhard_target([im for im in _read_all(split.train[:64]) if im is not None])
    if cfg.preprocess.reinhard:
        notes.append("the model's preprocessing already applies Reinhard normalisation to its "
                     "training target, so the Reinhard check is expected to change little")
    if cfg.preprocess.mask_label_corner:
        notes.append("the model was trained with the label corner masked "
                     "(preprocess.mask_label_corner), so the label check should change nothing")
    transforms = {
        "original": lambda im: im,
        "reinhard_one_target": lambda im: reinhard_normalize(im, target),
    }
    images = _read_all(split.test)
    results: dict = {"notes": notes, "reinhard_target": target}
    with tempfile.TemporaryDirectory(prefix="all_tf_audit_") as tmp:
        for name, fn in transforms.items():
            records = []
            for k, (r, im) in enumerate(zip(split.test, images, strict=True)):
                if im is None:
                    continue
                path = os.path.join(tmp, f"{name}_{k:05d}.png")
                cv2.imwrite(path, cv2.cvtColor(fn(im), cv2.COLOR_RGB2BGR))
                records.append(Record(path=path, label=r.label, group=path))
            y_true, probs = predict_split(model, records, cfg, batch_size)
            results[name] = compute_metrics(y_true, probs, threshold=cfg.uncertainty_threshold)
    results["label_masked"] = label_masked_metrics(run_dir, batch_size, model=model)
    return results


def class_balance(records) -> dict[str, int]:
    counts = {name: 0 for name in CLASS_NAMES}
    for r in records:
        counts[CLASS_NAMES[r.label]] += 1
    return counts


def audit_dataset(data_dir, split_cfg=None, run_dir=None, seed: int = 0,
                  duplicate_kwargs: dict | None = None) -> dict:
    """Run the whole audit; a JSON-serialisable dict (see :func:`audit_markdown`).

    Args:
        data_dir: dataset root.
        split_cfg: ``SplitConfig`` for the baselines when there is no ``run_dir``.
        run_dir: a finished run: its split is used for the baselines and its model checked.

    Raises:
        ValueError: no usable image under ``data_dir``, or a broken run directory.
    """
    from all_tf.config import SplitConfig
    from all_tf.data import assign_groups, find_duplicates, make_split, scan_dataset

    scan = scan_dataset(data_dir)
    if not scan.records:
        raise ValueError(f"{data_dir}: no usable images found (class folders expected: "
                         f"{', '.join(CLASS_NAMES)}; unknown folders: "
                         f"{scan.unknown_dirs or 'none'})")
    report = find_duplicates([r.path for r in scan.records], **(duplicate_kwargs or {}))
    records = assign_groups(scan.records, report)
    result: dict = {
        "data_dir": str(data_dir),
        "n_images": len(records),
        "skipped": [list(s) for s in scan.skipped],
        "unknown_dirs": list(scan.unknown_dirs),
        "class_balance": class_balance(records),
        "duplicates": {k: v for k, v in report.to_dict().items() if k != "pairs"},
        "exact_pairs": [[p.a, p.b] for p in report.exact_pairs],
    }
    if run_dir is not None:
        from all_tf.evaluation.runs import load_config, load_split

        cfg = load_config(run_dir)
        split = load_split(run_dir, cfg.data_dir)
        result["split"] = {"source": f"{run_dir}/split.json", "kind": cfg.split.kind,
                           "seed": cfg.split.seed}
    else:
        split_cfg = split_cfg or SplitConfig()
        split = make_split(records, split_cfg)
        result["split"] = {"source": "make_split", "kind": split_cfg.kind, "seed": split_cfg.seed}
    result["split"].update(n_train=len(split.train), n_val=len(split.val), n_test=len(split.test))
    result["colour_baselines"] = colour_baselines(split, seed=seed)
    if run_dir is not None:
        result["model_checks"] = model_shortcut_checks(run_dir)
        result["model_checks"]["run_dir"] = str(run_dir)
    return result


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def audit_markdown(result: dict) -> str:
    """A readable report of :func:`audit_dataset`'s result."""
    dup = result["duplicates"]["counts"]
    lines = [
        "# Dataset audit", "",
        f"Data: `{result['data_dir']}`: {result['n_images']} usable images, "
        f"{len(result['skipped'])} skipped, unknown folders: {result['unknown_dirs'] or 'none'}.",
        "", "## Class balance", "", "| class | images | share |", "|---|---|---|",
    ]
    total = max(1, result["n_images"])
    for name, n in result["class_balance"].items():
        lines.append(f"| {name} | {n} | {100 * n / total:.1f} % |")
    lines += [
        "", "## Duplicates", "",
        f"- exact duplicate pairs: {dup['exact_pairs']}",
        f"- near-duplicate pairs (small shift): {dup['near_pairs']}",
        f"- overlapping-field pairs: {dup['overlap_pairs']}",
        f"- groups kept on one side of every split: {dup['groups']} "
        f"({dup['grouped_images']} images)",
        "", "## Shortcut baselines (random forest, 300 trees)", "",
        f"Split: {result['split']['kind']} seed {result['split']['seed']} "
        f"({result['split']['source']}); fitted on train+val "
        f"({result['split']['n_train'] + result['split']['n_val']} images), scored on test "
        f"({result['split']['n_test']}).", "",
        "| features | accuracy % | macro F1 % | macro AUC % |", "|---|---|---|---|",
    ]
    for key in FEATURE_SETS:
        m = result["colour_baselines"][key]
        lines.append(f"| {m['description']} | {_pct(m['accuracy'])} | {_pct(m['macro_f1'])} "
                     f"| {_pct(m['macro_auc'])} |")
    checks = result.get("model_checks")
    if checks:
        lines += ["", "## Trained model with each cue removed", "",
                  f"Run: `{checks['run_dir']}` (test part of its own split).", "",
                  "| test images | accuracy % | macro F1 % | coverage % |", "|---|---|---|---|"]
        for key, label in (("original", "original"), ("label_masked", "label corner masked"),
                           ("reinhard_one_target", "Reinhard to one target")):
            m = checks.get(key)
            if m is None:  # crop mode has no label check
                continue
            lines.append(f"| {label} | {_pct(m['accuracy'])} | {_pct(m['macro_f1'])} "
                         f"| {_pct(m['coverage'])} |")
        lines += [f"- {n}" for n in checks["notes"]]
    return "\n".join(lines) + "\n"


def write_audit(result: dict, out_dir) -> tuple[Path, Path]:
    """Write ``audit.json`` and ``audit.md`` into ``out_dir``."""
    from all_tf.io import atomic_write_text

    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "audit.json", out_dir / "audit.md"
    atomic_write_text(json_path, json.dumps(result, indent=1))
    atomic_write_text(md_path, audit_markdown(result))
    return json_path, md_path
