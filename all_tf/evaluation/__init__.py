"""Evaluation: metrics, the uncertainty rule, crop aggregation, Grad-CAM, hybrid head, figures.

The light functions (metrics, uncertainty, crops) import no TensorFlow; Grad-CAM, the hybrid
head and the figures import their heavy dependencies on first use.
"""

from all_tf.evaluation.crops import aggregate_crop_probabilities
from all_tf.evaluation.metrics import compute_metrics, flat_metrics
from all_tf.inference.uncertainty import predict_labels

__all__ = ["aggregate_crop_probabilities", "compute_metrics", "flat_metrics", "predict_labels"]
