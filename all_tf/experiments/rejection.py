"""How often the gate stops a prediction: held-out all4 folds against inputs the model does not know.

For every fold run of a contiguous cross-validation (``all-tf protocol``), the gate is fitted
as it is for a released model (input bounds on the fold's training images, the Mahalanobis
feature distance on their pooled features with its threshold 3 times the 99th percentile of
the validation part, the colour check on the training and validation images) and applied as
``predict`` applies it (the run's temperature, uncertainty threshold and test-time
augmentation from its ``config.json``) to:

* ``all4 held-out``: the fold's test part (in-distribution; the rejection rate should be low);
* ``synthetic:<kind>``: black, white, noise, grayscale, inverted, heavily blurred and
  colour-shuffled versions of :data:`N_SOURCE` of the fold's test fields;
* ``natural photographs``: the images that ship with scikit-image and scikit-learn, whole and
  as 224 px crops;
* ``segwbc``: single white cells at another magnification and stain (optional).

The AUROC columns compare out-of-distribution scores of each set against the held-out all4
images: Mahalanobis (the one the gate uses), kNN distance on L2-normalised features (k = 10)
and the maximum softmax probability.

Example:
    >>> from all_tf.experiments.rejection import rejection_study
    >>> text = rejection_study("results/cv_mnv3_A")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

SYNTHETIC = ("black", "white", "noise", "grayscale", "inverted", "blurred", "colour_shuffled")
N_SOURCE = 30  # test fields per fold used to make the synthetic sets
FORMAT = 2  # cached fold results of another format are measured again


def synthetic_images(kind: str, sources: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """``len(sources)`` RGB uint8 images of one synthetic out-of-distribution ``kind`` (one of
    :data:`SYNTHETIC`), each made from the source image at the same position."""
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
    """Photographs bundled with scikit-image and scikit-learn (RGB uint8), whole and as
    224 px corner crops of those at least 448 px on each side."""
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
    """The segwbc white-cell images (``<root>/*/images/*.png``)."""
    from all_tf.io import read_image

    return [read_image(p) for p in sorted(Path(root).glob("*/images/*.png"))]


def _auroc(in_scores, out_scores) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(y, np.r_[in_scores, out_scores]))


def evaluate_fold(run_dir: Path, data_dir: str | None, segwbc: Path | None,
                  model=None) -> dict:
    """Statuses and AUROCs of one fold run (see the module docstring).

    Args:
        run_dir: a fold run of ``all-tf protocol`` (``config.json``, ``split.json``).
        data_dir: all4 root; None: the ``data_dir`` of the run's config.
        segwbc: segwbc root, or None for no segwbc set.
        model: the fold's Keras model; None: ``checkpoints/best.keras`` of the run.

    Returns:
        ``{"format", "run_dir", "gate": {temperature, threshold, tta, ood_threshold},
        "bounds", "all4_errors": {n, rejected, uncertain_threshold, colour_only},
        "sets": {name: {n, rejected, uncertain, colour_only, reasons, auroc}}}``;
        ``colour_only`` counts answers that are uncertain only because the colour check
        names another class.
    """
    from sklearn.neighbors import NearestNeighbors

    from all_tf.evaluation.calibration import apply_temperature
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
    fn = probabilities_and_features(model if model is not None else load_model(run_dir))
    train = analyse_records(split.train, cfg, fn)
    val = analyse_records(split.val, cfg, fn)
    test = analyse_records(split.test, cfg, fn)
    gate = fit_gate(train, val, colour_check=True)
    temperature, threshold = float(cfg.temperature), float(cfg.uncertainty_threshold)

    def unit(f):
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    knn = NearestNeighbors(n_neighbors=10).fit(unit(train.features))

    def measure(a):
        """OOD scores of ``a`` and its statuses with and without the colour check."""
        probs = apply_temperature(a.probabilities, temperature)
        scores = {"mahalanobis": gate.distance.score(a.features),
                  "knn": knn.kneighbors(unit(a.features))[0][:, -1],
                  "msp": -probs.max(axis=1)}
        with_colour, without = [], []
        for s, o, p, c in zip(a.statistics, scores["mahalanobis"], probs,
                              gate.colour.classes(a.colours), strict=True):
            k = int(p.argmax())
            with_colour.append(gate.status(s, float(o), float(p[k]), threshold, k, int(c)))
            without.append(gate.status(s, float(o), float(p[k]), threshold))
        return scores, with_colour, without

    def counts(with_colour, without):
        reasons: dict[str, int] = {}
        for s in with_colour:
            if s.startswith("rejected:"):
                reason = s.split(":", 1)[1]
                reasons[reason] = reasons.get(reason, 0) + 1
        return {"n": len(with_colour),
                "rejected": sum(s.startswith("rejected") for s in with_colour),
                "uncertain": with_colour.count("uncertain"),
                "colour_only": sum(a == "uncertain" and b == "ok"
                                   for a, b in zip(with_colour, without, strict=True)),
                "reasons": reasons}

    sources = [read_image(split.test[k].path)
               for k in np.linspace(0, len(split.test) - 1, N_SOURCE).astype(int)]
    sets = {f"synthetic:{kind}": synthetic_images(kind, sources, seed=k)
            for k, kind in enumerate(SYNTHETIC)}
    sets["natural photographs"] = natural_images()
    if segwbc is not None:
        sets["segwbc"] = segwbc_images(segwbc)

    test_scores, held_with, held_without = measure(test)
    wrong = test.probabilities.argmax(1) != test.labels  # a temperature keeps the argmax
    errors = counts([s for s, w in zip(held_with, wrong, strict=True) if w],
                    [s for s, w in zip(held_without, wrong, strict=True) if w])
    result = {"format": FORMAT, "run_dir": str(run_dir), "segwbc_dir": _segwbc_key(segwbc),
              "gate": {"temperature": temperature, "threshold": threshold, "tta": bool(cfg.tta),
                       "ood_threshold": gate.distance.threshold},
              "bounds": gate.bounds,
              "all4_errors": {"n": errors["n"], "rejected": errors["rejected"],
                              "uncertain_threshold": errors["uncertain"] - errors["colour_only"],
                              "colour_only": errors["colour_only"]},
              "sets": {"all4 held-out": {**counts(held_with, held_without), "auroc": None}}}
    for name, images in sets.items():
        out_scores, with_colour, without = measure(analyse_images(images, cfg, fn))
        result["sets"][name] = {**counts(with_colour, without), "auroc": {
            k: _auroc(test_scores[k], out_scores[k]) for k in test_scores}}
    return result


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / max(whole, 1):.1f}"


def pooled_markdown(folds: list[dict]) -> str:
    """The table of :func:`evaluate_fold` results pooled over folds (percent of images)."""
    names = list(folds[0]["sets"])
    lines = ["| set | images | rejected % | uncertain % (of which colour check only) | "
             "rejected or uncertain % | AUROC Mahalanobis | AUROC kNN | AUROC max-softmax | "
             "main reasons |", "|" + "---|" * 9]
    for name in names:
        rows = [f["sets"][name] for f in folds if name in f["sets"]]
        n = sum(r["n"] for r in rows)
        rej = sum(r["rejected"] for r in rows)
        unc = sum(r["uncertain"] for r in rows)
        colour = sum(r["colour_only"] for r in rows)
        reasons: dict[str, int] = {}
        for r in rows:
            for k, v in r["reasons"].items():
                reasons[k] = reasons.get(k, 0) + v
        top = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        au = [r["auroc"] for r in rows if r["auroc"]]
        auc = ["–"] * 3 if not au else [f"{np.mean([a[k] for a in au]):.3f}"
                                         for k in ("mahalanobis", "knn", "msp")]
        lines.append(f"| {name} | {n} | {_pct(rej, n)} | {_pct(unc, n)} ({_pct(colour, n)}) | "
                     f"{_pct(rej + unc, n)} | {' | '.join(auc)} | {top} |")
    errors = {k: sum(f["all4_errors"][k] for f in folds)
              for k in ("n", "rejected", "uncertain_threshold", "colour_only")}
    n = errors["n"]
    without = errors["rejected"] + errors["uncertain_threshold"]
    lines += ["", f"Wrong predictions on the held-out all4 folds: {n}; rejected "
              f"{errors['rejected']}, uncertain by the confidence threshold "
              f"{errors['uncertain_threshold']}, uncertain only by the colour check "
              f"{errors['colour_only']}. Stopped (rejected or uncertain): "
              f"{without + errors['colour_only']} ({_pct(without + errors['colour_only'], n)} %) "
              f"with the colour check, {without} ({_pct(without, n)} %) without."]
    return "\n".join(lines) + "\n"


def _segwbc_key(segwbc: Path | None) -> str | None:
    return None if segwbc is None else str(Path(segwbc).resolve())


def _is_current(cached: dict, segwbc: Path | None) -> bool:
    """Whether a cached fold result has this format, every gate statistic and a segwbc row
    from this ``segwbc`` folder exactly when one is asked for."""
    from all_tf.inference.gate import STATISTICS

    return (cached.get("format") == FORMAT
            and set(STATISTICS) <= set(cached.get("bounds", {}))
            and ("segwbc" in cached.get("sets", {})) == (segwbc is not None)
            and cached.get("segwbc_dir") == _segwbc_key(segwbc))


def rejection_study(protocol_dir: str | Path, data_dir: str | None = None,
                    segwbc: Path | None = None, releases: dict[str, Path] | None = None,
                    output: Path | None = None, echo: Callable[[str], None] = print) -> str:
    """Run :func:`evaluate_fold` on every finished fold run of ``protocol_dir`` and return the
    pooled Markdown (also written to ``output``, default ``<protocol_dir>/rejection.md``).

    Fold results are cached in ``<protocol_dir>/rejection/<run id>.json`` as each finishes;
    a cached result of another :data:`FORMAT`, without one of the gate's statistics, or whose
    segwbc row is missing, unasked for or from another folder is measured again. A fold recorded from a release (no checkpoint in its run folder) takes its
    model from ``releases[<run id>]``; without one it is left out, with a message.

    Raises:
        ValueError: no finished contiguous fold run in ``protocol_dir/runs``.
    """
    import keras

    from all_tf.evaluation.fold_records import finished_fold_runs
    from all_tf.io import atomic_write_text
    from all_tf.models.released import materialize_keras

    protocol_dir = Path(protocol_dir)
    releases = releases or {}
    runs = finished_fold_runs(protocol_dir)
    cache = protocol_dir / "rejection"
    cache.mkdir(exist_ok=True)
    folds = []
    for run in runs:
        path = cache / f"{run.name}.json"
        if path.exists():
            cached = json.loads(path.read_text())
            if _is_current(cached, segwbc):
                folds.append(cached)
                continue
        model = None
        if not (run / "checkpoints" / "best.keras").is_file():
            if run.name not in releases:
                echo(f"skip {run.name}: no checkpoint (a fold recorded from a release? "
                     "pass that release with --release)")
                continue
            model = keras.models.load_model(materialize_keras(releases[run.name]),
                                            compile=False)
        echo(f"gate on {run.name} ...")
        result = evaluate_fold(run, data_dir, segwbc, model)
        atomic_write_text(path, json.dumps(result, indent=1))
        folds.append(result)
    if not folds:
        raise ValueError(f"{protocol_dir}: no fold run with a model to measure")
    gates = {(f["gate"]["temperature"], f["gate"]["threshold"], f["gate"]["tta"]) for f in folds}
    setting = "; ".join(f"temperature {t:g}, threshold {h:g}, test-time augmentation "
                        f"{'on' if a else 'off'}" for t, h, a in sorted(gates))
    text = (f"# Rejection: {len(folds)} fold runs of {protocol_dir}\n\n"
            "Gate fitted per fold as for a release (input bounds on the training part, "
            "feature-distance threshold 3 x the 99th percentile of the validation part, colour "
            f"check on training + validation) and applied as predict applies it ({setting}).\n\n"
            + pooled_markdown(folds))
    atomic_write_text(output or protocol_dir / "rejection.md", text)
    return text


def release_runs(releases: list[Path]) -> dict[str, Path]:
    """``{run id: release folder}`` for released models that are folds of the contiguous
    split (the run id ``all-tf protocol`` and ``scripts/released_oof.py`` give that fold).

    Raises:
        ValueError: a release that is not a fold of the contiguous split.
    """
    from all_tf.config import Config

    out = {}
    for release in releases:
        cfg = Config.load(Path(release) / "config.json")
        if cfg.split.kind != "contiguous" or cfg.split.fold is None:
            raise ValueError(f"{release}: not a fold of the contiguous split "
                             f"(split {cfg.split.kind}, fold {cfg.split.fold})")
        out[f"{cfg.model.name}_contiguous_f{cfg.split.fold}_s{cfg.split.seed}"] = Path(release)
    return out
