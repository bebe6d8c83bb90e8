"""``python -m all_tf.predict``: the same as ``all-tf predict`` (:mod:`all_tf.cli.predict`);
the job itself is :mod:`all_tf.inference.predictor`."""

from all_tf.cli.predict import main
from all_tf.inference.predictor import (  # noqa: F401
    COLUMNS,
    PROB_COLUMNS,
    Backend,
    RowWriter,
    iter_predictions,
    load_backend,
    predict_files,
    resolve_model,
    write_rows,
)

if __name__ == "__main__":
    main()
