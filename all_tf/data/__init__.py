"""The data layer: scan a dataset, group duplicates, split, and feed tf.data.

Example:
    >>> from all_tf.config import SplitConfig
    >>> from all_tf.data import assign_groups, make_split, scan_dataset
    >>> records = assign_groups(scan_dataset("all_tf/sample_data/all4").records)
    >>> split = make_split(records, SplitConfig(kind="70:30", seed=0))
    >>> len(split.train) + len(split.val) + len(split.test)
    48

TensorFlow is imported only by the pipeline functions (``make_dataset``, ``make_eval_dataset``),
loaded lazily so that scanning and splitting stay light.
"""

from all_tf.data.duplicates import (
    DuplicatePair,
    DuplicateReport,
    assign_groups,
    find_duplicates,
    image_signature,
    phash,
)
from all_tf.data.scan import (
    CLASS_ALIASES,
    SAMPLE_ALL4_DIR,
    Record,
    ScanResult,
    class_index,
    collect_inputs,
    file_number,
    normalise_name,
    scan_dataset,
)
from all_tf.data.splits import Split, make_split

__all__ = [
    "CLASS_ALIASES",
    "SAMPLE_ALL4_DIR",
    "DuplicatePair",
    "DuplicateReport",
    "Record",
    "ScanResult",
    "Split",
    "assign_groups",
    "class_index",
    "collect_inputs",
    "file_number",
    "find_duplicates",
    "image_signature",
    "load_image_and_preprocess",
    "make_dataset",
    "make_eval_dataset",
    "make_split",
    "normalise_name",
    "phash",
    "scan_dataset",
]

_LAZY = {"make_dataset", "make_eval_dataset", "load_image_and_preprocess"}


def __getattr__(name):
    if name in _LAZY:
        from all_tf.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
