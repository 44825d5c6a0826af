"""The singular set of the Brenier map: mode boundaries ("critical states") of the data, and critical events along latent paths."""

from otgen.singular.critical import critical_states, localise_transitions
from otgen.singular.detector import (THRESHOLD_RULES, SingularSetDetector, dual_graph, gap_threshold,
                                     intrinsic_dimension, mode_threshold, normal_angles, persistence_threshold,
                                     ratio_threshold)
from otgen.singular.paths import (boundary_cells, encode_windows, flag_codes, latent_modes, locate_crossings,
                                  nearest_targets, singular_sides, sliding_windows)

__all__ = ["SingularSetDetector", "THRESHOLD_RULES", "dual_graph", "gap_threshold", "normal_angles",
           "ratio_threshold", "persistence_threshold", "mode_threshold", "intrinsic_dimension", "latent_modes",
           "nearest_targets", "sliding_windows",
           "encode_windows", "locate_crossings", "singular_sides", "boundary_cells", "flag_codes",
           "critical_states", "localise_transitions"]
