"""Critical states of a fitted map and critical events of long clips, measured with the singular set.

* :func:`critical_states` draws source points on the singular set of :math:`\\nabla u_h` and
  returns, for each, the two boundary targets it touches, one in each mode: the two-valued
  Brenier map at a singular point, whose images are the "critical states" of the data (the
  states on the boundary between two modes) [1]_ [2]_.
* :func:`localise_transitions` encodes the sliding windows of long clips into latent paths,
  labels every window with a mode (the nearest-target vote of :func:`~otgen.singular.latent_modes`)
  and places the moment each path changes mode (:func:`~otgen.singular.locate_crossings`); with
  the true frame of each clip's transition it scores the localisation.

References
----------
.. [1] N. Lei, D. An, Y. Guo, K. Su, S. Liu, Z. Luo, S.-T. Yau, X. Gu, "A geometric understanding of
   deep learning", Engineering 6 (2020) (singular set = mode boundaries).
.. [2] X. Gu, "A geometric explanation of Sora's physical paradoxes" (2024) (critical states
   as crossings of the singular set; see ``../shared/seeds/geometric-view-of-sora.txt``).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from otgen._base import check_seed, spawn_seed
from otgen._validation import as_tensor, check_positive_int
from otgen.latent import LatentSpace
from otgen.singular.detector import SingularSetDetector, check_fitted_ot, with_map
from otgen.singular.paths import encode_windows, locate_crossings, singular_sides
from otgen.transport.sources import sample_source

__all__ = ["critical_states", "localise_transitions"]


def _check_pair(ot, detector):
    check_fitted_ot(ot)
    if not isinstance(detector, SingularSetDetector):
        raise TypeError(f"detector must be a fitted SingularSetDetector, got {type(detector).__name__}")
    detector._check_fitted()
    if not detector.fitted_on(ot):
        raise ValueError(f"detector was not fitted on this ot (it has {detector.n_targets_} targets, ot has "
                         f"{ot.targets_.shape[0]}, or other heights): fit it with detector.fit(ot)")


def critical_states(ot, detector, n_points: int, *, seed: int = 0, max_draw: int = 2**20,
                    batch: int = 2**16) -> dict:
    """Source points on the singular set and the two boundary targets each one touches.

    Draws source points of ``ot.source_`` in batches of ``batch`` (batch ``b`` from the stream
    ``spawn_seed(seed, "critical", b)``, at most ``max_draw`` points in all) and keeps those that
    ``detector.predict`` flags (a singular facet of their cell within the detector's band, in
    source distance) *and* whose cell has a facet within the band to a cell of another mode
    (:func:`~otgen.singular.singular_sides`: the cell :math:`i` and the nearest such cell :math:`j`),
    until ``n_points`` are kept. The targets :math:`y_i, y_j` are the two values of
    the Brenier map at the singular point, one on the boundary of each mode.

    Parameters
    ----------
    ot : SemiDiscreteOT
        Fitted solver.
    detector : SingularSetDetector
        Fitted on ``ot`` (an attached map is not needed: ``ot`` is used).
    n_points : int
        Points wanted.
    seed : int, default 0
    max_draw : int, default 2**20
        Most source points drawn (the loop stops there with fewer points when the singular set
        is rare or empty).
    batch : int, default 2**16
        Source points drawn and scored at a time.

    Returns
    -------
    dict
        ``X`` ndarray (m, d) kept source points (m <= n_points, the solver's dtype), ``i``, ``j``
        ndarray of int64 (m,) the boundary cells on the two sides, ``drawn`` (int) source points
        drawn, ``flagged_fraction`` (float, flagged by ``predict``), ``kept_fraction`` (float,
        flagged with a cell of another mode within the band), ``seconds`` (float).
    """
    _check_pair(ot, detector)
    det = with_map(detector, ot)
    n_points = check_positive_int(n_points, "n_points")
    max_draw = check_positive_int(max_draw, "max_draw")
    batch = check_positive_int(batch, "batch")
    seed = check_seed(seed)
    t0 = time.perf_counter()
    d = ot.targets_.shape[1]
    Xs, I, J = [], [], []
    drawn = n_flag = n_kept = b = 0
    while n_kept < n_points and drawn < max_draw:
        X = sample_source(ot.source_, batch, d, seed=spawn_seed(seed, "critical", b), dtype=ot.targets_.dtype,
                          device=ot.targets_.device)
        drawn, b = drawn + batch, b + 1
        flag = det.predict(X)
        n_flag += int(flag.sum())
        if not bool(flag.any()):
            continue
        Xf = X[flag]
        i, j = singular_sides(Xf, ot, det)
        keep = j >= 0
        Xs.append(Xf[torch.as_tensor(keep, device=Xf.device)].cpu().numpy())
        I.append(i[keep])
        J.append(j[keep])
        n_kept += int(keep.sum())
    if Xs:
        X, i, j = np.concatenate(Xs)[:n_points], np.concatenate(I)[:n_points], np.concatenate(J)[:n_points]
    else:
        dtype = torch.empty(0, dtype=ot.targets_.dtype).numpy().dtype
        X, i, j = np.zeros((0, d), dtype), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return {"X": X, "i": i, "j": j, "drawn": int(drawn), "flagged_fraction": n_flag / drawn,
            "kept_fraction": n_kept / drawn, "seconds": time.perf_counter() - t0}


def localise_transitions(encode, long_clips, transition_frame, ot, detector, latent, *, window: int,
                         k: int = 1, tolerance: int = 2) -> dict:
    """Encode sliding windows of long clips, follow the latent paths, locate the mode change.

    The clips are padded with ``window // 2`` copies of their first and last frames, so that every
    frame is the middle of a window (a transition close to an end is still seen with both steady
    states around it). Window ``s`` (frames ``s .. s + window - 1``) is encoded, standardised by
    ``latent`` into the coordinates of the OT targets and gets the time ``s + window / 2``;
    :func:`~otgen.singular.locate_crossings` interpolates the crossing between windows. The
    estimate :math:`\\hat t` of a clip is compared with its true transition frame :math:`t^*`:
    error :math:`|\\hat t - t^*|`, correct within ``tolerance`` frames.

    Parameters
    ----------
    encode : callable or object with ``encode``
        Maps clips (b, window, C, H, W) (a float32 tensor) to raw codes (b, d), numpy or torch
        (e.g. a fitted :class:`~otgen.autoencoder.VideoAutoencoder` trained on clips of ``window``
        frames, or its ``encode`` method).
    long_clips : array or tensor, shape (n, T, C, H, W)
    transition_frame : array_like, shape (n,)
        True first frame past the transition of each clip.
    ot : SemiDiscreteOT
        Fitted on standardised codes ``latent.transform(codes)``.
    detector : SingularSetDetector
        Fitted on ``ot``.
    latent : LatentSpace
        Fitted; maps the raw codes into the coordinates of ``ot.targets_``.
    window : int
        Frames per window.
    k : int, default 1
        Voters of the nearest-target vote for the mode of a window.
    tolerance : int, default 2
        Frames within which a located crossing counts as correct.

    Returns
    -------
    dict
        ``estimate`` (n,) float (NaN when the path does not change mode), ``truth`` (n,),
        ``error`` (n,) float, ``mean_abs_error``, ``median_abs_error`` (over located clips),
        ``within_tol`` (fraction of all clips located within ``tolerance`` frames), ``tolerance``,
        ``located`` (fraction whose path changes mode), ``n_changes_mean``, ``n_clips``,
        ``window``, ``n_frames``, ``paths`` (n, m, d) standardised window codes, ``starts`` (m,)
        first frame of each window, ``modes`` (n, m) mode of each window.
    """
    _check_pair(ot, detector)
    if not isinstance(latent, LatentSpace):
        raise TypeError(f"latent must be a fitted LatentSpace, got {type(latent).__name__}")
    latent._check_fitted()
    window = check_positive_int(window, "window")
    tolerance = check_positive_int(tolerance, "tolerance", minimum=0)
    codes, starts = encode_windows(encode, long_clips, window, pad=window // 2)
    n, m, d = codes.shape
    tf = as_tensor(transition_frame, "transition_frame", ndim=1, dtype=torch.float64, min_rows=0).numpy()
    if len(tf) != n:
        raise ValueError(f"transition_frame must have one entry per clip ({n}), got {len(tf)}")
    zp = np.asarray(latent.transform(codes.reshape(n * m, d)), np.float32).reshape(n, m, -1)
    r = locate_crossings(zp, ot, detector, times=starts + window / 2, k=k)
    err = np.abs(r["time"] - tf)
    ok = np.isfinite(err)
    return {"estimate": r["time"], "truth": tf, "error": err,
            "mean_abs_error": float(err[ok].mean()) if ok.any() else float("nan"),
            "median_abs_error": float(np.median(err[ok])) if ok.any() else float("nan"),
            "within_tol": float((ok & (err <= tolerance)).mean()), "tolerance": int(tolerance),
            "located": float(ok.mean()), "n_changes_mean": float(r["n_changes"].mean()),
            "n_clips": int(n), "window": int(window), "n_frames": int(long_clips.shape[1]),
            "paths": zp, "starts": starts, "modes": r["modes"]}
