"""``python -m all_tf.train``: train a classifier into a resumable run directory.

Examples:
    Train on the sample shipped with the package (quick preset, a few minutes on 2 cores)::

        python -m all_tf.train

    The paper's settings on the full dataset, bf16 mixed precision, 70:30 split::

        python -m all_tf.train --data-dir ../shared/data/all4 --preset paper \\
            --mixed-precision -o runs/v2s_cbam_7030_s42

    The recipe that trains EfficientNetV2-S + CBAM from scratch, at 128 px on a CPU
    (about 85 min on 2 cores)::

        python -m all_tf.train --data-dir ../shared/data/all4 --preset scratch \\
            --image-size 128 -o runs/v2s_cbam_128

    Rerunning the same command after an interruption resumes from the last finished epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from all_tf.cli import SAMPLE_ALL4_DIR, data_dir_option, output_dir_option, seed_option
from all_tf.cli.options import config_from_file, keras_verbose_option
from all_tf.config import (
    CBAM_PLACEMENTS,
    COLOUR_SPACES,
    INPUT_MODES,
    LOSSES,
    PRESETS,
    SPLIT_KINDS,
    STRATEGIES,
    Config,
)

# Click option name -> dotted config key
OVERRIDES = {
    "model": "model.name",
    "cbam_placement": "model.cbam_placement",
    "dropout": "model.dropout",
    "weights": "model.weights",
    "bn_momentum": "model.bn_momentum",
    "image_size": "preprocess.image_size",
    "colour_space": "preprocess.colour_space",
    "input_mode": "preprocess.input_mode",
    "mask_label_corner": "preprocess.mask_label_corner",
    "clahe": "preprocess.clahe",
    "reinhard": "preprocess.reinhard",
    "colour_jitter": "augment.colour_jitter",
    "hed_jitter": "augment.hed_jitter",
    "zoom": "augment.zoom",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "learning_rate": "train.learning_rate",
    "loss": "train.loss",
    "loss_warmup_epochs": "train.loss_warmup_epochs",
    "focal_gamma": "train.focal_gamma",
    "focal_alpha": "train.focal_alpha",
    "patience": "train.early_stopping_patience",
    "mixed_precision": "train.mixed_precision",
    "deterministic": "train.deterministic",
    "strategy": "train.strategy",
    "class_weights": "train.class_weights",
    "seed": "split.seed",
    "split": "split.kind",
    "fold": "split.fold",
    "embargo": "split.embargo",
}


def resolve_config(preset: str | None, config_file: Path | None, data_dir: Path | None,
                   overrides: dict) -> Config:
    """Preset (or config file), then the options given on the command line.

    Raises:
        ValueError: both a preset and a config file; no dataset for a preset other than quick
            (only quick trains on the shipped sample) or for a config that names none.
    """
    if config_file is not None:
        if preset is not None:
            raise ValueError(f"--config replaces the preset: drop --preset {preset} (or --quick)")
        cfg = config_from_file(config_file)
    else:
        preset = preset or ("quick" if data_dir is None else "paper")
        cfg = Config.preset(preset)
    if data_dir is None and not cfg.data_dir:
        if preset != "quick":
            raise ValueError("--data-dir is required (only --preset quick trains on the "
                             "shipped sample)")
        data_dir = SAMPLE_ALL4_DIR
    if data_dir is not None:
        cfg.data_dir = str(data_dir)
    overrides = dict(overrides)
    weights = overrides.get("weights")
    no_weights = isinstance(weights, str) and weights.lower() == "none"
    if no_weights:
        overrides["weights"] = None
    cfg = cfg.override({OVERRIDES[key]: value for key, value in overrides.items()})
    if no_weights:
        cfg.model.weights = None
    return cfg


def default_output_dir(cfg: Config) -> Path:
    folded = cfg.split.kind in ("kfold", "contiguous")
    split = cfg.split.kind.replace(":", "") + (f"f{cfg.split.fold}" if folded else "")
    return Path("runs") / f"{cfg.model.name}_{cfg.preprocess.image_size}px_{split}_s{cfg.split.seed}"


def _model_choices():
    from all_tf.models import MODEL_NAMES

    return MODEL_NAMES


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@data_dir_option()
@output_dir_option()
@click.option("--preset", type=click.Choice(PRESETS), default=None,
              help="Starting settings: quick (tiny), paper (the preprint's), scratch (the "
                   "recipe that trains EfficientNetV2-S + CBAM from scratch: batch 32, 60 "
                   "epochs, lr 1e-3, cross-entropy, bf16). Default: quick without --data-dir, "
                   "paper with it.")
@click.option("--quick", is_flag=True,
              help="The same as --preset quick (the flag the other commands take).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Start from a config.json (e.g. another run's) instead of a preset.")
@click.option("--model", type=str, help="Model name (see all_tf.models.MODEL_NAMES).")
@click.option("--image-size", type=int, help="Input side in pixels.")
@click.option("--cbam-placement", type=click.Choice(CBAM_PLACEMENTS))
@click.option("--dropout", type=float)
@click.option("--weights", type=str,
              help="'imagenet' (needs internet), a weights file, or 'none' (from scratch; the "
                   "default of every preset).")
@click.option("--bn-momentum", type=float, help="BatchNormalization momentum (0.9 for from-scratch).")
@click.option("--colour-space", type=click.Choice(COLOUR_SPACES))
@click.option("--input-mode", type=click.Choice(INPUT_MODES),
              help="'image': whole field; 'crops': nucleus crops, probabilities averaged per image.")
@click.option("--mask-label-corner/--no-mask-label-corner", default=None,
              help="Hide the burned-in scale-bar label (bottom-right box) by filling it with "
              "the median colour, in training and in every exported or served model.")
@click.option("--clahe/--no-clahe", default=None, help="CLAHE on the LAB lightness.")
@click.option("--reinhard/--no-reinhard", default=None,
              help="Reinhard stain normalisation to a target fitted on the training part.")
@click.option("--colour-jitter", type=click.FloatRange(0, 1),
              help="Training brightness/contrast jitter (fraction; 0 disables).")
@click.option("--hed-jitter", type=click.FloatRange(0, 1),
              help="Training stain jitter in HED space (Tellez et al. 2019; 0.05 light, "
                   "0.2 strong; 0 disables).")
@click.option("--zoom", type=click.FloatRange(0, 1, max_open=True),
              help="Training scale jitter: zoom in or out by up to this fraction, borders "
                   "reflected (0 disables).")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--learning-rate", "--lr", type=float, help="Peak learning rate of the cosine schedule.")
@click.option("--loss", type=click.Choice(LOSSES),
              help="ce: cross-entropy throughout; focal: focal loss throughout; ce_then_focal: "
                   "cross-entropy for --loss-warmup-epochs, then focal (the preprint's).")
@click.option("--loss-warmup-epochs", type=int,
              help="With --loss ce_then_focal: cross-entropy epochs before focal loss.")
@click.option("--focal-gamma", type=float)
@click.option("--focal-alpha", type=float)
@click.option("--patience", type=int, help="Early-stopping patience (epochs, on val_loss).")
@click.option("--class-weights/--no-class-weights", default=None)
@seed_option()
@click.option("--split", type=click.Choice(SPLIT_KINDS), help="Group-aware split kind.")
@click.option("--fold", type=int, help="Test fold for --split kfold or contiguous (0-4).")
@click.option("--embargo", type=int,
              help="--split contiguous: drop training images within this many file numbers "
                   "of a test or validation image (default 37).")
@click.option("--mixed-precision/--no-mixed-precision", default=None,
              help="bf16 mixed precision (faster on CPUs with AVX512-BF16 and on GPUs).")
@click.option("--deterministic/--no-deterministic", default=None, help="TF op determinism.")
@click.option("--strategy", type=click.Choice(STRATEGIES),
              help="tf.distribute strategy (multi_worker reads TF_CONFIG).")
@keras_verbose_option()
def main(data_dir, output_dir, preset, quick, config_file, verbose, **overrides):
    """Train a B-ALL classifier (default: EfficientNetV2-S + CBAM) into a run directory.

    The directory gets config.json, split.json, history.csv, checkpoints/{best,last}.keras
    and metrics.json. Rerun the same command to resume an interrupted run.
    """
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if quick:
        if preset not in (None, "quick"):
            raise click.UsageError(f"--quick contradicts --preset {preset}")
        preset = "quick"
    try:
        cfg = resolve_config(preset, config_file, data_dir, overrides)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if cfg.model.name not in _model_choices():
        raise click.BadParameter(
            f"unknown model {cfg.model.name!r}; choose one of {', '.join(_model_choices())}",
            param_hint="--model")
    out = output_dir or default_output_dir(cfg)
    click.echo(f"all_tf.train: {cfg.model.name} at {cfg.preprocess.image_size} px on {cfg.data_dir} "
               f"-> {out}", err=True)

    from all_tf.experiments import train_run
    from all_tf.training import RunError

    try:
        metrics = train_run(cfg, out, verbose=verbose)
    except RunError as e:
        raise click.ClickException(str(e)) from None
    summary = {k: metrics[k] for k in ("accuracy", "macro_f1", "auc_macro", "coverage")
               if k in metrics}
    click.echo(json.dumps({"output_dir": str(out), **summary}, indent=2))


if __name__ == "__main__":
    main()
