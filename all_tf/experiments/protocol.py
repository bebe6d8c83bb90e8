"""Experiment protocol: many training runs, one results CSV, a mean ± sd summary.

Each run is a ``train_run`` in its own directory ``<out>/runs/<run_id>/``. After a run
finishes its row is appended to ``<out>/results.csv`` (flushed and fsynced); a rerun skips
every ``run_id`` already in the CSV, re-appends the row of a run whose ``metrics.json``
exists but whose row was lost (a crash between the two writes, or a cut last line), and
resumes an interrupted run from its last epoch. The summary files are derived from the CSV
and rewritten each time.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from all_tf import CLASS_NAMES
from all_tf.config import UNCERTAINTY_THRESHOLD, Config
from all_tf.evaluation.metrics import flat_metrics
from all_tf.evaluation.results_csv import append_row, completed_keys, read_header, read_rows
from all_tf.experiments.label_check import label_masked_columns, label_masked_metrics
from all_tf.io import atomic_write_text, cached_json

log = logging.getLogger(__name__)

RESULT_COLUMNS = [
    "run_id", "model", "head", "split", "seed", "fold", "colour_space", "image_size", "epochs",
    "accuracy", "macro_precision", "macro_recall", "macro_specificity", "macro_f1", "macro_auc",
    "coverage", "confident_accuracy", "n", "label_masked_accuracy", "label_masked_f1",
    *[f"{c}_{m}" for c in CLASS_NAMES for m in ("precision", "recall", "specificity", "f1", "auc")],
    "epochs_trained", "train_seconds", "preprocess_ms", "inference_ms_batch1",
    "inference_ms_batched", "hybrid_backend", "run_dir", "finished_at",
]
"""Columns of every results CSV written here (a fixed header: rows are only appended)."""

TABLE_METRICS = [
    ("accuracy", "Accuracy"), ("macro_precision", "Precision"), ("macro_recall", "Recall"),
    ("macro_specificity", "Specificity"), ("macro_f1", "F1"), ("macro_auc", "AUC"),
]


@dataclass
class RunSpec:
    """One training run of a protocol."""

    run_id: str
    cfg: Config
    columns: dict = field(default_factory=dict)  # constant columns of its rows (model, split...)


def split_tag(kind: str) -> str:
    return kind.replace(":", "-")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _row(spec: RunSpec, metrics: dict, run_dir: Path, head: str, run_id: str,
         extra: dict | None = None) -> dict:
    cfg = spec.cfg
    row = {
        "run_id": run_id,
        "model": cfg.model.name,
        "head": head,
        "split": cfg.split.kind,
        "seed": cfg.split.seed,
        "fold": cfg.split.fold if cfg.split.kind in ("kfold", "contiguous") else "",
        "colour_space": cfg.preprocess.colour_space,
        "image_size": cfg.preprocess.image_size,
        "epochs": cfg.train.epochs,
        **spec.columns,
        **flat_metrics(metrics),
        "epochs_trained": metrics.get("epochs_trained"),
        "train_seconds": metrics.get("train_seconds_last_session"),
        "hybrid_backend": metrics.get("hybrid_backend"),
        "run_dir": str(run_dir),
        "finished_at": _now(),
    }
    row.update(extra or {})
    return {k: v for k, v in row.items() if k in RESULT_COLUMNS}


def append_result(csv_path: Path, row: dict) -> None:
    """Append a results row; a CSV begun before a column existed keeps its header, and the
    row's cells for such new columns are dropped (finished rows are never rewritten)."""
    header = read_header(csv_path)
    if header is not None:
        dropped = [k for k in row if k not in header]
        if dropped:
            log.warning("%s predates column(s) %s; not recorded there", csv_path, dropped)
        row = {k: v for k, v in row.items() if k in header}
    append_row(csv_path, row, RESULT_COLUMNS)


def _clear_keras():
    try:
        import keras

        keras.backend.clear_session()
    except ImportError:  # pragma: no cover
        pass


def run_specs(
    specs: Iterable[RunSpec],
    out_dir: str | Path,
    *,
    hybrid: bool = False,
    hybrid_backend: str = "auto",
    label_check: bool = False,
    after_run: Callable[[RunSpec, Path], dict] | None = None,
    verbose: int = 1,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Train (or resume, or skip) each spec and append its row to ``<out_dir>/results.csv``.

    Args:
        specs: the runs, in order.
        out_dir: protocol directory; runs go to ``out_dir/runs/<run_id>``.
        hybrid: also fit the boosted-trees head on each run's features (row ``<id>+gbt``).
        label_check: also score each run with the label corner hidden
            (:func:`label_masked_metrics`, columns ``label_masked_*`` of its softmax row).
        after_run: optional ``(spec, run_dir) -> extra columns`` (e.g. timings), called once
            per finished run before its row is written; it should cache its result in the
            run directory, since a lost row makes it run again.
        verbose: Keras verbosity for training.

    Returns:
        All complete rows of the CSV after the protocol (strings, as read back).

    Raises:
        all_tf.training.RunError (a ValueError): a run directory holds another config, or the
            data cannot be trained on.
    """
    from all_tf.experiments import run as experiment
    from all_tf.training.run import prepare_output_dir

    out_dir = Path(out_dir)
    csv_path = out_dir / "results.csv"
    done = completed_keys(csv_path)
    for spec in specs:
        run_dir = out_dir / "runs" / spec.run_id
        ids = [spec.run_id] + ([f"{spec.run_id}+gbt"] if hybrid else [])
        if (run_dir / "config.json").exists():
            prepare_output_dir(spec.cfg, run_dir)  # RunError if another config
        if all(i in done for i in ids):
            echo(f"skip {spec.run_id}: already in {csv_path.name}")
            continue
        if spec.run_id not in done:
            if (run_dir / "metrics.json").exists():
                echo(f"{spec.run_id}: finished earlier, recording its stored metrics")
            else:
                echo(f"train {spec.run_id} -> {run_dir}")
            metrics = experiment.train_run(spec.cfg, run_dir, verbose=verbose)
            if metrics.get("stopped_by_deadline"):
                echo(f"warning: {spec.run_id} was stopped by a time limit before the end of its "
                     "schedule (fit_packed_folds.py --deadline-minutes): recorded as it is")
            extra = after_run(spec, run_dir) if after_run else {}
            if label_check:
                extra = {**label_masked_columns(label_masked_metrics(run_dir)), **extra}
            append_result(csv_path, _row(spec, metrics, run_dir, "softmax", spec.run_id, extra))
            done.add(spec.run_id)
        if hybrid and f"{spec.run_id}+gbt" not in done \
                and not (run_dir / "checkpoints" / "best.keras").is_file():
            echo(f"skip {spec.run_id}+gbt: no checkpoints/best.keras (a recorded fold has no "
                 "network to take features from)")
        elif hybrid and f"{spec.run_id}+gbt" not in done:
            metrics = hybrid_metrics(run_dir, backend=hybrid_backend, seed=spec.cfg.split.seed)
            append_result(csv_path, _row(spec, metrics, run_dir, "gbt", f"{spec.run_id}+gbt"))
            done.add(f"{spec.run_id}+gbt")
        _clear_keras()
    return read_rows(csv_path)


def _earlier_recipes(json_path: Path, current: dict, folds: list[int], threshold: float
                     ) -> dict:
    """The recipes of an earlier ``crossval*.json`` that ``current`` does not pool again, when
    it pooled the same folds at the same threshold (0.7 in a file that does not say)."""
    import json

    try:
        earlier = json.loads(json_path.read_text()) if json_path.is_file() else {}
    except ValueError:
        return {}
    if earlier.get("folds") != folds or earlier.get("threshold", UNCERTAINTY_THRESHOLD) \
            != threshold:
        return {}
    return {k: v for k, v in earlier.get("recipes", {}).items() if k not in current}


def hybrid_metrics(run_dir: str | Path, backend: str = "auto", seed: int = 0) -> dict:
    """Boosted-trees metrics of a finished run, cached in ``hybrid_metrics.json``."""
    from all_tf.evaluation.hybrid import evaluate_hybrid
    from all_tf.evaluation.runs import load_config, load_model, load_split

    run_dir = Path(run_dir)

    def compute() -> dict:
        cfg = load_config(run_dir)
        model = load_model(run_dir)
        split = load_split(run_dir, cfg.data_dir)
        return evaluate_hybrid(model, split, cfg, backend=backend, seed=seed,
                               batch_size=cfg.train.batch_size)

    return cached_json(run_dir / "hybrid_metrics.json", compute)


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def summarise(rows: list[dict], group_by=("model", "head", "split"),
              metrics=None) -> list[dict]:
    """Mean and sample sd (ddof 1; empty for one seed) of each metric per group, in row order.

    Returns:
        One dict per group: the group keys, ``n_runs``, ``<metric>_mean``, ``<metric>_sd``.
    """
    import numpy as np

    metrics = metrics or [k for k, _ in TABLE_METRICS] + ["coverage", "confident_accuracy",
                                                          "label_masked_accuracy"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k, "") for k in group_by), []).append(row)
    out = []
    for key, members in groups.items():
        entry = dict(zip(group_by, key, strict=True))
        entry["n_runs"] = len(members)
        for m in metrics:
            values = np.array([_num(r.get(m)) for r in members])
            values = values[~np.isnan(values)]
            entry[f"{m}_mean"] = float(values.mean()) if values.size else None
            entry[f"{m}_sd"] = float(values.std(ddof=1)) if values.size > 1 else None
        out.append(entry)
    return out


def _pm(mean, sd, percent: bool = True) -> str:
    if mean is None:
        return "–"
    scale = 100.0 if percent else 1.0
    text = f"{scale * mean:.2f}"
    return text + (f" ± {scale * sd:.2f}" if sd is not None else "")


def summary_markdown(summary: list[dict], title: str, by: str = "split",
                     label_keys=("model", "head"), intro: str = "",
                     headings: dict | None = None) -> str:
    """Markdown tables (one per value of ``by``), metrics in % as mean ± sd over runs.

    ``headings`` maps a value of ``by`` to its section title (default ``"<by> <value>"``).
    """
    lines = [f"# {title}", ""]
    if intro:
        lines += [intro, ""]
    header = [*label_keys, "runs", *(name for _, name in TABLE_METRICS), "coverage",
              "acc. on confident", "acc. label hidden"]
    for value in dict.fromkeys(s[by] for s in summary):
        heading = (headings or {}).get(value, f"{by} {value}")
        lines += [f"## {heading}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for s in (s for s in summary if s[by] == value):
            cells = [str(s[k]) for k in label_keys] + [str(s["n_runs"])]
            cells += [_pm(s[f"{k}_mean"], s[f"{k}_sd"]) for k, _ in TABLE_METRICS]
            cells += [_pm(s["coverage_mean"], s["coverage_sd"]),
                      _pm(s["confident_accuracy_mean"], s["confident_accuracy_sd"]),
                      _pm(s.get("label_masked_accuracy_mean"), s.get("label_masked_accuracy_sd"))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Metrics in %, mean ± sample sd over the runs (seeds, and folds of a folded "
                 "split; no sd with one run); macro "
                 "averages over the four classes; coverage = share of test images with "
                 "confidence >= the uncertainty threshold; acc. label hidden = accuracy with "
                 "the burned-in label corner of every test image masked (softmax head).")
    return "\n".join(lines) + "\n"


def write_summary(out_dir: str | Path, title: str, group_by=("model", "head", "split"),
                  by: str = "split", label_keys=("model", "head"), intro: str = "",
                  headings: dict | None = None) -> list[dict]:
    """Write ``summary.csv`` and ``summary.md`` from ``results.csv``; return the summary."""
    import csv
    import io

    out_dir = Path(out_dir)
    summary = summarise(read_rows(out_dir / "results.csv"), group_by)
    if summary:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(summary[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(summary)
        atomic_write_text(out_dir / "summary.csv", buf.getvalue())
    atomic_write_text(out_dir / "summary.md",
                      summary_markdown(summary, title, by=by, label_keys=label_keys, intro=intro,
                                       headings=headings))
    return summary


FOLDED = ("contiguous", "kfold")
"""Split kinds with one run per fold."""


def protocol_specs(base, models, splits, seeds, cbam_placements=None, folds=None):
    """One ``RunSpec`` per split x model (x CBAM placement) (x fold) x seed, in that order.

    Run ids are ``<model>_<split>_s<seed>``, and ``<model>_contiguous_f<fold>_s<seed>`` for
    each fold of the contiguous split (``folds``, in the order given; default all
    ``n_folds``); a CBAM placement other than ``base``'s makes the model tag
    ``<model>-<placement>`` in the id and in the table's model column.

    Raises:
        ValueError: an invalid split kind, placement or fold.
    """
    from all_tf.models import CBAM_PLACEMENTS

    unknown = [p for p in cbam_placements or [] if p not in CBAM_PLACEMENTS]
    if unknown:
        raise ValueError(f"unknown CBAM placement(s) {unknown}; choose from {CBAM_PLACEMENTS}")
    fold_order = list(range(base.split.n_folds)) if folds is None else list(folds)
    bad = [f for f in fold_order if not 0 <= f < base.split.n_folds]
    if bad or len(set(fold_order)) != len(fold_order):
        raise ValueError(f"--folds {','.join(map(str, fold_order))}: each fold once, from 0 to "
                         f"{base.split.n_folds - 1}")
    specs = []
    for split in splits:
        for model in models:
            placements = (cbam_placements or [base.model.cbam_placement]) \
                if model.endswith("_cbam") else [base.model.cbam_placement]
            for placement in placements:
                tag = model if placement == base.model.cbam_placement else f"{model}-{placement}"
                for fold in fold_order if split in FOLDED else [None]:
                    for seed in seeds:
                        cfg = base.override({"model.name": model, "split.seed": seed,
                                             "model.cbam_placement": placement,
                                             "split.kind": split, "split.fold": fold})
                        part = split_tag(split) + ("" if fold is None else f"_f{fold}")
                        columns = {"model": tag} if tag != model else {}
                        specs.append(RunSpec(f"{tag}_{part}_s{seed}", cfg, columns))
    return specs


def write_crossval(output_dir: Path, specs, base, colour_baseline: bool, tta: bool = False,
                   folds=None) -> Path:
    """Pool each (model, seed)'s contiguous folds into crossval.json / crossval.md.

    Recipes pooled by an earlier command into the same file (other models or seeds, the same
    folds and threshold) stay in the tables, so running the protocol one model or seed at a
    time builds one table.

    ``folds``: the folds pooled (default all). A subset writes ``crossval_f<folds>.json`` /
    ``.md`` instead (so a full cross-validation's tables are never replaced by part of one),
    scores the colour baseline on the same folds (cached as ``colour_baseline_oof_f<folds>.json``)
    and names the folds in the text. With the colour baseline, each recipe is also scored
    with the colour check (:mod:`all_tf.inference.colour_check`) fitted on the same folds.
    """
    from all_tf.evaluation.crossval import (
        crossval_markdown,
        pooled_out_of_fold,
        write_json,
    )
    from all_tf.experiments.audit import colour_baseline_oof

    cfg = base.split
    pooled_folds = list(range(cfg.n_folds)) if folds is None else sorted(folds)
    subset = pooled_folds != list(range(cfg.n_folds))
    suffix = "_f" + "".join(map(str, pooled_folds)) if subset else ""
    colour = None
    if colour_baseline:
        cache = output_dir / f"colour_baseline_oof{suffix}.json"

        def compute():
            return colour_baseline_oof(base.data_dir, base.split, folds=pooled_folds,
                                       block_size=cfg.block_size,
                                       threshold=base.uncertainty_threshold)

        colour = cached_json(cache, compute)
        # cached before the colour check existed, or at another threshold (0.7 when unsaid)
        if "check" not in colour or colour.get("threshold", UNCERTAINTY_THRESHOLD) \
                != base.uncertainty_threshold:
            cache.unlink()
            colour = cached_json(cache, compute)
    check = colour["check"] if colour else None
    groups: dict[str, list[Path]] = {}
    for spec in specs:
        name = f"{spec.columns.get('model', spec.cfg.model.name)} s{spec.cfg.split.seed}"
        groups.setdefault(name, []).append(output_dir / "runs" / spec.run_id)
    results = {}
    for name, dirs in groups.items():
        results[name] = pooled_out_of_fold(dirs, threshold=base.uncertainty_threshold,
                                           block_size=base.split.block_size, colour_check=check)
        if tta and base.preprocess.input_mode == "image":
            from all_tf.evaluation.tta import TTA_PREDICTIONS_FILE, write_tta_predictions

            for run_dir in dirs:
                write_tta_predictions(run_dir)
            results[f"{name} + TTA"] = pooled_out_of_fold(
                dirs, threshold=base.uncertainty_threshold, block_size=base.split.block_size,
                predictions=TTA_PREDICTIONS_FILE, colour_check=check)
    json_path = output_dir / f"crossval{suffix}.json"
    results = {**_earlier_recipes(json_path, results, pooled_folds, base.uncertainty_threshold),
               **results}
    write_json(json_path, {"recipes": results, "colour_baseline": colour, "folds": pooled_folds,
                           "threshold": base.uncertainty_threshold})
    pooled = (f"Only fold{'s' if len(pooled_folds) > 1 else ''} "
              f"{', '.join(map(str, pooled_folds))} of the {cfg.n_folds} pooled here: not a "
              "full cross-validation. " if subset else "")
    text = (f"# Contiguous cross-validation\n\n{pooled}{cfg.n_folds} contiguous folds per class, "
            f"embargo {cfg.embargo} file numbers, pooled out-of-fold test predictions; CIs "
            f"resample blocks of {cfg.block_size} file numbers within each class (1000 draws); "
            "'cal.' = temperature fitted on each fold's validation part; confidence threshold "
            f"{base.uncertainty_threshold}. Values in %.\n\n"
            + crossval_markdown(results, colour))
    path = output_dir / f"crossval{suffix}.md"
    atomic_write_text(path, text)
    return path
