"""Exact 2-D power diagrams and the KMT damped Newton solver (otgen.transport.power2d)."""

import warnings

import numpy as np
import pytest
import torch

from otgen._validation import ConvergenceWarning
from otgen.transport.power2d import (cell_areas, cell_masses, disc_domain, power_cells, power_facets,
                                     solve_power2d, square_domain)
from otgen.transport.power2d import _hessian, _shoelace

CROSS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])   # e1, e2, -e1, -e2


# ----------------------------------------------------------------------------- helpers

def _same_polygon(P, Q, atol=1e-9):
    """Same vertex set (each vertex of one is near a vertex of the other) and same area."""
    if len(P) == 0 or len(Q) == 0:
        return len(P) == len(Q)
    d = np.linalg.norm(P[:, None, :] - Q[None, :, :], axis=2)
    return d.min(1).max() < atol and d.min(0).max() < atol and abs(_shoelace(P) - _shoelace(Q)) < atol


def _brute_clip(P, a, b):
    """Polygon P (k, 2) intersected with {x : <a, x> <= b}."""
    if len(P) == 0:
        return P
    s = P @ a - b
    out = []
    for k in range(len(P)):
        k1 = (k + 1) % len(P)
        if s[k] <= 0:
            out.append(P[k])
        if (s[k] < 0 < s[k1]) or (s[k1] < 0 < s[k]):
            out.append(P[k] + s[k] / (s[k] - s[k1]) * (P[k1] - P[k]))
    return np.array(out).reshape(-1, 2)


def _brute_cells(Y, h, D):
    """Each cell: D clipped by all N - 1 half-planes <x, y_j - y_i> <= h_i - h_j."""
    cells = []
    for i in range(len(Y)):
        P = D.copy()
        for j in range(len(Y)):
            if j != i:
                P = _brute_clip(P, Y[j] - Y[i], h[i] - h[j])
        cells.append(P)
    return cells


def _grid_areas(Y, h, D, n=600):
    """Areas by counting midpoints of an n x n grid over D's bounding box."""
    lo, hi = D.min(0), D.max(0)
    w = (hi - lo) / n
    g = [lo[k] + w[k] * (np.arange(n) + 0.5) for k in range(2)]
    X = np.stack(np.meshgrid(*g, indexing="ij"), -1).reshape(-1, 2)     # (n^2, 2)
    E = np.roll(D, -1, axis=0) - D
    A = np.column_stack([E[:, 1], -E[:, 0]])
    X = X[(X @ A.T <= (A * D).sum(1)).all(1)]
    lab = np.argmax(X @ Y.T + h, axis=1)
    return np.bincount(lab, minlength=len(Y)) * w[0] * w[1], float(max(w))


def _rotation(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


# ----------------------------------------------------------------------------- domains

def test_domains_are_ccw_polygons_with_exact_area():
    S = square_domain(2.0)
    assert S.shape == (4, 2) and _shoelace(S) == pytest.approx(16.0, abs=1e-14)
    K = 7
    P = disc_domain(3.0, K)
    assert P.shape == (K, 2)
    assert np.allclose(np.linalg.norm(P, axis=1), 3.0)
    assert _shoelace(P) == pytest.approx(K / 2 * 9.0 * np.sin(2 * np.pi / K), rel=1e-14)
    # the masses use the polygon's area: a single target takes all of it
    assert cell_areas([[0.3, 0.1]], [0.0], P)[0] == pytest.approx(_shoelace(P), rel=1e-14)
    assert cell_masses([[0.3, 0.1]], [0.0], P)[0] == pytest.approx(1.0, rel=1e-14)


# ----------------------------------------------------------------------------- exact geometry

def test_cross_targets_give_the_four_diagonal_triangles():
    tri = [np.array([[1, -1], [1, 1], [0, 0]]), np.array([[1, 1], [-1, 1], [0, 0]]),
           np.array([[-1, 1], [-1, -1], [0, 0]]), np.array([[-1, -1], [1, -1], [0, 0]])]
    for h in (np.zeros(4), -0.5 * np.ones(4)):          # h = 0 and Voronoi (|y_i| = 1): same cells
        cells = power_cells(CROSS, h)
        for P, T in zip(cells, tri):
            assert _same_polygon(P, T.astype(float), atol=1e-14)
            assert _shoelace(P) > 0                       # counter-clockwise
        np.testing.assert_allclose(cell_areas(CROSS, h), 1.0, atol=1e-14)
        np.testing.assert_allclose(cell_masses(CROSS, h), 0.25, atol=1e-15)


def test_voronoi_of_quadrant_centres_is_the_four_unit_squares():
    Y = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5], [0.0, 0.0]])
    # the centre's Voronoi cell is the diamond |x1| + |x2| <= 1/2 (area 1/2); with it hidden
    # (h lowered) the four corner cells are the unit quadrant squares
    h = -0.5 * (Y ** 2).sum(1)
    np.testing.assert_allclose(cell_areas(Y, h), [0.875, 0.875, 0.875, 0.875, 0.5], atol=1e-14)
    h[4] = -1.0
    cells = power_cells(Y, h)
    assert len(cells[4]) == 0 and cells[4].shape == (0, 2)
    for P, sx, sy in zip(cells[:4], [1, -1, -1, 1], [1, 1, -1, -1]):
        Q = np.array([[0, 0], [sx, 0], [sx, sy], [0, sy]], dtype=float)
        Q = Q if sx * sy > 0 else Q[::-1]                 # counter-clockwise
        assert _same_polygon(P, Q, atol=1e-14)


def test_cross_facets_are_the_half_diagonals():
    pairs, segs, lengths = power_facets(CROSS, np.zeros(4))
    np.testing.assert_array_equal(pairs, [[0, 1], [0, 3], [1, 2], [2, 3]])   # no e1|-e1 facet
    np.testing.assert_allclose(lengths, np.sqrt(2.0), atol=1e-14)
    corner = {(0, 1): (1, 1), (0, 3): (1, -1), (1, 2): (-1, 1), (2, 3): (-1, -1)}
    for (i, j), s in zip(pairs.tolist(), segs):
        ends = sorted(map(tuple, np.round(s, 12).tolist()))
        assert ends == sorted([(0.0, 0.0), tuple(float(c) for c in corner[(i, j)])])


@pytest.mark.parametrize("theta", [0.0, 0.7])
def test_collinear_targets_give_strips_in_closed_form(theta):
    # lines t x1 + h: -x1 | 0.3 | x1 | 2 x1 - 1.2 (beyond the square) | x1/2 + 0.1 (hidden)
    t = np.array([-1.0, 0.0, 1.0, 2.0, 0.5])
    h = np.array([0.0, 0.3, 0.0, -1.2, 0.1])
    R = _rotation(theta)                                  # rotate targets and domain together
    Y = np.column_stack([t, np.zeros(5)]) @ R.T
    D = square_domain() @ R.T
    areas = cell_areas(Y, h, D)
    np.testing.assert_allclose(areas, [1.4, 1.2, 1.4, 0.0, 0.0], atol=1e-13)
    strip = np.array([[-0.3, -1], [0.3, -1], [0.3, 1], [-0.3, 1]]) @ R.T
    assert _same_polygon(power_cells(Y, h, D)[1], strip, atol=1e-13)
    pairs, _, lengths = power_facets(Y, h, D)
    np.testing.assert_array_equal(pairs, [[0, 1], [1, 2]])
    np.testing.assert_allclose(lengths, 2.0, atol=1e-13)


def test_one_and_two_targets():
    D = disc_domain(1.0, 64)
    cells = power_cells([[5.0, -3.0]], [1.0], D)
    assert _same_polygon(cells[0], D, atol=1e-14)
    # two targets: the bisector-type line x1 = (h0 - h1) / 2 splits the square
    a = cell_areas([[-1.0, 0.0], [1.0, 0.0]], [0.4, 0.0])
    np.testing.assert_allclose(a, [2 * 1.2, 2 * 0.8], atol=1e-14)
    a = cell_areas([[-1.0, 0.0], [1.0, 0.0]], [5.0, 0.0])   # the line leaves the square
    np.testing.assert_allclose(a, [4.0, 0.0], atol=1e-14)


@pytest.mark.parametrize("case", ["random", "hidden", "affine", "grid-voronoi", "disc"])
def test_cells_match_brute_force_clipping(case):
    rng = np.random.default_rng({"random": 0, "hidden": 1, "affine": 2, "grid-voronoi": 3, "disc": 4}[case])
    D = square_domain()
    if case == "random":
        Y = rng.uniform(-1, 1, (30, 2)); h = -0.5 * (Y ** 2).sum(1) + rng.normal(0, 0.05, 30)
    elif case == "hidden":                                # many hidden and empty cells
        Y = rng.normal(size=(25, 2)); h = rng.normal(0, 1.0, 25)
    elif case == "affine":                                # lifted points coplanar: h affine in y
        Y = rng.uniform(-2, 2, (12, 2)); h = Y @ np.array([0.3, -0.2]) + 1.0
    elif case == "grid-voronoi":                          # cocircular points: degenerate triangulation
        g = np.linspace(-0.75, 0.75, 4)
        Y = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2); h = -0.5 * (Y ** 2).sum(1)
    else:
        D = disc_domain(1.0, 40)
        Y = rng.uniform(-1.2, 1.2, (30, 2)); h = -0.5 * (Y ** 2).sum(1)
    cells = power_cells(Y, h, D)
    ref = _brute_cells(Y, h, D)
    for P, Q in zip(cells, ref):
        if len(P) == 0:
            assert len(Q) < 3 or abs(_shoelace(Q)) < 1e-13
        else:
            assert _same_polygon(P, Q, atol=1e-10)
            assert _shoelace(P) > 0
    assert cell_areas(Y, h, D).sum() == pytest.approx(_shoelace(D), abs=1e-13)


@pytest.mark.parametrize("domain", ["square", "disc"])
def test_areas_match_a_dense_grid(domain):
    rng = np.random.default_rng(5)
    D = square_domain() if domain == "square" else disc_domain(1.0, 48)
    Y = rng.uniform(-1, 1, (15, 2))
    h = -0.5 * (Y ** 2).sum(1) + rng.normal(0, 0.03, 15)
    areas = cell_areas(Y, h, D)
    assert areas.sum() == pytest.approx(_shoelace(D), abs=1e-13)
    grid, w = _grid_areas(Y, h, D)
    perim = np.array([np.linalg.norm(np.roll(P, -1, 0) - P, axis=1).sum() if len(P) else 0.0
                      for P in power_cells(Y, h, D)])
    assert np.all(np.abs(areas - grid) <= perim * w + 1e-12)


def test_facets_lie_on_both_cells_and_give_the_mass_jacobian():
    rng = np.random.default_rng(6)
    D = disc_domain(1.0, 64)
    Y = rng.uniform(-1, 1, (20, 2))
    h = -0.5 * (Y ** 2).sum(1) + rng.normal(0, 0.02, 20)
    pairs, segs, lengths = power_facets(Y, h, D)
    assert np.all(pairs[:, 0] < pairs[:, 1]) and np.all(lengths > 0)
    for (i, j), s in zip(pairs, segs):
        for x in (s[0], s[1], s.mean(0)):
            v = Y @ x + h
            assert abs(v[i] - v[j]) < 1e-12 and v[i] >= v.max() - 1e-12
    # the Hessian built from the facets is the Jacobian of the masses (central differences)
    area = _shoelace(D)
    H = _hessian(Y, pairs, lengths, len(Y), area).toarray()
    eps = 1e-6
    J = np.zeros_like(H)
    for j in range(len(Y)):
        e = np.zeros(len(Y)); e[j] = eps
        J[:, j] = (cell_masses(Y, h + e, D) - cell_masses(Y, h - e, D)) / (2 * eps)
    np.testing.assert_allclose(H, J, atol=1e-7)


def test_torch_input_and_large_n_partition():
    rng = np.random.default_rng(7)
    Y = rng.uniform(-1, 1, (3000, 2))
    h = -0.5 * (Y ** 2).sum(1)
    a = cell_areas(torch.tensor(Y), torch.tensor(h))
    assert a.sum() == pytest.approx(4.0, abs=1e-12)
    inside = (np.abs(Y) < 1).all(1)
    assert np.all(a[inside] > 0)                          # Voronoi sites inside D own a cell


# ----------------------------------------------------------------------------- Newton solver

@pytest.mark.parametrize("n, domain, uniform", [(50, "square", True), (200, "disc", False),
                                                (500, "square", False)])
def test_newton_reaches_tolerance(n, domain, uniform):
    rng = np.random.default_rng(n)
    D = square_domain() if domain == "square" else disc_domain(1.0, 256)
    Y = rng.normal(size=(n, 2))
    w = None if uniform else rng.uniform(0.2, 1.0, n)
    w = None if w is None else w / w.sum()
    res = solve_power2d(Y, w, D, tol=1e-10)
    nu = np.full(n, 1 / n) if w is None else w
    assert res.converged and res.n_iter <= 15            # observed 7-8 iterations
    assert res.error <= 1e-10 and len(res.history) == res.n_iter + 1
    assert abs(res.heights.mean()) < 1e-14
    tv = 0.5 * np.abs(cell_masses(Y, res.heights, D) - nu).sum()
    assert tv <= 1e-10
    np.testing.assert_allclose(res.masses, cell_masses(Y, res.heights, D), atol=1e-15)


def test_newton_permutation_equivariance():
    rng = np.random.default_rng(11)
    Y = rng.normal(size=(60, 2))
    w = rng.uniform(0.5, 1.0, 60); w /= w.sum()
    perm = rng.permutation(60)
    a = solve_power2d(Y, w)
    b = solve_power2d(Y[perm], w[perm])
    np.testing.assert_allclose(b.heights, a.heights[perm], atol=1e-9)


def test_newton_recovers_closed_form_1d_heights():
    # targets on the x-axis: cell i is the strip b_{i-1} <= x1 <= b_i with b_i = -1 + 2 cumsum(nu)_i,
    # and t_i b_i + h_i = t_{i+1} b_i + h_{i+1}
    rng = np.random.default_rng(12)
    t = np.sort(rng.normal(size=8))
    nu = rng.uniform(0.5, 1.5, 8); nu /= nu.sum()
    b = -1 + 2 * np.cumsum(nu)[:-1]
    h = np.concatenate([[0.0], np.cumsum((t[:-1] - t[1:]) * b)])
    h -= h.mean()
    res = solve_power2d(np.column_stack([t, np.zeros(8)]), nu, tol=1e-12)
    assert res.converged
    np.testing.assert_allclose(res.heights, h, atol=1e-8)


def test_newton_symmetric_problem_and_warm_start():
    res = solve_power2d(CROSS)
    assert res.converged
    np.testing.assert_allclose(res.heights, 0.0, atol=1e-12)
    again = solve_power2d(CROSS, init_heights=res.heights)
    assert again.n_iter == 0 and again.converged
    one = solve_power2d([[0.2, 0.3]])
    assert one.converged and one.heights.tolist() == [0.0] and one.masses.tolist() == [1.0]


def test_newton_warns_when_max_iter_ends_first():
    rng = np.random.default_rng(13)
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        res = solve_power2d(rng.normal(size=(40, 2)), max_iter=1, tol=1e-14)
    assert not res.converged and res.n_iter == 1


def test_newton_is_silent_on_success():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_power2d(np.random.default_rng(14).normal(size=(20, 2)))


# ----------------------------------------------------------------------------- bad inputs

PENTAGRAM = disc_domain(1.0, 5)[[0, 2, 4, 1, 3]]         # left turns only, but winds twice


@pytest.mark.parametrize("call, exc, match", [
    (lambda: cell_areas(np.zeros((3, 3)), np.zeros(3)), ValueError, r"\(N, 2\)"),
    (lambda: cell_areas(np.zeros(3), np.zeros(3)), ValueError, "shape"),
    (lambda: cell_areas(np.zeros((0, 2)), np.zeros(0)), ValueError, "at least 1 row"),
    (lambda: cell_areas([[0.0, np.nan], [1.0, 0.0]], np.zeros(2)), ValueError, "NaN"),
    (lambda: cell_areas([[0.0, np.inf], [1.0, 0.0]], np.zeros(2)), ValueError, "Inf"),
    (lambda: cell_areas("abc", np.zeros(1)), TypeError, "numpy array"),
    (lambda: cell_areas([[0.0, 1.0], [2.0, 0.0], [0.0, 1.0]], np.zeros(3)), ValueError, "distinct"),
    (lambda: cell_areas(CROSS, np.zeros(3)), ValueError, "length 4"),
    (lambda: cell_areas(CROSS, np.zeros((4, 1))), ValueError, "shape"),
    (lambda: power_cells(CROSS, np.zeros(4), square_domain()[::-1]), ValueError, "counter-clockwise"),
    (lambda: power_cells(CROSS, np.zeros(4), [[0, 0], [2, 0], [1, 0.2], [1, 1], [0, 1]]),
     ValueError, "convex"),
    (lambda: power_cells(CROSS, np.zeros(4), [[0, 0], [1, 0], [2, 0]]), ValueError, "degenerate"),
    (lambda: power_cells(CROSS, np.zeros(4), [[0, 0], [1, 0], [1, 0], [0, 1]]), ValueError, "coincide"),
    (lambda: power_cells(CROSS, np.zeros(4), PENTAGRAM), ValueError, "self-intersecting"),
    (lambda: power_cells(CROSS, np.zeros(4), [[0, 0], [1, 0]]), ValueError, "K >= 3"),
    (lambda: power_facets(CROSS, np.zeros(4), np.zeros((4, 3))), ValueError, r"\(K, 2\)"),
    (lambda: solve_power2d(CROSS, [0.5, 0.5]), ValueError, "length 4"),
    (lambda: solve_power2d(CROSS, [0.5, 0.5, 0.5, -0.5]), ValueError, "non-negative"),
    (lambda: solve_power2d(CROSS, [0.3, 0.3, 0.3, 0.3]), ValueError, "sum to 1"),
    (lambda: solve_power2d(CROSS, [0.5, 0.5, 0.0, 0.0]), ValueError, "positive"),
    (lambda: solve_power2d(CROSS, tol=-1.0), ValueError, "tol"),
    (lambda: solve_power2d(CROSS, max_iter=0), ValueError, "max_iter"),
    (lambda: solve_power2d(CROSS, max_iter=2.5), TypeError, "max_iter"),
    (lambda: solve_power2d(CROSS, init_heights=np.zeros(5)), ValueError, "init_heights"),
    (lambda: solve_power2d(CROSS, init_heights=[5.0, 0, 0, 0]), ValueError, "cell 1 is empty"),
    (lambda: square_domain(-1.0), ValueError, "half_width"),
    (lambda: disc_domain(1.0, 2), ValueError, "n_vertices"),
    (lambda: disc_domain("1"), TypeError, "radius"),
])
def test_bad_inputs_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
