r"""Neighbour graphs and a parametric neighbour embedding (UMAP-type loss, in torch).

:func:`knn_graph` finds the k nearest neighbours of every point by chunks (memory
O(n k + chunk n), never O(n^2)); :func:`fuzzy_graph` turns them into UMAP's symmetric
fuzzy graph; :func:`train_neighbour_embedding` trains a network :math:`f` so that the
points :math:`e_i = f(x_i)` keep that graph, minimising UMAP's cross-entropy with
negative sampling (McInnes, Healy & Melville [1]_; parametric form: Sainburg, McInnes
& Gentner [2]_):

.. math::

    L = -\sum_{(i,j)} w_{ij}\log q_{ij} - \sum_{(i,m)} \log(1 - q_{im}),\qquad
    q_{ij} = \big(1 + a\,\|e_i - e_j\|^{2b}\big)^{-1},

with edges :math:`(i, j)` drawn with probability :math:`\propto w_{ij}` and
``negatives`` random points :math:`m` per edge. With ``min_dist`` near 0, points of one
cluster gather tightly and clusters separate (N2D, McConville et al. [3]_).

References
----------
.. [1] L. McInnes, J. Healy, J. Melville, "UMAP: uniform manifold approximation and
   projection for dimension reduction", arXiv:1802.03426 (2018).
.. [2] T. Sainburg, L. McInnes, T. Q. Gentner, "Parametric UMAP embeddings for
   representation and semisupervised learning", Neural Computation 33 (2021).
.. [3] R. McConville, R. Santos-Rodriguez, R. J. Piechocki, I. Craddock, "N2D: (not
   too) deep clustering via clustering the local manifold of an autoencoded
   embedding", ICPR 2020.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from otgen._validation import as_tensor, check_positive_float, check_positive_int

__all__ = ["knn_graph", "fuzzy_graph", "train_neighbour_embedding", "log_kernel", "UMAP_A", "UMAP_B"]

UMAP_A, UMAP_B = 1.929, 0.7915   # UMAP's fit of (1 + a d^2b)^-1 to its min_dist=0, spread=1 curve
_CHUNK = 2048                    # query rows per distance block: memory chunk x n floats
_BISECT_STEPS = 64               # bisection steps for each point's bandwidth sigma_i (float64 precision)
_EPS = 1e-4                      # keeps log(1 - q) finite when two embedded points coincide


def knn_graph(x, k: int, chunk: int = _CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest other points of each row of ``x`` (n, p), in Euclidean distance.

    Returns ``(indices, distances)``, both (n, k), nearest first; computed in blocks of
    ``chunk`` query rows, so memory is O(chunk n), never O(n^2).
    """
    x = as_tensor(x, "x", ndim=2)
    n = x.shape[0]
    k = check_positive_int(k, "k")
    if k >= n:
        raise ValueError(f"k must be smaller than the number of points ({n}), got {k}")
    sq = (x * x).sum(1)                                                     # (n,)
    idx, dist = [], []
    for s in range(0, n, chunk):
        q = x[s:s + chunk]                                                  # (c, p)
        d2 = (sq[s:s + chunk, None] - 2 * q @ x.T + sq[None, :]).clamp_min_(0)  # (c, n)
        d2[torch.arange(q.shape[0]), torch.arange(s, s + q.shape[0])] = float("inf")  # not its own neighbour
        v, i = d2.topk(k, dim=1, largest=False)
        idx.append(i)
        dist.append(v.sqrt())
    return torch.cat(idx), torch.cat(dist)


def _bandwidths(dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""UMAP's :math:`\rho_i` (distance to the nearest neighbour) and :math:`\sigma_i` with
    :math:`\sum_j \exp(-(d_{ij} - \rho_i)/\sigma_i) = \log_2 k`, by bisection (dist: (n, k))."""
    d = dist.double()
    rho = d[:, :1]
    target = math.log2(d.shape[1])
    lo, hi = torch.zeros_like(rho), torch.full_like(rho, float("inf"))
    sigma = torch.ones_like(rho)
    for _ in range(_BISECT_STEPS):
        total = torch.exp(-(d - rho).clamp_min(0) / sigma).sum(1, keepdim=True)
        big = total > target
        hi = torch.where(big, sigma, hi)
        lo = torch.where(big, lo, sigma)
        sigma = torch.where(torch.isinf(hi), sigma * 2, (lo + hi) / 2)
    return rho, sigma


def fuzzy_graph(indices, distances) -> tuple[torch.Tensor, torch.Tensor]:
    r"""UMAP's symmetric fuzzy neighbour graph from a k-NN graph.

    Directed weights :math:`a_{ij} = \exp(-(d_{ij} - \rho_i)/\sigma_i)` (see
    :func:`knn_graph` for the inputs, (n, k) each), symmetrised by the fuzzy union
    :math:`w_{ij} = a_{ij} + a_{ji} - a_{ij} a_{ji}`.

    Returns
    -------
    edges : torch.Tensor of int64, shape (m, 2)
        Each undirected edge once, ``i < j``.
    weights : torch.Tensor of float32, shape (m,)
        :math:`w_{ij}` in (0, 1].
    """
    idx = as_tensor(indices, "indices", ndim=2, dtype=torch.int64)
    dist = as_tensor(distances, "distances", ndim=2)
    n, k = idx.shape
    rho, sigma = _bandwidths(dist)
    a = torch.exp(-(dist.double() - rho).clamp_min(0) / sigma).reshape(-1).numpy()   # (n k,)
    i = np.repeat(np.arange(n), k)
    j = idx.reshape(-1).numpy()
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    keys, inverse, counts = np.unique(lo * n + hi, return_inverse=True, return_counts=True)
    total = np.zeros(len(keys))
    prod = np.ones(len(keys))
    np.add.at(total, inverse, a)
    np.multiply.at(prod, inverse, a)
    w = np.where(counts > 1, total - prod, total)                # both directions: a + b - ab
    edges = np.stack([keys // n, keys % n], axis=1)
    return torch.from_numpy(edges).long(), torch.from_numpy(w).float()


def _umap_loss(net, read, e, neg, negatives: int, a: float, b: float, dev) -> torch.Tensor:
    """UMAP's cross-entropy on edges e (B, 2) and negatives neg (B M,); ``read(ids)`` gives the points' inputs."""
    batch = e.shape[0]
    emb = net(read(torch.cat([e[:, 0], e[:, 1], neg])).to(dev))             # (2B + BM, d)
    ei, ej, en = emb[:batch], emb[batch:2 * batch], emb[2 * batch:]
    q_pos = 1 / (1 + a * (ei - ej).pow(2).sum(1).clamp_min(1e-12).pow(b))
    q_neg = 1 / (1 + a * (ei.repeat(negatives, 1) - en).pow(2).sum(1).clamp_min(1e-12).pow(b))
    return -(torch.log(q_pos + _EPS).mean() + negatives * torch.log(1 - q_neg + _EPS).mean())


def log_kernel(sq_dist: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    r"""Log of the heavy-tailed t-SNE kernel :math:`q = (1 + d^2/\alpha)^{-\alpha}` at squared distances ``sq_dist``.

    :math:`\alpha = 1` is the Cauchy kernel :math:`(1 + d^2)^{-1}` of t-SNE; :math:`\alpha < 1`
    gives heavier tails, which pull each cluster tighter and push clusters further apart
    (Kobak et al. [1]_); :math:`\alpha \to \infty` tends to the Gaussian :math:`e^{-d^2}`.

    References
    ----------
    .. [1] D. Kobak, G. Linderman, S. Steinerberger, Y. Kluger, P. Berens, "Heavy-tailed kernels
       reveal a finer cluster structure in t-SNE visualisations", ECML PKDD 2019 (LNCS 11906, 2020).
    """
    alpha = check_positive_float(alpha, "alpha")
    return -alpha * torch.log1p(sq_dist / alpha)


def _infonce_loss(net, read, e, dev, alpha: float = 1.0, exaggeration: float = 1.0) -> torch.Tensor:
    """Neighbour-contrastive loss with the kernel :func:`log_kernel` on edges e (B, 2): the batch's other ends are
    negatives; ``exaggeration`` multiplies the attraction term (1: the cross-entropy)."""
    batch = e.shape[0]
    emb = net(read(e.reshape(-1)).to(dev)).reshape(batch, 2, -1)               # (B, 2, d)
    logq = log_kernel(torch.cdist(emb[:, 0], emb[:, 1]).pow(2), alpha)         # (B, B)
    if exaggeration == 1.0:
        return torch.nn.functional.cross_entropy(logq, torch.arange(batch, device=dev))
    return (torch.logsumexp(logq, dim=1) - exaggeration * logq.diagonal()).mean()


def _reader(inputs: torch.Tensor, views: torch.Tensor | None, generator: torch.Generator):
    """``read(ids)`` -> the inputs of points ``ids`` (m,): ``inputs[ids]``, or with ``views`` (V, n, ...) each
    row from ``inputs`` or one of the views, chosen uniformly at random."""
    if views is None:
        return lambda ids: inputs[ids]
    if views.ndim != inputs.ndim + 1 or views.shape[1:] != inputs.shape:
        raise ValueError(f"views must have shape (V, *{tuple(inputs.shape)}), got {tuple(views.shape)}")
    table = torch.cat([inputs[None], views.to(inputs.dtype)])                    # (V + 1, n, ...)
    return lambda ids: table[torch.randint(0, table.shape[0], (ids.shape[0],), generator=generator), ids]


def train_neighbour_embedding(net: torch.nn.Module, inputs: torch.Tensor, edges: torch.Tensor,
                              weights: torch.Tensor, *, steps: int, batch_size: int = 1024, negatives: int = 5,
                              lr: float = 1e-3, a: float = UMAP_A, b: float = UMAP_B,
                              generator: torch.Generator, device=None, loss_kind: str = "umap",
                              views: torch.Tensor | None = None, alpha: float = 1.0,
                              exaggeration: float = 1.0) -> list:
    r"""Train ``net`` (inputs (n, ...) -> embeddings (n, d)) on UMAP's cross-entropy.

    Each step draws ``batch_size`` edges with probability :math:`\propto w_{ij}` and
    ``negatives`` uniform random partners per edge, and takes one Adam step (cosine
    decay of ``lr``) on

    .. math::

        -\frac1B\sum_{(i,j)} \log q_{ij}
        - \frac1B\sum_{(i,m)} \log(1 - q_{im} + \epsilon).

    Parameters
    ----------
    net : torch.nn.Module
        Trained in place.
    inputs : torch.Tensor of shape (n, ...)
        What ``net`` reads for each point (CPU).
    edges : torch.Tensor of int64, shape (m, 2)
    weights : torch.Tensor, shape (m,)
        From :func:`fuzzy_graph`.
    steps : int
        Optimiser steps.
    batch_size : int, default 1024
    negatives : int, default 5
    lr : float, default 1e-3
    a, b : float
        Curve :math:`q = (1 + a d^{2b})^{-1}` (defaults: ``min_dist`` 0).
    generator : torch.Generator
        CPU generator of the edge and negative draws.
    device : torch.device, optional
    loss_kind : {"umap", "infonce"}, default "umap"
        ``"infonce"``: the neighbour-contrastive form (Damrich et al. [1]_): for a batch
        of edges :math:`(i_r, j_r)`, :math:`-\frac1B\sum_r \log\big(q_{i_r j_r} /
        \sum_s q_{i_r j_s}\big)` with the Cauchy kernel :math:`q = (1 + d^2)^{-1}`:
        every other point of the batch is a negative, which gives t-SNE-like,
        well separated clusters in few steps.
    views : torch.Tensor of shape (V, n, ...), optional
        Other versions of the same points (e.g. features of augmented images). Each end
        of each edge, and each negative, then reads ``inputs`` or one of the V views at
        random (uniformly, V + 1 choices), so that :math:`f` maps a point's neighbourhood,
        not only the point itself, into its cluster: new points land where their
        training neighbours are. The graph stays that of ``inputs``.
    alpha : float, default 1.0
        Tail of the ``"infonce"`` kernel, :math:`q = (1 + d^2/\alpha)^{-\alpha}`
        (:func:`log_kernel`): 1 is the Cauchy kernel, :math:`\alpha < 1` heavier tails
        and tighter, further-apart clusters. Not used by ``"umap"`` (its curve is ``a, b``).
    exaggeration : float, default 1.0
        ``"infonce"`` only: the attraction term :math:`-\log q_{i_r j_r}` is multiplied by
        this factor (t-SNE's exaggeration: > 1 pulls neighbours closer, compacter clusters).

    References
    ----------
    .. [1] S. Damrich, J. N. Böhm, F. A. Hamprecht, D. Kobak, "From t-SNE to UMAP with
       contrastive learning", ICLR 2023.

    Returns
    -------
    list of float
        Mean loss of each block of 100 steps (and of the last, shorter block).
    """
    n = inputs.shape[0]
    alpha = check_positive_float(alpha, "alpha")
    exaggeration = check_positive_float(exaggeration, "exaggeration")
    dev = torch.device("cpu") if device is None else device
    net.to(dev).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
    read = _reader(inputs, views, generator)
    probs = weights.double() / weights.double().sum()
    losses, running, count = [], 0.0, 0
    for step in range(steps):
        pick = torch.multinomial(probs, batch_size, replacement=True, generator=generator)
        e = edges[pick]                                                           # (B, 2)
        neg = torch.randint(0, n, (batch_size * negatives,), generator=generator) if loss_kind == "umap" else None
        if loss_kind == "infonce":
            loss = _infonce_loss(net, read, e, dev, alpha, exaggeration)
        else:
            loss = _umap_loss(net, read, e, neg, negatives, a, b, dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running, count = running + loss.item(), count + 1
        if count == 100 or step == steps - 1:
            losses.append(running / count)
            running, count = 0.0, 0
    net.eval()
    return losses
