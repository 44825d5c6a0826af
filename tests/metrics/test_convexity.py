"""Convex regression: the residual is ~0 on gradients of convex functions and clearly positive otherwise."""

import numpy as np
import pytest

from otgen.metrics import convexity

cvxpy = pytest.importorskip("cvxpy")

# Clarabel solves these small QPs to ~1e-9; a residual below this is "a gradient of a convex function".
EXACT = 1e-5


@pytest.fixture
def points(rng):
    """40 points in the plane."""
    return rng.normal(size=(40, 2))


def _brenier_map(x, rng, n_targets=6):
    """The gradient of u(x) = max_i <x, y_i> + h_i (a semi-discrete OT map): piecewise constant."""
    y, h = rng.normal(size=(n_targets, x.shape[1])), rng.normal(size=n_targets)
    return y[np.argmax(x @ y.T + h, axis=1)]


def test_gradients_of_convex_functions_have_zero_residual(points, rng):
    a = rng.normal(size=(2, 2))
    quadratic = points @ (a @ a.T) + np.array([1.0, -2.0])              # gradient of x'Ax/2 + <b, x>
    assert convexity.convex_map_residual(points, quadratic) < EXACT
    assert convexity.convex_map_residual(points, _brenier_map(points, rng)) < EXACT
    assert convexity.convex_map_residual(points, quadratic + _brenier_map(points, rng)) < EXACT


def test_rotation_by_90_degrees_is_far_from_any_gradient(points):
    rotation = np.array([[0.0, -1.0], [1.0, 0.0]])
    residual = convexity.convex_map_residual(points, points @ rotation.T)
    assert 0.5 < residual <= 1.0 + EXACT


def test_a_monotone_but_not_symmetric_map_sits_in_between(points):
    """x -> (cI + S) x with S skew: not a gradient for any c, but cyclically monotone on few points when
    c is large (measured on these 40 points: r = 0.87, 0.36, 0.10 at c = 0, 1, 2; ~0 at c = 4)."""
    skew = np.array([[0.0, -1.0], [1.0, 0.0]])
    rs = [convexity.convex_map_residual(points, points @ (c * np.eye(2) + skew).T) for c in (0.0, 1.0, 4.0)]
    assert rs[0] > rs[1] > 0.1 and rs[2] < EXACT


def test_fit_is_a_convex_interpolant_and_invariant_to_scalings(points, rng):
    t = points @ np.array([[0.0, -1.0], [1.0, 0.5]]).T
    r, fit = convexity.convex_map_residual(points, t, return_fit=True)
    f, g = fit["values"], fit["gradients"]
    gap = f[None, :] - f[:, None] - np.einsum("id,ijd->ij", g, points[None, :, :] - points[:, None, :])
    assert gap.min() > -1e-6 * np.abs(f).max()                          # f_j >= f_i + <g_i, x_j - x_i>
    assert np.sqrt(((g - t) ** 2).sum() / ((t - t.mean(0)) ** 2).sum()) == pytest.approx(r, rel=1e-6)
    moved = convexity.convex_map_residual(3.0 * points + 7.0, 0.1 * t - 2.0)
    assert moved == pytest.approx(r, rel=1e-4)


def test_validation(points, monkeypatch):
    with pytest.raises(ValueError, match="same shape"):
        convexity.convex_map_residual(points, points[:, :1])
    with pytest.raises(ValueError, match="at least 2 row"):
        convexity.convex_map_residual(points[:1], points[:1])
    with pytest.raises(ValueError, match="finite|NaN"):
        convexity.convex_map_residual(points, np.full_like(points, np.nan))
    monkeypatch.setattr(convexity, "cp", None)
    with pytest.raises(ModuleNotFoundError, match=r"otgen\[cvxpy\]"):
        convexity.convex_map_residual(points, points)
