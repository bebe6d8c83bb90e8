"""Export benchmark: sizes, ms/image and parity of every TFLite variant of a model.

With ``--run`` it exports that run (its split.json gives calibration and held-out images).
Without it, it makes a stand-in run: EfficientNetV2-S + CBAM (``--model-name``) built at
``--image-size`` and trained for ``--train-steps`` steps (batch 8, Adam 1e-3, from scratch) on the
training part of a group-aware 70:30 split of ``--data-dir`` -- enough for non-degenerate
activations (so int8 calibration and parity mean something), far too little for accuracy.
Then ``python -m all_tf.export`` runs in a fresh process and its verify table is printed.

Example:
    python scripts/benchmark_export.py --data-dir ../shared/data/all4 --train-steps 40 \\
        --output-dir /tmp/export_bench
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]


def make_standin_run(out: Path, data: str, model_name: str, size: int, steps: int, seed: int):
    import keras
    import numpy as np

    from all_tf.config import Config, SplitConfig
    from all_tf.data import assign_groups, make_split, scan_dataset
    from all_tf.io import read_image
    from all_tf.models import build_model
    from all_tf.preprocessing import fit_reinhard_target, preprocess_image

    cfg = Config()
    cfg.data_dir = str(Path(data).resolve())
    cfg.preprocess.image_size = size
    cfg.model.name = model_name
    records = assign_groups(scan_dataset(data, verify="none").records)
    split = make_split(records, SplitConfig(kind="70:30", seed=seed))
    rng = np.random.default_rng(seed)
    train = [split.train[i] for i in rng.permutation(len(split.train))[: steps * 8]]
    images = [read_image(r.path) for r in train]
    cfg.preprocess.reinhard_target = fit_reinhard_target(images[:200], cfg.preprocess)
    x = np.stack([preprocess_image(im, cfg.preprocess) for im in images])
    y = keras.utils.to_categorical([r.label for r in train], 4)
    keras.utils.set_random_seed(seed)
    model = build_model(model_name, image_size=size)
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    start = time.time()
    if steps:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    click.echo(f"stand-in model: {model_name} {size} px, {steps} training steps "
               f"({time.time() - start:.0f} s)")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    model.save(out / "checkpoints" / "best.keras")
    cfg.save(out / "config.json")
    split.save(out / "split.json", root=cfg.data_dir)
    return out


@click.command()
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A trained run directory to export (default: make a stand-in run).")
@click.option("--data-dir", default="../shared/data/all4", show_default=True,
              help="Dataset root for the stand-in run.")
@click.option("--model-name", default="efficientnetv2s_cbam", show_default=True)
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--train-steps", type=int, default=40, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--verify-count", type=int, default=200, show_default=True)
@click.option("--calibration-count", type=int, default=100, show_default=True)
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("export_benchmark"), show_default=True)
def main(run_dir, data_dir, model_name, image_size, train_steps, seed, verify_count,
         calibration_count, output_dir):
    """Export a run to every format and print sizes, latency and parity."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = output_dir
    out.mkdir(parents=True, exist_ok=True)
    if run_dir is None:
        run_dir = make_standin_run(out / "run", data_dir, model_name, image_size, train_steps,
                                   seed)
    env = dict(os.environ)
    start = time.time()
    cmd = [sys.executable, "-m", "all_tf.export", str(run_dir), "-o", str(out / "export"),
           "--verify-count", str(verify_count), "--calibration-count", str(calibration_count)]
    click.echo(" ".join(cmd))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise click.ClickException(f"export failed with status {proc.returncode}")
    click.echo(f"export + verify: {time.time() - start:.0f} s")
    click.echo((out / "export" / "verify.md").read_text())


if __name__ == "__main__":
    main()
