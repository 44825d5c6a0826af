import numpy as np
import pytest
import torch
from scipy import ndimage

from otgen.data.video import bistable, bistable_geometry, bistable_long, moving_digits, permanence
from otgen.metrics.video import (bistable_clip_classes, bistable_frame_states, count_consistency, count_objects,
                                 moving_digit_plausibility)


def _disc(x, size=32, radius=3.0, brightness=1.0):
    """One frame (size, size) with an anti-aliased disc centred at (x, (size-1)/2)."""
    g = np.arange(size)
    d = np.sqrt((g[None, :] - x) ** 2 + (g[:, None] - (size - 1) / 2) ** 2)
    return brightness * np.clip(radius + 0.5 - d, 0, 1)


def _squares(corners, size=32, s=5):
    """One frame with white s x s squares at the given (x, y) top-left corners."""
    f = np.zeros((size, size))
    for x, y in corners:
        f[y:y + s, x:x + s] = 1
    return f


@pytest.fixture(scope="module")
def steady_pair():
    """A steady-A clip and a steady-B clip (T=16, 32 x 32)."""
    clips, lab = bistable(40, transition_rate=0.0, seed=11)
    return clips[np.argmax(lab["state"] == 0)], clips[np.argmax(lab["state"] == 1)]


# --------------------------------------------------------------------------- bistable: real clips

def test_bistable_real_clips_agree_with_labels():
    clips, lab = bistable(600, transition_rate=0.3, seed=1)
    res = bistable_clip_classes(clips)
    expected = np.array(["steady_A", "steady_B", "transition"])[lab["state"]]
    np.testing.assert_array_equal(res["classes"], expected)
    assert (res["frame_states"] == lab["frame_state"]).mean() > 0.995
    np.testing.assert_array_equal(res["transition_frame"], lab["transition_frame"])
    assert res["transition_rate"] == pytest.approx((lab["state"] == 2).mean())
    assert res["steady_rate"] == pytest.approx((lab["state"] < 2).mean())
    assert res["teleport_rate"] == res["blend_rate"] == res["empty_rate"] == 0.0
    np.testing.assert_array_equal(bistable_frame_states(clips), res["frame_states"])


def test_bistable_long_clips_are_transitions():
    clips, lab = bistable_long(60, n_frames=40, seed=2)
    res = bistable_clip_classes(clips)
    assert (res["classes"] == "transition").all()
    np.testing.assert_array_equal(res["transition_frame"], lab["transition_frame"])


def test_bistable_robust_to_blur_and_grey_background():
    clips, lab = bistable(200, transition_rate=0.5, seed=3)
    blurry = ndimage.gaussian_filter(clips.numpy(), sigma=(0, 0, 0, 0.8, 0.8))
    decoded = 0.1 + 0.8 * blurry + 0.02 * np.random.default_rng(0).standard_normal(blurry.shape)
    res = bistable_clip_classes(torch.from_numpy(decoded.astype(np.float32)))
    expected = np.array(["steady_A", "steady_B", "transition"])[lab["state"]]
    assert (res["classes"] == expected).mean() > 0.97


# --------------------------------------------------------------------------- bistable: hand-made failures

def test_teleport_is_recognised(steady_pair):
    a, b = steady_pair
    clip = torch.cat([a[:8], b[8:]])                                    # A, then suddenly B
    res = bistable_clip_classes(clip[None])
    assert res["classes"].tolist() == ["teleport"] and res["teleport_rate"] == 1.0
    assert res["transition_frame"].tolist() == [8]
    np.testing.assert_array_equal(res["frame_states"][0], [0] * 8 + [1] * 8)


def test_blend_is_recognised(steady_pair):
    a, b = steady_pair
    g = bistable_geometry(32)
    average = 0.5 * (a + b)                                              # the average of an A clip and a B clip
    two_half_balls = np.stack([_disc(g["x_a"], brightness=0.5) + _disc(g["x_b"], brightness=0.5)] * 16)
    smear = np.zeros((16, 32, 32))
    smear[:, 14:18, int(g["x_a"]):int(g["x_b"]) + 1] = 0.6              # one profile smeared from A to B
    only_some = a.clone()
    only_some[5] = 0.5 * (a[5] + b[5])                                   # one blended frame in a steady clip
    clips = [average[:, 0].numpy(), two_half_balls, smear, only_some[:, 0].numpy()]
    res = bistable_clip_classes(np.stack(clips))
    assert res["classes"].tolist() == ["blend"] * 4 and res["blend_rate"] == 1.0
    assert (res["frame_states"][:3] == 3).all()
    assert res["frame_states"][3].tolist() == [0] * 5 + [3] + [0] * 10


def test_empty_barrier_and_steady_hand_made():
    g = bistable_geometry(32)
    empty = np.zeros((16, 32, 32))
    on_barrier = np.stack([_disc(g["x_barrier"])] * 16)
    excursion = np.stack([_disc(g["x_a"])] * 6 + [_disc(g["x_barrier"])] * 2 + [_disc(g["x_a"])] * 8)
    half_empty = np.stack([_disc(g["x_b"])] * 8 + [np.zeros((32, 32))] * 8)
    res = bistable_clip_classes(np.stack([empty, on_barrier, excursion, half_empty]))
    assert res["classes"].tolist() == ["empty", "barrier", "steady_A", "empty"]
    assert (res["frame_states"][0] == 4).all() and (res["frame_states"][1] == 2).all()
    assert res["transition_frame"].tolist() == [-1] * 4
    assert res["empty_rate"] == 0.5 and res["barrier_rate"] == 0.25 and res["steady_rate"] == 0.25
    # a single continuous hand-made transition, B -> A, with 5-D input
    xs = np.linspace(g["x_b"], g["x_a"], 6)
    trans = np.stack([_disc(g["x_b"])] * 5 + [_disc(x) for x in xs[1:-1]] + [_disc(g["x_a"])] * 7)[:, None]
    res = bistable_clip_classes(trans[None])
    assert res["classes"].tolist() == ["transition"]
    # x = 23.25 (frames 0-4), 20.15, 17.05, 13.95, 10.85, then 7.75: frame 7 is the first past x = 15.5
    assert res["transition_frame"].tolist() == [7]
    assert res["frame_states"][0].tolist() == [1] * 6 + [2, 2] + [0] * 8


# --------------------------------------------------------------------------- object counts

def test_counts_on_permanence_clips():
    clips, lab = permanence(400, seed=4)
    res = count_consistency(clips)
    assert res["changed_rate"] == 0.0
    np.testing.assert_array_equal(res["per_clip_counts"], lab["n_objects"])
    np.testing.assert_array_equal(res["count_hist"], np.bincount(lab["n_objects"], minlength=5))
    counts = count_objects(clips)
    assert counts.shape == (400, 16) and counts.dtype == np.int64
    truth = np.repeat(lab["n_objects"][:, None], 16, 1)
    np.testing.assert_array_equal(counts[~lab["occluded"]], truth[~lab["occluded"]])
    assert (counts == truth).mean() > 0.98
    assert not (res["occluded"] & ~lab["occluded"]).any()               # merged blobs only where objects touch


def test_counts_hand_made():
    three = [(2, 2), (20, 3), (10, 20)]
    overlap = [(2, 2), (5, 4), (10, 20)]                                 # two squares overlap: one blob of 25 + 19 px
    frames = [_squares(three)] * 6 + [_squares(overlap)] * 4 + [_squares(three)] * 6
    appears = [_squares(three)] * 8 + [_squares(three + [(24, 24)])] * 8  # three puppies become four
    vanishes = [_squares(three)] * 8 + [_squares(three[:2])] * 8
    hidden_more = [_squares(three)] * 8 + [_squares([(2, 2), (5, 4), (10, 20), (20, 3)])] * 8  # 4 behind an occlusion
    res = count_consistency(np.stack([frames, appears, vanishes, hidden_more]))
    assert res["changed"].tolist() == [False, True, True, True]
    assert res["changed_rate"] == 0.75
    assert res["counts"][0].tolist() == [3] * 16
    assert res["occluded"][0].tolist() == [False] * 6 + [True] * 4 + [False] * 6
    assert res["per_clip_counts"].tolist() == [3, 3, 2, 3]               # ties -> the smaller count
    # noise specks below min_area are ignored; a blurred, greyish frame still counts right
    noisy = _squares(three)
    noisy[30, 30] = 1
    blurred = 0.1 + 0.8 * ndimage.gaussian_filter(_squares(three), 0.7)
    assert count_objects(np.stack([[noisy, blurred]])).tolist() == [[3, 3]]
    # object_area: the same frame read with bigger objects in mind
    assert count_objects(_squares(three)[None, None], object_area=10).tolist() == [[6]]


def test_channels_and_numpy_torch():
    clips, _ = permanence(5, seed=0)
    rgb = clips.expand(-1, -1, 3, -1, -1)
    np.testing.assert_array_equal(count_objects(rgb), count_objects(clips[:, :, 0].numpy()))


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("call, err, match", [
    (lambda: count_objects(np.zeros((16, 32, 32))), ValueError, r"\(n, T, C, H, W\) or \(n, T, H, W\)"),
    (lambda: count_consistency(np.zeros((2, 16, 1, 1, 32, 32))), ValueError, "got 6 dimension"),
    (lambda: bistable_frame_states(np.zeros((2, 16, 32))), ValueError, "got 3 dimension"),
    (lambda: bistable_clip_classes(np.full((1, 4, 32, 32), np.nan)), ValueError, "NaN"),
    (lambda: count_objects(np.zeros((0, 4, 32, 32))), ValueError, "at least 1 row"),
    (lambda: count_objects(np.zeros((1, 4, 32, 32)), merge_ratio=0.5), ValueError, "merge_ratio must be >= 1"),
    (lambda: count_objects(np.zeros((1, 4, 32, 32)), object_area=-1), ValueError, "object_area"),
    (lambda: count_objects(np.zeros((1, 4, 32, 32)), threshold="high"), TypeError, "threshold"),
    (lambda: bistable_frame_states(np.zeros((1, 4, 32, 32)), blend_mass=0.8), ValueError, "blend_mass"),
    (lambda: bistable_clip_classes("clips"), TypeError, "numpy array or torch tensor"),
])
def test_errors(call, err, match):
    with pytest.raises(err, match=match):
        call()


# --------------------------------------------------------------------------- moving digits

def test_moving_digit_plausibility_catches_fades_and_jumps():
    clips, _ = moving_digits(6, seed=0)
    x = torch.as_tensor(clips).clone()
    assert moving_digit_plausibility(x)["implausible_rate"] == 0.0      # the data's own clips are plausible
    x[0, 8:] *= 0.5                                  # the digit loses half its ink
    x[1, 8:] = torch.roll(x[1, 8:], shifts=12, dims=-1)   # jumps 12 px sideways
    x[2, 5] = 0                                      # a frame with no digit
    r = moving_digit_plausibility(x)
    assert list(r["mass_change"][:4]) == [True, False, True, False]
    assert r["jump"][1] and not r["jump"][3]
    assert r["empty"][2] and not r["empty"][0]
    assert r["implausible_rate"] == pytest.approx(3 / 6)
    assert r["mass_change_rate"] == pytest.approx(2 / 6) and r["empty_rate"] == pytest.approx(1 / 6)


def _square_clip(xs, size=32, side=4, ink=1.0):
    """A clip (T, 1, size, size): a square of side ``side`` whose left edge is at xs[t] (row 10)."""
    clip = np.zeros((len(xs), 1, size, size))
    for t, x in enumerate(xs):
        clip[t, 0, 10:10 + side, x:x + side] = ink
    return clip


def test_moving_digit_plausibility_exact_thresholds():
    # W = 32: top speed 2 px / frame, a jump is a centroid step above 4 px
    steady = _square_clip([2, 4, 6, 8])                     # steps of 2 px
    fast = _square_clip([2, 6, 10, 14])                     # steps of 4 px: not above 2 x top speed
    jumpy = _square_clip([2, 4, 9, 11])                     # a step of 5 px
    faded = _square_clip([2, 4, 6, 8])
    faded[3] *= 0.7                                         # ink change 0.3 > 0.25 of the median
    kept = _square_clip([2, 4, 6, 8])
    kept[3] *= 0.8                                          # 0.2: within tolerance
    black = np.zeros_like(steady)
    r = moving_digit_plausibility(np.stack([steady, fast, jumpy, faded, kept, black]))
    assert r["jump"].tolist() == [False, False, True, False, False, False]
    assert r["mass_change"].tolist() == [False, False, False, True, False, False]
    assert r["empty"].tolist() == [False, False, False, False, False, True]
    assert r["implausible_rate"] == pytest.approx(3 / 6)
    # a top speed of 1 px / frame makes steps of 4 px jumps; (n, T, H, W) input reads the same
    slow = moving_digit_plausibility(np.stack([steady, fast])[:, :, 0], max_speed=1.0)
    assert slow["jump"].tolist() == [False, True]
    with pytest.raises(ValueError, match="max_speed"):
        moving_digit_plausibility(steady[None], max_speed=-1.0)
    with pytest.raises(ValueError, match="clips must have shape"):
        moving_digit_plausibility(steady[:, 0])             # (T, H, W): one clip without its batch axis
