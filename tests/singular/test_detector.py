import math

import numpy as np
import pytest
import torch

from otgen.data import two_blobs
from otgen.singular import SingularSetDetector, dual_graph, gap_threshold, normal_angles, ratio_threshold
from otgen.transport import SemiDiscreteOT, sample_source


def _same_partition(a, b):
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


@pytest.fixture(scope="module")
def blobs():
    Y, labels = two_blobs(200, seed=0)
    ot = SemiDiscreteOT(tol=0.05, verbose=False).fit(Y)
    return Y, labels, ot, SingularSetDetector().fit(ot)


def test_two_blobs_singular_pairs_are_exactly_the_cross_pairs(blobs):
    Y, labels, ot, det = blobs
    cross = labels[det.pairs_[:, 0]] != labels[det.pairs_[:, 1]]
    assert cross.any()
    np.testing.assert_array_equal(det.singular_, cross)
    np.testing.assert_array_equal(det.singular_pairs_, det.pairs_[cross])
    assert det.n_components_ == 2
    assert _same_partition(det.cell_component_, labels)
    assert 0 < det.threshold_ < math.pi
    assert det.pairs_.shape == (len(det.angles_), 2) and (det.pairs_[:, 0] < det.pairs_[:, 1]).all()
    assert det.counts_.sum() == det.n_samples


def test_score_and_predict_on_two_blobs(blobs):
    Y, labels, ot, det = blobs
    X = sample_source("uniform", 5000, 2, seed=3)
    s, flag = det.score(X), det.predict(X)
    assert s.shape == (5000,) and s.dtype == np.float64 and flag.shape == (5000,) and flag.dtype == bool
    np.testing.assert_array_equal(flag, s > det.threshold_)
    _, idx = ot.topk(X, 3)
    lab = labels[idx.numpy()]
    # every flagged point sees both blobs among its top-3 cells; every point whose top-2 cells are in
    # different blobs is flagged (the top-2 cells are always adjacent)
    assert (lab != lab[:, :1]).any(1)[flag].all()
    assert flag[lab[:, 0] != lab[:, 1]].all()
    assert flag.any() and not flag.all()
    np.testing.assert_array_equal(det.score(X.numpy()), s)


def test_four_blobs_on_a_square_give_four_modes():
    rng = np.random.default_rng(1)
    centres = np.array([[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]])
    Y = np.concatenate([c + 0.3 * rng.standard_normal((50, 2)) for c in centres])
    labels = np.repeat(np.arange(4), 50)
    ot = SemiDiscreteOT(tol=0.05, verbose=False).fit(Y)
    det = SingularSetDetector().fit(ot)
    assert det.n_components_ == 4
    assert _same_partition(det.cell_component_, labels)
    cross = labels[det.pairs_[:, 0]] != labels[det.pairs_[:, 1]]
    np.testing.assert_array_equal(det.singular_, cross)


def test_single_gaussian_has_no_singular_set():
    Y = np.random.default_rng(2).standard_normal((200, 2))
    ot = SemiDiscreteOT(tol=0.05, verbose=False).fit(Y)
    det = SingularSetDetector().fit(ot)
    assert det.threshold_ == math.inf
    assert len(det.singular_pairs_) == 0 and det.n_components_ == 1
    assert (det.cell_component_ == 0).all()
    assert not det.predict(sample_source("uniform", 2000, 2, seed=1)).any()


def test_explicit_threshold_overrides(blobs):
    _, _, ot, det = blobs
    det2 = SingularSetDetector(angle_threshold=1e-9).fit(ot)
    assert det2.threshold_ == 1e-9 and det2.singular_.all()
    assert det2.n_components_ == len(ot.targets_)
    det3 = SingularSetDetector(angle_threshold="ratio").fit(ot)
    assert det3.threshold_ == pytest.approx(5.0 * np.median(det3.angles_))
    np.testing.assert_array_equal(det3.pairs_, det.pairs_)     # same seed, same graph


def test_normal_angles_closed_form_and_invariance():
    Y = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [-1.0, -3.0]])
    pairs = np.array([[0, 1], [1, 2], [2, 3]])
    a = normal_angles(Y, pairs)
    Z = (Y - Y.mean(0)) / np.sqrt(((Y - Y.mean(0)) ** 2).sum(1).mean())
    n = np.concatenate([Z, -np.ones((4, 1))], 1)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    expected = np.arccos((n[pairs[:, 0]] * n[pairs[:, 1]]).sum(1))
    np.testing.assert_allclose(a, expected, rtol=1e-12)
    np.testing.assert_allclose(normal_angles(7.3 * Y + np.array([5.0, -2.0]), pairs), a, rtol=1e-10)
    np.testing.assert_allclose(normal_angles(torch.tensor(0.01 * Y), torch.tensor(pairs)), a, rtol=1e-10)


def test_detector_invariant_under_scaling_of_targets(blobs):
    Y, labels, ot, det = blobs
    ot2 = SemiDiscreteOT(tol=0.05, verbose=False).fit(10.0 * Y)
    det2 = SingularSetDetector().fit(ot2)
    assert det2.n_components_ == 2 and _same_partition(det2.cell_component_, labels)
    common = {tuple(p) for p in det.pairs_} & {tuple(p) for p in det2.pairs_}
    a1 = dict(zip(map(tuple, det.pairs_), det.angles_))
    a2 = dict(zip(map(tuple, det2.pairs_), det2.angles_))
    assert len(common) > 0.9 * len(det.pairs_)
    np.testing.assert_allclose([a1[p] for p in common], [a2[p] for p in common], rtol=1e-5)


def test_gap_threshold_rules():
    lo = np.linspace(0.01, 0.02, 100)
    hi = np.array([0.5, 0.6, 0.7])
    t = gap_threshold(np.concatenate([hi, lo]))
    assert t == pytest.approx(math.sqrt(0.02 * 0.5))
    assert gap_threshold(lo) == math.inf                      # no angle reaches 5 x median
    assert gap_threshold(np.array([0.1])) == math.inf
    assert gap_threshold(np.concatenate([lo, [0.07, 0.08, 0.09]])) == math.inf   # gap ratio < 1.5 above 5 x med
    assert ratio_threshold(np.array([1.0, 2.0, 3.0]), 2.0) == 4.0
    with pytest.raises(ValueError, match="non-negative"):
        gap_threshold(np.array([0.1, -0.2]))
    with pytest.raises(ValueError, match="min_ratio"):
        gap_threshold(lo, min_ratio=0)


def test_dual_graph_pairs_are_true_neighbours(blobs):
    Y, labels, ot, det = blobs
    from otgen.transport.power2d import power_facets, square_domain
    pairs, counts = dual_graph(ot, 4096, seed=1)
    exact, _, _ = power_facets(Y, ot.heights_.numpy(), square_domain())   # the exact dual graph
    known = {tuple(p) for p in exact}
    assert all(tuple(p) in known for p in pairs)
    assert len({tuple(p) for p in det.pairs_} - known) == 0
    assert counts.sum() == 4096 and (counts > 0).all()


def test_validation_errors(blobs):
    Y, labels, ot, det = blobs
    with pytest.raises(RuntimeError, match="not fitted"):
        SingularSetDetector().score(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="columns"):
        det.score(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="shape"):
        det.predict(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        det.score(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="k must be >= 2"):
        SingularSetDetector(k=1).fit(ot)
    with pytest.raises(ValueError, match="angle_threshold"):
        SingularSetDetector(angle_threshold=4.0).fit(ot)
    with pytest.raises(ValueError, match="angle_threshold"):
        SingularSetDetector(angle_threshold="otsu").fit(ot)
    with pytest.raises(TypeError, match="seed"):
        SingularSetDetector(seed=1.5).fit(ot)
    with pytest.raises(TypeError, match="SemiDiscreteOT"):
        SingularSetDetector().fit(Y)
    with pytest.raises(ValueError, match="not fitted"):
        SingularSetDetector().fit(SemiDiscreteOT())
    with pytest.raises(ValueError, match=r"\(P, 2\)"):
        normal_angles(Y, np.zeros((3, 3), dtype=int))
    with pytest.raises(ValueError, match="index"):
        normal_angles(Y, np.array([[0, 200]]))


def test_quantile_threshold(blobs):
    _, _, ot, det = blobs
    det2 = SingularSetDetector(angle_threshold="quantile", quantile=0.8).fit(ot)
    assert det2.threshold_ == pytest.approx(np.quantile(det2.angles_, 0.8))
    assert det2.singular_.mean() == pytest.approx(0.2, abs=0.02)
    np.testing.assert_array_equal(det2.singular_, det2.angles_ > det2.threshold_)
    with pytest.raises(ValueError, match="quantile"):
        SingularSetDetector(angle_threshold="quantile", quantile=1.0).fit(ot)
    with pytest.raises(ValueError, match="mode_rule"):
        SingularSetDetector(mode_rule="simplex").fit(ot)


def test_facet_mode_rule_blocks_blending_across_singular_facets_only():
    # two blobs joined by a chain of points: singular facets inside the connected modes do not split
    # them, so the component rule blends there; the facet rule refuses exactly the rows with a pair
    # of cells across a singular facet
    rng = np.random.default_rng(3)
    Y = np.concatenate([rng.normal([-2.0, 0.0], 0.3, (60, 2)), rng.normal([2.0, 0.0], 0.3, (60, 2)),
                        np.stack([np.linspace(-1.4, 1.4, 15), np.zeros(15)], 1)])
    ot = SemiDiscreteOT(tol=0.05, verbose=False).fit(Y)
    tau = float(np.quantile(SingularSetDetector().fit(ot).angles_, 0.9))
    comp = SingularSetDetector(angle_threshold=tau).fit(ot)
    facet = SingularSetDetector(angle_threshold=tau, mode_rule="facet").fit(ot)
    assert facet.threshold_ == comp.threshold_
    np.testing.assert_array_equal(facet.cell_component_, comp.cell_component_)
    _, idx = ot.topk(sample_source("uniform", 3000, 2, seed=4), 3)
    idx = idx.numpy()
    c = comp.cell_component_[idx]
    np.testing.assert_array_equal(comp.same_mode(idx), (c == c[:, :1]).all(1))
    worst = np.max([facet._pair_angles(idx[:, a], idx[:, b]) for a, b in ((0, 1), (0, 2), (1, 2))], axis=0)
    np.testing.assert_array_equal(facet.same_mode(idx), worst <= tau)
    assert 0 < facet.same_mode(idx).mean() < 1
    assert (comp.same_mode(idx) & ~facet.same_mode(idx)).any()
    # with no singular set (the gap rule's inf) both rules blend everywhere
    assert SingularSetDetector(mode_rule="facet").fit(SemiDiscreteOT(tol=0.05, verbose=False).fit(
        np.random.default_rng(2).standard_normal((200, 2)))).same_mode(idx[:, :2] % 200).all()
