"""The detector reads the solver's source: on POT's cube [0, 1]^2 it finds what it finds on [-1, 1]^2
moved by x -> (x + 1) / 2 (the same draws, the same support tests, half the cell width), and on a
callable source, whose support is unknown, it treats the support as the whole plane."""

import numpy as np
import pytest
import torch

from otgen.data import two_blobs
from otgen.singular import SingularSetDetector, critical_states
from otgen.transport import SemiDiscreteOT, sample_source


@pytest.fixture(scope="module")
def cube_pair():
    """The two-blob map on [-1, 1]^2 and the same cells on [0, 1]^2 (heights (h - <1, y>) / 2)."""
    Y, labels = two_blobs(100, seed=0)
    ot = SemiDiscreteOT(tol=0.05).fit(Y)
    y = ot.targets_.double()
    h01 = (ot.heights_ - y.sum(1)) / 2
    ot01 = SemiDiscreteOT.from_pot(y.numpy(), (2 * h01 + (y * y).sum(1)).numpy(), source="unif")
    return labels, ot, ot01


def test_unif_detector_is_the_moved_uniform_detector(cube_pair):
    labels, ot, ot01 = cube_pair
    det, det01 = SingularSetDetector(seed=1).fit(ot), SingularSetDetector(seed=1).fit(ot01)
    np.testing.assert_array_equal(det01.pairs_, det.pairs_)
    np.testing.assert_array_equal(det01.singular_pairs_, det.singular_pairs_)
    assert det01.cell_width_ == pytest.approx(det.cell_width_ / 2, rel=1e-6)
    X = sample_source("uniform", 4000, 2, seed=2, dtype=torch.float64)
    np.testing.assert_array_equal(det01.predict((X + 1) / 2), det.predict(X))
    assert det.predict(X).any()


def test_critical_states_draw_from_the_unif_cube(cube_pair):
    labels, _, ot01 = cube_pair
    out = critical_states(ot01, SingularSetDetector(seed=1).fit(ot01), n_points=20, seed=3)
    X = np.asarray(out["X"])
    assert len(X) > 0 and X.min() >= 0 and X.max() <= 1
    assert (labels[out["i"]] != labels[out["j"]]).all()


def test_callable_source_detector_treats_the_support_as_the_plane():
    Y, labels = two_blobs(100, seed=0)
    rng = np.random.default_rng(4)
    ot = SemiDiscreteOT(source=lambda n: rng.uniform(-1, 1, size=(n, 2)), tol=0.05).fit(Y)
    det = SingularSetDetector(seed=1).fit(ot)
    ref = SingularSetDetector(seed=1).fit(SemiDiscreteOT(tol=0.05).fit(Y))
    assert not ot.source_.bounded
    cross = labels[det.singular_pairs_[:, 0]] != labels[det.singular_pairs_[:, 1]]
    assert cross.all() and len(det.singular_pairs_) >= 1
    # no support boundary caps the distance to the cell's boundary: cells look at least as wide
    assert np.isfinite(det.cell_width_) and det.cell_width_ >= 0.9 * ref.cell_width_
    flags = det.predict(sample_source("uniform", 2000, 2, seed=5))
    assert flags.shape == (2000,) and flags.any() and not flags.all()
