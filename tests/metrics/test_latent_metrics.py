"""Latent geometry: label agreement, between-modes and off-support rates, the singular set against labels,
and the partition / ranking scores they rest on — on constructed cases whose answers are known."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, roc_auc_score

import otgen.metrics.latent as latent_module
from otgen.data import gaussian_mixture, two_blobs
from otgen.metrics import (adjusted_rand_index, angle_separation, between_modes_rate, knn_label_agreement,
                           mode_recovery, normalized_mutual_info, off_support_rate, roc_auc)
from otgen.singular import SingularSetDetector
from otgen.transport import SemiDiscreteOT


def _ring(n, seed=None, n_arcs=4):
    """Points near the unit circle, labelled by the arc (quarter) they lie on: one connected mode.
    ``seed=None``: n evenly spaced points on the circle itself, symmetric about each arc boundary."""
    rng = np.random.default_rng(seed)
    theta = np.sort(rng.uniform(0, 2 * np.pi, n)) if seed is not None else (np.arange(n) + 0.5) * 2 * np.pi / n
    r = 1 + 0.05 * rng.standard_normal(n) if seed is not None else np.ones(n)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], 1), (theta // (2 * np.pi / n_arcs)).astype(np.int64)


# ----------------------------------------------------------------------------- partition and ranking scores

@pytest.mark.parametrize("seed", range(6))
def test_ari_and_nmi_match_scikit_learn_on_random_partitions(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    a, b = rng.integers(0, rng.integers(1, 6), n), rng.integers(0, rng.integers(1, 6), n)
    b[: n // 2] = a[: n // 2]                               # partly agreeing
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    assert normalized_mutual_info(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)


@pytest.mark.parametrize("a, b", [([0, 0, 0, 0], [0, 0, 0, 0]),          # one cluster each
                                  ([0, 0, 0, 0], [0, 1, 2, 3]),          # one cluster against singletons
                                  ([0, 1, 2, 3], [3, 2, 1, 0]),          # identical singletons, renamed
                                  ([0, 0, 1, 1, 2], [5, 5, 7, 7, 9]),    # identical partitions, renamed
                                  ([0, 0, 1, 1], [0, 1, 0, 1]),          # worse than chance
                                  ([0, 0, 0, 1], [0, 0, 0, 0]),
                                  ([4], [7])])
def test_ari_and_nmi_edge_cases_match_scikit_learn(a, b):
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    assert normalized_mutual_info(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)


def test_ari_and_nmi_known_values_and_errors():
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    assert normalized_mutual_info(np.array([0, 0, 1, 1]), torch.tensor([1, 1, 0, 0])) == pytest.approx(1.0)
    assert normalized_mutual_info([0, 0, 0, 0], [0, 1, 2, 3]) == 0.0
    with pytest.raises(ValueError, match="one length"):
        adjusted_rand_index([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="at least one"):
        normalized_mutual_info([], [])


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_matches_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, 80).astype(float)          # many ties
    pos = rng.random(80) < 0.3
    pos[:2] = [True, False]
    assert roc_auc(scores, pos) == pytest.approx(roc_auc_score(pos, scores), abs=1e-12)
    cont = rng.standard_normal(80) + pos                     # no ties
    assert roc_auc(torch.tensor(cont), pos.astype(int)) == pytest.approx(roc_auc_score(pos, cont), abs=1e-12)


def test_roc_auc_exact_cases():
    pos = np.array([False, False, True, True])
    assert roc_auc([0.1, 0.2, 0.3, 0.4], pos) == 1.0
    assert roc_auc([0.4, 0.3, 0.2, 0.1], pos) == 0.0
    assert roc_auc([1.0, 1.0, 1.0, 1.0], pos) == 0.5                     # all tied: ties count half
    assert roc_auc([0.1, 0.5, 0.5, 0.9], pos) == pytest.approx(3.5 / 4)  # one tie among the four pairs
    with pytest.raises(ValueError, match="positives and negatives"):
        roc_auc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="shape"):
        roc_auc([0.1, 0.2], [0, 1, 1])


# ----------------------------------------------------------------------------- labelled codes

def test_knn_label_agreement_and_between_modes_exact():
    train = np.arange(5.0)[:, None]                          # 0 1 2 3 4
    train_lab = np.array([0, 0, 0, 1, 1])
    codes, lab = np.array([[2.1], [3.9], [-5.0]]), np.array([0, 1, 0])
    # 3 nearest: (2, 3, 1) -> 0 1 0; (4, 3, 2) -> 1 1 0; (0, 1, 2) -> 0 0 0
    assert knn_label_agreement(codes, lab, train, train_lab, k=3) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert between_modes_rate(codes, train, train_lab, k=3) == pytest.approx(2 / 3)     # 2/3 < 0.7
    assert between_modes_rate(codes, train, train_lab, k=3, majority=0.6) == 0.0
    assert between_modes_rate(codes, train, train_lab, k=3, majority=1.0) == pytest.approx(2 / 3)
    assert knn_label_agreement(codes, lab, train, train_lab, k=1) == 1.0
    assert knn_label_agreement(codes, 1 - lab, train, train_lab, k=5) == pytest.approx((3 + 2 + 2) / 15)


def test_knn_agrees_with_brute_force_and_is_chunked(monkeypatch):
    rng = np.random.default_rng(0)
    train, codes = rng.standard_normal((300, 3)), rng.standard_normal((70, 3))
    train_lab, lab = rng.integers(0, 4, 300), rng.integers(0, 4, 70)
    nbr = train_lab[np.argsort(((codes[:, None] - train[None]) ** 2).sum(-1), axis=1)[:, :10]]
    votes = np.stack([(nbr == c).sum(1) for c in range(4)], 1)
    agree, between = (nbr == lab[:, None]).mean(), (votes.max(1) < 7).mean()
    assert knn_label_agreement(codes, lab, train, train_lab) == pytest.approx(agree)
    assert between_modes_rate(codes, train, train_lab) == pytest.approx(between)
    monkeypatch.setattr(latent_module, "_KNN_BLOCK", 1000)  # 3 rows per block
    assert knn_label_agreement(codes, lab, train, train_lab) == pytest.approx(agree)
    assert between_modes_rate(torch.tensor(codes), train, train_lab) == pytest.approx(between)


def test_separated_blobs_agree_and_nothing_is_between():
    train, train_lab = two_blobs(200, separation=10.0, std=0.5, seed=0)
    codes, lab = two_blobs(60, separation=10.0, std=0.5, seed=1)
    assert knn_label_agreement(codes, lab, train, train_lab) == 1.0
    assert between_modes_rate(codes, train, train_lab) == 0.0
    # codes halfway between the blobs have 5 neighbours in each
    middle = np.zeros((5, 2))
    middle[:, 1] = np.linspace(-0.1, 0.1, 5)
    assert between_modes_rate(middle, train, train_lab, k=20) == 1.0


def test_touching_blobs_disagree_and_some_codes_are_between():
    # centres 1 apart with std 0.5: the Bayes error is Phi(-1) ~ 0.16 and the label flips near x_1 = 0
    train, train_lab = two_blobs(400, separation=1.0, std=0.5, seed=0)
    codes, lab = two_blobs(200, separation=1.0, std=0.5, seed=1)
    agree = knn_label_agreement(codes, lab, train, train_lab)
    assert 0.6 < agree < 0.92
    assert between_modes_rate(codes, train, train_lab) > 0.1
    # separation is what the instruments see: farther blobs agree more
    far_train, far_lab = two_blobs(400, separation=3.0, std=0.5, seed=0)
    far_codes, far_code_lab = two_blobs(200, separation=3.0, std=0.5, seed=1)
    assert knn_label_agreement(far_codes, far_code_lab, far_train, far_lab) > agree
    assert between_modes_rate(far_codes, far_train, far_lab) < between_modes_rate(codes, train, train_lab)


def test_ring_arcs_touch_at_their_ends():
    """One connected ring cut into 4 labelled arcs: agreement high but below 1, and codes at arc ends are between."""
    train, train_lab = _ring(400)
    codes, lab = _ring(200, seed=1)
    agree = knn_label_agreement(codes, lab, train, train_lab)
    assert 0.8 < agree < 1.0
    assert 0 < between_modes_rate(codes, train, train_lab) < 0.3
    ends = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])   # arc boundaries: 5 neighbours each side
    assert between_modes_rate(ends, train, train_lab) == 1.0
    mids = np.array([[np.cos(t), np.sin(t)] for t in np.pi / 4 + np.pi / 2 * np.arange(4)])
    assert between_modes_rate(mids, train, train_lab) == 0.0
    assert knn_label_agreement(mids, np.arange(4), train, train_lab) == 1.0


def test_knn_input_errors():
    train, lab = np.zeros((5, 2)), np.zeros(5, dtype=int)
    with pytest.raises(ValueError, match="at most"):
        knn_label_agreement(train, lab, train, lab, k=6)
    with pytest.raises(ValueError, match="columns"):
        between_modes_rate(np.zeros((2, 3)), train, lab)
    with pytest.raises(TypeError, match="integer"):
        knn_label_agreement(train, lab.astype(float), train, lab, k=2)
    with pytest.raises(ValueError, match="5 entries"):
        between_modes_rate(train, train, lab[:4])
    with pytest.raises(ValueError, match="majority"):
        between_modes_rate(train, train, lab, k=2, majority=1.5)


# ----------------------------------------------------------------------------- singular set against labels

def test_angle_separation_on_fake_detectors():
    pairs = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    labels = np.array([0, 0, 0, 1, 1])
    res = angle_separation(SimpleNamespace(pairs_=pairs, angles_=np.array([0.1, 0.1, 1.2, 0.1])), labels)
    assert res == dict(auc=1.0, has_gap=True, gap_ratio=pytest.approx(12.0), within_median=pytest.approx(0.1),
                       between_median=pytest.approx(1.2), n_pairs=4)
    # a between-angle tied with a within-angle counts half; an even ramp of angles has no gap
    res = angle_separation(SimpleNamespace(pairs_=pairs, angles_=np.array([0.1, 0.3, 0.3, 0.2])), labels)
    assert res["auc"] == pytest.approx((1 + 0.5 + 1) / 3) and res["has_gap"] is False
    assert res["gap_ratio"] == pytest.approx(0.3 / 0.25)
    # a larger between-angle on a ramp: AUC 1 but no gap (modes that touch)
    ramp = SimpleNamespace(pairs_=pairs, angles_=np.array([0.1, 0.2, 0.4, 0.3]))
    assert angle_separation(ramp, labels)["auc"] == 1.0 and not angle_separation(ramp, labels)["has_gap"]
    one = angle_separation(ramp, np.zeros(5, dtype=int))
    assert math.isnan(one["auc"]) and math.isnan(one["between_median"]) and one["within_median"] == 0.25
    empty = angle_separation(SimpleNamespace(pairs_=np.zeros((0, 2), int), angles_=np.zeros(0)), labels)
    assert empty["n_pairs"] == 0 and not empty["has_gap"] and math.isnan(empty["auc"])
    with pytest.raises(ValueError, match="cell_labels"):
        angle_separation(ramp, labels[:3])


def test_mode_recovery_exact_and_weighted():
    comp, labels = np.array([0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 1])
    res = mode_recovery(comp, labels)
    assert res["ari"] == pytest.approx(adjusted_rand_score(labels, comp))
    assert res["nmi"] == pytest.approx(normalized_mutual_info_score(labels, comp))
    assert (res["n_modes"], res["n_components"]) == (3, 3)
    assert mode_recovery(comp, labels, weights=np.full(5, 0.2)) == pytest.approx(res)
    # integer weights summing to N: the cells repeated that many times
    w = np.array([2, 0, 1, 1, 1])
    rep_c, rep_l = np.repeat(comp, w), np.repeat(labels, w)
    res = mode_recovery(comp, labels, weights=w, min_mass=0.3)
    assert res["ari"] == pytest.approx(adjusted_rand_score(rep_l, rep_c))
    assert res["nmi"] == pytest.approx(normalized_mutual_info_score(rep_l, rep_c))
    assert (res["n_modes"], res["n_components"]) == (2, 3)                 # masses 2/5, 2/5, 1/5
    # a component without mass is a component but not a mode; the same partition scores 1
    res = mode_recovery(comp, np.array([4, 4, 6, 6, 7]), weights=torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0]))
    assert res == dict(ari=1.0, nmi=pytest.approx(1.0), n_modes=2, n_components=3)
    # one connected mode against labelled arcs: nothing recovered
    res = mode_recovery(np.zeros(8, dtype=int), np.repeat(np.arange(4), 2))
    assert res["ari"] == pytest.approx(0.0, abs=1e-12) and res["nmi"] == 0.0 and res["n_modes"] == 1
    with pytest.raises(ValueError, match="weights"):
        mode_recovery(comp, labels, weights=[1.0, -1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="min_mass"):
        mode_recovery(comp, labels, min_mass=0.0)
    with pytest.raises(ValueError, match="5 entries"):
        mode_recovery(comp, labels[:4])


def _fit(Y):
    ot = SemiDiscreteOT(tol=0.05, verbose=False).fit(Y)
    return ot, SingularSetDetector(n_samples=2**14).fit(ot)


@pytest.mark.parametrize("make", [lambda: two_blobs(120, seed=0),
                                  lambda: gaussian_mixture(90, 2, n_components=3, seed=1)], ids=["blobs", "mixture"])
def test_detector_on_separated_modes_recovers_the_labels(make):
    Y, labels = make()
    ot, det = _fit(Y)
    sep = angle_separation(det, labels)
    assert sep["auc"] == 1.0 and sep["has_gap"] and sep["n_pairs"] == len(det.pairs_)
    assert sep["between_median"] > 5 * sep["within_median"] and sep["gap_ratio"] > 5
    rec = mode_recovery(det.cell_component_, labels, weights=ot.weights_)
    assert rec == dict(ari=1.0, nmi=pytest.approx(1.0), n_modes=len(np.unique(labels)),
                       n_components=len(np.unique(labels)))


def test_detector_on_a_ring_finds_one_mode():
    """Arcs of one ring are not separated modes: the detector keeps the ring connected, so ARI = NMI = 0."""
    Y, arcs = _ring(120, seed=0)
    ot, det = _fit(Y)
    rec = mode_recovery(det.cell_component_, arcs, weights=ot.weights_)
    assert rec["n_components"] == 1 and rec["n_modes"] == 1
    assert rec["ari"] == pytest.approx(0.0, abs=1e-12) and rec["nmi"] == 0.0
    assert angle_separation(det, arcs)["auc"] < 1.0


# ----------------------------------------------------------------------------- off support

def test_off_support_rate_exact():
    data = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])     # NN distances 1, 1, 2
    res = off_support_rate(np.array([[0.0, 0.5], [3.0, 1.9], [3.0, 2.5], [10.0, 0.0]]), data, quantile=1.0)
    assert res["radius"] == 2.0 and res["rate"] == 0.5
    # quantile 0.5 of (1, 1, 2) is 1: the points at distance 1.9 and 2.5 and 7 are off the support
    res = off_support_rate(np.array([[0.0, 0.5], [3.0, 1.9], [3.0, 2.5], [10.0, 0.0]]), data, quantile=0.5)
    assert res["radius"] == 1.0 and res["rate"] == 0.75
    assert off_support_rate(data, data)["rate"] == 0.0
    assert off_support_rate(torch.tensor(data), torch.tensor(data) + 100.0, quantile=1.0)["rate"] == 1.0
    with pytest.raises(ValueError, match="columns"):
        off_support_rate(np.zeros((2, 3)), data)
    with pytest.raises(ValueError, match="quantile"):
        off_support_rate(data, data, quantile=1.5)
    with pytest.raises(ValueError, match="at least 2 row"):
        off_support_rate(data, data[:1])


def test_off_support_rate_between_two_modes():
    """Samples in the gap between two tight clusters are off the support, samples inside them are not."""
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(-5, 0.1, (200, 2)), rng.normal(5, 0.1, (200, 2))])
    inside = np.concatenate([rng.normal(-5, 0.05, (50, 2)), rng.normal(5, 0.05, (50, 2))])
    gap = np.stack([np.linspace(-3, 3, 40), np.linspace(-3, 3, 40)], 1)
    assert off_support_rate(inside, data)["rate"] == 0.0
    assert off_support_rate(gap, data)["rate"] == 1.0
    assert off_support_rate(np.concatenate([inside, gap]), data)["rate"] == pytest.approx(40 / 140)
