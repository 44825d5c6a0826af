"""Semi-discrete optimal transport: solver, sources, exact 2-D power diagrams."""

from otgen.transport.power2d import (Power2DResult, cell_areas, cell_masses, disc_domain, power_cells,
                                     power_facets, solve_power2d, square_domain)
from otgen.transport.semidiscrete import SemiDiscreteOT, SemiDiscreteResult
from otgen.transport.sources import (SOURCES, CallableSource, Source, SourceSampler, as_source, sample_source,
                                     source_std)

__all__ = ["SOURCES", "Power2DResult", "cell_areas", "cell_masses", "disc_domain", "power_cells", "power_facets",
           "solve_power2d", "square_domain", "SemiDiscreteOT", "SemiDiscreteResult", "SourceSampler",
           "sample_source", "source_std", "Source", "CallableSource", "as_source"]
