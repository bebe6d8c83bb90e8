"""Models x splits x seeds -> per-run metrics and the paper's Tables 2 and 3 (mean ± sd).

Every run is an ``all_tf.training.train_run`` in ``<output-dir>/runs/<model>_<split>_s<seed>/``;
its row is appended to ``<output-dir>/results.csv`` as it finishes, and ``summary.csv`` /
``summary.md`` are rewritten from the CSV. Rerunning the same command skips finished runs and
resumes an interrupted one. With ``--hybrid`` (default) each run also gets a boosted-trees head
on its pooled features (rows with head ``gbt``).

Examples:
    python scripts/protocol.py --quick -o results/protocol_quick
    python scripts/protocol.py --data-dir ../shared/data/all4 -o results/protocol \\
        --models efficientnetv2s_cbam,mobilenetv3large,resnet50 --splits 70:30 \\
        --seeds 42,43,44 --image-size 128 --epochs 30
    python scripts/protocol.py --config runs/real/v2s/config.json -o results/placements \
        --models efficientnetv2s_cbam --cbam-placements stages,none,final,every_block \
        --splits 70:30 --seeds 42
"""

from __future__ import annotations

from pathlib import Path

import click
from _common import base_config, csv_list, fail, training_options

PAPER_MODELS = (
    "efficientnetv2s_cbam,efficientnetv2s,mobilenetv3large,resnet50,densenet121,vgg16,inceptionv3"
)
QUICK_MODELS = "mobilenetv3small"
HEADINGS = {"70:30": "Table 2: 70:30 split", "60:40": "Table 3: 60:40 split"}


def protocol_specs(base, models, splits, seeds, cbam_placements=None):
    """One ``RunSpec`` per model (x CBAM placement) x split x seed, in that nesting order.

    Run ids are ``<model>_<split>_s<seed>``; a CBAM placement other than ``base``'s makes the
    model tag ``<model>-<placement>`` in the id and in the table's model column.

    Raises:
        ValueError: an invalid split kind or placement.
    """
    from all_tf.config import Config
    from all_tf.evaluation.protocol import RunSpec, split_tag
    from all_tf.models import CBAM_PLACEMENTS

    unknown = [p for p in cbam_placements or [] if p not in CBAM_PLACEMENTS]
    if unknown:
        raise ValueError(f"unknown CBAM placement(s) {unknown}; choose from {CBAM_PLACEMENTS}")
    specs = []
    for split in splits:
        for model in models:
            placements = (cbam_placements or [base.model.cbam_placement]) \
                if model.endswith("_cbam") else [base.model.cbam_placement]
            for placement in placements:
                tag = model if placement == base.model.cbam_placement else f"{model}-{placement}"
                for seed in seeds:
                    cfg = Config.from_dict(base.to_dict())
                    cfg.model.name = model
                    cfg.model.cbam_placement = placement
                    cfg.split.seed = seed
                    cfg.split.kind = split
                    cfg = Config.from_dict(cfg.to_dict())
                    columns = {"model": tag} if tag != model else {}
                    specs.append(RunSpec(f"{tag}_{split_tag(split)}_s{seed}", cfg, columns))
    return specs


@click.command()
@training_options
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Protocol directory (default results/protocol, or results/protocol_quick).",
)
@click.option(
    "--models",
    callback=csv_list(),
    help=f"Comma-separated model names [default: {PAPER_MODELS}; with --quick: {QUICK_MODELS}].",
)
@click.option(
    "--splits",
    default="70:30,60:40",
    show_default=True,
    callback=csv_list(),
    help="Comma-separated split kinds.",
)
@click.option(
    "--seeds",
    callback=csv_list(int),
    help="Comma-separated seeds (split, initialisation, shuffling) [default: "
    "42,43,44; with --quick: 42].",
)
@click.option(
    "--cbam-placements",
    callback=csv_list(),
    help="Comma-separated CBAM placements to compare (stages, every_block, final, none) for "
    "the *_cbam models [default: the config's placement only]. A placement other than the "
    "config's gets its own run id and table row, e.g. efficientnetv2s_cbam-final.",
)
@click.option(
    "--hybrid/--no-hybrid",
    default=True,
    show_default=True,
    help="Also score a boosted-trees head on each run's pooled features.",
)
@click.option(
    "--label-check/--no-label-check",
    default=True,
    show_default=True,
    help="Also score each run with the burned-in label corner of its test images hidden.",
)
@click.option(
    "--hybrid-backend",
    type=click.Choice(["auto", "xgboost", "sklearn"]),
    default="auto",
    show_default=True,
)
def main(
    quick,
    config_file,
    data_dir,
    image_size,
    epochs,
    batch_size,
    mixed_precision,
    verbose,
    output_dir,
    models,
    splits,
    seeds,
    cbam_placements,
    hybrid,
    label_check,
    hybrid_backend,
):
    """Run the classification protocol and write its results tables."""
    from all_tf.evaluation.protocol import run_specs, write_summary

    base = base_config(
        quick, config_file, data_dir, image_size, epochs, batch_size, mixed_precision
    )
    output_dir = output_dir or Path("results/protocol_quick" if quick else "results/protocol")
    models = models or (QUICK_MODELS if quick else PAPER_MODELS).split(",")
    seeds = seeds or ([42] if quick else [42, 43, 44])
    try:
        specs = protocol_specs(base, models, splits, seeds, cbam_placements)
    except ValueError as e:
        fail(e)
    try:
        from all_tf.models import MODEL_NAMES

        unknown = [m for m in models if m not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_NAMES)}")
        run_specs(
            specs,
            output_dir,
            hybrid=hybrid,
            hybrid_backend=hybrid_backend,
            label_check=label_check,
            verbose=min(verbose, 2),
            echo=click.echo,
        )
    except ValueError as e:
        fail(e)
    from all_tf.evaluation.protocol import read_rows

    # The table covers every run in results.csv, not only this invocation's seeds.
    all_seeds = sorted({int(r["seed"]) for r in read_rows(output_dir / "results.csv")} | set(seeds))
    intro = (
        f"Data: `{base.data_dir}`; {base.preprocess.image_size} px, "
        f"{base.train.epochs} epochs, seeds {', '.join(map(str, all_seeds))} (per-row counts in "
        "`runs`); "
        "head `softmax` = the network, `gbt` = boosted trees on its pooled features."
    )
    write_summary(output_dir, "Classification protocol", intro=intro, headings=HEADINGS)
    click.echo(f"results: {output_dir / 'results.csv'}; summary: {output_dir / 'summary.md'}")


if __name__ == "__main__":
    main()
