"""Geometry of generated points against the data they should follow (in a code or toy space).

:func:`off_support_rate` measures how many generated points fall off the support of the
data: in the gaps between modes (mode mixture of an interpolating generator [1]_) or far
outside.

References
----------
.. [1] N. Lei, D. An, Y. Guo, K. Su, S. Liu, Z. Luo, S.-T. Yau and X. Gu, "A geometric
   understanding of deep learning", Engineering 6(3), 2020.
"""

from __future__ import annotations

import torch

from otgen._validation import as_tensor, check_positive_float
from otgen.metrics.generation import nn_distances

__all__ = ["off_support_rate"]


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
