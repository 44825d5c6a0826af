"""Source measures μ of the semi-discrete problem, sampled by (randomised) quasi-Monte-Carlo.

A source is given by name -- otgen's own names or POT's [2]_ -- or, as in POT, by a
callable sampler:

============================  ===========================  ==================================================
otgen name                    POT name                     measure μ
============================  ===========================  ==================================================
``"uniform"``                 (none: pass POT a callable)  uniform on the cube :math:`[-1, 1]^d`
``"unif"``, ``"unif_cube"``   ``'unif'``, ``'unif_cube'``  uniform on the cube :math:`[0, 1]^d`
``"ball"``, ``"unif_ball"``   ``'ball'``, ``'unif_ball'``  uniform on the unit ball :math:`\\{x : |x| \\le 1\\}`
``"gaussian"``, ``"normal"``  ``'normal'``                 the standard normal :math:`\\mathcal N(0, I_d)`
``f`` (callable)              ``f`` (callable)             the law of the rows of ``f(n)``, an (n, d) array
============================  ===========================  ==================================================

Mind the cubes: otgen's ``"uniform"`` is :math:`[-1, 1]^d` (centred, per-coordinate
standard deviation :math:`1/\\sqrt 3`) while POT's ``'unif'`` is :math:`[0, 1]^d` (mean
:math:`\\tfrac12`, standard deviation :math:`1/\\sqrt{12}`). They are distinct measures, with
distinct potentials: ``source="unif"`` solves the problem POT solves with
``sampler_source='unif'``. Aliases name one measure: ``"normal"`` gives the same solve as
``"gaussian"`` (:func:`as_source` maps every name to its canonical one, :attr:`Source.name`).

Named sources are drawn from scrambled Sobol sequences [1]_ mapped to the source (affine
map for the cubes, inverse normal CDF for the Gaussian, Gaussian direction times
:math:`U^{1/d}` radius for the ball). Each call with a different ``seed`` gives an
independent randomisation, so mass estimates are unbiased and their spread measures their
error.

A callable source ``f(n) -> (n, d)`` (numpy array or torch tensor; POT's convention) is
called as it is: its points are pseudo-random from ``f``'s own generator, so ``seed`` and
``qmc`` do not apply and a fit is reproducible only when ``f`` itself is seeded. What the
solver needs to know about μ is estimated once from :data:`CALLABLE_PROBE_POINTS` draws
(:class:`CallableSource`), its support is unknown (treated as :math:`\\mathbb R^d`), and the
exact 2-D solver is refused.

References
----------
.. [1] A. B. Owen, "Scrambling Sobol' and Niederreiter-Xing points",
   Journal of Complexity 14 (1998).
.. [2] R. Flamary et al., "POT: Python Optimal Transport", JMLR 22 (2021);
   ``ot.semidiscrete.solve_semidiscrete`` (POT >= 0.9.7), argument ``sampler_source``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from otgen._validation import as_tensor, check_choice, check_positive_int
from otgen.transport.power2d import disc_domain, square_domain

# canonical name -> accepted names: otgen's names first, then POT's
_ALIASES = {"uniform": ("uniform",), "unif": ("unif", "unif_cube"), "ball": ("ball", "unif_ball"),
            "gaussian": ("gaussian", "normal")}
_CANONICAL = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}
SOURCES = ("uniform", "ball", "gaussian", "unif", "unif_cube", "unif_ball", "normal")   # every accepted name

# Sobol is defined up to this dimension in torch; above it we fall back to pseudo-random points.
_SOBOL_MAX_DIM = 21200
# The standard normal's mass beyond radius 10 + sqrt(d) is < 1e-20: its "practical" radius.
_GAUSSIAN_RADIUS = 10.0
# Points of a callable source drawn once to estimate its mean, spread and radius: the standard
# deviation's relative error is ~ 1 / sqrt(2 * 4096) ~ 1 %, ample for a warm start's scale.
CALLABLE_PROBE_POINTS = 4096
# A callable source's radius: the probe's largest norm times this, so that mass the probe did
# not reach (the tail of a light-tailed law) is still covered.
_CALLABLE_RADIUS_FACTOR = 2.0


class Source:
    """A named source measure μ on :math:`\\mathbb R^d` (see the module's table).

    Everything the solver and the singular-set detector ask of μ: its points
    (:meth:`from_unit_cube` maps uniform points to μ), its mean and per-coordinate spread
    (warm starts), a radius about the origin (heights of zero-weight targets), its support
    (:meth:`contains`, :meth:`depth`) and, in 2-D, the polygon of the exact solver.

    Parameters
    ----------
    name : str
        A name of the module's table; :attr:`name` is the canonical one
        (``"uniform"``, ``"unif"``, ``"ball"`` or ``"gaussian"``).

    Examples
    --------
    >>> as_source("normal").name
    'gaussian'
    >>> round(as_source("unif").std(3), 4)    # 1 / sqrt(12): POT's cube [0, 1]^d
    0.2887
    """

    def __init__(self, name: str):
        self.name = _CANONICAL[check_choice(name, "source", SOURCES)]

    def __repr__(self) -> str:
        return f"Source({self.name!r})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def bounded(self) -> bool:
        """Whether the support is bounded (the cubes and the ball)."""
        return self.name != "gaussian"

    def n_uniform(self, d: int) -> int:
        """Uniform coordinates per point: d, or d + 1 for the ball (its radius)."""
        return d + 1 if self.name == "ball" else d

    def from_unit_cube(self, u: torch.Tensor, d: int) -> torch.Tensor:
        """Map points u in :math:`(0, 1)^{d'}` (m, d'), :math:`d' =` :meth:`n_uniform`, to μ: (m, d).

        Cubes: :math:`x = a + (b - a) u`. Gaussian: :math:`x = \\Phi^{-1}(u)`. Ball:
        :math:`x = U^{1/d} z / |z|` with :math:`z = \\Phi^{-1}(u_{1..d})` and :math:`U = u_{d+1}`.
        """
        if self.name == "uniform":
            return u[:, :d].mul(2.0).sub_(1.0)
        if self.name == "unif":
            return u[:, :d].clone()
        eps = 1e-7 if u.dtype == torch.float32 else 1e-15
        z = torch.special.ndtri(u[:, :d].clamp(eps, 1 - eps))  # (m, d) standard normal
        if self.name == "gaussian":
            return z
        r = u[:, d:d + 1].clamp(eps, 1.0).pow(1.0 / d)  # (m, 1)
        return z * (r / z.norm(dim=1, keepdim=True).clamp_min(1e-30))

    def mean(self, d: int) -> torch.Tensor:
        """The mean of μ, (d,) float64: :math:`\\tfrac12 \\mathbf 1` for ``"unif"``, zero otherwise."""
        return torch.full((d,), 0.5 if self.name == "unif" else 0.0, dtype=torch.float64)

    def std(self, d: int) -> float:
        """Per-coordinate standard deviation σ.

        :math:`[-1, 1]^d`: :math:`1/\\sqrt 3`; :math:`[0, 1]^d`: :math:`1/\\sqrt{12}`; ball:
        :math:`1/\\sqrt{d + 2}`; Gaussian: 1.
        """
        return {"uniform": 1.0 / math.sqrt(3.0), "unif": 1.0 / math.sqrt(12.0), "ball": 1.0 / math.sqrt(d + 2.0),
                "gaussian": 1.0}[self.name]

    def radius(self, d: int) -> float:
        """R with (practically) all of μ in :math:`\\{|x| \\le R\\}`.

        Both cubes: :math:`\\sqrt d`; ball: 1; Gaussian: :math:`10 + \\sqrt d`, beyond which its
        mass is below :math:`10^{-20}`.
        """
        return {"uniform": math.sqrt(d), "unif": math.sqrt(d), "ball": 1.0,
                "gaussian": _GAUSSIAN_RADIUS + math.sqrt(d)}[self.name]

    def contains(self, P: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
        """(M,) bool: rows of P (M, d) in the support of μ, grown by ``tol`` (all of R^d for the Gaussian)."""
        if self.name == "uniform":
            return P.abs().amax(1) <= 1.0 + tol
        if self.name == "unif":
            return (P.amin(1) >= -tol) & (P.amax(1) <= 1.0 + tol)
        if self.name == "ball":
            return (P * P).sum(1) <= (1.0 + tol) ** 2
        return torch.ones(len(P), dtype=torch.bool, device=P.device)

    def depth(self, X: torch.Tensor) -> torch.Tensor:
        """(M,) float64: distance from the rows of X (M, d) inside the support to its boundary (inf: Gaussian).

        :math:`[-1, 1]^d`: :math:`1 - |x|_\\infty`; :math:`[0, 1]^d`: :math:`\\min_k \\min(x_k, 1 - x_k)`;
        ball: :math:`1 - |x|`.
        """
        Xd = X.detach().double()
        if self.name == "uniform":
            return 1.0 - Xd.abs().amax(1)
        if self.name == "unif":
            return torch.minimum(Xd, 1.0 - Xd).amin(1)
        if self.name == "ball":
            return 1.0 - Xd.norm(dim=1)
        return torch.full((len(Xd),), math.inf, dtype=torch.float64, device=Xd.device)

    def domain2d(self):
        """The convex polygon (K, 2) of μ's support in 2-D for the exact solver, or ``None`` (the Gaussian).

        The ball's is the regular 512-gon of :func:`~otgen.transport.power2d.disc_domain`.
        """
        if self.name == "uniform":
            return square_domain()
        if self.name == "unif":
            return square_domain(0.5) + 0.5
        if self.name == "ball":
            return disc_domain()
        return None

    def check_dim(self, d: int) -> None:
        """Nothing to check for a named source (every d is allowed)."""


class CallableSource(Source):
    """A source given by a sampler ``f(n) -> (n, d)`` (numpy or torch), POT's callable ``sampler_source``.

    Its points are ``f``'s own (pseudo-random; otgen's ``seed`` and ``qmc`` do not apply),
    checked at every draw: shape (n, d) and finite. Its mean, per-coordinate standard
    deviation :math:`\\sigma = (\\operatorname{tr} \\Sigma / d)^{1/2}` and radius
    :math:`R = 2 \\max_k |x_k|` are estimated once per dimension from
    :data:`CALLABLE_PROBE_POINTS` points. Its support is unknown: :meth:`contains` is all of
    :math:`\\mathbb R^d` and :meth:`depth` is infinite, as for the Gaussian, and it has no
    2-D polygon (the exact solver is refused).

    Parameters
    ----------
    sampler : callable
        ``sampler(n)`` returns n points of μ as an (n, d) array or tensor.
    """

    def __init__(self, sampler):
        if not callable(sampler):
            raise TypeError(f"a callable source must be callable, got {type(sampler).__name__}")
        self.name = "callable"
        self.sampler = sampler
        self._probes = {}     # d -> (mean (d,) float64, std, radius)

    def __repr__(self) -> str:
        return f"CallableSource({self.sampler!r})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.sampler is self.sampler

    def __hash__(self) -> int:
        return hash(id(self.sampler))

    @property
    def bounded(self) -> bool:
        """Unknown, hence treated as unbounded."""
        return False

    def draw(self, m: int, d: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
        """``sampler(m)`` as an (m, d) tensor of ``dtype`` on ``device``; ``ValueError`` when not (m, d) or not finite."""
        out = self.sampler(m)
        X = as_tensor(out, "the source sampler's output", ndim=2, dtype=dtype, device=device)
        if tuple(X.shape) != (m, d):
            raise ValueError(f"the source sampler must return an array of shape (n, d) = ({m}, {d}) when called with "
                             f"n = {m}, got shape {tuple(X.shape)}")
        return X

    def _probe(self, d: int):
        if d not in self._probes:
            X = self.draw(CALLABLE_PROBE_POINTS, d, dtype=torch.float64)
            mean = X.mean(0)
            std = float(((X - mean) ** 2).sum(1).mean().div(d).sqrt())
            radius = _CALLABLE_RADIUS_FACTOR * float(X.norm(dim=1).max())
            self._probes[d] = (mean, std, radius)
        return self._probes[d]

    def check_dim(self, d: int) -> None:
        """Draw the probe now: ``ValueError`` when the sampler does not give finite (n, d) points."""
        self._probe(d)

    def mean(self, d: int) -> torch.Tensor:
        """The probe's mean, (d,) float64."""
        return self._probe(d)[0].clone()

    def std(self, d: int) -> float:
        """The probe's per-coordinate standard deviation :math:`(\\operatorname{tr} \\hat\\Sigma / d)^{1/2}`."""
        return self._probe(d)[1]

    def radius(self, d: int) -> float:
        """Twice the probe's largest norm."""
        return self._probe(d)[2]

    def contains(self, P: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
        """All True: the support is unknown."""
        return torch.ones(len(P), dtype=torch.bool, device=P.device)

    def depth(self, X: torch.Tensor) -> torch.Tensor:
        """All inf: the support is unknown."""
        return torch.full((len(X),), math.inf, dtype=torch.float64, device=X.device)

    def domain2d(self):
        """``None``: a sampler has no polygon."""
        return None


def as_source(source) -> Source:
    """The :class:`Source` of a name (otgen's or POT's), a callable sampler, or a :class:`Source` (returned as is).

    ``ValueError`` for an unknown name, ``TypeError`` for anything else.
    """
    if isinstance(source, Source):
        return source
    if isinstance(source, str):
        return Source(source)
    if callable(source):
        return CallableSource(source)
    raise TypeError(f"source must be one of {sorted(SOURCES)} or a callable sampler f(n) -> (n, d) array, "
                    f"got {type(source).__name__} {source!r}")


def check_source(source) -> str:
    """The canonical name of a source (``"callable"`` for a sampler); errors as :func:`as_source`."""
    return as_source(source).name


def source_std(source, d: int) -> float:
    """Per-coordinate standard deviation of the source (see :meth:`Source.std`)."""
    return as_source(source).std(d)


class SourceSampler:
    """Draw points of a source measure in chunks.

    Parameters
    ----------
    source : str, callable or Source
        A name of the module's table, a sampler ``f(n) -> (n, d)`` or a :class:`Source`.
    dim : int
        Dimension d of the points.
    seed : int
        Seed of this randomisation (scrambling of the Sobol sequence, or of the
        pseudo-random generator when ``qmc=False``); unused by a callable source.
    qmc : bool, default True
        Scrambled Sobol points (low variance) or i.i.d. pseudo-random points; a callable
        source's points are its own.
    dtype, device :
        Of the returned points.

    Examples
    --------
    >>> s = SourceSampler("uniform", 3, seed=0)
    >>> x = s.draw(1024)     # (1024, 3) in [-1, 1]^3
    """

    def __init__(self, source, dim: int, seed: int = 0, *, qmc: bool = True,
                 dtype=torch.float32, device="cpu"):
        self.source = as_source(source)
        self.dim = check_positive_int(dim, "dim")
        self.dtype, self.device = dtype, torch.device(device)
        if isinstance(self.source, CallableSource):
            self.qmc = False
            return
        n_uniform = self.source.n_uniform(self.dim)
        self.qmc = bool(qmc) and n_uniform <= _SOBOL_MAX_DIM
        self._n_uniform = n_uniform
        seed = int(seed) % (2**63 - 1)
        if self.qmc:
            self._engine = torch.quasirandom.SobolEngine(n_uniform, scramble=True, seed=seed)
        else:
            self._gen = torch.Generator().manual_seed(seed)

    def skip(self, m: int) -> None:
        """Advance the stream by ``m`` points without returning them (another rank draws them).

        A callable source draws them and drops them, so that its own stream advances alike.
        """
        if isinstance(self.source, CallableSource):
            self.draw(m)
        elif self.qmc:
            self._engine.fast_forward(m)
        else:
            torch.rand(m, self._n_uniform, generator=self._gen, dtype=self.dtype)

    def draw(self, m: int) -> torch.Tensor:
        """Next ``m`` points, shape (m, d), on ``device``."""
        if isinstance(self.source, CallableSource):
            return self.source.draw(m, self.dim, dtype=self.dtype, device=self.device)
        if self.qmc:
            u = self._engine.draw(m, dtype=torch.float64 if self.dtype == torch.float64 else torch.float32)
        else:
            u = torch.rand(m, self._n_uniform, generator=self._gen, dtype=self.dtype)
        x = self.source.from_unit_cube(u, self.dim)
        return x.to(device=self.device, dtype=self.dtype, non_blocking=True)


def sample_source(source, n: int, dim: int, *, seed: int = 0, qmc: bool = False,
                  dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Draw ``n`` points of the source (a name, a callable or a :class:`Source`) in R^dim: a tensor (n, dim)."""
    n = check_positive_int(n, "n")
    return SourceSampler(source, dim, seed, qmc=qmc, dtype=dtype, device=device).draw(n)
