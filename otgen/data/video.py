"""Video clips with known physics: moving digits, a bistable ball, objects that persist.

Every generator is deterministic under ``seed`` and returns ``(clips, labels)``:
``clips`` is a float32 torch tensor of shape (n, T, 1, H, W) with values in [0, 1]
(background 0, grayscale), ``labels`` a dict of numpy arrays. Pixel coordinates are
*pixel-index* coordinates: the centre of pixel ``(row i, column j)`` is ``(x, y) = (j, i)``.

* :func:`moving_digits` — Moving-MNIST: digits bouncing in a box (Srivastava et al. 2015).
* :func:`bistable`, :func:`bistable_long` — a ball in a double-well landscape, two steady
  states and a rare *critical transition* between them over the barrier. A generative
  model that has learned the physics makes the ball travel continuously; one that
  interpolates between modes makes it teleport or shows it in both wells at once
  (the "juice splashing" failures of the geometric view of Sora).
* :func:`permanence` — 3 or 4 objects that move, bounce and occlude each other but whose
  number never changes ("three puppies must not become four").

References
----------
N. Srivastava, E. Mansimov and R. Salakhutdinov, "Unsupervised learning of video
representations using LSTMs", ICML 2015 (Moving MNIST).
M. Scheffer et al., "Early-warning signals for critical transitions", Nature 461, 2009
(bistable systems and critical transitions).
N. Lei, D. An, Y. Guo, K. Su, S. Liu, Z. Luo, S.-T. Yau and X. Gu, "A geometric
understanding of deep learning", Engineering 6(3), 2020 (mode mixture at singular sets).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.nn.functional as F

from otgen._validation import check_choice, check_positive_float, check_positive_int
from otgen.data.mnist import load_mnist

__all__ = [
    "moving_digits", "bistable", "bistable_long", "permanence",
    "bistable_geometry", "bistable_position_state", "permanence_object_size",
    "BISTABLE_WELLS", "BISTABLE_BARRIER", "BISTABLE_WELL_HALF_WIDTH", "BISTABLE_BALL_RADIUS",
]

# Bistable landscape, as fractions of the frame width (size - 1 in pixel-index coordinates).
BISTABLE_WELLS = (0.25, 0.75)          # well centres A and B
BISTABLE_BARRIER = 0.5                 # barrier centre
BISTABLE_WELL_HALF_WIDTH = 0.125       # a well is x <= x_A + w (A) or x >= x_B - w (B); between otherwise
BISTABLE_BALL_RADIUS = 3 / 32          # ball radius as a fraction of the frame size (3 px at 32 px)
_OU_RHO = 0.8                          # per-frame autocorrelation of the in-well jitter
_STEADY_CLIP = 0.8                     # jitter is clipped to ±0.8 w, so a steady ball never leaves its well


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(check_positive_int(seed, "seed", minimum=0))


def _check_rate(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _bounce(p0: np.ndarray, v: np.ndarray, n_frames: int, length: float) -> np.ndarray:
    """Linear motion reflected into [0, length]: p0, v of shape (...), returns (..., n_frames)."""
    t = np.arange(n_frames)
    z = p0[..., None] + v[..., None] * t
    if length == 0:
        return np.zeros_like(z)
    m = np.mod(z, 2 * length)
    return length - np.abs(length - m)


def _to_clips(canvas: np.ndarray) -> torch.Tensor:
    """(n, T, H, W) array with values in [0, 1] -> float32 tensor (n, T, 1, H, W)."""
    return torch.from_numpy(canvas.astype(np.float32, copy=False)[:, :, None])


# --------------------------------------------------------------------------- moving digits

def _small_digits(split: str, digit_size: int, data_dir, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_mnist(split, data_dir, seed=seed)
    if digit_size != 28:
        x = torch.from_numpy(images)[:, None]
        x = F.interpolate(x, size=(digit_size, digit_size), mode="bilinear", antialias=True, align_corners=False)
        images = x[:, 0].clamp_(0, 1).numpy()
    return images, labels


def moving_digits(n: int, n_frames: int = 16, size: int = 32, n_digits: int = 1, digit_size: int | None = None,
                  seed: int = 0, split: str = "train", *, speed: tuple[float, float] | None = None,
                  data_dir=None) -> tuple[torch.Tensor, dict]:
    """Moving-MNIST clips: MNIST digits moving linearly and bouncing off the frame edges.

    Each digit starts at a uniform position with a uniform direction and a speed
    uniform in ``speed``; its top-left corner follows ``p(t) = p_0 + v t`` reflected
    into ``[0, size - digit_size]`` (elastic bounce). Digits are combined with a
    pixel-wise maximum. ``size=64, n_frames=20, n_digits=2`` is the usual Moving-MNIST
    convention (Srivastava et al., ICML 2015).

    Parameters
    ----------
    n : int
        Number of clips.
    n_frames : int, default 16
    size : int, default 32
        Frame height and width H = W.
    n_digits : int, default 1
    digit_size : int, optional
        Side of a digit in pixels; default ``min(28, size // 2)`` (MNIST's 28 px
        digits are downscaled with an anti-aliased bilinear filter, e.g. to 16 px for
        32 × 32 frames).
    seed : int, default 0
    split : {"train", "test", "all"}, default "train"
        Which MNIST digits (see :func:`otgen.data.load_mnist`).
    speed : tuple (low, high), optional
        Speed range in pixels per frame; default ``(size / 32, size / 16)``.
    data_dir : path, optional
        Full-MNIST IDX folder; default the embedded 5k subset.

    Returns
    -------
    clips : torch.Tensor of float32, shape (n, n_frames, 1, size, size)
    labels : dict
        ``"digit"`` int64 (n, n_digits); ``"position"`` float64 (n, n_frames, n_digits, 2),
        the (x, y) centre of each digit in pixel-index coordinates.
    """
    n = check_positive_int(n, "n")
    n_frames = check_positive_int(n_frames, "n_frames")
    size = check_positive_int(size, "size", minimum=4)
    n_digits = check_positive_int(n_digits, "n_digits")
    check_choice(split, "split", ("train", "test", "all"))
    digit_size = min(28, size // 2) if digit_size is None else check_positive_int(digit_size, "digit_size", minimum=2)
    if digit_size > size:
        raise ValueError(f"digit_size must be <= size, got digit_size = {digit_size} for size = {size}")
    if speed is None:
        speed = (size / 32, size / 16)
    if not (isinstance(speed, (tuple, list)) and len(speed) == 2):
        raise ValueError(f"speed must be a pair (low, high) in pixels per frame, got {speed!r}")
    lo = check_positive_float(speed[0], "speed[0]", allow_zero=True)
    hi = check_positive_float(speed[1], "speed[1]", allow_zero=True)
    if lo > hi:
        raise ValueError(f"speed must satisfy low <= high, got {speed!r}")
    rng = _rng(seed)

    images, digit_labels = _small_digits(split, digit_size, data_dir, 0)
    pick = rng.integers(0, len(images), size=(n, n_digits))
    L = size - digit_size
    p0 = rng.uniform(0, L, size=(n, n_digits, 2))
    theta = rng.uniform(0, 2 * np.pi, size=(n, n_digits))
    v = rng.uniform(lo, hi, size=(n, n_digits))[..., None] * np.stack([np.cos(theta), np.sin(theta)], -1)
    corner = np.rint(_bounce(p0, v, n_frames, L)).astype(np.int64)                # (n, K, 2, T)
    corner = corner.transpose(0, 3, 1, 2)                                           # (n, T, K, 2) as (x, y)

    canvas = np.zeros((n, n_frames, size, size), dtype=np.float32)
    ii = np.arange(n)[:, None, None, None]
    tt = np.arange(n_frames)[None, :, None, None]
    offs = np.arange(digit_size)
    for k in range(n_digits):
        rows = (corner[:, :, k, 1, None] + offs)[:, :, :, None]                   # (n, T, d, 1)
        cols = (corner[:, :, k, 0, None] + offs)[:, :, None, :]                   # (n, T, 1, d)
        patch = images[pick[:, k]][:, None]                                         # (n, 1, d, d)
        canvas[ii, tt, rows, cols] = np.maximum(canvas[ii, tt, rows, cols], patch)
    position = corner + (digit_size - 1) / 2.0
    return _to_clips(canvas), {"digit": digit_labels[pick], "position": position}


# --------------------------------------------------------------------------- bistable ball

def bistable_geometry(size: int) -> dict:
    """Positions (pixel-index coordinates) of the double-well landscape in a ``size`` × ``size`` frame.

    Returns
    -------
    geometry : dict of float
        ``x_a``, ``x_b`` (well centres), ``x_barrier`` (barrier centre), ``half_width``
        (w: state A is ``x <= x_a + w``, state B ``x >= x_b - w``, in between otherwise),
        ``radius`` (ball radius) and ``y`` (row of the ball's rest position).
    """
    size = check_positive_int(size, "size", minimum=4)
    span = size - 1
    return {"x_a": BISTABLE_WELLS[0] * span, "x_b": BISTABLE_WELLS[1] * span, "x_barrier": BISTABLE_BARRIER * span,
            "half_width": BISTABLE_WELL_HALF_WIDTH * span, "radius": BISTABLE_BALL_RADIUS * size, "y": span / 2}


def bistable_position_state(x, size: int) -> np.ndarray:
    """State of a ball at horizontal position ``x``: 0 in well A, 1 in well B, 2 in between.

    Parameters
    ----------
    x : array_like, any shape
        x-coordinates in pixel-index coordinates.
    size : int
        Frame size (see :func:`bistable_geometry`).

    Returns
    -------
    state : np.ndarray of int64, same shape as ``x``
    """
    g = bistable_geometry(size)
    x = np.asarray(x, dtype=np.float64)
    state = np.where(x >= g["x_b"] - g["half_width"], 1, 2)
    return np.where(x <= g["x_a"] + g["half_width"], 0, state).astype(np.int64)


def _ou_jitter(rng: np.random.Generator, shape: tuple, n_frames: int, std: float, bound: float) -> np.ndarray:
    """Ornstein-Uhlenbeck jitter of stationary std ``std`` along the last (time) axis, clipped to ±bound."""
    out = np.empty(shape + (n_frames,))
    out[..., 0] = std * rng.standard_normal(shape)
    eps = rng.standard_normal(shape + (n_frames,))
    for t in range(1, n_frames):
        out[..., t] = _OU_RHO * out[..., t - 1] + std * np.sqrt(1 - _OU_RHO ** 2) * eps[..., t]
    return np.clip(out, -bound, bound)


def _render_discs(x: np.ndarray, y: np.ndarray, radius: float, size: int, chunk: int = 256) -> np.ndarray:
    """Anti-aliased discs of intensity 1 centred at (x, y) of shape (n, T): returns (n, T, size, size) float32.

    Rendered ``chunk`` clips at a time, so temporaries stay small next to the output.
    """
    grid = np.arange(size, dtype=np.float32)
    out = np.empty(x.shape + (size, size), dtype=np.float32)
    for i in range(0, len(x), chunk):
        dx2 = (grid - x[i:i + chunk, :, None].astype(np.float32)) ** 2              # (c, T, W)
        dy2 = (grid - y[i:i + chunk, :, None].astype(np.float32)) ** 2              # (c, T, H)
        o = out[i:i + chunk]
        np.sqrt(dy2[..., :, None] + dx2[..., None, :], out=o)
        np.subtract(np.float32(radius + 0.5), o, out=o)
        np.minimum(np.maximum(o, 0.0, out=o), 1.0, out=o)                           # (np.clip is slower)
    return out


def _bistable(n, n_frames, size, transition_rate, crossing_frames, jitter, seed, force_transition):
    n = check_positive_int(n, "n")
    n_frames = check_positive_int(n_frames, "n_frames")
    size = check_positive_int(size, "size", minimum=8)
    crossing_frames = check_positive_int(crossing_frames, "crossing_frames", minimum=4)
    jitter = check_positive_float(jitter, "jitter", allow_zero=True)
    if (force_transition or transition_rate > 0) and n_frames < crossing_frames + 4:
        raise ValueError(f"n_frames must be >= crossing_frames + 4 = {crossing_frames + 4} so that a transition "
                         f"fits inside a clip with frames in a well before and after, got n_frames = {n_frames}")
    rng = _rng(seed)
    g = bistable_geometry(size)
    bound = _STEADY_CLIP * g["half_width"]
    std = jitter * size

    if force_transition:
        state = np.full(n, 2, dtype=np.int64)
    else:
        moving = rng.random(n) < transition_rate
        state = np.where(moving, 2, rng.integers(0, 2, size=n)).astype(np.int64)
    start_b = rng.random(n) < 0.5                                                   # transitions start in A or B
    jx = _ou_jitter(rng, (n, 2), n_frames, std, bound)                              # jitter around A and around B
    jy = _ou_jitter(rng, (n,), n_frames, std / 2, bound)
    # crossing time tc: the ramp [tc - D/2, tc + D/2] lies inside the clip with a frame to spare on each side
    half = crossing_frames / 2
    tc = rng.uniform(half + 1, n_frames - 2 - half, size=n)

    t = np.arange(n_frames)
    u = np.clip((t - tc[:, None]) / crossing_frames + 0.5, 0.0, 1.0)
    s = 0.5 - 0.5 * np.cos(np.pi * u)                                               # smooth 0 -> 1, s = 1/2 at tc
    trans = state == 2
    s = np.where(trans[:, None], np.where(start_b[:, None], 1 - s, s), (state == 1)[:, None].astype(float))
    xa, xb = g["x_a"] + jx[:, 0], g["x_b"] + jx[:, 1]
    x = (1 - s) * xa + s * xb                                                       # (n, T)
    y = g["y"] + jy

    frame_state = bistable_position_state(x, size)
    far_side = np.where(start_b[:, None], x < g["x_barrier"], x > g["x_barrier"])
    transition_frame = np.where(trans, np.argmax(far_side, axis=1), -1).astype(np.int64)
    clips = _to_clips(_render_discs(x, y, g["radius"], size))
    return clips, {"state": state, "frame_state": frame_state, "transition_frame": transition_frame, "position": x}


def bistable(n: int, n_frames: int = 16, size: int = 32, transition_rate: float = 0.05, seed: int = 0, *,
             crossing_frames: int = 5, jitter: float = 0.03) -> tuple[torch.Tensor, dict]:
    """A ball in a double-well landscape: two steady states and a rare critical transition.

    The ball (an anti-aliased disc of intensity 1 and radius ``3/32 size``) sits in
    well A (``x_A = (size-1)/4``) or well B (``x_B = 3(size-1)/4``), jittering with an
    Ornstein-Uhlenbeck process (stationary std ``jitter * size`` px, autocorrelation 0.8
    per frame, clipped so that it never leaves its well). Each clip independently goes
    through the transition with probability ``transition_rate``: the ball travels
    continuously over the barrier to the other well along

    .. math:: x(t) = (1 - s(t))\\, (x_A + j_A(t)) + s(t)\\, (x_B + j_B(t)), \\quad
              s(t) = \\tfrac12 - \\tfrac12 \\cos\\big(\\pi\\, \\mathrm{clip}((t - t_c)/D + \\tfrac12, 0, 1)\\big)

    (or the reverse, B to A, half of the time), with ``D = crossing_frames`` and the
    crossing time ``t_c`` uniform inside the clip. Other clips stay in A or B (half each).

    Parameters
    ----------
    n : int
        Number of clips.
    n_frames : int, default 16
    size : int, default 32
        Frame height and width.
    transition_rate : float in [0, 1], default 0.05
        Probability that a clip contains the transition.
    seed : int, default 0
    crossing_frames : int, default 5
        Duration D of the crossing (>= 4, so that at least one frame shows the ball
        between the wells).
    jitter : float, default 0.03
        In-well jitter std as a fraction of ``size``.

    Returns
    -------
    clips : torch.Tensor of float32, shape (n, n_frames, 1, size, size)
    labels : dict
        ``"state"`` int64 (n,): 0 steady in A, 1 steady in B, 2 transition.
        ``"frame_state"`` int64 (n, n_frames): 0 in A, 1 in B, 2 between (see
        :func:`bistable_position_state`).
        ``"transition_frame"`` int64 (n,): first frame on the far side of the barrier
        centre, -1 for steady clips.
        ``"position"`` float64 (n, n_frames): x-coordinate of the ball in pixels.
    """
    transition_rate = _check_rate(transition_rate, "transition_rate")
    return _bistable(n, n_frames, size, transition_rate, crossing_frames, jitter, seed, False)


def bistable_long(n: int, n_frames: int = 64, size: int = 32, seed: int = 0, *, crossing_frames: int = 5,
                  jitter: float = 0.03) -> tuple[torch.Tensor, dict]:
    """Long bistable clips that each contain exactly one transition, at a uniform random time.

    For localising the critical event with a sliding window. Same dynamics and
    parameters as :func:`bistable`; every clip has ``state == 2``.

    Returns
    -------
    clips : torch.Tensor of float32, shape (n, n_frames, 1, size, size)
    labels : dict
        ``"state"`` int64 (n,): 0 steady in A, 1 steady in B, 2 transition.
        ``"frame_state"`` int64 (n, n_frames): 0 in A, 1 in B, 2 between (see
        :func:`bistable_position_state`).
        ``"transition_frame"`` int64 (n,): first frame on the far side of the barrier
        centre, -1 for steady clips.
        ``"position"`` float64 (n, n_frames): x-coordinate of the ball in pixels.
    """
    return _bistable(n, n_frames, size, 1.0, crossing_frames, jitter, seed, True)



# --------------------------------------------------------------------------- object permanence

def permanence_object_size(size: int) -> int:
    """Side in pixels of the squares of :func:`permanence` in ``size`` × ``size`` frames (5 px at 32 px)."""
    size = check_positive_int(size, "size")
    return max(2, int(round(5 * size / 32)))


def _check_counts(n_objects) -> np.ndarray:
    if isinstance(n_objects, numbers.Integral) and not isinstance(n_objects, bool):
        n_objects = (n_objects,)
    if not isinstance(n_objects, (tuple, list)) or len(n_objects) == 0:
        raise ValueError(f"n_objects must be a positive int or a non-empty tuple of positive ints, got {n_objects!r}")
    return np.array(sorted({check_positive_int(k, "n_objects") for k in n_objects}), dtype=np.int64)


def permanence(n: int, n_frames: int = 16, size: int = 32, n_objects=(3, 4), seed: int = 0, *,
               object_size: int | None = None, min_separation: int = 2) -> tuple[torch.Tensor, dict]:
    """Clips of a constant number of moving squares that may occlude each other.

    Each clip has ``K`` objects, ``K`` uniform among ``n_objects``: white squares of
    side ``object_size`` that move linearly (uniform direction, speed uniform in
    ``[0.5, 1.5] size/32`` px per frame) and bounce off the frame edges. Squares are
    drawn at integer positions and combined with a pixel-wise maximum, so two
    overlapping squares form one blob. Clips in which two squares ever come closer
    than ``min_separation`` pixels (Chebyshev distance of their corners) are redrawn:
    a merged blob is then at least ``1 + min_separation / object_size`` times the area
    of one square, so the number of objects can always be read from the pixels.

    Parameters
    ----------
    n : int
        Number of clips.
    n_frames : int, default 16
    size : int, default 32
        Frame height and width.
    n_objects : int or tuple of int, default (3, 4)
        Possible numbers of objects (drawn uniformly per clip).
    seed : int, default 0
    object_size : int, optional
        Side of a square; default :func:`permanence_object_size` (5 px at size 32).
    min_separation : int, default 2
        Closest approach allowed between two squares (0 allows exact coincidence).

    Returns
    -------
    clips : torch.Tensor of float32, shape (n, n_frames, 1, size, size)
        Binary frames (0 background, 1 object).
    labels : dict
        ``"n_objects"`` int64 (n,); ``"occluded"`` bool (n, n_frames), True when two
        squares overlap or touch (and so form one connected blob) in that frame;
        ``"position"`` float64 (n, n_frames, max(n_objects), 2), the (x, y) centres,
        NaN for absent objects.
    """
    n = check_positive_int(n, "n")
    n_frames = check_positive_int(n_frames, "n_frames")
    size = check_positive_int(size, "size", minimum=4)
    counts = _check_counts(n_objects)
    s = permanence_object_size(size) if object_size is None else check_positive_int(object_size, "object_size")
    if s >= size:
        raise ValueError(f"object_size must be < size, got object_size = {s} for size = {size}")
    min_sep = check_positive_int(min_separation, "min_separation", minimum=0)
    if counts.max() * (s + min_sep) ** 2 > 0.5 * size ** 2:
        raise ValueError(f"{counts.max()} objects of side {s} px with min_separation {min_sep} do not fit in a "
                         f"{size} x {size} frame; use fewer or smaller objects")
    rng = _rng(seed)
    K, L = int(counts.max()), size - s
    speed = (0.5 * size / 32, 1.5 * size / 32)

    k = rng.choice(counts, size=n)
    present = np.arange(K) < k[:, None]                                             # (n, K)
    pair = present[:, None, :, None] & present[:, None, None, :] & ~np.eye(K, dtype=bool)
    corner = np.zeros((n, n_frames, K, 2), dtype=np.int64)
    todo = np.arange(n)                                                             # clips still to draw
    for _ in range(1000):
        m = len(todo)
        p0 = rng.uniform(0, L, size=(m, K, 2))
        theta = rng.uniform(0, 2 * np.pi, size=(m, K))
        v = rng.uniform(*speed, size=(m, K))[..., None] * np.stack([np.cos(theta), np.sin(theta)], -1)
        corner[todo] = np.rint(_bounce(p0, v, n_frames, L)).astype(np.int64).transpose(0, 3, 1, 2)
        cheb = np.abs(corner[todo, :, :, None] - corner[todo, :, None, :]).max(-1)   # (m, T, K, K)
        todo = todo[((cheb < min_sep) & pair[todo]).any(axis=(1, 2, 3))]
        if len(todo) == 0:
            break
    else:
        raise RuntimeError("could not draw clips that respect min_separation; lower it or use fewer objects")

    grid = np.arange(size)
    canvas = np.zeros((n, n_frames, size, size), dtype=bool)
    for j in range(K):
        rows = (grid >= corner[:, :, j, 1, None]) & (grid < corner[:, :, j, 1, None] + s)   # (n, T, H)
        cols = (grid >= corner[:, :, j, 0, None]) & (grid < corner[:, :, j, 0, None] + s)   # (n, T, W)
        canvas |= rows[..., :, None] & cols[..., None, :] & present[:, j, None, None, None]
    cheb = np.abs(corner[:, :, :, None] - corner[:, :, None, :]).max(-1)
    occluded = ((cheb <= s) & pair).any(axis=(2, 3))
    position = np.where(present[:, None, :, None], corner + (s - 1) / 2.0, np.nan)
    return _to_clips(canvas), {"n_objects": k, "occluded": occluded, "position": position}
