"""``all-tf export`` (or ``python -m all_tf.export``): SavedModel for TF Serving, TFLite files,
and their verification (the builders are :mod:`all_tf.export`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from all_tf.cli.options import timing_threads_option

log = logging.getLogger("all_tf.export")

ALL_FORMATS = ("savedmodel", "float32", "float16", "dynamic_int8", "int8", "int16x8", "edge")
DEFAULT_FORMATS = ("savedmodel", "float32", "float16", "dynamic_int8", "int8")


def _sample(pairs, count: int, seed: int = 0):
    import numpy as np

    if count <= 0 or len(pairs) <= count:
        return list(pairs)
    idx = np.random.default_rng(seed).permutation(len(pairs))[:count]
    return [pairs[i] for i in sorted(idx)]


def _split_parts(source, cfg):
    """(train, test) (path, label) lists from the split.json of the run (or beside the model
    file, as in a released model's folder), or (None, None)."""
    folder = source.run_dir or source.model_path.parent
    if not (folder / "split.json").is_file():
        return None, None
    from all_tf.data import Split

    # the config's data_dir when it exists from here, else the root stored in split.json
    root = cfg.data_dir if cfg.data_dir and Path(cfg.data_dir).is_dir() else None
    try:
        split = Split.load(folder / "split.json", root=root)
    except (ValueError, FileNotFoundError) as e:
        log.warning("cannot use %s/split.json (%s)", folder, e)
        return None, None
    return [(r.path, r.label) for r in split.train], [(r.path, r.label) for r in split.test]


def _read_all(pairs):
    from all_tf.io import ImageReadError, read_image

    images, labels, paths = [], [], []
    for path, label in pairs:
        try:
            images.append(read_image(path))
        except ImageReadError as e:
            log.warning("skipped: %s", e)
            continue
        labels.append(label)
        paths.append(path)
    return images, labels, paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run config JSON (default: SOURCE's config.json, or the run's above checkpoints/).")
@click.option("--output-dir", "-o", "--out", "out_dir",
              type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: <run>/export, or <model>_export beside a .keras file).")
@click.option("--model-name", default="all_tf", show_default=True,
              help="TF Serving model name and TFLite file prefix.")
@click.option("--version", type=int, help="SavedModel version (default: next free number).")
@click.option("--formats", default=",".join(DEFAULT_FORMATS), show_default=True,
              help="Comma-separated subset of: " + ", ".join(ALL_FORMATS) + ".")
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="Uncertainty threshold stored with the model (default: the config's).")
@click.option("--calibration-data", multiple=True,
              help="Training images for full-int8 calibration: dataset root, folder, glob or file "
                   "(repeatable). Default: the run's split.json training part, else the "
                   "sample shipped with all_tf.")
@click.option("--calibration-count", type=click.IntRange(min=1), default=100, show_default=True,
              help="Calibration images (random subset, seed 0).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Compare every export with Keras on held-out images: the SavedModel's "
                   "serving_default on the image files' bytes, each TFLite file in its own "
                   "process.")
@click.option("--verify-data", multiple=True,
              help="Held-out images for verification (a dataset root gives labels and accuracy). "
                   "Default: the run's split.json test part, else the sample shipped with "
                   "all_tf.")
@click.option("--verify-count", type=int, default=200, show_default=True,
              help="Verification images (random subset, seed 0); 0 = all.")
@timing_threads_option()
@click.option("--verbose", "-v", type=click.IntRange(0, 2), default=1, show_default=True,
              help="Log output: 0 warnings only, 1 progress, 2 debug.")
def main(source, config_path, out_dir, model_name, version, formats, threshold, calibration_data,
         calibration_count, verify, verify_data, verify_count, timing_threads, verbose):
    """Export SOURCE (a run directory or a .keras file) for serving and edge devices.

    \b
    Writes, under --out:
      serving/<model-name>/<version>/   SavedModel for TF Serving (bytes in, probabilities out)
      tflite/<model-name>_<variant>.tflite + .json metadata, labels.txt
      tflite/<model-name>_edge_uint8.tflite  (--formats ...,edge) RGB uint8 in, preprocessing
                                        in the graph, TFLite builtin ops only
      verify.json, verify.md            parity (and TFLite speed) of every export vs Keras
    """
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[verbose],
                        format="%(levelname)s %(name)s: %(message)s")
    import numpy as np

    from all_tf.data import collect_inputs
    from all_tf.data.inputs import inputs_for_image
    from all_tf.inference.model_files import (
        config_for_model,
        load_keras_model,
        resolve_source,
        to_float32,
    )
    from all_tf.io import atomic_write_text

    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(ALL_FORMATS))
    if unknown:
        raise click.BadParameter(f"unknown formats {unknown}; choose from {ALL_FORMATS}",
                                 param_hint="--formats")
    try:
        src = resolve_source(source, config_path)
        model = to_float32(load_keras_model(src.model_path))
        cfg = config_for_model(src.config, model, from_file=src.config_path is not None)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if src.config_path is None:
        log.warning("no config.json found: default preprocessing (%s) at the model's size %d; "
                    "pass --config if the run used other settings",
                    "CLAHE + Reinhard (no target)", cfg.preprocess.image_size)
    if out_dir is None:
        out_dir = (src.run_dir / "export") if src.run_dir else src.model_path.with_name(
            src.model_path.stem + "_export")
    threshold = cfg.uncertainty_threshold if threshold is None else threshold
    train_pairs, test_pairs = _split_parts(src, cfg)
    from all_tf.data import SAMPLE_ALL4_DIR
    from all_tf.inference import Gate

    if not train_pairs or not test_pairs:  # scanned only when needed
        log.info("no usable split.json: int8 calibration and verification use the shipped "
                 "sample")
        sample_pairs = collect_inputs([str(SAMPLE_ALL4_DIR)])
        train_pairs, test_pairs = train_pairs or sample_pairs, test_pairs or sample_pairs
    try:
        gate = Gate.load(src.run_dir or src.model_path.parent)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if gate is not None:
        click.echo("input gate: exported with the model (status output)")
    written = {}

    if "savedmodel" in wanted:
        from all_tf.export.serving import export_saved_model

        path = export_saved_model(model, cfg, out_dir / "serving", model_name=model_name,
                                  version=version, threshold=threshold, source=str(src.model_path),
                                  gate=gate)
        written["savedmodel"] = str(path)
        click.echo(f"SavedModel: {path}")

    variants = [f for f in wanted if f not in ("savedmodel", "edge")]
    tflite_paths = []
    if variants:
        from all_tf.export.tflite import calibration_set, export_tflite

        calibration = None
        if "int8" in variants or "int16x8" in variants:
            pairs = collect_inputs(calibration_data) if calibration_data else train_pairs
            images, _, _ = _read_all(_sample(pairs, calibration_count))
            if images:
                calibration = calibration_set(images, cfg, count=calibration_count)
                log.info("calibrating on %d images", len(calibration))
            else:
                skipped = [v for v in variants if v in ("int8", "int16x8")]
                click.echo(f"skipped {', '.join(skipped)}: no readable calibration images "
                           "(pass --calibration-data)", err=True)
                variants = [v for v in variants if v not in skipped]
        tflite_paths = export_tflite(model, cfg, out_dir / "tflite", variants, calibration,
                                     model_name=model_name, threshold=threshold,
                                     source=str(src.model_path), gate=gate)
        for p in tflite_paths:
            click.echo(f"TFLite: {p} ({p.stat().st_size / 1e6:.2f} MB)")
        written["tflite"] = [str(p) for p in tflite_paths]

    if "edge" in wanted:
        from all_tf.export.edge import export_edge

        try:
            edge_path = export_edge(model, cfg, out_dir / "tflite", model_name=model_name,
                                    threshold=threshold, source=str(src.model_path), gate=gate)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        written["edge"] = str(edge_path)
        click.echo(f"TFLite edge (uint8 RGB in): {edge_path} "
                   f"({edge_path.stat().st_size / 1e6:.2f} MB)")

    if verify and (tflite_paths or "savedmodel" in written or "edge" in written):
        from all_tf.export.verify import (
            edge_default,
            format_report,
            verify_saved_model,
            verify_tflite,
        )

        pairs = collect_inputs(verify_data) if verify_data else test_pairs
        if not pairs:
            raise click.ClickException(
                "verification needs held-out images: pass --verify-data, or --no-verify")
        images, labels, paths = _read_all(_sample(pairs, verify_count))
        if not images:
            raise click.ClickException("no readable verification images")
        # what the model sees: the preprocessed fields, or each field's nucleus crops (crop
        # runs are compared crop by crop, each with its field's label)
        views = [inputs_for_image(im, cfg) for im in images]
        x = np.concatenate(views)
        keras_probs = model.predict(x, batch_size=16, verbose=0)
        y = None if any(label is None for label in labels) \
            else np.repeat(np.asarray(labels), [len(v) for v in views])
        keras_ood = ood_threshold = None
        distance = gate.distance if gate is not None else None
        if (tflite_paths or "edge" in written) and distance is not None \
                and distance.threshold is not None:
            from all_tf.inference.analysis import probabilities_and_features

            features = probabilities_and_features(model)
            keras_ood = np.concatenate([distance.score(features(x[i:i + 16])[1])
                                        for i in range(0, len(x), 16)])
            ood_threshold = distance.threshold
        rows = verify_tflite(tflite_paths, x, keras_probs, y, threads=timing_threads,
                             keras_ood=keras_ood, ood_threshold=ood_threshold)
        crops = cfg.preprocess.input_mode == "crops"
        if "savedmodel" in written or "edge" in written:
            from all_tf.evaluation.calibration import apply_temperature

            served = keras_probs
            if cfg.tta and not crops:  # the serving graph averages the 8 flips and rotations
                from all_tf.inference.tta import tta_probabilities

                served = tta_probabilities(model, x)
            served = apply_temperature(served, cfg.temperature)
        if "savedmodel" in written:
            rows.insert(0, verify_saved_model(written["savedmodel"], paths, served, y,
                                              pixels=x if crops else None))
        if "edge" in written:  # the images at model size, uint8, as an app would feed them
            from all_tf.preprocessing import resize_to

            pixels = np.stack([resize_to(im, cfg.preprocess.image_size) for im in images])
            rows += verify_tflite([written["edge"]], pixels.astype(np.float32), served, y,
                                  threads=timing_threads, keras_ood=keras_ood,
                                  ood_threshold=ood_threshold)
        choice, why = edge_default(rows)
        report = {"n_images": len(images), "labelled": y is not None, "results": rows,
                  "edge_default": choice, "edge_default_reason": why, "written": written}
        atomic_write_text(out_dir / "verify.json", json.dumps(report, indent=2))
        table = format_report(rows)
        atomic_write_text(out_dir / "verify.md", table + f"\n\nEdge default: {choice} ({why})\n")
        click.echo(table)
        click.echo(f"edge default: {choice} ({why})")
