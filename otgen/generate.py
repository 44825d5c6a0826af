"""Generators behind one interface: semi-discrete OT (plain or extended within modes) and diffusion.

``Generator.sample(n, seed=None) -> (points (n, d), info dict)``; ``seed=None`` uses the
generator's own ``seed``. Points are torch tensors.

The OT generator pushes source points by the Brenier map :math:`\\nabla u_h` [1]_; with the
piecewise-linear extension of AE-OT [2]_ it interpolates the targets of the top-k cells of a
source point, but only inside one mode: at the singular set (mode boundary) it never blends
across, so no generated point mixes two modes (the seeds' "critical states" argument).

References
----------
.. [1] Y. Brenier, "Polar factorization and monotone rearrangement of vector-valued
   functions", Comm. Pure Appl. Math. 44 (1991).
.. [2] D. An, Y. Guo, N. Lei, Z. Luo, S.-T. Yau, X. Gu, "AE-OT: a new generative model based on
   extended semi-discrete optimal transport", ICLR 2020.
.. [3] J. Ho, A. Jain, P. Abbeel, "Denoising diffusion probabilistic models", NeurIPS 2020.
"""

from __future__ import annotations

import numbers

import torch

from otgen._validation import check_choice, check_positive_float, check_positive_int
from otgen.transport.sources import sample_source

__all__ = ["Generator", "OTGenerator", "DiffusionGenerator"]

EXTENSIONS = ("piecewise-linear", "none")
BOUNDARY_RULES = ("best", "resample")
_TEMPERATURE_SAMPLES = 1 << 12


def _check_seed(seed, name="seed"):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"{name} must be >= 0, got {seed}")
    return int(seed)


class Generator:
    """Base class: ``sample(n, seed=None) -> (points (n, d) torch tensor, info dict)``.

    Subclasses implement :meth:`_sample`; ``seed=None`` means the instance's ``seed``.
    """

    seed = 0

    def sample(self, n, seed=None):
        """Draw ``n`` points.

        Parameters
        ----------
        n : int
        seed : int or None
            ``None``: the generator's ``seed``.

        Returns
        -------
        points : torch.Tensor, shape (n, d)
        info : dict
        """
        n = check_positive_int(n, "n")
        seed = _check_seed(self.seed if seed is None else seed)
        return self._sample(n, seed)

    def _sample(self, n, seed):  # pragma: no cover - abstract
        raise NotImplementedError


class OTGenerator(Generator):
    """Semi-discrete OT generator: :math:`x \\sim \\mu \\mapsto \\nabla u_h(x)`, optionally extended within modes.

    ``extension="none"``: exactly the Brenier map, every point is a target
    :math:`y_{i(x)}`, :math:`i(x) = \\arg\\max_i \\langle x, y_i\\rangle + h_i`.

    ``extension="piecewise-linear"`` (AE-OT [2]_): let :math:`i_1, \\dots, i_k` be the top-k cells
    of x with scores :math:`s_1 \\ge \\dots \\ge s_k` (:math:`s_m = \\langle x, y_{i_m}\\rangle + h_{i_m}`).
    When all k cells lie in the same mode (``detector.cell_component_``), the point is

    .. math:: T(x) = \\sum_m w_m\\, y_{i_m}, \\qquad
              w_m = \\frac{e^{-(s_1 - s_m)/\\tau}}{\\sum_l e^{-(s_1 - s_l)/\\tau}},

    a convex combination of targets of that mode. The score gap :math:`s_1 - s_m` equals the
    distance of x to the facet hyperplane of :math:`(i_1, i_m)` times :math:`|y_{i_1} - y_{i_m}|`,
    so the weights are equal on a facet (T is continuous across facets inside a mode) and decay
    to the plain map deep inside a cell. The temperature :math:`\\tau` (``temperature``, default:
    the median top-2 gap :math:`s_1 - s_2` of :math:`2^{12}` seeded source points) sets the
    width of the blending band to a typical cell size.

    At the singular set (the top-k cells span two or more modes) the point is never blended
    across the boundary: ``boundary="best"`` keeps the plain map :math:`y_{i_1}` (the law of the
    samples stays the push-forward of μ, the mode boundary stays sharp); ``boundary="resample"``
    redraws the source point until it is away from the singular set (at most ``max_resample``
    rounds, then "best"), which removes the source mass near the boundary and so slightly
    changes the mode proportions.

    Parameters
    ----------
    ot : SemiDiscreteOT
        Fitted solver.
    detector : SingularSetDetector or None
        Fitted on ``ot``; ``None`` fits ``SingularSetDetector(k=k, seed=seed)`` when needed.
    extension : {"piecewise-linear", "none"}
    k : int, default 3
        Cells blended (k >= 2).
    seed : int, default 0
    temperature : float or None
    boundary : {"best", "resample"}
    max_resample : int, default 20

    Attributes
    ----------
    detector_ : SingularSetDetector or None
        The detector used (set at the first sample with the extension).
    temperature_ : float or None

    Notes
    -----
    ``info`` of :meth:`sample`: ``source`` (n, d) source points, ``cells`` (n,) best cells,
    ``near_singular`` (n,) bool (the top-k cells span several modes), ``blended`` (n,) bool
    (the extension was applied), ``n_resampled`` (int), ``temperature`` (float or None).
    """

    def __init__(self, ot, detector=None, extension="piecewise-linear", k=3, seed=0, *, temperature=None,
                 boundary="best", max_resample=20):
        self.ot = ot
        self.detector = detector
        self.extension = extension
        self.k = k
        self.seed = seed
        self.temperature = temperature
        self.boundary = boundary
        self.max_resample = max_resample

    def _check(self):
        from otgen.singular.detector import SingularSetDetector, _check_ot
        _check_ot(self.ot)
        check_choice(self.extension, "extension", EXTENSIONS)
        check_choice(self.boundary, "boundary", BOUNDARY_RULES)
        check_positive_int(self.k, "k", minimum=2)
        check_positive_int(self.max_resample, "max_resample", minimum=0)
        _check_seed(self.seed)
        if self.temperature is not None:
            check_positive_float(self.temperature, "temperature")
        if self.detector is not None:
            if not isinstance(self.detector, SingularSetDetector):
                raise TypeError(f"detector must be a SingularSetDetector or None, got {type(self.detector).__name__}")
            if not hasattr(self.detector, "cell_component_"):
                raise ValueError("detector is not fitted: call detector.fit(ot) first")
            if self.detector.n_targets_ != self.ot.targets_.shape[0]:
                raise ValueError(f"detector was fitted on {self.detector.n_targets_} targets, but ot has "
                                 f"{self.ot.targets_.shape[0]}")

    def _prepare(self):
        from otgen.singular.detector import SingularSetDetector
        if self.extension == "none":
            self.detector_ = self.detector
            self.temperature_ = None
            return
        if getattr(self, "_prepared_for", None) == (id(self.ot), id(self.detector), self.temperature, self.k):
            return
        self.detector_ = self.detector if self.detector is not None else \
            SingularSetDetector(k=self.k, seed=self.seed).fit(self.ot)
        if self.temperature is not None:
            self.temperature_ = float(self.temperature)
        else:
            X = self._draw(_TEMPERATURE_SAMPLES, self.seed + 7919)
            vals, _ = self.ot.topk(X, 2)
            gap = (vals[:, 0] - vals[:, 1]).double()
            self.temperature_ = max(float(gap.median()), 1e-12)
        self._prepared_for = (id(self.ot), id(self.detector), self.temperature, self.k)

    def _draw(self, n, seed):
        return sample_source(self.ot.source, n, self.ot.targets_.shape[1], seed=seed,
                             dtype=self.ot.targets_.dtype, device=self.ot.targets_.device)

    def _map(self, X):
        """Map source points X (m, d) -> (points, best cells, near_singular, blended)."""
        Y = self.ot.targets_
        if self.extension == "none":
            cells = self.ot.assign(X)
            near = torch.zeros(len(X), dtype=torch.bool, device=Y.device)
            if self.detector is not None:
                near = torch.as_tensor(self.detector.predict(X), device=Y.device)
            return Y[cells], cells, near, torch.zeros_like(near)
        k = min(self.k, Y.shape[0])
        vals, idx = self.ot.topk(X, k)                                   # (m, k) descending
        cells = idx[:, 0]
        same = torch.as_tensor(self.detector_.same_mode(idx), device=Y.device)
        w = torch.softmax((vals - vals[:, :1]).double() / self.temperature_, dim=1)     # (m, k)
        blended = (w[:, :, None] * Y[idx].double()).sum(1).to(Y.dtype)                 # (m, d)
        points = torch.where(same[:, None], blended, Y[cells])
        return points, cells, ~same, same

    def _sample(self, n, seed):
        self._check()
        self._prepare()
        X = self._draw(n, seed)
        points, cells, near, blended = self._map(X)
        n_resampled = 0
        if self.extension != "none" and self.boundary == "resample":
            for r in range(1, self.max_resample + 1):
                bad = torch.nonzero(near).flatten()
                if len(bad) == 0:
                    break
                n_resampled += len(bad)
                Xr = self._draw(len(bad), seed + r * 1_000_003)
                p, c, nr, b = self._map(Xr)
                X[bad], points[bad], cells[bad], near[bad], blended[bad] = Xr, p, c, nr, b
        info = dict(source=X, cells=cells, near_singular=near, blended=blended, n_resampled=int(n_resampled),
                    temperature=self.temperature_)
        return points, info


class DiffusionGenerator(Generator):
    """A fitted :class:`~otgen.diffusion.LatentDiffusion` behind the :class:`Generator` interface [3]_.

    Parameters
    ----------
    model : LatentDiffusion
        Fitted model.
    method : {"ddpm", "ddim"}
    num_inference_steps : int or None
    seed : int, default 0

    Notes
    -----
    ``info`` of :meth:`sample`: ``method`` and ``num_inference_steps``.
    """

    def __init__(self, model, method="ddpm", num_inference_steps=None, seed=0):
        self.model = model
        self.method = method
        self.num_inference_steps = num_inference_steps
        self.seed = seed

    def _sample(self, n, seed):
        if not hasattr(self.model, "sample") or not hasattr(self.model, "fit"):
            raise TypeError(f"model must be a fitted LatentDiffusion, got {type(self.model).__name__}")
        if not hasattr(self.model, "model_"):
            raise ValueError("model is not fitted: call model.fit(Y) first")
        check_choice(self.method, "method", ("ddpm", "ddim"))
        if self.num_inference_steps is not None:
            check_positive_int(self.num_inference_steps, "num_inference_steps")
        points = self.model.sample(n, method=self.method, num_inference_steps=self.num_inference_steps, seed=seed)
        return points, dict(method=self.method, num_inference_steps=self.num_inference_steps)
