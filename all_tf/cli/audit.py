"""Audit a dataset: duplicates, class balance, colour/label shortcut baselines, model checks.

Writes ``audit.json`` and ``audit.md`` to the output directory. With ``--run-dir`` the run's
own split is used and its model is checked with the label corner masked and with every image
Reinhard-normalised to one target. A finished audit with the same inputs is not redone
(``--force`` redoes it).

Examples:
    all-tf audit --quick -o results/audit_quick
    all-tf audit --data-dir ../shared/data/all4 -o results/audit
    all-tf audit --data-dir ../shared/data/all4 --run-dir results/protocol/runs/X
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from all_tf.cli.options import SAMPLE_ALL4_DIR, fail
from all_tf.config import SPLIT_KINDS


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Dataset root (default with --quick: the shipped sample).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
              help="A finished run: use its split and check its model.")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Where audit.json/audit.md go (default results/audit or results/audit_quick).")
@click.option("--split", "split_kind", type=click.Choice(SPLIT_KINDS), default="70:30",
              show_default=True,
              help="Split for the baselines when there is no --run-dir.")
@click.option("--seed", default=42, show_default=True, help="Split and forest seed.")
@click.option("--quick", is_flag=True, help="The shipped sample (48 images) by default.")
@click.option("--force", is_flag=True, help="Redo a finished audit.")
def main(data_dir, run_dir, output_dir, split_kind, seed, quick, force):
    """Audit a dataset (and optionally a trained run) for duplicates and shortcuts."""
    from all_tf.config import SplitConfig
    from all_tf.experiments.audit import audit_dataset, audit_markdown, write_audit

    if data_dir is None:
        if not quick:
            raise click.UsageError("--data-dir is required without --quick")
        data_dir = SAMPLE_ALL4_DIR
    if not data_dir.is_dir():
        fail(ValueError(f"data directory {data_dir} does not exist"))
    output_dir = output_dir or Path("results/audit_quick" if quick else "results/audit")
    try:
        split_cfg = SplitConfig(kind=split_kind, seed=seed)
    except ValueError as e:
        fail(e)
    key = {"data_dir": str(data_dir), "run_dir": str(run_dir) if run_dir else None,
           "split": split_kind, "seed": seed}
    done = output_dir / "audit.json"
    if done.exists() and not force:
        try:
            previous = json.loads(done.read_text())
        except ValueError:
            previous = {}
        if previous.get("inputs") == key:
            click.echo(f"{done} is up to date (use --force to redo)")
            return
    try:
        result = audit_dataset(data_dir, split_cfg=split_cfg, run_dir=run_dir, seed=seed)
    except ValueError as e:
        fail(e)
    result["inputs"] = key
    json_path, md_path = write_audit(result, output_dir)
    click.echo(audit_markdown(result))
    click.echo(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
