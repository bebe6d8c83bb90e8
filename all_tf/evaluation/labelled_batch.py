"""How a model does on a labelled batch of one's own: metrics from ``all-tf predict`` rows.

A laboratory that wants to know what a model does on its slides before trusting it labels a
few hundred fields into class folders and runs ``all-tf evaluate``; this module scores the
prediction rows (:mod:`all_tf.inference.predictor`) against those labels. Every readable field
is scored from its probabilities, as in the cross-validation tables; the statuses say what a
user of ``all-tf predict`` would have been told (``ok``, ``uncertain``, ``rejected``).
Confidence intervals resample blocks of ``block_size`` consecutive file numbers within each
class (about one slide in all4), or single images with ``block_size`` 1.

Example:
    >>> from all_tf.data import Record
    >>> records = [Record("b/1.jpg", 0), Record("e/1.jpg", 1)]
    >>> rows = [{"file": "b/1.jpg", "status": "ok", "error": "", "p_Benign": 0.9,
    ...          "p_Early": 0.1, "p_Pre": 0.0, "p_Pro": 0.0},
    ...         {"file": "e/1.jpg", "status": "uncertain", "error": "", "p_Benign": 0.6,
    ...          "p_Early": 0.4, "p_Pre": 0.0, "p_Pro": 0.0}]
    >>> result = score_rows(rows, records, threshold=0.7, n_boot=10)
    >>> result["metrics"]["accuracy"], result["answered"]["errors_flagged"]
    (0.5, 1.0)
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np

from all_tf import CLASS_NAMES
from all_tf.evaluation.crossval import (
    abstention,
    block_bootstrap_ci,
    block_ids,
    error_confidence_to_flag,
    oof_metrics,
    threshold_sweep,
)

STATUSES = ("ok", "uncertain", "rejected")


def score_rows(rows: Sequence[dict], records, threshold: float, block_size: int = 36,
               n_boot: int = 1000, seed: int = 0) -> dict:
    """Score prediction rows against the labels of ``records``.

    Args:
        rows: ``all-tf predict`` rows (``file``, ``status``, ``error``, ``p_<class>``).
        records: ``all_tf.data.Record`` list giving each file's label; rows of other files
            are counted as ``unlabelled`` and not scored.
        threshold: the uncertainty threshold the rows were made with.
        block_size: file numbers per bootstrap block (1: single images).

    Returns:
        ``{"n_images", "unreadable": {file: error}, "unlabelled", "per_class" (fields per
        class), "status" ({ok, uncertain, rejected: count}), "metrics"``
        (:func:`all_tf.evaluation.crossval.oof_metrics` of every readable field; recall,
        macro F1 and macro AUC over the classes present), ``"ci"`` (95 % block-bootstrap CIs
        of balanced accuracy and ECE), ``"confusion"`` (rows true, columns predicted),
        ``"answered"`` (:func:`all_tf.evaluation.crossval.abstention` with status ``ok`` as
        answered: accuracy of the ``ok`` answers and the share of errors stopped as
        uncertain or rejected), ``"sweep"`` (:func:`all_tf.evaluation.crossval.threshold_sweep`),
        ``"suggested_threshold"`` (:func:`_suggested_threshold`), ``"threshold"`` and
        ``"block_size"``}. Fractions in [0, 1].

    Raises:
        ValueError: no readable, labelled field among ``rows``.
    """
    from all_tf.data.splits import sequence_numbers

    label = {r.path: r.label for r in records}
    number = dict(zip((r.path for r in records), sequence_numbers(list(records)), strict=True))
    unreadable = {r["file"]: r["error"] for r in rows if r.get("error")}
    scored = [r for r in rows if not r.get("error") and r["file"] in label]
    unlabelled = sum(1 for r in rows if not r.get("error") and r["file"] not in label)
    if not scored:
        raise ValueError(f"none of the {len(rows)} images is readable and labelled")
    y = np.array([label[r["file"]] for r in scored])
    p = np.array([[float(r[f"p_{c}"]) for c in CLASS_NAMES] for r in scored])
    status = [str(r["status"]).split(":")[0] for r in scored]
    counts = Counter(status)
    y_pred = p.argmax(axis=1)
    confusion = np.zeros((len(CLASS_NAMES), len(CLASS_NAMES)), dtype=int)
    np.add.at(confusion, (y, y_pred), 1)
    blocks = block_ids(y, [number[r["file"]] for r in scored], block_size)
    with warnings.catch_warnings():  # a batch may lack classes: see _present_classes_only
        warnings.simplefilter("ignore")
        metrics = _present_classes_only(oof_metrics(y, p, threshold), y, p)
        ci = block_bootstrap_ci(y, p, blocks, threshold, n_boot=n_boot, seed=seed)
    return {
        "n_images": len(rows),
        "unreadable": unreadable,
        "unlabelled": unlabelled,
        "per_class": {c: int(n) for c, n in zip(CLASS_NAMES, np.bincount(y, minlength=4),
                                                strict=True)},
        "status": {s: counts[s] for s in STATUSES},
        "metrics": metrics,
        "ci": {k: ci[k] for k in ("balanced_accuracy", "ece") if k in ci},
        "confusion": confusion.tolist(),
        "answered": abstention(y, y_pred, np.array(status) == "ok"),
        "sweep": threshold_sweep(y, p),
        "suggested_threshold": _suggested_threshold(y, p),
        "threshold": float(threshold),
        "block_size": int(block_size),
    }


def _suggested_threshold(y: np.ndarray, p: np.ndarray, share: float = 0.9) -> dict | None:
    """The lowest threshold with 3 decimals (as typed on a command line) that flags ``share``
    of the errors, with what it buys; ``{"share", "threshold": None}`` when none does (errors at
    confidence 1.0); None without errors."""
    c = error_confidence_to_flag(y, p, share)
    if c is None:
        return None
    t = (math.floor(c * 1000 + 1e-9) + 1) / 1000
    if t > 1.0:
        return {"share": share, "threshold": None}
    return {"share": share, "threshold": t,
            **abstention(y, p.argmax(axis=1), p.max(axis=1) >= t)}


def _present_classes_only(metrics: dict, y: np.ndarray, p: np.ndarray) -> dict:
    """Recall and macro F1 over the classes the batch has (a batch of one's own may hold only
    some): recall None for an absent class (:func:`oof_metrics` already averages the AUC over
    the present classes)."""
    from sklearn.metrics import f1_score

    present = [int(c) for c in np.unique(y)]
    metrics["recall"] = {c: (v if k in present else None)
                         for k, (c, v) in enumerate(metrics["recall"].items())}
    metrics["macro_f1"] = float(f1_score(y, p.argmax(axis=1), labels=present, average="macro",
                                         zero_division=0))
    metrics["classes_present"] = [CLASS_NAMES[c] for c in present]
    return metrics


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def report_markdown(result: dict, title: str) -> str:
    """A Markdown report of :func:`score_rows`'s result."""
    m, ci = result["metrics"], result["ci"]
    n = m["n"]

    def with_ci(key):
        lo_hi = ci.get(key)
        return _pct(m[key]) + (f" [{_pct(lo_hi[0])}, {_pct(lo_hi[1])}]" if lo_hi else "")

    counts = ", ".join(f"{c} {k}" for c, k in result["per_class"].items())
    lines = [f"# {title}", "",
             f"{n} labelled fields scored ({counts}); {len(result['unreadable'])} unreadable, "
             f"{result['unlabelled']} outside the class folders. Values in % (Brier: 0 to 2); 95 % CIs "
             f"resample blocks of {result['block_size']} consecutive file numbers within each "
             "class.", "",
             "| fields | balanced acc. [95 % CI] | macro F1 | macro AUC | ECE [95 % CI] | "
             "Brier | recall " + " / ".join(CLASS_NAMES) + " |",
             "|---|---|---|---|---|---|---|",
             f"| {n} | {with_ci('balanced_accuracy')} | {_pct(m['macro_f1'])} | "
             f"{_pct(m['macro_auc'])} | {with_ci('ece')} | {m['brier']:.3f} | "
             + " / ".join(_pct(v) for v in m["recall"].values()) + " |", ""]
    s, a = result["status"], result["answered"]
    stopped = ("no errors to stop" if a["errors_flagged"] is None else
               f"{_pct(a['errors_flagged'])} % of the errors were marked uncertain or rejected")
    lines += [f"Statuses (threshold {result['threshold']:g}): ok {s['ok']}, uncertain "
              f"{s['uncertain']}, rejected {s['rejected']}. The `ok` answers "
              f"({_pct(a['coverage'])} % of the fields) are {_pct(a['confident_accuracy'])} % "
              f"correct; {stopped}.", "",
              "Confusion matrix (rows: true class, columns: predicted):", "",
              "| true \\ predicted | " + " | ".join(CLASS_NAMES) + " |",
              "|---|" + "---|" * len(CLASS_NAMES)]
    lines += [f"| {c} | " + " | ".join(str(v) for v in row) + " |"
              for c, row in zip(CLASS_NAMES, result["confusion"], strict=True)]
    sweep = result["sweep"]
    lines += ["", "What each confidence threshold buys (gate and colour check left out): "
              "coverage / accuracy on the answered / errors flagged, in %.", "",
              "| threshold | coverage | accuracy on answered | errors flagged |",
              "|---|---|---|---|"]
    lines += [f"| {r['threshold']:g} | {_pct(r['coverage'])} | "
              f"{_pct(r['confident_accuracy'])} | {_pct(r['errors_flagged'])} |"
              for r in sweep["rows"]]
    need = result["suggested_threshold"]
    if need is not None and need["threshold"] is None:
        lines += ["", f"No threshold flags {_pct(need['share'])} % of these errors: more than "
                  f"{_pct(1 - need['share'])} % of them have confidence 1.0."]
    elif need is not None:
        lines += ["", f"The lowest threshold that flags at least {_pct(need['share'])} % of these "
                  f"errors is {need['threshold']:.3f} (`all-tf predict --threshold "
                  f"{need['threshold']:.3f}`): it answers {_pct(need['coverage'])} % of the "
                  f"fields, {_pct(need['confident_accuracy'])} % of them correctly, and flags "
                  f"{_pct(need['errors_flagged'])} % of the errors. It is read off the same "
                  "fields it is scored on: check it on a second batch."]
    return "\n".join(lines) + "\n"


__all__ = ["STATUSES", "report_markdown", "score_rows"]
