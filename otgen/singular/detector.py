"""The singular set of a semi-discrete Brenier potential: where the transport map jumps between modes.

The potential :math:`u_h(x) = \\max_i \\langle x, y_i\\rangle + h_i` is the upper envelope of
the supporting planes :math:`\\pi_i = \\{(x, z) : z = \\langle x, y_i\\rangle + h_i\\}`, with
normals :math:`n_i = (y_i, -1)`. Across the facet :math:`W_i \\cap W_j` between two adjacent
cells the gradient jumps from :math:`y_i` to :math:`y_j`. Inside one mode (a connected branch
of the support of the data) adjacent targets are close and the planes nearly parallel; across
the boundary between two modes the targets are far apart and the dihedral angle

.. math::  \\theta_{ij} = \\arccos \\frac{\\langle n_i, n_j\\rangle}{|n_i|\\,|n_j|}
           = \\arccos \\frac{\\langle y_i, y_j\\rangle + 1}{\\sqrt{(|y_i|^2 + 1)(|y_j|^2 + 1)}}

is large. The facets with a large angle form the (discrete) singular set of
:math:`\\nabla u_h`; in the continuous limit it is the set where :math:`u_h` is not
differentiable, and the map sends each of its points to two points on the boundaries of two
different modes [1]_ [2]_. Removing the singular facets from the dual graph of the power
diagram splits the cells into the modes [3]_.

References
----------
.. [1] L. A. Caffarelli, "The regularity of mappings with a convex potential",
   J. Amer. Math. Soc. 5 (1992).
.. [2] A. Figalli, "Regularity properties of optimal maps between nonconvex domains in the plane",
   Comm. PDE 35 (2010).
.. [3] N. Lei, D. An, Y. Guo, K. Su, S. Liu, Z. Luo, S.-T. Yau, X. Gu, "A geometric understanding of
   deep learning" (AE-OT), Engineering 6 (2020); D. An, Y. Guo, N. Lei, Z. Luo, S.-T. Yau, X. Gu,
   "AE-OT: a new generative model based on extended semi-discrete optimal transport", ICLR 2020.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from otgen._validation import as_tensor, check_positive_float, check_positive_int
from otgen.transport.sources import sample_source

__all__ = ["SingularSetDetector", "normal_angles", "gap_threshold", "ratio_threshold", "dual_graph"]

_DRAW_ROWS = 1 << 16    # source points scored at a time


# ----------------------------------------------------------------------------- building blocks

def _check_pairs(pairs, n: int) -> np.ndarray:
    if isinstance(pairs, torch.Tensor):
        pairs = pairs.detach().cpu().numpy()
    p = np.asarray(pairs)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"pairs must have shape (P, 2), got shape {p.shape}")
    if p.size and not np.issubdtype(p.dtype, np.integer):
        raise TypeError(f"pairs must hold integer cell indices, got dtype {p.dtype}")
    p = p.astype(np.int64)
    if p.size and (p.min() < 0 or p.max() >= n):
        raise ValueError(f"pairs must index the {n} targets (0 .. {n - 1}), got values in [{p.min()}, {p.max()}]")
    return p


def _normalised_targets(Y: np.ndarray) -> np.ndarray:
    """(Y - mean) / RMS distance to the mean (float64): the units in which angles are measured."""
    Yc = Y - Y.mean(0)
    rms = math.sqrt(float((Yc ** 2).sum(1).mean()))
    return Yc / rms if rms > 0 else Yc


def normal_angles(Y, pairs) -> np.ndarray:
    """Angles between the supporting planes of :math:`u_h` on the cells of each pair.

    The targets are first centred and divided by their RMS distance to the mean,
    :math:`\\hat y_i = (y_i - \\bar y) / s` with :math:`s^2 = \\frac1N \\sum_i |y_i - \\bar y|^2`, so
    that the angle does not depend on the units or the origin of the latent space, and then

    .. math:: \\theta_{ij} = \\arccos \\frac{\\langle \\hat y_i, \\hat y_j\\rangle + 1}
              {\\sqrt{(|\\hat y_i|^2 + 1)(|\\hat y_j|^2 + 1)}} \\in [0, \\pi).

    Why the RMS scale: it puts the bulk of the targets at :math:`|\\hat y| \\approx 1`, where
    the angle is neither linear in :math:`|\\hat y_i - \\hat y_j|` (a much larger scale, where the
    normals' angle is just a rescaled distance) nor saturated near :math:`\\pi/2` (a much smaller
    one). The factor :math:`1 + |\\hat y|^2` shrinks the angles of the sparse outer tails of a
    mode, whose neighbours are far apart, relative to pairs that cross the middle between modes;
    on the 2-D test mixtures this separated between-mode from within-mode pairs better than the
    median-neighbour-distance scale.

    Parameters
    ----------
    Y : array_like, shape (N, d)
        Targets.
    pairs : array_like of int, shape (P, 2)
        Cell index pairs.

    Returns
    -------
    angles : ndarray of float64, shape (P,)
        Radians.
    """
    Y = as_tensor(Y, "Y", ndim=2, dtype=torch.float64).cpu().numpy()
    p = _check_pairs(pairs, len(Y))
    Z = _normalised_targets(Y)
    a, b = Z[p[:, 0]], Z[p[:, 1]]
    cos = ((a * b).sum(1) + 1.0) / np.sqrt(((a * a).sum(1) + 1.0) * ((b * b).sum(1) + 1.0))
    return np.arccos(np.clip(cos, -1.0, 1.0))


def gap_threshold(angles, min_ratio=5.0, min_gap=1.5) -> float:
    """Angle threshold at the largest multiplicative gap between neighbour angles, or ``inf``.

    Within a mode, the neighbour angles shrink with the spacing of the targets and vary
    smoothly; between modes they stay of order one. Sort the angles
    :math:`\\theta_{(1)} \\le \\dots \\le \\theta_{(P)}` and take the largest gap of their
    logarithms,

    .. math:: k^* = \\arg\\max_{k :\\ \\theta_{(k+1)} \\ge r\\,\\mathrm{med}(\\theta)}
              \\log\\theta_{(k+1)} - \\log\\theta_{(k)}, \\qquad
              \\tau = \\sqrt{\\theta_{(k^*)}\\,\\theta_{(k^*+1)}},

    among the gaps whose upper end is at least ``min_ratio`` :math:`= r` times the median angle
    (the between-mode pairs are a minority of much larger angles: the tiny angles of the lower tail
    must not decide). The unimodal case is handled explicitly: when no angle reaches
    :math:`r\\,\\mathrm{med}` or the best gap is a ratio below ``min_gap``, there is no singular set
    and the threshold is ``inf``. (A log-scale gap is used rather than Otsu's threshold because
    the between-mode pairs are a few percent of all pairs, where Otsu's criterion splits the bulk.)
    The defaults were set on 2-D mixtures: on unimodal data (Gaussian, uniform square, N = 200–500)
    the largest angle stayed below 4.1 times the median; between well-separated modes the smallest
    angle was above 6.5 times the median.

    Parameters
    ----------
    angles : array_like, shape (P,)
        Positive neighbour angles (radians).
    min_ratio : float, default 5.0
    min_gap : float, default 1.5
        Smallest accepted ratio :math:`\\theta_{(k^*+1)} / \\theta_{(k^*)}`.

    Returns
    -------
    float
        The threshold (radians), or ``math.inf`` when the angles show no gap (one mode).
    """
    a = as_tensor(angles, "angles", ndim=1, dtype=torch.float64, min_rows=0).cpu().numpy()
    min_ratio = check_positive_float(min_ratio, "min_ratio")
    min_gap = check_positive_float(min_gap, "min_gap")
    if bool((a < 0).any()):
        raise ValueError(f"angles must be non-negative, got minimum {a.min():.3g}")
    a = np.sort(a[a > 0])
    if len(a) < 2:
        return math.inf
    med = float(np.median(a))
    gaps = np.log(a[1:]) - np.log(a[:-1])
    allowed = a[1:] >= min_ratio * med
    if not allowed.any():
        return math.inf
    gaps[~allowed] = -np.inf
    k = int(np.argmax(gaps))
    if math.exp(gaps[k]) < min_gap:
        return math.inf
    return float(math.sqrt(a[k] * a[k + 1]))


def ratio_threshold(angles, min_ratio=5.0) -> float:
    """The threshold :math:`\\tau = r\\,\\mathrm{med}(\\theta)`, ``r = min_ratio``.

    For a connected non-convex support (the crescent of the seeds' Fig. 4) the singular set is a
    curve along which the jump :math:`|y_i - y_j|` grows continuously from zero at its end point, so
    the angles show no gap; this rule flags the facets whose angle is far above the typical
    neighbour angle (on unimodal convex data the largest angle stayed below 4.1 times the median).

    Parameters
    ----------
    angles : array_like, shape (P,)
    min_ratio : float, default 5.0

    Returns
    -------
    float
    """
    a = as_tensor(angles, "angles", ndim=1, dtype=torch.float64, min_rows=1).cpu().numpy()
    min_ratio = check_positive_float(min_ratio, "min_ratio")
    if bool((a < 0).any()):
        raise ValueError(f"angles must be non-negative, got minimum {a.min():.3g}")
    return float(min_ratio * np.median(a))


def dual_graph(ot, n_samples=2**16, seed=0):
    """Adjacent cells of a fitted :class:`~otgen.transport.SemiDiscreteOT`, from the top-2 cells of source points.

    If the best and second-best cells of a source point x are i and j, the facet
    :math:`W_i \\cap W_j` has positive (d-1)-volume whenever :math:`W_j` has an interior: on the
    segment from x to an interior point of :math:`W_j` every other score stays below that of j,
    and the score of i falls to that of j somewhere on it. So every sampled pair is a true
    neighbour pair; facets of tiny area may be missed. The count of a pair is proportional to
    the source mass of its order-2 region, a proxy for the facet's area.

    Parameters
    ----------
    ot : SemiDiscreteOT
        Fitted solver.
    n_samples : int, default 65536
        Source points drawn (``ot.source``, pseudo-random, seeded).
    seed : int, default 0

    Returns
    -------
    pairs : ndarray of int64, shape (P, 2)
        ``i < j``, sorted lexicographically.
    counts : ndarray of int64, shape (P,)
    """
    _check_ot(ot)
    n_samples = check_positive_int(n_samples, "n_samples")
    _check_seed(seed)
    N, d = ot.targets_.shape
    if N < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    codes = []
    done = 0
    while done < n_samples:
        m = min(_DRAW_ROWS, n_samples - done)
        X = sample_source(ot.source, m, d, seed=seed + done, dtype=ot.targets_.dtype,
                          device=ot.targets_.device)
        _, idx = ot.topk(X, 2)
        idx = torch.sort(idx, dim=1).values.cpu().numpy().astype(np.int64)
        codes.append(idx[:, 0] * N + idx[:, 1])
        done += m
    u, counts = np.unique(np.concatenate(codes), return_counts=True)
    return np.stack([u // N, u % N], axis=1), counts.astype(np.int64)


def _check_ot(ot):
    if not hasattr(ot, "topk") or not hasattr(ot, "fit"):
        raise TypeError(f"ot must be a fitted SemiDiscreteOT, got {type(ot).__name__}")
    if not hasattr(ot, "heights_"):
        raise ValueError("ot must be a fitted SemiDiscreteOT, got one that is not fitted: call ot.fit(Y) first")


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)


# ----------------------------------------------------------------------------- estimator

class SingularSetDetector:
    """Find the mode boundaries (singular set) of a fitted semi-discrete OT map.

    1. Dual graph: the adjacent cell pairs, from the top-2 cells of ``n_samples`` source
       points (:func:`dual_graph`).
    2. For each pair, the angle :math:`\\theta_{ij}` between the normals :math:`(\\hat y_i, -1)`
       and :math:`(\\hat y_j, -1)` of the supporting planes of :math:`u_h`, on centred targets
       divided by their RMS spread (:func:`normal_angles`).
    3. Threshold: ``angle_threshold`` if given, else the largest log-gap of the angles
       (:func:`gap_threshold`; ``inf`` for unimodal data, so no boundary is invented).
    4. Singular pairs :math:`\\theta_{ij} > \\tau`; the connected components of the dual graph
       without them are the modes.

    :meth:`same_mode` (used by the piecewise-linear extension of
    :class:`~otgen.generate.OTGenerator` to decide whether it may blend the top-k targets of a
    point) compares the modes of the cells (``mode_rule="component"``), or, with
    ``mode_rule="facet"``, only asks that no two of the cells be separated by a singular facet,
    :math:`\\theta_{ij} \\le \\tau` for every pair. The facet rule is the local rule of AE-OT [3]_
    (the extension is dropped on the simplices that touch a singular facet); it matters when the
    modes touch along non-singular facets too, so that cutting the singular ones leaves a single
    connected component (the 8-d MNIST latent: a third of the adjacent cells carry different digits).

    A source point x is near the singular set when two of its top-k cells are adjacent across
    a singular facet: :meth:`score` is the largest angle over the adjacent pairs among its
    top-k cells, :meth:`predict` compares it with the threshold.

    Parameters
    ----------
    angle_threshold : float, "gap", "ratio", "quantile" or None, default None
        Radians in (0, π], or a rule that chooses it from the data: ``None`` / ``"gap"`` the
        largest log-gap (:func:`gap_threshold`, for separated modes); ``"ratio"`` the fixed
        multiple ``min_ratio`` of the median angle (:func:`ratio_threshold`, for a connected but
        non-convex support, whose singular set has jumps that grow continuously from zero at its
        end points and therefore no gap); ``"quantile"`` the ``quantile``-quantile of the
        neighbour angles (a fraction ``1 - quantile`` of the adjacent pairs is singular: a
        hyper-parameter for latents whose angles show no gap).
    k : int, default 3
        Cells considered per source point by :meth:`score` (k >= 2).
    n_samples : int, default 65536
        Source points used to estimate the dual graph.
    seed : int, default 0
    min_ratio, min_gap : float
        Settings of :func:`gap_threshold` (used when ``angle_threshold`` is None).
    quantile : float in (0, 1), default 0.9
        Used when ``angle_threshold="quantile"``.
    mode_rule : {"component", "facet"}, default "component"
        What :meth:`same_mode` compares (see above).

    Attributes
    ----------
    pairs_ : ndarray of int64, shape (P, 2)
        Adjacent cells, ``i < j``.
    counts_ : ndarray of int64, shape (P,)
        Source samples whose top-2 cells are the pair (facet-area proxy).
    angles_ : ndarray of float64, shape (P,)
    threshold_ : float
        ``inf`` when no singular set was found.
    singular_ : ndarray of bool, shape (P,)
    singular_pairs_ : ndarray of int64, shape (S, 2)
    cell_component_ : ndarray of int64, shape (N,)
        Mode of every cell (components labelled 0, 1, ... in order of their first cell).
    n_components_ : int

    Examples
    --------
    >>> from otgen.data import two_blobs
    >>> from otgen.transport import SemiDiscreteOT
    >>> Y, labels = two_blobs(200)
    >>> ot = SemiDiscreteOT(tol=0.05, verbose=False).fit(Y)
    >>> det = SingularSetDetector().fit(ot)
    >>> det.n_components_
    2
    """

    def __init__(self, angle_threshold=None, k=3, n_samples=2**16, seed=0, *, min_ratio=5.0, min_gap=1.5,
                 quantile=0.9, mode_rule="component"):
        self.angle_threshold = angle_threshold
        self.k = k
        self.n_samples = n_samples
        self.seed = seed
        self.min_ratio = min_ratio
        self.min_gap = min_gap
        self.quantile = quantile
        self.mode_rule = mode_rule

    def _check_settings(self):
        if self.angle_threshold is not None and not (isinstance(self.angle_threshold, str) and
                                                      self.angle_threshold in ("gap", "ratio", "quantile")):
            if isinstance(self.angle_threshold, str):
                raise ValueError(f"angle_threshold must be a number, 'gap', 'ratio', 'quantile' or None, "
                                 f"got {self.angle_threshold!r}")
            t = check_positive_float(self.angle_threshold, "angle_threshold")
            if t > math.pi:
                raise ValueError(f"angle_threshold must be in (0, pi] radians, got {self.angle_threshold!r}")
        check_positive_int(self.k, "k", minimum=2)
        check_positive_int(self.n_samples, "n_samples")
        _check_seed(self.seed)
        check_positive_float(self.min_ratio, "min_ratio")
        check_positive_float(self.min_gap, "min_gap")
        q = self.quantile
        if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0 < q < 1:
            raise ValueError(f"quantile must be a number in (0, 1), got {q!r}")
        if self.mode_rule not in ("component", "facet"):
            raise ValueError(f"mode_rule must be 'component' or 'facet', got {self.mode_rule!r}")

    def fit(self, ot) -> "SingularSetDetector":
        """Estimate the dual graph, the angles, the threshold and the modes of ``ot``.

        Parameters
        ----------
        ot : SemiDiscreteOT
            Fitted solver.

        Returns
        -------
        self
        """
        self._check_settings()
        _check_ot(ot)
        self.pairs_, self.counts_ = dual_graph(ot, self.n_samples, self.seed)
        self._set_graph(ot.targets_, self.pairs_)
        self.ot_ = ot
        return self

    def _set_graph(self, Y, pairs):
        Y64 = as_tensor(Y, "Y", ndim=2, dtype=torch.float64).cpu().numpy()
        N = len(Y64)
        self.n_targets_ = N
        self.angles_ = normal_angles(Y64, pairs)
        if self.angle_threshold is None or self.angle_threshold == "gap":
            self.threshold_ = gap_threshold(self.angles_, self.min_ratio, self.min_gap)
        elif self.angle_threshold == "ratio":
            self.threshold_ = ratio_threshold(self.angles_, self.min_ratio)
        elif self.angle_threshold == "quantile":
            self.threshold_ = float(np.quantile(self.angles_, self.quantile)) if len(self.angles_) else math.inf
        else:
            self.threshold_ = float(self.angle_threshold)
        self.singular_ = self.angles_ > self.threshold_
        self.singular_pairs_ = pairs[self.singular_]
        keep = pairs[~self.singular_]
        adj = sp.coo_matrix((np.ones(len(keep)), (keep[:, 0], keep[:, 1])), shape=(N, N))
        self.n_components_, comp = connected_components(adj, directed=False)
        _, first = np.unique(comp, return_index=True)            # relabel in order of first cell
        order = np.argsort(np.argsort(first))
        self.cell_component_ = order[comp].astype(np.int64)
        self._codes = pairs[:, 0] * N + pairs[:, 1]                 # sorted (pairs are lexicographic)
        self._Z = _normalised_targets(Y64)

    def _check_fitted(self):
        if not hasattr(self, "threshold_"):
            raise RuntimeError("this SingularSetDetector is not fitted yet: call fit(ot) first")

    def _pair_angles(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        Z = self._Z
        za, zb = Z[a], Z[b]
        cos = ((za * zb).sum(-1) + 1.0) / np.sqrt(((za * za).sum(-1) + 1.0) * ((zb * zb).sum(-1) + 1.0))
        return np.arccos(np.clip(cos, -1.0, 1.0))

    def score_cells(self, idx) -> np.ndarray:
        """Largest neighbour angle among given top-k cell indices (M, k) -> (M,) float64.

        Pairs among the k cells count when they are in the dual graph ``pairs_``; the best and
        second-best cells (columns 0 and 1) are always adjacent (see :func:`dual_graph`). Rows
        with no adjacent pair score 0.
        """
        self._check_fitted()
        if isinstance(idx, torch.Tensor):
            idx = idx.detach().cpu().numpy()
        idx = np.asarray(idx)
        if idx.ndim != 2 or idx.shape[1] < 2:
            raise ValueError(f"idx must have shape (M, k) with k >= 2, got shape {idx.shape}")
        idx = idx.astype(np.int64)
        M, k = idx.shape
        best = np.zeros(M)
        for a in range(k):
            for b in range(a + 1, k):
                i, j = np.minimum(idx[:, a], idx[:, b]), np.maximum(idx[:, a], idx[:, b])
                ang = self._pair_angles(i, j)
                if (a, b) != (0, 1):
                    code = i * self.n_targets_ + j
                    pos = np.clip(np.searchsorted(self._codes, code), 0, max(len(self._codes) - 1, 0))
                    adjacent = (self._codes[pos] == code) if len(self._codes) else np.zeros(M, bool)
                    ang = np.where(adjacent & (i != j), ang, 0.0)
                best = np.maximum(best, ang)
        return best

    def _topk(self, X):
        self._check_fitted()
        k = min(check_positive_int(self.k, "k", minimum=2), self.n_targets_)
        _, idx = self.ot_.topk(X, k)
        return idx

    def score(self, X) -> np.ndarray:
        """Each source point's largest neighbour angle among its top-k cells.

        Parameters
        ----------
        X : array_like, shape (M, d)
            Source points.

        Returns
        -------
        ndarray of float64, shape (M,)
            Radians; 0 where none of the top-k cells are adjacent.
        """
        return self.score_cells(self._topk(X))

    def predict(self, X) -> np.ndarray:
        """True where a source point is on or near the singular set: ``score(X) > threshold_``.

        Parameters
        ----------
        X : array_like, shape (M, d)

        Returns
        -------
        ndarray of bool, shape (M,)
        """
        return self.score(X) > self.threshold_

    def same_mode(self, idx) -> np.ndarray:
        """True for rows of cell indices that lie in one mode.

        ``mode_rule="component"``: all cells of the row are in the same component
        (``cell_component_``). ``mode_rule="facet"``: no two cells of the row are separated by a
        singular facet, :math:`\\theta_{ij} \\le` ``threshold_`` for every pair (adjacent or not).

        Parameters
        ----------
        idx : array_like of int, shape (M, k)

        Returns
        -------
        ndarray of bool, shape (M,)
        """
        self._check_fitted()
        if isinstance(idx, torch.Tensor):
            idx = idx.detach().cpu().numpy()
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 2:
            raise ValueError(f"idx must have shape (M, k), got shape {idx.shape}")
        if getattr(self, "mode_rule", "component") == "facet":
            ok = np.ones(len(idx), dtype=bool)
            for a in range(idx.shape[1]):
                for b in range(a + 1, idx.shape[1]):
                    ok &= self._pair_angles(idx[:, a], idx[:, b]) <= self.threshold_
            return ok
        c = self.cell_component_[idx]
        return (c == c[:, :1]).all(1)
