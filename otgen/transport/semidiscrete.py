"""Semi-discrete optimal transport: the Brenier potential from a source density to point targets.

Given targets :math:`y_1, \\dots, y_N \\in \\mathbb R^d` with masses :math:`\\nu_i` and a
source measure μ with a density (uniform cube, uniform ball or standard normal), find
heights h such that every power cell

.. math::  W_i(h) = \\{x : \\langle x, y_i\\rangle + h_i \\ge \\langle x, y_j\\rangle + h_j\\ \\forall j\\}

carries mass :math:`\\mu(W_i) = \\nu_i`. Then :math:`\\nabla u_h` with
:math:`u_h(x) = \\max_i \\langle x, y_i\\rangle + h_i` is the optimal (Brenier) map
pushing μ to :math:`\\sum_i \\nu_i \\delta_{y_i}` [1]_ [2]_. h minimises the convex energy

.. math::  E(h) = \\int \\max_i(\\langle x, y_i\\rangle + h_i)\\,d\\mu(x) - \\sum_i \\nu_i h_i,
   \\qquad \\nabla E(h)_i = \\mu(W_i(h)) - \\nu_i.

The solver is a stochastic damped Newton method (see :mod:`otgen.transport._newton`
and [3]_). Each iteration scores fresh scrambled-Sobol source points against all
targets (one chunked GEMM with h folded in, then a row-wise argmax), estimates the
masses and, from the same samples' two best cells, the Hessian (the Laplacian of the
power diagram). Far from the solution (TV > 0.1, or while some cell gets no point)
the step uses the Hessian's diagonal — every cell corrects its own mass — and cells
no point reached are revived directly; near it the full Newton system is solved by
conjugate gradients. The step length is chosen by a line search that re-scores the
same points' k best cells (common random numbers), and a step whose measured error
grew beyond the noise is shortened. A multiscale warm start (k-means-coarsened
targets, [5]_) places each cluster's mass before the fine solve. The number of points
grows ×4 when the error estimate reaches its own noise or progress stalls, so that
the reported error is never mostly noise: ``converged_`` means the total-variation
error ½ Σ |μ(W_i) − ν_i| is below ``tol`` *and* the estimate's noise (measured from
two independent randomisations) is below ``tol / 2``.

References
----------
.. [1] Y. Brenier, "Polar factorization and monotone rearrangement of vector-valued
   functions", Comm. Pure Appl. Math. 44 (1991).
.. [2] X. Gu, F. Luo, J. Sun, S.-T. Yau, "Variational principles for Minkowski type
   problems, discrete optimal transport, and discrete Monge-Ampère equations",
   Asian J. Math. 20 (2016).
.. [3] J. Kitagawa, Q. Mérigot, B. Thibert, "Convergence of a Newton algorithm for
   semi-discrete optimal transport", J. Eur. Math. Soc. 21 (2019).
.. [4] N. Lei, D. An, Y. Guo, K. Su, S. Liu, Z. Luo, S.-T. Yau, X. Gu, "A geometric
   understanding of deep learning" (AE-OT), Engineering 6 (2020).
.. [5] Q. Mérigot, "A multiscale approach to optimal transport", Computer Graphics
   Forum 30 (2011).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from otgen._validation import (ConvergenceWarning, as_tensor, check_dtype, check_positive_float,
                               check_positive_int, check_weights, resolve_device)
from otgen.transport._dist import ShardedScorer, make_comm
from otgen.transport._newton import estimate_laplacian, line_search, lm_step, rescue_empty
from otgen.transport._multiscale import kmeans, refine_heights
from otgen.transport._scoring import Scorer
from otgen.transport.sources import SourceSampler, check_source, source_std

_CHECKPOINT_VERSION = 1
_DRAW_ROWS = 1 << 16  # source points drawn at a time
_SEARCH_ROWS = 1 << 18  # points whose top-k feed the line search and the revival of empty cells


@dataclass(frozen=True)
class SemiDiscreteResult:
    """Outcome of a fit: the potential's heights and how the solve went.

    heights : (N,) float64, mean zero.  tv_error : last estimated ½Σ|μ(W_i)−ν_i|.
    noise : the estimate's own noise level.  history : one dict per iteration.
    """

    heights: torch.Tensor
    tv_error: float
    noise: float
    converged: bool
    n_iter: int
    history: list = field(repr=False)


def _mix_seed(*parts: int) -> int:
    """Deterministic 63-bit seed from integers (splitmix-style), for per-iteration streams."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x ^= (int(p) + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2)) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(math.ceil(math.log2(max(1, n)))))


def _to_device(state: dict, device) -> dict:
    """The solver state with its tensors moved to ``device``."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in state.items()}


class SemiDiscreteOT:
    _hess_opts = dict(band_fraction=0.05, band_per_cell=64.0)
    _clip = 10.0     # trust region of one Newton direction, in median score gaps
    _tau = 1e-3      # Levenberg-Marquardt regularisation, relative to the mean Hessian diagonal
    _m0_per_target = 64    # first-iteration points per target
    _newton_below = 0.1   # TV below which (and with no empty cell) the full Newton step is used
    _topk = 6        # candidates per sample kept for the line search
    _ms_factor, _ms_min_size, _ms_tol, _ms_max_iter = 8, 64, 0.05, 30   # multiscale warm start
    """Semi-discrete optimal transport solver (Brenier potential), scikit-learn style.

    Parameters
    ----------
    source : {"uniform", "ball", "gaussian"}, default "uniform"
        The source μ: uniform on the cube [-1, 1]^d, uniform on the unit ball, or N(0, I).
    tol : float, default 1e-2
        Target total-variation error ½ Σ_i |μ(W_i) − ν_i|.
    max_iter : int, default 100
        Maximum number of Newton iterations (each one a pass over fresh source points).
    n_samples : int or None
        Source points in the first iteration (rounded up to a power of two). Default
        ``max(2**16, 64 N)``. It grows ×4 whenever the error estimate reaches its noise.
    max_samples : int, default 2**26
        Cap on the points per iteration. The noise of the TV estimate with M points is
        about 0.4 sqrt(N / M), so certifying ``tol`` needs M ≈ (0.8 / tol)² N.
    max_memory : int, default 256 MiB
        Bound in bytes on the score block held at once (the M × N score matrix is
        never formed; blocks of rows, and of columns when N is large, are scored in turn).
    qmc : bool, default True
        Scrambled Sobol points (lower variance) instead of pseudo-random points.
    init : {"linear", "zero"}, default "linear"
        Initial heights when ``fit`` gets no ``init_heights``: "linear" uses the Brenier
        potential of the affine map matching the source's and the targets' means and
        covariances, :math:`h_i = -\\tfrac12 (y_i - m)^T A^{-1} (y_i - m)`,
        :math:`A = \\Sigma_Y^{1/2} / \\sigma_\\mu`, which makes nearly all cells non-empty;
        "zero" starts from h = 0.
    device : str or torch.device, optional
        Default CUDA when available, else CPU.
    dtype : torch.float32 or torch.float64
        Dtype of scoring. Masses are always accumulated in float64.
    seed : int, default 0
        Seed of every random draw; a fit is reproducible and resumable.
    verbose : bool, default True
        tqdm progress bar with the current error.
    checkpoint : str or path, optional
        File written (atomically) every ``checkpoint_every`` iterations; ``fit(...,
        resume=True)`` continues from it and reaches the same result as an
        uninterrupted fit. :meth:`load` reads it as a (partly) fitted solver.
    method : {"stochastic", "exact2d"}, default "stochastic"
        ``"exact2d"`` (d = 2, uniform or ball source): the damped Newton method of
        [3]_ on exact power diagrams (:func:`otgen.transport.power2d.solve_power2d`;
        the ball is a 512-gon, area error 3e-5), so ``tol`` is met to round-off in
        about ten iterations, with no sampling noise; for pictures of 2-D latents.
    parallel : {None, "samples", "targets"}, default None
        Solve over the initialised default ``torch.distributed`` group (gloo on
        CPUs, nccl on GPUs; launch with ``torchrun``). Every rank calls ``fit`` with
        the same targets and settings and ends with the same heights; rank 0 writes
        the checkpoint; a bad input on any rank raises the same error on all ranks.

        ``"samples"`` (the default choice): every rank holds all targets and scores
        its own share of each iteration's points (blocks of 2^16 Sobol points dealt
        round-robin); counts and the other statistics are reduced exactly
        (:mod:`otgen.transport._dist`), so the result equals the single-process fit
        with the same seed. Communication per iteration is O(N), independent of the
        number of points.

        ``"targets"``: for targets whose scoring does not fit one device. Every
        rank scores all points against its slice of N/P targets and the per-point
        winners are all-gathered (O(M·k) communication per iteration, so use it
        only when "samples" cannot hold the targets). What is split is the scoring:
        its GEMM work and the device memory of the score blocks. Each rank still
        keeps a copy of all targets for the O(N) bookkeeping (edge lengths of the
        Hessian, reviving empty cells, the multiscale start).

    Attributes
    ----------
    targets_ : (N, d) tensor;  weights_ : (N,) float64;  heights_ : (N,) float64 with mean 0
    n_iter_ : int;  converged_ : bool;  history_ : list of dicts, one per iteration: ``tv``
    (estimated error), ``noise`` (its noise), ``n_samples``, ``accepted``, ``n_empty`` (cells
    no point reached), ``step`` (step length), ``time`` (seconds since ``fit`` was called,
    the warm start included); result_ : :class:`SemiDiscreteResult`.

    Notes
    -----
    Duplicate targets are rejected (``ValueError``): two equal targets have identical
    cells for equal heights and one empty cell otherwise, so their masses cannot be
    split; merge them and add their weights. Targets with zero weight are left out of
    the solve and given heights that make their cells empty on bounded sources
    (practically empty for the Gaussian).

    Examples
    --------
    >>> import numpy as np
    >>> Y = np.random.default_rng(0).normal(size=(200, 2))
    >>> ot = SemiDiscreteOT(tol=0.02, verbose=False).fit(Y)
    >>> idx = ot.assign(np.zeros((1, 2)))   # the cell containing the origin
    """

    def __init__(self, source="uniform", tol=1e-2, max_iter=100, *, n_samples=None,
                 max_samples=2**26, max_memory=256 << 20, qmc=True, init="multiscale",
                 device=None, dtype=torch.float32, seed=0, verbose=True,
                 checkpoint=None, checkpoint_every=5, parallel=None, method="stochastic"):
        self.source = source
        self.tol = tol
        self.max_iter = max_iter
        self.n_samples = n_samples
        self.max_samples = max_samples
        self.max_memory = max_memory
        self.qmc = qmc
        self.init = init
        self.device = device
        self.dtype = dtype
        self.seed = seed
        self.verbose = verbose
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.parallel = parallel
        self.method = method

    # ------------------------------------------------------------------ validation
    def _check_settings(self):
        check_source(self.source)
        check_positive_float(self.tol, "tol")
        check_positive_int(self.max_iter, "max_iter")
        if self.n_samples is not None:
            check_positive_int(self.n_samples, "n_samples", minimum=16)
        check_positive_int(self.max_samples, "max_samples", minimum=16)
        check_positive_int(self.max_memory, "max_memory", minimum=1 << 16)
        check_positive_int(self.checkpoint_every, "checkpoint_every")
        if self.method not in ("stochastic", "exact2d"):
            raise ValueError(f"method must be 'stochastic' or 'exact2d', got {self.method!r}")
        if self.parallel not in (None, "samples", "targets"):
            raise ValueError(f"parallel must be None, 'samples' or 'targets', got {self.parallel!r}")
        if self.init not in ("multiscale", "linear", "zero"):
            raise ValueError(f"init must be 'multiscale', 'linear' or 'zero', got {self.init!r}")
        check_dtype(self.dtype)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {type(self.seed).__name__}")
        return resolve_device(self.device)

    def _check_fitted(self):
        if not hasattr(self, "heights_"):
            raise RuntimeError("this SemiDiscreteOT instance is not fitted yet: call fit(Y) first")

    def _check_X(self, X, name="X"):
        self._check_fitted()
        X = as_tensor(X, name, ndim=2, dtype=self.targets_.dtype, device=self.targets_.device)
        if X.shape[1] != self.targets_.shape[1]:
            raise ValueError(f"{name} must have {self.targets_.shape[1]} columns (the targets' dimension), "
                             f"got shape {tuple(X.shape)}")
        return X

    @staticmethod
    def _check_targets(Y, dtype, device):
        Y = as_tensor(Y, "Y", ndim=2, dtype=dtype, device=device, min_rows=2)
        if Y.shape[1] < 1:
            raise ValueError(f"Y must have at least one column, got shape {tuple(Y.shape)}")
        uniq = torch.unique(Y, dim=0)
        if uniq.shape[0] < Y.shape[0]:
            raise ValueError(f"Y contains {Y.shape[0] - uniq.shape[0]} duplicate row(s); duplicate targets "
                             "cannot share mass in a power diagram: merge them (np.unique(Y, axis=0, "
                             "return_inverse=True)) and add their weights")
        return Y

    def _check_fit_inputs(self, Y, weights, init_heights, callback, device):
        Y = self._check_targets(Y, self.dtype, device)
        N = Y.shape[0]
        nu = check_weights(weights, N, "weights", device=device)
        if init_heights is not None:
            init_heights = as_tensor(init_heights, "init_heights", ndim=1, dtype=torch.float64, device=device)
            if init_heights.shape[0] != N:
                raise ValueError(f"init_heights must have length {N} (one per target), got {init_heights.shape[0]}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        return Y, nu, init_heights

    # ------------------------------------------------------------------ initial heights
    def _linear_init(self, Yc: torch.Tensor) -> torch.Tensor:
        """h_i = -½ (y_i - m)ᵀ A⁻¹ (y_i - m) with A = Σ^{1/2}/σ_μ (Yc already centred)."""
        Y64 = Yc.double()
        d = Y64.shape[1]
        cov = Y64.T @ Y64 / Y64.shape[0]                    # (d, d)
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(1e-6 * float(evals.max().clamp_min(1e-30)))
        inv_sqrt = (evecs * evals.rsqrt()) @ evecs.T         # Σ^{-1/2}
        sigma = source_std(self.source, d)
        h = -0.5 * sigma * ((Y64 @ inv_sqrt) * Y64).sum(1)
        return h - h.mean()

    def _multiscale_init(self, Yc: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        """Heights from a solved k-means-coarsened problem (see otgen.transport._multiscale)."""
        labels, C = kmeans(Yc, max(2, Yc.shape[0] // self._ms_factor), nu, seed=self.seed)
        W = torch.zeros(C.shape[0], dtype=torch.float64, device=Yc.device).index_add_(0, labels, nu)
        coarse = SemiDiscreteOT(self.source, tol=max(self.tol, self._ms_tol), max_iter=self._ms_max_iter,
                                max_samples=min(self.max_samples, 2**22), max_memory=self.max_memory, qmc=self.qmc,
                                init="multiscale", device=self._device, dtype=self.dtype, seed=self.seed + 1,
                                verbose=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            coarse.fit(C, W / W.sum())
        # barycentre and spread of each coarse cell in the source, from fresh points
        M = max(2**16, 64 * C.shape[0])
        X = SourceSampler(self.source, Yc.shape[1], _mix_seed(self.seed, 2**41), qmc=self.qmc, dtype=self.dtype,
                          device=self._device).draw(M)
        cell = coarse.assign(X)
        K = C.shape[0]
        cnt = torch.bincount(cell, minlength=K).double().clamp_min(1)[:, None]
        X64 = X.double()
        mean = torch.zeros(K, X.shape[1], dtype=torch.float64, device=X.device).index_add_(0, cell, X64) / cnt
        sq = torch.zeros(K, dtype=torch.float64, device=X.device).index_add_(0, cell, (X64 * X64).sum(1))
        var = (sq / cnt[:, 0] - (mean * mean).sum(1)).clamp_min(0) / X.shape[1]
        return refine_heights(Yc, nu, labels, C, coarse.heights_, mean, var)

    # ------------------------------------------------------------------ one pass
    def _evaluate(self, scorer, h, it, M, n_top, comm):
        """Score M fresh points (two independent randomisations of M/2) at heights h.

        Returns masses (N,) f64, the estimate's noise level, the top-2 scores and cells
        (n_top, 2) of the first ``n_top`` points (Hessian) with their global positions,
        their top-k (line search) for the first ``_SEARCH_ROWS`` points, and those points
        (reviving empty cells). In a sample-parallel solve block b of ``_DRAW_ROWS``
        points belongs to rank b mod world; the per-point outputs are this rank's rows,
        the masses are reduced over all ranks.
        """
        N = scorer.N
        k = min(self._topk, N)
        counts = torch.zeros(2, N, dtype=torch.float64, device=self._device)
        h32 = h.to(self.dtype)
        v2, i2, pos, vk, ik, xs = [], [], [], [], [], []
        n_search = min(n_top, _SEARCH_ROWS)
        offset = block = 0          # global position of the next point, index of the next block
        for r in range(2):
            sampler = SourceSampler(self.source, scorer.d, _mix_seed(self.seed, it, r), qmc=self.qmc,
                                    dtype=self.dtype, device=self._device)
            left = M // 2
            while left > 0:
                m = min(_DRAW_ROWS, left)
                if not comm.owns(block):
                    sampler.skip(m)
                else:
                    X = sampler.draw(m)                                   # (m, d)
                    if offset < n_search:
                        v, idx = scorer.topk(X, h32, k)                   # (m, k)
                        vk.append(v)
                        ik.append(idx)
                        xs.append(X)
                        v, idx = v[:, :2], idx[:, :2]
                    elif offset < n_top:
                        v, idx = scorer.topk(X, h32, 2)                   # (m, 2), block-wise: cheap
                    if offset < n_top:
                        v2.append(v)
                        i2.append(idx)
                        pos.append(torch.arange(offset, offset + m, device=self._device))
                        best = idx[:, 0]
                    else:
                        _, best = scorer.best(X, h32)
                    counts[r] += torch.bincount(best, minlength=N).double()
                offset += m
                left -= m
                block += 1
        masses_r = comm.sum_(counts) / (M // 2)                       # (2, N)
        # the TV estimate's noise: with replicates a, b, E ½Σ|noise_i| ≈ ¼ Σ|a_i - b_i|
        noise = 0.25 * float((masses_r[0] - masses_r[1]).abs().sum())

        def cat(parts, cols, dtype):   # a rank may own no block of a subset
            return torch.cat(parts) if parts else torch.empty((0,) + cols, dtype=dtype, device=self._device)

        i64 = torch.int64
        return (masses_r.mean(0), noise, (cat(v2, (2,), self.dtype), cat(i2, (2,), i64), cat(pos, (), i64)),
                (cat(vk, (k,), self.dtype), cat(ik, (k,), i64)), cat(xs, (scorer.d,), self.dtype))

    # ------------------------------------------------------------------ fit
    def fit(self, Y, weights=None, *, init_heights=None, resume=False, callback=None):
        """Solve for the heights h.

        Parameters
        ----------
        Y : array-like, shape (N, d)
            Targets (N >= 2, finite, distinct).
        weights : array-like, shape (N,), optional
            Target masses ν (non-negative, summing to 1). Default uniform.
        init_heights : array-like, shape (N,), optional
            Warm start (e.g. the heights of a previous, related fit).
        resume : bool, default False
            Continue from ``self.checkpoint`` if that file exists.
        callback : callable, optional
            ``callback(iteration, heights, info)`` after every iteration, with the
            current best heights (a copy) and the history entry.

        Returns
        -------
        self
        """
        t_fit = time.perf_counter()
        device = self._check_settings()
        self._device = device
        comm = make_comm(self.parallel, device)
        error = None
        try:
            Y, nu, init_heights = self._check_fit_inputs(Y, weights, init_heights, callback, device)
        except (ValueError, TypeError) as e:
            error = e
        comm.check_all(error)      # one rank's bad input fails every rank, nobody hangs
        N, d = Y.shape
        fingerprint = self._fingerprint(Y, nu)
        if comm.world > 1:
            mine = (fingerprint, {k: v for k, v in self._settings().items() if k != "verbose"})
            same = comm.broadcast_object(mine)
            comm.check_all(None if same == mine else ValueError(
                "every rank must call fit with the same targets, weights and settings; this rank's differ "
                f"from rank 0's (shape {tuple(Y.shape)} vs {same[0][0]})"))

        active = nu > 0
        idx_active = torch.nonzero(active).squeeze(1)
        if idx_active.numel() < 2:
            raise ValueError(f"weights must have at least 2 positive entries, got {idx_active.numel()}")
        Ya, nua = Y[idx_active], nu[idx_active] / nu[idx_active].sum()
        center = Ya.mean(0)
        Yc = Ya - center                                               # cells unchanged by centring
        Na = Ya.shape[0]
        if self.method == "exact2d":
            return self._fit_exact2d(Y, nu, Yc, nua, idx_active, init_heights)
        if self.parallel == "targets":
            comm.check_all(None if Na >= comm.world else ValueError(
                f"parallel='targets' needs at least one target per rank: {Na} targets, {comm.world} ranks"))
            scorer = ShardedScorer(Yc, int(self.max_memory), comm)
        else:
            scorer = Scorer(Yc, int(self.max_memory))

        M0 = self.n_samples if self.n_samples is not None else max(2**16, self._m0_per_target * Na)
        state = dict(it=0, M=min(_next_pow2(M0), _next_pow2(self.max_samples)), h=None, h_acc=None,
                     tv_acc=math.inf, noise_acc=math.inf, direction=None, rescue=None, alpha=1.0, rejects=0,
                     history=[], elapsed=0.0)
        if init_heights is not None:
            h0 = init_heights[idx_active]  # centring the targets leaves the cells (and h) unchanged
            state["h"] = h0 - h0.mean()
        elif self.init == "multiscale" and Na > self._ms_min_size:
            state["h"] = self._multiscale_init(Yc, nua)
        elif self.init in ("linear", "multiscale"):
            state["h"] = self._linear_init(Yc)
        else:
            state["h"] = torch.zeros(Na, dtype=torch.float64, device=device)
        state["h"] = comm.broadcast(state["h"])    # rank 0's start (identical anyway on like hardware)
        state["elapsed"] = time.perf_counter() - t_fit   # history times include the warm start
        if resume and self.checkpoint is not None:
            error = None
            if comm.rank == 0 and os.path.exists(self.checkpoint):
                try:
                    state = self._read_checkpoint(fingerprint, device)
                except ValueError as e:
                    error = e
            comm.check_all(error)
            state = comm.broadcast_object(state if comm.rank == 0 else None)
            state = _to_device(state, device)
        writer = self.checkpoint is not None and comm.rank == 0

        self.converged_ = False
        t_start = time.perf_counter() - state["elapsed"]
        bar = tqdm(total=self.max_iter, initial=state["it"], disable=not self.verbose or comm.rank != 0,
                   desc="semi-discrete OT", unit="it", leave=False)
        n_hess_cap = min(max(2**18, 256 * Na), 2**22)   # points whose top-k feed the Hessian and line search
        try:
            while state["it"] < self.max_iter:
                it, M = state["it"], state["M"]
                masses, noise, (v2, top2, pos), (vk, topk), Xs = self._evaluate(scorer, state["h"], it, M,
                                                                               min(M, n_hess_cap), comm)
                grad = masses - nua
                tv = 0.5 * float(grad.abs().sum())
                # a step is kept unless the error grew by more than the estimates' noise
                accepted = state["h_acc"] is None or tv <= state["tv_acc"] + 0.5 * (noise + state["noise_acc"])
                if accepted:
                    lap, gap_scale = estimate_laplacian(top2, v2[:, 0] - v2[:, 1], Yc, comm=comm,
                                                        pos=pos if comm.world > 1 else None, **self._hess_opts)
                    full = tv <= self._newton_below and not bool((masses == 0).any())
                    direction = lm_step(lap, grad, nua, self._tau, self._clip * gap_scale, diagonal=not full)
                    alpha = line_search(vk, topk, direction, nua, comm=comm)
                    # cells no sample reached get their own full step (no Hessian row to scale)
                    rescue = torch.zeros_like(direction)
                    empty = torch.nonzero(masses == 0).squeeze(1)
                    if empty.numel():
                        rescue[empty] = rescue_empty(Xs, vk[:, 0], Yc, state["h"].to(Yc.dtype),
                                                     empty, nua, comm=comm)
                    state.update(h_acc=state["h"].clone(), tv_acc=tv, noise_acc=noise, direction=direction,
                                 rescue=rescue, alpha=alpha, rejects=0)
                else:   # the predicted decrease did not happen: shorter step from the last accepted point
                    state["alpha"] *= 0.25
                    state["rescue"] *= 0.5
                    state["rejects"] += 1
                state["it"] = it + 1
                entry = dict(iter=it + 1, tv=tv, noise=noise, n_samples=M, accepted=accepted,
                             n_empty=int((masses == 0).sum()),
                             step=state["alpha"], time=time.perf_counter() - t_start)
                state["history"].append(entry)
                bar.update(1)
                bar.set_postfix(tv=f"{tv:.4f}", noise=f"{noise:.4f}", M=M)
                if callback is not None:
                    callback(it + 1, self._full_heights(state["h_acc"], idx_active, Y, N), entry)
                if accepted and tv <= self.tol and noise <= self.tol / 2:
                    self.converged_ = True
                    break
                # more points when the estimate is mostly noise (or steps keep failing)
                tv_a, noise_a = state["tv_acc"], state["noise_acc"]
                acc = [e["tv"] for e in state["history"] if e["accepted"] and e["n_samples"] == state["M"]]
                stalled = len(acc) >= 4 and acc[-1] > 0.85 * acc[-4]   # < 15% progress in 3 steps
                if state["M"] < self.max_samples and (tv_a <= 2.0 * noise_a or state["rejects"] >= 2 or stalled
                                                      or (tv_a <= self.tol and noise_a > self.tol / 2)):
                    state["M"] = min(state["M"] * 4, _next_pow2(self.max_samples))
                h_new = state["h_acc"] + state["alpha"] * state["direction"] + state["rescue"]
                state["h"] = comm.broadcast(h_new - h_new.mean())   # keeps the ranks bit-identical
                state["elapsed"] = time.perf_counter() - t_start
                if writer and state["it"] % self.checkpoint_every == 0:
                    self._write_checkpoint(state, fingerprint, Y, nu)
        finally:
            bar.close()
        state["elapsed"] = time.perf_counter() - t_start
        if writer:
            self._write_checkpoint(state, fingerprint, Y, nu)

        self._set_fitted(Y, nu, state["h_acc"], idx_active, state["tv_acc"], state["noise_acc"], state["it"],
                         state["history"])
        if not self.converged_ and comm.rank == 0:
            warnings.warn(f"SemiDiscreteOT stopped after max_iter={self.max_iter} iterations with estimated "
                          f"TV error {state['tv_acc']:.4g} (noise {state['noise_acc']:.2g}) above tol={self.tol}"
                          f" or not certified; raise max_iter or max_samples (now {self.max_samples}), "
                          "or loosen tol", ConvergenceWarning, stacklevel=2)
        return self

    def _set_fitted(self, Y, nu, h_active, idx_active, tv, noise, n_iter, history):
        self._scorer_cache = None
        self.targets_ = Y
        self.weights_ = nu
        self.heights_ = self._full_heights(h_active, idx_active, Y, Y.shape[0])
        self.n_iter_ = n_iter
        self.history_ = history
        self.result_ = SemiDiscreteResult(self.heights_, tv, noise, self.converged_, n_iter, history)

    def _fit_exact2d(self, Y, nu, Yc, nua, idx_active, init_heights):
        """d = 2: damped Newton on exact power diagrams (:func:`otgen.transport.power2d.solve_power2d`)."""
        from otgen.transport import power2d

        if Yc.shape[1] != 2 or self.source == "gaussian":
            raise ValueError(f"method='exact2d' needs 2-D targets and a 'uniform' or 'ball' source, got "
                             f"d = {Yc.shape[1]} and source={self.source!r}")
        D = power2d.square_domain() if self.source == "uniform" else power2d.disc_domain()
        h0 = None
        if init_heights is not None:
            h0 = init_heights[idx_active].cpu().numpy()
            if (power2d.cell_areas(Yc.double().cpu().numpy(), h0, D) <= 0).any():
                h0 = None       # the exact Newton method needs every cell non-empty at the start
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            res = power2d.solve_power2d(Yc.double().cpu().numpy(), nua.cpu().numpy(), D, tol=self.tol,
                                        max_iter=self.max_iter, init_heights=h0, verbose=self.verbose)
        history = [dict(iter=k, tv=e["error"], noise=0.0, n_samples=0, accepted=True, n_empty=0, step=e["step"],
                        time=e["seconds"]) for k, e in enumerate(res.history[1:], start=1)]
        self.converged_ = res.converged
        h = torch.from_numpy(res.heights).to(self._device)
        self._set_fitted(Y, nu, h, idx_active, res.error, 0.0, res.n_iter, history)
        if not res.converged:
            why = str(caught[-1].message) if caught else "it stopped early"
            warnings.warn(f"SemiDiscreteOT(method='exact2d'): {why}", ConvergenceWarning, stacklevel=3)
        return self

    def _full_heights(self, h_active, idx_active, Y, N):
        """Heights of all N targets: zero-weight targets get heights that empty their cells; mean 0."""
        if idx_active.numel() == N:
            h = h_active.clone()
        else:
            h = torch.empty(N, dtype=torch.float64, device=h_active.device)
            h[idx_active] = h_active
            inactive = torch.ones(N, dtype=torch.bool, device=h.device)
            inactive[idx_active] = False
            radius = {"uniform": math.sqrt(Y.shape[1]), "ball": 1.0,
                      "gaussian": 10.0 + math.sqrt(Y.shape[1])}[self.source]
            dist = torch.cdist(Y[inactive].double(), Y[idx_active].double())  # (N0, Na)
            h[inactive] = (h_active[None, :] - radius * dist).min(1).values - 1.0
        return h - h.mean()

    # ------------------------------------------------------------------ checkpoints
    @staticmethod
    def _fingerprint(Y, nu):
        return (tuple(Y.shape), float(Y.double().sum()), float((Y.double() ** 2).sum()), float((nu * nu).sum()))

    def _settings(self):
        return dict(source=self.source, tol=self.tol, max_iter=self.max_iter, n_samples=self.n_samples,
                    max_samples=self.max_samples, max_memory=self.max_memory, qmc=self.qmc, init=self.init,
                    dtype=str(self.dtype).replace("torch.", ""), seed=self.seed, verbose=self.verbose,
                    checkpoint_every=self.checkpoint_every, method=self.method)

    def _write_checkpoint(self, state, fingerprint, Y, nu):
        """Atomic write (temporary file, then rename): a killed run leaves the last good checkpoint."""
        payload = dict(version=_CHECKPOINT_VERSION, settings=self._settings(), fingerprint=fingerprint,
                       state=_to_device(dict(state), "cpu"), targets=Y.cpu(), weights=nu.cpu())
        tmp = f"{self.checkpoint}.tmp"
        torch.save(payload, tmp)
        os.replace(tmp, self.checkpoint)

    def _read_checkpoint(self, fingerprint, device):
        payload = torch.load(self.checkpoint, map_location=device, weights_only=False)
        if payload.get("version") != _CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint {self.checkpoint} has an unknown format version {payload.get('version')}")
        if payload["fingerprint"] != fingerprint:
            raise ValueError(f"checkpoint {self.checkpoint} was written for other targets/weights "
                             f"(shape {payload['fingerprint'][0]}); refusing to resume from it")
        return payload["state"]

    @classmethod
    def _payload_from_checkpoint(cls, ck):
        """A save()-style payload from a checkpoint: the last accepted heights of the fit."""
        state, Y, nu = ck["state"], ck["targets"], ck["weights"]
        if state["h_acc"] is None:
            raise ValueError("the checkpoint was written before the first iteration; it holds no heights yet")
        idx_active = torch.nonzero(nu > 0).squeeze(1)
        s = dict(ck["settings"])
        s["dtype"] = getattr(torch, s["dtype"])
        heights = cls(**s)._full_heights(state["h_acc"].cpu(), idx_active, Y, Y.shape[0])
        hist = state["history"]
        converged = bool(hist) and hist[-1]["accepted"] and hist[-1]["tv"] <= s["tol"] \
            and hist[-1]["noise"] <= s["tol"] / 2
        return dict(settings=ck["settings"], targets=Y, weights=nu, heights=heights, n_iter=state["it"],
                    converged=converged, history=hist)

    # ------------------------------------------------------------------ using the map
    def _scorer(self):
        if getattr(self, "_scorer_cache", None) is None:
            Yc = self.targets_ - self.targets_.mean(0)
            self._scorer_cache = (Scorer(Yc, int(self.max_memory)), self.targets_.mean(0))
        return self._scorer_cache

    def _scoring_heights(self):
        """Heights in the scoring dtype. The scorer holds centred targets y_i - c; the cells are the
        same because <x, y_i> + h_i = <x, y_i - c> + h_i + <x, c> and <x, c> is common to all i."""
        return self.heights_.to(self.targets_.dtype)

    def assign(self, X):
        """Index of the power cell containing each row of X (N×d targets, X of shape (M, d)) -> (M,) int64."""
        X = self._check_X(X)
        scorer, _ = self._scorer()
        return scorer.best(X, self._scoring_heights())[1]

    def transform(self, X):
        """The transport map ∇u_h(X) = Y[assign(X)], shape (M, d)."""
        return self.targets_[self.assign(X)]

    def potential(self, X):
        """Brenier potential u_h(X) = max_i <x, y_i> + h_i, shape (M,)."""
        X = self._check_X(X)
        scorer, c = self._scorer()
        return scorer.best(X, self._scoring_heights())[0].double() + (X @ c).double()

    def topk(self, X, k=2):
        """The k best cells of each row of X: scores <x, y_i> + h_i (M, k) and indices (M, k)."""
        X = self._check_X(X)
        k = check_positive_int(k, "k")
        scorer, c = self._scorer()
        vals, idx = scorer.topk(X, self._scoring_heights(), k)
        return vals + (X @ c)[:, None], idx

    def cell_masses(self, n_samples=2**20, seed=None):
        """QMC estimate of μ(W_i) for every cell with ``n_samples`` source points -> (N,) float64."""
        self._check_fitted()
        n_samples = check_positive_int(n_samples, "n_samples")
        scorer, _ = self._scorer()
        sampler = SourceSampler(self.source, self.targets_.shape[1], _mix_seed(self.seed if seed is None else seed,
                                                                               2**40), qmc=self.qmc,
                                dtype=self.targets_.dtype, device=self.targets_.device)
        counts = torch.zeros(self.targets_.shape[0], dtype=torch.float64, device=self.targets_.device)
        h = self._scoring_heights()
        left = n_samples
        while left > 0:
            m = min(_DRAW_ROWS, left)
            counts += torch.bincount(scorer.best(sampler.draw(m), h)[1], minlength=counts.shape[0]).double()
            left -= m
        return counts / n_samples

    def sample(self, n, seed=0):
        """Draw ``n`` source points and map them by ∇u_h: returns (points (n, d), cell indices (n,))."""
        self._check_fitted()
        n = check_positive_int(n, "n")
        X = SourceSampler(self.source, self.targets_.shape[1], seed, qmc=False, dtype=self.targets_.dtype,
                          device=self.targets_.device).draw(n)
        idx = self.assign(X)
        return self.targets_[idx], idx

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Write settings and fitted attributes to ``path`` (torch.save)."""
        self._check_fitted()
        torch.save(dict(version=_CHECKPOINT_VERSION, settings=self._settings(), targets=self.targets_.cpu(),
                        weights=self.weights_.cpu(), heights=self.heights_.cpu(), n_iter=self.n_iter_,
                        converged=self.converged_, history=self.history_), path)

    @classmethod
    def load(cls, path, device=None):
        """Load a solver written by :meth:`save`, or the last checkpoint of a (possibly distributed,
        possibly unfinished) fit, onto ``device`` (default CUDA when available)."""
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(payload, dict) and "state" in payload and "targets" in payload:
            payload = cls._payload_from_checkpoint(payload)
        if not isinstance(payload, dict) or "heights" not in payload:
            raise ValueError(f"{path} is not a SemiDiscreteOT file written by save() or a checkpoint of fit()")
        s = dict(payload["settings"])
        s["dtype"] = getattr(torch, s["dtype"])
        ot = cls(**s, device=device)
        dev = resolve_device(device)
        ot._device = dev
        ot.targets_ = payload["targets"].to(dev)
        ot.weights_ = payload["weights"].to(dev)
        ot.heights_ = payload["heights"].to(dev)
        ot.n_iter_ = payload["n_iter"]
        ot.converged_ = payload["converged"]
        ot.history_ = payload["history"]
        last = ot.history_[-1] if ot.history_ else dict(tv=math.nan, noise=math.nan)
        ot.result_ = SemiDiscreteResult(ot.heights_, last["tv"], last["noise"], ot.converged_, ot.n_iter_,
                                        ot.history_)
        return ot
