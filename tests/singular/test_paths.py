"""Critical-event localisation along latent paths: exact answers on mirror-symmetric blobs."""

import math

import numpy as np
import pytest
import torch

from otgen.data import two_blobs
from otgen.singular import (SingularSetDetector, boundary_cells, encode_windows, flag_codes, latent_modes,
                            locate_crossings, nearest_targets, persistence_threshold, singular_sides, sliding_windows)
from otgen.transport import SemiDiscreteOT, sample_source


@pytest.fixture(scope="module")
def blobs():
    # two_blobs(n even) is exactly symmetric under x_1 -> -x_1: every point with x_1 > 0 has its
    # nearest target in the blob at positive x_1, so the latent mode boundary is exactly x_1 = 0.
    torch.set_num_threads(1)
    Y, labels = two_blobs(200, seed=0)
    ot = SemiDiscreteOT(tol=0.05, verbose=False, method="exact2d").fit(Y)
    det = SingularSetDetector().fit(ot)
    assert det.n_components_ == 2
    comp_of_label = {int(labels[i]): int(det.cell_component_[i]) for i in range(len(Y))}
    return Y, labels, ot, det, comp_of_label


def test_nearest_targets_and_modes(blobs):
    Y, labels, ot, det, comp = blobs
    np.testing.assert_array_equal(nearest_targets(Y, ot)[:, 0], np.arange(len(Y)))
    np.testing.assert_array_equal(latent_modes(Y, ot, det), det.cell_component_)
    idx = nearest_targets(Y[:5] + 1e-3, ot, k=4)
    assert idx.shape == (5, 4)
    d = np.linalg.norm(Y[idx] - (Y[:5] + 1e-3)[:, None], axis=2)
    assert (np.diff(d, axis=1) >= -1e-6).all()                    # nearest first
    # points far on either side of x_1 = 0
    z = np.array([[-3.0, 0.5], [-0.01, -2.0], [0.01, 2.0], [5.0, 0.0]])
    np.testing.assert_array_equal(latent_modes(z, ot, det), [comp[0], comp[0], comp[1], comp[1]])
    np.testing.assert_array_equal(latent_modes(z, ot, det, k=7), [comp[0], comp[0], comp[1], comp[1]])


def test_straight_path_crosses_exactly_at_the_mirror_plane(blobs):
    *_, ot, det, comp = blobs
    T = 20
    x1 = -2 + 4 * np.arange(T) / (T - 1)                           # last negative at t = 9, first positive at 10
    path = np.stack([x1, 0.3 * np.sin(np.arange(T))], 1)
    r = locate_crossings(path, ot, det)
    assert r["crossed"] and r["index"] == 10 and r["position"] == 9.5 and r["time"] == 9.5
    assert (r["from_mode"], r["to_mode"]) == (comp[0], comp[1]) and r["n_changes"] == 1
    assert r["modes"].shape == (T,)
    assert locate_crossings(path, ot, det, window_offset=8.0)["time"] == 17.5
    r = locate_crossings(path, ot, det, times=np.linspace(0.0, 1.9, T))
    assert r["time"] == pytest.approx(0.95)


def test_many_paths_with_known_jump_times(blobs):
    *_, ot, det, comp = blobs
    rng = np.random.default_rng(1)
    T, jumps = 30, np.array([3, 11, 17, 26, 29])
    paths = []
    for j in jumps:
        side = np.where(np.arange(T) < j, -2.0, 2.0)               # sits in one blob, then in the other
        paths.append(np.stack([side + 0.2 * rng.standard_normal(T), 0.2 * rng.standard_normal(T)], 1))
    paths.append(np.stack([np.full(T, 2.0), np.zeros(T)], 1))     # never crosses
    paths.append(np.stack([np.r_[np.full(10, 2.0), np.full(10, -2.0), np.full(10, 2.0)], np.zeros(T)], 1))  # comes back
    back = np.stack(paths)[::-1].copy()                            # reversed direction too
    r = locate_crossings(np.stack(paths), ot, det, window_offset=0.5)
    np.testing.assert_array_equal(r["crossed"], [True] * 5 + [False, False])
    np.testing.assert_array_equal(r["index"][:5], jumps)
    np.testing.assert_allclose(r["time"][:5], jumps)              # (j - 1 + j) / 2 + 0.5 = j
    assert np.isnan(r["time"][5:]).all() and (r["index"][5:] == -1).all()
    np.testing.assert_array_equal(r["n_changes"], [1] * 5 + [0, 2])
    assert r["modes"].shape == (7, T)
    rb = locate_crossings(torch.as_tensor(back[:, ::-1].copy()), ot, det)
    assert rb["crossed"].sum() == 5


def test_intermediate_mode_is_bridged_in_the_middle(blobs):
    *_, ot, det, comp = blobs
    T = 12
    x1 = np.r_[np.full(4, -2.0), np.full(4, 0.5), np.full(4, 2.0)]
    modes_in = latent_modes(np.stack([x1, np.zeros(T)], 1), ot, det)
    assert list(modes_in) == [comp[0]] * 4 + [comp[1]] * 8
    r = locate_crossings(np.stack([x1, np.zeros(T)], 1), ot, det)
    assert r["position"] == 3.5


def test_sliding_windows_and_encoding():
    clips = torch.arange(2 * 10 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 10, 1, 2, 3) / 60
    w, starts = sliding_windows(clips, 4, stride=2)
    assert w.shape == (2, 4, 4, 1, 2, 3) and list(starts) == [0, 2, 4, 6]
    for n in range(2):
        for m, s in enumerate(starts):
            assert torch.equal(w[n, m], clips[n, s:s + 4])
    wp, sp = sliding_windows(clips, 4, pad=2)
    assert wp.shape == (2, 11, 4, 1, 2, 3) and list(sp) == list(range(-2, 9))
    assert torch.equal(wp[1, 0], torch.cat([clips[1, :1], clips[1, :1], clips[1, :2]]))   # first frame repeated
    assert torch.equal(wp[1, -1], torch.cat([clips[1, 8:], clips[1, 9:], clips[1, 9:]]))
    assert torch.equal(wp[0, 5], clips[0, 3:7])
    enc = lambda x: x.flatten(2).mean(2)                           # (b, 4, ...) -> (b, 4)
    codes, st = encode_windows(enc, clips, 4, stride=2, batch_size=3)
    assert codes.shape == (2, 4, 4) and codes.dtype == np.float32
    np.testing.assert_allclose(codes[1, 2], clips[1, 4:8].flatten(1).mean(1).numpy(), rtol=1e-6)

    class E:
        def encode(self, x):
            return x.flatten(1)[:, :2].numpy()
    assert encode_windows(E(), clips, 10)[0].shape == (2, 1, 2)


def test_window_localisation_end_to_end(blobs):
    """A 'video' whose frames carry x_1 = -2 then +2; an encoder averaging the window's frames."""
    *_, ot, det, comp = blobs
    L, T = 5, 40                                                   # odd: no window is half and half
    for event in (9, 20, 31):
        frame_x = np.where(np.arange(T) < event, -2.0, 2.0).astype(np.float32)
        clips = torch.zeros(1, T, 1, 1, 2)
        clips[0, :, 0, 0, 0] = torch.as_tensor(frame_x)
        codes, starts = encode_windows(lambda x: x[:, :, 0, 0].mean(1), clips, L)
        r = locate_crossings(codes[0], ot, det, window_offset=L / 2)
        # window s has x_1 > 0 once 3 of its 5 frames are past the event: s >= event - 2; the last
        # window in the first mode is s = event - 3, so p = event - 2.5 and t = p + L / 2 = event
        assert r["time"] == pytest.approx(event)
        # with padding, the times are the windows' starts + L / 2: the same answer
        codes, starts = encode_windows(lambda x: x[:, :, 0, 0].mean(1), clips, L, pad=L // 2)
        assert starts[0] == -2
        assert locate_crossings(codes[0], ot, det, times=starts + L / 2)["time"] == pytest.approx(event)
    # an event at frame 1: only padding gives windows with the first mode
    frame_x = np.where(np.arange(T) < 1, -2.0, 2.0).astype(np.float32)
    clips = torch.zeros(1, T, 1, 1, 2)
    clips[0, :, 0, 0, 0] = torch.as_tensor(frame_x)
    codes, starts = encode_windows(lambda x: x[:, :, 0, 0].mean(1), clips, L)
    assert not locate_crossings(codes[0], ot, det)["crossed"]
    codes, starts = encode_windows(lambda x: x[:, :, 0, 0].mean(1), clips, L, pad=L // 2)
    assert locate_crossings(codes[0], ot, det, times=starts + L / 2)["time"] == pytest.approx(1.0)


def test_singular_sides_and_boundary(blobs):
    Y, labels, ot, det, comp = blobs
    X = sample_source("uniform", 20000, 2, seed=5)
    flag = det.predict(X)
    i, j = singular_sides(X[flag], ot, det)
    assert (j >= 0).all()
    assert (det.cell_component_[i] != det.cell_component_[j]).all()
    np.testing.assert_array_equal(i, ot.assign(X[flag]).numpy())
    _, j2 = singular_sides(X[~flag][:200], ot, det, k=2)
    assert ((j2 == -1) | (det.cell_component_[j2] != det.cell_component_[ot.assign(X[~flag][:200]).numpy()])).all()
    inc = boundary_cells(det, "incident")
    assert inc.any() and not inc.all()
    assert set(np.unique(det.singular_pairs_)) == set(np.flatnonzero(inc))
    frac = boundary_cells(det, "fraction", min_fraction=0.5)
    assert not (frac & ~inc).any()                                 # a mostly-singular cell has a singular facet
    np.testing.assert_array_equal(flag_codes(Y, ot, det, rule="incident"), inc)
    assert not boundary_cells(det).any()                          # two major modes, no minor one
    # cells nearest the mirror plane are boundary cells, cells far out are not
    assert inc[np.argmin(np.abs(Y[:, 0]))] and not inc[np.argmax(np.abs(Y[:, 0]))]


@pytest.mark.parametrize("call, exc, match", [
    (lambda ot, det: locate_crossings(np.zeros((1, 2)), ot, det), ValueError, "at least 2 points"),
    (lambda ot, det: locate_crossings(np.zeros((5, 3)), ot, det), ValueError, "features"),
    (lambda ot, det: locate_crossings(np.zeros(5), ot, det), ValueError, "shape"),
    (lambda ot, det: locate_crossings(np.zeros((5, 2)), ot, det, times=[0, 1, 2, 3, 3]), ValueError, "increasing"),
    (lambda ot, det: locate_crossings(np.zeros((5, 2)), ot, det, times=[0, 1]), ValueError, "one entry"),
    (lambda ot, det: locate_crossings(np.zeros((5, 2)), ot, det, window_offset="x"), TypeError, "window_offset"),
    (lambda ot, det: locate_crossings(np.full((5, 2), np.nan), ot, det), ValueError, "NaN"),
    (lambda ot, det: latent_modes(np.zeros((5, 2)), ot, "det"), TypeError, "SingularSetDetector"),
    (lambda ot, det: latent_modes(np.zeros((5, 2)), ot, SingularSetDetector()), ValueError, "not fitted"),
    (lambda ot, det: latent_modes(np.zeros((5, 2)), ot, det, k=0), ValueError, "k must be"),
    (lambda ot, det: nearest_targets(np.zeros((5, 2)), ot, k=10**6), ValueError, "number of targets"),
    (lambda ot, det: sliding_windows(torch.zeros(2, 5, 1, 2, 2), 6), ValueError, "window must be"),
    (lambda ot, det: sliding_windows(torch.zeros(2, 5, 1, 2, 2), 6, pad=-1), ValueError, "pad"),
    (lambda ot, det: sliding_windows(torch.zeros(2, 5, 2, 2), 2), ValueError, "shape"),
    (lambda ot, det: encode_windows(3, torch.zeros(1, 5, 1, 2, 2), 2), TypeError, "callable"),
    (lambda ot, det: encode_windows(lambda x: np.zeros(3), torch.zeros(1, 5, 1, 2, 2), 2), ValueError, "codes"),
    (lambda ot, det: boundary_cells(det, "nope"), ValueError, "rule"),
    (lambda ot, det: boundary_cells(det, "fraction", min_fraction=0.0), ValueError, "min_fraction"),
    (lambda ot, det: boundary_cells(det, min_size=0.7), ValueError, "min_size"),
    (lambda ot, det: boundary_cells(det, weights=np.ones(3)), ValueError, "weights"),
    (lambda ot, det: persistence_threshold(ot), TypeError, "SingularSetDetector"),
    (lambda ot, det: persistence_threshold(det, min_persistence=1.0), ValueError, "min_persistence"),
])
def test_errors(blobs, call, exc, match):
    *_, ot, det, _ = blobs
    with pytest.raises(exc, match=match):
        call(ot, det)


def test_persistence_threshold_on_two_blobs(blobs):
    Y, labels, ot, det, comp = blobs
    tau = persistence_threshold(det)
    within = labels[det.pairs_[:, 0]] == labels[det.pairs_[:, 1]]
    assert det.angles_[within].max() < tau < det.angles_[~within].min()
    det2 = SingularSetDetector(angle_threshold=tau).fit(ot)
    assert det2.n_components_ == 2
    np.testing.assert_array_equal(det2.singular_, ~within)


@pytest.fixture(scope="module")
def bridge():
    """Two big blobs and a small cluster between them (4 % of the points): a minor mode."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(2)
    Y, labels = two_blobs(200, seed=1, std=0.3)
    mid = rng.normal(0.0, 0.05, size=(8, 2))
    Y = np.concatenate([Y, mid])
    labels = np.concatenate([labels, np.full(8, 2)])
    ot = SemiDiscreteOT(tol=0.05, verbose=False, method="exact2d").fit(Y)
    tau = persistence_threshold(SingularSetDetector().fit(ot), 0.05)
    return Y, labels, ot, SingularSetDetector(angle_threshold=tau).fit(ot)


def test_minor_mode_between_two_major_ones(bridge):
    Y, labels, ot, det = bridge
    comp = det.cell_component_
    sizes = np.bincount(comp)
    # the two blobs are the two major modes, each pure
    for lab in (0, 1):
        c = np.bincount(comp[labels == lab]).argmax()
        assert sizes[c] == (labels == lab).sum() and (labels[comp == c] == lab).all()
    minor = boundary_cells(det, "minor-mode")
    np.testing.assert_array_equal(minor, labels == 2)
    z = np.array([[-2.0, 0.0], [0.01, 0.02], [2.0, 0.1]])
    np.testing.assert_array_equal(flag_codes(z, ot, det), [False, True, False])
    # a path from one blob through the small cluster to the other: the crossing is in the middle
    x1 = np.r_[np.full(5, -2.0), np.zeros(3), np.full(5, 2.0)]
    r = locate_crossings(np.stack([x1, np.zeros(13)], 1), ot, det)
    assert r["crossed"] and r["position"] == 6.0 and r["n_changes"] == 2


def test_persistence_threshold_one_mode_is_inf():
    Y = np.random.default_rng(0).uniform(-1, 1, size=(150, 2))
    ot = SemiDiscreteOT(tol=0.05, verbose=False, method="exact2d").fit(Y)
    assert math.isinf(persistence_threshold(SingularSetDetector().fit(ot)))
