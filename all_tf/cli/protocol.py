"""Models x splits x seeds -> pooled cross-validation and the paper's Tables 2 and 3.

The default protocol is ``--splits contiguous``: per class, the images in file-number (capture)
order are cut into 5 contiguous folds, training drops everything within an embargo of 37 file
numbers of the test fold, and the test parts of all folds are pooled into ``crossval.md`` /
``crossval.json`` (balanced accuracy with block-bootstrap CIs, calibration before and after
temperature scaling, the colour-histogram baseline on the same folds). ``70:30`` and ``60:40``
reproduce the paper's protocol (mean ± sd over seeds in ``summary.md``).

Every run is an ``all_tf.experiments.train_run`` in ``<output-dir>/runs/<model>_<split>_s<seed>/``;
its row is appended to ``<output-dir>/results.csv`` as it finishes, and ``summary.csv`` /
``summary.md`` are rewritten from the CSV. Rerunning the same command skips finished runs and
resumes an interrupted one. With ``--hybrid`` (default) each run also gets a boosted-trees head
on its pooled features (rows with head ``gbt``).

Examples:
    all-tf protocol --quick -o results/protocol_quick
    all-tf protocol --config saved_models/mobilenetv3small_all4/config.json \
        --data-dir <path to all4> --models mobilenetv3small --seeds 42 --no-hybrid \
        -o results/cv_mnv3
    all-tf protocol --data-dir ../shared/data/all4 -o results/protocol \\
        --models efficientnetv2s_cbam,mobilenetv3large,resnet50 --splits 70:30 \\
        --seeds 42,43,44 --image-size 128 --epochs 30
    all-tf protocol --config runs/real/v2s/config.json -o results/placements \
        --models efficientnetv2s_cbam --cbam-placements stages,none,final,every_block \
        --splits 70:30 --seeds 42
"""

from __future__ import annotations

from pathlib import Path

import click

from all_tf.cli.options import base_config, csv_list, fail, training_options

PAPER_MODELS = (
    "efficientnetv2s_cbam,efficientnetv2s,mobilenetv3large,resnet50,densenet121,vgg16,inceptionv3"
)
QUICK_MODELS = "mobilenetv3small"
HEADINGS = {"70:30": "Table 2 (the paper's protocol): 70:30 split",
            "60:40": "Table 3 (the paper's protocol): 60:40 split",
            "contiguous": "Per-fold runs of the contiguous split (pooled in crossval.md)"}


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
    default="contiguous",
    show_default=True,
    callback=csv_list(),
    help="Comma-separated split kinds. 'contiguous' (the default protocol) trains one run "
    "per fold and writes crossval.md with pooled out-of-fold metrics; '70:30' and '60:40' "
    "are the paper's protocol (Tables 2 and 3).",
)
@click.option(
    "--tta/--no-tta",
    default=True,
    show_default=True,
    help="With --splits contiguous: also pool each fold's predictions averaged over the 8 "
    "flips and rotations (a '+ TTA' row of crossval.md).",
)
@click.option(
    "--colour-baseline/--no-colour-baseline",
    default=True,
    show_default=True,
    help="With --splits contiguous: also score a colour-histogram random forest on the same "
    "folds (a row of crossval.md).",
)
@click.option(
    "--folds",
    callback=csv_list(int),
    help="Comma-separated folds of the contiguous split to train, in this order [default: "
    "all]. A subset is pooled into crossval_f<folds>.md / .json, which says so.",
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
    folds,
    seeds,
    cbam_placements,
    hybrid,
    tta,
    colour_baseline,
    label_check,
    hybrid_backend,
):
    """Run the classification protocol and write its results tables."""
    from all_tf.experiments.protocol import (
        protocol_specs,
        read_rows,
        run_specs,
        write_crossval,
        write_summary,
    )

    base = base_config(
        quick, config_file, data_dir, image_size, epochs, batch_size, mixed_precision
    )
    output_dir = output_dir or Path("results/protocol_quick" if quick else "results/protocol")
    models = models or (QUICK_MODELS if quick else PAPER_MODELS).split(",")
    seeds = seeds or ([42] if quick else [42, 43, 44])
    try:
        specs = protocol_specs(base, models, splits, seeds, cbam_placements, folds)
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
            verbose=verbose,
            echo=click.echo,
        )
    except ValueError as e:
        fail(e)
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
    if "contiguous" in splits:
        path = write_crossval(output_dir, [s for s in specs if s.cfg.split.kind == "contiguous"],
                              base, colour_baseline, tta, folds)
        click.echo(f"cross-validation (pooled out-of-fold): {path}")


if __name__ == "__main__":
    main()
