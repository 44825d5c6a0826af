"""The singular set of the Brenier map (the seeds' Fig. 4) and the detector's precision / recall.

Both functions draw results computed by :mod:`otgen.experiments.toy2d`; they fit nothing.

:func:`singular_set_figure`: uniform source on a disc, uniform target on a crescent (non-convex),
solved exactly with the 2-D power diagram; the facets whose supporting planes make a large angle
form the singular set (black curve), each of its points is sent to two points on opposite sides
of the crescent's notch [1]_ [2]_.

:func:`detector_precision_recall`: on two Gaussian blobs (boundary x_1 = 0), how well the
:class:`~otgen.singular.SingularSetDetector` flags the source points whose top cells belong to
different blobs.

References
----------
.. [1] A. Figalli, "Regularity properties of optimal maps between nonconvex domains in the plane",
   Comm. PDE 35 (2010).
.. [2] X. Gu, "A geometric explanation of Sora's physical paradoxes" (the seeds), Fig. 4.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from matplotlib.collections import LineCollection, PolyCollection

from otgen.figures._common import new_figure, save_figure

__all__ = ["singular_set_figure", "detector_precision_recall"]

_SIDE_COLORS = ("tab:red", "tab:blue")
_LIMIT = 1.08                 # axes half-width: the unit disc and crescent with a small margin


def _sides(Y: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Side (0/1) of each cell of the singular pairs (S, 2): the cell whose target is further along
    the principal direction of the jumps :math:`y_j - y_i` gets side 0. Returns (S, 2) sides."""
    jumps = Y[pairs[:, 1]] - Y[pairs[:, 0]]
    _, _, vt = np.linalg.svd(jumps, full_matrices=False)
    proj = Y[pairs] @ vt[0]                                       # (S, 2)
    first_is_0 = proj[:, 0] >= proj[:, 1]
    return np.where(first_is_0[:, None], np.array([0, 1]), np.array([1, 0]))


def _draw_sides(ax0, ax1, Y: np.ndarray, cells: list, singular_pairs: np.ndarray) -> None:
    """Colour the cells on either side of the singular facets (ax0) and their targets (ax1)."""
    sides = _sides(Y, singular_pairs)
    for side in (0, 1):
        idx = np.unique(singular_pairs[sides == side])
        polys = [cells[i] for i in idx if cells[i] is not None and len(cells[i]) >= 3]
        ax0.add_collection(PolyCollection(polys, facecolors=_SIDE_COLORS[side], alpha=0.45, edgecolors="none"))
        ax1.scatter(Y[idx, 0], Y[idx, 1], s=6, c=_SIDE_COLORS[side], zorder=3, label=f"image of side {'AB'[side]}")
    ax1.legend(loc="lower left", fontsize=7)


def singular_set_figure(results, out_dir) -> dict:
    """Draw the singular set of the OT map from the uniform disc to the uniform crescent (Fig. 4 of the seeds).

    Left: the power diagram in the disc, the singular facets in black, the cells on either side of
    them coloured. Right: the crescent, with the targets of those cells (the images of the two
    sides of the singular set) in the same colours.

    Parameters
    ----------
    results : SingularSetResults
        From :func:`otgen.experiments.toy2d.run_singular_set` (``targets`` (N, 2), ``domain`` (V, 2),
        ``cells``, ``pairs`` (F, 2), ``segments`` (F, 2, 2), ``singular`` (F,), ``settings``, ``scores``).
    out_dir : str or os.PathLike
        Folder for ``singular_set.png`` and ``singular_set.json``.

    Returns
    -------
    dict
        The settings and ``results.scores`` (``threshold``, ``n_singular_facets``, ``singular_length``,
        ``n_facets``, ``n_targets``, ``tv_error``, ``n_iter``, ``median_angle``, ``max_angle``), and the
        file paths ``png`` / ``json``.
    """
    Y, D, sing = np.asarray(results.targets), np.asarray(results.domain), np.asarray(results.singular, dtype=bool)
    segments, singular_pairs = np.asarray(results.segments), np.asarray(results.pairs)[sing]
    fig, (ax0, ax1) = new_figure(2)
    if len(singular_pairs):
        _draw_sides(ax0, ax1, Y, results.cells, singular_pairs)
    ax0.add_collection(LineCollection(segments[~sing], colors="0.7", linewidths=0.3))
    ax0.add_collection(LineCollection(segments[sing], colors="k", linewidths=2.0))
    ring = np.vstack([D, D[:1]])
    ax0.plot(ring[:, 0], ring[:, 1], color="k", lw=0.8)
    ax0.set_title(f"source disc: singular set ({int(sing.sum())} facets)", fontsize=9)
    ax1.scatter(Y[:, 0], Y[:, 1], s=1.5, c="0.6", zorder=2)
    t = np.linspace(0, 2 * np.pi, 400)
    ax1.plot(np.cos(t), np.sin(t), color="0.85", lw=0.6)
    ax1.set_title("target crescent: images of the two sides", fontsize=9)
    for ax in (ax0, ax1):
        ax.set_aspect("equal")
        ax.set_xlim(-_LIMIT, _LIMIT)
        ax.set_ylim(-_LIMIT, _LIMIT)
    numbers = {**dataclasses.asdict(results.settings), **results.scores}
    return save_figure(fig, out_dir, "singular_set", numbers)


def detector_precision_recall(results, out_dir) -> dict:
    """Draw the precision and recall of the singular-set detector on two symmetric blobs.

    Left: the test source points, coloured as true / false positives / negatives (ground truth:
    the exact top-k cells of the point carry both blob labels). Right: the targets coloured by
    blob, the pairs the detector finds singular joined in black, the true boundary dashed.

    Parameters
    ----------
    results : DetectorPRResults
        From :func:`otgen.experiments.toy2d.run_detector_pr` (``test_points`` (M, 2), ``truth`` (M,),
        ``flagged`` (M,), ``targets`` (n, 2), ``labels`` (n,), ``singular_pairs`` (S, 2), ``settings``,
        ``scores``).
    out_dir : str or os.PathLike
        Folder for ``detector_precision_recall.png`` / ``.json``.

    Returns
    -------
    dict
        The settings and ``results.scores`` (``precision``, ``recall``, ``pair_precision``,
        ``pair_recall``, ``n_true``, ``n_flagged``, ``threshold``, ``n_components``, ...), and the file paths.
    """
    X, T, labels = np.asarray(results.test_points), np.asarray(results.targets), np.asarray(results.labels)
    truth, flag = np.asarray(results.truth, dtype=bool), np.asarray(results.flagged, dtype=bool)
    scores = results.scores
    fig, (ax0, ax1) = new_figure(2)
    for mask, color, name in ((~truth & ~flag, "0.85", "TN"), (truth & flag, "tab:green", "TP"),
                              (~truth & flag, "tab:red", "FP"), (truth & ~flag, "tab:orange", "FN")):
        ax0.scatter(X[mask, 0], X[mask, 1], s=1.5 if name == "TN" else 4, c=color, label=f"{name} ({int(mask.sum())})")
    ax0.legend(loc="upper right", fontsize=7, markerscale=3)
    ax0.set_title(f"source: flagged points, precision {scores['precision']:.3f} recall {scores['recall']:.3f}",
                  fontsize=9)
    ax1.scatter(T[:, 0], T[:, 1], s=4, c=np.where(labels == 0, "tab:blue", "tab:purple"))
    for i, j in np.asarray(results.singular_pairs):
        ax1.plot(T[[i, j], 0], T[[i, j], 1], color="k", lw=0.6)
    ax1.axvline(0.0, color="0.5", ls="--", lw=0.8)
    ax1.set_title("targets; singular pairs (black)", fontsize=9)
    for ax in (ax0, ax1):
        ax.set_aspect("equal")
    numbers = {**dataclasses.asdict(results.settings), **scores}
    return save_figure(fig, out_dir, "detector_precision_recall", numbers)
