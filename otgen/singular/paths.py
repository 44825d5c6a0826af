"""Critical events along latent paths: which mode a latent point is in, and when a path changes mode.

A fitted :class:`~otgen.singular.SingularSetDetector` splits the targets :math:`y_1, \\dots, y_N`
of a semi-discrete OT map into modes: the connected components of the dual graph of the power
diagram once the singular facets (large dihedral angle between the supporting planes of
:math:`u_h`) are removed (``cell_component_``). The singular set of :math:`\\nabla u_h` is the
preimage of the boundaries between these modes; a *critical event* of a video is the moment
its latent path crosses from one mode to another (the seeds' "juice splashing": the cup
upright, then spilled) [1]_ [2]_.

* :func:`latent_modes` labels latent points (codes) with the mode of their nearest target(s), by
  the *nearest-target vote* (below).
* :func:`sliding_windows` / :func:`encode_windows` turn a long clip into the latent path of its
  sliding windows, one code per window.
* :func:`locate_crossings` follows such a path and returns the (fractional) index and time at
  which it leaves its first mode for its last one.
* :func:`singular_sides` maps source points on the singular set to the two boundary cells, one
  on each side (the two-valued Brenier map at a singular point); :func:`boundary_cells` and
  :func:`flag_codes` mark the cells and codes between or at the boundary of the modes.
* :func:`~otgen.singular.critical_states` and :func:`~otgen.singular.localise_transitions`
  (module ``otgen.singular.critical``) put these together for a fitted map and for long clips.

The *nearest-target vote* labels a latent point with a mode: the modes partition the *targets*; a
latent point that is not a target belongs to the mode of the data around it, the mode of its
nearest target (the Voronoi rule, ``k = 1``) or, with ``k > 1``, the majority vote of its ``k``
nearest targets (ties go to the nearest), which is less sensitive to one stray target. (It is not
the *blend rule* of :class:`~otgen.generate.OTGenerator`, which decides whether the top-k cells of
a *source* point may be blended.)

References
----------
.. [1] N. Lei, D. An, Y. Guo, K. Su, S. Liu, Z. Luo, S.-T. Yau, X. Gu, "A geometric understanding of
   deep learning", Engineering 6 (2020) (singular set = mode boundaries).
.. [2] X. Gu, "A geometric explanation of Sora's physical paradoxes" (2024) (critical states
   as crossings of the singular set; see ``../shared/seeds/geometric-view-of-sora.txt``).
.. [3] M. Scheffer et al., "Early-warning signals for critical transitions", Nature 461 (2009).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from otgen._validation import as_tensor, check_choice, check_positive_int
from otgen.singular.detector import SingularSetDetector, cell_weights, check_fitted_ot, check_min_size, with_map

__all__ = ["latent_modes", "nearest_targets", "sliding_windows", "encode_windows", "locate_crossings",
           "singular_sides", "boundary_cells", "flag_codes", "BOUNDARY_RULES"]

BOUNDARY_RULES = ("minor-mode", "fraction", "incident")

_CHUNK = 4096            # codes compared with all targets at a time


# ----------------------------------------------------------------------------- checks

def _check_fitted_pair(ot, detector):
    check_fitted_ot(ot)
    if not isinstance(detector, SingularSetDetector):
        raise TypeError(f"detector must be a fitted SingularSetDetector, got {type(detector).__name__}")
    detector._check_fitted()
    if detector.n_targets_ != ot.targets_.shape[0]:
        raise ValueError(f"detector was fitted on {detector.n_targets_} targets, but ot has {ot.targets_.shape[0]}")


def _check_codes(codes, d, name="codes") -> torch.Tensor:
    z = as_tensor(codes, name, ndim=2, dtype=torch.float32, device="cpu")
    if z.shape[1] != d:
        raise ValueError(f"{name} must have {d} columns (the dimension of the OT targets), got shape {tuple(z.shape)}")
    return z


# ----------------------------------------------------------------------------- modes of latent points

def nearest_targets(codes, ot, k: int = 1) -> np.ndarray:
    """Indices of the ``k`` nearest OT targets (Euclidean) of each code, nearest first.

    Parameters
    ----------
    codes : array_like, shape (n, d)
        Latent points in the coordinates of ``ot.targets_`` (e.g. standardised codes).
    ot : SemiDiscreteOT
        Fitted solver.
    k : int, default 1

    Returns
    -------
    ndarray of int64, shape (n, k)
    """
    check_fitted_ot(ot)
    Y = ot.targets_.detach().to("cpu", torch.float32)
    k = check_positive_int(k, "k")
    if k > Y.shape[0]:
        raise ValueError(f"k must be <= the number of targets ({Y.shape[0]}), got {k}")
    z = _check_codes(codes, Y.shape[1])
    y2 = (Y * Y).sum(1)
    out = []
    for i in range(0, len(z), _CHUNK):
        c = z[i:i + _CHUNK]
        d2 = y2[None, :] - 2.0 * (c @ Y.T)                        # |c - y|^2 - |c|^2: same order
        out.append(torch.topk(d2, k, dim=1, largest=False).indices)
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros((0, k), np.int64)


def latent_modes(codes, ot, detector, *, k: int = 1) -> np.ndarray:
    """Mode of each latent point: the detector's ``cell_component_`` of its nearest target(s).

    With :math:`i_1(z), \\dots, i_k(z)` the ``k`` nearest targets of ``z`` (nearest first) and
    :math:`c(i)` the mode (dual-graph component) of cell ``i``,

    .. math:: \\mathrm{mode}(z) = \\arg\\max_m \\#\\{l : c(i_l) = m\\}

    (ties go to the mode of the nearest target): the nearest-target vote. ``k = 1`` is the Voronoi
    rule: the modes of the targets extended to the whole latent space by proximity.

    Parameters
    ----------
    codes : array_like, shape (n, d)
        Latent points in the coordinates of ``ot.targets_``.
    ot : SemiDiscreteOT
    detector : SingularSetDetector
        Fitted on ``ot``.
    k : int, default 1
        Voters of the nearest-target vote.

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    _check_fitted_pair(ot, detector)
    idx = nearest_targets(codes, ot, k)
    comp = detector.cell_component_[idx]                         # (n, k)
    if k == 1 or len(comp) == 0:
        return comp[:, 0].copy()
    n_modes = int(detector.n_components_)
    votes = np.zeros((len(comp), n_modes), np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(comp)), k), comp.ravel()), 1)
    best = votes.max(1)
    first = comp[:, 0]
    winner = votes.argmax(1)
    return np.where(votes[np.arange(len(comp)), first] == best, first, winner).astype(np.int64)


# ----------------------------------------------------------------------------- latent paths of long clips

def sliding_windows(clips, window: int, stride: int = 1, pad: int = 0):
    """All windows of ``window`` consecutive frames of each clip.

    Parameters
    ----------
    clips : array or tensor, shape (n, T, C, H, W)
    window : int
        Frames per window (``<= T + 2 pad``).
    stride : int, default 1
    pad : int, default 0
        Frames added at each end by repeating the first and the last frame, so that windows can
        be centred on the first and the last frames too (an event near an end of the clip is then
        still seen with frames on both sides of it).

    Returns
    -------
    windows : torch.Tensor, shape (n, m, window, C, H, W)
        A strided view of the (padded) clips; ``m = (T + 2 pad - window) // stride + 1``.
    starts : ndarray of int64, shape (m,)
        First frame of each window, in the frame numbers of the unpadded clip (``-pad`` for the
        first window).
    """
    x = as_tensor(clips, "clips", dtype=torch.float32)
    if x.ndim != 5:
        raise ValueError(f"clips must have shape (n, T, C, H, W), got shape {tuple(x.shape)}")
    window = check_positive_int(window, "window")
    stride = check_positive_int(stride, "stride")
    pad = check_positive_int(pad, "pad", minimum=0)
    T = x.shape[1]
    if window > T + 2 * pad:
        raise ValueError(f"window must be <= the number of frames T = {T} (plus 2 pad = {2 * pad}), "
                         f"got window = {window}")
    if pad:
        x = torch.cat([x[:, :1].expand(-1, pad, -1, -1, -1), x, x[:, -1:].expand(-1, pad, -1, -1, -1)], dim=1)
    w = x.unfold(1, window, stride)                              # (n, m, C, H, W, window)
    w = w.permute(0, 1, 5, 2, 3, 4)                              # (n, m, window, C, H, W)
    starts = np.arange(0, T + 2 * pad - window + 1, stride, dtype=np.int64) - pad
    return w, starts


def encode_windows(encode, clips, window: int, stride: int = 1, *, pad: int = 0, batch_size: int = 512):
    """The latent path of each long clip: the code of every sliding window.

    Parameters
    ----------
    encode : callable or object with ``encode``
        Maps clips (b, window, C, H, W) (a float32 tensor) to codes (b, d) (numpy or torch),
        e.g. a fitted :class:`~otgen.autoencoder.video.VideoAutoencoder` trained on clips of
        ``window`` frames.
    clips : array or tensor, shape (n, T, C, H, W)
    window, stride, pad : int
        As in :func:`sliding_windows`.
    batch_size : int, default 512
        Windows encoded per call (memory stays bounded by this, not by n * m).

    Returns
    -------
    codes : ndarray of float32, shape (n, m, d)
    starts : ndarray of int64, shape (m,)
    """
    fn = encode.encode if hasattr(encode, "encode") else encode
    if not callable(fn):
        raise TypeError(f"encode must be callable or have an encode method, got {type(encode).__name__}")
    batch_size = check_positive_int(batch_size, "batch_size")
    w, starts = sliding_windows(clips, window, stride, pad)
    n, m = w.shape[:2]
    flat = w.reshape((n * m,) + tuple(w.shape[2:])) if n * m else w
    out = []
    for i in range(0, n * m, batch_size):
        z = fn(flat[i:i + batch_size].contiguous())
        out.append(np.asarray(z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else z, dtype=np.float32))
    codes = np.concatenate(out, 0)
    if codes.ndim != 2 or codes.shape[0] != n * m:
        raise ValueError(f"encode must return codes of shape (b, d) for b windows, got shape {codes.shape} "
                         f"for {n * m} windows")
    return codes.reshape(n, m, -1), starts


def locate_crossings(path_codes, ot, detector, *, window_offset: float = 0.0, times=None, k: int = 1) -> dict:
    """Where a latent path leaves its first mode for its last one (crosses the singular set).

    Each point :math:`z_0, \\dots, z_{T'-1}` of a path gets its mode :math:`m_t` (:func:`latent_modes`).
    With :math:`a = m_0` and :math:`b = m_{T'-1}`: when :math:`a \\ne b` the path crosses the
    boundary between the modes, which in the source is the singular set of :math:`\\nabla u_h`.
    Let :math:`j` be the first index with :math:`m_j = b` and :math:`i < j` the last index before it
    with :math:`m_i = a` (points in between, if any, are in other modes, e.g. a mode of the
    transitions themselves). The crossing is placed in the middle,

    .. math:: p = (i + j) / 2, \\qquad t = \\mathrm{times}(p)

    (``times`` linearly interpolated; by default ``times[t] = t + window_offset``). For the
    windows of a long clip (``encode_windows``), point ``s`` is the window of frames
    ``s .. s + L - 1``; it changes mode when about half of its frames are past the event, so
    ``window_offset = L / 2`` turns the crossing index into the first frame after the event.

    Parameters
    ----------
    path_codes : array_like, shape (T', d) or (n, T', d)
        One path or ``n`` paths of ``T' >= 2`` latent points, in the coordinates of ``ot.targets_``.
    ot : SemiDiscreteOT
    detector : SingularSetDetector
        Fitted on ``ot``.
    window_offset : float, default 0.0
        Added to the index to give the time (ignored when ``times`` is given).
    times : array_like of shape (T',), optional
        Increasing time of each path point.
    k : int, default 1
        Voters of the nearest-target vote for the mode of each point (:func:`latent_modes`).

    Returns
    -------
    dict
        ``crossed`` bool (n,): first and last modes differ; ``position`` float64 (n,): the
        fractional index p (NaN when not crossed); ``time`` float64 (n,): t (NaN when not
        crossed); ``index`` int64 (n,): j, the first point in the final mode (-1 when not
        crossed); ``from_mode``, ``to_mode`` int64 (n,); ``n_changes`` int64 (n,): mode changes
        between consecutive points (1 for a clean crossing); ``modes`` int64 (n, T'). For a
        single path (2-D input) every entry is for that path: scalars, and ``modes`` (T',).
    """
    _check_fitted_pair(ot, detector)
    single = isinstance(path_codes, (np.ndarray, torch.Tensor)) and path_codes.ndim == 2
    z = as_tensor(path_codes, "path_codes", dtype=torch.float32, device="cpu")
    if z.ndim == 2:
        z = z[None]
        single = True
    if z.ndim != 3:
        raise ValueError(f"path_codes must have shape (T', d) or (n, T', d), got shape {tuple(z.shape)}")
    n, T, d = z.shape
    if T < 2:
        raise ValueError(f"a path needs at least 2 points, got shape {tuple(z.shape)}")
    if d != ot.targets_.shape[1]:
        raise ValueError(f"path_codes must have {ot.targets_.shape[1]} features (the dimension of the OT targets), "
                         f"got shape {tuple(z.shape)}")
    if isinstance(window_offset, bool) or not isinstance(window_offset, numbers.Real) or \
            not math.isfinite(window_offset):
        raise TypeError(f"window_offset must be a finite number, got {window_offset!r}")
    if times is None:
        tgrid = np.arange(T, dtype=np.float64) + float(window_offset)
    else:
        tgrid = as_tensor(times, "times", ndim=1, dtype=torch.float64).numpy()
        if len(tgrid) != T:
            raise ValueError(f"times must have one entry per path point ({T}), got {len(tgrid)}")
        if not (np.diff(tgrid) > 0).all():
            raise ValueError("times must be strictly increasing")
    modes = latent_modes(z.reshape(n * T, d), ot, detector, k=k).reshape(n, T)
    a, b = modes[:, 0], modes[:, -1]
    crossed = a != b
    index = np.full(n, -1, np.int64)
    position = np.full(n, np.nan)
    for r in np.flatnonzero(crossed):
        j = int(np.argmax(modes[r] == b[r]))
        i = int(np.flatnonzero(modes[r, :j] == a[r])[-1])         # exists: modes[r, 0] == a[r] and j > 0
        index[r] = j
        position[r] = 0.5 * (i + j)
    time = np.full(n, np.nan)
    time[crossed] = np.interp(position[crossed], np.arange(T), tgrid)
    out = dict(crossed=crossed, position=position, time=time, index=index, from_mode=a.astype(np.int64),
               to_mode=b.astype(np.int64), n_changes=(modes[:, 1:] != modes[:, :-1]).sum(1).astype(np.int64),
               modes=modes)
    if single:
        out = {key: (v[0] if key == "modes" else v[0].item()) for key, v in out.items()}
    return out


# ----------------------------------------------------------------------------- the singular set itself

def singular_sides(X, ot, detector, k: int | None = None):
    """The two boundary cells of source points on the singular set, one on each side.

    At a singular point x the Brenier map is two-valued: :math:`\\partial u_h(x)` is the segment
    (hull) of the targets of the cells meeting there, which lie in different modes; its extreme
    points are on the boundaries of two different modes of the support [1]_ [2]_. For each row of
    ``X`` this returns its best cell :math:`i` (:math:`\\nabla u_h(x) = y_i`) and a cell :math:`j`
    of another mode across the singular set: by default the neighbour of :math:`i` in the dual
    graph whose facet is nearest to x in source distance among those within the detector's band
    (:meth:`SingularSetDetector.facet_distances`, the facets :meth:`SingularSetDetector.predict`
    looks at); with ``k`` given, the best cell of another mode among the top-``k`` cells by score.
    -1 when there is none.

    Parameters
    ----------
    X : array_like, shape (M, d)
        Source points (e.g. those :meth:`SingularSetDetector.predict` flags).
    ot : SemiDiscreteOT
    detector : SingularSetDetector
        Fitted on ``ot`` (an attached map is not needed when ``k`` is given).
    k : int, optional
        Look among the top-``k`` cells by score instead of the facets within the band.

    Returns
    -------
    i, j : ndarray of int64, shape (M,)
    """
    _check_fitted_pair(ot, detector)
    if k is None:
        return _sides_in_band(X, ot, detector)
    k = min(check_positive_int(k, "k", minimum=2), ot.targets_.shape[0])
    X = as_tensor(X, "X", ndim=2, dtype=ot.targets_.dtype, device=ot.targets_.device)
    _, idx = ot.topk(X, k)
    idx = idx.cpu().numpy().astype(np.int64)                    # (M, k)
    comp = detector.cell_component_[idx]
    other = comp != comp[:, :1]
    return idx[:, 0].copy(), _first_where(idx, other)


def _sides_in_band(X, ot, detector):
    """:func:`singular_sides` by source distance: the nearest facet within the band to a cell of another mode."""
    if not detector.fitted_on(ot):
        raise ValueError("detector was not fitted on this ot (other targets or heights): fit it with detector.fit(ot)")
    det = with_map(detector, ot)
    cells, nbr, dist = det.facet_distances(X)
    comp = det.cell_component_
    other = (nbr >= 0) & (dist <= det.band * det.cell_width_) & (comp[np.maximum(nbr, 0)] != comp[cells][:, None])
    return cells, _first_where(nbr, other)


def _first_where(idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The first entry of each row of idx (M, c) where mask (M, c) holds, -1 where it never does."""
    first = np.argmax(mask, axis=1)
    return np.where(mask.any(1), idx[np.arange(len(idx)), first], -1).astype(np.int64)


def boundary_cells(detector, rule: str = "minor-mode", *, min_fraction: float = 0.5, min_size: float = 0.05,
                   weights=None) -> np.ndarray:
    """Cells that lie between modes or on a mode's boundary, from the detector's dual graph.

    * ``"minor-mode"``: the cell's mode (``cell_component_``) holds less than ``min_size`` of the
      mass: it is neither of the large modes (steady states) but a small piece that the singular
      set cuts out between them — where rare critical states sit;
    * ``"fraction"``: at least ``min_fraction`` of the cell's sampled facet area (``counts_``,
      source points whose top-2 cells are the pair) is singular: the cell is mostly surrounded by
      other modes;
    * ``"incident"``: the cell has at least one singular facet (in high dimension nearly every cell
      touches one, so this flags almost everything).

    Parameters
    ----------
    detector : SingularSetDetector
        Fitted.
    rule : {"minor-mode", "fraction", "incident"}
    min_fraction : float in (0, 1], default 0.5
    min_size : float in (0, 0.5), default 0.05
    weights : array_like (N,), optional
        Cell masses for ``"minor-mode"`` (e.g. ``ot.weights_``); default uniform.

    Returns
    -------
    ndarray of bool, shape (N,)
    """
    if not isinstance(detector, SingularSetDetector):
        raise TypeError(f"detector must be a fitted SingularSetDetector, got {type(detector).__name__}")
    detector._check_fitted()
    check_choice(rule, "rule", BOUNDARY_RULES)
    N = detector.n_targets_
    if rule == "minor-mode":
        w = cell_weights(detector.n_targets_, weights)
        comp_mass = np.bincount(detector.cell_component_, weights=w, minlength=detector.n_components_)
        return comp_mass[detector.cell_component_] < check_min_size(min_size)
    if isinstance(min_fraction, bool) or not isinstance(min_fraction, numbers.Real) or not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be a number in (0, 1], got {min_fraction!r}")
    p, s, c = detector.pairs_, detector.singular_, detector.counts_.astype(np.float64)
    if rule == "incident":
        out = np.zeros(N, bool)
        out[p[s].ravel()] = True
        return out
    total = np.bincount(p.ravel(), weights=np.repeat(c, 2), minlength=N)
    sing = np.bincount(p[s].ravel(), weights=np.repeat(c[s], 2), minlength=N)
    return (total > 0) & (sing >= min_fraction * np.where(total > 0, total, 1.0))


def flag_codes(codes, ot, detector, rule: str = "minor-mode", **kwargs) -> np.ndarray:
    """Flag latent points whose nearest target is a boundary cell (:func:`boundary_cells`) -> (n,) bool.

    ``kwargs`` go to :func:`boundary_cells`; for ``"minor-mode"`` the masses default to ``ot.weights_``.
    """
    _check_fitted_pair(ot, detector)
    if rule == "minor-mode" and kwargs.get("weights") is None:
        kwargs["weights"] = ot.weights_.detach().cpu().numpy()
    cells = boundary_cells(detector, rule, **kwargs)
    return cells[nearest_targets(codes, ot, 1)[:, 0]]
