"""The frame of a solve: targets centred and scaled in float64 *before* the cast, near-duplicates merged.

The cells of the power diagram do not change when the targets are translated or scaled:
with :math:`y_i = c + s z_i` (s > 0),

.. math::  \\langle x, y_i\\rangle + h_i = \\langle x, c\\rangle + s\\,(\\langle x, z_i\\rangle + h_i / s),

and :math:`\\langle x, c\\rangle` is common to every i. So the solver works with the
normalised targets :math:`z_i = (y_i - c) / s` (c their mean, s their root-mean-square
norm, computed in float64) and heights :math:`g = h / s`, and only then casts to the
working dtype. An offset of 1e8 or a scale of 1e-25 in the user's data is then no
concern of the solver's float32 arithmetic.

Targets that coincide within the working precision are *stiff*: the facet between
targets δ apart moves by (score error) / δ in the source, where the score error of a
d-term dot product in the working dtype is about :math:`\\sqrt d\\, \\varepsilon\\, R\\,
|z|_{\\max}`. Such groups are merged into one target at their mass-weighted mean
carrying their summed mass; after the merged problem is solved, each merged cell W is
split back among its members in float64 (:func:`split_group`): the members' offsets
:math:`D_k = z_k - \\bar z` define a small semi-discrete problem on W, solved on the
source points that fall in W by exact coordinate ascent (every update sets one inner
height to the quantile that gives its cell its mass), so the members' masses match
their weights up to one point of W.

References
----------
.. [1] Q. Mérigot, "A multiscale approach to optimal transport", Computer Graphics
   Forum 30 (2011) (merging nearby targets, then refining).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

# Merging near-duplicates: the facet between two targets δ apart is off by about
# sqrt(d) eps R |z|max / δ in the source; merging below 256 sqrt(d) eps |z|max keeps that under R / 256.
_MERGE_ULPS = 256
# Inner split of a merged group: coordinate-ascent sweeps (exact for 2 members in one update)
_SPLIT_SWEEPS = 100
# Storing the targets in a narrower dtype: warn when that rounds a target by more than this share of their spread
_ROUND_WARN = 1e-4


@dataclass(frozen=True)
class Frame:
    """Centre c (d,) float64, scale s and the normalised targets Z = (Y - c) / s (N, d) float64."""

    center: torch.Tensor
    scale: float
    Z: torch.Tensor


def make_frame(Y64: torch.Tensor, active: torch.Tensor) -> Frame:
    """The frame of the active targets (mean zero, root-mean-square norm one), for all N targets."""
    c = Y64[active].mean(0)
    s = float((Y64[active] - c).pow(2).sum(1).mean().sqrt())
    if not s > 0 or not math.isfinite(s):
        raise ValueError("the targets of positive weight coincide: there is nothing to transport between")
    return Frame(c, s, (Y64 - c) / s)


def check_cast(Y64: torch.Tensor, Yd: torch.Tensor, scale: float) -> tuple | None:
    """Whether storing the targets in ``Yd.dtype`` misrepresents the user's data.

    Returns ``("error", message)`` when the cast overflows or makes distinct rows equal,
    ``("warning", message)`` when it rounds a target by more than ``_ROUND_WARN`` of the
    spread ``scale``, else None. The messages give the data's own magnitudes.
    """
    name = str(Yd.dtype).replace("torch.", "")
    big = float(Y64.abs().max())
    if not bool(torch.isfinite(Yd).all()):
        return "error", (f"Y reaches |y| = {big:.3g}, beyond the largest {name} ({torch.finfo(Yd.dtype).max:.3g}); "
                         f"pass dtype=torch.float64 or rescale Y")
    err = float((Yd.double() - Y64).abs().max())
    if err <= _ROUND_WARN * scale:
        return None
    offset = float(Y64.mean(0).abs().max())
    msg = (f"storing Y in {name} rounds it by up to {err:.3g}, {err / scale:.2g} of its spread {scale:.3g} "
           f"(its largest |value| is {big:.3g}, its mean is {offset:.3g} from the origin)")
    if torch.unique(Yd, dim=0).shape[0] < Yd.shape[0]:
        return "error", (msg + f": distinct rows of Y become equal in {name}. Centre Y (Y - Y.mean(0)) or pass "
                         "dtype=torch.float64")
    return "warning", (msg + "; the solve itself is exact in a centred, scaled frame, but targets_, transform and "
                       "sample return the rounded values. Centre Y or pass dtype=torch.float64 to avoid it")


def merge_threshold(Z: torch.Tensor, dtype) -> float:
    """Distance below which two normalised targets are merged in ``dtype`` (see the module docstring)."""
    eps = torch.finfo(dtype).eps
    return _MERGE_ULPS * math.sqrt(Z.shape[1]) * eps * float(Z.norm(dim=1).max())


def close_pairs(Z: torch.Tensor, thr: float, seed: int) -> torch.Tensor:
    """All pairs (i, j), i < j, with |z_i - z_j| <= thr: (P, 2) int64. Exact.

    Sorted along a random unit direction r, |⟨z_i - z_j, r⟩| <= |z_i - z_j|, so every close
    pair lies within thr along r; the sweep compares neighbours k = 1, 2, ... apart in that
    order until no pair k apart is within thr along r (none further apart can be).
    """
    N = Z.shape[0]
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(Z.shape[1], generator=gen, dtype=torch.float64).to(Z.device)
    p = Z @ (r / r.norm())
    order = torch.argsort(p)
    ps, Zs = p[order], Z[order]
    found = [torch.empty(0, 2, dtype=torch.int64, device=Z.device)]
    for k in range(1, N):
        near = torch.nonzero(ps[k:] - ps[:-k] <= thr).squeeze(1)
        if near.numel() == 0:
            break
        hit = near[(Zs[near + k] - Zs[near]).norm(dim=1) <= thr]
        found.append(torch.stack([order[hit], order[hit + k]], 1))
    pairs = torch.cat(found)
    return torch.stack([pairs.min(1).values, pairs.max(1).values], 1)


def group_labels(N: int, pairs: torch.Tensor) -> torch.Tensor:
    """Connected components of the graph with these edges: label (N,) int64 in 0..G-1, in order of first member."""
    label = torch.arange(N, device=pairs.device)
    if pairs.numel() == 0:
        return label
    a, b = pairs[:, 0], pairs[:, 1]
    while True:     # min-label propagation; a few rounds for the small groups of near-duplicates
        m = torch.minimum(label[a], label[b])
        new = label.clone().scatter_reduce_(0, a, m, "amin").scatter_reduce_(0, b, m, "amin")
        new = new[new]                                             # pointer jumping
        if torch.equal(new, label):
            break
        label = new
    _, dense = torch.unique(label, return_inverse=True)
    return dense


def merge(Z: torch.Tensor, nu: torch.Tensor, labels: torch.Tensor):
    """Merged targets (G, d) float64 at the mass-weighted mean of each group and their summed masses (G,)."""
    G = int(labels.max()) + 1
    W = torch.zeros(G, dtype=torch.float64, device=Z.device).index_add_(0, labels, nu)
    Zm = torch.zeros(G, Z.shape[1], dtype=torch.float64, device=Z.device).index_add_(0, labels, Z * nu[:, None])
    return Zm / W[:, None], W


def split_group(X: torch.Tensor, D: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Inner heights (K,) float64 that split the points X (m, d) of a merged cell among offsets D (K, d).

    The members get shares w / Σw of the points (up to one point each): coordinate ascent on
    the dual of the discrete problem, each update setting one height to the quantile that
    gives its member its share. The heights are shifted so that max_k ⟨x, D_k⟩ + g_k has
    mean zero over X: the merged cell's outer facets move by O(|D|) only.
    """
    K, m = D.shape[0], X.shape[0]
    g = torch.zeros(K, dtype=torch.float64, device=X.device)
    if m < K:           # no points to split by: equal heights
        return g
    S = X.double() @ D.T                                            # (m, K)
    want = torch.round(w / w.sum() * m).long().clamp(1, m - 1)      # points per member
    for _ in range(_SPLIT_SWEEPS):
        for k in range(K):
            others = (S + g).index_fill(1, torch.tensor([k], device=X.device), -math.inf).max(1).values
            v = torch.sort(others - S[:, k]).values                 # cell k holds the points with v <= g_k
            n = int(want[k])
            g[k] = 0.5 * (v[n - 1] + v[n]) if n < m else v[-1]
        counts = torch.bincount((S + g).argmax(1), minlength=K)
        if int((counts - want).abs().max()) <= 1:
            break
    return g - (S + g).max(1).values.mean()


def fingerprint(Y64: torch.Tensor, nu: torch.Tensor) -> str:
    """SHA-256 of the targets' float64 bytes, their shape and the weights' float64 bytes."""
    h = hashlib.sha256()
    h.update(np.asarray(Y64.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(Y64.detach().cpu().double().numpy()).tobytes())
    h.update(np.ascontiguousarray(nu.detach().cpu().double().numpy()).tobytes())
    return h.hexdigest()
