"""``python -m all_tf.train``: the same command as ``all-tf train`` (:mod:`all_tf.cli.train`)."""

from all_tf.cli.train import *  # noqa: F403
from all_tf.cli.train import main

if __name__ == "__main__":
    main()
