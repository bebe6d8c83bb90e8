"""The command line: ``all-tf <command>`` (:mod:`all_tf.cli.main`), one module per command,
and the Click options and helpers they share (:mod:`all_tf.cli.options`)."""

from all_tf.cli.options import (
    SAMPLE_ALL4_DIR,
    data_dir_option,
    output_dir_option,
    seed_option,
)

__all__ = ["SAMPLE_ALL4_DIR", "data_dir_option", "output_dir_option", "seed_option"]
