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

import copy
import math
import numbers

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from otgen._base import BaseEstimator, NotFittedError, check_seed, spawn_seed
from otgen._validation import as_tensor, check_positive_float, check_positive_int
from otgen.transport.sources import sample_source

__all__ = ["SingularSetDetector", "normal_angles", "gap_threshold", "ratio_threshold", "persistence_threshold",
           "mode_threshold", "intrinsic_dimension", "dual_graph", "THRESHOLD_RULES"]

THRESHOLD_RULES = ("gap", "ratio", "quantile", "persistence", "modes")

_DRAW_ROWS = 1 << 16         # source points scored at a time (memory of one top-2 batch)
_WIDTH_SAMPLES = 4096        # source points of the cell width: the median of 4096 draws is within ~2% of its limit
_ENTRY_BUDGET = 1 << 22      # (points x facets x d) float64 entries held at once by facet_distances (32 MiB)
_SCAN_ENTRIES = 1 << 22      # (points x cells) float64 entries of a nearest-facet scan (a few arrays of 32 MiB)
_TINY = 1e-300               # floor of |y_b - y_j|^2 (equal targets: their facet is at distance 0 or inf)
_SUPPORT_TOL = 1e-9          # a facet's foot on the source's boundary counts as inside it (round-off)
_MIN_PERSISTENCE = 2.0       # "persistence" rule: least ratio tau_{k+1} / tau_k (calibration in persistence_threshold)
_MODE_MIN_MASS = 0.01        # "modes" rule: least mass of a mode (issue 13: components of at least 1% of the mass)
_MODE_MIN_CELLS = 20         # "modes" rule: least cells of a mode (smaller parts of one mode persist longer)
_MODE_NOISE = 2.5            # "modes" rule: least d * log(persistence) of a mode (calibration in mode_threshold)
_TWONN_POINTS = 4096         # points of the intrinsic-dimension estimate: standard error ~ d / 64
_TWONN_CHUNK = 1024          # of them compared with all targets at a time
_SAME_MAP_RTOL = 1e-6        # an attached map must have the fitted targets and heights (float32 copies are exact)
_SAME_MAP_ATOL = 1e-9


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


def _plane_angles(Z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles between the normals (Z[a], -1) and (Z[b], -1); ``a``, ``b`` int arrays of one shape."""
    za, zb = Z[a], Z[b]
    cos = ((za * zb).sum(-1) + 1.0) / np.sqrt(((za * za).sum(-1) + 1.0) * ((zb * zb).sum(-1) + 1.0))
    return np.arccos(np.clip(cos, -1.0, 1.0))


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
    return _plane_angles(Z, p[:, 0], p[:, 1])


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


def check_min_size(min_size, name: str = "min_size") -> float:
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Real) or not 0 < min_size < 0.5:
        raise ValueError(f"{name} must be a fraction in (0, 0.5), got {min_size!r}")
    return float(min_size)


def cell_weights(n: int, weights) -> np.ndarray:
    """Mass of each of the ``n`` cells, float64 summing to 1 (``None``: uniform)."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = as_tensor(weights, "weights", ndim=1, dtype=torch.float64).cpu().numpy()
    if len(w) != n or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {n} non-negative numbers (one per target) with a positive sum, "
                         f"got shape {w.shape}")
    return w / w.sum()


def persistence_threshold(detector, min_size: float = 0.05, weights=None,
                          min_persistence: float = _MIN_PERSISTENCE) -> float:
    r"""The angle threshold at which the major modes of the dual graph persist longest.

    Single-linkage persistence on the dual graph of the power diagram, edges weighted by their
    normal angle :math:`\theta_{ij}`: keeping the pairs with :math:`\theta \le \tau` splits the
    cells into components; call a component *major* when it holds at least ``min_size`` of the mass.
    As :math:`\tau` grows (Kruskal's order) the number :math:`c(\tau)` of major components is a step
    function: components are born (a merge of minor ones reaches ``min_size``) and die (two major ones
    merge). Among the intervals :math:`[\tau_k, \tau_{k+1})` on which :math:`c \ge 2` is constant, the
    longest on a log scale (:math:`\tau_{k+1} / \tau_k` largest) is the most persistent mode
    structure, and the threshold is its geometric middle :math:`\sqrt{\tau_k \tau_{k+1}}`, provided
    it persists, :math:`\tau_{k+1} / \tau_k \ge` ``min_persistence``; otherwise ``inf``.

    Why: the detector's gap rule (:func:`~otgen.singular.gap_threshold`) looks for a gap in the
    *sorted angles* above five times their median, which separates modes in low dimension. In a
    16-d latent, adjacent cells of one mode are far apart too (many cells touch many others), so the
    within-mode angles spread up to 2-3 times the median and the between-mode ones start just above:
    no gap in the list, but a clear gap in the *connectivity*, which this rule measures. ``inf``
    when there is never more than one major component, or not for long (one mode: no singular set
    is invented). Calibration (``min_size=0.05``, targets fitted with ``tol=0.05``): the longest
    ratio :math:`\tau_{k+1} / \tau_k` was 1.41, 1.21, 1.10, 1.03, 1.00 and 1.02 on unimodal data
    (uniform square N = 150 and 500, 2-D Gaussian N = 300, Gaussians in 8-d N = 1000 and 16-d
    N = 2000, uniform 16-d cube N = 1000), and 14.9 on two 2-D blobs, 2.6 on two 16-d blobs 12
    standard deviations apart, 3.1 on the bistable-ball clip codes (16-d); two 16-d blobs 6
    standard deviations apart (overlapping neighbourhoods) gave 1.17 and count as one mode.

    ``SingularSetDetector(angle_threshold="persistence")`` applies this rule inside its fit (with
    ``weights = ot.weights_``), from the same dual graph and angles.

    Parameters
    ----------
    detector : SingularSetDetector
        Fitted (any threshold: only ``pairs_`` and ``angles_`` are used).
    min_size : float in (0, 0.5), default 0.05
        Least mass of a major component.
    weights : array_like of shape (N,), optional
        Mass of each cell (e.g. ``ot.weights_``); default uniform.
    min_persistence : float > 1, default 2.0
        Least ratio between the ends of the chosen interval.

    Returns
    -------
    float
        Radians, or ``math.inf``.
    """
    if not isinstance(detector, SingularSetDetector) or not hasattr(detector, "angles_"):
        raise TypeError(f"detector must be a fitted SingularSetDetector, got {type(detector).__name__}")
    masses = cell_weights(detector.n_targets_, weights)
    return _persistence_tau(detector.pairs_, detector.angles_, masses, check_min_size(min_size), min_persistence)


def _find(parent: np.ndarray, i: int) -> int:
    """Union-find root of ``i`` in the forest ``parent`` (N,), compressing the path on the way."""
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        parent[i], i = root, parent[i]
    return root


def _major_counts(pairs: np.ndarray, angles: np.ndarray, masses: np.ndarray, min_size: float) -> list:
    """Kruskal's order on the dual graph: [(tau, number of major components from tau on), ...]."""
    parent = np.arange(len(masses))
    mass = masses.copy()

    count = int((mass >= min_size).sum())
    events = [(0.0, count)]
    for e in np.argsort(angles, kind="stable"):
        a, b = _find(parent, pairs[e, 0]), _find(parent, pairs[e, 1])
        if a == b:
            continue
        before = int(mass[a] >= min_size) + int(mass[b] >= min_size)
        parent[b] = a
        mass[a] += mass[b]
        new = count - before + int(mass[a] >= min_size)
        if new != count:
            count = new
            events.append((float(angles[e]), count))
    return events


def _persistence_tau(pairs, angles, masses, min_size: float, min_persistence: float) -> float:
    """:func:`persistence_threshold` on arrays: pairs (P, 2), angles (P,), cell masses (N,) summing to 1."""
    if isinstance(min_persistence, bool) or not isinstance(min_persistence, numbers.Real) or not min_persistence > 1:
        raise ValueError(f"min_persistence must be a number > 1, got {min_persistence!r}")
    events = _major_counts(pairs, angles, masses, min_size)
    best, best_len = math.inf, 0.0
    top = float(angles.max()) if len(angles) else 0.0
    for (t0, c), nxt in zip(events, events[1:] + [(math.inf, 1)]):
        t1 = nxt[0]
        if c < 2 or t0 <= 0:
            continue
        hi = t1 if math.isfinite(t1) else max(top, t0) * 2.0       # never merged: any larger threshold works
        length = math.log(hi / t0)
        if length > best_len:
            best, best_len = math.sqrt(t0 * hi), length
    return best if best_len >= math.log(min_persistence) else math.inf


def intrinsic_dimension(Y, n_points: int = _TWONN_POINTS) -> float:
    """TwoNN estimate of the intrinsic dimension of the points ``Y``.

    For a point with nearest-neighbour distances :math:`r_1 \\le r_2`, the ratio
    :math:`\\mu = r_2 / r_1` follows the Pareto law :math:`P(\\mu > m) = m^{-d}` when the density is
    locally constant on the scale of :math:`r_2` in a d-dimensional manifold [1]_, whatever the density
    and the ambient dimension; the maximum-likelihood estimate over n points is

    .. math:: \\hat d = \\frac{n}{\\sum_i \\log \\mu_i}.

    Points with :math:`r_1 = 0` (duplicates) are left out.

    Parameters
    ----------
    Y : array_like, shape (N, D)
        Points (N >= 3).
    n_points : int, default 4096
        Points whose ratio enters the estimate (evenly strided through ``Y``; their neighbours are
        searched among all N points); the standard error is about :math:`\\hat d / \\sqrt{n}`.

    Returns
    -------
    float
        :math:`\\hat d` (``inf`` when no ratio exceeds 1).

    References
    ----------
    .. [1] E. Facco, M. d'Errico, A. Rodriguez, A. Laio, "Estimating the intrinsic dimension of datasets
       by a minimal neighborhood information", Scientific Reports 7, 12140 (2017).
    """
    Yt = as_tensor(Y, "Y", ndim=2, dtype=torch.float64, device="cpu", min_rows=3)
    n_points = check_positive_int(n_points, "n_points")
    rows = np.unique(np.linspace(0, len(Yt) - 1, min(n_points, len(Yt))).round().astype(np.int64))
    ratios = []
    for start in range(0, len(rows), _TWONN_CHUNK):
        r = torch.as_tensor(rows[start:start + _TWONN_CHUNK])
        D = torch.cdist(Yt[r], Yt)
        D[torch.arange(len(r)), r] = math.inf                          # not its own neighbour
        near = torch.topk(D, 2, dim=1, largest=False).values.numpy()
        ok = near[:, 0] > 0
        ratios.append(near[ok, 1] / near[ok, 0])
    logs = np.log(np.concatenate(ratios))
    return float(len(logs) / logs.sum()) if logs.sum() > 0 else math.inf


def _mode_bars(pairs, angles, masses, min_mass: float, min_cells: int) -> list:
    """Single-linkage persistence of the modes on the dual graph: [(birth, death), ...] (death inf for
    the modes never merged into an older one); see :func:`mode_threshold`."""
    parent = np.arange(len(masses))
    mass, cells = masses.astype(np.float64).copy(), np.ones(len(masses), np.int64)
    birth = np.where((mass >= min_mass) & (cells >= min_cells), 0.0, np.nan)

    def major(r):
        return mass[r] >= min_mass and cells[r] >= min_cells

    bars = []
    for e in np.argsort(angles, kind="stable"):
        a, b = _find(parent, pairs[e, 0]), _find(parent, pairs[e, 1])
        if a == b:
            continue
        t, ma, mb = float(angles[e]), major(a), major(b)
        if ma and mb and (birth[b], b) < (birth[a], a):
            a, b = b, a                                                       # a: the elder
        parent[b] = a
        mass[a] += mass[b]
        cells[a] += cells[b]
        if ma and mb:
            bars.append((float(birth[b]), t))                                 # the younger mode dies
        elif mb:
            birth[a] = birth[b]
        elif not ma and major(a):
            birth[a] = t                                                      # two minor parts make a mode
    roots = {_find(parent, i) for i in range(len(masses))}
    return bars + [(float(birth[r]), math.inf) for r in roots if major(r)]


def _modes_tau(pairs, angles, masses, Z, min_mass: float, min_cells: int, noise: float) -> float:
    """:func:`mode_threshold` on arrays: pairs (P, 2), angles (P,), cell masses (N,), targets Z (N, d)."""
    bars = _mode_bars(pairs, angles, masses, min_mass, min_cells)
    if len(bars) < 2:
        return math.inf
    low = float(angles[angles > 0].min())
    bars = [(max(b, low), d) for b, d in bars]
    least = math.exp(noise / intrinsic_dimension(Z))
    modes = [bar for bar in bars if bar[1] >= least * bar[0]]
    while True:                                  # one threshold must keep every mode born and alive
        finite = [bar for bar in modes if math.isfinite(bar[1])]
        if not finite:
            return math.inf
        born, dies = max(b for b, _ in modes), min(d for _, d in finite)
        if born < dies:
            break
        modes.remove(min(finite, key=lambda bar: bar[1] / bar[0]))
    return _below_merge(born, dies, [bar for bar in bars if bar not in modes], angles)


def _below_merge(born: float, dies: float, others: list, angles: np.ndarray) -> float:
    """The threshold just below the top t1 of the highest part [t0, t1) of [born, dies) in which none of
    the ``others`` bars (birth, death) is alive: the geometric middle of t1 and the largest angle
    below it (at least t0), so that every edge below t1 is kept (the parts of the modes too small to
    be modes join them) and none above."""
    cuts = sorted({born, dies} | {t for bar in others for t in bar if born < t < dies})
    quiet = [(t0, t1) for t0, t1 in zip(cuts, cuts[1:])
             if not any(b <= math.sqrt(t0 * t1) < d for b, d in others)]
    t0, t1 = quiet[-1] if quiet else (born, dies)
    below = np.sort(angles)[:np.searchsorted(np.sort(angles), t1, side="left")]
    return math.sqrt(max(t0, float(below[-1]) if len(below) else t0) * t1)


def mode_threshold(detector, weights=None, *, min_mass: float = _MODE_MIN_MASS, min_cells: int = _MODE_MIN_CELLS,
                   noise: float = _MODE_NOISE) -> float:
    r"""The angle threshold that separates the persistent modes of the dual graph, their number unknown.

    Single-linkage persistence on the dual graph of the power diagram, edges weighted by their
    normal angle :math:`\theta_{ij}` (Kruskal's order), with the elder rule of 0-dimensional
    persistent homology [1]_ [2]_: a component of the graph :math:`\{\theta \le \tau\}` is a *mode* once it
    holds at least ``min_mass`` of the mass and ``min_cells`` cells; it is born at the :math:`\tau`
    where it becomes one, and dies at the :math:`\tau` where it merges with an older mode. Its
    persistence is the ratio :math:`p = \tau_\text{death} / \tau_\text{birth}` (angles scale with the
    spacing of the targets, so a ratio, not a difference). A mode counts when

    .. math:: \log p \ge c / \hat d,

    :math:`\hat d` the intrinsic dimension of the targets (:func:`intrinsic_dimension`) and
    :math:`c` = ``noise``. The threshold lies just below the first death among the counted modes
    (between that merge's angle and the largest angle under it), or below the start of the last
    stretch of :math:`[\max \tau_\text{birth}, \min \tau_\text{death})` in which a mode that does not
    count is alive: the partition the instant before two counted modes merge, when the parts of the
    modes too small to count have joined them; ``inf`` when only the eldest mode counts (one mode:
    no boundary is invented).

    Why: the number of modes is not given, and their separations differ (two digits touch, a third
    is far): the "persistence" rule (:func:`persistence_threshold`) keeps the longest interval over
    which the *number* of large components is constant, which on mixtures of ten Gaussians often
    falls after the nearest modes merged; here each mode has its own persistence. Why the
    dimension: the persistence of the spurious components of one mode comes from the spread of the
    neighbour angles, which concentrates as the intrinsic dimension grows (distances between
    neighbours concentrate). Calibration (dual graph of the detector's default 65536 samples, targets
    fitted with ``tol=0.05``; :math:`\hat d \log p` of the most persistent spurious component): at
    most 2.2 on one-mode data — Gaussian, uniform square, 10:1 anisotropic Gaussian, Student-t,
    ring, crescent, N = 150–1500 in 2-D; Gaussian, uniform, anisotropic, Student-t in 8-d and
    16-d, N = 1000–2000; 2-d and 4-d Gaussians embedded in 8-d and 16-d with 5% noise — hence
    :math:`c = 2.5`; at least 3.1 for every mode of well-separated mixtures of 4, 10 or 20
    Gaussians (:func:`~otgen.data.gaussian_mixture`, equal or unequal weights) in 2-, 8- and 16-d.
    Modes whose separation is close to their spread (the mixtures' spreads multiplied by 1.8–2.2)
    reach 0.7–6.4: in 2-D some of them merge.

    Parameters
    ----------
    detector : SingularSetDetector
        Fitted (any threshold: only ``pairs_``, ``angles_`` and the targets are used).
    weights : array_like of shape (N,), optional
        Mass of each cell (e.g. ``ot.weights_``); default uniform.
    min_mass : float in (0, 0.5), default 0.01
        Least mass of a mode.
    min_cells : int, default 20
        Least number of cells of a mode (a handful of cells is not a resolved mode: the persistence
        of such components in one-mode data is larger).
    noise : float > 0, default 2.5
        :math:`c` above.

    Returns
    -------
    float
        Radians, or ``math.inf``.

    References
    ----------
    .. [1] H. Edelsbrunner, D. Letscher, A. Zomorodian, "Topological persistence and simplification",
       Discrete Comput. Geom. 28 (2002).
    .. [2] F. Chazal, L. J. Guibas, S. Y. Oudot, P. Skraba, "Persistence-based clustering in Riemannian
       manifolds" (ToMATo), J. ACM 60 (2013).
    """
    if not isinstance(detector, SingularSetDetector) or not hasattr(detector, "angles_"):
        raise TypeError(f"detector must be a fitted SingularSetDetector, got {type(detector).__name__}")
    masses = cell_weights(detector.n_targets_, weights)
    return _modes_tau(detector.pairs_, detector.angles_, masses, detector._Z, check_min_size(min_mass, "min_mass"),
                      check_positive_int(min_cells, "min_cells"), check_positive_float(noise, "noise"))


def dual_graph(ot, n_samples=2**16, seed=0):
    """Adjacent cells of a fitted :class:`~otgen.transport.SemiDiscreteOT`, from the top-2 cells and the
    nearest facets of source points.

    Two pairs are read off each source point x in the cell :math:`W_b`:

    * its top-2 cells (b, j) by score: the facet :math:`W_b \\cap W_j` has positive
      (d-1)-volume whenever :math:`W_j` has an interior (on the segment from x to an interior point
      of :math:`W_j` every other score stays below that of j, and the score of b falls to that of j
      somewhere on it);
    * the cell :math:`j^*` across the facet of :math:`W_b` nearest to x in source distance,
      :math:`j^* = \\arg\\min_j \\delta_{bj}(x)` over all cells, with
      :math:`\\delta_{bj}(x) = (\\langle x, y_b - y_j\\rangle + h_b - h_j) / |y_b - y_j|` the distance to
      the hyperplane of the pair: the cell is the intersection of these half-spaces, so the ball of
      radius :math:`\\min_j \\delta_{bj}` about x lies in :math:`W_b` and touches its boundary at the
      foot p of the perpendicular on the minimising hyperplane, a point of the facet
      :math:`W_b \\cap W_{j^*}`. The pair is kept when p lies in the support of the source (a facet
      outside it is not part of the map; :meth:`~otgen.transport.sources.Source.contains` of
      ``ot.source_``). The Gaussian's support is :math:`\\mathbb R^d`, and a callable source's is
      unknown and taken as :math:`\\mathbb R^d` too: every facet its points see is kept.

    So every sampled pair is a true neighbour pair; facets of tiny area may be missed. The top-2
    pairs alone favour facets between close targets: the order-2 region of (b, j) is the set where
    the score gap :math:`|y_b - y_j|\\,\\delta_{bj}` to j is the smallest, so a facet between
    far-apart targets (a mode boundary) is seen only on a sliver next to it, and facets a cell wide
    were missed; the nearest facets are sampled in proportion to their area, whatever the targets.
    The count of a pair is the number of points whose top-2 cells it is (the source mass of its
    order-2 region, a proxy for the facet's area among close targets); pairs seen only as nearest
    facets count 0.

    Parameters
    ----------
    ot : SemiDiscreteOT
        Fitted solver.
    n_samples : int, default 65536
        Source points drawn (``ot.source_``, pseudo-random; a callable source's own points), in batches of 65536; batch ``b`` uses
        the stream ``spawn_seed(seed, "dual-graph", b)``.
    seed : int, default 0

    Returns
    -------
    pairs : ndarray of int64, shape (P, 2)
        ``i < j``, sorted lexicographically.
    counts : ndarray of int64, shape (P,)
        Top-2 counts; they sum to ``n_samples``.
    """
    check_fitted_ot(ot)
    n_samples = check_positive_int(n_samples, "n_samples")
    seed = check_seed(seed)
    N, d = ot.targets_.shape
    if N < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    top2, nearest = [], []
    for b, start in enumerate(range(0, n_samples, _DRAW_ROWS)):
        m = min(_DRAW_ROWS, n_samples - start)
        X = sample_source(ot.source_, m, d, seed=spawn_seed(seed, "dual-graph", b), dtype=ot.targets_.dtype,
                          device=ot.targets_.device)
        cell, second, other, _, inside = _nearest_facets(ot, X)
        top2.append(np.minimum(cell, second) * N + np.maximum(cell, second))
        keep = inside & (other >= 0)
        lo, hi = np.minimum(cell, other)[keep], np.maximum(cell, other)[keep]
        nearest.append(lo * N + hi)
    u, counts = np.unique(np.concatenate(top2), return_counts=True)
    codes = np.union1d(u, np.concatenate(nearest))
    full = np.zeros(len(codes), np.int64)
    full[np.searchsorted(codes, u)] = counts
    return np.stack([codes // N, codes % N], axis=1), full


def _nearest_facets(ot, X: torch.Tensor) -> tuple:
    """Cell b and second-best cell by score, the cell j* across the facet of b nearest in source
    distance, that distance and whether the foot of the perpendicular lies in the source's support,
    for source points X (M, d) on ``ot``'s device, scanning all N >= 2 cells (float64) -> numpy (M,)
    int64, (M,) int64, (M,) int64, (M,) float64, (M,) bool."""
    Y = ot.targets_.detach().double()
    h = ot.heights_.detach().to(Y.device).double()
    y2 = (Y * Y).sum(1)
    N = len(Y)
    step = max(1, _SCAN_ENTRIES // N)
    out = ([], [], [], [], [])
    for start in range(0, len(X), step):
        Xc = X[start:start + step].double()
        S = torch.addmm(h, Xc, Y.T)                                            # (m, N) scores
        vals, idx = S.topk(2, dim=1)
        top, best = vals[:, 0], idx[:, 0]
        gap = torch.sub(top[:, None], S, out=S).scatter_(1, best[:, None], math.inf)   # >= 0; itself: inf
        n2 = torch.addmm(y2[None, :] + y2[best][:, None], Y[best], Y.T, alpha=-2.0).clamp_min_(_TINY)
        dmin, other = gap.mul_(n2.rsqrt_()).min(1)                              # |y_b - y_j|^2, then delta
        u = Y[other] - Y[best]
        foot = Xc + dmin.clamp(max=1e300)[:, None] * u / u.norm(dim=1, keepdim=True).clamp_min(1e-300)
        finite = torch.isfinite(dmin)
        for lst, v in zip(out, (best, idx[:, 1], other, dmin, finite & ot.source_.contains(foot, _SUPPORT_TOL))):
            lst.append(v.cpu().numpy())
    cat = [np.concatenate(v) if v else np.zeros(0) for v in out]
    return (cat[0].astype(np.int64), cat[1].astype(np.int64), cat[2].astype(np.int64), cat[3].astype(np.float64),
            cat[4].astype(bool))


def check_fitted_ot(ot):
    """TypeError unless ``ot`` is a SemiDiscreteOT-like solver, NotFittedError unless it is fitted."""
    if not hasattr(ot, "topk") or not hasattr(ot, "fit"):
        raise TypeError(f"ot must be a fitted SemiDiscreteOT, got {type(ot).__name__}")
    if not hasattr(ot, "heights_"):
        raise NotFittedError("ot must be a fitted SemiDiscreteOT, got one that is not fitted: call ot.fit(Y) first")


def with_map(detector, ot):
    """``detector`` ready for :meth:`SingularSetDetector.score` with the map ``ot``.

    The detector itself when it already holds a map (``fitted_on(ot)`` is checked by the caller), else
    a shallow copy with ``ot`` attached (a detector read without its map is left as it is).

    Parameters
    ----------
    detector : SingularSetDetector
        Fitted on ``ot`` (or on a map with the same targets and heights).
    ot : SemiDiscreteOT

    Returns
    -------
    SingularSetDetector
    """
    if getattr(detector, "ot_", None) is not None:
        return detector
    return copy.copy(detector).attach(ot)


def _components(n: int, pairs: np.ndarray, keep: np.ndarray) -> tuple:
    """Connected components of the graph on ``n`` nodes with the edges ``pairs[keep]``, labelled 0, 1, ...
    in order of their first node -> (number, labels (n,) int64)."""
    kept = pairs[keep]
    adj = sp.coo_matrix((np.ones(len(kept)), (kept[:, 0], kept[:, 1])), shape=(n, n))
    n_comp, comp = connected_components(adj, directed=False)
    _, first = np.unique(comp, return_index=True)
    order = np.argsort(np.argsort(first))
    return int(n_comp), order[comp].astype(np.int64)


def _neighbour_lists(n: int, pairs: np.ndarray) -> tuple:
    """Neighbour lists of the dual graph on ``n`` cells: (indptr (n+1,), indices), the neighbours of
    cell i being ``indices[indptr[i]:indptr[i + 1]]``."""
    both = np.concatenate([pairs, pairs[:, ::-1]]).astype(np.int64)
    both = both[np.lexsort((both[:, 1], both[:, 0]))]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(both[:, 0], minlength=n))]).astype(np.int64)
    return indptr, both[:, 1].copy()


def _candidate_cells(best: np.ndarray, second: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(M, D) int64: the dual-graph neighbours of each point's best cell, then its second-best cell when
    the graph lacks it (it is always adjacent, see :func:`dual_graph`; -1 when there is none); -1 pads."""
    deg = indptr[best + 1] - indptr[best]
    M, D = len(best), int(deg.max(initial=0)) + 1
    out = np.full((M, D), -1, np.int64)
    rows = np.repeat(np.arange(M), deg)
    pos = np.arange(len(rows)) - np.repeat(np.cumsum(deg) - deg, deg)
    out[rows, pos] = indices[indptr[best][rows] + pos]
    add = (second >= 0) & ~(out == second[:, None]).any(1)
    out[np.flatnonzero(add), deg[add]] = second[add]
    return out


def _hyperplane_distances(X: np.ndarray, Y: np.ndarray, h: np.ndarray, best: np.ndarray,
                          cand: np.ndarray) -> np.ndarray:
    """(M, D) float64: distance from X[m] (M, d) to the hyperplane
    :math:`\\langle x, y_b - y_j\\rangle + h_b - h_j = 0` of the cells b = best[m], j = cand[m, c]
    (the score gap over :math:`|y_b - y_j|`); ``inf`` where cand is -1."""
    valid = cand >= 0
    j = np.where(valid, cand, best[:, None])
    diff = Y[best][:, None, :] - Y[j]                                          # (M, D, d)
    gap = np.maximum(np.einsum("md,mcd->mc", X, diff) + h[best][:, None] - h[j], 0.0)
    norm = np.sqrt(np.einsum("mcd,mcd->mc", diff, diff))
    dist = np.divide(gap, norm, out=np.where(gap > 0, np.inf, 0.0), where=norm > 0)   # equal targets: 0 or inf
    return np.where(valid, dist, np.inf)


def _facet_chunks(ot, graph: tuple, X: torch.Tensor):
    """Yield (start, best (m,), candidates (m, D), distances (m, D)) over chunks of source points X (M, d)
    on ``ot``'s device: each point's cell, its facets' cells (:func:`_candidate_cells`) and the source
    distances to their hyperplanes (:func:`_hyperplane_distances`)."""
    indptr, indices = graph
    Y = ot.targets_.detach().cpu().double().numpy()
    h = ot.heights_.detach().cpu().double().numpy()
    N, d = Y.shape
    step = max(1, min(_DRAW_ROWS, _ENTRY_BUDGET // ((int(np.diff(indptr).max(initial=0)) + 1) * d)))
    for start in range(0, len(X), step):
        Xc = X[start:start + step]
        idx = ot.topk(Xc, min(2, N))[1].cpu().numpy().astype(np.int64)
        best = idx[:, 0]
        second = idx[:, 1] if N > 1 else np.full(len(idx), -1, np.int64)
        cand = _candidate_cells(best, second, indptr, indices)
        yield start, best, cand, _hyperplane_distances(Xc.detach().cpu().double().numpy(), Y, h, best, cand)


def _cell_width(ot, n_points: int, seed: int) -> float:
    """Median cell width of ``ot`` in source units, from ``n_points`` source points (see
    ``SingularSetDetector.cell_width_``); ``inf`` when there is one cell."""
    d = ot.targets_.shape[1]
    X = sample_source(ot.source_, n_points, d, seed=spawn_seed(seed, "cell-width"), dtype=ot.targets_.dtype,
                      device=ot.targets_.device)
    if ot.targets_.shape[0] < 2:
        return math.inf
    inner = np.minimum(_nearest_facets(ot, X)[3], ot.source_.depth(X).cpu().numpy())
    inner = inner[np.isfinite(inner)]
    if not len(inner):
        return math.inf
    return float(2.0 * np.median(inner) / (1.0 - 2.0 ** (-1.0 / d)))


def _like(out: np.ndarray, ref):
    """``out`` as a tensor on ``ref``'s device when ``ref`` is a tensor, else as it is."""
    return torch.from_numpy(out).to(ref.device) if isinstance(ref, torch.Tensor) else out


# ----------------------------------------------------------------------------- estimator

class SingularSetDetector(BaseEstimator):
    """Find the mode boundaries (singular set) of a fitted semi-discrete OT map.

    1. Dual graph: the adjacent cell pairs, from the top-2 cells and the nearest facets of
       ``n_samples`` source points (:func:`dual_graph`).
    2. For each pair, the angle :math:`\\theta_{ij}` between the normals :math:`(\\hat y_i, -1)`
       and :math:`(\\hat y_j, -1)` of the supporting planes of :math:`u_h`, on centred targets
       divided by their RMS spread (:func:`normal_angles`).
    3. Threshold :math:`\\tau`: ``angle_threshold`` if it is a number, else chosen by a rule from
       the angles (below; ``inf`` when the rule finds one mode, so no boundary is invented).
    4. Singular pairs :math:`\\theta_{ij} > \\tau`; the connected components of the dual graph
       without them are the modes (``cell_component_``).

    A source point x in the cell :math:`W_b` is near the singular set when a singular facet of
    its cell is within a source distance :math:`\\delta` = ``band`` :math:`\\times` ``cell_width_``.
    The distance from x to the hyperplane of the facet :math:`W_b \\cap W_j` is the score gap over
    the jump of the map,

    .. math:: \\delta_{bj}(x) = \\frac{\\langle x, y_b\\rangle + h_b - \\langle x, y_j\\rangle - h_j}
              {|y_b - y_j|}

    (as the band of the solver's Hessian estimate measures it, in source units), and the facets of
    :math:`W_b` are its neighbours in the dual graph (and its second-best cell, always adjacent).
    :meth:`score` is the largest angle :math:`\\theta_{bj}` over the neighbours j with
    :math:`\\delta_{bj}(x) \\le \\delta`; :meth:`predict` compares it with the threshold. Ranking the
    cells by the score gap instead (the top-k cells) misses the boundary between far-apart targets:
    there the gap :math:`|y_b - y_j|\\,\\delta_{bj}` is large while the cells of the same mode, whose
    targets are close, have tiny gaps however far they are, so near a facet between two modes the
    cell across it is often not among the top k (on two 2-D blobs, 6-43% of the source points within
    a quarter cell of the exact singular set were flagged that way; 96-100% are now, where the
    threshold found the two blobs).
    :math:`\\delta_{bj}` is a lower bound on the distance to the facet itself (exact when the foot of
    the perpendicular lies on the facet, as it does away from the facet's edges).

    Two tests on rows of cell indices decide whether the piecewise-linear extension of
    :class:`~otgen.generate.OTGenerator` may blend a point's top-k targets (its ``blend_rule``):
    :meth:`same_component` (all cells of the row are in one mode) and :meth:`no_singular_pair`
    (no two cells of the row are separated by a singular facet,
    :math:`\\theta_{ij} \\le \\tau` for every pair). The second is the local rule of AE-OT [3]_
    (the extension is dropped on the simplices that touch a singular facet); it matters when the
    modes touch along non-singular facets too, so that cutting the singular ones leaves a single
    connected component (the 8-d MNIST latent: a third of the adjacent cells carry different digits).

    Parameters
    ----------
    angle_threshold : float, "gap", "ratio", "quantile", "persistence", "modes" or None, default None
        Radians in (0, π], or a rule that chooses it from the data: ``None`` / ``"gap"`` the
        largest log-gap of the sorted angles (:func:`gap_threshold`, for separated modes);
        ``"ratio"`` the fixed multiple ``min_ratio`` of the median angle (:func:`ratio_threshold`,
        for a connected but non-convex support, whose singular set has jumps that grow
        continuously from zero at its end points and therefore no gap); ``"quantile"`` the
        ``quantile``-quantile of the neighbour angles (a fraction ``1 - quantile`` of the adjacent
        pairs is singular: a hyper-parameter for latents whose angles show no gap);
        ``"persistence"`` the threshold at which the major modes (at least ``min_size`` of the
        mass ``ot.weights_``) of the dual graph persist longest (:func:`persistence_threshold`,
        for high-dimensional latents whose angles show no gap but whose connectivity does),
        computed in the same fit from the same dual graph and angles, at most π; ``"modes"`` the
        threshold that separates every mode (at least 1% of the mass and 20 cells) whose own
        single-linkage persistence stands above the noise level of the targets' intrinsic dimension
        (:func:`mode_threshold` with its defaults, for an unknown number of modes with different
        separations: on mixtures of 10 Gaussians in 2-d to 16-d it recovered the components where
        "gap" and "persistence" merged some, and it found one mode on every one-mode test set),
        at most π.
    k : int, default 3
        Cells per row of the cell-level tests (k >= 2): the top-k cells of a point by score, the rows
        that :class:`~otgen.generate.OTGenerator` blends and passes to :meth:`same_component` /
        :meth:`no_singular_pair`, and that :func:`~otgen.singular.critical_states` scores with
        :meth:`score_cells`. :meth:`score` and :meth:`predict` do not use it: they look at every
        facet of a point's cell within the band.
    n_samples : int, default 65536
        Source points used to estimate the dual graph.
    seed : int, default 0
        Seeds the source points of the dual graph (stream ``spawn_seed(seed, "dual-graph", b)``).
    min_ratio : float, default 5.0
        Setting of :func:`gap_threshold` and :func:`ratio_threshold`.
    min_gap : float, default 1.5
        Setting of :func:`gap_threshold` (smallest accepted ratio across the gap).
    quantile : float in (0, 1), default 0.9
        Used when ``angle_threshold="quantile"``.
    min_size : float in (0, 0.5), default 0.05
        Used when ``angle_threshold="persistence"``: least mass of a major mode.
    band : float > 0, default 0.25
        Width of the band around the singular set that :meth:`predict` flags, as a fraction of the
        median cell width ``cell_width_``: a source point is flagged when a singular facet of its
        cell is within ``band * cell_width_`` (a quarter cell: the points whose next cell across a
        mode boundary is nearer than the cell's own centre-to-edge half width, by half).

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
    n_targets_ : int
    n_features_in_ : int
        Dimension d of the targets (and of the source points).
    cell_width_ : float
        Median width of the cells in source units: :math:`2 m / (1 - 2^{-1/d})`, where m is the
        median over ``4096`` source points of their distance to the boundary of their own cell (its
        nearest facet, :math:`\\min_j \\delta_{bj}` over all cells j, see :func:`dual_graph`, or the
        boundary of the source's support; none for the Gaussian or a callable source). For cells that are cubes of side w or balls of diameter w
        (any polytope circumscribed about a ball of diameter w), the distance to the boundary is
        below t with probability :math:`1 - (1 - 2t/w)^d`, so the formula returns w exactly;
        ``inf`` when there is one cell.
    ot_ : SemiDiscreteOT
        The map the detector was fitted on (or attached with :meth:`load`); :meth:`score` and
        :meth:`predict` need it. Not written by :meth:`save`.

    Notes
    -----
    :meth:`save` writes the fitted arrays (not the OT map); ``SingularSetDetector.load(path, ot=ot)``
    reads them and re-attaches ``ot`` (checked to have the same targets). Without an attached map
    the cell-level methods (:meth:`score_cells`, :meth:`same_component`, :meth:`no_singular_pair`)
    work and :meth:`score` / :meth:`predict` raise a ``ValueError``.

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

    _FITTED_ATTR = "threshold_"
    _SAVE_VERSION = 2           # 2: cell_width_ (the band of score / predict)

    def __init__(self, angle_threshold=None, k=3, n_samples=2**16, seed=0, *, min_ratio=5.0, min_gap=1.5,
                 quantile=0.9, min_size=0.05, band=0.25):
        self.angle_threshold = angle_threshold
        self.k = k
        self.n_samples = n_samples
        self.seed = seed
        self.min_ratio = min_ratio
        self.min_gap = min_gap
        self.quantile = quantile
        self.min_size = min_size
        self.band = band

    # ------------------------------------------------------------------ fitting
    def _check_settings(self):
        rule = self.angle_threshold
        if isinstance(rule, str):
            if rule not in THRESHOLD_RULES:
                raise ValueError(f"angle_threshold must be a number, one of {list(THRESHOLD_RULES)} or None, "
                                 f"got {rule!r}")
        elif rule is not None:
            if check_positive_float(rule, "angle_threshold") > math.pi:
                raise ValueError(f"angle_threshold must be in (0, pi] radians, got {rule!r}")
        check_positive_int(self.k, "k", minimum=2)
        check_positive_int(self.n_samples, "n_samples")
        check_seed(self.seed)
        check_positive_float(self.min_ratio, "min_ratio")
        check_positive_float(self.min_gap, "min_gap")
        q = self.quantile
        if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0 < q < 1:
            raise ValueError(f"quantile must be a number in (0, 1), got {q!r}")
        check_min_size(self.min_size)
        check_positive_float(self.band, "band")

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
        check_fitted_ot(ot)
        pairs, counts = dual_graph(ot, self.n_samples, self.seed)
        Z = _normalised_targets(as_tensor(ot.targets_, "targets", ndim=2, dtype=torch.float64).cpu().numpy())
        angles = _plane_angles(Z, pairs[:, 0], pairs[:, 1])
        masses = cell_weights(len(Z), ot.weights_.detach().cpu().double())
        width = _cell_width(ot, min(self.n_samples, _WIDTH_SAMPLES), self.seed)
        self._set_fitted(Z, ot.heights_.detach().cpu().double().numpy(), pairs, counts, angles,
                         self._choose_threshold(pairs, angles, masses, Z), width)
        self.ot_ = ot
        return self

    def _choose_threshold(self, pairs, angles, masses, Z) -> float:
        rule = self.angle_threshold
        if rule is None or rule == "gap":
            return gap_threshold(angles, self.min_ratio, self.min_gap)
        if rule == "ratio":
            return ratio_threshold(angles, self.min_ratio)
        if rule == "quantile":
            return float(np.quantile(angles, self.quantile)) if len(angles) else math.inf
        if rule == "persistence":
            tau = _persistence_tau(pairs, angles, masses, float(self.min_size), _MIN_PERSISTENCE)
            return min(tau, math.pi) if math.isfinite(tau) else math.inf
        if rule == "modes":
            tau = _modes_tau(pairs, angles, masses, Z, _MODE_MIN_MASS, _MODE_MIN_CELLS, _MODE_NOISE)
            return min(tau, math.pi) if math.isfinite(tau) else math.inf
        return float(rule)

    def _set_fitted(self, Z, heights, pairs, counts, angles, threshold, cell_width):
        """Set every fitted attribute from the map (normalised targets, heights), the graph, the threshold
        and the cell width."""
        self._Z, self._heights = np.asarray(Z, np.float64), np.asarray(heights, np.float64)
        self.n_targets_, self.n_features_in_ = int(Z.shape[0]), int(Z.shape[1])
        self.pairs_ = np.asarray(pairs, np.int64).reshape(-1, 2)
        self.counts_ = np.asarray(counts, np.int64)
        self.angles_ = np.asarray(angles, np.float64)
        self.singular_ = self.angles_ > threshold
        self.singular_pairs_ = self.pairs_[self.singular_]
        self.n_components_, self.cell_component_ = _components(self.n_targets_, self.pairs_, ~self.singular_)
        self._codes = self.pairs_[:, 0] * self.n_targets_ + self.pairs_[:, 1]      # sorted (pairs lexicographic)
        self._graph = _neighbour_lists(self.n_targets_, self.pairs_)
        self.cell_width_ = float(cell_width)
        self.threshold_ = float(threshold)

    # ------------------------------------------------------------------ files
    def _get_state(self) -> dict:
        return {"normalised_targets": self._Z, "heights": self._heights, "pairs": self.pairs_,
                "counts": self.counts_, "angles": self.angles_, "threshold": self.threshold_,
                "cell_width": self.cell_width_}

    def _set_state(self, state: dict, device=None) -> None:
        self._set_fitted(state["normalised_targets"], state["heights"], state["pairs"], state["counts"],
                         state["angles"], float(state["threshold"]), float(state["cell_width"]))

    @classmethod
    def load(cls, path, ot=None, device=None, **settings) -> "SingularSetDetector":
        """Read a detector written by :meth:`save`; ``ot`` (the fitted map it was fitted on) is re-attached.

        Parameters
        ----------
        path : str or os.PathLike
        ot : SemiDiscreteOT, optional
            Needed by :meth:`score` and :meth:`predict`; must have the same targets as the map the
            detector was fitted on.
        device : ignored
            The detector's arrays live on the CPU (accepted for the common ``load`` signature).
        **settings
            Override saved settings.
        """
        det = super().load(path, device, **settings)
        if ot is not None:
            det.attach(ot)
        return det

    def attach(self, ot) -> "SingularSetDetector":
        """Use ``ot`` for :meth:`score` / :meth:`predict` (after checking it has the detector's targets); returns self.

        Parameters
        ----------
        ot : SemiDiscreteOT
            Fitted on the same targets as the map this detector was fitted on (e.g. after :meth:`load`).
        """
        self._check_fitted()
        check_fitted_ot(ot)
        if not self._same_map(ot):
            raise ValueError(f"ot is not the map this detector was fitted on (targets of shape "
                             f"{tuple(ot.targets_.shape)}, expected {self._Z.shape}, or other heights): "
                             f"attach the same SemiDiscreteOT")
        self.ot_ = ot
        return self

    def fitted_on(self, ot) -> bool:
        """True when the detector is fitted and ``ot`` is its OT map (the same object, or equal targets and heights)."""
        if not self._is_fitted() or not hasattr(ot, "heights_"):
            return False
        return getattr(self, "ot_", None) is ot or self._same_map(ot)

    def _same_map(self, ot) -> bool:
        Y = as_tensor(ot.targets_, "targets", ndim=2, dtype=torch.float64).cpu().numpy()
        h = ot.heights_.detach().cpu().double().numpy()
        return Y.shape == self._Z.shape and \
            bool(np.allclose(_normalised_targets(Y), self._Z, rtol=_SAME_MAP_RTOL, atol=_SAME_MAP_ATOL)) and \
            bool(np.allclose(h, self._heights, rtol=_SAME_MAP_RTOL, atol=_SAME_MAP_ATOL))

    # ------------------------------------------------------------------ rows of cells
    def _check_idx(self, idx, min_k: int = 1) -> np.ndarray:
        self._check_fitted()
        a = idx.detach().cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        if a.ndim != 2 or a.shape[1] < min_k:
            raise ValueError(f"idx must have shape (M, k) with k >= {min_k}, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"idx must hold integer cell indices, got dtype {a.dtype}")
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() >= self.n_targets_):
            raise ValueError(f"idx must index the {self.n_targets_} targets, got values in [{a.min()}, {a.max()}]")
        return a

    def _adjacent(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """True where (i, j), i <= j, is a pair of the dual graph."""
        if not len(self._codes):
            return np.zeros(len(i), bool)
        code = i * self.n_targets_ + j
        pos = np.clip(np.searchsorted(self._codes, code), 0, len(self._codes) - 1)
        return (self._codes[pos] == code) & (i != j)

    def _score_rows(self, idx: np.ndarray) -> np.ndarray:
        M, k = idx.shape
        best = np.zeros(M)
        for a in range(k):
            for b in range(a + 1, k):
                i, j = np.minimum(idx[:, a], idx[:, b]), np.maximum(idx[:, a], idx[:, b])
                ang = _plane_angles(self._Z, i, j)
                if (a, b) != (0, 1):
                    ang = np.where(self._adjacent(i, j), ang, 0.0)
                best = np.maximum(best, ang)
        return best

    def score_cells(self, idx):
        """Largest neighbour angle among given top-k cell indices.

        Pairs among the k cells count when they are in the dual graph ``pairs_``; the best and
        second-best cells (columns 0 and 1) are always adjacent (see :func:`dual_graph`). Rows
        with no adjacent pair score 0.

        Parameters
        ----------
        idx : array_like or tensor of int, shape (M, k), k >= 2
            Cells of each point, best first (e.g. ``ot.topk(X, k)[1]``).

        Returns
        -------
        ndarray or tensor of float64, shape (M,)
            Radians (a tensor on ``idx``'s device when ``idx`` is a tensor).
        """
        return _like(self._score_rows(self._check_idx(idx, 2)), idx)

    def same_component(self, idx):
        """True for rows of cells that all lie in one mode (one component ``cell_component_``).

        Parameters
        ----------
        idx : array_like or tensor of int, shape (M, k)

        Returns
        -------
        ndarray or tensor of bool, shape (M,)
        """
        a = self._check_idx(idx)
        c = self.cell_component_[a]
        return _like((c == c[:, :1]).all(1), idx)

    def no_singular_pair(self, idx):
        """True for rows of cells no two of which are separated by a singular facet.

        Every pair (adjacent or not) of the row has :math:`\\theta_{ij} \\le` ``threshold_``: the
        local rule of AE-OT; rows pass everywhere when ``threshold_`` is ``inf``.

        Parameters
        ----------
        idx : array_like or tensor of int, shape (M, k)

        Returns
        -------
        ndarray or tensor of bool, shape (M,)
        """
        a = self._check_idx(idx)
        ok = np.ones(len(a), dtype=bool)
        for p in range(a.shape[1]):
            for q in range(p + 1, a.shape[1]):
                ok &= _plane_angles(self._Z, a[:, p], a[:, q]) <= self.threshold_
        return _like(ok, idx)

    # ------------------------------------------------------------------ source points
    def _source_points(self, X) -> torch.Tensor:
        """Source points X (M, d) as a tensor on the attached map's device, checked."""
        self._check_fitted()
        ot = getattr(self, "ot_", None)
        if ot is None:
            raise ValueError("this SingularSetDetector has no OT map attached (it was loaded without one): "
                             "use SingularSetDetector.load(path, ot=ot)")
        Xt = as_tensor(X, "X", ndim=2, dtype=ot.targets_.dtype, device=ot.targets_.device)
        if Xt.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} columns (the targets' dimension), "
                             f"got shape {tuple(Xt.shape)}")
        return Xt

    def facet_distances(self, X):
        """Source distance from each point to the hyperplane of every facet of its cell, nearest first.

        For x in the cell :math:`W_b` and each neighbour j of b in the dual graph (and the
        second-best cell of x, always adjacent), the distance to the hyperplane of the facet
        :math:`W_b \\cap W_j`,
        :math:`\\delta_{bj}(x) = (\\langle x, y_b - y_j\\rangle + h_b - h_j) / |y_b - y_j|`
        (float64, from the attached map's targets and heights). The smallest is the distance from x
        to the boundary of its cell (up to facets the sampled dual graph missed).

        Parameters
        ----------
        X : array_like or tensor, shape (M, d)
            Source points.

        Returns
        -------
        cells : ndarray of int64, shape (M,)
            The cell b of each point (``ot.assign``).
        neighbours : ndarray of int64, shape (M, D)
            The cells j across the facets of b, nearest first; -1 pads (D: one more than the largest
            degree of the dual graph).
        distances : ndarray of float64, shape (M, D)
            :math:`\\delta_{bj}(x)` in source units, ascending; ``inf`` pads.
        """
        Xt = self._source_points(X)
        D = int(np.diff(self._graph[0]).max(initial=0)) + 1
        cells = np.zeros(len(Xt), np.int64)
        nbr, dist = np.full((len(Xt), D), -1, np.int64), np.full((len(Xt), D), np.inf)
        for start, best, cand, dc in _facet_chunks(self.ot_, self._graph, Xt):
            order = np.argsort(dc, axis=1, kind="stable")
            rows = slice(start, start + len(best))
            cells[rows] = best
            nbr[rows, :cand.shape[1]] = np.take_along_axis(cand, order, 1)
            dist[rows, :cand.shape[1]] = np.take_along_axis(dc, order, 1)
        return cells, nbr, dist

    def _score_points(self, Xt: torch.Tensor) -> np.ndarray:
        """:meth:`score` of checked source points (M, d) -> (M,) float64 numpy."""
        band = float(self.band) * self.cell_width_
        out = np.zeros(len(Xt))
        for start, best, cand, dist in _facet_chunks(self.ot_, self._graph, Xt):
            near = dist <= band
            ang = np.zeros(cand.shape)
            ang[near] = _plane_angles(self._Z, np.broadcast_to(best[:, None], cand.shape)[near], cand[near])
            out[start:start + len(best)] = ang.max(1, initial=0.0)
        return out

    def score(self, X):
        """Each source point's largest facet angle among the facets of its cell within the band.

        .. math:: s(x) = \\max \\{\\theta_{bj} : j \\text{ adjacent to } b,\\
                  \\delta_{bj}(x) \\le \\texttt{band} \\cdot \\texttt{cell\\_width\\_}\\}

        with b the cell of x and :math:`\\delta_{bj}` the source distance to the facet's hyperplane
        (:meth:`facet_distances`): nearness is measured in source units, whatever the spacing of
        the targets around x.

        Parameters
        ----------
        X : array_like or tensor, shape (M, d)
            Source points.

        Returns
        -------
        ndarray or tensor of float64, shape (M,)
            Radians; 0 where no facet of the cell is within the band. A tensor on ``X``'s device when
            ``X`` is a tensor, else a numpy array.
        """
        return _like(self._score_points(self._source_points(X)), X)

    def predict(self, X):
        """True where a source point is within the band of a singular facet: ``score(X) > threshold_``.

        Parameters
        ----------
        X : array_like or tensor, shape (M, d)

        Returns
        -------
        ndarray or tensor of bool, shape (M,)
            A tensor on ``X``'s device when ``X`` is a tensor, else a numpy array.
        """
        return _like(self._score_points(self._source_points(X)) > self.threshold_, X)
