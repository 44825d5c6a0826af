"""Data sets: MNIST (embedded 5k subset + full IDX reader), 2-D / R^d toy distributions, video clips with known physics."""

from otgen.data.mnist import N_TEST_PER_CLASS, N_TRAIN_PER_CLASS, load_mnist, read_idx, write_idx
from otgen.data.toy2d import (crescent, crescent_area, crescent_contains, gaussian_grid, gaussian_mixture,
                              gaussian_ring, grid_centers, ring_centers, sample_uniform_disc, two_blobs)
from otgen.data.video import (bistable, bistable_geometry, bistable_long, bistable_position_state, moving_digits,
                              permanence, permanence_object_size)

__all__ = [
    "load_mnist", "read_idx", "write_idx", "N_TRAIN_PER_CLASS", "N_TEST_PER_CLASS",
    "ring_centers", "gaussian_ring", "grid_centers", "gaussian_grid", "gaussian_mixture",
    "two_blobs", "crescent", "crescent_contains", "crescent_area", "sample_uniform_disc",
    "moving_digits", "bistable", "bistable_long", "permanence", "bistable_geometry", "bistable_position_state",
    "permanence_object_size",
]
