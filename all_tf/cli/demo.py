"""``python -m all_tf.demo``: classify the shipped sample with the released model.

Writes ``predictions.csv`` (one row per image, with its status), nucleus overlays and a
Grad-CAM panel into the output folder, and prints the accuracy on the sample and the time per
image from file to label (decoding, preprocessing, input gate, model).

The sample's 48 images come from the public all4 dataset and most were in the released
model's training or validation part, so its accuracy here shows the tool working, not how well
it generalises: the model card (``saved_models/<name>/MODEL_CARD.md``) has the cross-validated
numbers.

Example:
    $ python -m all_tf.demo -o demo_output
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from all_tf.cli import SAMPLE_ALL4_DIR


def gradcam_panel(model_path: str, cfg, pairs, path: Path, per_class: int = 2) -> Path | None:
    """Grad-CAM overlays of the first ``per_class`` images of each class, as one PNG (None when
    no image could be read)."""
    from all_tf.evaluation.figures import plot_gradcam_grid
    from all_tf.evaluation.gradcam import gradcam_items
    from all_tf.inference.model_files import load_keras_model

    items = gradcam_items(load_keras_model(model_path), cfg, pairs, per_class)
    if not items:
        return None
    return plot_gradcam_grid(items, path, title="Grad-CAM (released model, before temperature)")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "-m", default=None,
              help="Released model name or model path [default: the default released model].")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=SAMPLE_ALL4_DIR, show_default=False,
              help="Class-folder dataset to classify [default: the shipped sample].")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo_output"), show_default=True)
def main(model, data_dir, output_dir):
    """Classify the shipped sample with the released model and report accuracy and speed."""
    import io

    from all_tf import CLASS_NAMES
    from all_tf.data import collect_inputs
    from all_tf.inference.predictor import load_backend, predict_files, resolve_model, write_rows
    from all_tf.io import atomic_write_text

    try:
        model_path, _ = resolve_model(model, ())
        backend = load_backend(model_path)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    pairs = collect_inputs([str(data_dir)])
    if not pairs:
        raise click.ClickException(f"{data_dir}: no images found")
    label_of = {p: label for p, label in pairs}
    overlays = output_dir / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    predict_files(backend, [pairs[0][0]], progress=False)  # warm-up: graph tracing, not timed
    start = time.perf_counter()
    rows = predict_files(backend, [str(data_dir)], overlays, progress=False)
    elapsed = time.perf_counter() - start
    buf = io.StringIO()
    write_rows(rows, "csv", buf)
    atomic_write_text(output_dir / "predictions.csv", buf.getvalue())
    answered = [r for r in rows if r["class"]]
    correct = sum(r["class"] == CLASS_NAMES[label_of[r["file"]]] for r in answered
                  if label_of.get(r["file"]) is not None)
    statuses = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    panel = None
    if backend.kind == "keras":
        panel = gradcam_panel(backend.path, backend.config, pairs, output_dir / "gradcam.png")
    click.echo(f"model: {backend.path}")
    click.echo(f"images: {len(rows)}; status: "
               + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    if answered:
        click.echo(f"accuracy on the answered images: {correct}/{len(answered)} = "
                   f"{100 * correct / len(answered):.1f} %")
    click.echo(f"time per image, file to label: {1000 * elapsed / max(len(rows), 1):.1f} ms "
               f"({backend.kind}, {len(rows)} images)")
    click.echo(f"wrote {output_dir / 'predictions.csv'}, {overlays}/"
               + (f", {panel}" if panel else ""))
    if not answered:
        sys.exit(1)


if __name__ == "__main__":
    main()
