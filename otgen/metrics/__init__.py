"""Metrics: an offline MNIST classifier, sample-quality scores, latent geometry, and pixel instruments for videos."""

from otgen.metrics.classifier import MNISTClassifier
from otgen.metrics.generation import (class_histogram, classifier_outputs, copy_rate, coverage_kl, density_coverage, detection_scores,
                                      digit_metrics, frechet_distance, gaussian_frechet_distance, loss_plateau,
                                      low_confidence_rate, mode_mixture_rate, nn_median, precision_recall,
                                      sliced_wasserstein)
from otgen.metrics.latent import (adjusted_rand_index, angle_separation, between_modes_rate, knn_label_agreement,
                                  mode_recovery, normalized_mutual_info, off_support_rate, roc_auc)
from otgen.metrics.video import (bistable_clip_classes, bistable_frame_states, count_consistency, count_objects,
                                 moving_digit_plausibility)

__all__ = ["MNISTClassifier", "class_histogram", "classifier_outputs", "coverage_kl", "density_coverage", "digit_metrics",
           "frechet_distance", "gaussian_frechet_distance", "low_confidence_rate", "mode_mixture_rate",
           "precision_recall", "sliced_wasserstein", "copy_rate", "nn_median", "loss_plateau", "detection_scores",
           "off_support_rate", "knn_label_agreement", "between_modes_rate", "angle_separation", "mode_recovery",
           "adjusted_rand_index", "normalized_mutual_info", "roc_auc", "count_objects", "count_consistency",
           "bistable_frame_states", "bistable_clip_classes", "moving_digit_plausibility"]
