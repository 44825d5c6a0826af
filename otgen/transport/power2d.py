"""Exact 2-D power diagrams and the damped Newton method for semi-discrete OT.

Targets :math:`y_i \\in \\mathbb{R}^2` with heights :math:`h_i` define the cells

.. math::

    W_i(h) = \\{x \\in D : \\langle x, y_i\\rangle + h_i \\ge \\langle x, y_j\\rangle + h_j
    \\ \\forall j\\},

the regions where the Brenier potential :math:`u_h(x) = \\max_i \\langle x, y_i\\rangle + h_i`
is affine with gradient :math:`y_i`. ``D`` is a convex polygon (the source domain)
carrying the uniform density. This is a power (Laguerre) diagram [1]: the cells are
those of :math:`\\arg\\min_i |x - y_i|^2 - w_i` with :math:`w_i = |y_i|^2 + 2 h_i`.

How the cells are computed (exact up to round-off):

1. Neighbours. Cell adjacency is the regular triangulation of the targets, i.e.
   the lower convex hull of the lifted points :math:`(y_i, -h_i)` (the Legendre
   dual of :math:`u_h`) [1, 2]. It is found with ``scipy.spatial.ConvexHull``
   (Qhull); a point not on the lower hull has an empty cell. Collinear targets use
   the 1-D lower hull of :math:`(s_i, -h_i)`, :math:`s_i` the position on the line.
2. Cells. Each cell starts as the bounding box of ``D`` and is clipped
   (Sutherland-Hodgman [3]) by the half-planes
   :math:`\\langle x, y_j - y_i\\rangle \\le h_i - h_j` of its neighbours only, then
   by the edges of ``D`` it crosses. Every edge remembers the constraint that made
   it, which gives the facets between cells.

The damped Newton method of Kitagawa, Mérigot & Thibert [4] solves
:math:`\\mu(W_i(h)) = \\nu_i` for all ``i``.

References
----------
.. [1] F. Aurenhammer, "Power diagrams: properties, algorithms and applications",
   SIAM J. Comput. 16(1), 1987.
.. [2] H. Edelsbrunner, "Geometry and Topology for Mesh Generation", Cambridge
   University Press, 2001 (regular triangulations and the lifting map).
.. [3] I. Sutherland & G. Hodgman, "Reentrant polygon clipping", Comm. ACM 17(1), 1974.
.. [4] J. Kitagawa, Q. Mérigot & B. Thibert, "Convergence of a Newton algorithm for
   semi-discrete optimal transport", J. Eur. Math. Soc. 21(9), 2019.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import spsolve
from scipy.spatial import ConvexHull, QhullError
from tqdm.auto import tqdm

from .._validation import (ConvergenceWarning, as_tensor, check_positive_float,
                           check_positive_int, check_weights)

__all__ = [
    "Power2DResult",
    "square_domain",
    "disc_domain",
    "power_cells",
    "cell_areas",
    "cell_masses",
    "power_facets",
    "solve_power2d",
]

_AREA_RTOL = 1e-14      # cells smaller than this fraction of |D| are round-off: reported empty
_LENGTH_RTOL = 1e-12    # facets shorter than this fraction of diam(D) are dropped
_MAX_HALVINGS = 50      # step halvings allowed per Newton iteration


# ----------------------------------------------------------------------------- domains

def square_domain(half_width=1.0) -> np.ndarray:
    """The square :math:`[-a, a]^2` as a convex polygon.

    Parameters
    ----------
    half_width : float
        :math:`a > 0`.

    Returns
    -------
    ndarray, shape (4, 2)
        Vertices in counter-clockwise order, starting at :math:`(-a, -a)`.
    """
    a = check_positive_float(half_width, "half_width")
    return np.array([[-a, -a], [a, -a], [a, a], [-a, a]], dtype=np.float64)


def disc_domain(radius=1.0, n_vertices=512) -> np.ndarray:
    """A regular polygon inscribed in the disc of radius ``radius``.

    This is a polygon, not a disc: every area, mass and solution computed with it is
    exact for the polygon, whose area is
    :math:`\\tfrac{K}{2} r^2 \\sin(2\\pi / K)` (``K = n_vertices``), slightly less than
    :math:`\\pi r^2`.

    Parameters
    ----------
    radius : float
        Circumradius :math:`r > 0`.
    n_vertices : int
        Number of vertices :math:`K \\ge 3`.

    Returns
    -------
    ndarray, shape (K, 2)
        Vertices :math:`r (\\cos(2\\pi k / K), \\sin(2\\pi k / K))`, counter-clockwise.
    """
    r = check_positive_float(radius, "radius")
    k = check_positive_int(n_vertices, "n_vertices", minimum=3)
    t = 2.0 * np.pi * np.arange(k) / k
    return r * np.stack([np.cos(t), np.sin(t)], axis=1)


# ----------------------------------------------------------------------------- checks

def _shoelace(P: np.ndarray) -> float:
    """Signed area of the polygon P (k, 2); positive when counter-clockwise."""
    x, y = P[:, 0], P[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _check_targets(Y) -> np.ndarray:
    Y = as_tensor(Y, "Y", ndim=2, dtype=torch.float64).cpu().numpy()
    if Y.shape[1] != 2:
        raise ValueError(f"Y must have shape (N, 2) (2-D targets), got shape {Y.shape}")
    uniq, inverse = np.unique(Y, axis=0, return_inverse=True)
    if uniq.shape[0] < Y.shape[0]:
        inverse = inverse.reshape(-1)
        counts = np.bincount(inverse)
        dup = np.nonzero(counts[inverse] > 1)[0][:2]
        raise ValueError(f"Y must have distinct rows, but rows {dup[0]} and {dup[1]} are both "
                         f"{Y[dup[0]].tolist()} ({Y.shape[0] - uniq.shape[0]} duplicate(s) in all); "
                         "merge duplicates and add their weights")
    return Y


def _check_heights(heights, n: int, name: str = "heights") -> np.ndarray:
    h = as_tensor(heights, name, ndim=1, dtype=torch.float64).cpu().numpy()
    if h.shape[0] != n:
        raise ValueError(f"{name} must have length {n} (one per target), got length {h.shape[0]}")
    return h


def _check_domain(domain) -> np.ndarray:
    """Convex, counter-clockwise, non-degenerate polygon (K, 2) as float64."""
    if domain is None:
        return square_domain()
    D = as_tensor(domain, "domain", ndim=2, dtype=torch.float64).cpu().numpy()
    if D.shape[1] != 2 or D.shape[0] < 3:
        raise ValueError(f"domain must be polygon vertices of shape (K, 2) with K >= 3, got shape {D.shape}")
    E = np.roll(D, -1, axis=0) - D                                   # (K, 2) edges
    lengths = np.hypot(E[:, 0], E[:, 1])
    diam = float(np.max(np.hypot(*(D - D.mean(0)).T))) * 2.0
    if diam == 0.0 or lengths.min() <= 1e-12 * diam:
        k = int(np.argmin(lengths))
        raise ValueError(f"domain is degenerate: vertices {k} and {(k + 1) % len(D)} coincide "
                         f"(edge length {lengths[k]:.3g}); give distinct consecutive vertices")
    area = _shoelace(D)
    if abs(area) <= 1e-12 * diam ** 2:
        raise ValueError(f"domain is degenerate: its area is {area:.3g} (collinear vertices); "
                         "expected a convex polygon with positive area")
    if area < 0:
        raise ValueError(f"domain must list its vertices counter-clockwise, got clockwise order "
                         f"(signed area {area:.6g}); reverse the vertex order")
    En = np.roll(E, -1, axis=0)
    cross = E[:, 0] * En[:, 1] - E[:, 1] * En[:, 0]                  # turn at vertex k + 1
    dot = (E * En).sum(1)
    if np.any(cross < -1e-12 * lengths * np.roll(lengths, -1)):
        k = (int(np.argmin(cross / (lengths * np.roll(lengths, -1)))) + 1) % len(D)
        raise ValueError(f"domain must be a convex polygon, but it turns clockwise (a reflex "
                         f"angle) at vertex {k} {D[k].tolist()}")
    turning = float(np.arctan2(cross, dot).sum())
    if abs(turning - 2.0 * np.pi) > 1e-6:
        raise ValueError(f"domain must be a simple convex polygon winding once, but its boundary "
                         f"turns by {turning / (2 * np.pi):.3g} full turns (self-intersecting)")
    return D


# ----------------------------------------------------------------------------- neighbours

def _lower_chain(s: np.ndarray, z: np.ndarray) -> list:
    """Indices on the lower convex hull of the 1-D points (s_i, z_i), left to right."""
    chain = []
    for k in np.lexsort((z, s)).tolist():
        if chain and s[chain[-1]] == s[k]:
            continue                                                   # same s, higher z: hidden
        while len(chain) >= 2:
            o, a = chain[-2], chain[-1]
            turn = (s[a] - s[o]) * (z[k] - z[o]) - (z[a] - z[o]) * (s[k] - s[o])
            if turn < 0:                                               # a lies above o-k: hidden
                chain.pop()
            else:
                break
        chain.append(k)
    return chain


def _neighbour_pairs(Y: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Pairs (E, 2) of targets whose cells may share a facet (a superset is harmless)."""
    n = len(Y)
    if n == 1:
        return np.zeros((0, 2), dtype=np.int64)
    Yc = Y - Y.mean(0)                                                 # (N, 2)
    _, sv, vt = np.linalg.svd(Yc, full_matrices=False)
    z = -(h - h.mean())
    if sv[1] <= 1e-12 * sv[0]:                                         # collinear targets
        chain = _lower_chain(Yc @ vt[0], z)
        return np.array(list(zip(chain[:-1], chain[1:])), dtype=np.int64).reshape(-1, 2)
    zs = float(np.abs(z).max())
    lifted = np.column_stack([Yc / np.abs(Yc).max(), z / zs if zs > 0 else z])   # (N, 3)
    # An apex above the centroid keeps the hull 3-D when the lifted points are coplanar
    # (h affine in y); it never hides a lower facet (the centroid is inside conv(Y)).
    apex = np.array([[0.0, 0.0, lifted[:, 2].max() + 1.0]])
    pts = np.vstack([lifted, apex])
    try:
        hull = ConvexHull(pts)
    except QhullError:                                                 # near-degenerate input
        hull = ConvexHull(pts, qhull_options="QJ")
    lower = hull.simplices[hull.equations[:, 2] < 1e-9]                # (F, 3) lower (and vertical) facets
    edges = [lower[:, [0, 1]], lower[:, [1, 2]], lower[:, [2, 0]]]
    if len(hull.coplanar):                                             # points on a facet, not vertices
        cp, cf = hull.coplanar[:, 0], hull.coplanar[:, 1]
        for c in range(3):
            edges.append(np.column_stack([cp, hull.simplices[cf, c]]))
    E = np.vstack(edges)
    E = E[(E < n).all(1) & (E[:, 0] != E[:, 1])]                       # drop the apex
    return np.unique(np.sort(E, axis=1), axis=0)


def _adjacency(pairs: np.ndarray, n: int) -> list:
    """Per-target neighbour lists from symmetric pairs."""
    a = np.concatenate([pairs[:, 0], pairs[:, 1]])
    b = np.concatenate([pairs[:, 1], pairs[:, 0]])
    order = np.argsort(a, kind="stable")
    indptr = np.searchsorted(a[order], np.arange(n + 1))
    b = b[order].tolist()
    return [b[indptr[i]:indptr[i + 1]] for i in range(n)]


# ----------------------------------------------------------------------------- clipping

def _clip(px, py, lab, ax, ay, b, new):
    """Clip the convex polygon (px, py) by ax x + ay y <= b (Sutherland-Hodgman [3]).

    ``lab[k]`` labels edge k (vertex k to vertex k + 1); the new edge on the line gets ``new``.
    """
    s = [ax * x + ay * y - b for x, y in zip(px, py)]
    if max(s) <= 0.0:
        return px, py, lab
    n = len(px)
    ox, oy, ol = [], [], []
    for k in range(n):
        k1 = k + 1 if k + 1 < n else 0
        sk, sn = s[k], s[k1]
        if sk <= 0.0:
            ox.append(px[k]); oy.append(py[k]); ol.append(lab[k])
            if sn > 0.0:                                               # leaves: new edge starts
                t = sk / (sk - sn)
                ox.append(px[k] + t * (px[k1] - px[k])); oy.append(py[k] + t * (py[k1] - py[k]))
                ol.append(new)
        elif sn <= 0.0:                                                # enters: rest of edge k
            t = sk / (sk - sn)
            ox.append(px[k] + t * (px[k1] - px[k])); oy.append(py[k] + t * (py[k1] - py[k]))
            ol.append(lab[k])
    return ox, oy, ol


def _diagram(Y: np.ndarray, h: np.ndarray, D: np.ndarray):
    """Cells, areas and facets of the power diagram restricted to D.

    Returns ``cells`` (list of (k_i, 2) arrays), ``areas`` (N,), ``pairs`` (F, 2),
    ``segments`` (F, 2, 2) and ``lengths`` (F,).
    """
    n = len(Y)
    area_D = _shoelace(D)
    diam = 2.0 * float(np.max(np.hypot(*(D - D.mean(0)).T)))
    (x0, y0), (x1, y1) = D.min(0), D.max(0)
    E = np.roll(D, -1, axis=0) - D
    A_dom = np.column_stack([E[:, 1], -E[:, 0]])                       # (K, 2): inside is A x <= b
    b_dom = (A_dom * D).sum(1)                                         # (K,)
    cx, cy = D.mean(0).tolist()
    r_in = float(np.min((b_dom - A_dom @ D.mean(0)) / np.hypot(A_dom[:, 0], A_dom[:, 1])))
    r_in2 = (1.0 - 1e-9) * r_in ** 2                                  # cells inside this disc skip D's edges
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    is_box = len(D) == 4 and set(map(tuple, D.tolist())) == set(map(tuple, box.tolist()))
    nbrs = _adjacency(_neighbour_pairs(Y, h), n)
    Yl, hl = Y.tolist(), h.tolist()

    cells = [np.zeros((0, 2)) for _ in range(n)]
    areas = np.zeros(n)
    fac = []                                                           # (i, j, xa, ya, xb, yb)
    for i in range(n):
        if n > 1 and not nbrs[i]:
            continue                                                   # hidden: not on the lower hull
        px, py, lab = [x0, x1, x1, x0], [y0, y0, y1, y1], [-1, -1, -1, -1]
        (yi0, yi1), hi = Yl[i], hl[i]
        for j in nbrs[i]:
            yj0, yj1 = Yl[j]
            px, py, lab = _clip(px, py, lab, yj0 - yi0, yj1 - yi1, hi - hl[j], j)
            if not px:
                break
        if px and not is_box and max((x - cx) ** 2 + (y - cy) ** 2 for x, y in zip(px, py)) > r_in2:
            S = A_dom @ np.array([px, py]) - b_dom[:, None]            # (K, k)
            for e in np.nonzero(S.max(1) > 0)[0].tolist():
                px, py, lab = _clip(px, py, lab, A_dom[e, 0], A_dom[e, 1], b_dom[e], -1)
                if not px:
                    break
        m = len(px)
        keep = [k for k in range(m) if px[k] != px[(k + 1) % m] or py[k] != py[(k + 1) % m]]
        if len(keep) < 3:
            continue
        P = np.array([[px[k], py[k]] for k in keep])                   # (k_i, 2)
        a = _shoelace(P)
        if a <= _AREA_RTOL * area_D:
            continue
        cells[i], areas[i] = P, a
        lab = [lab[k] for k in keep]
        for k, j in enumerate(lab):
            if j >= 0:
                q = P[(k + 1) % len(P)]
                fac.append((min(i, j), max(i, j), P[k, 0], P[k, 1], q[0], q[1]))

    if not fac:
        return cells, areas, np.zeros((0, 2), np.int64), np.zeros((0, 2, 2)), np.zeros(0)
    F = np.array(fac)                                                  # (F, 6)
    pairs = F[:, :2].astype(np.int64)
    segs = F[:, 2:].reshape(-1, 2, 2)
    lengths = np.hypot(segs[:, 1, 0] - segs[:, 0, 0], segs[:, 1, 1] - segs[:, 0, 1])
    ok = (lengths > _LENGTH_RTOL * diam) & (areas[pairs] > 0).all(1)
    pairs, segs, lengths = pairs[ok], segs[ok], lengths[ok]
    # each facet is seen from both of its cells: keep one (the longer) per pair
    order = np.lexsort((-lengths, pairs[:, 1], pairs[:, 0]))
    pairs, segs, lengths = pairs[order], segs[order], lengths[order]
    first = np.ones(len(pairs), bool)
    first[1:] = np.any(pairs[1:] != pairs[:-1], axis=1)
    return cells, areas, pairs[first], segs[first], lengths[first]


# ----------------------------------------------------------------------------- public geometry

def power_cells(Y, heights, domain=None) -> list:
    """Exact cells of the power diagram of ``(Y, heights)`` clipped to ``domain``.

    .. math::

        W_i = \\{x \\in D : \\langle x, y_i\\rangle + h_i \\ge \\langle x, y_j\\rangle + h_j
        \\ \\forall j\\}

    Neighbours come from the lower convex hull of :math:`(y_i, -h_i)` [1, 2]; each cell is
    the domain clipped by its neighbours' half-planes [3].

    Parameters
    ----------
    Y : array_like, shape (N, 2)
        Distinct targets :math:`y_i`.
    heights : array_like, shape (N,)
        Heights :math:`h_i`.
    domain : array_like, shape (K, 2), optional
        Convex polygon ``D``, vertices counter-clockwise (default ``square_domain()``).

    Returns
    -------
    list of N ndarrays, shape (k_i, 2)
        Vertices of each cell, counter-clockwise; an empty cell (hidden target, cell
        outside ``D``, or area below ``1e-14 |D|`` round-off) is a (0, 2) array.
    """
    Y = _check_targets(Y)
    h = _check_heights(heights, len(Y))
    return _diagram(Y, h, _check_domain(domain))[0]


def cell_areas(Y, heights, domain=None) -> np.ndarray:
    """Exact areas :math:`|W_i|` of the power cells (shoelace formula).

    Parameters
    ----------
    Y : array_like, shape (N, 2)
    heights : array_like, shape (N,)
    domain : array_like, shape (K, 2), optional

    Returns
    -------
    ndarray, shape (N,)
        Areas; they sum to the area of ``domain`` up to round-off.
    """
    Y = _check_targets(Y)
    h = _check_heights(heights, len(Y))
    return _diagram(Y, h, _check_domain(domain))[1]


def cell_masses(Y, heights, domain=None) -> np.ndarray:
    """Masses :math:`\\mu(W_i) = |W_i| / |D|` of the cells under the uniform law on ``D``.

    Parameters
    ----------
    Y : array_like, shape (N, 2)
    heights : array_like, shape (N,)
    domain : array_like, shape (K, 2), optional

    Returns
    -------
    ndarray, shape (N,)
    """
    Y = _check_targets(Y)
    h = _check_heights(heights, len(Y))
    D = _check_domain(domain)
    return _diagram(Y, h, D)[1] / _shoelace(D)


def power_facets(Y, heights, domain=None):
    """Facets :math:`W_i \\cap W_j` (segments of positive length) between adjacent cells in ``D``.

    On the facet of ``(i, j)``, :math:`\\langle x, y_j - y_i\\rangle = h_i - h_j`; the union of the
    facets is the singular set of the Brenier potential :math:`u_h` inside ``D``.

    Parameters
    ----------
    Y : array_like, shape (N, 2)
    heights : array_like, shape (N,)
    domain : array_like, shape (K, 2), optional

    Returns
    -------
    pairs : ndarray of int, shape (F, 2)
        Cell indices with ``i < j``, sorted lexicographically.
    segments : ndarray, shape (F, 2, 2)
        End points of each facet.
    lengths : ndarray, shape (F,)
        Facet lengths.
    """
    Y = _check_targets(Y)
    h = _check_heights(heights, len(Y))
    _, _, pairs, segs, lengths = _diagram(Y, h, _check_domain(domain))
    return pairs, segs, lengths


# ----------------------------------------------------------------------------- Newton solver

@dataclass(frozen=True, eq=False)
class Power2DResult:
    """Result of :func:`solve_power2d`.

    Attributes
    ----------
    heights : ndarray, shape (N,)
        Heights :math:`h` with mean zero.
    masses : ndarray, shape (N,)
        Cell masses :math:`\\mu(W_i(h))` at the returned heights.
    n_iter : int
        Newton iterations taken.
    converged : bool
        Whether the total-variation error reached ``tol``.
    history : tuple of dict
        One entry per iterate (the initial one first): ``error`` (total variation),
        ``step`` (damping factor used to reach it, 0 for the initial one), ``seconds``
        (time since the start).
    """

    heights: np.ndarray
    masses: np.ndarray
    n_iter: int
    converged: bool
    history: tuple

    @property
    def error(self) -> float:
        """Final total-variation error :math:`\\tfrac12 \\sum_i |\\mu(W_i) - \\nu_i|`."""
        return self.history[-1]["error"]


def _hessian(Y, pairs, lengths, n, area_D):
    """Jacobian of the masses: the weighted graph Laplacian of the facets [4]."""
    i, j = pairs[:, 0], pairs[:, 1]
    w = lengths / (np.linalg.norm(Y[i] - Y[j], axis=1) * area_D)        # (F,)
    off = sp.coo_matrix((np.concatenate([-w, -w]), (np.concatenate([i, j]), np.concatenate([j, i]))),
                        shape=(n, n)).tocsr()
    return off - sp.diags(np.asarray(off.sum(1)).ravel())


def _initial_heights(Y, D):
    """Heights whose cells are the Voronoi cells of the targets shrunk into D (all non-empty)."""
    c = D.mean(0)                                                      # interior point of D
    E = np.roll(D, -1, axis=0) - D
    normals = np.column_stack([E[:, 1], -E[:, 0]]) / np.hypot(E[:, 0], E[:, 1])[:, None]
    r = float(np.min(((D - c) * normals).sum(1)))                     # inradius about c
    Yc = Y - Y.mean(0)
    R = float(np.max(np.hypot(Yc[:, 0], Yc[:, 1])))
    s = 0.9 * r / R
    Yp = c + s * Yc                                                    # (N, 2) sites inside D
    return -(Yp ** 2).sum(1) / (2.0 * s)


def solve_power2d(Y, weights=None, domain=None, tol=1e-10, max_iter=100, init_heights=None,
                  verbose=False) -> Power2DResult:
    """Semi-discrete optimal transport from the uniform law on a convex polygon to 2-D targets.

    Finds heights :math:`h` (mean zero) with :math:`\\mu(W_i(h)) = \\nu_i` for all ``i``, by the
    damped Newton method of Kitagawa, Mérigot & Thibert [4]. The masses
    :math:`G(h) = (\\mu(W_i(h)))_i` have the Jacobian

    .. math::

        \\frac{\\partial G_i}{\\partial h_j} = -\\frac{|W_i \\cap W_j|}{|y_i - y_j|\\,|D|}
        \\ (i \\ne j), \\qquad \\frac{\\partial G_i}{\\partial h_i} = -\\sum_{j \\ne i}
        \\frac{\\partial G_i}{\\partial h_j},

    a graph Laplacian, solved on the mean-zero subspace. The step
    :math:`h \\leftarrow h + 2^{-\\ell} d` takes the smallest :math:`\\ell \\ge 0` with
    :math:`\\min_i G_i \\ge \\varepsilon_0 = \\tfrac12 \\min(\\min_i G_i(h_0), \\min_i \\nu_i)` and
    :math:`\\|G - \\nu\\|_2 \\le (1 - 2^{-(\\ell+1)}) \\|G(h) - \\nu\\|_2`; this converges globally
    and locally quadratically [4]. It stops when the total-variation error
    :math:`\\tfrac12 \\sum_i |G_i(h) - \\nu_i| \\le` ``tol``.

    Parameters
    ----------
    Y : array_like, shape (N, 2)
        Distinct targets.
    weights : array_like, shape (N,), optional
        Target masses :math:`\\nu`, positive, summing to 1 (default uniform).
    domain : array_like, shape (K, 2), optional
        Convex polygon, counter-clockwise (default ``square_domain()``, i.e. :math:`[-1, 1]^2`).
    tol : float
        Total-variation tolerance.
    max_iter : int
        Maximum number of Newton iterations; reaching it warns ``ConvergenceWarning``.
    init_heights : array_like, shape (N,), optional
        Starting heights; every cell must be non-empty. Default: the Voronoi diagram of the
        targets rescaled into ``D``, :math:`h_i = -|y'_i|^2 / (2s)` with
        :math:`y'_i = c + s (y_i - \\bar y)`.
    verbose : bool
        Show a tqdm progress bar.

    Returns
    -------
    Power2DResult
    """
    Y = _check_targets(Y)
    n = len(Y)
    nu = check_weights(weights, n).cpu().numpy()
    if np.any(nu <= 0):
        k = int(np.argmin(nu))
        raise ValueError(f"weights must be positive for the Newton solver, got weights[{k}] = {nu[k]:.3g}; "
                         "remove zero-weight targets first")
    D = _check_domain(domain)
    tol = check_positive_float(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    area_D = _shoelace(D)
    t0 = time.perf_counter()
    if n == 1:
        hist = ({"error": 0.0, "step": 0.0, "seconds": time.perf_counter() - t0},)
        return Power2DResult(np.zeros(1), np.ones(1), 0, True, hist)

    h = _initial_heights(Y, D) if init_heights is None else _check_heights(init_heights, n, "init_heights")
    _, areas, pairs, _, lengths = _diagram(Y, h, D)
    G = areas / area_D
    if np.any(G <= 0):
        k = int(np.argmin(G))
        raise ValueError(f"init_heights must give every cell a positive mass, but cell {k} is empty; "
                         "leave init_heights=None for a safe start")
    eps0 = 0.5 * min(G.min(), nu.min())
    tv = 0.5 * float(np.abs(G - nu).sum())
    history = [{"error": tv, "step": 0.0, "seconds": time.perf_counter() - t0}]
    n_iter, failure = 0, None
    bar = tqdm(total=max_iter, desc="power2d Newton", disable=not verbose, leave=False)
    while tv > tol and n_iter < max_iter:
        L = _hessian(Y, pairs, lengths, n, area_D)
        d = np.zeros(n)
        d[1:] = spsolve(L[1:, 1:].tocsc(), (nu - G)[1:])               # gauge d_0 = 0
        if not np.all(np.isfinite(d)):
            failure = "the Newton system is singular"
            break
        norm0, tau = float(np.linalg.norm(G - nu)), 1.0
        for _ in range(_MAX_HALVINGS):
            h_new = h + tau * d
            _, areas, pairs_new, _, lengths_new = _diagram(Y, h_new, D)
            G_new = areas / area_D
            if G_new.min() >= eps0 and np.linalg.norm(G_new - nu) <= (1.0 - tau / 2.0) * norm0:
                break
            tau *= 0.5
        else:
            failure = f"the damping found no acceptable step after {_MAX_HALVINGS} halvings"
            break
        h, G, pairs, lengths = h_new - h_new.mean(), G_new, pairs_new, lengths_new
        tv = 0.5 * float(np.abs(G - nu).sum())
        n_iter += 1
        history.append({"error": tv, "step": tau, "seconds": time.perf_counter() - t0})
        bar.update(1)
        bar.set_postfix(tv=f"{tv:.2e}")
    bar.close()
    converged = tv <= tol
    if not converged:
        why = failure or f"max_iter={max_iter} was reached"
        warnings.warn(f"solve_power2d stopped before tol={tol:g}: {why} (total-variation error {tv:.3g} "
                      f"after {n_iter} iteration(s))", ConvergenceWarning, stacklevel=2)
    return Power2DResult(h - h.mean(), G, n_iter, converged, tuple(history))
