"""Time per image from file to label, against the paper's 4.25 s/image.

For one model (a ``.keras`` file with its config, or a freshly built EfficientNetV2-S + CBAM
with random weights: the speed does not depend on the weights) it measures, one image at a
time: reading and decoding the file, preprocessing (resize, CLAHE, Reinhard, label mask), the
model and the label, through

* ``keras``: :func:`all_tf.inference.predictor.predict_files` with the Keras model (gate included when the
  model has one);
* ``savedmodel``: the exported ``serving_default`` called with the file's bytes (decoding and
  preprocessing in the graph);
* ``tflite``: :func:`all_tf.inference.predictor.predict_files` with the float32 and dynamic-range int8
  TFLite files on 1 thread.

The median over ``--images`` images (after 3 warm-up images) is printed as a Markdown table.

Example:
    python scripts/benchmark_speed.py --image-size 224 --images 30 -o /tmp/speed
"""

from __future__ import annotations

import json
from pathlib import Path

import click

import all_tf  # noqa: F401  (before TensorFlow: quiets its cuInit error without a GPU)
from all_tf.data import SAMPLE_ALL4_DIR


@click.command()
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A .keras model (its config.json beside it); default: EfficientNetV2-S + "
                   "CBAM built with random weights at --image-size.")
@click.option("--image-size", "size", type=int, default=224, show_default=True)
@click.option("--images", type=int, default=30, show_default=True)
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results/benchmark_speed"), show_default=True)
def main(model_path, size, images, output_dir):
    """Median milliseconds per image, file to label, for Keras, SavedModel and TFLite."""
    import subprocess
    import sys

    import tensorflow as tf

    from all_tf.config import Config
    from all_tf.data import collect_inputs
    from all_tf.experiments.timing import median_ms
    from all_tf.inference.predictor import load_backend, predict_files

    output_dir.mkdir(parents=True, exist_ok=True)
    if model_path is None:
        from all_tf.models import build_model

        cfg = Config.preset("scratch")
        cfg.preprocess.image_size = size
        cfg.preprocess.mask_label_corner = True
        cfg.preprocess.reinhard_target = {"mean": [210.0, 130.0, 117.0],
                                          "std": [40.0, 9.6, 14.0]}
        model = build_model("efficientnetv2s_cbam", image_size=size)
        model_path = output_dir / "model.keras"
        model.save(model_path)
        cfg.save(output_dir / "config.json")
    cfg = Config.load(model_path.parent / "config.json")
    export = output_dir / "export"
    if not (export / "tflite" / "all_tf_dynamic_int8.tflite").exists():
        subprocess.run([sys.executable, "-m", "all_tf.export", str(model_path), "-o",
                        str(export), "--formats", "savedmodel,float32,dynamic_int8",
                        "--no-verify"], check=True)
    files = [p for p, _ in collect_inputs([str(SAMPLE_ALL4_DIR)])][:images]
    rows = {}
    keras_backend = load_backend(model_path)
    rows["keras"] = median_ms(lambda f: predict_files(keras_backend, [f], progress=False),
                              files, warmup=3)
    from all_tf.inference.model_files import find_saved_model

    serving = tf.saved_model.load(str(find_saved_model(export / "serving" / "all_tf")))
    fn = serving.signatures["serving_default"]
    rows["savedmodel"] = median_ms(
        lambda f: fn(image_bytes=tf.constant([Path(f).read_bytes()]))["class_name"].numpy(),
        files, warmup=3)
    for variant in ("float32", "dynamic_int8"):
        backend = load_backend(export / "tflite" / f"all_tf_{variant}.tflite", threads=1)
        rows[f"tflite {variant} (1 thread)"] = median_ms(
            lambda f, b=backend: predict_files(b, [f], progress=False), files, warmup=3)
    table = ["| path | ms per image (median) | vs the paper's 4250 ms |", "|---|---|---|"]
    table += [f"| {k} | {v:.0f} | {4250 / v:.0f}x faster |" for k, v in rows.items()]
    text = (f"{cfg.model.name} at {cfg.preprocess.image_size} px, {len(files)} images, one at "
            "a time, file to label\n\n" + "\n".join(table) + "\n")
    (output_dir / "speed.md").write_text(text)
    (output_dir / "speed.json").write_text(json.dumps(rows, indent=2))
    click.echo(text)


if __name__ == "__main__":
    main()
