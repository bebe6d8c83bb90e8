"""``python -m all_tf.calibrate``: the same as ``all-tf calibrate`` (:mod:`all_tf.cli.calibrate`)."""

from all_tf.cli.calibrate import *  # noqa: F403
from all_tf.cli.calibrate import main

if __name__ == "__main__":
    main()
