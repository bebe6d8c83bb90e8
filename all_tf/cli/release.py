"""Package a finished run as a released model in ``saved_models/<name>/``.

Fits the run's temperature and input gate if it has none yet (``python -m all_tf.calibrate``),
then copies the best checkpoint (without optimizer state), ``config.json``, ``gate.json``,
``ood.npz``, ``split.json`` and ``metrics.json``, and writes ``SHA256SUMS``, which
:func:`all_tf.models.released.released_dir` checks on every load. The model card
(``MODEL_CARD.md``) is written by hand from the cross-validation results.

``--weights-format float16-parts`` writes ``weights.json`` + ``weights.partNN.npz`` (float16,
each under 45 MB) instead of ``model.keras``, for models too big for git hosting; the release
is then reloaded and its probabilities on 8 shipped sample images compared with the float32
run model (max absolute difference and class agreement printed; over ``--max-prob-diff`` fails).

Example:
    all-tf release results/cv_mnv3/runs/mobilenetv3small_contiguous_f4_s42 \\
        --name mobilenetv3small_all4
    all-tf release RUN_DIR --name efficientnetv2s_cbam_all4 \\
        --weights-format float16-parts
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import numpy as np

from all_tf.cli.options import SAMPLE_ALL4_DIR, fail
from all_tf.models.released import SAVED_MODELS, WEIGHT_FORMATS


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", required=True, help="Folder name under saved_models/.")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=SAVED_MODELS, show_default=True)
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="Dataset root (default: the data_dir in the run's config).")
@click.option("--tta/--no-tta", default=None,
              help="Release with (or without) test-time augmentation (mean over the 8 flips and "
                   "rotations; the temperature is then fitted on those averaged probabilities). "
                   "Default: the run's setting. A change is saved in the run's config.json and "
                   "its gate refitted.")
@click.option("--temperature/--no-temperature", default=True, show_default=True,
              help="Keep the temperature fitted on the run's validation part, or release with "
                   "temperature 1 (when cross-validation shows the scaling does not carry over "
                   "to new batches).")
@click.option("--weights-format", type=click.Choice(WEIGHT_FORMATS),
              default="keras", show_default=True,
              help="model.keras, or weights.json + float16 weights.partNN.npz files under 45 MB "
                   "each (for models over git hosting's 50 MB file limit).")
@click.option("--max-prob-diff", type=click.FloatRange(0, 1), default=0.02, show_default=True,
              help="float16-parts: largest allowed |probability difference| from the float32 "
                   "run model on the check images.")
def main(run_dir, name, output_dir, data_dir, tta, temperature, weights_format, max_prob_diff):
    """Copy RUN_DIR's model, settings and gate into OUTPUT_DIR/NAME with checksums."""
    import keras

    import all_tf.models  # noqa: F401
    from all_tf.config import Config
    from all_tf.experiments.calibration import calibrate_run
    from all_tf.models.released import (
        KERAS_FILE,
        MANIFEST_FILE,
        weight_parts,
        write_checksums,
        write_weight_parts,
    )

    # everything that can fail is checked before the run or the release folder changes
    missing = [f for f in ("config.json", "split.json", "metrics.json", "checkpoints/best.keras")
               if not (run_dir / f).is_file()]
    if missing:
        fail(ValueError(f"{run_dir}: not a finished run (missing {', '.join(missing)})"))
    try:
        cfg = Config.load(run_dir / "config.json")
        if tta is not None and cfg.tta != tta:
            cfg = Config.from_dict({**cfg.to_dict(), "tta": tta})  # validated: not with crops
        model = keras.saving.load_model(run_dir / "checkpoints" / "best.keras", compile=False)
    except (ValueError, OSError) as e:
        fail(e)
    if tta is not None and Config.load(run_dir / "config.json").tta != tta:
        cfg.save(run_dir / "config.json")
        (run_dir / "gate.json").unlink(missing_ok=True)  # refit for the new setting
    if not (run_dir / "gate.json").is_file():
        try:
            click.echo(calibrate_run(run_dir, data_dir))
        except ValueError as e:
            fail(e)
    out = output_dir / name
    out.mkdir(parents=True, exist_ok=True)
    for stale in [out / KERAS_FILE, out / MANIFEST_FILE, *weight_parts(out)]:
        stale.unlink(missing_ok=True)  # a release of the other form in the same folder
    if weights_format == "keras":
        model.save(out / KERAS_FILE)  # compile=False: no optimizer state
    else:
        from all_tf.inference.model_files import to_float32

        model = to_float32(model)
        try:
            parts = write_weight_parts(model, out)
        except ValueError as e:
            fail(e)
        click.echo(f"wrote {len(parts)} float16 part(s): " + ", ".join(
            f"{p.name} ({p.stat().st_size / 1e6:.1f} MB)" for p in parts))
    for f in ("config.json", "gate.json", "ood.npz", "split.json", "metrics.json"):
        shutil.copy2(run_dir / f, out / f)
    if not temperature:
        released = Config.load(out / "config.json")
        released.temperature = 1.0
        released.save(out / "config.json")
    click.echo(f"released {out} ({write_checksums(out)})")
    if weights_format == "float16-parts":
        diff, agree, n = check_parts_release(model, out)
        click.echo(f"float16 parts vs float32 run model on {n} sample images: max |dp| = "
                   f"{diff:.2e}, same class {agree}/{n}")
        if diff > max_prob_diff:
            fail(ValueError(f"{out}: float16 weights change the probabilities by {diff:.3g} "
                            f"(> --max-prob-diff {max_prob_diff}); release with --weights-format "
                            "keras, or raise the limit after checking the model"))


def check_parts_release(reference, folder: Path, per_class: int = 2) -> tuple[float, int, int]:
    """Compare the parts release in ``folder`` with ``reference`` on shipped sample images.

    Args:
        reference: the float32 Keras model the parts were written from.
        folder: the release folder (checksums verified on load).
        per_class: sample images taken from each class folder.

    Returns:
        (max absolute probability difference, images with the same top class, images).
    """
    from all_tf.data import collect_inputs
    from all_tf.io import read_image
    from all_tf.models.released import load_release
    from all_tf.preprocessing import preprocess_image

    reloaded, cfg = load_release(folder)
    taken: dict[int, list[str]] = {}
    for path, label in collect_inputs([str(SAMPLE_ALL4_DIR)]):
        if len(taken.setdefault(label, [])) < per_class:
            taken[label].append(path)
    paths = [p for label in sorted(taken) for p in taken[label]]
    x = np.stack([preprocess_image(read_image(p), cfg.preprocess) for p in paths])
    p_ref = np.asarray(reference.predict(x, verbose=0), np.float64)
    p_new = np.asarray(reloaded.predict(x, verbose=0), np.float64)
    agree = int((p_ref.argmax(axis=1) == p_new.argmax(axis=1)).sum())
    return float(np.abs(p_ref - p_new).max()), agree, len(paths)


if __name__ == "__main__":
    main()
