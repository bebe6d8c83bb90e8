"""Pack all4 for a device machine whose upload limit (64 MiB) is below the dataset's size.

Writes one file, ``<out>/all4_pack.tar.gz`` (one file: thousands of small files cost disk
blocks), holding ``all4/`` with every JPEG losslessly re-encoded (``jpegtran -copy none
-arithmetic -progressive``: the same DCT coefficients, about 15 % smaller), drops the second
copy of byte-identical files (listed in ``<out>/copies.txt`` and restored by ``unpack``),
stores the MD5 of every original's decoded pixels in ``<out>/pixels.json`` (checked after
unpacking, so the device trains on exactly the pixels used here), and writes the group-aware
splits of the plan to ``<out>/splits/``.

Example:
    python scripts/gpu/pack_all4.py ../shared/data/all4 .gpu      # here (needs jpegtran)
    python scripts/gpu/pack_all4.py --unpack .gpu                 # there
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

PACK = "all4_pack.tar.gz"
SPLITS = [("70:30", s) for s in (42, 43, 44)] + [("60:40", s) for s in (42, 43, 44)]


def pixel_md5(path: Path) -> str:
    from all_tf.io import read_image

    return hashlib.md5(read_image(path).tobytes()).hexdigest()


@click.command()
@click.argument("source", type=click.Path(path_type=Path), required=False)
@click.argument("out", type=click.Path(path_type=Path), required=False)
@click.option("--unpack", is_flag=True, help="Restore copies and check pixels (on the device).")
def main(source, out, unpack):
    """Pack SOURCE (an all4 root) into OUT, or with --unpack check and restore OUT."""
    if unpack:
        out = out or source
        with tarfile.open(out / PACK) as tar:
            tar.extractall(out, filter="data")
        for line in (out / "copies.txt").read_text().splitlines():
            kept, copy = line.split("\t")
            shutil.copyfile(out / "all4" / kept, out / "all4" / copy)
        expected = json.loads((out / "pixels.json").read_text())
        bad = [rel for rel, md5 in expected.items() if pixel_md5(out / "all4" / rel) != md5]
        click.echo(f"{len(expected) - len(bad)} of {len(expected)} images decode to the "
                   f"original pixels")
        if bad:
            raise click.ClickException(f"{len(bad)} images differ, e.g. {bad[:3]}")
        return
    if source is None or out is None:
        raise click.UsageError("SOURCE and OUT are needed to pack")
    from all_tf.config import SplitConfig
    from all_tf.data import assign_groups, make_split, scan_dataset

    files = sorted(p for p in source.rglob("*") if p.is_file())
    seen: dict[str, str] = {}
    copies, pixels = [], {}
    for p in files:
        rel = p.relative_to(source).as_posix()
        digest = hashlib.sha1(p.read_bytes()).hexdigest()
        pixels[rel] = pixel_md5(p)
        if digest in seen:
            copies.append(f"{seen[digest]}\t{rel}")
            continue
        seen[digest] = rel
        dst = out / "all4" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        with dst.open("wb") as f:
            subprocess.run(["jpegtran", "-copy", "none", "-arithmetic", "-progressive", str(p)],
                           stdout=f, check=True)
    (out / "copies.txt").write_text("\n".join(copies) + "\n")
    (out / "pixels.json").write_text(json.dumps(pixels))
    records = assign_groups(scan_dataset(source).records)
    for kind, seed in SPLITS:
        split = make_split(records, SplitConfig(kind=kind, seed=seed))
        split.save(out / "splits" / f"{kind.replace(':', '-')}_s{seed}.json", root=source)
    with tarfile.open(out / PACK, "w:gz") as tar:
        for name in ("all4", "splits", "copies.txt", "pixels.json"):
            tar.add(out / name, arcname=name)
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            else:
                (out / name).unlink()
    click.echo(f"{len(files)} files, {len(copies)} byte-identical copies left out, "
               f"{(out / PACK).stat().st_size / 1e6:.1f} MB in {out / PACK}")


if __name__ == "__main__":
    main()
