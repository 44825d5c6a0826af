import math

import numpy as np
import ot
import pytest
import scipy.linalg
import torch

from otgen.metrics import (class_histogram, copy_rate, coverage_kl, density_coverage, detection_scores,
                           frechet_distance, gaussian_frechet_distance, loss_plateau, low_confidence_rate,
                           mode_mixture_rate, nn_median, precision_recall, sliced_wasserstein)

PROBS = np.array([
    [1.0, 0.0, 0.0, 0.0],     # confident
    [0.5, 0.5, 0.0, 0.0],     # mixed at every tau <= 0.5
    [0.7, 0.15, 0.15, 0.0],   # two classes >= 0.15 only
    [0.25, 0.25, 0.25, 0.25],  # mixed at tau <= 0.25
    [0.6, 0.35, 0.05, 0.0],   # mixed at tau <= 0.35
])


# -- mode mixture / confidence -----------------------------------------------------

def test_mode_mixture_rate_hand_built():
    out = mode_mixture_rate(PROBS, taus=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6))
    assert out == {0.1: 4 / 5, 0.2: 3 / 5, 0.3: 2 / 5, 0.4: 1 / 5, 0.5: 1 / 5, 0.6: 0.0}


def test_mode_mixture_rate_torch_and_scalar_tau():
    assert mode_mixture_rate(torch.tensor(PROBS), taus=0.3) == {0.3: 2 / 5}


def test_low_confidence_rate_hand_built():
    assert low_confidence_rate(PROBS) == 1 / 5            # only the uniform row has max < 0.5
    assert low_confidence_rate(PROBS, threshold=0.65) == 3 / 5
    assert low_confidence_rate(PROBS, threshold=1.0) == 4 / 5


@pytest.mark.parametrize("bad, err", [
    (np.array([[0.5, 0.6]]), ValueError),        # rows do not sum to 1
    (np.array([[1.5, -0.5]]), ValueError),       # negative (logits)
    (np.array([0.5, 0.5]), ValueError),          # 1-D
    (np.array([[np.nan, 1.0]]), ValueError),
    ("probs", TypeError),
])
def test_probs_validation(bad, err):
    with pytest.raises(err):
        mode_mixture_rate(bad)


def test_tau_validation():
    with pytest.raises(ValueError, match="tau"):
        mode_mixture_rate(PROBS, taus=(0.0,))
    with pytest.raises(ValueError, match="threshold"):
        low_confidence_rate(PROBS, threshold=1.5)


# -- histograms ----------------------------------------------------------------------

def test_class_histogram_labels_and_probs():
    h = class_histogram(np.array([0, 1, 1, 3]), n_classes=4)
    np.testing.assert_array_equal(h, [0.25, 0.5, 0.0, 0.25])
    h = class_histogram(PROBS, n_classes=4)   # arg-max: 0, 0 (tie -> first), 0, 0, 0
    np.testing.assert_array_equal(h, [1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="integers"):
        class_histogram(np.array([0, 4]), n_classes=4)
    with pytest.raises(ValueError, match="integers"):
        class_histogram(np.array([0.5]), n_classes=4)
    with pytest.raises(ValueError, match="shape"):
        class_histogram(PROBS, n_classes=10)


def test_coverage_kl_values():
    u = np.full(10, 0.1)
    assert coverage_kl(u, u) == 0.0
    assert coverage_kl(np.arange(1, 11), 2 * np.arange(1, 11)) == pytest.approx(0.0, abs=1e-15)  # counts are normalised
    collapsed = np.eye(10)[3]
    assert coverage_kl(collapsed, u) == pytest.approx(math.log(10), rel=1e-6)
    q, p = np.array([0.75, 0.25]), np.array([0.5, 0.5])
    exact = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert coverage_kl(q, p) == pytest.approx(exact, rel=1e-8)
    assert coverage_kl(p, np.array([1.0, 0.0]), eps=0.0) == math.inf
    assert math.isfinite(coverage_kl(p, np.array([1.0, 0.0])))
    with pytest.raises(ValueError, match="same length"):
        coverage_kl(u, np.full(5, 0.2))
    with pytest.raises(ValueError, match="non-negative"):
        coverage_kl(np.array([-0.1, 1.1]), p)


# -- Fréchet distance ----------------------------------------------------------------

def _exact_sample(mean, cov, n, seed):
    """n points whose sample mean and (unbiased) covariance are exactly mean and cov."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T   # sample cov = I
    return mean + z @ np.linalg.cholesky(cov).T


def test_frechet_identical_is_zero():
    x = np.random.default_rng(0).standard_normal((200, 16))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.tensor(x), x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_diagonal_closed_form():
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    a, b = _exact_sample(m1, np.diag(v1), 500, 1), _exact_sample(m2, np.diag(v2), 300, 2)
    exact = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(exact, rel=1e-9)


def test_frechet_full_covariance_matches_sqrtm():
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    s1, s2 = A @ A.T + 0.1 * np.eye(4), B @ B.T + 0.1 * np.eye(4)
    m1, m2 = rng.standard_normal(4), rng.standard_normal(4)
    r1 = scipy.linalg.sqrtm(s1).real
    exact = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    assert gaussian_frechet_distance(m1, s1, m2, s2) == pytest.approx(exact, rel=1e-8)
    a, b = _exact_sample(m1, s1, 400, 4), _exact_sample(m2, s2, 400, 5)
    assert frechet_distance(a, b) == pytest.approx(exact, rel=1e-8)


def test_frechet_singular_covariance_is_finite():
    # rank-1 covariances in 3-D: distance between two point clouds on lines
    a = np.outer(np.linspace(-1, 1, 50), [1.0, 0.0, 0.0])
    b = np.outer(np.linspace(-1, 1, 50), [0.0, 1.0, 0.0])
    v = np.var(np.linspace(-1, 1, 50), ddof=1)
    assert frechet_distance(a, b) == pytest.approx(2 * v, rel=1e-9)   # orthogonal: tr S1 + tr S2


def test_frechet_validation():
    with pytest.raises(ValueError, match="same dimension"):
        frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 2 row"):
        frechet_distance(np.zeros((1, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="symmetric"):
        gaussian_frechet_distance(np.zeros(2), np.array([[1.0, 1.0], [0.0, 1.0]]), np.zeros(2), np.eye(2))


# -- precision / recall, density / coverage -------------------------------------------

def test_precision_recall_identical_and_far():
    x = np.random.default_rng(0).standard_normal((300, 8))
    assert precision_recall(x, x, k=5, device="cpu") == {"precision": 1.0, "recall": 1.0}
    assert precision_recall(x, x + 100.0, k=5, device="cpu") == {"precision": 0.0, "recall": 0.0}
    dc = density_coverage(x, x + 100.0, k=5, device="cpu")
    assert dc == {"density": 0.0, "coverage": 0.0}
    assert density_coverage(x, x, k=5, device="cpu")["coverage"] == 1.0


def test_precision_recall_hand_computed_k1():
    real = np.array([[0.0], [1.0], [3.0]])          # 1-NN radii: 1, 1, 2
    fake = np.array([[0.5], [2.6], [10.0], [10.3]])  # 1-NN radii: 2.1, 2.1, 0.3, 0.3
    # precision: 0.5 in B(0,1); 2.6 in B(3,2); 10, 10.3 in no real ball -> 2/4
    # recall: 0 in B(0.5,2.1); 1 in B(0.5,2.1); 3 in B(2.6,2.1) -> 3/3
    out = precision_recall(real, fake, k=1, device="cpu", chunk_size=2)
    assert out["precision"] == pytest.approx(0.5) and out["recall"] == 1.0
    # density: 0.5 lies in B(0,1), B(1,1) and B(3,2)? |3-0.5|=2.5 > 2 -> 2 balls; 2.6 in B(3,2) and B(1,1)? 1.6 > 1 -> 1
    # density = (2 + 1) / (1 * 4); coverage: balls of 0, 1, 3 all contain a fake -> 1
    dc = density_coverage(real, fake, k=1, device="cpu", chunk_size=2)
    assert dc["density"] == pytest.approx(3 / 4) and dc["coverage"] == 1.0
    # swapping roles: precision <-> recall
    out2 = precision_recall(fake, real, k=1, device="cpu")
    assert out2 == {"precision": out["recall"], "recall": out["precision"]}


def test_precision_recall_chunking_invariant():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((97, 5)), rng.standard_normal((83, 5)) + 0.5
    full = precision_recall(a, b, k=3, device="cpu")
    assert precision_recall(a, b, k=3, device="cpu", chunk_size=7) == full
    assert 0.0 < full["precision"] < 1.0 and 0.0 < full["recall"] < 1.0
    dfull = density_coverage(a, b, k=3, device="cpu")
    dchunk = density_coverage(a, b, k=3, device="cpu", chunk_size=10)
    assert dchunk["coverage"] == dfull["coverage"]
    assert dchunk["density"] == pytest.approx(dfull["density"], abs=1e-15)


def test_knn_validation():
    with pytest.raises(ValueError, match="more than k=5"):
        precision_recall(np.zeros((5, 2)), np.zeros((10, 2)), k=5, device="cpu")
    with pytest.raises(ValueError, match="same dimension"):
        density_coverage(np.zeros((10, 2)), np.zeros((10, 3)), device="cpu")
    with pytest.raises(TypeError, match="k must be an integer"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 2)), k=2.5, device="cpu")


# -- sliced Wasserstein ---------------------------------------------------------------

def test_sliced_wasserstein():
    x = np.random.default_rng(0).standard_normal((100, 3))
    assert sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)
    # a translation by t: every 1-D projection moves by <t, theta>, so SW_2^2 = E <t, theta>^2
    t = np.array([3.0, 0.0, 0.0])
    ref = ot.sliced_wasserstein_distance(x, x + t, n_projections=64, seed=7)
    assert sliced_wasserstein(x, torch.tensor(x + t), n_projections=64, seed=7) == pytest.approx(float(ref), rel=1e-12)
    assert sliced_wasserstein(x, x + t, n_projections=2000) == pytest.approx(3.0 / math.sqrt(3), rel=0.05)
    # 1-D: the sliced distance is the Wasserstein distance, |shift|
    assert sliced_wasserstein(x[:, :1], x[:, :1] + 2.0, n_projections=5) == pytest.approx(2.0, rel=1e-12)
    with pytest.raises(ValueError, match="same dimension"):
        sliced_wasserstein(x, x[:, :2])


# -- copy rate and nearest-neighbour spacing -----------------------------------------------

def test_copy_rate_hand_built():
    train = np.array([[0.0, 0.0], [10.0, 0.0]])
    z = np.array([[0.0, 0.0], [10.0, 0.05], [0.0, 0.5], [5.0, 0.0]])    # distances 0, 0.05, 0.5, 5
    assert copy_rate(z, train, 0.1) == 0.5
    assert copy_rate(z, train, 0.0) == 0.25                             # an exact copy is at distance exactly 0
    assert copy_rate(z, train, 1.0) == 0.75 and copy_rate(z, train, 5.0) == 1.0
    assert copy_rate(torch.tensor(z), torch.tensor(train), 0.1) == 0.5
    # the plain OT map outputs training codes only: copy rate 1 at any radius, even for large coordinates
    big = 1e3 + np.random.default_rng(0).standard_normal((50, 8))
    assert copy_rate(big[::-1], big, 0.0) == 1.0
    with pytest.raises(ValueError, match="same dimension"):
        copy_rate(z, np.zeros((3, 3)), 0.1)
    with pytest.raises(ValueError, match="radius"):
        copy_rate(z, train, -1.0)


def test_copy_rate_chunking(monkeypatch):
    import otgen.metrics.generation as gen
    rng = np.random.default_rng(1)
    z, train = rng.standard_normal((50, 3)), rng.standard_normal((30, 3))
    ref = copy_rate(z, train, 0.5)
    monkeypatch.setattr(gen, "_NN_CHUNK", 7)
    assert copy_rate(z, train, 0.5) == ref and 0 < ref < 1
    nn = np.sort((np.linalg.norm(z[:, None] - z[None], axis=-1) + np.diag([np.inf] * 50)).min(1))
    assert nn_median(z) == pytest.approx(nn[24], rel=1e-12)                 # the lower median of 50 values


def test_nn_median_hand_built():
    # points on a line at 0, 1, 3, 7, 8: nearest-neighbour distances 1, 1, 2, 1, 1 -> median 1
    z = np.array([[0.0], [1.0], [3.0], [7.0], [8.0]])
    assert nn_median(z) == 1.0
    # four points (even count): distances 1, 1, 2, 2 -> the lower median, 1
    assert nn_median(np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [5.0, 0.0]])) == 1.0
    assert nn_median(np.array([[2.0, 2.0], [2.0, 2.0]])) == 0.0           # a duplicate is at distance 0
    with pytest.raises(ValueError, match="at least 2 row"):
        nn_median(np.zeros((1, 2)))


def test_loss_plateau():
    loss = np.concatenate([np.full(80, 5.0), np.full(10, 2.0), np.full(10, 1.0)])   # n = 100, k = 10
    out = loss_plateau(loss)
    assert out == {"last_10pct": 1.0, "previous_10pct": 2.0, "relative_change": 1.0}
    flat = loss_plateau([0.5] * 30)
    assert flat["relative_change"] == 0.0 and flat["last_10pct"] == 0.5
    short = loss_plateau([3.0])                                           # k = 1: no tenth before the last
    assert short["last_10pct"] == 3.0 and math.isnan(short["previous_10pct"]) and math.isnan(short["relative_change"])
    assert loss_plateau([1.0, 2.0, 3.0]) == {"last_10pct": 3.0, "previous_10pct": 2.0, "relative_change": -1 / 3}
    assert math.isnan(loss_plateau([1.0, 0.0])["relative_change"])       # a last mean of 0: undefined
    with pytest.raises(ValueError, match="NaN"):
        loss_plateau([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least 1 row"):
        loss_plateau([])


# -- detection ----------------------------------------------------------------------------

def test_detection_scores():
    s = detection_scores([True, True, False, False, True], [True, False, False, True, True])
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3) and s["flagged"] == 3 and s["positives"] == 3
    assert s["true_positives"] == 2 and s["n"] == 5 and s["flagged_rate"] == pytest.approx(3 / 5)
    s = detection_scores(np.array([True, False, False, False]), np.array([True, True, False, False]))
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 0.5, pytest.approx(2 / 3))
    s = detection_scores([False, False], [True, False])
    assert math.isnan(s["precision"]) and s["recall"] == 0.0 and s["f1"] == 0.0
    s = detection_scores([True, False], [False, False])
    assert s["precision"] == 0.0 and math.isnan(s["recall"]) and s["f1"] == 0.0
    assert math.isnan(detection_scores([], [])["flagged_rate"])
    with pytest.raises(ValueError):
        detection_scores([True], [True, False])
    with pytest.raises(ValueError, match="1-D"):
        detection_scores([[True]], [[True]])
