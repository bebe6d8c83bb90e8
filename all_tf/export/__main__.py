"""``python -m all_tf.export``: the same as ``all-tf export`` (:mod:`all_tf.cli.export`)."""

from all_tf.cli.export import main

if __name__ == "__main__":
    main()
