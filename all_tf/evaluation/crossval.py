"""Pooled out-of-fold evaluation of the contiguous cross-validation protocol.

Each fold's run writes ``predictions.csv`` (validation and test probabilities per image). Here
the folds' test parts, which together cover the dataset once, are pooled; each fold's
temperature is fitted on its own validation part and applied to its own test part. Confidence
intervals come from a bootstrap that resamples blocks of consecutive file numbers (about one
slide each) within each class, not single images, because neighbouring images are not
independent.

Example:
    >>> import numpy as np
    >>> from all_tf.evaluation.crossval import oof_metrics
    >>> y = np.array([0, 1, 1, 0]); p = np.array([[.9, .1], [.2, .8], [.6, .4], [.7, .3]])
    >>> m = oof_metrics(y, p, class_names=["a", "b"])
    >>> m["balanced_accuracy"], m["errors_flagged"]
    (0.75, 1.0)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from all_tf import CLASS_NAMES
from all_tf.config import UNCERTAINTY_THRESHOLD
from all_tf.evaluation.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from all_tf.evaluation.predictions import PREDICTIONS_FILE
from all_tf.inference.uncertainty import predict_labels

PEER = {
    "name": "DinoBloom-S frozen + attention-MIL (shrirudragoud/leukemia-detection-and-"
            "Segmentation, docs/results/cv_dinobloom_s_frozen_mil.md; their numbers)",
    "balanced_accuracy": 0.968, "balanced_accuracy_ci": [0.955, 0.978], "macro_f1": 0.967,
    "macro_auc": 0.995, "ece_calibrated": 0.010,
}
CI_METRICS = ("balanced_accuracy", "macro_f1", "macro_auc", "ece")


def read_predictions(run_dir: str | Path, name: str = PREDICTIONS_FILE
                     ) -> dict[str, dict[str, np.ndarray]]:
    """``{part: {"y": int (N,), "p": float (N, C), "number": int (N,), "path": str (N,)}}``
    from a run's ``predictions.csv`` (or another file of that layout, ``name``)."""
    path = Path(run_dir) / name
    if not path.is_file():
        hint = ("runs trained before per-image predictions were stored must be retrained"
                if name == PREDICTIONS_FILE else "not scored this way")
        raise FileNotFoundError(f"{run_dir}: no {name} ({hint})")
    parts: dict[str, dict[str, list]] = {}
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                part = parts.setdefault(row["part"], {"y": [], "p": [], "number": [], "path": []})
                y, number = int(row["label"]), int(row["number"])
                p = [float(row[f"p_{c}"]) for c in CLASS_NAMES]
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}: line {line}: not a predictions row "
                                 f"({type(e).__name__}: {e})") from None
            part["y"].append(y)
            part["number"].append(number)
            part["path"].append(row["path"])
            part["p"].append(p)
    return {k: {"y": np.array(v["y"]), "p": np.array(v["p"], dtype=np.float64),
                "number": np.array(v["number"]), "path": np.array(v["path"])}
            for k, v in parts.items()}


def oof_metrics(y_true, probs, threshold: float = UNCERTAINTY_THRESHOLD,
                class_names: Sequence[str] = CLASS_NAMES) -> dict:
    """Metrics of pooled predictions.

    Returns:
        ``n``, ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``macro_auc`` (one-vs-rest,
        averaged over the classes present; None with a single class), ``recall`` ({class: value}), ``ece`` (15 bins), ``brier``,
        ``nll``, ``coverage`` (share with confidence >= threshold), ``confident_accuracy``,
        ``errors_flagged`` (share of wrong predictions with confidence < threshold; None
        without errors). Fractions in [0, 1].
    """
    from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, roc_auc_score

    y_true = np.asarray(y_true, dtype=int)
    y_pred, _, uncertain = predict_labels(probs, threshold)
    labels = list(range(len(class_names)))
    wrong = y_pred != y_true
    # one-vs-rest AUC of each class with positives and negatives (sklearn's macro "ovr"
    # when every class is present; it gives NaN, not an error, when one is absent)
    scored = [c for c in labels if 0 < np.sum(y_true == c) < len(y_true)]
    if len(class_names) == 2:
        scored = scored[1:]
    auc = float(np.mean([roc_auc_score(y_true == c, probs[:, c]) for c in scored])) \
        if scored else None
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    confident = ~uncertain
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(~wrong)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                   zero_division=0)),
        "macro_auc": auc,
        "recall": {str(c): float(r) for c, r in zip(class_names, recall, strict=True)},
        "ece": expected_calibration_error(probs, y_true),
        "brier": brier_score(probs, y_true),
        "nll": negative_log_likelihood(probs, y_true),
        "coverage": float(confident.mean()),
        "confident_accuracy": float(np.mean(~wrong[confident])) if confident.any() else None,
        "errors_flagged": float(uncertain[wrong].mean()) if wrong.any() else None,
    }


def abstention(y_true, y_pred, answered) -> dict:
    """What answering only where ``answered`` (bool (N,)) buys: ``coverage`` (share answered),
    ``confident_accuracy`` (accuracy on the answered; None if none) and ``errors_flagged``
    (share of wrong predictions not answered; None without errors). Fractions in [0, 1]."""
    answered = np.asarray(answered, dtype=bool)
    wrong = np.asarray(y_pred) != np.asarray(y_true)
    return {"coverage": float(answered.mean()),
            "confident_accuracy": float(np.mean(~wrong[answered])) if answered.any() else None,
            "errors_flagged": float(np.mean(~answered[wrong])) if wrong.any() else None}


def image_key(path: str | Path) -> str:
    """``"<class folder>/<file name>"``: matches an image across machines and dataset roots."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


SWEEP_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def error_confidence_to_flag(y_true, probs, share: float = 0.9) -> float | None:
    """The confidence of the error that must fall below the uncertainty threshold for
    ``share`` of the errors to be flagged: the k-th smallest error confidence, k = ceil(share *
    errors) (the inverted-CDF quantile); None without errors. Any threshold above it flags
    at least ``share`` of them."""
    probs = np.asarray(probs, dtype=np.float64)
    wrong = probs.argmax(axis=1) != np.asarray(y_true, dtype=int)
    if not wrong.any():
        return None
    return float(np.quantile(probs.max(axis=1)[wrong], share, method="inverted_cdf"))


def threshold_sweep(y_true, probs, thresholds: Sequence[float] = SWEEP_THRESHOLDS,
                    flag_share: float = 0.9) -> dict:
    """What each uncertainty threshold buys on pooled predictions.

    Returns:
        ``{"rows": [{"threshold", "coverage", "confident_accuracy", "errors_flagged"}...],
        "for_flag_share": {"share", "threshold", "coverage", "confident_accuracy"}}``: one row
        per threshold, and the lowest threshold that flags ``flag_share`` of the errors with
        what it costs (None entries without errors). Fractions in [0, 1].
    """
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    y_pred = probs.argmax(axis=1)

    def at(t: float) -> dict:
        return {"threshold": float(t), **abstention(y_true, y_pred, confidence >= t)}

    needed = None
    c = error_confidence_to_flag(y_true, probs, flag_share)
    if c is not None:
        needed = {"share": flag_share, **at(float(np.nextafter(c, 2)))}
    return {"rows": [at(t) for t in thresholds], "for_flag_share": needed}


def block_ids(y_true, numbers, block_size: int) -> np.ndarray:
    """Bootstrap unit of each image: the rank of ``(class, (number - 1) // block_size)`` among
    the distinct pairs (sorted by class, then block), an int (N,)."""
    pairs = np.stack([np.asarray(y_true, dtype=np.int64),
                      (np.asarray(numbers, dtype=np.int64) - 1) // block_size], axis=1)
    return np.unique(pairs, axis=0, return_inverse=True)[1].reshape(-1)


def block_bootstrap_ci(y_true, probs, blocks, threshold: float = UNCERTAINTY_THRESHOLD, n_boot: int = 1000,
                       seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile CIs of :data:`CI_METRICS`, resampling whole blocks with replacement within
    each class (the class sizes stay about as they are)."""
    y_true = np.asarray(y_true, dtype=int)
    rng = np.random.default_rng(seed)
    members: dict[int, list[np.ndarray]] = {}
    for b in np.unique(blocks):
        idx = np.flatnonzero(blocks == b)
        members.setdefault(int(y_true[idx[0]]), []).append(idx)
    draws = {k: [] for k in CI_METRICS}
    for _ in range(n_boot):
        idx = np.concatenate([class_blocks[j] for class_blocks in members.values()
                              for j in rng.integers(0, len(class_blocks), len(class_blocks))])
        m = oof_metrics(y_true[idx], probs[idx], threshold)
        for k in CI_METRICS:
            if m[k] is not None:
                draws[k].append(m[k])
    alpha = (1 - level) / 2
    return {k: [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))]
            for k, v in draws.items() if v}


def pooled_out_of_fold(run_dirs: Sequence[str | Path], threshold: float = UNCERTAINTY_THRESHOLD,
                       block_size: int = 36, n_boot: int = 1000, seed: int = 0,
                       predictions: str = PREDICTIONS_FILE,
                       colour_check: dict[str, int] | None = None) -> dict:
    """Pool the test parts of the fold runs, with and without per-fold temperature scaling.

    Args:
        run_dirs: one finished run per fold (each with ``predictions.csv``).
        threshold: the "uncertain" confidence threshold.
        block_size: file numbers per bootstrap block.
        predictions: the per-run file to pool (``predictions_tta.csv`` for test-time
            augmentation).
        colour_check: the colour check's class for each test image (:func:`image_key` ->
            class, out of fold, from :func:`all_tf.experiments.audit.colour_baseline_oof`):
            adds ``"colour_check"``, the raw predictions answered only where the confidence
            reaches ``threshold`` and the colour check names the same class
            (:func:`abstention`, plus ``disagreements``, the share of images where it does
            not, and ``missing``, images it has no class for, which count as disagreeing).

    Returns:
        ``{"raw": metrics, "calibrated": metrics, "ci": {...}, "ci_calibrated": {...},
        "temperatures": [T per fold], "folds": [per-fold raw metrics]}`` (see
        :func:`oof_metrics`).

    An image tested by two folds (runs split before duplicate groups were tied to one fold)
    is counted once, from the first of them; ``duplicates_dropped`` says how many such rows
    were dropped.
    """
    ys, raw, cal, numbers, paths, temps, folds = [], [], [], [], [], [], []
    val_thresholds, strict = [], []
    for run_dir in run_dirs:
        pred = read_predictions(run_dir, predictions)
        test, val = pred["test"], pred.get("val")
        t = fit_temperature(val["p"], val["y"]) if val is not None and len(val["y"]) else 1.0
        temps.append(t)
        # the threshold that would flag 90 % of this fold's validation errors, for its test fold
        need = threshold_sweep(val["y"], val["p"], ())["for_flag_share"] \
            if val is not None and len(val["y"]) else None
        val_thresholds.append(None if need is None else need["threshold"])
        strict.append(np.full(len(test["y"]), threshold if need is None else need["threshold"]))
        ys.append(test["y"])
        raw.append(test["p"])
        cal.append(apply_temperature(test["p"], t))
        numbers.append(test["number"])
        paths.append(test["path"])
        folds.append(oof_metrics(test["y"], test["p"], threshold))
    paths = np.concatenate(paths)
    # an image tested by two folds counts once, whatever dataset root each run was given
    _, first = np.unique([image_key(p) for p in paths], return_index=True)
    keep = np.sort(first)
    y, raw, cal = (np.concatenate(a)[keep] for a in (ys, raw, cal))
    strict = np.concatenate(strict)[keep]
    blocks = block_ids(y, np.concatenate(numbers)[keep], block_size)
    y_pred = raw.argmax(axis=1)
    checked = None
    if colour_check is not None:
        colour = np.array([colour_check.get(image_key(p), -1) for p in paths[keep]])
        agree = colour == y_pred
        checked = {**abstention(y, y_pred, agree & (raw.max(axis=1) >= threshold)),
                   "disagreements": float(np.mean(~agree)), "missing": int(np.sum(colour < 0))}
    return {
        "raw": oof_metrics(y, raw, threshold),
        "calibrated": oof_metrics(y, cal, threshold),
        "ci": block_bootstrap_ci(y, raw, blocks, threshold, n_boot, seed),
        "ci_calibrated": block_bootstrap_ci(y, cal, blocks, threshold, n_boot, seed),
        "temperatures": temps,
        "folds": folds,
        "threshold": threshold,
        "block_size": block_size,
        "duplicates_dropped": int(len(paths) - len(keep)),
        "sweep": threshold_sweep(y, raw),
        # per fold, the threshold flagging 90 % of its validation errors, scored on its test fold
        "val_chosen_threshold": {"thresholds": val_thresholds,
                                 **abstention(y, y_pred, raw.max(axis=1) >= strict)},
        "colour_check": checked,
    }


def _pct(x, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def crossval_markdown(results: dict[str, dict], colour: dict | None = None,
                      peer: dict | None = PEER) -> str:
    """One table row per recipe (``results``: name -> :func:`pooled_out_of_fold` output), then
    the colour-histogram baseline and the peer, in %."""
    header = ("| recipe | images | balanced acc. [95 % CI] | macro F1 | macro AUC | "
              "ECE raw → cal. | Brier raw → cal. | coverage raw → cal. | acc. on confident "
              "raw → cal. | errors flagged raw → cal. | recall Benign / Early / Pre / Pro |")
    lines = [header, "|" + "---|" * 11]
    for name, r in results.items():
        raw, cal = r["raw"], r["calibrated"]
        recall = " / ".join(_pct(raw["recall"][c]) for c in CLASS_NAMES)
        lines.append(
            f"| {name} | {raw['n']} | {_pct(raw['balanced_accuracy'])}"
            f"{_ci(r['ci'].get('balanced_accuracy'))} | {_pct(raw['macro_f1'])} | "
            f"{_pct(raw['macro_auc'])} | {_pct(raw['ece'])} → {_pct(cal['ece'])} | "
            f"{raw['brier']:.3f} → {cal['brier']:.3f} | {_pct(raw['coverage'])} → "
            f"{_pct(cal['coverage'])} | {_pct(raw['confident_accuracy'])} → "
            f"{_pct(cal['confident_accuracy'])} | {_pct(raw['errors_flagged'])} → "
            f"{_pct(cal['errors_flagged'])} | {recall} |")
    if colour:
        raw = colour["raw"]
        recall = " / ".join(_pct(raw["recall"][c]) for c in CLASS_NAMES)
        lines.append(
            f"| colour histograms + random forest (label corner masked) | {raw['n']} | "
            f"{_pct(raw['balanced_accuracy'])}{_ci(colour['ci'].get('balanced_accuracy'))} | "
            f"{_pct(raw['macro_f1'])} | {_pct(raw['macro_auc'])} | {_pct(raw['ece'])} | "
            f"{raw['brier']:.3f} | {_pct(raw['coverage'])} | {_pct(raw['confident_accuracy'])}"
            f" | {_pct(raw['errors_flagged'])} | {recall} |")
    sweeps = {name: r["sweep"] for name, r in results.items() if r.get("sweep")}
    if sweeps:
        thresholds = [row["threshold"] for row in next(iter(sweeps.values()))["rows"]]
        lines_sweep = [
            "",
            "Uncertainty threshold (raw probabilities): coverage / accuracy on the answered / "
            "errors flagged, in %; last column: the lowest threshold that flags 90 % of the "
            "errors.",
            "",
            "| recipe | " + " | ".join(f"≥ {t:g}" for t in thresholds) + " | flags 90 % |",
            "|---|" + "---|" * (len(thresholds) + 1),
        ]
        for name, sweep in sweeps.items():
            cells = [f"{_pct(r['coverage'])} / {_pct(r['confident_accuracy'])} / "
                     f"{_pct(r['errors_flagged'])}" for r in sweep["rows"]]
            need = sweep["for_flag_share"]
            cells.append("–" if need is None else
                         f"≥ {need['threshold']:.3f}: {_pct(need['coverage'])} / "
                         f"{_pct(need['confident_accuracy'])} / {_pct(need['errors_flagged'])}")
            lines_sweep.append(f"| {name} | " + " | ".join(cells) + " |")
        chosen = {name: r["val_chosen_threshold"] for name, r in results.items()
                  if r.get("val_chosen_threshold")}
        if chosen:
            lines_sweep += ["", "Threshold chosen per fold on its validation block (the lowest "
                            "flagging 90 % of that block's errors), scored on the test folds: "
                            "coverage / accuracy on the answered / errors flagged, in %.", "",
                            "| recipe | thresholds per fold | pooled test folds |", "|---|---|---|"]
            for name, c in chosen.items():
                ts = ", ".join("–" if t is None else f"{t:.3f}" for t in c["thresholds"])
                lines_sweep.append(f"| {name} | {ts} | {_pct(c['coverage'])} / "
                                   f"{_pct(c['confident_accuracy'])} / "
                                   f"{_pct(c['errors_flagged'])} |")
    else:
        lines_sweep = []
    checks = {name: r for name, r in results.items() if r.get("colour_check")}
    if checks:
        lines_sweep += ["", "Colour check: a prediction is answered only where its confidence "
                        "reaches the threshold and a logistic regression on the field's colour "
                        "histograms (fitted on the same fold) names the same class; coverage / "
                        "accuracy on the answered / errors flagged, in %.", "",
                        "| recipe | threshold alone | threshold + colour check | colour disagrees |",
                        "|---|---|---|---|"]
        for name, r in checks.items():
            raw, c = r["raw"], r["colour_check"]
            lines_sweep.append(
                f"| {name} | {_pct(raw['coverage'])} / {_pct(raw['confident_accuracy'])} / "
                f"{_pct(raw['errors_flagged'])} | {_pct(c['coverage'])} / "
                f"{_pct(c['confident_accuracy'])} / {_pct(c['errors_flagged'])} | "
                f"{_pct(c['disagreements'])} |")
    if peer:
        lines.append(
            f"| {peer['name']} | 3256 | {_pct(peer['balanced_accuracy'])}"
            f"{_ci(peer['balanced_accuracy_ci'])} | {_pct(peer['macro_f1'])} | "
            f"{_pct(peer['macro_auc'])} | – → {_pct(peer['ece_calibrated'])} | – | – | – | – | – |")
    return "\n".join(lines + lines_sweep) + "\n"


def write_json(path: str | Path, doc: dict) -> None:
    from all_tf.io import atomic_write_text

    atomic_write_text(path, json.dumps(doc, indent=2))
