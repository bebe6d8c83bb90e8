"""``python -m all_tf.export``: see :mod:`all_tf.export.cli`."""

from all_tf.export.cli import main

if __name__ == "__main__":
    main()
