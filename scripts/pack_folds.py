"""Pack the contiguous cross-validation folds of a config for training on another machine.

``all-tf protocol`` trains its folds one after another through ``tf.data``. A machine with an
accelerator but without the dataset (or without TensorFlow) can train them instead, with
``scripts/fit_packed_folds.py`` on any Keras 3 backend. This script writes what it needs:

- ``images.zip``: every image of the dataset, resized to the config's input size and with its
  label corner masked (the steps of :func:`all_tf.preprocessing.preprocess_image` that come
  before CLAHE and Reinhard), as JPEG at ``--quality``, under its path relative to the
  dataset root. At 128 px and quality 95 this is about half the original files' size. The
  script prints, and stores in ``pack.json``, how much the model inputs of every 50th image
  change through packing (mean absolute difference in 0-255 units).
- ``<tag>/runs/<run id>/config.json`` and ``split.json`` for each fold, exactly as
  ``all-tf protocol`` would start them: the same run ids, the same split, the Reinhard target
  fitted on the fold's own training images (from the original files).

The fitted runs come back as ``<tag>/runs/<run id>/`` directories holding ``history.csv``,
``predictions.csv``, ``predictions_tta.csv`` and ``metrics.json``; copied into the protocol's
output directory, ``all-tf protocol`` records them instead of training again.

Example:
    .venv/bin/python scripts/pack_folds.py \\
        --config saved_models/efficientnetv2s_cbam_all4/config.json \\
        --data-dir ../shared/data/all4 --folds 0,1,2,3,4 --tag cv_v2s_cbam -o .devdata
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import click

PACK_FILE = "pack.json"
CHECK_EVERY = 50  # every 50th image is used to measure what packing changes


def packed_jpeg(rgb, cfg, quality: int) -> bytes:
    """JPEG bytes of ``rgb`` (uint8 (H, W, 3)) resized and label-masked as ``cfg``
    (a ``PreprocessConfig``) says."""
    from PIL import Image

    from all_tf.preprocessing.resize import resize_and_mask

    buf = io.BytesIO()
    Image.fromarray(resize_and_mask(rgb, cfg)).save(buf, format="JPEG", quality=quality,
                                                    subsampling=0)
    return buf.getvalue()


def input_deviation(zip_path: Path, records, cfg, data_dir) -> float:
    """Mean absolute difference (0-255 units) between the model inputs
    (:func:`all_tf.preprocessing.preprocess_image` with ``cfg``) of the original files and of
    their packed copies."""
    import numpy as np
    from PIL import Image

    from all_tf.io import read_image
    from all_tf.preprocessing import preprocess_image

    diffs = []
    with zipfile.ZipFile(zip_path) as zf:
        for r in records:
            packed = zf.read(Path(r.path).relative_to(Path(data_dir)).as_posix())
            a = preprocess_image(read_image(r.path), cfg.preprocess)
            b = preprocess_image(np.asarray(Image.open(io.BytesIO(packed)).convert("RGB")),
                                 cfg.preprocess)
            diffs.append(float(np.abs(a - b).mean()) * 255)
    return round(float(np.mean(diffs)), 3)


@click.command()
@click.option("--config", "config_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Config of the folds (e.g. a released model's config.json).")
@click.option("--data-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset root (class folders).")
@click.option("--folds", default="0,1,2,3,4", show_default=True,
              help="Comma-separated fold numbers.")
@click.option("--seeds", default="42", show_default=True, help="Comma-separated split seeds.")
@click.option("--tag", required=True, help="Name of this set of runs inside the pack.")
@click.option("--quality", default=95, show_default=True, type=click.IntRange(50, 100),
              help="JPEG quality of the packed images.")
@click.option("--output-dir", "-o", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Pack directory.")
def main(config_file, data_dir, folds, seeds, tag, quality, output_dir):
    """Write the images and fold runs of CONFIG into a pack directory."""
    from all_tf.config import Config
    from all_tf.data import make_split
    from all_tf.experiments.protocol import protocol_specs
    from all_tf.io import ImageReadError, read_image
    from all_tf.training.run import check_split, fit_reinhard, load_records

    base = Config.load(config_file).override({"data_dir": str(data_dir)})
    if base.preprocess.input_mode != "image":
        raise click.ClickException("only whole-field (input_mode image) configs can be packed")
    specs = protocol_specs(base, [base.model.name], ["contiguous"],
                           [int(s) for s in seeds.split(",")], None,
                           [int(f) for f in folds.split(",")])
    output_dir.mkdir(parents=True, exist_ok=True)
    records = load_records(base)
    meta_path = output_dir / PACK_FILE
    image_key = {"image_size": base.preprocess.image_size,
                 "mask_label_corner": base.preprocess.mask_label_corner, "quality": quality}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["images"] != image_key:
            raise click.ClickException(f"{output_dir} holds images packed as {meta['images']}; "
                                       f"this config needs {image_key}")
    else:
        meta = {"images": image_key, "data_dir": str(data_dir), "runs": []}
        zip_path = output_dir / "images.zip"
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf:
            with click.progressbar(records, label="packing images") as bar:
                for r in bar:
                    try:
                        rgb = read_image(r.path)
                    except ImageReadError as e:
                        click.echo(f"skipped {e}", err=True)
                        continue
                    rel = Path(r.path).relative_to(Path(data_dir)).as_posix()
                    zf.writestr(rel, packed_jpeg(rgb, base.preprocess, quality))
        click.echo(f"{zip_path}: {zip_path.stat().st_size / 2**20:.1f} MiB")

    for spec in specs:
        run_dir = output_dir / tag / "runs" / spec.run_id
        cfg = spec.cfg
        split = make_split(records, cfg.split)
        check_split(split, cfg.data_dir)
        fit_reinhard(cfg, split.train)
        run_dir.mkdir(parents=True, exist_ok=True)
        split.save(run_dir / "split.json", root=cfg.data_dir)
        cfg.save(run_dir / "config.json")
        name = f"{tag}/runs/{spec.run_id}"
        if name not in meta["runs"]:
            meta["runs"].append(name)
        if spec is specs[0]:
            meta.setdefault("input_deviation", {})[tag] = input_deviation(
                output_dir / "images.zip", records[::CHECK_EVERY], cfg, data_dir)
            click.echo(f"model inputs from packed images differ from those of the original "
                       f"files by {meta['input_deviation'][tag]:.2f} / 255 on average "
                       f"({len(records[::CHECK_EVERY])} images)")
        click.echo(f"{name}: {len(split.train)} train, {len(split.val)} val, "
                   f"{len(split.test)} test")
    meta_path.write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
