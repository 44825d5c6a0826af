"""Instruments that read generated video clips from their pixels (never from a latent code).

They judge clips decoded by a model, so blurry or greyish: every reading goes through
an intensity threshold and tolerances, and the defaults match the generators of
:mod:`otgen.data.video` (same object size, same well positions).

* Object permanence ("three puppies must not become four"): :func:`count_objects`
  counts objects per frame by connected components, a component whose area is about
  ``k`` times a single object's counting as ``k`` (two objects occluding each other
  form one larger blob); :func:`count_consistency` reports how often the count
  changes inside a clip.
* Critical transitions of the bistable ball: :func:`bistable_frame_states` reads each
  frame's horizontal intensity profile (well A, well B, between, *blend* — mass in both
  wells at once —, empty) and :func:`bistable_clip_classes` tells a continuous
  transition from a *teleport* (A to B with no frame in between) or a blend, the two
  ways an interpolating generator fails at the boundary between modes.
* Moving digits: :func:`moving_digit_plausibility` checks that a digit keeps its ink,
  never vanishes and moves without jumps.

References
----------
N. Lei, D. An, Y. Guo, K. Su, S. Liu, Z. Luo, S.-T. Yau and X. Gu, "A geometric
understanding of deep learning", Engineering 6(3), 2020 (mode mixture / collapse at
the singular set of the transport map).
A. Rosenfeld and J. Pfaltz, "Sequential operations in digital picture processing",
J. ACM 13(4), 1966 (connected-component labelling).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from scipy import ndimage

from otgen._validation import as_tensor, check_positive_float
from otgen.data.video import BISTABLE_BALL_RADIUS, bistable_geometry, bistable_position_state, permanence_object_size

__all__ = ["count_objects", "count_consistency", "bistable_frame_states", "bistable_clip_classes",
           "moving_digit_plausibility", "BISTABLE_FRAME_STATES", "BISTABLE_CLIP_CLASSES"]

BISTABLE_FRAME_STATES = ("A", "B", "between", "blend", "empty")   # codes 0..4
BISTABLE_CLIP_CLASSES = ("steady_A", "steady_B", "transition", "teleport", "blend", "empty", "barrier")

# Moving digits (otgen.data.video.moving_digits shifts a digit by whole pixels: its ink is exactly
# conserved and its centroid moves at most sqrt(2) top speeds per frame, measured on 500 clips).
_MASS_CHANGE = 0.25          # relative ink change (from the clip's median) that counts as not conserved
_JUMP_SPEEDS = 2.0           # a centroid step above this many top speeds is a jump (the data's reach sqrt(2))
_TOP_SPEED_PER_WIDTH = 1 / 16  # moving_digits' top speed is size / 16 pixels per frame
_EMPTY_INK = 0.05            # a frame with under this fraction of the clip's largest ink has lost its digit
_NO_INK = 1e-6               # a clip whose largest frame ink is below this is black (empty)
_TINY = 1e-9                 # guards divisions by an ink of 0

# 4-connectivity inside a frame, no connection across frames (labels a stack of frames at once).
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = ndimage.generate_binary_structure(2, 1)


def _frames(clips) -> np.ndarray:
    """clips (n, T, C, H, W) or (n, T, H, W) -> float32 numpy (n, T, H, W) (channels averaged)."""
    x = as_tensor(clips, "clips", dtype=torch.float32)
    if x.ndim == 5:
        x = x.mean(dim=2)
    elif x.ndim != 4:
        raise ValueError(f"clips must have shape (n, T, C, H, W) or (n, T, H, W), "
                         f"got {x.ndim} dimension(s) of shape {tuple(x.shape)}")
    if min(x.shape[1:]) < 1:
        raise ValueError(f"clips must have at least one frame of at least 1 x 1 pixels, got shape {tuple(x.shape)}")
    return x.cpu().numpy()


def _check_threshold(value, name: str = "threshold") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {type(value).__name__} {value!r}")
    return float(value)


# --------------------------------------------------------------------------- object counts

def _component_counts(clips, threshold, object_area, merge_ratio, min_area) -> tuple[np.ndarray, np.ndarray]:
    """(counts, merged), each (n, T): objects per frame, and whether a frame has a merged blob."""
    frames = _frames(clips)
    n, T, H, W = frames.shape
    threshold = _check_threshold(threshold)
    if object_area is None:
        area1 = float(permanence_object_size(H) ** 2)
    else:
        area1 = check_positive_float(object_area, "object_area")
    merge_ratio = check_positive_float(merge_ratio, "merge_ratio")
    if merge_ratio < 1:
        raise ValueError(f"merge_ratio must be >= 1 (a blob up to merge_ratio x object_area is one object), "
                         f"got {merge_ratio}")
    min_area = 0.3 * area1 if min_area is None else check_positive_float(min_area, "min_area", allow_zero=True)

    mask = frames.reshape(n * T, H, W) >= threshold
    lab, n_lab = ndimage.label(mask, structure=_STRUCTURE)
    if n_lab == 0:
        return np.zeros((n, T), dtype=np.int64), np.zeros((n, T), dtype=bool)
    area = np.bincount(lab.ravel(), minlength=n_lab + 1)[1:].astype(np.float64)
    frame_of = np.empty(n_lab, dtype=np.int64)
    frame_idx = np.broadcast_to(np.arange(n * T)[:, None, None], lab.shape)
    frame_of[lab[mask] - 1] = frame_idx[mask]
    k = np.where(area < min_area, 0, np.where(area <= merge_ratio * area1, 1, np.maximum(2, np.rint(area / area1))))
    counts = np.bincount(frame_of, weights=k, minlength=n * T).astype(np.int64).reshape(n, T)
    merged = (np.bincount(frame_of, weights=k >= 2, minlength=n * T) > 0).reshape(n, T)
    return counts, merged


def count_objects(clips, threshold: float = 0.5, *, object_area: float | None = None, merge_ratio: float = 1.3,
                  min_area: float | None = None) -> np.ndarray:
    """Number of objects in every frame, read from connected components.

    Pixels ``>= threshold`` are foreground; their 4-connected components in each frame
    have areas ``a``. With ``A`` the area of one object, a component counts

    .. math:: k(a) = \\begin{cases} 0 & a < a_{\\min} \\quad\\text{(noise)} \\\\
                                   1 & a_{\\min} \\le a \\le \\rho A \\\\
                                   \\max(2, \\mathrm{round}(a / A)) & a > \\rho A
                                   \\quad\\text{(merged: occlusion)} \\end{cases}

    and the frame's count is the sum over its components.

    Parameters
    ----------
    clips : array or tensor, shape (n, T, C, H, W) or (n, T, H, W)
        Frames with values around [0, 1] (channels are averaged).
    threshold : float, default 0.5
        Foreground intensity.
    object_area : float, optional
        Area ``A`` of one object in pixels; default the squares of
        :func:`otgen.data.video.permanence` at this frame size (25 px at 32 × 32).
    merge_ratio : float, default 1.3
        ``ρ``: a component larger than ``ρ A`` holds several objects (>= 1).
    min_area : float, optional
        Smaller components are noise; default ``0.3 A``.

    Returns
    -------
    counts : np.ndarray of int64, shape (n, T)
    """
    return _component_counts(clips, threshold, object_area, merge_ratio, min_area)[0]


def count_consistency(clips, threshold: float = 0.5, *, object_area: float | None = None, merge_ratio: float = 1.3,
                      min_area: float | None = None) -> dict:
    """How often the number of objects changes inside a clip ("three puppies become four").

    Frames with a merged component (an occlusion, see :func:`count_objects`) only give a
    lower bound on the count: occlusion hides objects, it never creates them. A clip
    *changes* when its clean (unoccluded) frames do not all show the same count ``K``,
    or when an occluded frame shows more than ``K``. A clip whose every frame is
    occluded cannot be contradicted and counts as unchanged.

    Parameters
    ----------
    clips : array or tensor, shape (n, T, C, H, W) or (n, T, H, W)
    threshold, object_area, merge_ratio, min_area
        As in :func:`count_objects`.

    Returns
    -------
    result : dict
        ``changed_rate`` (float): fraction of clips whose count changes;
        ``changed`` bool (n,); ``per_clip_counts`` int64 (n,): the modal count over the
        clean frames (the smallest on ties; the largest reading when every frame is
        occluded); ``count_hist`` int64 (max count + 1,): number of clips per modal
        count; ``counts`` int64 (n, T) and ``occluded`` bool (n, T): the per-frame
        readings; ``judged`` bool (n,): the clip has at least one clean frame.
    """
    counts, merged = _component_counts(clips, threshold, object_area, merge_ratio, min_area)
    n, T = counts.shape
    clean = ~merged
    judged = clean.any(axis=1)
    lo = np.where(clean, counts, np.iinfo(np.int64).max).min(axis=1)
    hi = np.where(clean, counts, -1).max(axis=1)
    hidden_max = np.where(merged, counts, -1).max(axis=1)
    n_values = int(counts.max()) + 1
    votes = np.zeros((n, n_values), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(n), T), counts.ravel()), clean.ravel())
    modal = np.where(judged, votes.argmax(axis=1), counts.max(axis=1)).astype(np.int64)
    changed = judged & ((hi != lo) | (hidden_max > modal))
    return {"changed_rate": float(changed.mean()), "changed": changed, "per_clip_counts": modal,
            "count_hist": np.bincount(modal, minlength=n_values).astype(np.int64), "counts": counts,
            "occluded": merged, "judged": judged}


# --------------------------------------------------------------------------- bistable ball

def _bistable_read(clips, threshold, blend_spread, blend_mass, min_mass) -> tuple[np.ndarray, np.ndarray, dict]:
    """(states, centroid, geometry): states and centroids (n, T) from each frame's horizontal profile."""
    frames = _frames(clips)
    n, T, H, W = frames.shape
    threshold = _check_threshold(threshold)
    g = bistable_geometry(W)
    if blend_spread is None:
        blend_spread = 0.25 * (g["x_b"] - g["x_a"])
    else:
        blend_spread = check_positive_float(blend_spread, "blend_spread")
    if isinstance(blend_mass, bool) or not isinstance(blend_mass, numbers.Real) or not 0 < blend_mass <= 0.5:
        raise ValueError(f"blend_mass must be a number in (0, 0.5], got {blend_mass!r}")
    ball = np.pi * (BISTABLE_BALL_RADIUS * W) ** 2
    min_mass = 0.25 * ball if min_mass is None else check_positive_float(min_mass, "min_mass", allow_zero=True)

    fg = np.where(frames >= threshold, frames, 0.0)
    profile = fg.sum(axis=2, dtype=np.float64)                                     # (n, T, W)
    mass = profile.sum(axis=-1)
    x = np.arange(W, dtype=np.float64)
    safe = np.where(mass > 0, mass, 1.0)
    mu = (profile * x).sum(-1) / safe
    spread = np.sqrt(np.maximum((profile * (x - mu[..., None]) ** 2).sum(-1) / safe, 0.0))
    left = profile[..., x < g["x_barrier"]].sum(-1) / safe
    right = profile[..., x > g["x_barrier"]].sum(-1) / safe

    states = bistable_position_state(mu, W)
    blend = (spread > blend_spread) & (left >= blend_mass) & (right >= blend_mass)
    states = np.where(blend, 3, states)
    empty = mass < max(min_mass, 1e-12)
    states = np.where(empty, 4, states).astype(np.int64)
    return states, np.where(empty, np.nan, mu), g


def bistable_frame_states(clips, threshold: float = 0.25, *, blend_spread: float | None = None,
                          blend_mass: float = 0.2, min_mass: float | None = None) -> np.ndarray:
    """State of the bistable ball in every frame, read from the horizontal intensity profile.

    Pixels below ``threshold`` are set to 0; the column sums give a profile ``p(x)`` of
    mass ``M``, centroid ``μ`` and spread ``σ``. The frame is

    * 4 (empty) when ``M < min_mass``;
    * 3 (blend: mass in both wells at once, two blobs or one smeared profile) when
      ``σ > blend_spread`` and at least a fraction ``blend_mass`` of ``M`` lies on each
      side of the barrier centre;
    * otherwise the well of ``μ``: 0 (A), 1 (B) or 2 (between), with the thresholds of
      :func:`otgen.data.video.bistable_position_state`.

    Parameters
    ----------
    clips : array or tensor, shape (n, T, C, H, W) or (n, T, H, W)
        Frames of width W (the landscape is :func:`otgen.data.video.bistable_geometry` (W)).
    threshold : float, default 0.25
        Background level (low enough that the two half-bright balls of a blend are seen).
    blend_spread : float, optional
        Spread in pixels above which a profile is not one ball; default a quarter of
        the distance between the wells (3.9 px at width 32; one ball has σ ≈ r/2).
    blend_mass : float in (0, 0.5], default 0.2
    min_mass : float, optional
        Least mass of a present ball; default a quarter of the ball area ``π r²``.

    Returns
    -------
    states : np.ndarray of int64, shape (n, T)
        Codes 0..4, named in ``BISTABLE_FRAME_STATES``.
    """
    return _bistable_read(clips, threshold, blend_spread, blend_mass, min_mass)[0]


def bistable_clip_classes(clips, threshold: float = 0.25, *, blend_spread: float | None = None,
                          blend_mass: float = 0.2, min_mass: float | None = None) -> dict:
    """Classify bistable clips: steady, continuous transition, or a generator's failure.

    From the frame states of :func:`bistable_frame_states`, the first rule that applies:

    * ``"blend"`` — some frame shows mass in both wells at once;
    * ``"empty"`` — some frame shows no ball;
    * ``"teleport"`` — the state jumps A ↔ B between two consecutive frames;
    * ``"transition"`` — the clip visits both wells, always through a between frame;
    * ``"steady_A"`` / ``"steady_B"`` — the clip visits one well only (possibly with
      excursions between the wells);
    * ``"barrier"`` — the ball never reaches a well.

    Parameters
    ----------
    clips : array or tensor, shape (n, T, C, H, W) or (n, T, H, W)
    threshold, blend_spread, blend_mass, min_mass
        As in :func:`bistable_frame_states`.

    Returns
    -------
    result : dict
        ``classes`` (n,) array of str; ``frame_states`` int64 (n, T);
        ``transition_frame`` int64 (n,): for transition and teleport clips the first
        frame whose centroid is past the barrier centre from the first well visited
        (as the ``transition_frame`` label of :func:`otgen.data.video.bistable`), else -1;
        and the rates ``steady_rate`` (A and B together), ``transition_rate``,
        ``teleport_rate``, ``blend_rate``, ``empty_rate``, ``barrier_rate``.
    """
    states, mu, g = _bistable_read(clips, threshold, blend_spread, blend_mass, min_mass)
    n = states.shape[0]
    has = [(states == c).any(axis=1) for c in range(5)]
    a, b = states[:, :-1], states[:, 1:]
    jump = (((a == 0) & (b == 1)) | ((a == 1) & (b == 0))).any(axis=1)
    classes = np.full(n, "barrier", dtype=object)
    for mask, name in [(has[0] & ~has[1], "steady_A"), (has[1] & ~has[0], "steady_B"),
                       (has[0] & has[1], "transition"), (jump, "teleport"), (has[4], "empty"), (has[3], "blend")]:
        classes[mask] = name                                                       # later rules take priority

    crossing = np.isin(classes, ("transition", "teleport"))
    in_well = np.where((states == 0) | (states == 1), states, 9)
    first_well = np.take_along_axis(in_well, np.argmax(in_well < 9, axis=1)[:, None], axis=1)[:, 0]
    past = np.where(first_well[:, None] == 0, mu > g["x_barrier"], mu < g["x_barrier"])
    transition_frame = np.where(crossing, np.argmax(past, axis=1), -1).astype(np.int64)

    rate = {name: float((classes == name).mean()) for name in BISTABLE_CLIP_CLASSES}
    return {"classes": classes.astype(str), "frame_states": states, "transition_frame": transition_frame,
            "steady_rate": rate["steady_A"] + rate["steady_B"], "transition_rate": rate["transition"],
            "teleport_rate": rate["teleport"], "blend_rate": rate["blend"], "empty_rate": rate["empty"],
            "barrier_rate": rate["barrier"]}


# --------------------------------------------------------------------------- moving digits

def moving_digit_plausibility(clips, max_speed: float | None = None) -> dict:
    r"""Physical plausibility of moving-digit clips, read from the pixels.

    With :math:`m_t = \sum_{px} x_t` the ink of frame t and :math:`c_t` its ink centroid, a clip

    * does not conserve mass when :math:`\max_t |m_t - \tilde m| > 0.25\,\tilde m`
      (:math:`\tilde m` the clip's median ink; a moving digit keeps its ink, the data's clips
      change by rounding only);
    * is empty when a frame has almost no ink (under 5 % of the clip's largest, or a black clip);
    * jumps when it is not empty and :math:`\max_t |c_{t+1} - c_t| > 2 v_{\max}`, with
      :math:`v_{\max}` the largest speed of :func:`otgen.data.video.moving_digits`
      (``size / 16`` px per frame; its clips step at most :math:`\sqrt 2\, v_{\max}`).

    Parameters
    ----------
    clips : array or tensor, shape (n, T, C, H, W) or (n, T, H, W), values in [0, 1]
        Values outside [0, 1] are clipped; channels are averaged.
    max_speed : float or None, default None
        :math:`v_{\max}` in pixels per frame; ``None``: ``W / 16``.

    Returns
    -------
    dict
        ``mass_change_rate``, ``jump_rate``, ``empty_rate``, ``implausible_rate`` (any of the
        three) as floats, and per clip ``mass_change``, ``jump``, ``empty`` (bool (n,)).
    """
    f = np.clip(_frames(clips).astype(np.float64), 0.0, 1.0)                 # (n, T, H, W)
    n, T, H, W = f.shape
    vmax = W * _TOP_SPEED_PER_WIDTH if max_speed is None else check_positive_float(max_speed, "max_speed")
    mass = f.sum((2, 3))                                                    # (n, T)
    med = np.median(mass, axis=1)                                           # (n,)
    safe = np.where(mass > _TINY, mass, 1.0)
    cy = (f.sum(3) * np.arange(H)).sum(2) / safe                            # (n, T) ink centroid
    cx = (f.sum(2) * np.arange(W)).sum(2) / safe
    empty = (mass < _EMPTY_INK * mass.max(1, keepdims=True)).any(1) | (mass.max(1) < _NO_INK)
    change = (np.abs(mass - med[:, None]) > _MASS_CHANGE * np.maximum(med[:, None], _TINY)).any(1)
    step = np.hypot(np.diff(cx, axis=1), np.diff(cy, axis=1)) if T > 1 else np.zeros((n, 0))
    jump = (step > _JUMP_SPEEDS * vmax).any(1) & ~empty
    bad = change | jump | empty
    return {"mass_change_rate": float(change.mean()), "jump_rate": float(jump.mean()),
            "empty_rate": float(empty.mean()), "implausible_rate": float(bad.mean()),
            "mass_change": change, "jump": jump, "empty": empty}
