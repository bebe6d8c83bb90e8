"""Edge-file benchmark: the released light model as RGB uint8 in, preprocessing in the graph.

Builds the edge TFLite file (:mod:`all_tf.export.edge`, TFLite builtin ops only) of a released
model, runs it with LiteRT on the held-out (test) images of the model's ``split.json`` -- each
image decoded and scaled to the model's input size, as an app would hand it over -- and
compares it with the Keras model on the same images through the model's normal preprocessing
(:func:`all_tf.preprocessing.preprocess_image`), as the SavedModel serves it: with the
8-view test-time augmentation and temperature of the model's config. When the config has
TTA, a second file without it is built and compared with plain Keras.

Reported per file: size (MB), same-class agreement with Keras, max |dp|, accuracy, median
ms/image (one ``invoke`` on one image, LiteRT's default XNNPACK delegate) at each thread count,
and the load average while timing: on a shared machine the latencies are upper bounds.
Writes ``edge_benchmark.json``, ``edge_benchmark.md`` and the ``.tflite`` files under
``--output-dir``.

Example:
    nice -n 10 .venv/bin/python scripts/benchmark_edge.py --data-dir ../shared/data/all4 \\
        -o /tmp/edge_bench
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import click

import all_tf  # noqa: F401  (before TensorFlow: quiets its cuInit error without a GPU)
from all_tf.cli.options import timing_threads_option

TARGET_AGREEMENT = 0.995


def _litert_run(inputs: dict, threads: tuple[int, ...], timing_images: int):
    """Run each file on its inputs ({path: (N, S, S, 3) array}).

    Returns per path the probabilities (N, C) (first thread count) and per thread count the
    per-image latencies (ms). The files are timed in turn on each image, so they share the
    machine's load alike.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    paths = list(inputs)
    n = len(inputs[paths[0]])
    probs = {p: [] for p in paths}
    latencies = {p: {} for p in paths}
    n_timed = min(timing_images, n) if timing_images > 0 else n
    for i, t in enumerate(threads):
        interps = {}
        for p in paths:
            interp = Interpreter(model_path=str(p), num_threads=int(t))
            interp.allocate_tensors()
            interps[p] = (interp, interp.get_input_details()[0]["index"],
                          interp.get_output_details()[0]["index"])
            latencies[p][int(t)] = []
        if i == 0:
            for k in range(n):
                for p, (interp, inp, out) in interps.items():
                    interp.set_tensor(inp, inputs[p][k][None])
                    interp.invoke()
                    probs[p].append(interp.get_tensor(out)[0].copy())
        for k in range(n_timed):
            for p, (interp, inp, _) in interps.items():
                interp.set_tensor(inp, inputs[p][k][None])
                start = time.perf_counter()
                interp.invoke()
                if k >= 3 or n_timed <= 3:  # the first invokes warm up
                    latencies[p][int(t)].append((time.perf_counter() - start) * 1000.0)
    return {p: np.stack(v) for p, v in probs.items()}, latencies


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_name", default="light", show_default=True,
              help="Released model (short name, see saved_models/README.md).")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="all4 dataset root for the split's relative paths (default: the model's "
                   "config data_dir, from the repository root).")
@click.option("--output-dir", "-o", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("edge_benchmark"), show_default=True, help="Output folder.")
@timing_threads_option()
@click.option("--timing-images", type=int, default=0, show_default=True,
              help="Images per timing loop (0 = every test image).")
@click.option("--max-images", type=int, default=0, show_default=True,
              help="Use only the first N test images (0 = all), for a quick check.")
def main(model_name, data_dir, out_dir, timing_threads, timing_images, max_images):
    """Build the edge file of a released model and measure agreement, size and latency."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from all_tf import CLASS_NAMES
    from all_tf.data import Split
    from all_tf.evaluation.calibration import apply_temperature
    from all_tf.export.edge import export_edge, flatbuffer_ops, non_builtin_ops
    from all_tf.export.tflite import export_tflite
    from all_tf.inference.tta import tta_probabilities
    from all_tf.io import read_image
    from all_tf.models.released import load_released, released_dir
    from all_tf.preprocessing import preprocess_image, resize_to

    folder = released_dir(model_name)
    model, cfg = load_released(model_name)
    root = data_dir or cfg.data_dir or None
    if root is None or not Path(root).is_dir():
        raise click.UsageError(f"dataset root {root} not found: pass --data-dir")
    split = Split.load(folder / "split.json", root=root)
    records = split.test[:max_images] if max_images > 0 else split.test
    size = cfg.preprocess.image_size
    click.echo(f"{folder.name}: {len(records)} test images of split.json, {size} px, "
               f"tta={cfg.tta}, temperature={cfg.temperature}")

    raw = [read_image(r.path) for r in records]
    labels = np.array([r.label for r in records])
    pixels = np.stack([resize_to(im, size) for im in raw])  # what the app feeds: uint8 S x S
    x = np.stack([preprocess_image(im, cfg.preprocess) for im in raw])
    keras_plain = apply_temperature(model.predict(x, batch_size=32, verbose=0), cfg.temperature)
    references = {False: keras_plain}
    if cfg.tta:
        references[True] = apply_temperature(tta_probabilities(model, x), cfg.temperature)

    out_dir.mkdir(parents=True, exist_ok=True)
    built, inputs = [], {}
    for tta in sorted(references, reverse=True):
        name = f"{model_name}_tta" if tta else f"{model_name}_single"
        start = time.perf_counter()
        path = export_edge(model, cfg, out_dir, model_name=name, tta=tta,
                           source=str(folder))
        built.append((tta, path, time.perf_counter() - start))
        inputs[path] = pixels
        click.echo(f"built {path.name} in {built[-1][2]:.0f} s")
    # the plain float32 file on the OpenCV-preprocessed inputs: the same model kernels without
    # the in-graph preprocessing, to tell the preprocessing's share of any difference
    (plain,) = export_tflite(model, cfg, out_dir, variants=["float32"], model_name=model_name)
    inputs[plain] = x
    load_before = os.getloadavg()[0]
    all_probs, all_lat = _litert_run(inputs, tuple(timing_threads), timing_images)
    load_after = os.getloadavg()[0]
    rows = []
    for tta, path, convert_s in [*built, (False, plain, None)]:
        flat = path.read_bytes()
        probs, lat, ref = all_probs[path], all_lat[path], references[tta]
        edge = path != plain
        rows.append({
            "file": path.name,
            "input": "RGB uint8, preprocessing in the graph" if edge
                     else "float32, OpenCV preprocessing on the host",
            "tta_in_graph": tta,
            "reference": "Keras on preprocess_image" + (", 8-view TTA" if tta else "")
                         + f", temperature {cfg.temperature}",
            "n_images": int(len(records)),
            "size_mb": round(len(flat) / 1e6, 3),
            "ops": dict(sorted(flatbuffer_ops(flat).items())),
            "non_builtin_ops": non_builtin_ops(flat),
            "top1_agreement": float(np.mean(probs.argmax(1) == ref.argmax(1))),
            "disagreements": int(np.sum(probs.argmax(1) != ref.argmax(1))),
            "disagreeing_images": [
                {"image": Path(records[i].path).name, "label": CLASS_NAMES[labels[i]],
                 "keras": CLASS_NAMES[ref[i].argmax()], "file": CLASS_NAMES[probs[i].argmax()],
                 "keras_top2_margin": round(float(np.diff(np.sort(ref[i])[-2:])[0]), 4)}
                for i in np.flatnonzero(probs.argmax(1) != ref.argmax(1))],
            "max_prob_diff": float(np.abs(probs - ref).max()),
            "mean_prob_diff": float(np.abs(probs - ref).mean()),
            "max_prob_diff_vs_float32_file": (
                float(np.abs(probs - all_probs[plain]).max()) if edge and not tta else None),
            "accuracy": float(np.mean(probs.argmax(1) == labels)),
            "keras_accuracy": float(np.mean(ref.argmax(1) == labels)),
            "median_ms": {t: round(float(np.median(v)), 2) for t, v in lat.items()},
            "p90_ms": {t: round(float(np.percentile(v, 90)), 2) for t, v in lat.items()},
            "timed_images": {t: len(v) for t, v in lat.items()},
            "load_average_1min": [round(load_before, 2), round(load_after, 2)],
            "convert_s": None if convert_s is None else round(convert_s, 1),
        })
        r = rows[-1]
        click.echo(f"{path.name}: {r['size_mb']:.2f} MB, agreement {r['top1_agreement']:.4f} "
                   f"({r['disagreements']} of {r['n_images']} differ), max |dp| "
                   f"{r['max_prob_diff']:.2e}, median ms {r['median_ms']}, non-builtin ops "
                   f"{r['non_builtin_ops'] or 'none'}")

    report = {
        "model": folder.name,
        "n_images": int(len(records)),
        "image_size": size,
        "target_agreement": TARGET_AGREEMENT,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "niceness": os.nice(0),
        "note": "latency = one invoke on one image, LiteRT default XNNPACK delegate, measured "
                "on a shared machine under load (see load_average_1min): upper bounds",
        "results": rows,
    }
    (out_dir / "edge_benchmark.json").write_text(json.dumps(report, indent=2))
    np.savez(out_dir / "edge_benchmark_probs.npz", labels=labels,
             **{f"keras_tta_{k}": v for k, v in references.items()},
             **{p.stem: v for p, v in all_probs.items()})
    head = ["file", "input", "TTA", "size (MB)", "same class as Keras", "max |Δp|",
            "accuracy (Keras)"] + [f"median ms, {t} thread{'s' * (t > 1)}" for t in timing_threads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(
            [r["file"], r["input"], "yes" if r["tta_in_graph"] else "no", f"{r['size_mb']:.2f}",
             f"{100 * r['top1_agreement']:.2f} % ({r['n_images'] - r['disagreements']}/"
             f"{r['n_images']})", f"{r['max_prob_diff']:.1e}",
             f"{r['accuracy']:.4f} ({r['keras_accuracy']:.4f})"]
            + [f"{r['median_ms'][t]:.1f}" for t in timing_threads]) + " |")
    single = [r for r in rows if r["max_prob_diff_vs_float32_file"] is not None]
    if single:
        lines.append(f"\nmax |Δp| of {single[0]['file']} against the float32 file on the "
                     f"OpenCV-preprocessed inputs: {single[0]['max_prob_diff_vs_float32_file']:.1e}")
    loads = [v for r in rows for v in r["load_average_1min"]]
    for r in rows:
        for d in r["disagreeing_images"]:
            lines.append(f"{r['file']}: {d['image']} ({d['label']}) is {d['file']}, Keras says "
                         f"{d['keras']} by a margin of {d['keras_top2_margin']:.4f}")
    lines.append(f"\n{len(records)} test images; latencies measured under load (1-minute load "
                 f"average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores, "
                 f"niceness {os.nice(0)}).")
    (out_dir / "edge_benchmark.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))
    failed = [r["file"] for r in rows if r["top1_agreement"] < TARGET_AGREEMENT
              and r["input"].startswith("RGB")]
    if failed:
        click.echo(f"below the {100 * TARGET_AGREEMENT:.1f} % agreement target: {failed}", err=True)


if __name__ == "__main__":
    main()
