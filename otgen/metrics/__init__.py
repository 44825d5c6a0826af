"""Metrics: an offline MNIST classifier, sample-quality scores, and pixel instruments for generated videos."""

from otgen.metrics.classifier import MNISTClassifier
from otgen.metrics.generation import (class_histogram, coverage_kl, density_coverage, digit_metrics,
                                      frechet_distance, gaussian_frechet_distance, low_confidence_rate,
                                      mode_mixture_rate, precision_recall, sliced_wasserstein)
from otgen.metrics.video import bistable_clip_classes, bistable_frame_states, count_consistency, count_objects

__all__ = ["MNISTClassifier", "class_histogram", "coverage_kl", "density_coverage", "digit_metrics",
           "frechet_distance", "gaussian_frechet_distance", "low_confidence_rate", "mode_mixture_rate",
           "precision_recall", "sliced_wasserstein",
           "count_objects", "count_consistency", "bistable_frame_states", "bistable_clip_classes"]
