"""The singular set of the Brenier map (the seeds' Fig. 4) and the detector's precision / recall.

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

import numpy as np
from matplotlib.collections import LineCollection, PolyCollection

from otgen._validation import check_positive_float, check_positive_int
from otgen.data.toy2d import crescent, two_blobs
from otgen.figures._common import new_figure, save_figure
from otgen.singular.detector import SingularSetDetector, _check_seed, normal_angles, ratio_threshold
from otgen.transport.power2d import disc_domain, power_cells, power_facets, solve_power2d
from otgen.transport.semidiscrete import SemiDiscreteOT
from otgen.transport.sources import sample_source

__all__ = ["singular_set_figure", "detector_precision_recall"]

_SIDE_COLORS = ("tab:red", "tab:blue")


def _sides(Y: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Side (0/1) of each cell of the singular pairs: the cell whose target is further along the
    principal direction of the jumps :math:`y_j - y_i` gets side 0. Returns (S, 2) sides."""
    jumps = Y[pairs[:, 1]] - Y[pairs[:, 0]]
    _, _, vt = np.linalg.svd(jumps, full_matrices=False)
    v = vt[0]
    proj = Y[pairs] @ v                                           # (S, 2)
    first_is_0 = proj[:, 0] >= proj[:, 1]
    return np.where(first_is_0[:, None], np.array([0, 1]), np.array([1, 0]))


def singular_set_figure(out_dir, n_targets=1500, seed=0, *, n_vertices=256, min_ratio=5.0, tol=1e-8):
    """The singular set of the OT map from the uniform disc to the uniform crescent (Fig. 4 of the seeds).

    The target is ``n_targets`` uniform samples of :func:`~otgen.data.crescent`, with equal
    masses; the source the uniform law on the disc (a regular ``n_vertices``-gon,
    :func:`~otgen.transport.disc_domain`). The heights are solved exactly by
    :func:`~otgen.transport.solve_power2d`; the facets come from
    :func:`~otgen.transport.power_facets`. A facet is singular when the angle between the
    supporting planes of its two cells (:func:`~otgen.singular.normal_angles`) exceeds
    :math:`\\tau = r\\,\\mathrm{med}(\\theta)` (:func:`~otgen.singular.ratio_threshold`,
    ``r = min_ratio``): the crescent is connected, so the jump grows continuously from 0 at the end
    of the singular curve and the angles have no gap.

    Left: the power diagram in the disc, the singular facets in black, the cells on either side of
    them coloured. Right: the crescent, with the targets of those cells (the images of the two
    sides of the singular set) in the same colours.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder for ``singular_set.png`` and ``singular_set.json``.
    n_targets : int, default 1500
    seed : int, default 0
    n_vertices : int, default 256
    min_ratio : float, default 5.0
    tol : float, default 1e-8
        Total-variation tolerance of the exact solve.

    Returns
    -------
    dict
        ``threshold``, ``n_singular_facets``, ``singular_length`` (total length of the singular
        facets), ``n_facets``, ``n_targets``, ``tv_error``, ``n_iter``, ``median_angle``,
        ``max_angle``, and the file paths ``png`` / ``json``.
    """
    n_targets = check_positive_int(n_targets, "n_targets", minimum=3)
    seed = _check_seed(seed)
    n_vertices = check_positive_int(n_vertices, "n_vertices", minimum=3)
    min_ratio = check_positive_float(min_ratio, "min_ratio")
    tol = check_positive_float(tol, "tol")
    Y = crescent(n_targets, seed=seed)
    D = disc_domain(1.0, n_vertices)
    res = solve_power2d(Y, domain=D, tol=tol)
    pairs, segs, lengths = power_facets(Y, res.heights, D)
    angles = normal_angles(Y, pairs)
    thr = ratio_threshold(angles, min_ratio)
    sing = angles > thr
    sp, ss = pairs[sing], segs[sing]

    fig, (ax0, ax1) = new_figure(2)
    ring = np.vstack([D, D[:1]])
    cells = power_cells(Y, res.heights, D)
    if len(sp):
        sides = _sides(Y, sp)
        for side in (0, 1):
            idx = np.unique(sp[sides == side])
            polys = [cells[i] for i in idx if cells[i] is not None and len(cells[i]) >= 3]
            ax0.add_collection(PolyCollection(polys, facecolors=_SIDE_COLORS[side], alpha=0.45, edgecolors="none"))
            ax1.scatter(Y[idx, 0], Y[idx, 1], s=6, c=_SIDE_COLORS[side], zorder=3,
                        label=f"image of side {'AB'[side]}")
    ax0.add_collection(LineCollection(segs[~sing], colors="0.7", linewidths=0.3))
    ax0.add_collection(LineCollection(ss, colors="k", linewidths=2.0))
    ax0.plot(ring[:, 0], ring[:, 1], color="k", lw=0.8)
    ax0.set_title(f"source disc: singular set ({int(sing.sum())} facets)", fontsize=9)
    ax1.scatter(Y[:, 0], Y[:, 1], s=1.5, c="0.6", zorder=2)
    t = np.linspace(0, 2 * np.pi, 400)
    ax1.plot(np.cos(t), np.sin(t), color="0.85", lw=0.6)
    ax1.set_title("target crescent: images of the two sides", fontsize=9)
    if len(sp):
        ax1.legend(loc="lower left", fontsize=7)
    for ax in (ax0, ax1):
        ax.set_aspect("equal")
        ax.set_xlim(-1.08, 1.08)
        ax.set_ylim(-1.08, 1.08)
    numbers = dict(threshold=thr, n_singular_facets=int(sing.sum()), singular_length=float(lengths[sing].sum()),
                   n_facets=int(len(pairs)), n_targets=n_targets, tv_error=float(res.error), n_iter=int(res.n_iter),
                   median_angle=float(np.median(angles)), max_angle=float(angles.max()), min_ratio=min_ratio,
                   seed=seed, n_vertices=n_vertices)
    return save_figure(fig, out_dir, "singular_set", numbers)


def detector_precision_recall(out_dir, n=400, seed=0, *, n_test=20000, k=3, tol=0.05, separation=4.0,
                              std=0.5, source="uniform", n_graph_samples=2**16):
    """Precision and recall of the singular-set detector on two symmetric blobs.

    Targets: :func:`~otgen.data.two_blobs` (``n`` points in 2-D, labels 0/1, boundary
    :math:`x_1 = 0`), fitted with :class:`~otgen.transport.SemiDiscreteOT`. Ground truth for a
    test source point x: its exact top-k cells (``ot.topk``) carry both blob labels, i.e. x lies in
    the band of the source around the true singular set that the top-k cells can see. The detector
    (fitted without the labels) flags x when ``predict(x)``. Reports, on ``n_test`` seeded source
    points, ``precision = TP / (TP + FP)`` and ``recall = TP / (TP + FN)``, and the same at the
    level of the dual-graph pairs (flagged pairs vs pairs joining the two blobs).

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder for ``detector_precision_recall.png`` / ``.json``.
    n : int, default 400
    seed : int, default 0
    n_test : int, default 20000
    k : int, default 3
    tol : float, default 0.05
    separation, std : float
        Of :func:`~otgen.data.two_blobs`.
    source : str, default "uniform"
    n_graph_samples : int, default 65536

    Returns
    -------
    dict
        ``precision``, ``recall``, ``pair_precision``, ``pair_recall``, ``n_true``, ``n_flagged``,
        ``threshold``, ``n_components``, ``n_test``, ... and the file paths.
    """
    n = check_positive_int(n, "n", minimum=4)
    seed = _check_seed(seed)
    n_test = check_positive_int(n_test, "n_test")
    k = check_positive_int(k, "k", minimum=2)
    Y, labels = two_blobs(n, d=2, separation=separation, std=std, seed=seed)
    ot = SemiDiscreteOT(source=source, tol=tol, verbose=False, seed=seed, device="cpu").fit(Y)
    det = SingularSetDetector(k=k, n_samples=n_graph_samples, seed=seed).fit(ot)
    X = sample_source(source, n_test, 2, seed=seed + 1)
    _, idx = ot.topk(X, k)
    lab = labels[idx.numpy()]
    truth = (lab != lab[:, :1]).any(1)
    flag = det.predict(X)
    tp, fp, fn = int((truth & flag).sum()), int((~truth & flag).sum()), int((truth & ~flag).sum())
    cross = labels[det.pairs_[:, 0]] != labels[det.pairs_[:, 1]]
    ptp = int((cross & det.singular_).sum())
    nan = float("nan")
    numbers = dict(precision=tp / (tp + fp) if tp + fp else nan, recall=tp / (tp + fn) if tp + fn else nan,
                   pair_precision=ptp / int(det.singular_.sum()) if det.singular_.any() else nan,
                   pair_recall=ptp / int(cross.sum()) if cross.any() else nan,
                   n_true=int(truth.sum()), n_flagged=int(flag.sum()), true_positives=tp, false_positives=fp,
                   false_negatives=fn, threshold=det.threshold_, n_components=int(det.n_components_),
                   components_match_labels=bool(_same_partition(det.cell_component_, labels)),
                   n_pairs=int(len(det.pairs_)), n_cross_pairs=int(cross.sum()), n_test=n_test, n=n, k=k,
                   seed=seed, source=source, ot_converged=bool(ot.converged_))

    fig, (ax0, ax1) = new_figure(2)
    Xn = X.numpy()
    for mask, color, name in ((~truth & ~flag, "0.85", "TN"), (truth & flag, "tab:green", "TP"),
                              (~truth & flag, "tab:red", "FP"), (truth & ~flag, "tab:orange", "FN")):
        ax0.scatter(Xn[mask, 0], Xn[mask, 1], s=1.5 if name == "TN" else 4, c=color, label=f"{name} ({int(mask.sum())})")
    ax0.legend(loc="upper right", fontsize=7, markerscale=3)
    ax0.set_title(f"source: flagged points, precision {numbers['precision']:.3f} recall {numbers['recall']:.3f}",
                  fontsize=9)
    T = ot.targets_.numpy()
    ax1.scatter(T[:, 0], T[:, 1], s=4, c=np.where(labels == 0, "tab:blue", "tab:purple"))
    for i, j in det.singular_pairs_:
        ax1.plot(T[[i, j], 0], T[[i, j], 1], color="k", lw=0.6)
    ax1.axvline(0.0, color="0.5", ls="--", lw=0.8)
    ax1.set_title("targets; singular pairs (black)", fontsize=9)
    for ax in (ax0, ax1):
        ax.set_aspect("equal")
    return save_figure(fig, out_dir, "detector_precision_recall", numbers)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when labellings a and b define the same partition."""
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))
