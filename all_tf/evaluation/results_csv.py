"""Append-only results CSV that survives crashes.

Each finished run appends one row, flushed and fsynced before the function returns, so a
finished result is on disk before the next run starts. Rows are never rewritten. A crash in
the middle of a write can leave a last line without its newline: :func:`repair_csv` cuts that
partial line off (and only that), and :func:`read_rows` ignores it without touching the file.

Example:
    >>> import tempfile, os
    >>> from all_tf.evaluation.results_csv import append_row, completed_keys
    >>> path = os.path.join(tempfile.mkdtemp(), "results.csv")
    >>> append_row(path, {"run_id": "a", "accuracy": 0.5})
    >>> sorted(completed_keys(path))
    ['a']
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

KEY = "run_id"


def _complete_text(path: Path) -> tuple[str, int]:
    """The file's text up to its last newline, and how many bytes of partial line follow."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    return data[:end].decode("utf-8"), len(data) - end


def repair_csv(path: str | os.PathLike) -> int:
    """Drop a partial last line (one without a newline) left by a crash.

    Returns:
        The number of bytes removed (0 when the file is complete or absent).
    """
    path = Path(path)
    if not path.exists():
        return 0
    _, partial = _complete_text(path)
    if partial:
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size - partial)
            f.flush()
            os.fsync(f.fileno())
    return partial


def read_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """Complete rows of a results CSV as dicts of strings (empty list if the file is absent).

    A partial last line is ignored; the file is not modified.

    Raises:
        ValueError: a complete row has more fields than the header (a corrupt file).
    """
    path = Path(path)
    if not path.exists():
        return []
    text, _ = _complete_text(path)
    reader = csv.DictReader(io.StringIO(text), restkey="__extra__")
    rows = []
    for line_no, row in enumerate(reader, start=2):
        if "__extra__" in row:
            raise ValueError(f"{path}: line {line_no} has more fields than the header")
        rows.append(row)
    return rows


def read_header(path: str | os.PathLike) -> list[str] | None:
    """The header of a results CSV, or None if the file is absent or has no complete line."""
    path = Path(path)
    if not path.exists():
        return None
    text, _ = _complete_text(path)
    first = text.split("\n", 1)[0]
    return next(csv.reader([first])) if first else None


def completed_keys(path: str | os.PathLike, key: str = KEY) -> set[str]:
    """Values of column ``key`` over the complete rows: the runs already finished."""
    return {row[key] for row in read_rows(path) if row.get(key)}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    # newlines would break the line-based crash repair; a results cell never needs one
    return str(value).replace("\r", " ").replace("\n", " ")


def append_row(path: str | os.PathLike, row: dict, fieldnames: list[str] | None = None) -> None:
    """Append one row, writing the header first if the file is new; flush and fsync.

    Args:
        path: the CSV file (parent directories are created).
        row: column -> value (None becomes an empty cell, floats keep full precision).
        fieldnames: column order for a new file (default: the row's keys). For an existing
            file the header decides; missing columns stay empty.

    Raises:
        ValueError: the row has a column the existing header lacks (columns are never added,
            which would mean rewriting finished rows).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_csv(path)
    header = read_header(path)
    new_file = header is None
    if new_file:
        header = list(fieldnames) if fieldnames else list(row)
        missing = [k for k in row if k not in header]
        header += missing
    unknown = [k for k in row if k not in header]
    if unknown:
        raise ValueError(f"{path}: columns {unknown} are not in the existing header {header}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if new_file:
        writer.writerow(header)
    writer.writerow([_cell(row.get(k)) for k in header])
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
