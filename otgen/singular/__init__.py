"""The singular set of the Brenier map: mode boundaries ("critical states") of the data."""

from otgen.singular.detector import SingularSetDetector, dual_graph, gap_threshold, normal_angles, ratio_threshold

__all__ = ["SingularSetDetector", "dual_graph", "gap_threshold", "normal_angles", "ratio_threshold"]
