"""Latent geometry: instruments that measure a code space directly, without the decoder.

Whether a generator blends modes [1]_ is a question about a latent in which the modes are
separated. These instruments measure that premise and the generated codes against it:

- separation of the labelled training codes: :func:`knn_label_agreement`;
- the singular set of the OT map against the labels: :func:`angle_separation` (do the facet
  angles between cells of different labels stand apart?) and :func:`mode_recovery` (do the
  detector's components recover the labels?);
- generated codes against the labelled training codes: :func:`between_modes_rate` (codes among
  neighbours of mixed labels) and :func:`off_support_rate` (codes far from every training code);
  copies of training codes are :func:`otgen.metrics.copy_rate`;
- the scores they rest on, in numpy: :func:`adjusted_rand_index` [2]_,
  :func:`normalized_mutual_info` [3]_ and :func:`roc_auc` [4]_.

References
----------
.. [1] N. Lei, D. An, Y. Guo, K. Su, S. Liu, Z. Luo, S.-T. Yau and X. Gu, "A geometric
   understanding of deep learning", Engineering 6(3), 2020.
.. [2] L. Hubert and P. Arabie, "Comparing partitions", Journal of Classification 2, 1985.
.. [3] A. Strehl and J. Ghosh, "Cluster ensembles -- a knowledge reuse framework for combining
   multiple partitions", JMLR 3, 2002; N. X. Vinh, J. Epps and J. Bailey, "Information theoretic
   measures for clusterings comparison", JMLR 11, 2010.
.. [4] D. J. Hand and R. J. Till, "A simple generalisation of the area under the ROC curve for
   multiple class classification problems", Machine Learning 45, 2001 (AUC as the Mann-Whitney
   statistic).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from otgen._validation import as_tensor, check_positive_float, check_positive_int
from otgen.metrics.generation import nn_distances
from otgen.singular import gap_threshold

__all__ = ["off_support_rate", "knn_label_agreement", "between_modes_rate", "angle_separation", "mode_recovery",
           "adjusted_rand_index", "normalized_mutual_info", "roc_auc"]

_KNN_BLOCK = 1 << 22     # distance entries per block of the k-NN search (32 MiB of float64), never m x N at once
_PERFECT_RTOL = 1e-12    # ARI: disagreeing pair mass below this fraction of all pairs is round-off (weights)


# ----------------------------------------------------------------------------- checks

def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_labels(labels, n: int | None, name: str) -> np.ndarray:
    """A 1-D integer label array (of length n when given) -> int64."""
    lab = _as_numpy(labels)
    if lab.ndim != 1:
        raise ValueError(f"{name} must have shape (n,), got shape {lab.shape}")
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"{name} must hold integer labels, got dtype {lab.dtype}")
    if n is not None and len(lab) != n:
        raise ValueError(f"{name} must have {n} entries, got {len(lab)}")
    return lab.astype(np.int64)


def _check_partition_pair(a, b):
    a, b = _as_numpy(a), _as_numpy(b)
    if a.ndim != 1 or b.ndim != 1 or len(a) != len(b):
        raise ValueError(f"a and b must be two 1-D label arrays of one length, got shapes {a.shape} and {b.shape}")
    return a, b


def _check_fraction(value, name: str) -> float:
    v = check_positive_float(value, name)
    if v > 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return v


def _check_masses(weights, n: int) -> np.ndarray | None:
    """``None``, or non-negative weights of the n cells with a positive sum -> float64 summing to 1."""
    if weights is None:
        return None
    w = as_tensor(weights, "weights", ndim=1, dtype=torch.float64, min_rows=0).cpu().numpy()
    if len(w) != n or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {n} non-negative numbers (one per cell) with a positive sum, "
                         f"got shape {w.shape}")
    return w / w.sum()


# ----------------------------------------------------------------------------- partition scores

def _contingency(a: np.ndarray, b: np.ndarray, weights=None) -> np.ndarray:
    """Table (A, B) of the count (or weight) of items in class i of a and j of b; empty rows and columns dropped."""
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    w = np.ones(len(a)) if weights is None else weights
    table = np.bincount(ia.ravel() * len(ub) + ib.ravel(), weights=w, minlength=len(ua) * len(ub))
    table = table.reshape(len(ua), len(ub))
    return table[table.sum(1) > 0][:, table.sum(0) > 0]


def _ari_from_table(table: np.ndarray) -> float:
    """Hubert-Arabie ARI from a contingency table of counts (real counts allowed), in pair-confusion form."""
    n = table.sum()
    same_both = (table ** 2).sum()
    fp = (table.sum(0) ** 2).sum() - same_both            # ordered pairs together in b only
    fn = (table.sum(1) ** 2).sum() - same_both            # ordered pairs together in a only
    tp = same_both - n                                    # together in both (pairs of distinct items)
    tn = n * n - fp - fn - same_both                      # apart in both
    if fp <= _PERFECT_RTOL * n * n and fn <= _PERFECT_RTOL * n * n:
        return 1.0                                        # the same partition (also: one item, one cluster each)
    return float(2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))


def _nmi_from_table(table: np.ndarray) -> float:
    """Mutual information over the arithmetic mean of the two entropies, from a contingency table."""
    if table.shape[0] == table.shape[1] == 1:
        return 1.0                                        # neither partition splits the data: a perfect match
    p = table / table.sum()
    pa, pb = p.sum(1), p.sum(0)
    i, j = np.nonzero(p)
    mi = max(float((p[i, j] * (np.log(p[i, j]) - np.log(pa[i]) - np.log(pb[j]))).sum()), 0.0)
    if mi <= np.finfo(np.float64).eps:
        return 0.0
    h = -(pa * np.log(pa)).sum() - (pb * np.log(pb)).sum()
    return float(mi / (h / 2))


def adjusted_rand_index(a, b) -> float:
    r"""Adjusted Rand index of two partitions of the same items (Hubert and Arabie [2]_).

    With :math:`n_{ij}` the contingency table, :math:`a_i, b_j` its row and column sums and
    :math:`n` the number of items,

    .. math:: \mathrm{ARI} = \frac{\sum_{ij}\binom{n_{ij}}2 - E}
              {\tfrac12\big[\sum_i\binom{a_i}2 + \sum_j\binom{b_j}2\big] - E}, \qquad
              E = \frac{\sum_i\binom{a_i}2\sum_j\binom{b_j}2}{\binom n2}.

    1 for the same partition (whatever the names of its classes), about 0 for independent ones,
    negative below chance. Identical partitions, a single cluster each included, give 1
    (scikit-learn's ``adjusted_rand_score`` convention).

    Parameters
    ----------
    a, b : array_like, shape (n,)
        Class labels (any values numpy can sort).

    Returns
    -------
    float in [-1, 1]
    """
    a, b = _check_partition_pair(a, b)
    return _ari_from_table(_contingency(a, b))


def normalized_mutual_info(a, b) -> float:
    r"""Mutual information of two partitions over the arithmetic mean of their entropies [3]_.

    .. math:: \mathrm{NMI} = \frac{I(A; B)}{\tfrac12[H(A) + H(B)]}, \qquad
              I(A; B) = \sum_{ij} p_{ij}\log\frac{p_{ij}}{p_i\,q_j}

    with :math:`p_{ij} = n_{ij}/n` and the marginals :math:`p_i, q_j`. The normalisation is
    scikit-learn's default (``average_method="arithmetic"``), as are its limit cases: 1 when
    neither partition splits the items, 0 when exactly one of them does.

    Parameters
    ----------
    a, b : array_like, shape (n,)
        Class labels, n >= 1.

    Returns
    -------
    float in [0, 1]
    """
    a, b = _check_partition_pair(a, b)
    if len(a) == 0:
        raise ValueError("a and b must hold at least one label")
    return _nmi_from_table(_contingency(a, b))


def roc_auc(scores, positives) -> float:
    r"""Area under the ROC curve of ``scores`` for the ``positives``: the Mann-Whitney statistic.

    .. math:: \mathrm{AUC} = \frac{1}{n_+ n_-}\sum_{i \in +}\sum_{j \in -}
              \Big(\mathbf 1[s_i > s_j] + \tfrac12\,\mathbf 1[s_i = s_j]\Big)
              = \frac{R_+ - n_+(n_+ + 1)/2}{n_+ n_-}

    with :math:`R_+` the sum of the mid-ranks of the positives [4]_: the probability that a
    random positive scores above a random negative, ties counted half (all scores tied: 0.5).

    Parameters
    ----------
    scores : array_like, shape (n,)
        Finite scores; higher means "more likely positive".
    positives : array_like of bool or 0/1, shape (n,)
        Both classes must be present.

    Returns
    -------
    float in [0, 1]
    """
    s = as_tensor(scores, "scores", ndim=1, dtype=torch.float64).cpu().numpy()
    pos = _as_numpy(positives)
    if pos.shape != s.shape:
        raise ValueError(f"positives must have the shape {s.shape} of scores, got {pos.shape}")
    if pos.dtype != np.bool_:
        if not np.isin(pos, (0, 1)).all():
            raise ValueError("positives must be booleans or 0/1")
        pos = pos.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs positives and negatives, got {n_pos} positive(s) and {n_neg} negative(s)")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0     # rank of a tie group: the mean of its 1-based ranks
    r_pos = mid_rank[inverse.ravel()][pos].sum()
    return float((r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ----------------------------------------------------------------------------- labelled codes

def _knn_labels(codes, train_codes, train_labels, k) -> np.ndarray:
    """Labels (m, k) of the k nearest training codes of each code, by blocks of ``_KNN_BLOCK`` distances."""
    x = as_tensor(codes, "codes", ndim=2, dtype=torch.float64).cpu()
    t = as_tensor(train_codes, "train_codes", ndim=2, dtype=torch.float64).cpu()
    if x.shape[1] != t.shape[1]:
        raise ValueError(f"codes must have {t.shape[1]} columns like train_codes, got shape {tuple(x.shape)}")
    lab = _check_labels(train_labels, t.shape[0], "train_labels")
    k = check_positive_int(k, "k")
    if k > t.shape[0]:
        raise ValueError(f"k must be at most the {t.shape[0]} training codes, got {k}")
    rows = max(1, _KNN_BLOCK // t.shape[0])
    sq = (t * t).sum(1)
    idx = [torch.topk(sq - 2.0 * x[s:s + rows] @ t.T, k, dim=1, largest=False).indices
           for s in range(0, x.shape[0], rows)]      # |x - t|^2 - |x|^2: the same order as the distance
    return lab[torch.cat(idx).numpy()]


def knn_label_agreement(codes, labels, train_codes, train_labels, k: int = 10) -> float:
    r"""Mean fraction of a held-out code's k nearest training codes that carry its own label.

    .. math:: \mathrm{agreement} = \frac1m \sum_{i=1}^m \frac1k
              \#\{j \in N_k(z_i) : \ell_j = \ell(z_i)\}

    with :math:`N_k(z)` the k nearest training codes of :math:`z` (Euclidean). It is the mean
    *fraction* of agreeing neighbours, not the share of codes whose majority vote is right (the
    k-NN classifier's accuracy, which is higher where the labels touch). 1 when the labelled
    modes are separated by more than the neighbour distances; a plain autoencoder of MNIST gives
    about 0.9. The codes should be held out: a training code counts itself among its neighbours.

    Parameters
    ----------
    codes : array_like, shape (m, d)
        Held-out codes.
    labels : array_like of int, shape (m,)
    train_codes : array_like, shape (N, d)
    train_labels : array_like of int, shape (N,)
    k : int, default 10
        At most N. Ties in distance are broken arbitrarily.

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    The distances are computed by blocks of at most ``2**22`` entries, so memory stays bounded
    for 60,000 training codes.
    """
    nbr = _knn_labels(codes, train_codes, train_labels, k)
    own = _check_labels(labels, nbr.shape[0], "labels")
    return float((nbr == own[:, None]).mean())


def between_modes_rate(codes, train_codes, train_labels, k: int = 10, majority: float = 0.7) -> float:
    r"""Share of codes whose k nearest training codes give no label a majority.

    .. math:: \mathrm{rate} = \frac1m \#\Big\{i : \max_c \frac1k
              \#\{j \in N_k(z_i) : \ell_j = c\} < \text{majority}\Big\}

    A generated code that lies between two labelled modes (a blend) has neighbours of mixed
    labels; one inside a mode has neighbours of one label. Measured in the latent, so the
    decoder's own blending does not enter.

    Parameters
    ----------
    codes : array_like, shape (m, d)
        Generated codes.
    train_codes : array_like, shape (N, d)
    train_labels : array_like of int, shape (N,)
    k : int, default 10
        At most N.
    majority : float in (0, 1], default 0.7
        Least share of the k votes that one label needs (0.7 with k = 10: 7 votes).

    Returns
    -------
    float in [0, 1]
    """
    majority = _check_fraction(majority, "majority")
    nbr = _knn_labels(codes, train_codes, train_labels, k)
    _, inv = np.unique(nbr, return_inverse=True)
    inv = inv.reshape(nbr.shape)
    n_lab = int(inv.max()) + 1
    votes = np.bincount((np.arange(len(inv))[:, None] * n_lab + inv).ravel(), minlength=len(inv) * n_lab)
    top = votes.reshape(len(inv), n_lab).max(1)
    return float((top / nbr.shape[1] < majority).mean())


# ----------------------------------------------------------------------------- the singular set against labels

def angle_separation(detector, cell_labels) -> dict:
    r"""Do the facet angles between cells of different labels stand apart from those within a label?

    Each adjacent pair :math:`(i, j)` of the detector's dual graph is "between" when
    :math:`\ell_i \ne \ell_j`, "within" otherwise. Reports the AUC (:func:`roc_auc`) of the
    angle :math:`\theta_{ij}` for "between" (1: every between-angle exceeds every within-angle)
    and whether the sorted angles have a gap at all, by
    :func:`otgen.singular.gap_threshold` with its default settings (the rule that cuts the
    singular set where modes are separated). Where the modes touch the AUC can stay high while the
    histogram has no gap; ``gap_ratio`` says how far the largest angle sticks out.

    Parameters
    ----------
    detector : SingularSetDetector
        Fitted; only ``pairs_`` (P, 2) and ``angles_`` (P,) are read.
    cell_labels : array_like of int, shape (N,)
        The label of each OT target (cell). The caller supplies it: when a target merges several
        codes (duplicates), give it their majority label.

    Returns
    -------
    dict
        ``auc`` (float, NaN unless both kinds of pairs occur), ``has_gap`` (bool),
        ``gap_ratio`` (largest angle / median angle; NaN without pairs),
        ``within_median`` and ``between_median`` (radians; NaN when there is no such pair),
        ``n_pairs`` (int, P).
    """
    pairs = np.asarray(_as_numpy(detector.pairs_), np.int64).reshape(-1, 2)
    angles = np.asarray(_as_numpy(detector.angles_), np.float64).ravel()
    if len(angles) != len(pairs):
        raise ValueError(f"detector.angles_ must have one angle per pair, got {len(angles)} for {len(pairs)} pairs")
    lab = _check_labels(cell_labels, None, "cell_labels")
    if len(pairs) and pairs.max() >= len(lab):
        raise ValueError(f"cell_labels must label the {int(pairs.max()) + 1}+ cells of detector.pairs_, "
                         f"got {len(lab)} labels")
    between = lab[pairs[:, 0]] != lab[pairs[:, 1]]
    both = between.any() and not between.all()
    med = float(np.median(angles)) if len(angles) else math.nan
    top = float(angles.max()) if len(angles) else math.nan
    return dict(auc=roc_auc(angles, between) if both else math.nan,
                has_gap=bool(len(angles) >= 2 and math.isfinite(gap_threshold(angles))),
                gap_ratio=top / med if med > 0 else (math.inf if top > 0 else math.nan),
                within_median=float(np.median(angles[~between])) if (~between).any() else math.nan,
                between_median=float(np.median(angles[between])) if between.any() else math.nan,
                n_pairs=int(len(pairs)))


def mode_recovery(cell_component, cell_labels, weights=None, min_mass: float = 0.01) -> dict:
    r"""How well the detector's components (modes) recover the labels of the cells.

    ARI (:func:`adjusted_rand_index`) and NMI (:func:`normalized_mutual_info`) of the two
    partitions of the cells, and the number of components holding at least ``min_mass`` of the
    mass (the modes a generator would actually sample). With ``weights`` every cell counts by its
    mass: the contingency table sums the weights, rescaled to total N (the number of cells), so
    that uniform weights give the unweighted scores and integer weights summing to N the scores of
    the cells repeated that many times.

    Parameters
    ----------
    cell_component : array_like of int, shape (N,)
        Component of each cell (``SingularSetDetector.cell_component_``).
    cell_labels : array_like of int, shape (N,)
        Label of each cell (see :func:`angle_separation`).
    weights : array_like, shape (N,), optional
        Non-negative mass of each cell (``SemiDiscreteOT.weights_``); ``None``: uniform.
    min_mass : float in (0, 1], default 0.01
        Least mass fraction of a counted mode.

    Returns
    -------
    dict
        ``ari`` (float), ``nmi`` (float), ``n_modes`` (int, components of at least ``min_mass``)
        and ``n_components`` (int, all components).
    """
    comp = _check_labels(cell_component, None, "cell_component")
    lab = _check_labels(cell_labels, len(comp), "cell_labels")
    if len(comp) == 0:
        raise ValueError("cell_component must hold at least one cell")
    mass = _check_masses(weights, len(comp))
    min_mass = _check_fraction(min_mass, "min_mass")
    table = _contingency(comp, lab, None if mass is None else mass * len(comp))
    _, inv = np.unique(comp, return_inverse=True)
    comp_mass = np.bincount(inv.ravel(), weights=np.full(len(comp), 1.0 / len(comp)) if mass is None else mass)
    return dict(ari=_ari_from_table(table), nmi=_nmi_from_table(table),
                n_modes=int((comp_mass >= min_mass).sum()), n_components=int(len(comp_mass)))


# ----------------------------------------------------------------------------- unlabelled codes

def off_support_rate(samples, data, quantile: float = 0.99) -> dict:
    r"""Fraction of samples farther than r from every data point.

    .. math:: r = Q_q\big(\{\min_{j \ne i} |x_i - x_j|\}_i\big), \qquad
              \text{rate} = \frac1M \#\{m : \min_i |s_m - x_i| > r\},

    with :math:`Q_q` the q-quantile (default 0.99, linear interpolation) of the data's own
    nearest-neighbour distances: a radius that 99 % of data points reach from their nearest
    neighbour, so the union of the balls of radius r about the data covers the modes without
    bridging the gaps between them.

    Parameters
    ----------
    samples : array_like, shape (M, d)
    data : array_like, shape (N, d)
        N >= 2.
    quantile : float in (0, 1], default 0.99

    Returns
    -------
    dict
        ``rate`` (float in [0, 1]) and ``radius`` (float, r).
    """
    S = as_tensor(samples, "samples", ndim=2, dtype=torch.float64).cpu()
    X = as_tensor(data, "data", ndim=2, dtype=torch.float64, min_rows=2).cpu()
    if S.shape[1] != X.shape[1]:
        raise ValueError(f"samples must have {X.shape[1]} columns like data, got shape {tuple(S.shape)}")
    q = check_positive_float(quantile, "quantile")
    if q > 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
    r = float(torch.quantile(nn_distances(X, X, exclude_self=True), q))
    rate = float((nn_distances(S, X) > r).double().mean())
    return dict(rate=rate, radius=r)
