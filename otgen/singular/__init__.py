"""The singular set of the Brenier map: mode boundaries ("critical states") of the data, and critical events along latent paths."""

from otgen.singular.detector import SingularSetDetector, dual_graph, gap_threshold, normal_angles, ratio_threshold
from otgen.singular.paths import (boundary_cells, encode_windows, flag_codes, latent_modes, locate_crossings,
                                  nearest_targets, persistence_threshold, singular_sides, sliding_windows)

__all__ = ["SingularSetDetector", "dual_graph", "gap_threshold", "normal_angles", "ratio_threshold",
           "latent_modes", "nearest_targets", "sliding_windows", "encode_windows", "locate_crossings",
           "singular_sides", "persistence_threshold", "boundary_cells", "flag_codes"]
