"""Find exact, near-duplicate and overlapping-field images in a dataset and report the groups.

Examples:
    all-tf duplicates --data-dir ../shared/data/all4
    all-tf duplicates --data-dir ../shared/data/all4 -o results/duplicates.json --list
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from all_tf.cli.options import data_dir_option


@click.command()
@data_dir_option()
@click.argument("data_dir_arg", metavar="[DATA_DIR]", required=False,
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the full report (every pair and group) as JSON.")
@click.option("--max-hamming", default=22, show_default=True,
              help="pHash distance (bits of 63) under which a pair is checked.")
@click.option("--neighbour-window", default=8, show_default=True,
              help="Also check same-folder pairs whose file numbers differ by at most this.")
@click.option("--min-similarity", default=0.5, show_default=True,
              help="Correlation after alignment that makes a checked pair a duplicate.")
@click.option("--workers", default=2, show_default=True, help="Threads.")
@click.option("--list", "list_groups", is_flag=True, help="Print every group's file names.")
@click.option("--hash-table", is_flag=True,
              help="Print, per pHash distance, the pairs a hash threshold alone would take.")
def main(data_dir, data_dir_arg, output, max_hamming, neighbour_window, min_similarity, workers,
         list_groups, hash_table):
    """Report duplicate images under --data-dir (class folders as for training; the folder may
    also be given as DATA_DIR)."""
    from all_tf.data import find_duplicates, scan_dataset

    if (data_dir is None) == (data_dir_arg is None):
        raise click.UsageError("give the dataset once: --data-dir DIR (or DATA_DIR)")
    data_dir = data_dir or data_dir_arg
    if not data_dir.is_dir():
        raise click.BadParameter(f"{data_dir}: no such folder", param_hint="--data-dir")

    started = time.perf_counter()
    scan = scan_dataset(data_dir, workers=workers)
    for path, reason in scan.skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    if not scan.records:
        raise click.ClickException(f"{data_dir}: no images found in class folders")
    report = find_duplicates([r.path for r in scan.records], max_hamming=max_hamming,
                             neighbour_window=neighbour_window, min_similarity=min_similarity,
                             workers=workers)
    click.echo(report.summary(window=neighbour_window))
    click.echo(f"({report.params['candidates_verified']} candidate pairs checked, "
               f"{time.perf_counter() - started:.1f} s)")
    if list_groups:
        group_of = {p: k for k, g in enumerate(report.groups) for p in g}
        pairs_of: dict[int, list] = {}
        for p in report.pairs:
            pairs_of.setdefault(group_of[p.a], []).append(p)
        for k, group in enumerate(report.groups):
            click.echo(f"group {k}: " + " ".join(Path(p).name for p in group))
            for p in pairs_of.get(k, []):
                click.echo(f"    {Path(p.a).name} ~ {Path(p.b).name}: {p.kind}, "
                           f"similarity {p.similarity:.3f}, pHash distance {p.hamming}")
    hist = report.similarity_histogram
    if hist.get("counts"):
        click.echo("similarity of the checked candidates (histogram):")
        for lo, hi, n in zip(hist["edges"][:-1], hist["edges"][1:], hist["counts"], strict=True):
            if n:
                click.echo(f"    [{lo:+.1f}, {hi:+.1f}): {n}")
        top = report.borderline[:5]
        if top:
            click.echo("best-scoring rejected candidates (worth a look):")
            for p in top:
                click.echo(f"    {Path(p.a).name} ~ {Path(p.b).name}: {p.similarity:.3f}")
    if hash_table:
        click.echo("| pHash distance | pairs | across folders | accepted after alignment |")
        click.echo("| --- | --- | --- | --- |")
        for d, (n, cross, accepted) in sorted(report.hamming_table.items()):
            click.echo(f"| {d} | {n} | {cross} | {accepted} |")
    if output is not None:
        report.save(output)
        click.echo(f"wrote {output}")


if __name__ == "__main__":
    main()
