"""Reusable Click option decorators shared by ``python -m all_tf.*`` and ``scripts/``."""

from all_tf.cli.options import (
    SAMPLE_ALL4_DIR,
    data_dir_option,
    output_dir_option,
    seed_option,
    verbose_option,
)

__all__ = ["SAMPLE_ALL4_DIR", "data_dir_option", "output_dir_option", "seed_option",
           "verbose_option"]
