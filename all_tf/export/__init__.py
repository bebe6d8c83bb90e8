"""Deployment: SavedModel for TF Serving, TFLite for edge devices, parity checks.

Modules (TensorFlow is imported only when one of them is used):

* :mod:`all_tf.export.serving` -- ``export_saved_model``: TF Serving layout, ``serving_default``
  on encoded image bytes with the run's preprocessing in the graph, ``predict_pixels`` on
  preprocessed float pixels.
* :mod:`all_tf.export.graph_preprocessing` -- TensorFlow-ops twin of
  :func:`all_tf.preprocessing.preprocess_image` (bit-exact with OpenCV for rgb/hsv/hed).
* :mod:`all_tf.export.tflite` -- ``export_tflite``: float32, float16, dynamic-range int8, full int8;
  ``labels.txt`` and per-file JSON metadata (layout, range, quantisation, classes, threshold).
* :mod:`all_tf.export.verify` -- runs TFLite files with LiteRT in separate processes; top-1
  agreement, probability differences, accuracy and ms/image against Keras.
* :mod:`all_tf.export.edge` -- ``export_edge``: a TFLite file taking RGB uint8 with the
  preprocessing in its graph, built-in ops only.

The command is ``all-tf export`` (:mod:`all_tf.cli.export`).
"""
