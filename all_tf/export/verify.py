"""Run TFLite files with LiteRT in a separate process; parity and speed against Keras.

``python -m all_tf.export.verify MODEL.tflite INPUTS.npy OUTPUT.npz`` is the worker: it loads
one file with ``ai_edge_litert.interpreter.Interpreter`` (default XNNPACK delegate), runs every
input image (float32 (N, S, S, 3) in the model's value range; quantised here when the model
takes int8), and writes the dequantised probabilities and ms/image for each thread count.
:func:`verify_tflite` starts one worker per file, so a delegate crash (an abort in
``allocate_tensors``, say) is reported as that file's status instead of killing the caller, and
the converter's calibration never shares a process with the interpreter.
:func:`verify_saved_model` runs a SavedModel's ``serving_default`` on image bytes, and
:func:`edge_default` picks the file for edge devices from the rows of both.

Example:
    >>> from all_tf.export.verify import verify_tflite  # doctest: +SKIP
    >>> report = verify_tflite(["m_int8.tflite"], inputs, keras_probs, labels=labels)  # doctest: +SKIP
    >>> report[0]["top1_agreement"], report[0]["ms_per_image"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

from all_tf.inference.model_files import read_metadata
from all_tf.inference.tflite_runner import TFLiteRunner

INT8_MAX_ACCURACY_DROP = 0.005  # full int8 becomes the edge default within 0.5 point of Keras
INT8_MIN_AGREEMENT = 0.99  # ... or, without labels, with >= 99 % top-1 agreement


def run_interpreter(path: str, inputs: np.ndarray, threads: Sequence[int] = (1, 2),
                    timing_images: int = 20
                    ) -> tuple[np.ndarray, np.ndarray | None, dict[int, float]]:
    """Probabilities (N, C), the ``ood_score`` output (N,) or None, and mean ms/image per
    thread count for one TFLite file."""
    probs = ood = None
    timing = {}
    for t in threads:
        runner = TFLiteRunner(path, int(t))
        if probs is None:
            probs, ood = runner.predict_with_ood(inputs)
        sample = inputs[: max(1, timing_images)]
        if len(sample):
            timing[int(t)] = runner.ms_per_image(sample)
    return probs, ood, timing


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"crashed with signal {signal.Signals(-code).name}"
        except ValueError:
            return f"crashed with signal {-code}"
    return f"exited with status {code}"


def verify_tflite(
    paths: Sequence[str | os.PathLike],
    inputs: np.ndarray,
    keras_probs: np.ndarray,
    labels: np.ndarray | None = None,
    threads: Sequence[int] = (1, 2),
    timing_images: int = 20,
    timeout_s: float = 900.0,
    keras_ood: np.ndarray | None = None,
    ood_threshold: float | None = None,
) -> list[dict]:
    """Compare each TFLite file with the Keras model on the same preprocessed inputs.

    Args:
        paths: ``.tflite`` files.
        inputs: float32 (N, S, S, 3), preprocessed held-out images (for an edge file: the
            images at model size, 0-255).
        keras_probs: float (N, C), the Keras model's probabilities on ``inputs``.
        labels: optional int (N,) true classes, for accuracy.
        threads: thread counts to time.
        timing_images: images per timing loop.
        timeout_s: per-file limit for the worker process.
        keras_ood: float (N,), the host gate's feature distance of ``inputs``, compared with
            the ``ood_score`` output of the files that have one.
        ood_threshold: the gate's distance threshold, for the decision agreement.

    Returns:
        One dict per file: ``file``, ``variant``, ``size_bytes``, ``status`` ("ok" or why not),
        ``top1_agreement`` (fraction of images with the same argmax as Keras),
        ``max_prob_diff`` / ``mean_prob_diff`` (absolute, over all images and classes),
        ``accuracy`` and ``keras_accuracy`` (when labels are given), ``ms_per_image``
        ({threads: ms}); with an ``ood_score`` output and ``keras_ood``,
        ``ood_max_rel_diff`` (max |Δ| / host score) and ``ood_decision_agreement`` (share of
        images on the same side of ``ood_threshold``).
    """
    keras_probs = np.asarray(keras_probs, np.float32)
    results = []
    with tempfile.TemporaryDirectory(prefix="all_tf_verify_") as work:
        x_path = os.path.join(work, "inputs.npy")
        np.save(x_path, np.asarray(inputs, np.float32))
        for path in paths:
            path = Path(path)
            row = {"file": path.name, "variant": _variant(path), "size_bytes": path.stat().st_size}
            out_path = os.path.join(work, f"{path.stem}.npz")
            cmd = [sys.executable, "-m", "all_tf.export.verify", str(path), x_path, out_path,
                   "--timing-images", str(timing_images)]
            for t in threads:
                cmd += ["--timing-threads", str(t)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                      env=_worker_env())
            except subprocess.TimeoutExpired:
                row["status"] = f"timed out after {timeout_s:.0f} s"
                results.append(row)
                continue
            if proc.returncode != 0 or not os.path.exists(out_path):
                tail = (proc.stderr or "").strip().splitlines()[-3:]
                row["status"] = f"{_describe_exit(proc.returncode)}: {' | '.join(tail)}"
                results.append(row)
                continue
            data = np.load(out_path)
            probs = data["probs"]
            row.update(compare(probs, keras_probs, labels))
            if "ood" in data.files and keras_ood is not None:
                row.update(compare_ood(data["ood"], keras_ood, ood_threshold))
            row["ms_per_image"] = {int(t): round(float(ms), 3)
                                   for t, ms in zip(data["threads"], data["ms"], strict=True)}
            row["status"] = "ok"
            results.append(row)
    return results


def _worker_env() -> dict[str, str]:
    # The worker must import this same all_tf, wherever the caller's working directory is.
    package_parent = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            "PYTHONPATH": package_parent + (os.pathsep + path if path else "")}


def compare_ood(ood: np.ndarray, host_ood: np.ndarray, threshold: float | None) -> dict:
    """Parity of a file's ``ood_score`` output with the host gate's distances (both (N,))."""
    ood, host_ood = np.asarray(ood, np.float64), np.asarray(host_ood, np.float64)
    if ood.shape != host_ood.shape:
        raise ValueError(f"shape mismatch: TFLite ood {ood.shape} vs host {host_ood.shape}")
    if not len(ood):
        return {}
    rel = np.abs(ood - host_ood) / np.maximum(np.abs(host_ood), 1e-12)
    out = {"ood_max_rel_diff": float(rel.max())}
    if threshold is not None:
        out["ood_decision_agreement"] = float(np.mean((ood > threshold) == (host_ood > threshold)))
    return out


def compare(probs: np.ndarray, keras_probs: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """Parity numbers of ``probs`` against ``keras_probs`` (both (N, C))."""
    if probs.shape != keras_probs.shape:
        raise ValueError(f"shape mismatch: TFLite {probs.shape} vs Keras {keras_probs.shape}")
    diff = np.abs(probs.astype(np.float64) - keras_probs)
    out = {
        "n_images": int(len(probs)),
        "top1_agreement": float(np.mean(probs.argmax(1) == keras_probs.argmax(1))) if len(probs) else None,
        "max_prob_diff": float(diff.max()) if diff.size else None,
        "mean_prob_diff": float(diff.mean()) if diff.size else None,
    }
    if labels is not None and len(labels):
        labels = np.asarray(labels)
        out["accuracy"] = float(np.mean(probs.argmax(1) == labels))
        out["keras_accuracy"] = float(np.mean(keras_probs.argmax(1) == labels))
    return out


def verify_saved_model(path: str, files: list[str], keras_probs, labels=None,
                       batch_size: int = 32, pixels: np.ndarray | None = None) -> dict:
    """Run ``serving_default`` on the files' bytes (decoding and preprocessing in the graph),
    or, for crop runs (whose ``serving_default`` takes crops), on ``pixels``: float32
    (N, S, S, 3) model inputs, one row of ``keras_probs`` each."""
    import time

    import tensorflow as tf

    size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    row = {"file": f"{Path(path).parent.name}/{Path(path).name} (serving_default)",
           "variant": "savedmodel", "size_bytes": size}
    try:
        fn = tf.saved_model.load(path).signatures["serving_default"]
        probs = []
        start = time.perf_counter()
        if pixels is None:
            for i in range(0, len(files), batch_size):
                data = [Path(f).read_bytes() for f in files[i:i + batch_size]]
                probs.append(fn(image_bytes=tf.constant(data))["probabilities"].numpy())
        else:
            for i in range(0, len(pixels), batch_size):
                batch = tf.constant(pixels[i:i + batch_size], tf.float32)
                probs.append(fn(pixels=batch)["probabilities"].numpy())
        elapsed = time.perf_counter() - start
    except Exception as e:  # report, do not abort the export
        row["status"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
        return row
    row.update(compare(np.concatenate(probs), np.asarray(keras_probs, np.float32), labels))
    row["ms_per_image_batched"] = round(1000 * elapsed / max(len(files), 1), 3)  # per field
    row["status"] = "ok"
    return row


def edge_default(rows: list[dict]) -> tuple[str, str]:
    """Pick the edge model from verification rows: full int8 when it runs and keeps accuracy."""
    by_variant = {r.get("variant"): r for r in rows}
    int8 = by_variant.get("int8")
    if int8 is None:
        return "dynamic_int8", "full int8 was not exported"
    if int8.get("status") != "ok":
        return "dynamic_int8", f"full int8 does not run: {int8.get('status')}"
    if int8.get("accuracy") is not None:
        drop = int8["keras_accuracy"] - int8["accuracy"]
        if drop > INT8_MAX_ACCURACY_DROP:
            return "dynamic_int8", f"full int8 loses {100 * drop:.1f} accuracy points"
        return "int8", f"full int8 runs and is within {100 * max(drop, 0):.1f} points of Keras"
    if (int8.get("top1_agreement") or 0) < INT8_MIN_AGREEMENT:
        return "dynamic_int8", f"full int8 top-1 agreement {int8['top1_agreement']:.3f} < {INT8_MIN_AGREEMENT}"
    return "int8", f"full int8 runs with top-1 agreement {int8['top1_agreement']:.3f}"


def _variant(path: Path) -> str:
    meta = path.with_suffix(".json")
    if meta.is_file():
        try:
            return read_metadata(meta).get("variant", "?")
        except ValueError:
            pass
    return path.stem


def format_report(rows: list[dict]) -> str:
    """A Markdown table of :func:`verify_tflite` rows."""
    threads = sorted({t for r in rows for t in r.get("ms_per_image", {})})
    head = ["file", "size (MB)", "status", "top-1 agreement", "max |Δp|", "accuracy",
            "ood_score max rel. Δ"]
    head += [f"ms/image ({t} thr)" for t in threads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        def fmt(v, spec):
            return format(v, spec) if isinstance(v, (int, float)) else "–"

        acc = r.get("accuracy")
        cells = [r["file"], f"{r['size_bytes'] / 1e6:.2f}", r["status"],
                 fmt(r.get("top1_agreement"), ".3f"), fmt(r.get("max_prob_diff"), ".4f"),
                 (f"{acc:.3f} (Keras {r['keras_accuracy']:.3f})" if acc is not None else "–"),
                 fmt(r.get("ood_max_rel_diff"), ".2e")]
        cells += [fmt(r.get("ms_per_image", {}).get(t), ".2f") for t in threads]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("inputs", type=click.Path(exists=True, dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--timing-threads", "threads", multiple=True, type=click.IntRange(1),
              default=(1, 2), show_default=True, help="Thread counts to time (repeat the option).")
@click.option("--timing-images", type=int, default=20, show_default=True,
              help="Images per timing loop.")
def main(model, inputs, output, threads, timing_images):
    """Run MODEL (.tflite) on INPUTS (.npy float32 (N, S, S, 3)) and write OUTPUT (.npz).

    OUTPUT holds ``probs`` (N, C) dequantised, ``ood`` (N,) where the file has an
    ``ood_score`` output, ``threads`` and ``ms`` (mean ms/image). This is
    the worker that ``python -m all_tf.export`` starts once per file; run it by hand to check a
    file in isolation.
    """
    x = np.load(inputs)
    probs, ood, timing = run_interpreter(model, x, threads, timing_images)
    extra = {} if ood is None else {"ood": ood}
    np.savez(output, probs=probs, threads=np.array(list(timing), np.int64),
             ms=np.array(list(timing.values()), np.float64), **extra)
    click.echo(json.dumps({"model": model, "n": int(len(x)), "ms_per_image": timing}))


if __name__ == "__main__":
    main()
