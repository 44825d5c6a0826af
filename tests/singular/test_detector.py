import inspect
import math

import numpy as np
import pytest
import torch
from sklearn.base import clone

from otgen import NotFittedError
from otgen.data import two_blobs
from otgen.singular import (SingularSetDetector, dual_graph, gap_threshold, normal_angles, persistence_threshold,
                            ratio_threshold)
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
    X = sample_source("uniform", 5000, 2, seed=3).numpy()
    s, flag = det.score(X), det.predict(X)                     # numpy in, numpy out
    assert isinstance(s, np.ndarray) and isinstance(flag, np.ndarray)
    assert s.shape == (5000,) and s.dtype == np.float64 and flag.shape == (5000,) and flag.dtype == bool
    np.testing.assert_array_equal(flag, s > det.threshold_)
    # flagged exactly where a facet of the point's cell to the other blob is within the band
    # (the singular pairs are the cross pairs)
    cells, nbr, dist = det.facet_distances(X)
    assert nbr.shape == dist.shape and (np.diff(np.minimum(dist, 1e300), axis=1) >= 0).all()
    band = det.band * det.cell_width_
    cross = (nbr >= 0) & (dist <= band) & (labels[np.maximum(nbr, 0)] != labels[cells][:, None])
    np.testing.assert_array_equal(flag, cross.any(1))
    assert flag.any() and not flag.all()
    np.testing.assert_array_equal(cells, ot.assign(X))
    st, ft = det.score(torch.as_tensor(X)), det.predict(torch.as_tensor(X))      # torch in, torch out
    assert isinstance(st, torch.Tensor) and st.dtype == torch.float64 and ft.dtype == torch.bool
    np.testing.assert_array_equal(st.numpy(), s)
    np.testing.assert_array_equal(ft.numpy(), flag)
    _, idx = ot.topk(torch.as_tensor(X), 3)
    assert isinstance(det.score_cells(idx), torch.Tensor)


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
    assert counts.sum() == 4096 and (counts >= 0).all() and (counts > 0).any()   # 0: seen as a nearest facet only


def test_validation_errors(blobs):
    Y, labels, ot, det = blobs
    with pytest.raises(NotFittedError, match="not fitted"):
        SingularSetDetector().score(np.zeros((3, 2)))
    for method in ("score_cells", "same_component", "no_singular_pair"):
        with pytest.raises(NotFittedError):
            getattr(SingularSetDetector(), method)(np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="index"):
        det.same_component(np.array([[0, 200]]))
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
    with pytest.raises(NotFittedError, match="not fitted"):
        SingularSetDetector().fit(SemiDiscreteOT())
    with pytest.raises(ValueError, match="min_size"):
        SingularSetDetector("persistence", min_size=0.6).fit(ot)
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
    assert "mode_rule" not in SingularSetDetector().get_params()       # the blend rule lives on OTGenerator


def test_no_singular_pair_blocks_blending_across_singular_facets_only():
    # two blobs joined by a chain of points: singular facets inside the connected modes do not split
    # them, so same_component passes there; no_singular_pair refuses exactly the rows with a pair
    # of cells across a singular facet
    rng = np.random.default_rng(3)
    Y = np.concatenate([rng.normal([-2.0, 0.0], 0.3, (60, 2)), rng.normal([2.0, 0.0], 0.3, (60, 2)),
                        np.stack([np.linspace(-1.4, 1.4, 15), np.zeros(15)], 1)])
    ot = SemiDiscreteOT(tol=0.05, verbose=False).fit(Y)
    tau = float(np.quantile(SingularSetDetector().fit(ot).angles_, 0.9))
    det = SingularSetDetector(angle_threshold=tau).fit(ot)
    _, idx = ot.topk(sample_source("uniform", 3000, 2, seed=4), 3)
    idx = idx.numpy()
    c = det.cell_component_[idx]
    comp, facet = det.same_component(idx), det.no_singular_pair(idx)
    assert comp.dtype == bool and facet.shape == (3000,)
    np.testing.assert_array_equal(comp, (c == c[:, :1]).all(1))
    worst = np.max([normal_angles(Y, np.stack([idx[:, a], idx[:, b]], 1)) for a, b in ((0, 1), (0, 2), (1, 2))],
                   axis=0)
    np.testing.assert_array_equal(facet, worst <= tau)
    assert 0 < facet.mean() < 1
    assert (comp & ~facet).any()
    # torch in, torch out
    assert torch.equal(det.no_singular_pair(torch.as_tensor(idx)), torch.as_tensor(facet))
    assert torch.equal(det.same_component(torch.as_tensor(idx)), torch.as_tensor(comp))
    # with no singular set (the gap rule's inf) both tests pass everywhere
    one = SingularSetDetector().fit(SemiDiscreteOT(tol=0.05, verbose=False).fit(
        np.random.default_rng(2).standard_normal((200, 2))))
    assert one.no_singular_pair(idx[:, :2] % 200).all() and one.same_component(idx[:, :2] % 200).all()


def _two_fit_persistence(ot, min_size=0.05, seed=0):
    """The old recipe (compare_video.fit_detector): a first fit, persistence_threshold, a second fit."""
    first = SingularSetDetector(seed=seed).fit(ot)
    tau = persistence_threshold(first, min_size, weights=ot.weights_.numpy())
    if not np.isfinite(tau):
        return None
    return SingularSetDetector(angle_threshold=min(tau, math.pi), seed=seed).fit(ot)


def _bridge_ot():
    """Two big blobs and a small cluster between them (8 of 208 points)."""
    Y, labels = two_blobs(200, seed=1, std=0.3)
    Y = np.concatenate([Y, np.random.default_rng(2).normal(0.0, 0.05, size=(8, 2))])
    return SemiDiscreteOT(tol=0.05, verbose=False, method="exact2d").fit(Y), np.r_[labels, np.full(8, 2)]


@pytest.mark.parametrize("case", ["blobs", "bridge"])
def test_persistence_rule_in_one_fit_equals_the_two_fit_recipe(blobs, case):
    ot = blobs[2] if case == "blobs" else _bridge_ot()[0]
    old = _two_fit_persistence(ot)
    assert old is not None and math.isfinite(old.threshold_)
    new = SingularSetDetector("persistence").fit(ot)
    assert new.threshold_ == old.threshold_
    np.testing.assert_array_equal(new.pairs_, old.pairs_)
    np.testing.assert_array_equal(new.singular_, old.singular_)
    np.testing.assert_array_equal(new.cell_component_, old.cell_component_)
    assert new.threshold_ == pytest.approx(persistence_threshold(new, 0.05, weights=ot.weights_.numpy()))


def test_persistence_rule_on_one_mode_is_inf():
    Y = np.random.default_rng(0).uniform(-1, 1, size=(150, 2))
    det = SingularSetDetector("persistence").fit(SemiDiscreteOT(tol=0.05, verbose=False, method="exact2d").fit(Y))
    assert det.threshold_ == math.inf and det.n_components_ == 1 and not det.singular_.any()


def test_persistence_rule_uses_min_size():
    # each blob holds 100 / 208 = 0.48 of the mass: with min_size = 0.49 there are never two major
    # modes, so no singular set; with 0.01 the small cluster is major too, which changes the threshold
    ot, labels = _bridge_ot()
    assert SingularSetDetector("persistence", min_size=0.49).fit(ot).threshold_ == math.inf
    small, default = (SingularSetDetector("persistence", min_size=m).fit(ot) for m in (0.01, 0.05))
    assert small.threshold_ != default.threshold_
    for det in (small, default):
        assert det.n_components_ == 3 and _same_partition(det.cell_component_, labels)


def test_contract_clone_params_and_docstring(blobs):
    det = SingularSetDetector("quantile", k=4, quantile=0.8, min_size=0.1)
    c = clone(det)
    assert c is not det and c.get_params() == det.get_params()
    assert "quantile=0.8" in repr(det) and "min_size=0.1" in repr(det)
    assert not hasattr(clone(blobs[3]), "threshold_")
    doc = SingularSetDetector.__doc__
    assert doc is not None
    for name in inspect.signature(SingularSetDetector.__init__).parameters:
        if name != "self":
            assert f"{name} :" in doc, name


def test_save_load_round_trip(blobs, tmp_path):
    Y, labels, ot, det = blobs
    path = tmp_path / "det.pt"
    det.save(path)
    back = SingularSetDetector.load(path, ot=ot)
    assert back.get_params() == det.get_params()
    for name in ("pairs_", "counts_", "angles_", "singular_", "singular_pairs_", "cell_component_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(det, name))
    assert back.threshold_ == det.threshold_ and back.n_components_ == det.n_components_
    X = sample_source("uniform", 2000, 2, seed=7).numpy()
    np.testing.assert_array_equal(back.score(X), det.score(X))
    assert back.fitted_on(ot)
    # without an OT map: the cell-level methods work, score / predict say what is missing
    bare = SingularSetDetector.load(path)
    _, idx = ot.topk(torch.as_tensor(X), 3)
    np.testing.assert_array_equal(bare.score_cells(idx.numpy()), det.score_cells(idx.numpy()))
    np.testing.assert_array_equal(bare.same_component(idx.numpy()), det.same_component(idx.numpy()))
    with pytest.raises(ValueError, match="no OT map attached"):
        bare.predict(X)
    np.testing.assert_array_equal(bare.attach(ot).predict(X), det.predict(X))
    # another map is refused
    other = SemiDiscreteOT(tol=0.05, verbose=False).fit(Y[:150])
    with pytest.raises(ValueError, match="not the map"):
        SingularSetDetector.load(path, ot=other)
    assert not det.fitted_on(other)
    # an infinite threshold survives the file too
    one = SingularSetDetector().fit(SemiDiscreteOT(tol=0.05, verbose=False).fit(
        np.random.default_rng(2).standard_normal((100, 2))))
    one.save(tmp_path / "one.pt")
    assert SingularSetDetector.load(tmp_path / "one.pt").threshold_ == math.inf
    with pytest.raises(NotFittedError):
        SingularSetDetector().save(tmp_path / "x.pt")
