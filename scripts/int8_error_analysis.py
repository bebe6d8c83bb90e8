"""Where does full-int8 accuracy go? Per-layer error and selective float fallbacks for a run.

1. ``tf.lite.experimental.QuantizationDebugger`` on the run's model (calibrated on training
   images): the layers with the largest RMSE per quantisation step.
2. Full int8 with groups of nodes kept in float (``--keep-float``, regular expressions on
   tensor names; ``cbam`` = every CBAM layer, ``none`` = nothing) and int16-activation /
   int8-weight quantisation, each run by LiteRT in a separate process on the run's held-out
   images: top-1 agreement with Keras, largest probability difference, accuracy, ms/image.

If keeping CBAM in float does not recover the accuracy, CBAM is not what int8 breaks.

Example:
    python scripts/int8_error_analysis.py runs/real/v2s_cbam_128_7030_s42 --images 300
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from pathlib import Path

import click
import numpy as np

GROUPS = {"none": r"^$", "cbam": r"block\w+_cbam(_\d+)?/"}


@click.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--calibration-count", type=int, default=100, show_default=True)
@click.option("--images", type=int, default=300, show_default=True,
              help="Held-out images (run's split.json test part, random subset, seed 0).")
@click.option("--keep-float", multiple=True, default=("none", "cbam"), show_default=True,
              help="Node group to keep in float: 'none', 'cbam' or a regular expression.")
@click.option("--int16x8/--no-int16x8", default=True, show_default=True,
              help="Also try int16 activations with int8 weights.")
@click.option("--top", type=int, default=12, show_default=True, help="Layers to list.")
def main(run, calibration_count, images, keep_float, int16x8, top):
    """Analyse the full-int8 error of RUN (a run directory or .keras file with its config)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from all_tf.export.cli import _read_all, _sample, _split_parts
    from all_tf.export.common import config_for_model, load_keras_model, resolve_source, to_float32
    from all_tf.export.tflite import SIGNATURE, _saved_model_for_conversion, calibration_set
    from all_tf.export.verify import format_report, verify_tflite
    from all_tf.preprocessing import preprocess_image

    src = resolve_source(run)
    model = to_float32(load_keras_model(src.model_path))
    cfg = config_for_model(src.config, model)
    train, test = _split_parts(src, cfg)
    if not train or not test:
        raise click.ClickException(f"{run}: needs a split.json with training and test images")
    calib = calibration_set(_read_all(_sample(train, calibration_count))[0], cfg,
                            count=calibration_count)
    test_images, labels, _ = _read_all(_sample(test, images))
    x = np.stack([preprocess_image(im, cfg.preprocess) for im in test_images])
    keras_probs = model.predict(x, batch_size=16, verbose=0)

    work = Path(tempfile.mkdtemp(prefix="int8_analysis_"))
    saved = _saved_model_for_conversion(model, cfg.preprocess.image_size, str(work))

    def converter():
        conv = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[SIGNATURE])
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([c[None]] for c in calib)
        return conv

    debug_set = calib[: min(16, len(calib))]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter(), debug_dataset=lambda: ([c[None]] for c in debug_set))
    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    stats = list(csv.DictReader(io.StringIO(buf.getvalue())))
    for r in stats:
        r["rmse_per_step"] = float(np.sqrt(float(r["mean_squared_error"])) / float(r["scale"]))
    stats.sort(key=lambda r: -r["rmse_per_step"])
    click.echo(f"\nLargest int8 errors ({len(stats)} quantised tensors; rounding alone gives "
               "0.29 steps):\n\n| op | tensor | range | RMSE / step |\n|---|---|---|---|")
    for r in stats[:top]:
        click.echo(f"| {r['op_name']} | {r['tensor_name'][-60:]} | "
                   f"{255 * float(r['scale']):.3g} | {r['rmse_per_step']:.2f} |")

    files = []
    names = [r["tensor_name"] for r in stats]
    for group in keep_float:
        pattern = GROUPS.get(group, group)
        deny = [n for n in names if re.search(pattern, n)]
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=deny)
        dbg = tf.lite.experimental.QuantizationDebugger(
            converter=converter(), debug_dataset=lambda: ([c[None]] for c in debug_set[:2]),
            debug_options=options)
        path = work / f"int8_keep_float_{re.sub(r'[^a-z0-9]+', '_', group)}.tflite"
        path.write_bytes(dbg.get_nondebug_quantized_model())
        click.echo(f"{path.name}: {len(deny)} tensors kept in float")
        files.append(path)
    if int16x8:
        conv = converter()
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        path = work / "int16x8.tflite"
        path.write_bytes(conv.convert())
        files.append(path)
    rows = verify_tflite(files, x, keras_probs, np.asarray(labels), threads=(1,), timing_images=10)
    click.echo("\n" + format_report(rows))


if __name__ == "__main__":
    main()
