"""Source measures μ of the semi-discrete problem, sampled by (randomised) quasi-Monte-Carlo.

The same three names are used everywhere in otgen:

* ``"uniform"``  — uniform on the cube :math:`[-1, 1]^d`,
* ``"ball"``     — uniform on the unit ball :math:`\\{x : |x| \\le 1\\}`,
* ``"gaussian"`` — the standard normal :math:`\\mathcal N(0, I_d)`.

Points come from scrambled Sobol sequences [1]_ mapped to the source (affine map
for the cube, inverse normal CDF for the Gaussian, Gaussian direction times
:math:`U^{1/d}` radius for the ball). Each call with a different ``seed`` gives an
independent randomisation, so mass estimates are unbiased and their spread
measures their error.

References
----------
.. [1] A. B. Owen, "Scrambling Sobol' and Niederreiter-Xing points",
   Journal of Complexity 14 (1998).
"""

from __future__ import annotations

import math

import torch

from otgen._validation import check_choice, check_positive_int

SOURCES = ("uniform", "ball", "gaussian")

# Sobol is defined up to this dimension in torch; above it we fall back to pseudo-random points.
_SOBOL_MAX_DIM = 21200


def check_source(source) -> str:
    """Validate a source name (``"uniform"``, ``"ball"`` or ``"gaussian"``)."""
    return check_choice(source, "source", SOURCES)


def source_std(source: str, d: int) -> float:
    """Per-coordinate standard deviation of the source (cube: 1/sqrt(3), ball: 1/sqrt(d+2), gaussian: 1)."""
    check_source(source)
    if source == "uniform":
        return 1.0 / math.sqrt(3.0)
    if source == "ball":
        return 1.0 / math.sqrt(d + 2.0)
    return 1.0


def _map_unit_cube(u: torch.Tensor, source: str, d: int) -> torch.Tensor:
    """Map points u in (0, 1)^{d or d+1} to the source. Shapes: (m, d') -> (m, d)."""
    if source == "uniform":
        return u[:, :d].mul(2.0).sub_(1.0)
    eps = 1e-7 if u.dtype == torch.float32 else 1e-15
    z = torch.special.ndtri(u[:, :d].clamp(eps, 1 - eps))  # (m, d) standard normal
    if source == "gaussian":
        return z
    # ball: uniform direction z/|z|, radius U^{1/d} from the extra coordinate
    r = u[:, d:d + 1].clamp(eps, 1.0).pow(1.0 / d)  # (m, 1)
    return z * (r / z.norm(dim=1, keepdim=True).clamp_min(1e-30))


class SourceSampler:
    """Draw points of a source measure in chunks.

    Parameters
    ----------
    source : {"uniform", "ball", "gaussian"}
    dim : int
        Dimension d of the points.
    seed : int
        Seed of this randomisation (scrambling of the Sobol sequence, or of the
        pseudo-random generator when ``qmc=False``).
    qmc : bool, default True
        Scrambled Sobol points (low variance) or i.i.d. pseudo-random points.
    dtype, device :
        Of the returned points.

    Examples
    --------
    >>> s = SourceSampler("uniform", 3, seed=0)
    >>> x = s.draw(1024)     # (1024, 3) in [-1, 1]^3
    """

    def __init__(self, source: str, dim: int, seed: int = 0, *, qmc: bool = True,
                 dtype=torch.float32, device="cpu"):
        self.source = check_source(source)
        self.dim = check_positive_int(dim, "dim")
        self.dtype, self.device = dtype, torch.device(device)
        n_uniform = dim + 1 if source == "ball" else dim
        self.qmc = bool(qmc) and n_uniform <= _SOBOL_MAX_DIM
        self._n_uniform = n_uniform
        seed = int(seed) % (2**63 - 1)
        if self.qmc:
            self._engine = torch.quasirandom.SobolEngine(n_uniform, scramble=True, seed=seed)
        else:
            self._gen = torch.Generator().manual_seed(seed)

    def skip(self, m: int) -> None:
        """Advance the stream by ``m`` points without returning them (another rank draws them)."""
        if self.qmc:
            self._engine.fast_forward(m)
        else:
            torch.rand(m, self._n_uniform, generator=self._gen, dtype=self.dtype)

    def draw(self, m: int) -> torch.Tensor:
        """Next ``m`` points, shape (m, d), on ``device``."""
        if self.qmc:
            u = self._engine.draw(m, dtype=torch.float64 if self.dtype == torch.float64 else torch.float32)
        else:
            u = torch.rand(m, self._n_uniform, generator=self._gen, dtype=self.dtype)
        x = _map_unit_cube(u, self.source, self.dim)
        return x.to(device=self.device, dtype=self.dtype, non_blocking=True)


def sample_source(source: str, n: int, dim: int, *, seed: int = 0, qmc: bool = False,
                  dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Draw ``n`` points of the source in R^dim. Returns a tensor of shape (n, dim)."""
    n = check_positive_int(n, "n")
    return SourceSampler(source, dim, seed, qmc=qmc, dtype=dtype, device=device).draw(n)
