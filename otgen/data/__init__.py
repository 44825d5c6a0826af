"""Data sets: MNIST (embedded 5k subset + full IDX reader) and 2-D / R^d toy distributions."""

from otgen.data.mnist import N_TEST_PER_CLASS, N_TRAIN_PER_CLASS, load_mnist, read_idx, write_idx
from otgen.data.toy2d import (crescent, crescent_area, crescent_contains, gaussian_grid, gaussian_mixture,
                              gaussian_ring, grid_centers, ring_centers, sample_uniform_disc, two_blobs)

__all__ = [
    "load_mnist", "read_idx", "write_idx", "N_TRAIN_PER_CLASS", "N_TEST_PER_CLASS",
    "ring_centers", "gaussian_ring", "grid_centers", "gaussian_grid", "gaussian_mixture",
    "two_blobs", "crescent", "crescent_contains", "crescent_area", "sample_uniform_disc",
]
