import numpy as np
import pytest
import torch

from otgen.data import (crescent, crescent_area, crescent_contains, gaussian_grid, gaussian_mixture,
                        gaussian_ring, grid_centers, ring_centers, sample_uniform_disc, two_blobs)


# ----------------------------------------------------------------------------- ring and grid

def test_ring_centers_exact():
    c = ring_centers(4, 2.0)
    np.testing.assert_allclose(c, [[2, 0], [0, 2], [-2, 0], [0, -2]], atol=1e-15)
    c8 = ring_centers()
    assert c8.shape == (8, 2)
    np.testing.assert_allclose(np.linalg.norm(c8, axis=1), 2.0, rtol=1e-15)
    np.testing.assert_allclose(c8.mean(axis=0), 0.0, atol=1e-15)


def test_grid_centers_exact():
    c = grid_centers(5, 1.0)
    assert c.shape == (25, 2)
    np.testing.assert_array_equal(c[0], [-2, -2])
    np.testing.assert_array_equal(c[1], [-2, -1])
    np.testing.assert_array_equal(c[5], [-1, -2])
    np.testing.assert_array_equal(c[24], [2, 2])
    np.testing.assert_array_equal(c.mean(axis=0), [0, 0])
    np.testing.assert_array_equal(grid_centers(2, 3.0), [[-1.5, -1.5], [-1.5, 1.5], [1.5, -1.5], [1.5, 1.5]])


@pytest.mark.parametrize("sampler, centers", [
    (lambda n, s: gaussian_ring(n, seed=s), ring_centers()),
    (lambda n, s: gaussian_grid(n, seed=s), grid_centers()),
])
def test_mode_samplers(sampler, centers):
    x, y = sampler(1003, 5)
    k = len(centers)
    assert x.shape == (1003, 2) and x.dtype == np.float64 and y.dtype == np.int64
    counts = np.bincount(y, minlength=k)
    assert counts.sum() == 1003 and counts.max() - counts.min() <= 1
    # std 0.05 vs. spacing >= 1: every point is nearest to its own centre.
    nearest = np.argmin(((x[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest, y)
    x2, y2 = sampler(1003, 5)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(x, sampler(1003, 6)[0])


def test_zero_std_puts_points_on_centres():
    x, y = gaussian_ring(16, n_modes=8, std=0.0)
    np.testing.assert_array_equal(x, ring_centers(8, 2.0)[y])
    np.testing.assert_array_equal(np.bincount(y), [2] * 8)
    x, y = gaussian_grid(50, grid=5, spacing=2.0, std=0)
    np.testing.assert_array_equal(x, grid_centers(5, 2.0)[y])


# ----------------------------------------------------------------------------- mixture in R^d

@pytest.mark.parametrize("d", [1, 2, 7])
def test_gaussian_mixture_standardised_exactly(d):
    x, y = gaussian_mixture(500, d, n_components=10, seed=1)
    assert x.shape == (500, d) and x.dtype == np.float64 and y.dtype == np.int64
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(x.var(axis=0), 1.0, atol=1e-12)
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [50] * 10)


def test_gaussian_mixture_params_and_separation():
    x, y, p = gaussian_mixture(2000, 3, n_components=5, seed=2, standardize=False, return_params=True)
    means, covs = p["means"], p["covariances"]
    assert means.shape == (5, 3) and covs.shape == (5, 3, 3)
    np.testing.assert_allclose(p["weights"], 0.2)
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1) + 1e9 * np.eye(5)
    assert dist.min() >= 6.0
    eig = np.linalg.eigvalsh(covs)
    assert eig.min() >= 0.3 ** 2 - 1e-12 and eig.max() <= 1.0 + 1e-12
    # Empirical means of each component match the parameters (400 points, std <= 1: 5 sigma ~ 0.25).
    for k in range(5):
        assert np.linalg.norm(x[y == k].mean(0) - means[k]) < 0.25
    # Standardised parameters are the same affine image of the raw ones.
    xs, ys, ps = gaussian_mixture(2000, 3, n_components=5, seed=2, return_params=True)
    np.testing.assert_array_equal(ys, y)
    mu, sd = x.mean(0), x.std(0)
    np.testing.assert_allclose(xs, (x - mu) / sd, atol=1e-12)
    np.testing.assert_allclose(ps["means"], (means - mu) / sd, atol=1e-12)
    np.testing.assert_allclose(ps["covariances"], covs / np.outer(sd, sd), atol=1e-12)


def test_gaussian_mixture_deterministic():
    a = gaussian_mixture(100, 4, seed=9)
    b = gaussian_mixture(100, 4, seed=9)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], gaussian_mixture(100, 4, seed=10)[0])


# ----------------------------------------------------------------------------- two blobs

@pytest.mark.parametrize("d", [1, 2, 5])
def test_two_blobs_exactly_symmetric(d):
    x, y = two_blobs(200, d=d, separation=4.0, std=0.5, seed=3)
    assert x.shape == (200, d)
    np.testing.assert_array_equal(y, np.repeat([0, 1], 100))
    mirror = x[:100].copy()
    mirror[:, 0] *= -1
    np.testing.assert_array_equal(x[100:], mirror)
    # As a set, the sample is invariant under the reflection x_1 -> -x_1.
    reflected = x * np.r_[-1.0, np.ones(d - 1)]
    np.testing.assert_array_equal(np.unique(reflected, axis=0), np.unique(x, axis=0))
    # Blob 0 is centred at -2 e_1 (mean of 100 draws, std 0.5: 6 sigma = 0.3).
    np.testing.assert_allclose(x[:100].mean(0), np.r_[-2.0, np.zeros(d - 1)], atol=0.3)


def test_two_blobs_odd_and_deterministic():
    x, y = two_blobs(5, seed=1)
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(x[3:], x[:2] * [-1, 1])
    np.testing.assert_array_equal(x, two_blobs(5, seed=1)[0])
    x1, y1 = two_blobs(1)
    assert x1.shape == (1, 2) and y1.tolist() == [0]


# ----------------------------------------------------------------------------- uniform regions

def test_uniform_disc():
    x = sample_uniform_disc(20000, radius=2.0, seed=0)
    assert x.shape == (20000, 2) and x.dtype == np.float64
    r = np.linalg.norm(x, axis=1)
    assert r.max() <= 2.0
    # P(|x| <= 1) = 1/4 for radius 2; binomial sd = sqrt(.25*.75/20000) ~ 0.0031, 5 sd = 0.016.
    assert abs((r <= 1.0).mean() - 0.25) < 0.016
    np.testing.assert_array_equal(x, sample_uniform_disc(20000, radius=2.0, seed=0))


def test_crescent_area_closed_form():
    # Midpoint-rule quadrature on a fine grid: error O(perimeter * h) ~ 1e-3.
    h = 2.0 / 2000
    g = -1 + h * (np.arange(2000) + 0.5)
    xx, yy = np.meshgrid(g, g)
    inside = crescent_contains(np.stack([xx.ravel(), yy.ravel()], 1))
    assert abs(inside.sum() * h * h - crescent_area()) < 2e-3
    # Internally tangent limit (offset -> R - r): the whole inner disc, pi r^2, is removed.
    a = crescent_area(outer_radius=1.0, inner_radius=0.5, offset=0.5 + 1e-12)
    assert abs(a - (np.pi - np.pi * 0.25)) < 1e-5
    # Equal radii, offset -> 0: the two discs coincide and the crescent's area -> 0.
    assert crescent_area(outer_radius=1.0, inner_radius=1.0, offset=1e-9) < 1e-8


def test_crescent_samples_inside_and_area_consistent():
    x = crescent(5000, seed=0)
    assert x.shape == (5000, 2) and x.dtype == np.float64
    assert crescent_contains(x).all()
    np.testing.assert_array_equal(x, crescent(5000, seed=0))
    # Monte Carlo: fraction of the bounding box [-1, 1]^2 inside the crescent vs. exact area / 4.
    # n = 200000 draws: binomial sd <= 0.0012; tolerance 5 sd = 0.006.
    box = np.random.default_rng(123).uniform(-1, 1, size=(200000, 2))
    assert abs(crescent_contains(box).mean() - crescent_area() / 4) < 0.006
    # Uniformity: the sample's share of the upper half is 1/2 (symmetry), within 5 sd.
    assert abs((x[:, 1] > 0).mean() - 0.5) < 5 * np.sqrt(0.25 / 5000)
    # Non-convex: the midpoint of the two horns' tips (near (0.6, 0)) lies outside.
    assert not crescent_contains(np.array([[0.6, 0.0]]))[0]


def test_crescent_contains_accepts_torch_and_custom_shape():
    pts = torch.tensor([[-0.9, 0.0], [0.0, 0.0], [1.5, 0.0], [0.0, 0.99]], dtype=torch.float32)
    np.testing.assert_array_equal(crescent_contains(pts), [True, False, False, True])
    x = crescent(300, seed=1, outer_radius=2.0, inner_radius=1.0, offset=1.5)
    assert crescent_contains(x, outer_radius=2.0, inner_radius=1.0, offset=1.5).all()


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("call, exc, match", [
    (lambda: gaussian_ring(0), ValueError, "n must be >= 1"),
    (lambda: gaussian_ring(10, n_modes=0), ValueError, "n_modes"),
    (lambda: gaussian_ring(10, std=-1.0), ValueError, "std"),
    (lambda: gaussian_ring(10, seed=-2), ValueError, "seed"),
    (lambda: gaussian_grid(10.0), TypeError, "n must be an integer"),
    (lambda: gaussian_grid(10, spacing=0.0), ValueError, "spacing"),
    (lambda: gaussian_mixture(10, 0), ValueError, "d must be >= 1"),
    (lambda: gaussian_mixture(10, "3"), TypeError, "d must be an integer"),
    (lambda: gaussian_mixture(1, 2), ValueError, "n >= 2"),
    (lambda: gaussian_mixture(10, 2, standardize="yes"), TypeError, "standardize"),
    (lambda: two_blobs(10, d=0), ValueError, "d must be >= 1"),
    (lambda: two_blobs(10, separation=float("nan")), ValueError, "separation"),
    (lambda: sample_uniform_disc(0), ValueError, "n must be >= 1"),
    (lambda: sample_uniform_disc(5, radius=-1.0), ValueError, "radius"),
    (lambda: crescent(0), ValueError, "n must be >= 1"),
    (lambda: crescent(10, offset=2.0), ValueError, "circles must cross"),
    (lambda: crescent_area(inner_radius=0.2, offset=0.5), ValueError, "circles must cross"),
    (lambda: crescent_contains(np.zeros((3, 3))), ValueError, r"shape \(n, 2\)"),
    (lambda: crescent_contains(np.zeros(3)), ValueError, "shape"),
    (lambda: crescent_contains(np.array([[np.nan, 0.0]])), ValueError, "NaN"),
])
def test_validation(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
