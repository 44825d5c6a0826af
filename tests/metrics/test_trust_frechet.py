"""Trust check: the Fréchet distance against the usual FID code path, ``scipy.linalg.sqrtm`` of Σ1 Σ2.

The reference below is the formula of the FID reference code (Heusel et al.'s TTUR repository and
pytorch-fid): :math:`|\\mu_1 - \\mu_2|^2 + \\operatorname{tr}(\\Sigma_1 + \\Sigma_2 - 2 (\\Sigma_1\\Sigma_2)^{1/2})`,
with the square root of the non-symmetric product taken by ``scipy.linalg.sqrtm`` and its imaginary
round-off dropped. otgen computes the same trace from the eigenvalues of the symmetric
:math:`\\Sigma_1^{1/2}\\Sigma_2\\Sigma_1^{1/2}`.
"""

import numpy as np
import pytest

from otgen.metrics import frechet_distance, gaussian_frechet_distance

scipy_linalg = pytest.importorskip("scipy.linalg")

# The FID code adds eps * I to both covariances when sqrtm's result is not finite.
FID_EPS = 1e-6


def fid_reference(mu1, sigma1, mu2, sigma2):
    covmean = scipy_linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * FID_EPS
        covmean = scipy_linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@pytest.fixture(params=[2, 16, 64], ids=lambda d: f"d{d}")
def features(request):
    """Two correlated feature clouds of dimension d, 4d + 100 rows each."""
    d = request.param
    rng = np.random.default_rng(d)
    n = 4 * d + 100
    a = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    b = rng.standard_normal((n + 30, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)
    return a, b


def test_frechet_distance_matches_the_fid_sqrtm_formula(features):
    a, b = features
    ref = fid_reference(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)


def test_gaussian_frechet_distance_matches_on_ill_conditioned_covariances():
    """Covariances with eigenvalues spread over eight decades (the regime where sqrtm is least accurate)."""
    rng = np.random.default_rng(11)
    d = 12
    q1, _ = np.linalg.qr(rng.standard_normal((d, d)))
    q2, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s1 = (q1 * np.logspace(-4, 4, d)) @ q1.T
    s2 = (q2 * np.logspace(-4, 4, d)[::-1]) @ q2.T
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    ref = fid_reference(m1, s1, m2, s2)
    assert gaussian_frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-6)
