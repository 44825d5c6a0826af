"""Stiff targets: the cast comes after centring and scaling (errors describe the user's data),
near-duplicates are merged and split back (checked against the exact power diagram), and
``method="auto"`` picks the exact 2-D solver in 2-D."""

import warnings

import numpy as np
import pytest
import torch

from otgen import ConvergenceWarning
from otgen.transport import SemiDiscreteOT, power2d
from otgen.transport._frame import close_pairs, group_labels, merge, split_group


def _fit(Y, weights=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        return SemiDiscreteOT(**kw).fit(Y, weights)


@pytest.fixture(scope="module")
def targets():
    return np.random.default_rng(5).normal(size=(80, 3))


@pytest.fixture(scope="module")
def reference(targets):
    return _fit(targets, tol=0.02)


# ----------------------------------------------------------------------------- offsets and scales

@pytest.mark.parametrize("scale", [1e-25, 1e12])
def test_a_scaled_input_gives_the_scaled_heights(targets, reference, scale):
    ot = _fit(targets * scale, tol=0.02)
    torch.testing.assert_close(ot.heights_ / scale, reference.heights_, atol=1e-9, rtol=1e-9)
    X = np.random.default_rng(1).uniform(-1, 1, size=(500, 3))
    assert (ot.assign(X) == reference.assign(X)).all()


def test_an_offset_rounded_by_float32_warns_but_solves_the_same_problem(targets, reference):
    with pytest.warns(UserWarning, match=r"storing Y in float32 rounds it by up to 0\.0\d+.*mean is 1e\+06 from"):
        ot = _fit(targets + 1e6, tol=0.02)
    torch.testing.assert_close(ot.heights_, reference.heights_, atol=1e-8, rtol=0)   # heights ignore offsets
    X = np.random.default_rng(2).uniform(-1, 1, size=(500, 3))
    assert (ot.assign(X) == reference.assign(X)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ot64 = _fit(targets + 1e6, tol=0.02, dtype=torch.float64)       # float64 stores them exactly
    assert float((ot64.targets_ - torch.as_tensor(targets + 1e6)).abs().max()) == 0


@pytest.mark.parametrize("transform, match", [
    (lambda Y: Y + 1e8, r"mean is 1e\+08 from the origin\): distinct rows of Y become equal in float32. Centre Y"),
    (lambda Y: Y * 1e39, r"Y reaches \|y\| = .*e\+39, beyond the largest float32"),
])
def test_what_float32_cannot_store_is_named_for_the_users_data(targets, transform, match):
    with pytest.raises(ValueError, match=match) as err:
        SemiDiscreteOT(tol=0.02).fit(transform(targets))
    assert "duplicate" not in str(err.value) and "Inf" not in str(err.value)


def test_true_duplicates_are_still_refused(targets):
    Y = np.vstack([targets, targets[:2]])
    with pytest.raises(ValueError, match=r"2 duplicate row\(s\) \(equal in float64\)"):
        SemiDiscreteOT().fit(Y)


# ----------------------------------------------------------------------------- near-duplicates

def test_close_pairs_is_exact_against_all_distances():
    rng = np.random.default_rng(0)
    Z = torch.as_tensor(rng.normal(size=(400, 5)))
    Z[100:110] = Z[:10] + 1e-7 * torch.as_tensor(rng.normal(size=(10, 5)))
    Z[200] = Z[0] + 3e-8
    thr = 1e-6
    D = torch.cdist(Z, Z, compute_mode="donot_use_mm_for_euclid_dist")
    want = {(i, j) for i, j in torch.nonzero(D <= thr).tolist() if i < j}
    got = {tuple(p) for p in close_pairs(Z, thr, seed=3).tolist()}
    assert len(want) == 12 and got == want        # 10 pairs, and 0-100-200 is a triangle


def test_group_labels_join_chains():
    pairs = torch.tensor([[0, 5], [5, 9], [2, 3]])
    labels = group_labels(10, pairs)
    assert labels[0] == labels[5] == labels[9] and labels[2] == labels[3] and labels[0] != labels[2]
    assert int(labels.max()) + 1 == 10 - 3


def test_split_group_gives_each_member_its_share_of_the_points():
    rng = np.random.default_rng(1)
    X = torch.as_tensor(rng.uniform(-1, 1, size=(5000, 3)))
    D = 1e-6 * torch.as_tensor(rng.normal(size=(3, 3)))
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    g = split_group(X, D, w)
    scores = X @ D.T + g
    counts = torch.bincount(scores.argmax(1), minlength=3)
    assert (counts - torch.round(w * 5000).long()).abs().max() <= 1
    assert abs(float(scores.max(1).values.mean())) < 1e-12      # the merged cell's outer facets do not move


def test_merge_sums_masses_at_the_weighted_mean():
    Z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0 + 1e-9]], dtype=torch.float64)
    nu = torch.tensor([0.5, 0.1, 0.4], dtype=torch.float64)
    Zm, W = merge(Z, nu, torch.tensor([0, 1, 1]))
    torch.testing.assert_close(W, torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(Zm[1], torch.tensor([1.0, 1.0 + 0.8e-9], dtype=torch.float64))


@pytest.mark.parametrize("gap", [1e-6, 1e-9])
def test_merged_near_duplicates_match_the_exact_power_diagram(gap):
    """A pair `gap` apart in float32 (stochastic method, d = 2): the exact cell areas of the fitted
    heights, computed in float64 by the exact 2-D power diagram, match every weight."""
    rng = np.random.default_rng(4)
    Y = rng.normal(size=(60, 2))
    Y[59] = Y[7] + gap * np.array([0.6, 0.8])
    nu = rng.uniform(0.5, 1.5, size=60)
    nu /= nu.sum()
    ot = _fit(Y, nu, tol=0.01, method="stochastic")
    exact = power2d.cell_masses(Y, ot.heights_.numpy(), power2d.square_domain())
    assert 0.5 * np.abs(exact - nu).sum() <= 0.015             # tol 0.01, estimated with noise <= 0.005
    assert abs(exact[7] - nu[7]) < 0.1 * nu[7] and abs(exact[59] - nu[59]) < 0.1 * nu[59]
    assert ot._frame_targets.dtype == torch.float64            # the map scores the pair in float64
    est = ot.cell_masses(2**20)
    assert abs(est[7] - exact[7]) < 0.05 * nu[7] and abs(est[59] - exact[59]) < 0.05 * nu[59]


def test_a_near_duplicate_triple_in_8d_converges():
    rng = np.random.default_rng(6)
    Y = rng.normal(size=(200, 8))
    Y[198] = Y[3] + 1e-7
    Y[199] = Y[3] - 2e-7
    ot = _fit(Y, tol=0.03)
    est = ot.cell_masses(2**20) * 200
    assert ot.converged_ and np.abs(est[[3, 198, 199]] - 1).max() < 0.3


# ----------------------------------------------------------------------------- method="auto"

@pytest.mark.parametrize("d, source, exact", [(2, "uniform", True), (2, "ball", True), (2, "gaussian", False),
                                              (3, "uniform", False)])
def test_auto_is_exact_in_2d_on_bounded_sources(d, source, exact):
    Y = np.random.default_rng(7).normal(size=(40, d))
    ot = _fit(Y, tol=0.05, source=source)
    assert ot.method == "auto" and (ot.history_[-1]["n_samples"] == 0) == exact
