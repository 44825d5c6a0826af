"""Critical states and transition localisation: exact answers on mirror-symmetric blobs."""

import math

import numpy as np
import pytest
import torch

from otgen.data import two_blobs
from otgen.latent import LatentSpace
from otgen.singular import SingularSetDetector, critical_states, localise_transitions
from otgen.transport import SemiDiscreteOT


@pytest.fixture(scope="module")
def blobs():
    # two_blobs(n even) is symmetric under x_1 -> -x_1 and the uniform source on [-1, 1]^2 too, so the
    # singular set of the Brenier map is the mirror line x_1 = 0 of the source square
    torch.set_num_threads(1)
    Y, labels = two_blobs(200, seed=0)
    ot = SemiDiscreteOT(tol=0.05, verbose=False, method="exact2d").fit(Y)
    det = SingularSetDetector().fit(ot)
    assert det.n_components_ == 2
    return Y, labels, ot, det


def test_critical_states_lie_on_the_mirror_line_between_the_blobs(blobs):
    Y, labels, ot, det = blobs
    cs = critical_states(ot, det, 300, seed=0, batch=4096)
    X, i, j = cs["X"], cs["i"], cs["j"]
    assert isinstance(X, np.ndarray) and X.shape == (300, 2) and i.dtype == np.int64 and j.shape == (300,)
    assert np.abs(X[:, 0]).max() < 0.1                           # on the singular set x_1 = 0 (a cell wide)
    assert (labels[i] != labels[j]).all()                        # one boundary target in each blob
    assert (Y[i, 0] * Y[j, 0] < 0).all()
    np.testing.assert_array_equal(i, ot.assign(torch.as_tensor(X)).numpy())   # i is the plain map's cell
    assert 0 < cs["kept_fraction"] <= cs["flagged_fraction"] < 0.1
    assert cs["drawn"] % 4096 == 0 and cs["drawn"] * cs["kept_fraction"] >= 300
    # the boundary targets are the blobs' innermost points, not their centres
    assert np.abs(Y[np.r_[i, j], 0]).mean() < np.abs(Y[:, 0]).mean()
    again = critical_states(ot, det, 300, seed=0, batch=4096)
    np.testing.assert_array_equal(again["X"], X)
    assert not np.array_equal(critical_states(ot, det, 300, seed=1, batch=4096)["X"], X)


def test_critical_states_of_one_mode_is_empty():
    Y = np.random.default_rng(2).standard_normal((100, 2))
    ot = SemiDiscreteOT(tol=0.05, verbose=False, method="exact2d").fit(Y)
    det = SingularSetDetector().fit(ot)
    assert det.threshold_ == math.inf
    cs = critical_states(ot, det, 10, max_draw=5000, batch=2000)
    assert cs["X"].shape == (0, 2) and len(cs["i"]) == len(cs["j"]) == 0
    assert cs["drawn"] == 6000 and cs["flagged_fraction"] == 0.0 and cs["kept_fraction"] == 0.0


def _clips_with_events(events, T, raw):
    """Clips (n, T, 1, 1, 2) whose frames carry the raw code raw(-2) before the event, raw(+2) from it on."""
    clips = torch.zeros(len(events), T, 1, 1, 2)
    for r, event in enumerate(events):
        x1 = np.where(np.arange(T) < event, -2.0, 2.0) if event is not None else np.full(T, -2.0)
        clips[r, :, 0, 0, 0] = torch.as_tensor(raw(x1), dtype=torch.float32)
        clips[r, :, 0, 0, 1] = float(raw(0.0))
    return clips


def test_localise_transitions_finds_known_events_through_the_latent_space(blobs):
    *_, ot, det = blobs
    # raw codes y = 10 + 3 z: a latent space with mean 10 and scale 3 maps them onto the OT targets' coordinates
    latent = LatentSpace().fit(np.array([[7.0, 7.0], [13.0, 13.0]]))
    np.testing.assert_allclose(latent.mean_, 10.0)
    np.testing.assert_allclose(latent.scale_, 3.0)
    L, T, events = 5, 40, [1, 9, 20, 31, None]
    clips = _clips_with_events(events, T, lambda z: 10.0 + 3.0 * np.asarray(z))
    encode = lambda x: x[:, :, 0, 0].mean(1)                    # noqa: E731  (b, L, 1, 1, 2) -> (b, 2)
    truth = np.array([1, 9, 20, 31, 25], dtype=float)
    r = localise_transitions(encode, clips, truth, ot, det, latent, window=L, tolerance=0)
    np.testing.assert_allclose(r["estimate"][:4], events[:4])
    assert np.isnan(r["estimate"][4]) and np.isnan(r["error"][4])
    np.testing.assert_allclose(r["error"][:4], 0.0, atol=1e-9)
    assert r["located"] == 0.8 and r["within_tol"] == 0.8 and r["mean_abs_error"] == pytest.approx(0.0)
    assert r["n_changes_mean"] == pytest.approx(0.8) and r["n_clips"] == 5 and r["window"] == L
    assert r["n_frames"] == T and r["tolerance"] == 0
    assert r["paths"].shape == (5, T, 2) and r["modes"].shape == (5, T) and r["starts"][0] == -(L // 2)
    np.testing.assert_allclose(r["paths"][1, 0], [-2.0, 0.0], atol=1e-6)   # standardised: the OT coordinates
    # a wrong latent space (identity: every raw code has x_1 >= 4) puts every window in one mode
    ident = LatentSpace(standardize=False).fit(np.zeros((2, 2)))
    assert localise_transitions(encode, clips, truth, ot, det, ident, window=L)["located"] == 0.0


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(latent="no"), TypeError, "LatentSpace"),
    (dict(latent=LatentSpace()), ValueError, "not fitted"),
    (dict(truth=np.zeros(3)), ValueError, "one entry per clip"),
    (dict(window=0), ValueError, "window"),
    (dict(tolerance=-1), ValueError, "tolerance"),
    (dict(detector=SingularSetDetector()), ValueError, "not fitted"),
])
def test_localise_transitions_errors(blobs, kwargs, exc, match):
    *_, ot, det = blobs
    clips = _clips_with_events([9, 20], 20, lambda z: np.asarray(z))
    args = dict(latent=LatentSpace(standardize=False).fit(np.zeros((2, 2))), truth=np.array([9.0, 20.0]),
                window=5, tolerance=2, detector=det)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        localise_transitions(lambda x: x[:, :, 0, 0].mean(1), clips, args["truth"], ot, args["detector"],
                             args["latent"], window=args["window"], tolerance=args["tolerance"])


def test_critical_states_errors(blobs):
    *_, ot, det = blobs
    with pytest.raises(ValueError, match="n_points"):
        critical_states(ot, det, 0)
    with pytest.raises(ValueError, match="batch"):
        critical_states(ot, det, 5, batch=0)
    with pytest.raises(TypeError, match="seed"):
        critical_states(ot, det, 5, seed=0.5)
    with pytest.raises(TypeError, match="SingularSetDetector"):
        critical_states(ot, "det", 5)
    with pytest.raises(ValueError, match="not fitted"):
        critical_states(ot, SingularSetDetector(), 5)
    other = SemiDiscreteOT(tol=0.1, verbose=False, method="exact2d").fit(np.random.default_rng(0).normal(size=(200, 2)))
    with pytest.raises(ValueError, match="not fitted on this ot"):
        critical_states(other, det, 5)


def test_critical_states_with_a_loaded_detector(blobs, tmp_path):
    *_, ot, det = blobs
    det.save(tmp_path / "det.pt")
    bare = SingularSetDetector.load(tmp_path / "det.pt")            # no map attached: ot is given here
    a, b = critical_states(ot, bare, 50, batch=4096), critical_states(ot, det, 50, batch=4096)
    np.testing.assert_array_equal(a["X"], b["X"])
    np.testing.assert_array_equal(a["j"], b["j"])
