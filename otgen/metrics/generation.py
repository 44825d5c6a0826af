"""Sample-quality metrics for generative models (pure functions).

Inputs are numpy arrays or torch tensors; results are Python floats, dicts or numpy
arrays. Classifier-based: mode-mixture and low-confidence rates, class histograms and
their KL divergence. Feature-based: Fréchet distance, precision / recall, density /
coverage, sliced Wasserstein distance. Memorisation and nearness in a code space: copy
rate, median nearest-neighbour distance. Training: the loss plateau. Detection:
precision / recall / F1 of boolean flags.
"""

from __future__ import annotations

import numbers

import numpy as np
import ot
import torch

from otgen._base import check_seed
from otgen._validation import as_tensor, check_positive_float, check_positive_int, resolve_device

__all__ = ["mode_mixture_rate", "low_confidence_rate", "class_histogram", "coverage_kl", "gaussian_frechet_distance",
           "frechet_distance", "precision_recall", "density_coverage", "sliced_wasserstein", "copy_rate",
           "nn_median", "loss_plateau", "detection_scores", "digit_metrics", "classifier_outputs"]

_NN_CHUNK = 1024       # rows per block of exact nearest-neighbour distances: memory ~ 1024 x N, never N x N
_PLATEAU_FRACTION = 10  # loss_plateau compares the mean of the last tenth of the steps with the tenth before


# -- classifier-based --------------------------------------------------------------

def _check_probs(probs, name: str = "probs", atol: float = 1e-3) -> torch.Tensor:
    """Rows of class probabilities (n, C): non-negative, each summing to 1 -> float64 tensor."""
    p = as_tensor(probs, name, ndim=2, dtype=torch.float64)
    if p.shape[1] < 2:
        raise ValueError(f"{name} must have shape (n, C) with C >= 2 classes, got shape {tuple(p.shape)}")
    if bool((p < 0).any()):
        raise ValueError(f"{name} must be non-negative probabilities, got minimum {float(p.min()):.3g} (logits? apply softmax)")
    dev = (p.sum(dim=1) - 1).abs().max()
    if float(dev) > atol:
        raise ValueError(f"each row of {name} must sum to 1, got a row sum off by {float(dev):.3g}")
    return p


def _check_fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not 0 < float(value) <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


def mode_mixture_rate(probs, taus=(0.1, 0.2, 0.3, 0.4)) -> dict:
    r"""Fraction of samples that a classifier finds ambiguous between two or more classes.

    .. math::

        \mathrm{MMR}_\tau = \frac1n \sum_{i=1}^n
            \mathbf 1\Big[\#\{c : p_{ic} \ge \tau\} \ge 2\Big]

    A generator that interpolates across the boundary between two modes produces
    "mixed" digits that the classifier splits between classes (DPM-OT [1]_).

    Parameters
    ----------
    probs : array of shape (n, C)
        Class probabilities of the samples (rows sum to 1).
    taus : float or sequence of floats in (0, 1]
        Thresholds (for ``tau > 1/2`` the rate is 0 by construction).

    Returns
    -------
    dict
        ``{tau: rate}`` with rates in [0, 1].

    References
    ----------
    .. [1] Z. An, D. Lei, Y. Guo, N. Lei, X. Gu, et al., "DPM-OT: a new diffusion
       probabilistic model based on optimal transport", ICCV 2023.
    """
    p = _check_probs(probs)
    if isinstance(taus, numbers.Real):
        taus = (taus,)
    if not isinstance(taus, (list, tuple, np.ndarray)) or len(taus) == 0:
        raise TypeError(f"taus must be a number or a non-empty sequence of numbers, got {taus!r}")
    out = {}
    for tau in taus:
        t = _check_fraction(tau, "tau")
        out[t] = float(((p >= t).sum(dim=1) >= 2).double().mean())
    return out


def low_confidence_rate(probs, threshold: float = 0.5) -> float:
    r"""Fraction of samples whose top class probability is below ``threshold``.

    .. math:: \frac1n \sum_i \mathbf 1\big[\max_c p_{ic} < \text{threshold}\big]

    Parameters
    ----------
    probs : array of shape (n, C)
    threshold : float in (0, 1]
    """
    p = _check_probs(probs)
    t = _check_fraction(threshold, "threshold")
    return float((p.max(dim=1).values < t).double().mean())


def class_histogram(labels_or_probs, n_classes: int = 10) -> np.ndarray:
    r"""Normalised class histogram :math:`q_c = \frac1n \#\{i : \hat y_i = c\}`.

    Parameters
    ----------
    labels_or_probs : array of shape (n,) or (n, C)
        Integer labels in ``[0, n_classes)``, or class probabilities (hard-assigned
        by arg-max; then ``C`` must equal ``n_classes``).
    n_classes : int

    Returns
    -------
    numpy.ndarray of shape (n_classes,), float64, summing to 1.
    """
    k = check_positive_int(n_classes, "n_classes")
    t = as_tensor(labels_or_probs, "labels_or_probs", dtype=torch.float64)
    if t.ndim == 2:
        if t.shape[1] != k:
            raise ValueError(f"labels_or_probs given as probabilities must have shape (n, {k}), got shape {tuple(t.shape)}")
        y = _check_probs(t, "labels_or_probs").argmax(dim=1)
    elif t.ndim == 1:
        if t.shape[0] == 0:
            raise ValueError("labels_or_probs must have at least 1 row, got shape (0,)")
        if bool((t != t.round()).any()) or float(t.min()) < 0 or float(t.max()) >= k:
            raise ValueError(f"labels must be integers in [0, {k}), got values in [{float(t.min())}, {float(t.max())}]")
        y = t.long()
    else:
        raise ValueError(f"labels_or_probs must have shape (n,) or (n, {k}), got shape {tuple(t.shape)}")
    return (torch.bincount(y, minlength=k).double() / y.numel()).cpu().numpy()


def _check_hist(h, name: str) -> np.ndarray:
    t = as_tensor(h, name, ndim=1, dtype=torch.float64)
    if bool((t < 0).any()):
        raise ValueError(f"{name} must be non-negative, got minimum {float(t.min()):.3g}")
    s = float(t.sum())
    if s <= 0:
        raise ValueError(f"{name} must have a positive sum, got {s}")
    return (t / s).cpu().numpy()


def coverage_kl(sample_hist, data_hist, eps: float = 1e-10) -> float:
    r"""KL divergence of the sample class histogram q from the data's p.

    .. math::

        \mathrm{KL}(q\,\|\,p) = \sum_c \tilde q_c \log\frac{\tilde q_c}{\tilde p_c},
        \qquad \tilde q = \frac{q + \epsilon}{1 + C\epsilon},\ \tilde p = \frac{p + \epsilon}{1 + C\epsilon}

    (the mode-coverage score of the stacked-MNIST experiments, Metz et al. [1]_). The
    small ``eps`` keeps the value finite when the data has an empty class; it changes a
    nonzero answer by :math:`O(C\epsilon\log(1/\epsilon))`. With uniform data over
    ``C`` classes, collapse onto a single class gives :math:`\log C`.

    Parameters
    ----------
    sample_hist, data_hist : array of shape (C,)
        Non-negative histograms (counts or frequencies; normalised here).
    eps : float >= 0

    Returns
    -------
    float >= 0 (0 when the normalised histograms are equal).

    References
    ----------
    .. [1] L. Metz, B. Poole, D. Pfau, J. Sohl-Dickstein, "Unrolled generative
       adversarial networks", ICLR 2017.
    """
    q = _check_hist(sample_hist, "sample_hist")
    p = _check_hist(data_hist, "data_hist")
    if q.shape != p.shape:
        raise ValueError(f"sample_hist and data_hist must have the same length, got {q.shape[0]} and {p.shape[0]}")
    eps = check_positive_float(eps, "eps", allow_zero=True)
    q = (q + eps) / (1 + q.size * eps)
    p = (p + eps) / (1 + p.size * eps)
    m = q > 0
    if bool((p[m] == 0).any()):
        return float("inf")
    return float(max(np.sum(q[m] * np.log(q[m] / p[m])), 0.0))


# -- feature-based -----------------------------------------------------------------

def _check_pair(a, b, names=("feats_a", "feats_b"), min_rows: int = 1, dtype=torch.float64, device=None):
    x = as_tensor(a, names[0], ndim=2, dtype=dtype, device=device, min_rows=min_rows)
    y = as_tensor(b, names[1], ndim=2, dtype=dtype, device=device, min_rows=min_rows)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    return x, y


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def gaussian_frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    r"""Squared 2-Wasserstein (Fréchet) distance between two Gaussians.

    .. math::

        d^2 = \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
              - 2\operatorname{tr}\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2}

    (Dowson & Landau [1]_). The trace term is computed from the eigenvalues of the
    symmetric PSD matrix :math:`\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}` (``eigh``, negative
    round-off clipped), which is stable for singular covariances, unlike ``sqrtm`` of
    the non-symmetric product :math:`\Sigma_1\Sigma_2`.

    Parameters
    ----------
    mu1, mu2 : array of shape (d,)
    sigma1, sigma2 : array of shape (d, d), symmetric PSD

    References
    ----------
    .. [1] D. C. Dowson, B. V. Landau, "The Fréchet distance between multivariate normal
       distributions", J. Multivariate Anal. 12 (1982).
    """
    m1 = as_tensor(mu1, "mu1", ndim=1, dtype=torch.float64).numpy()
    m2 = as_tensor(mu2, "mu2", ndim=1, dtype=torch.float64).numpy()
    s1 = as_tensor(sigma1, "sigma1", ndim=2, dtype=torch.float64).numpy()
    s2 = as_tensor(sigma2, "sigma2", ndim=2, dtype=torch.float64).numpy()
    d = m1.shape[0]
    for name, m in (("mu2", m2),):
        if m.shape != (d,):
            raise ValueError(f"{name} must have shape ({d},) like mu1, got shape {m.shape}")
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}), got shape {s.shape}")
        if not np.allclose(s, s.T, rtol=1e-6, atol=1e-8 * max(1.0, np.abs(s).max())):
            raise ValueError(f"{name} must be symmetric")
    r1 = _psd_sqrt(s1)
    ev = np.linalg.eigvalsh((r1 @ s2 @ r1 + (r1 @ s2 @ r1).T) / 2)
    tr_cross = np.sqrt(np.clip(ev, 0, None)).sum()
    val = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_cross
    return float(max(val, 0.0))


def frechet_distance(feats_a, feats_b) -> float:
    r"""Fréchet distance (FID formula) between two feature sets.

    Fits a Gaussian to each set (sample mean, unbiased covariance) and returns
    :func:`gaussian_frechet_distance` between them — the Fréchet Inception Distance of
    Heusel et al. [1]_ when the features are Inception activations; here any features
    (e.g. :meth:`MNISTClassifier.features`).

    Parameters
    ----------
    feats_a : array of shape (n, F), n >= 2
    feats_b : array of shape (m, F), m >= 2

    References
    ----------
    .. [1] M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter, "GANs
       trained by a two time-scale update rule converge to a local Nash equilibrium",
       NeurIPS 2017.
    """
    a, b = _check_pair(feats_a, feats_b, min_rows=2)
    a, b = a.cpu().numpy(), b.cpu().numpy()
    return gaussian_frechet_distance(a.mean(0), np.atleast_2d(np.cov(a, rowvar=False)),
                                     b.mean(0), np.atleast_2d(np.cov(b, rowvar=False)))


def _kth_nn_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row of x (n, F) to its k-th nearest other row -> (n,)."""
    out = []
    for i in range(0, x.shape[0], chunk):
        d = torch.cdist(x[i:i + chunk], x)  # (c, n); includes the point itself at distance 0
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def _ball_counts(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """For each row of points (m, F): how many balls B(centers_i, radii_i) contain it -> (m,) int64."""
    out = []
    for j in range(0, points.shape[0], chunk):
        d = torch.cdist(points[j:j + chunk], centers)  # (c, n)
        out.append((d <= radii[None, :]).sum(dim=1))
    return torch.cat(out)


def _knn_setup(real_feats, fake_feats, k, chunk_size, device):
    k = check_positive_int(k, "k")
    chunk = check_positive_int(chunk_size, "chunk_size")
    dev = resolve_device(device)
    r, f = _check_pair(real_feats, fake_feats, names=("real_feats", "fake_feats"), device=dev)
    for name, t in (("real_feats", r), ("fake_feats", f)):
        if t.shape[0] <= k:
            raise ValueError(f"{name} must have more than k={k} rows for k-nearest-neighbour radii, got {t.shape[0]}")
    return r, f, k, chunk


def precision_recall(real_feats, fake_feats, k: int = 5, *, chunk_size: int = 1024, device=None) -> dict:
    r"""Improved precision and recall of Kynkäänniemi et al. [1]_ (k-NN balls).

    With :math:`\mathrm{NND}_k(x)` the distance from x to its k-th nearest neighbour
    in its own set and :math:`B(x, r)` the closed ball,

    .. math::

        \mathrm{precision} = \frac1m\sum_{j=1}^m \mathbf 1\Big[Y_j \in \bigcup_i
            B\big(X_i, \mathrm{NND}_k(X_i)\big)\Big], \qquad
        \mathrm{recall} = \frac1n\sum_{i=1}^n \mathbf 1\Big[X_i \in \bigcup_j
            B\big(Y_j, \mathrm{NND}_k(Y_j)\big)\Big]

    for real :math:`X` and fake :math:`Y`. Distances are computed in chunks of
    ``chunk_size`` rows (memory ``chunk_size x n``).

    Parameters
    ----------
    real_feats : array of shape (n, F), n > k
    fake_feats : array of shape (m, F), m > k
    k : int
    chunk_size : int
    device : str or torch.device, optional

    Returns
    -------
    dict with ``"precision"`` and ``"recall"`` in [0, 1].

    References
    ----------
    .. [1] T. Kynkäänniemi, T. Karras, S. Laine, J. Lehtinen, T. Aila, "Improved
       precision and recall metric for assessing generative models", NeurIPS 2019.
    """
    r, f, k, chunk = _knn_setup(real_feats, fake_feats, k, chunk_size, device)
    rad_r = _kth_nn_radius(r, k, chunk)  # (n,)
    rad_f = _kth_nn_radius(f, k, chunk)  # (m,)
    precision = float((_ball_counts(f, r, rad_r, chunk) > 0).double().mean())
    recall = float((_ball_counts(r, f, rad_f, chunk) > 0).double().mean())
    return {"precision": precision, "recall": recall}


def density_coverage(real_feats, fake_feats, k: int = 5, *, chunk_size: int = 1024, device=None) -> dict:
    r"""Density and coverage of Naeem et al. [1]_ (k-NN balls around real samples only).

    .. math::

        \mathrm{density} = \frac{1}{k\,m}\sum_{j=1}^m \sum_{i=1}^n
            \mathbf 1\big[Y_j \in B(X_i, \mathrm{NND}_k(X_i))\big], \qquad
        \mathrm{coverage} = \frac1n\sum_{i=1}^n \mathbf 1\big[\exists j :
            Y_j \in B(X_i, \mathrm{NND}_k(X_i))\big]

    Density can exceed 1 (fakes crowded where real data is dense); coverage is in [0, 1].

    Parameters
    ----------
    real_feats : array of shape (n, F), n > k
    fake_feats : array of shape (m, F)
    k : int
    chunk_size : int
    device : str or torch.device, optional

    Returns
    -------
    dict with ``"density"`` and ``"coverage"``.

    References
    ----------
    .. [1] M. F. Naeem, S. J. Oh, Y. Uh, Y. Choi, J. Yoo, "Reliable fidelity and
       diversity metrics for generative models", ICML 2020.
    """
    k = check_positive_int(k, "k")
    chunk = check_positive_int(chunk_size, "chunk_size")
    dev = resolve_device(device)
    r, f = _check_pair(real_feats, fake_feats, names=("real_feats", "fake_feats"), device=dev)
    if r.shape[0] <= k:
        raise ValueError(f"real_feats must have more than k={k} rows for k-nearest-neighbour radii, got {r.shape[0]}")
    rad_r = _kth_nn_radius(r, k, chunk)  # (n,)
    density = float(_ball_counts(f, r, rad_r, chunk).double().sum()) / (k * f.shape[0])
    covered = torch.zeros(r.shape[0], dtype=torch.bool, device=dev)
    for i in range(0, r.shape[0], chunk):
        d = torch.cdist(r[i:i + chunk], f)  # (c, m)
        covered[i:i + chunk] = d.min(dim=1).values <= rad_r[i:i + chunk]
    return {"density": density, "coverage": float(covered.double().mean())}


def sliced_wasserstein(a, b, n_projections: int = 256, p: int = 2, seed: int = 0) -> float:
    r"""Monte-Carlo sliced p-Wasserstein distance between two empirical measures.

    .. math::

        SW_p(\alpha, \beta) = \Big(\mathbb E_{\theta \sim U(S^{d-1})}
            W_p^p(\theta_\#\alpha, \theta_\#\beta)\Big)^{1/p}

    estimated with ``n_projections`` random directions (Bonneel et al. [1]_), via POT's
    ``ot.sliced_wasserstein_distance`` with uniform weights.

    Parameters
    ----------
    a : array of shape (n, d)
    b : array of shape (m, d)
    n_projections : int
    p : int
    seed : int
        Seeds the random directions.

    References
    ----------
    .. [1] N. Bonneel, J. Rabin, G. Peyré, H. Pfister, "Sliced and Radon Wasserstein
       barycenters of measures", J. Math. Imaging Vis. 51 (2015).
    """
    x, y = _check_pair(a, b, names=("a", "b"))
    n_proj = check_positive_int(n_projections, "n_projections")
    p = check_positive_int(p, "p")
    seed = check_seed(seed)
    val = ot.sliced_wasserstein_distance(x.cpu().numpy(), y.cpu().numpy(), n_projections=n_proj, p=p, seed=seed)
    return float(val)


# -- memorisation and nearness in a code space ------------------------------------------

def nn_distances(a: torch.Tensor, b: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """Euclidean distance of each row of a (m, d) to its nearest row of b (n, d) -> (m,).

    Exact (no matrix-product expansion, so a point's distance to itself is 0, not round-off);
    ``exclude_self`` skips ``b[i]`` for row i (a and b the same set). Blocks of ``_NN_CHUNK`` rows.
    """
    out = []
    for s in range(0, a.shape[0], _NN_CHUNK):
        d = torch.cdist(a[s:s + _NN_CHUNK], b, compute_mode="donot_use_mm_for_euclid_dist")   # (c, n)
        if exclude_self:
            d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        out.append(d.min(dim=1).values)
    return torch.cat(out)


def copy_rate(z, z_train, radius) -> float:
    r"""Fraction of generated codes that copy a training code.

    .. math:: \mathrm{copy}_r(z) = \frac1m \#\{i : \min_j \|z_i - t_j\| \le r\}

    with :math:`t_j` the training codes. A generator that memorises its training set
    (the plain semi-discrete OT map :math:`\nabla u_h` outputs training codes only) has a
    copy rate of 1; one that draws new codes, close to 0 for a small radius (e.g. 1 % of
    :func:`nn_median` of the training codes).

    Parameters
    ----------
    z : array of shape (m, d)
        Generated codes.
    z_train : array of shape (n, d)
        Training codes, in the same space.
    radius : float >= 0

    Returns
    -------
    float in [0, 1]
    """
    x, t = _check_pair(z, z_train, names=("z", "z_train"))
    r = check_positive_float(radius, "radius", allow_zero=True)
    return float((nn_distances(x, t) <= r).double().mean())


def nn_median(z) -> float:
    r"""Median distance from a code to its nearest other code.

    .. math:: \operatorname{median}_i \min_{j \ne i} \|z_i - z_j\|

    the typical spacing of the set (the lower median, ``torch.median``, for an even
    count); a natural unit for :func:`copy_rate`'s radius. Duplicated rows are at
    distance 0 from each other.

    Parameters
    ----------
    z : array of shape (n, d), n >= 2

    Returns
    -------
    float >= 0
    """
    x = as_tensor(z, "z", ndim=2, dtype=torch.float64, min_rows=2)
    return float(nn_distances(x, x, exclude_self=True).median())


def loss_plateau(loss) -> dict:
    r"""Has a training loss stopped decreasing? Means of its last two tenths.

    With :math:`k = \max(\lfloor n / 10 \rfloor, 1)` and :math:`\bar L_a^b` the mean of
    steps :math:`a..b-1`,

    .. math:: \text{last} = \bar L_{n-k}^{n}, \qquad \text{previous} = \bar L_{n-2k}^{n-k},
              \qquad \text{relative change} = (\text{previous} - \text{last}) / \text{last}

    A relative change near 0 says the loss has plateaued (more steps would not help much).

    Parameters
    ----------
    loss : array of shape (n,), n >= 1
        The loss of every training step (e.g. ``LatentDiffusion.history_["loss"]``).

    Returns
    -------
    dict
        ``last_10pct``, ``previous_10pct`` (NaN when n < 2k) and ``relative_change`` (NaN
        when undefined: n < 2k or a last mean of 0), floats.
    """
    L = as_tensor(loss, "loss", ndim=1, dtype=torch.float64).cpu().numpy()
    k = max(len(L) // _PLATEAU_FRACTION, 1)
    last = float(L[-k:].mean())
    prev = float(L[-2 * k:-k].mean()) if len(L) >= 2 * k else float("nan")
    change = (prev - last) / last if last != 0 else float("nan")
    return {"last_10pct": last, "previous_10pct": prev, "relative_change": change}


# -- detection ------------------------------------------------------------------------

def detection_scores(flags, truth) -> dict:
    r"""Precision, recall and F1 of boolean ``flags`` at finding the positives of ``truth``.

    .. math:: P = \frac{|F \cap T|}{|F|}, \qquad R = \frac{|F \cap T|}{|T|}, \qquad
              F_1 = \frac{2 P R}{P + R}

    with F the flagged items and T the true positives (e.g. generated clips flagged near
    the singular set, and the clips that are transitions).

    Parameters
    ----------
    flags, truth : array of bool, shape (n,)

    Returns
    -------
    dict
        ``precision`` (NaN when nothing is flagged), ``recall`` (NaN when there is no
        positive), ``f1`` (0 when either is undefined or both are 0), ``flagged`` = |F|,
        ``positives`` = |T|, ``true_positives``, ``n`` and ``flagged_rate`` = |F| / n (NaN
        when n = 0).
    """
    f, t = np.asarray(flags, bool), np.asarray(truth, bool)
    if f.shape != t.shape or f.ndim != 1:
        raise ValueError(f"flags and truth must be 1-D of the same length, got shapes {f.shape} and {t.shape}")
    tp = int((f & t).sum())
    prec = tp / int(f.sum()) if f.any() else float("nan")
    rec = tp / int(t.sum()) if t.any() else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if f.any() and t.any() and (prec + rec) > 0 else 0.0
    return {"precision": prec, "recall": rec, "f1": f1, "flagged": int(f.sum()), "positives": int(t.sum()),
            "true_positives": tp, "n": int(len(t)), "flagged_rate": float(f.mean()) if len(f) else float("nan")}


# -- everything at once for digits ---------------------------------------------------

def classifier_outputs(classifier, images) -> tuple:
    """``(probabilities (n, 10), features (n, F))`` of ``images`` (n, 28, 28) under a fitted MNISTClassifier."""
    for name in ("predict_proba", "features"):
        if not hasattr(classifier, name):
            raise TypeError(f"classifier must be a fitted MNISTClassifier, got {type(classifier).__name__}")
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
    if hasattr(classifier, "outputs"):                 # MNISTClassifier: both from one pass of the network
        return classifier.outputs(x)
    return classifier.predict_proba(x), classifier.features(x)


def _check_outputs(outputs, name: str) -> tuple:
    """``outputs`` = (probabilities (n, C), features (n, F)) of one image set, as numpy arrays."""
    if not (isinstance(outputs, (tuple, list)) and len(outputs) == 2):
        raise TypeError(f"{name} must be the pair (probabilities, features) of classifier_outputs, got "
                        f"{type(outputs).__name__}")
    p, f = (np.asarray(a) for a in outputs)
    if p.ndim != 2 or f.ndim != 2 or p.shape[0] != f.shape[0]:
        raise ValueError(f"{name} must be (probabilities, features) of the same images, got "
                         f"{p.shape[0]} and {f.shape[0]} rows")
    return p, f


def digit_metrics(classifier, fake_images, real_images, *, k: int = 5, taus=(0.1, 0.2, 0.3, 0.4),
                  device=None, real_outputs=None, fake_outputs=None) -> dict:
    r"""All digit-generation scores of ``fake_images`` against ``real_images`` in one dict.

    Uses a fitted :class:`~otgen.metrics.MNISTClassifier` for class probabilities and
    penultimate-layer features, then :func:`mode_mixture_rate`,
    :func:`low_confidence_rate`, :func:`class_histogram` + :func:`coverage_kl` (sample
    histogram vs the real one), :func:`frechet_distance`, :func:`precision_recall` and
    :func:`density_coverage` on the features.

    Parameters
    ----------
    classifier : MNISTClassifier
        Fitted.
    fake_images, real_images : arrays of shape (m, 28, 28) and (n, 28, 28) in [0, 1]
        ``m, n > k``.
    k : int
        Neighbourhood size of the k-NN metrics.
    taus : sequence of float
        Thresholds of the mode-mixture rate.
    device : str or torch.device, optional
        Where the k-NN distances are computed.
    real_outputs : tuple of ndarray, optional
        ``classifier_outputs(classifier, real_images)``, computed once when several samples
        are scored against the same real images (``real_images`` is then not read).
    fake_outputs : tuple of ndarray, optional
        ``classifier_outputs(classifier, fake_images)`` when already computed (``fake_images`` is
        then not read).

    Returns
    -------
    dict
        ``mode_mixture`` ({tau: rate}), ``low_confidence``, ``class_histogram`` (list of
        10 floats), ``class_kl``, ``fid``, ``precision``, ``recall``, ``density``,
        ``coverage`` — plain Python numbers, JSON-serialisable (tau keys as strings).
    """
    p_fake, f_fake = _check_outputs(classifier_outputs(classifier, fake_images) if fake_outputs is None
                                    else fake_outputs, "fake_outputs")              # (m, 10), (m, F)
    p_real, f_real = _check_outputs(classifier_outputs(classifier, real_images) if real_outputs is None
                                    else real_outputs, "real_outputs")              # (n, 10), (n, F)
    hist = class_histogram(p_fake, n_classes=p_fake.shape[1])
    out = {"mode_mixture": {str(t): v for t, v in mode_mixture_rate(p_fake, taus).items()},
           "low_confidence": low_confidence_rate(p_fake),
           "class_histogram": hist.tolist(),
           "class_kl": coverage_kl(hist, class_histogram(p_real, n_classes=p_real.shape[1])),
           "fid": frechet_distance(f_real, f_fake)}
    out.update(precision_recall(f_real, f_fake, k=k, device=device))
    out.update(density_coverage(f_real, f_fake, k=k, device=device))
    return out
