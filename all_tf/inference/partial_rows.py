"""The rows of an unfinished ``predict`` run, kept beside its output so a rerun resumes.

``<output>.partial`` is JSON Lines: a header naming the model, its config override and the
uncertainty threshold, then one row per finished image, flushed as each batch ends. A rerun
with the same header keeps the rows of the images it is still asked for (error rows are
retried) and predicts only the others; any other header starts afresh.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "preds.csv.partial"
    >>> with PartialRows(path, "light.keras", None, 0.7).start([]) as rows:
    ...     rows.write({"file": "a.png", "status": "ok", "error": ""})
    >>> [r["file"] for r in PartialRows(path, "light.keras", None, 0.7).load()]
    ['a.png']
    >>> PartialRows(path, "other.keras", None, 0.7).load()  # another model: nothing to keep
    []
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FORMAT = "all_tf.predict.partial-1"


class PartialRows:
    """``<output>.partial`` of one model, config and threshold.

    Args:
        path: the partial file.
        model: the model file or folder that made the rows.
        config: the ``--config`` override, or None.
        threshold: the uncertainty threshold in [0, 1].
    """

    def __init__(self, path: str | os.PathLike, model: str, config: str | None, threshold: float):
        self.path = Path(path)
        self.header = {"format": FORMAT, "model": str(model),
                       "config": None if config is None else str(config),
                       "threshold": float(threshold)}
        self._stream = None

    def load(self) -> list[dict]:
        """Finished rows of an earlier run with the same header, in the order written; [] when
        there is none. A last line cut by a crash is dropped."""
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            if not lines or json.loads(lines[0]) != self.header:
                return []
        except json.JSONDecodeError:
            return []
        rows = []
        for line in lines[1:]:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if isinstance(row, dict) and "file" in row:
                rows.append(row)
        return rows

    def start(self, kept: list[dict]) -> PartialRows:
        """Rewrite the file with the header and ``kept`` (atomically), then append to it."""
        from all_tf.io import atomic_write_text

        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in [self.header, *kept]))
        self._stream = open(self.path, "a", encoding="utf-8")
        return self

    def write(self, row: dict) -> None:
        self._stream.write(json.dumps(row) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __enter__(self) -> PartialRows:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
