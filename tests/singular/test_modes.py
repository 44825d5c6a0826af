"""The "modes" threshold rule: persistent modes of the dual graph, their number not given (issue 13, section 3)."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from otgen.data import gaussian_mixture, two_blobs
from otgen.singular import THRESHOLD_RULES, SingularSetDetector, intrinsic_dimension, mode_threshold
from otgen.transport import SemiDiscreteOT


def _mixture(n, d, seed, spread=1.0):
    """gaussian_mixture with 10 components, each one's spread about its mean multiplied by ``spread``
    (1: means at least 6 standard deviations apart; 1.8: about 3.3, neighbouring modes nearly touch)."""
    Y, labels, params = gaussian_mixture(n, d, n_components=10, seed=seed, return_params=True)
    means = params["means"][labels]
    return means + spread * (Y - means), labels


def _fit(Y):
    torch.set_num_threads(1)
    method = "exact2d" if Y.shape[1] == 2 else "stochastic"
    return SemiDiscreteOT(tol=0.05, verbose=False, method=method).fit(Y)


def _modes(ot):
    det = SingularSetDetector("modes").fit(ot)
    mass = np.bincount(det.cell_component_, weights=ot.weights_.numpy())
    return det, int((mass >= 0.01).sum())


# measured ARI (seed 4): 1.0 (2-D and 8-D) well separated; 0.886 (2-D), 0.893 (8-D) moderately, where the
# "persistence" rule finds one mode (ARI 0); "gap" finds one mode in all but the 2-D well-separated case
@pytest.mark.parametrize("d, n, spread, min_ari, n_modes", [
    (2, 500, 1.0, 0.95, (10, 10)), (8, 600, 1.0, 0.95, (10, 10)),
    (2, 500, 1.8, 0.75, (8, 11)), (8, 600, 1.8, 0.8, (8, 11))],
    ids=["2d-separated", "8d-separated", "2d-moderate", "8d-moderate"])
def test_modes_rule_recovers_ten_components_without_their_number(d, n, spread, min_ari, n_modes):
    Y, labels = _mixture(n, d, seed=4, spread=spread)
    ot = _fit(Y)
    det, big = _modes(ot)
    assert math.isfinite(det.threshold_) and 0 < det.threshold_ <= math.pi
    assert adjusted_rand_score(labels, det.cell_component_) >= min_ari
    assert n_modes[0] <= big <= n_modes[1]
    # the rule of the fit is mode_threshold with its defaults, on the same graph
    assert det.threshold_ == pytest.approx(mode_threshold(det, weights=ot.weights_.numpy()))


@pytest.mark.parametrize("case", ["gaussian-2d", "uniform-2d", "gaussian-8d"])
def test_modes_rule_finds_one_mode_in_one_mode_data(case):
    rng = np.random.default_rng(11)
    Y = {"gaussian-2d": lambda: rng.standard_normal((500, 2)), "uniform-2d": lambda: rng.uniform(-1, 1, (500, 2)),
         "gaussian-8d": lambda: rng.standard_normal((600, 8))}[case]()
    det, big = _modes(_fit(Y))
    assert det.threshold_ == math.inf and det.n_components_ == 1 and not det.singular_.any()


def test_modes_rule_on_two_blobs_and_its_settings():
    for seed in (0, 6):                  # seed 6: the "gap" rule finds one mode (a cross pair of angle 0.44)
        Y, labels = two_blobs(200, seed=seed)
        ot = _fit(Y)
        det, big = _modes(ot)
        assert det.n_components_ == 2 and big == 2
        assert adjusted_rand_score(labels, det.cell_component_) == 1.0
    assert "modes" in THRESHOLD_RULES
    # each blob holds 100 cells: with modes of at least 150 cells there is one mode
    assert mode_threshold(det, min_cells=150) == math.inf
    assert mode_threshold(det, noise=1e3) == math.inf                # no mode persists that long
    with pytest.raises(ValueError, match="min_mass"):
        mode_threshold(det, min_mass=0.7)
    with pytest.raises(TypeError, match="SingularSetDetector"):
        mode_threshold(ot)


def test_intrinsic_dimension_known_answers():
    rng = np.random.default_rng(3)
    assert intrinsic_dimension(rng.uniform(size=(3000, 2))) == pytest.approx(2.0, rel=0.1)
    assert intrinsic_dimension(rng.standard_normal((3000, 6))) == pytest.approx(6.0, rel=0.15)
    t = rng.uniform(size=(2000, 1))
    line = np.concatenate([t, 2 * t, -t], 1)                          # a segment in R^3
    assert intrinsic_dimension(line) == pytest.approx(1.0, rel=0.1)
    plane = np.concatenate([rng.uniform(size=(2000, 2)), np.zeros((2000, 6))], 1)
    assert intrinsic_dimension(plane) == pytest.approx(2.0, rel=0.1)
    assert intrinsic_dimension(7.0 * plane + 3.0) == pytest.approx(intrinsic_dimension(plane), rel=1e-9)
