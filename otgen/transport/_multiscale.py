"""Multiscale warm start: solve a k-means-coarsened problem, then refine.

Targets are clustered by k-means into K ≈ N / ``factor`` groups; the coarse problem
(centroids c_k with the summed masses) is solved first (recursively, down to
``min_size`` targets), and its potential gives the fine heights [1]_. Inside a coarse
cell C_k the map is modelled as affine, x ↦ c_k + a_k (x − x̄_k), with x̄_k the cell's
barycentre and a_k the ratio of the cluster's spread to the cell's spread. The
Brenier potential of that local map, u(x) = h_k + <x, c_k> + a_k |x − x̄_k|²/2, has
Legendre transform u*(y) = <x̄_k, y − c_k> + |y − c_k|²/(2 a_k) − h_k, so

.. math::  h_i = h_k - \\langle \\bar x_k, y_i - c_k\\rangle - \\frac{|y_i - c_k|^2}{2 a_k}.

Without this, clustered targets (latent codes of a few classes) start with most of
their cells empty and Newton needs many damped steps to move mass between clusters.

References
----------
.. [1] Q. Mérigot, "A multiscale approach to optimal transport", Computer Graphics
   Forum 30 (2011).
"""

from __future__ import annotations

import torch

from otgen.transport._scoring import Scorer


def kmeans(Y: torch.Tensor, K: int, weights: torch.Tensor, n_iter: int = 10, seed: int = 0):
    """Weighted Lloyd iterations. Y: (N, d), weights: (N,). Returns labels (N,), centroids (K', d).

    Empty clusters are dropped, so K' <= K.
    """
    N = Y.shape[0]
    g = torch.Generator().manual_seed(seed)
    C = Y[torch.randperm(N, generator=g)[:K].to(Y.device)].clone()   # (K, d)
    w = weights.to(Y.dtype)
    for _ in range(n_iter):
        # nearest centroid: argmax <y, c> - |c|^2 / 2
        labels = Scorer(C, 64 << 20).best(Y, -0.5 * (C * C).sum(1))[1]
        mass = torch.zeros(C.shape[0], dtype=Y.dtype, device=Y.device).index_add_(0, labels, w)
        sums = torch.zeros_like(C).index_add_(0, labels, Y * w[:, None])
        keep = mass > 0
        C = sums[keep] / mass[keep, None]
    labels = Scorer(C, 64 << 20).best(Y, -0.5 * (C * C).sum(1))[1]
    used, labels = torch.unique(labels, return_inverse=True)
    mass = torch.zeros(used.shape[0], dtype=Y.dtype, device=Y.device).index_add_(0, labels, w)
    C = torch.zeros(used.shape[0], Y.shape[1], dtype=Y.dtype, device=Y.device).index_add_(0, labels, Y * w[:, None])
    return labels, C / mass[:, None]


def refine_heights(Y: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor, C: torch.Tensor,
                   h_coarse: torch.Tensor, cell_mean: torch.Tensor, cell_var: torch.Tensor) -> torch.Tensor:
    """Fine heights from the coarse potential (formula in the module docstring).

    Y (N, d), weights (N,), labels (N,) in [0, K), C (K, d), h_coarse (K,), cell_mean (K, d)
    barycentres of the coarse cells, cell_var (K,) their mean squared spread per coordinate.
    """
    Y64, C64 = Y.double(), C.double()
    w = weights.double()
    diff = Y64 - C64[labels]                                            # (N, d)
    d = Y.shape[1]
    sq = (diff * diff).sum(1)                                            # (N,)
    Kc = C.shape[0]
    mass = torch.zeros(Kc, dtype=torch.float64, device=Y.device).index_add_(0, labels, w)
    spread = torch.zeros(Kc, dtype=torch.float64, device=Y.device).index_add_(0, labels, w * sq)
    spread = spread / mass.clamp_min(1e-300) / d                         # cluster variance per coordinate
    a = (spread / cell_var.double().clamp_min(1e-30)).sqrt()
    a = torch.where(spread > 0, a, torch.ones_like(a)).clamp_min(1e-12)  # single-point clusters: any a
    h = h_coarse.double()[labels] - (cell_mean.double()[labels] * diff).sum(1) - sq / (2 * a[labels])
    return h - h.mean()
