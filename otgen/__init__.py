"""otgen: geometric, optimal-transport generative models.

Semi-discrete optimal transport (Brenier potentials) from a simple source to
latent codes, the singular set of the transport map as the boundary between
modes, and a diffusion baseline to compare against.
"""

__version__ = "0.1.0"

from otgen._base import NotFittedError
from otgen._validation import ConvergenceWarning

__all__ = ["ConvergenceWarning", "NotFittedError", "__version__"]
