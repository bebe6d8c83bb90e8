"""Package a finished run as a released model in ``saved_models/<name>/``.

Fits the run's temperature and input gate if it has none yet (``python -m all_tf.calibrate``),
then copies the best checkpoint (without optimizer state), ``config.json``, ``gate.json``,
``ood.npz``, ``split.json`` and ``metrics.json``, and writes ``SHA256SUMS``, which
:func:`all_tf.models.released.released_dir` checks on every load. The model card
(``MODEL_CARD.md``) is written by hand from the cross-validation results.

Example:
    python scripts/release.py results/cv_mnv3/runs/mobilenetv3small_contiguous_f4_s42 \\
        --name mobilenetv3small_all4
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click
from _common import REPO, fail


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", required=True, help="Folder name under saved_models/.")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=REPO / "saved_models", show_default=True)
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="Dataset root (default: the data_dir in the run's config).")
@click.option("--tta/--no-tta", default=False, show_default=True,
              help="Release with test-time augmentation (mean over the 8 flips and rotations); "
                   "the temperature is then fitted on those averaged probabilities.")
@click.option("--temperature/--no-temperature", default=True, show_default=True,
              help="Keep the temperature fitted on the run's validation part, or release with "
                   "temperature 1 (when cross-validation shows the scaling does not carry over "
                   "to new batches).")
def main(run_dir, name, output_dir, data_dir, tta, temperature):
    """Copy RUN_DIR's model, settings and gate into OUTPUT_DIR/NAME with checksums."""
    import keras

    import all_tf.models  # noqa: F401
    from all_tf.calibrate import calibrate_run
    from all_tf.config import Config
    from all_tf.models.released import write_checksums

    cfg = Config.load(run_dir / "config.json")
    if cfg.tta != tta:
        cfg.tta = tta
        cfg.save(run_dir / "config.json")
        (run_dir / "gate.json").unlink(missing_ok=True)  # refit for the new setting
    if not (run_dir / "gate.json").is_file():
        try:
            click.echo(calibrate_run(run_dir, data_dir))
        except ValueError as e:
            fail(e)
    out = output_dir / name
    out.mkdir(parents=True, exist_ok=True)
    model = keras.saving.load_model(run_dir / "checkpoints" / "best.keras", compile=False)
    model.save(out / "model.keras")  # compile=False: no optimizer state
    for f in ("config.json", "gate.json", "ood.npz", "split.json", "metrics.json"):
        shutil.copy2(run_dir / f, out / f)
    if not temperature:
        released = Config.load(out / "config.json")
        released.temperature = 1.0
        released.save(out / "config.json")
    click.echo(f"released {out} ({write_checksums(out)})")


if __name__ == "__main__":
    main()
