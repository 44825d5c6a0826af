import numpy as np
import pytest
import torch
from scipy import ndimage

from otgen.data.video import (bistable, bistable_geometry, bistable_long, bistable_position_state, moving_digits,
                              permanence, permanence_object_size)

GENERATORS = {
    "moving_digits": lambda n, seed: moving_digits(n, seed=seed),
    "bistable": lambda n, seed: bistable(n, transition_rate=0.5, seed=seed),
    "bistable_long": lambda n, seed: bistable_long(n, n_frames=24, seed=seed),
    "permanence": lambda n, seed: permanence(n, seed=seed),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_shapes_range_and_determinism(name):
    clips, labels = GENERATORS[name](20, 0)
    T = 24 if name == "bistable_long" else 16
    assert clips.shape == (20, T, 1, 32, 32) and clips.dtype == torch.float32
    assert float(clips.min()) == 0.0 and float(clips.max()) <= 1.0
    assert (clips.flatten(2).amax(-1) > 0.5).all()                     # every frame shows something
    assert all(isinstance(v, np.ndarray) and len(v) == 20 for v in labels.values())
    clips2, labels2 = GENERATORS[name](20, 0)
    assert torch.equal(clips, clips2)
    for k in labels:
        np.testing.assert_array_equal(labels[k], labels2[k])
    clips3, _ = GENERATORS[name](20, 1)
    assert not torch.equal(clips, clips3)


# --------------------------------------------------------------------------- moving digits

def test_moving_digits_small_default():
    clips, lab = moving_digits(50, seed=3)
    assert lab["digit"].shape == (50, 1) and lab["digit"].min() >= 0 and lab["digit"].max() <= 9
    assert lab["position"].shape == (50, 16, 1, 2)
    half = (16 - 1) / 2                                                  # 28 px digits downscaled to 16 px
    assert lab["position"].min() >= half and lab["position"].max() <= 31 - half
    # all ink inside the digit's box, and the digit moves at a bounded speed (<= 2 px/frame + rounding)
    x = np.rint(lab["position"][:, :, 0, 0] - half).astype(int)
    y = np.rint(lab["position"][:, :, 0, 1] - half).astype(int)
    frames = clips[:, :, 0].numpy()
    for i in range(0, 50, 7):
        for t in range(16):
            inside = frames[i, t, y[i, t]:y[i, t] + 16, x[i, t]:x[i, t] + 16].sum()
            assert inside == pytest.approx(frames[i, t].sum())
    steps = np.abs(np.diff(lab["position"], axis=1)).max()
    assert steps <= 2 * np.sqrt(2) + 1 and steps > 0


def test_moving_digits_usual_convention():
    clips, lab = moving_digits(6, n_frames=20, size=64, n_digits=2, seed=1)
    assert clips.shape == (6, 20, 1, 64, 64)
    assert lab["digit"].shape == (6, 2) and lab["position"].shape == (6, 20, 2, 2)
    assert lab["position"].min() >= 13.5 and lab["position"].max() <= 63 - 13.5
    # the same digit image moves: the first frame's ink equals a later frame's ink up to overlap (max-combining)
    mass = clips.sum(dim=(2, 3, 4))
    assert (mass > 0).all()


# --------------------------------------------------------------------------- bistable

def test_bistable_transition_fraction_binomial():
    n = 4000
    for rate in (0.05, 0.3):
        _, lab = bistable(n, n_frames=10, size=16, transition_rate=rate, seed=7)
        k = int((lab["state"] == 2).sum())
        assert abs(k - n * rate) <= 4 * np.sqrt(n * rate * (1 - rate))
        steady = lab["state"][lab["state"] < 2]
        assert abs((steady == 0).mean() - 0.5) < 0.05
    _, lab = bistable(200, transition_rate=0.0, seed=1)
    assert (lab["state"] < 2).all() and (lab["transition_frame"] == -1).all()


def test_bistable_steady_clips_stay_in_their_well():
    clips, lab = bistable(600, transition_rate=0.1, seed=2)
    g = bistable_geometry(32)
    steady = lab["state"] < 2
    centre = np.where(lab["state"][steady] == 0, g["x_a"], g["x_b"])[:, None]
    assert np.abs(lab["position"][steady] - centre).max() < g["half_width"]
    np.testing.assert_array_equal(lab["frame_state"][steady], np.repeat(lab["state"][steady, None], 16, 1))
    assert lab["position"][steady].std() > 0.1                        # it does jitter
    # pixels agree with the position label: the intensity centroid is the ball's x
    frames = clips[:40, :, 0].numpy().astype(np.float64)
    xs = np.arange(32)
    centroid = (frames.sum(2) * xs).sum(-1) / frames.sum((2, 3))
    np.testing.assert_allclose(centroid, lab["position"][:40], atol=0.05)


def test_bistable_transitions_are_continuous():
    _, lab = bistable(400, transition_rate=1.0, seed=4)
    g = bistable_geometry(32)
    x, fs, tf = lab["position"], lab["frame_state"], lab["transition_frame"]
    assert (lab["state"] == 2).all()
    # bounded speed: the cosine ramp over D = 5 frames between the jittered wells (jitter <= 0.8 w each)
    # moves at most pi/2 (x_B - x_A + 1.6 w) / 5 per frame (about 6.8 px, half the distance between the wells)
    reach = g["x_b"] - g["x_a"] + 1.6 * g["half_width"]
    assert np.abs(np.diff(x, axis=1)).max() < np.pi / 2 * reach / 5 + 1.0 < g["x_b"] - g["x_a"]
    for i in range(len(x)):
        s = fs[i]
        assert s[0] != 2 and s[-1] == 1 - s[0]                        # starts in a well, ends in the other
        assert (np.abs(np.diff(s[s < 2])) <= 1).all()
        between = np.where(s == 2)[0]
        assert len(between) >= 1 and np.all(np.diff(between) == 1)      # one contiguous passage over the barrier
        side = np.sign(x[i] - g["x_barrier"])
        assert (np.diff(side) != 0).sum() == 1                          # crosses the barrier centre exactly once
        assert side[tf[i]] != side[0] and side[tf[i] - 1] == side[0]
    assert set(np.unique(fs[:, 0])) == {0, 1}                           # both directions


def test_bistable_long_one_transition_anywhere():
    _, lab = bistable_long(300, seed=5)
    x, tf = lab["position"], lab["transition_frame"]
    assert x.shape == (300, 64) and (lab["state"] == 2).all()
    side = np.sign(x - bistable_geometry(32)["x_barrier"])
    assert ((np.diff(side, axis=1) != 0).sum(1) == 1).all()
    assert tf.min() < 16 and tf.max() > 48


def test_bistable_position_state():
    g = bistable_geometry(32)
    x = [0, g["x_a"], g["x_a"] + g["half_width"] + 0.01, g["x_barrier"], g["x_b"] - g["half_width"], 31]
    np.testing.assert_array_equal(bistable_position_state(x, 32), [0, 0, 2, 2, 1, 1])
    assert g["x_a"] < g["x_barrier"] < g["x_b"]


# --------------------------------------------------------------------------- permanence

def test_permanence_counts_constant_and_visible():
    clips, lab = permanence(300, seed=6)
    k, occ, pos = lab["n_objects"], lab["occluded"], lab["position"]
    assert set(np.unique(k)) == {3, 4} and occ.dtype == bool and pos.shape == (300, 16, 4, 2)
    assert np.isnan(pos[k == 3][:, :, 3]).all() and not np.isnan(pos[k == 4]).any()
    s = permanence_object_size(32)
    half = (s - 1) / 2
    assert np.nanmin(pos) >= half and np.nanmax(pos) <= 31 - half
    frames = clips[:, :, 0].numpy() > 0.5
    n_comp = np.array([[ndimage.label(frames[i, t])[1] for t in range(16)] for i in range(300)])
    np.testing.assert_array_equal(n_comp[~occ], np.repeat(k[:, None], 16, 1)[~occ])
    assert 0.05 < occ.mean() < 0.8                                      # objects do occlude each other
    # the ink is the union of the squares: area = k s^2 exactly when nothing overlaps
    area = frames.sum((2, 3))
    np.testing.assert_array_equal(area[~occ], np.repeat(k[:, None] * s * s, 16, 1)[~occ])
    assert (area[occ] < np.repeat(k[:, None] * s * s, 16, 1)[occ]).any()


def test_permanence_options():
    clips, lab = permanence(10, n_frames=8, size=64, n_objects=2, seed=0)
    assert clips.shape == (10, 8, 1, 64, 64) and (lab["n_objects"] == 2).all()
    assert lab["position"].shape == (10, 8, 2, 2)
    assert permanence_object_size(64) == 10 and permanence_object_size(32) == 5


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("call, err, match", [
    (lambda: moving_digits(0), ValueError, "n must be >= 1"),
    (lambda: moving_digits(2, seed=-1), ValueError, "seed"),
    (lambda: moving_digits(2, digit_size=40), ValueError, "digit_size must be <= size"),
    (lambda: moving_digits(2, split="val"), ValueError, "split"),
    (lambda: moving_digits(2, speed=(3, 1)), ValueError, "low <= high"),
    (lambda: moving_digits(2.5), TypeError, "n must be an integer"),
    (lambda: bistable(2, transition_rate=1.5), ValueError, r"transition_rate must be a number in \[0, 1\]"),
    (lambda: bistable(2, n_frames=6), ValueError, "n_frames must be >= crossing_frames"),
    (lambda: bistable(2, crossing_frames=2), ValueError, "crossing_frames"),
    (lambda: bistable(2, jitter=-0.1), ValueError, "jitter"),
    (lambda: bistable_long(2, n_frames=5), ValueError, "n_frames"),
    (lambda: bistable(2, size=4), ValueError, "size"),
    (lambda: permanence(2, n_objects=0), ValueError, "n_objects"),
    (lambda: permanence(2, n_objects=()), ValueError, "n_objects"),
    (lambda: permanence(2, object_size=32), ValueError, "object_size must be < size"),
    (lambda: permanence(2, n_objects=40), ValueError, "do not fit"),
])
def test_errors(call, err, match):
    with pytest.raises(err, match=match):
        call()
