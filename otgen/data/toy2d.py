"""Toy data sets: Gaussian rings and grids, Gaussian mixtures, two blobs, a crescent.

Every sampler is deterministic under ``seed`` and returns float64 points; samplers
with modes also return int64 mode labels, balanced (counts differ by at most one).
The 8-mode ring and 25-mode grid are the standard mode-collapse benchmarks
(Metz et al., "Unrolled generative adversarial networks", ICLR 2017; Srivastava et
al., "VEEGAN", NeurIPS 2017); the crescent is a non-convex support whose optimal
transport map from a convex source is discontinuous (Figalli, "Regularity
properties of optimal maps between nonconvex domains in the plane", 2010), the
setting of the singular-set figure.
"""

from __future__ import annotations

import numpy as np
import torch

from otgen._validation import as_tensor, check_positive_float, check_positive_int

__all__ = [
    "ring_centers", "gaussian_ring", "grid_centers", "gaussian_grid", "gaussian_mixture",
    "two_blobs", "crescent", "crescent_contains", "crescent_area", "sample_uniform_disc",
]


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(check_positive_int(seed, "seed", minimum=0))


def _balanced_labels(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n labels in 0..k-1, each used floor(n/k) or ceil(n/k) times, in random order."""
    return rng.permutation(np.arange(n, dtype=np.int64) % k)


# --------------------------------------------------------------------------- ring and grid

def ring_centers(n_modes: int = 8, radius: float = 2.0) -> np.ndarray:
    """Centres of the ring modes, ``c_k = radius (cos 2πk/K, sin 2πk/K)``.

    Returns
    -------
    centers : np.ndarray of float64, shape (n_modes, 2)
    """
    n_modes = check_positive_int(n_modes, "n_modes")
    radius = check_positive_float(radius, "radius")
    theta = 2 * np.pi * np.arange(n_modes) / n_modes
    return radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def gaussian_ring(n: int, n_modes: int = 8, radius: float = 2.0, std: float = 0.05,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Equal-weight mixture of isotropic Gaussians centred on a circle.

    .. math:: x = c_{\\ell} + \\sigma z, \\quad z \\sim N(0, I_2), \\quad
              c_k = r(\\cos 2\\pi k/K, \\sin 2\\pi k/K).

    Parameters
    ----------
    n : int
        Number of points.
    n_modes : int, default 8
        Number of modes K.
    radius : float, default 2.0
        Radius r of the circle of centres (see :func:`ring_centers`).
    std : float, default 0.05
        Standard deviation σ of each mode (0 puts every point on its centre).
    seed : int, default 0

    Returns
    -------
    points : np.ndarray of float64, shape (n, 2)
    labels : np.ndarray of int64, shape (n,)
        Mode of each point, an index into ``ring_centers(n_modes, radius)``.
    """
    n = check_positive_int(n, "n")
    std = check_positive_float(std, "std", allow_zero=True)
    centers = ring_centers(n_modes, radius)
    rng = _rng(seed)
    labels = _balanced_labels(n, len(centers), rng)
    return centers[labels] + std * rng.standard_normal((n, 2)), labels


def grid_centers(grid: int = 5, spacing: float = 1.0) -> np.ndarray:
    """Centres of a ``grid × grid`` lattice centred at the origin.

    Centre ``k = i * grid + j`` is ``spacing * (i - (grid-1)/2, j - (grid-1)/2)``.

    Returns
    -------
    centers : np.ndarray of float64, shape (grid**2, 2)
    """
    grid = check_positive_int(grid, "grid")
    spacing = check_positive_float(spacing, "spacing")
    coords = spacing * (np.arange(grid) - (grid - 1) / 2)
    ii, jj = np.meshgrid(coords, coords, indexing="ij")
    return np.stack([ii.ravel(), jj.ravel()], axis=1)


def gaussian_grid(n: int, grid: int = 5, spacing: float = 1.0, std: float = 0.05,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Equal-weight mixture of isotropic Gaussians on a square lattice (25 modes by default).

    .. math:: x = c_{\\ell} + \\sigma z, \\quad z \\sim N(0, I_2).

    Parameters
    ----------
    n : int
        Number of points.
    grid : int, default 5
        Lattice side; there are ``grid**2`` modes (see :func:`grid_centers`).
    spacing : float, default 1.0
        Distance between neighbouring centres.
    std : float, default 0.05
        Standard deviation σ of each mode.
    seed : int, default 0

    Returns
    -------
    points : np.ndarray of float64, shape (n, 2)
    labels : np.ndarray of int64, shape (n,)
        Index into ``grid_centers(grid, spacing)``.
    """
    n = check_positive_int(n, "n")
    std = check_positive_float(std, "std", allow_zero=True)
    centers = grid_centers(grid, spacing)
    rng = _rng(seed)
    labels = _balanced_labels(n, len(centers), rng)
    return centers[labels] + std * rng.standard_normal((n, 2)), labels


# --------------------------------------------------------------------------- mixtures in R^d

def _separated_means(k: int, d: int, min_dist: float, rng: np.random.Generator) -> np.ndarray:
    """k points in a cube, pairwise at least ``min_dist`` apart (sequential rejection, growing cube)."""
    half = min_dist * max(1.0, k ** (1.0 / d))
    means: list[np.ndarray] = []
    while len(means) < k:
        for _ in range(200):
            cand = rng.uniform(-half, half, size=d)
            if all(np.linalg.norm(cand - m) >= min_dist for m in means):
                means.append(cand)
                break
        else:
            half *= 1.25
    return np.array(means)


def gaussian_mixture(n: int, d: int, n_components: int = 10, seed: int = 0, standardize: bool = True,
                     *, return_params: bool = False):
    """Equal-weight mixture of Gaussians in R^d with random, well-separated means.

    Component k is :math:`N(m_k, \\Sigma_k)` with :math:`\\Sigma_k = Q_k \\operatorname{diag}(s_k)^2 Q_k^T`,
    :math:`Q_k` a random rotation and :math:`s_k \\in [0.3, 1]^d`; the means are at
    least 6 apart (six times the largest standard deviation). With ``standardize``
    the points are then mapped by :math:`x \\mapsto (x - \\bar x) / \\hat\\sigma`
    per coordinate, so each coordinate of the sample has mean 0 and variance 1
    (population variance, ``ddof=0``). This is the solver benchmark's target.

    Parameters
    ----------
    n : int
        Number of points (``n >= 2`` when ``standardize``).
    d : int
        Dimension.
    n_components : int, default 10
        Number of components K; labels are balanced.
    seed : int, default 0
    standardize : bool, default True
    return_params : bool, default False
        Also return the mixture parameters, in the coordinates of the returned points.

    Returns
    -------
    points : np.ndarray of float64, shape (n, d)
    labels : np.ndarray of int64, shape (n,)
    params : dict, only when ``return_params``
        ``"means"`` (K, d), ``"covariances"`` (K, d, d), ``"weights"`` (K,).
    """
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    k = check_positive_int(n_components, "n_components")
    if not isinstance(standardize, (bool, np.bool_)):
        raise TypeError(f"standardize must be a bool, got {type(standardize).__name__} {standardize!r}")
    if standardize and n < 2:
        raise ValueError(f"standardize=True needs n >= 2 points to estimate a variance, got n={n}")
    rng = _rng(seed)
    means = _separated_means(k, d, 6.0, rng)
    rotations = np.linalg.qr(rng.standard_normal((k, d, d)))[0]
    scales = rng.uniform(0.3, 1.0, size=(k, d))
    factors = rotations * scales[:, None, :]  # L_k = Q_k diag(s_k), Sigma_k = L_k L_k^T
    labels = _balanced_labels(n, k, rng)
    points = rng.standard_normal((n, d))
    for j in range(k):  # one product per component: memory O(n d), not O(n d^2)
        mask = labels == j
        points[mask] = means[j] + points[mask] @ factors[j].T
    covs = factors @ factors.transpose(0, 2, 1)
    if standardize:
        mu, sigma = points.mean(axis=0), points.std(axis=0)
        points = (points - mu) / sigma
        means = (means - mu) / sigma
        covs = covs / np.outer(sigma, sigma)
    if return_params:
        return points, labels, {"means": means, "covariances": covs, "weights": np.full(k, 1.0 / k)}
    return points, labels


def two_blobs(n: int, d: int = 2, separation: float = 4.0, std: float = 0.5,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two isotropic Gaussian blobs at :math:`\\pm (\\text{separation}/2) e_1`; the mode boundary is x_1 = 0.

    The first ``ceil(n/2)`` points (label 0) are drawn from :math:`N(-(s/2) e_1, \\sigma^2 I_d)`;
    point ``ceil(n/2) + i`` (label 1) is point ``i`` mirrored in the hyperplane
    :math:`x_1 = 0` (its first coordinate negated). For even n the sample is
    therefore exactly symmetric under that reflection.

    Parameters
    ----------
    n : int
    d : int, default 2
    separation : float, default 4.0
        Distance between the two centres.
    std : float, default 0.5
    seed : int, default 0

    Returns
    -------
    points : np.ndarray of float64, shape (n, d)
    labels : np.ndarray of int64, shape (n,)
        0 for the blob at negative x_1, 1 for the one at positive x_1.
    """
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    separation = check_positive_float(separation, "separation", allow_zero=True)
    std = check_positive_float(std, "std", allow_zero=True)
    rng = _rng(seed)
    m = (n + 1) // 2
    first = std * rng.standard_normal((m, d))
    first[:, 0] -= separation / 2
    second = first[: n - m].copy()
    second[:, 0] *= -1
    labels = np.concatenate([np.zeros(m, dtype=np.int64), np.ones(n - m, dtype=np.int64)])
    return np.concatenate([first, second]), labels


# --------------------------------------------------------------------------- uniform regions

def sample_uniform_disc(n: int, radius: float = 1.0, seed: int = 0) -> np.ndarray:
    """Uniform samples in the disc of the given radius centred at 0 (``r = R sqrt(U)``).

    Returns
    -------
    points : np.ndarray of float64, shape (n, 2)
    """
    n = check_positive_int(n, "n")
    radius = check_positive_float(radius, "radius")
    rng = _rng(seed)
    r = radius * np.sqrt(rng.random(n))
    theta = 2 * np.pi * rng.random(n)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def _crescent_params(outer_radius, inner_radius, offset) -> tuple[float, float, float]:
    R = check_positive_float(outer_radius, "outer_radius")
    r = check_positive_float(inner_radius, "inner_radius")
    c = check_positive_float(offset, "offset")
    if not abs(R - r) < c < R + r:
        raise ValueError(f"the two circles must cross for a crescent: need |outer_radius - inner_radius| "
                         f"< offset < outer_radius + inner_radius, got outer_radius={R}, inner_radius={r}, offset={c}")
    return R, r, c


def crescent_contains(points, *, outer_radius: float = 1.0, inner_radius: float = 0.8,
                      offset: float = 0.6) -> np.ndarray:
    """Membership in the crescent {|x| <= R} minus {|x - (c, 0)| < r}.

    Parameters
    ----------
    points : array_like, shape (n, 2)
    outer_radius, inner_radius, offset : float
        R, r and c; the default crescent opens towards +x_1.

    Returns
    -------
    mask : np.ndarray of bool, shape (n,)
    """
    R, r, c = _crescent_params(outer_radius, inner_radius, offset)
    x = as_tensor(points, "points", ndim=2, dtype=torch.float64).numpy()
    if x.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got shape {x.shape}")
    in_outer = x[:, 0] ** 2 + x[:, 1] ** 2 <= R * R
    in_inner = (x[:, 0] - c) ** 2 + x[:, 1] ** 2 < r * r
    return in_outer & ~in_inner


def crescent_area(*, outer_radius: float = 1.0, inner_radius: float = 0.8, offset: float = 0.6) -> float:
    """Exact area of the crescent: the outer disc minus its lens with the inner disc.

    .. math:: |C| = \\pi R^2 - \\Big[ r^2 \\arccos\\frac{c^2 + r^2 - R^2}{2cr}
              + R^2 \\arccos\\frac{c^2 + R^2 - r^2}{2cR}
              - \\tfrac12 \\sqrt{(-c+r+R)(c+r-R)(c-r+R)(c+r+R)} \\Big].
    """
    R, r, c = _crescent_params(outer_radius, inner_radius, offset)
    lens = (r * r * np.arccos((c * c + r * r - R * R) / (2 * c * r))
            + R * R * np.arccos((c * c + R * R - r * r) / (2 * c * R))
            - 0.5 * np.sqrt((-c + r + R) * (c + r - R) * (c - r + R) * (c + r + R)))
    return float(np.pi * R * R - lens)


def crescent(n: int, seed: int = 0, *, outer_radius: float = 1.0, inner_radius: float = 0.8,
             offset: float = 0.6) -> np.ndarray:
    """Uniform samples in a crescent (C-shaped, non-convex) region, by rejection from its bounding box.

    The region is the disc of radius R at 0 minus the disc of radius r at (c, 0);
    see :func:`crescent_contains` and :func:`crescent_area`.

    Returns
    -------
    points : np.ndarray of float64, shape (n, 2)
    """
    n = check_positive_int(n, "n")
    R, r, c = _crescent_params(outer_radius, inner_radius, offset)
    rng = _rng(seed)
    accept = crescent_area(outer_radius=R, inner_radius=r, offset=c) / (4 * R * R)
    chunks, have = [], 0
    while have < n:
        batch = int((n - have) / accept * 1.2) + 16
        cand = rng.uniform(-R, R, size=(batch, 2))
        cand = cand[crescent_contains(cand, outer_radius=R, inner_radius=r, offset=c)]
        chunks.append(cand)
        have += len(cand)
    return np.concatenate(chunks)[:n]
