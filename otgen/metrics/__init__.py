"""Metrics: an offline MNIST classifier and sample-quality scores for generated data."""

from otgen.metrics.classifier import MNISTClassifier
from otgen.metrics.generation import (class_histogram, coverage_kl, density_coverage, digit_metrics,
                                      frechet_distance, gaussian_frechet_distance, low_confidence_rate,
                                      mode_mixture_rate, precision_recall, sliced_wasserstein)

__all__ = ["MNISTClassifier", "class_histogram", "coverage_kl", "density_coverage", "digit_metrics",
           "frechet_distance", "gaussian_frechet_distance", "low_confidence_rate", "mode_mixture_rate",
           "precision_recall", "sliced_wasserstein"]
