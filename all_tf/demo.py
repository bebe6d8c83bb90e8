"""``python -m all_tf.demo``: the same command as ``all-tf demo`` (:mod:`all_tf.cli.demo`)."""

from all_tf.cli.demo import *  # noqa: F403
from all_tf.cli.demo import main

if __name__ == "__main__":
    main()
