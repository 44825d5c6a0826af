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

The algorithm
-------------
A stochastic damped Newton method (see :mod:`otgen.transport._newton` and [3]_).
A multiscale warm start (k-means-coarsened targets, [5]_) first places each cluster's
mass; then every iteration, :meth:`SemiDiscreteOT.step`, does:

1. **Evaluate** the cell masses at the current heights h from M fresh scrambled-Sobol
   source points, drawn as two independent halves (one chunked GEMM with h folded in,
   then a row-wise argmax). The TV error ½ Σ |μ(W_i) − ν_i| is estimated from their
   mean, its noise from their difference.
2. **Accept or reject** h: it is kept unless its error grew, over the last accepted
   heights', by more than the two estimates' noise. Accepted heights that are certified
   (see below) end the fit: no step is prepared from them.
3. On acceptance, a **Newton direction**: the Hessian (the Laplacian of the power
   diagram) is estimated from the same points' two best cells. Far from the solution
   (TV > 0.1, or while some cell is dead) only its diagonal is used — every cell
   corrects its own mass; near it the full Levenberg–Marquardt system is solved by
   conjugate gradients. A **line search** re-scores the same points' k best cells
   (common random numbers) to choose the step length, and dead cells are **revived** by
   their own height increase. When no cell is dead and the Hessian's facets fall into groups
   joined only by facets hundreds of times weaker (tightly clustered targets), the step also shifts
   each group's heights as a whole by a Newton step on the groups' total masses (the
   slow mode no cell-level step moves; :meth:`SemiDiscreteOT._coarse_step`). A cell is
   *dead* when it gets no point although it should
   get ν_i M ≥ 5 of them: a cell expected to get fewer is often empty at the solution too
   (weights spread over orders of magnitude), so only dead cells block the full step and
   count against a step length. On rejection, the step from the last
   accepted heights is shortened (×1/4, the revival ×1/2).
4. The **sample-growth rule**: M grows ×4 when the error estimate reaches its own noise,
   when steps keep failing, or when progress stalls, so that the reported error is
   never mostly noise.
5. The **next heights** are the last accepted ones plus the step, shifted to mean zero.

``converged_`` means the TV error is below ``tol`` *and* the estimate's noise (from the
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
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from otgen._base import (FILE_FORMAT, BaseEstimator, encode_state, atomic_torch_save, check_seed, like_input,
                         spawn_seed)
from otgen._validation import (ConvergenceWarning, as_tensor, check_dtype, check_positive_float,
                               check_positive_int, check_weights, resolve_device)
from otgen.transport._dist import Local, ShardedScorer, make_comm
from otgen.transport._frame import (Frame, check_cast, close_pairs, fingerprint, group_labels, make_frame, merge,
                                    merge_threshold, split_group)
from otgen.transport._multiscale import kmeans, refine_heights
from otgen.transport._newton import (Laplacian, check_step, dead_cells, estimate_laplacian, group_laplacian,
                                    line_search, lm_step, rescue_empty, strong_groups)
from otgen.transport._scoring import Scorer, candidate_best, score_margin
from otgen.transport.power2d import cell_areas, solve_power2d
from otgen.transport.sources import CallableSource, SourceSampler, as_source

# ----------------------------------------------------------------------------- tuning constants
# Points per pass
_DRAW_ROWS = 1 << 16            # source points drawn and scored at a time (also the block dealt to a rank)
_SEARCH_ROWS = 1 << 18          # points whose top-k feed the line search and the revival of empty cells
_M0_MIN = 1 << 16               # least first-iteration points: below it the TV estimate is mostly noise
_M0_PER_TARGET = 64             # first-iteration points per target: ~64 per cell resolve its mass to ~12 %
_HESSIAN_POINTS_MIN = 1 << 18   # least points whose top-2 estimate the Hessian (enough facet samples at small N)
_HESSIAN_POINTS_PER_TARGET = 256  # Hessian points per target: every cell's facets get samples in the band
_HESSIAN_POINTS_MAX = 1 << 22   # cap on the Hessian points: more no longer improves the step, only costs
# The Newton step
_HESSIAN_BAND_FRACTION = 0.5    # share of the Hessian points inside the finite-difference band of the facets:
                                # at ~100 points per cell a 5 % band left ~5 samples per cell and a noisy step
                                # (10000 x 16 to TV 0.02: 10 iterations, 7 with 50 %; benchmarks/bench_schedule.py)
_HESSIAN_BAND_PER_CELL = 64.0   # ... but at most this many per cell: a narrower band, less bias, at large M
_TOPK = 6                       # candidate cells kept per point for the line search (a step rarely moves further)
_ALPHAS = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125)   # step lengths the line search compares
_DIAGONAL_ALPHAS = _ALPHAS      # ... for the diagonal step (a Jacobi step: beyond 1/2 it may amplify the
                                # highest-frequency error mode of the graph Laplacian)
_CHECK_POINTS_MIN = 1 << 16     # line-search points rescored exactly to check the step (see check_step) ...
_CHECK_POINTS_PER_TARGET = 8    # ... or 8 per target when more: enough that the TV ranks step lengths
_CHECK_HALVINGS = 3             # the checked step is at least 1/8 of the line search's (then rejection takes over)
_STEP_CLIP = 10.0               # trust region of one Newton direction, in median score gaps (cell widths)
_LM_TAU = 1e-3                  # Levenberg-Marquardt regularisation, relative to the mean Hessian diagonal
_COARSE_THETA = 3e-3            # facets 300x weaker than both cells' strongest join two groups weakly (set on the
                                # tight 8-D clusters: <= 0.0022 between, >= 0.014 within: diagnose_tight_clusters.py)
_COARSE_MIN_GROUPS = 2          # coarse step when the graph falls into this many groups of 2+ cells (inf: never)
_COARSE_MIN_CG = 200            # least CG iterations of the groups' system (lm_step's default)
_COARSE_BAND_PER_GROUP = 64.0   # points per group in the band of the coarse Hessian (as _HESSIAN_BAND_PER_CELL)
_COARSE_BAND_FRACTION = 0.5     # ... but at most half the points: the group scores are exact, a wide band is unbiased
                                # enough for a step whose length is searched exactly anyway
_NEWTON_BELOW = 0.1             # TV below which (and with few empty cells) the full Newton step is used
_NEWTON_EMPTY_SHARE = 0.0       # share of cells that may be empty for the full step (0: none; empty cells are
                                # singleton components of the sampled graph, moved by the revival alone)
# Accepting a step
_ACCEPT_NOISE = 0.5             # a step is kept unless TV grew by more than the mean noise of the two estimates
_REJECT_SHRINK = 0.25           # a rejected step is retried from the last accepted heights 4x shorter
_RESCUE_SHRINK = 0.5            # ... and the revival of empty cells + coarse step 2x smaller (searched apart)
# Growing the sample
_SAMPLE_GROWTH = 4              # M grows x4: halves the noise of the TV estimate (noise ~ 1/sqrt(M))
_NOISE_RATIO = 2.0              # grow when the TV estimate is within 2x its own noise (mostly noise)
_MAX_REJECTS = 2                # grow after 2 rejected steps in a row (the noise hides the descent)
_STALL_WINDOW = 4               # grow when the accepted TV at this M ...
_STALL_RATIO = 0.85             # ... fell by less than 15 % over the last 3 steps (_STALL_WINDOW points)
_CERTIFY_NOISE = 0.5            # converged: TV <= tol with noise <= tol / 2, so TV is not mostly noise
# Warm starts
_COV_FLOOR = 1e-6               # eigenvalues of the targets' covariance floored at this share of the largest
_MS_FACTOR = 8                  # multiscale start: about N / 8 k-means clusters per level
_MS_MIN_SIZE = 64               # below 64 targets the linear start is as good and cheaper
_MS_TOL = 0.05                  # the coarse problem is solved to TV 0.05: a start, not an answer
_MS_MAX_ITER = 30               # iterations of the coarse solve
_MS_MAX_SAMPLES = 1 << 22       # points per iteration of the coarse solve
_MS_PROBE_MIN = 1 << 16         # least points that measure the barycentre and spread of each coarse cell
_MS_PROBE_PER_CELL = 64         # ... and per coarse cell
# Targets of zero weight
_EMPTY_MARGIN = 1.0             # score margin by which a zero-weight cell loses everywhere on the source
# Splitting merged near-duplicates back
_SPLIT_POINTS_MAX = 1 << 22     # points drawn to split merged cells (the last iteration's M, at most this)
# Resuming
_RESUME_SETTINGS = ("source", "dtype", "method", "seed", "qmc")   # change the problem or its random draws
_RESTART_HINT = ("start afresh: delete the file, or fit with resume=False (otgen fit-ot: --restart), or resume with "
                 "the checkpoint's targets and settings")


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


@dataclass
class SolverState:
    """Where the stochastic Newton iteration stands; all a checkpoint needs to resume.

    Heights are those of the targets of positive weight (``Na`` of them), float64.
    """

    n_samples: int                            # M: source points of the next evaluation
    heights: torch.Tensor                     # (Na,) heights of the next evaluation, mean zero
    it: int = 0                               # iterations done
    accepted_heights: torch.Tensor | None = None   # (Na,) last accepted heights: the answer so far
    tv: float = math.inf                      # estimated TV error at accepted_heights
    noise: float = math.inf                   # that estimate's noise
    direction: torch.Tensor | None = None     # (Na,) Newton direction from accepted_heights
    rescue: torch.Tensor | None = None        # (Na,) the revival of empty cells + the coarse step (not line-searched)
    alpha: float = 1.0                        # step length along direction
    rejects: int = 0                          # rejected steps since the last accepted one
    coarse_groups: int = 0                    # strong groups the last step shifted as wholes (0: no coarse step)
    recent_tv: list = field(default_factory=list)   # accepted TV errors at the current n_samples (stall rule)
    last: dict | None = None                  # the last evaluation (one history_ entry without iter, time)
    history: list = field(default_factory=list)     # one dict per iteration (kept by fit)
    elapsed: float = 0.0                      # seconds spent, warm start included

    def to(self, device) -> "SolverState":
        """This state with its tensors on ``device``."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})


@dataclass(frozen=True)
class _Problem:
    """The problem the iterations solve: centred targets of positive weight and how to score them."""

    targets: torch.Tensor       # (Na, d) targets of positive weight, centred (the cells do not change)
    weights: torch.Tensor       # (Na,) their masses, summing to 1, float64
    scorer: object              # Scorer or ShardedScorer of the targets
    comm: Local                 # the communicator (Local for one process)
    device: torch.device
    hessian_points: int         # points of each pass whose top-2 estimate the Hessian


@dataclass(frozen=True)
class _Evaluation:
    """What one pass over fresh source points measured (this rank's rows of the per-point outputs)."""

    masses: torch.Tensor        # (Na,) float64, over all ranks
    noise: float                # noise of the TV estimate
    top2_vals: torch.Tensor     # (m2, 2) best two scores of the Hessian points
    top2_idx: torch.Tensor      # (m2, 2) their cells
    pos: torch.Tensor           # (m2,) their global positions (a distributed Hessian in one order)
    topk_vals: torch.Tensor     # (mk, k) best k scores of the line-search points
    topk_idx: torch.Tensor      # (mk, k) their cells
    points: torch.Tensor        # (mk, d) the line-search points (reviving empty cells)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(math.ceil(math.log2(max(1, n)))))


def _full_heights(h_active, idx_active, Y, source):
    """Heights of all N targets, mean zero: zero-weight targets get heights that empty their cells.

    A zero-weight target y_k loses to every active y_i on the source when h_k is below
    h_i − R |y_k − y_i| for all i, R the source's radius about the origin
    (:meth:`otgen.transport.sources.Source.radius`: √d for the cubes, 1 for the ball,
    10 + √d for the Gaussian, beyond which it has no practical mass).
    """
    N = Y.shape[0]
    if idx_active.numel() == N:
        h = h_active.clone()
    else:
        h = torch.empty(N, dtype=torch.float64, device=h_active.device)
        h[idx_active] = h_active
        inactive = torch.ones(N, dtype=torch.bool, device=h.device)
        inactive[idx_active] = False
        d = Y.shape[1]
        radius = source.radius(d)
        dist = torch.cdist(Y[inactive].double(), Y[idx_active].double())  # (N0, Na)
        h[inactive] = (h_active[None, :] - radius * dist).min(1).values - _EMPTY_MARGIN
    return h - h.mean()


def _torch_dtype(dtype) -> torch.dtype:
    """``torch.float32`` / ``torch.float64`` from a torch dtype, a numpy dtype or a name ("float32", "torch.float64")."""
    if isinstance(dtype, torch.dtype):
        return check_dtype(dtype)
    try:
        name = dtype.replace("torch.", "") if isinstance(dtype, str) else np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in ("float32", "float64"):
        raise TypeError(f"dtype must be float32 or float64 (a torch dtype, a numpy dtype or its name), got {dtype!r}")
    return getattr(torch, name)


def _difference(key: str, mine, theirs) -> str:
    """One line of a resume refusal: what differs between this fit and the checkpoint."""
    if key == "data":
        return (f"the targets or weights differ (SHA-256 of their bytes {str(mine)[:12]}... here, "
                f"{str(theirs)[:12]}... in the checkpoint)")
    return f"{key}={mine!r} here, {key}={theirs!r} in the checkpoint"


@dataclass(frozen=True)
class _Setup:
    """The user's problem in the solver's frame: normalised targets, their weights and the merged groups."""

    frame: Frame                # centre, scale and normalised targets Z (N, d) float64
    active: torch.Tensor        # (Na,) indices of the targets of positive weight
    weights: torch.Tensor       # (Na,) their masses, summing to 1, float64
    labels: torch.Tensor        # (Na,) merged group of every active target, 0..G-1
    merged: torch.Tensor        # (G, d) float64 merged targets (the mass-weighted mean of each group)
    merged_weights: torch.Tensor  # (G,) float64 summed masses

    @property
    def grouped(self) -> bool:
        """Whether some targets were merged (near-duplicates in the working dtype)."""
        return self.merged.shape[0] < self.labels.shape[0]


def _split_heights(setup: _Setup, gm, scorer, sampler, M) -> torch.Tensor:
    """Normalised heights (Na,) of the active targets from the merged heights gm (G,): each merged
    cell split back among its members on the source points of M that fall in it (float64)."""
    g = gm[setup.labels].clone()
    sizes = torch.bincount(setup.labels)
    multi = torch.nonzero(sizes > 1).squeeze(1)
    if multi.numel() == 0:
        return g
    in_group = sizes > 1
    hg = gm.to(sampler.dtype)
    xs, cells = [], []
    left = M
    while left > 0:
        X = sampler.draw(min(_DRAW_ROWS, left))
        best = scorer.best(X, hg)[1]
        keep = in_group[best]
        xs.append(X[keep].double())
        cells.append(best[keep])
        left -= X.shape[0]
    X, cell = torch.cat(xs), torch.cat(cells)
    for grp in multi.tolist():
        members = torch.nonzero(setup.labels == grp).squeeze(1)
        D = setup.frame.Z[setup.active[members]] - setup.merged[grp]
        g[members] = gm[grp] + split_group(X[cell == grp], D, setup.weights[members])
    return g


class SemiDiscreteOT(BaseEstimator):
    """Semi-discrete optimal transport solver (Brenier potential), scikit-learn style.

    Parameters
    ----------
    source : str or callable, default "uniform"
        The source μ (:mod:`otgen.transport.sources`): ``"uniform"`` on the cube
        [-1, 1]^d, ``"ball"`` (``"unif_ball"``) on the unit ball, ``"gaussian"``
        (``"normal"``) N(0, I), or POT's ``"unif"`` (``"unif_cube"``) on the cube
        [0, 1]^d -- a distinct measure from ``"uniform"``. Or, as in POT, a sampler
        ``f(n) -> (n, d)`` array: its own pseudo-random points (``seed`` and ``qmc`` do not
        apply; reproducible only when ``f`` is seeded), no exact 2-D solve, no
        ``checkpoint``, no ``parallel``, and no :meth:`save` (keep :meth:`to_pot`).
    tol : float, default 1e-2
        Target total-variation error ½ Σ_i |μ(W_i) − ν_i|.
    max_iter : int, default 100
        Maximum number of Newton iterations (each one a pass over fresh source points).
    n_samples : int or None, default None
        Source points in the first iteration (rounded up to a power of two). None means
        ``max(2**16, 64 N)``. It grows ×4 whenever the error estimate reaches its noise.
    max_samples : int, default 2**26
        Cap on the points per iteration. The noise of the TV estimate with M points is
        about 0.4 sqrt(N / M), so certifying ``tol`` needs M ≈ (0.8 / tol)² N.
    max_memory : int, default 256 << 20 (256 MiB)
        Bound in bytes on the score block held at once (the M × N score matrix is
        never formed; blocks of rows, and of columns when N is large, are scored in turn).
    qmc : bool, default True
        Scrambled Sobol points (lower variance) instead of pseudo-random points.
    init : {"multiscale", "linear", "zero"}, default "multiscale"
        Initial heights when ``fit`` gets no ``init_heights``. "multiscale" (above 64
        targets; "linear" below) solves a k-means-coarsened problem (about N / 8
        clusters, recursively, to TV 0.05) and refines its potential inside each coarse
        cell ([2]_, :mod:`otgen.transport._multiscale`), which places each cluster's mass
        before the fine solve. "linear" uses the Brenier potential of the affine map
        matching the source's and the targets' means and covariances,
        :math:`h_i = -\\tfrac12 (y_i - m)^T A^{-1} (y_i - m) - \\langle c, y_i - m \\rangle`,
        c the source's mean,
        :math:`A = \\Sigma_Y^{1/2} / \\sigma_\\mu`, which makes nearly all cells non-empty;
        "zero" starts from h = 0.
    device : str or torch.device, optional
        Default CUDA when available, else CPU.
    dtype : torch.float32 or torch.float64, default torch.float32
        Torch dtype of the targets and of scoring (also accepted: ``np.float32``,
        ``"float64"``, ...). Masses are always accumulated in float64.
    seed : int, default 0
        Seed of every random draw (independent streams are spawned from it); a fit is
        reproducible and resumable.
    verbose : bool, default False
        tqdm progress bar with the current error.
    checkpoint : str or path, optional
        File written (atomically) every ``checkpoint_every`` iterations and at the end;
        ``fit(..., resume=True)`` continues from it and reaches the same result as an
        uninterrupted fit. :meth:`load` reads it as a (partly) fitted solver.
    checkpoint_every : int, default 5
        Iterations between two checkpoint writes.
    parallel : {None, "samples", "targets"}, default None
        None solves in this process. Otherwise solve over the initialised default
        ``torch.distributed`` group (gloo on CPUs, nccl on GPUs; launch with
        ``torchrun``). Every rank calls ``fit`` with the same targets and settings and
        ends with the same heights; rank 0 writes the checkpoint; a bad input on any
        rank raises the same error on all ranks.

        ``"samples"`` (the usual choice): every rank holds all targets and scores
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
    method : {"auto", "stochastic", "exact2d"}, default "auto"
        ``"stochastic"``: the sampled damped Newton method of the module docstring, any
        d and source. ``"exact2d"`` (d = 2, a cube or ball source): the damped Newton
        method of [1]_ on exact power diagrams (:func:`otgen.transport.power2d.solve_power2d`;
        the ball is a 512-gon, area error 3e-5), so ``tol`` is met to round-off in
        about ten iterations, with no sampling noise (no checkpoints: it is quick).
        ``"auto"``: ``"exact2d"`` for 2-D targets on a cube or ball source in one
        process (``parallel=None``), ``"stochastic"`` otherwise (Gaussian, callable).

    Attributes
    ----------
    targets_ : (N, d) tensor of ``dtype``
    weights_ : (N,) float64 tensor
    heights_ : (N,) float64 tensor with mean 0
    n_iter_ : int
    converged_ : bool
    history_ : list of dicts, one per iteration: ``iter``, ``tv`` (estimated error),
        ``noise`` (its noise), ``n_samples``, ``accepted``, ``n_empty`` (cells no point
        reached), ``step`` (step length), ``coarse_groups`` (the strong groups of cells that
        step also shifts as wholes, 0 for none: clustered targets), ``time`` (seconds since
        ``fit`` was called, the warm start included)
    result_ : :class:`SemiDiscreteResult`
    source_ : :class:`~otgen.transport.sources.Source`
        The measure ``source`` names (aliases resolved; a callable wrapped in a
        :class:`~otgen.transport.sources.CallableSource`): what every draw and support
        test of the solver, the detector and the generators reads.
    center_ : (d,) float64 tensor
        Centre c of the solve's frame (the mean of the targets of positive weight).
    scale_ : float
        Scale s of the frame (their root-mean-square distance to c): the solve used the
        targets (y - c) / s and heights ``heights_ / scale_``.

    Notes
    -----
    The solve runs in a centred, scaled frame computed in float64 *before* the cast to
    ``dtype`` (:mod:`otgen.transport._frame`): an offset or scale of the data changes
    nothing but the stored ``targets_``, and storing them in ``dtype`` raises an error
    when it would make them infinite or equal, and warns when it rounds them by more
    than 1e-4 of their spread.

    Duplicate targets (equal in float64) are rejected (``ValueError``): two equal targets
    have identical cells for equal heights and one empty cell otherwise, so their masses
    cannot be split; merge them and add their weights. *Near*-duplicates, targets that
    coincide within the working precision, make the problem stiff (the facet between
    them is not resolved by ``dtype`` scores); they are merged (masses summed), solved
    as one target, and their cell is split back among them in float64 on source points
    (each member's mass matches its weight up to one point of the cell). The fitted map
    then scores in float64. Targets with zero weight are left out of the solve and
    given heights that make their cells empty on bounded sources (practically empty
    for the Gaussian).

    Methods taking points (``assign``, ``transform``, ``potential``, ``topk``) return
    torch tensors for torch input and numpy arrays for numpy input.

    References
    ----------
    .. [1] J. Kitagawa, Q. Mérigot, B. Thibert, "Convergence of a Newton algorithm for
       semi-discrete optimal transport", J. Eur. Math. Soc. 21 (2019).
    .. [2] Q. Mérigot, "A multiscale approach to optimal transport", Computer Graphics
       Forum 30 (2011).

    Examples
    --------
    >>> import numpy as np
    >>> Y = np.random.default_rng(0).normal(size=(200, 2))
    >>> ot = SemiDiscreteOT(tol=0.02).fit(Y)
    >>> idx = ot.assign(np.zeros((1, 2)))   # the cell containing the origin
    """

    _SAVE_VERSION = 1
    _FITTED_ATTR = "heights_"

    def __init__(self, source="uniform", tol=1e-2, max_iter=100, *, n_samples=None,
                 max_samples=2**26, max_memory=256 << 20, qmc=True, init="multiscale",
                 device=None, dtype=torch.float32, seed=0, verbose=False,
                 checkpoint=None, checkpoint_every=5, parallel=None, method="auto"):
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
    def _check_settings(self) -> torch.device:
        self.source_ = source = as_source(self.source)    # canonical once: every draw and test reads source_
        if isinstance(source, CallableSource) and self.parallel is not None:
            raise ValueError("parallel needs a named source: the ranks must share one stream of source points, "
                             "which a callable sampler cannot split")
        if isinstance(source, CallableSource) and self.checkpoint is not None:
            raise ValueError("checkpoint needs a named source: a checkpoint file holds no code, so a callable "
                             "sampler could not be checked on resume")
        check_positive_float(self.tol, "tol")
        check_positive_int(self.max_iter, "max_iter")
        if self.n_samples is not None:
            check_positive_int(self.n_samples, "n_samples", minimum=16)
        check_positive_int(self.max_samples, "max_samples", minimum=16)
        check_positive_int(self.max_memory, "max_memory", minimum=1 << 16)
        check_positive_int(self.checkpoint_every, "checkpoint_every")
        if self.method not in ("auto", "stochastic", "exact2d"):
            raise ValueError(f"method must be 'auto', 'stochastic' or 'exact2d', got {self.method!r}")
        if self.parallel not in (None, "samples", "targets"):
            raise ValueError(f"parallel must be None, 'samples' or 'targets', got {self.parallel!r}")
        if self.init not in ("multiscale", "linear", "zero"):
            raise ValueError(f"init must be 'multiscale', 'linear' or 'zero', got {self.init!r}")
        _torch_dtype(self.dtype)
        check_seed(self.seed)
        return resolve_device(self.device)

    def _check_X(self, X, name="X"):
        self._check_fitted()
        X = as_tensor(X, name, ndim=2, dtype=self.targets_.dtype, device=self.targets_.device)
        if X.shape[1] != self.targets_.shape[1]:
            raise ValueError(f"{name} must have {self.targets_.shape[1]} columns (the targets' dimension), "
                             f"got shape {tuple(X.shape)}")
        return X

    @staticmethod
    def _check_targets(Y, device):
        """The targets in float64, as given (the cast to ``dtype`` comes after centring and scaling)."""
        Y = as_tensor(Y, "Y", ndim=2, dtype=torch.float64, device=device, min_rows=2)
        if Y.shape[1] < 1:
            raise ValueError(f"Y must have at least one column, got shape {tuple(Y.shape)}")
        uniq = torch.unique(Y, dim=0)
        if uniq.shape[0] < Y.shape[0]:
            raise ValueError(f"Y contains {Y.shape[0] - uniq.shape[0]} duplicate row(s) (equal in float64); "
                             "duplicate targets cannot share mass in a power diagram: merge them (np.unique(Y, "
                             "axis=0, return_inverse=True)) and add their weights")
        return Y

    def _check_fit_inputs(self, Y, weights, init_heights, callback, device):
        Y = self._check_targets(Y, device)
        N = Y.shape[0]
        nu = check_weights(weights, N, "weights", device=device)
        if init_heights is not None:
            init_heights = as_tensor(init_heights, "init_heights", ndim=1, dtype=torch.float64, device=device)
            if init_heights.shape[0] != N:
                raise ValueError(f"init_heights must have length {N} (one per target), got {init_heights.shape[0]}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        if int((nu > 0).sum()) < 2:
            raise ValueError(f"weights must have at least 2 positive entries, got {int((nu > 0).sum())}")
        return Y, nu, init_heights

    def _check_on_all_ranks(self, comm, Y, weights, init_heights, callback, device):
        """Validated inputs; a bad input or differing settings on any rank fail every rank alike."""
        error = None
        try:
            Y, nu, init_heights = self._check_fit_inputs(Y, weights, init_heights, callback, device)
        except (ValueError, TypeError) as e:
            error = e
        comm.check_all(error)      # one rank's bad input fails every rank, nobody hangs
        if comm.world > 1:
            mine = (fingerprint(Y, nu), {k: v for k, v in self._saved_params().items()
                                          if k not in ("verbose", "checkpoint")})
            same = comm.broadcast_object(mine)
            comm.check_all(None if same == mine else ValueError(
                "every rank must call fit with the same targets, weights and settings; this rank's differ "
                f"from rank 0's (shape {tuple(Y.shape)})"))
        return Y, nu, init_heights

    # ------------------------------------------------------------------ initial heights
    def _linear_init(self, Yc: torch.Tensor) -> torch.Tensor:
        """h_i = -½ (y_i - m)ᵀ A⁻¹ (y_i - m) - ⟨c, y_i - m⟩ with A = Σ^{1/2}/σ_μ, c the source's mean (Yc
        already centred): the cells of the affine map x ↦ m + A (x - c)."""
        Y64 = Yc.double()
        d = Y64.shape[1]
        cov = Y64.T @ Y64 / Y64.shape[0]                    # (d, d)
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(_COV_FLOOR * float(evals.max().clamp_min(1e-30)))
        inv_sqrt = (evecs * evals.rsqrt()) @ evecs.T         # Σ^{-1/2}
        sigma = self.source_.std(d)
        h = -0.5 * sigma * ((Y64 @ inv_sqrt) * Y64).sum(1) - Y64 @ self.source_.mean(d).to(Y64.device)
        return h - h.mean()

    def _multiscale_init(self, Yc: torch.Tensor, nu: torch.Tensor, device) -> torch.Tensor:
        """Heights from a solved k-means-coarsened problem (see otgen.transport._multiscale)."""
        labels, C = kmeans(Yc, max(2, Yc.shape[0] // _MS_FACTOR), nu, seed=spawn_seed(self.seed, "kmeans"))
        W = torch.zeros(C.shape[0], dtype=torch.float64, device=Yc.device).index_add_(0, labels, nu)
        coarse = SemiDiscreteOT(self.source_, tol=max(self.tol, _MS_TOL), max_iter=_MS_MAX_ITER,
                                max_samples=min(self.max_samples, _MS_MAX_SAMPLES), max_memory=self.max_memory,
                                qmc=self.qmc, init="multiscale", device=device, dtype=self._dtype,
                                seed=spawn_seed(self.seed, "coarse"), method="stochastic")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            coarse.fit(C, W / W.sum())
        # barycentre and spread of each coarse cell in the source, from fresh points
        K = C.shape[0]
        X = SourceSampler(self.source_, Yc.shape[1], spawn_seed(self.seed, "coarse-cells"), qmc=self.qmc,
                          dtype=self._dtype, device=device).draw(max(_MS_PROBE_MIN, _MS_PROBE_PER_CELL * K))
        cell = coarse.assign(X)
        cnt = torch.bincount(cell, minlength=K).double().clamp_min(1)[:, None]
        X64 = X.double()
        mean = torch.zeros(K, X.shape[1], dtype=torch.float64, device=X.device).index_add_(0, cell, X64) / cnt
        sq = torch.zeros(K, dtype=torch.float64, device=X.device).index_add_(0, cell, (X64 * X64).sum(1))
        var = (sq / cnt[:, 0] - (mean * mean).sum(1)).clamp_min(0) / X.shape[1]
        return refine_heights(Yc, nu, labels, C, coarse.heights_, mean, var)

    def _warm_start(self, problem: _Problem, init_heights) -> torch.Tensor:
        """Mean-zero heights of the active targets to start from (the same on every rank)."""
        Yc, nua, device = problem.targets, problem.weights, problem.device
        if init_heights is not None:
            h = init_heights - init_heights.mean()   # centring the targets leaves the cells (and h) unchanged
        elif self.init == "multiscale" and Yc.shape[0] > _MS_MIN_SIZE:
            h = self._multiscale_init(Yc, nua, device)
        elif self.init in ("linear", "multiscale"):
            h = self._linear_init(Yc)
        else:
            h = torch.zeros(Yc.shape[0], dtype=torch.float64, device=device)
        return problem.comm.broadcast(h)    # rank 0's start (identical anyway on like hardware)

    # ------------------------------------------------------------------ one iteration
    def _evaluate(self, problem: _Problem, h, it: int, M: int) -> _Evaluation:
        """Score M fresh points (two independent randomisations of M/2) at heights h.

        Returns the masses (N,) f64, the estimate's noise level, the top-2 scores and cells
        of the first ``problem.hessian_points`` points (Hessian) with their global
        positions, the top-k (line search) of the first ``_SEARCH_ROWS`` points, and those
        points (reviving empty cells). In a sample-parallel solve block b of ``_DRAW_ROWS``
        points belongs to rank b mod world; the per-point outputs are this rank's rows,
        the masses are reduced over all ranks.
        """
        scorer, comm, device, N = problem.scorer, problem.comm, problem.device, problem.targets.shape[0]
        k = min(_TOPK, N)
        n_top = min(M, problem.hessian_points)
        n_search = min(n_top, _SEARCH_ROWS)
        counts = torch.zeros(2, N, dtype=torch.float64, device=device)
        h32 = h.to(self._dtype)
        v2, i2, pos, vk, ik, xs = [], [], [], [], [], []
        offset = block = 0          # global position of the next point, index of the next block
        for r in range(2):
            sampler = SourceSampler(self.source_, scorer.d, spawn_seed(self.seed, "iteration", it, r), qmc=self.qmc,
                                    dtype=self._dtype, device=device)
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
                        pos.append(torch.arange(offset, offset + m, device=device))
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
            return torch.cat(parts) if parts else torch.empty((0,) + cols, dtype=dtype, device=device)

        i64 = torch.int64
        return _Evaluation(masses_r.mean(0), noise, cat(v2, (2,), self._dtype), cat(i2, (2,), i64),
                           cat(pos, (), i64), cat(vk, (k,), self._dtype), cat(ik, (k,), i64),
                           cat(xs, (scorer.d,), self._dtype))

    def _newton_update(self, state: SolverState, problem: _Problem, ev: _Evaluation, grad, tv) -> SolverState:
        """Accepted heights: the Newton direction, its line-searched length and the revival of empty cells."""
        Yc, nua, comm = problem.targets, problem.weights, problem.comm
        lap, gap_scale = estimate_laplacian(ev.top2_idx, ev.top2_vals[:, 0] - ev.top2_vals[:, 1], Yc, comm=comm,
                                            pos=ev.pos if comm.world > 1 else None,
                                            band_fraction=_HESSIAN_BAND_FRACTION, band_per_cell=_HESSIAN_BAND_PER_CELL)
        # cells that should hold points and hold none (not every empty cell: see dead_cells)
        empty = torch.nonzero(dead_cells(ev.masses, nua, state.n_samples)).squeeze(1)
        full = tv <= _NEWTON_BELOW and empty.numel() <= _NEWTON_EMPTY_SHARE * nua.shape[0]
        # groups of cells joined only by weak facets (clusters) also move as wholes; not while a cell is dead:
        # its facets are missing from the sampled graph, which then splits where the diagram does not (at
        # b63ef88, without this gate, `bench_hard_cases.py --cases ring-2d-stochastic` took one coarse step
        # at iteration 1 and then stalled at TV 0.027; gated, it converges)
        coarse, n_groups = None, 0
        if empty.numel() == 0:
            groups, n_groups = strong_groups(lap, _COARSE_THETA)
            if n_groups >= _COARSE_MIN_GROUPS:
                coarse = self._coarse_step(problem, ev, state.heights, grad, groups, n_groups)
        direction = lm_step(lap, grad, nua, _LM_TAU, _STEP_CLIP * gap_scale, diagonal=not full,
                            groups=None if coarse is None else groups)
        alphas = _ALPHAS if full else _DIAGONAL_ALPHAS
        alpha = line_search(ev.topk_vals, ev.topk_idx, direction, nua, alphas, comm=comm)
        # cells no point reached get their own full step (no Hessian row to scale)
        rescue = torch.zeros_like(direction)
        if empty.numel():
            rescue[empty] = rescue_empty(ev.points, ev.topk_vals[:, 0], Yc, state.heights.to(Yc.dtype), empty, nua,
                                         comm=comm)
        if coarse is not None:   # not line-searched with the direction: it has its own (exact) search
            rescue = rescue + coarse
        if _CHECK_HALVINGS > 0:
            alpha = self._checked_alpha(problem, ev, state.heights, direction, rescue, alpha, alphas[-1])
        return replace(state, accepted_heights=state.heights, tv=tv, noise=ev.noise, direction=direction,
                       rescue=rescue, alpha=alpha, rejects=0, recent_tv=state.recent_tv + [tv],
                       coarse_groups=n_groups if coarse is not None else 0)

    def _coarse_step(self, problem: _Problem, ev: _Evaluation, h, grad, groups, n_multi: int) -> torch.Tensor | None:
        """A Newton step on the total masses of the strong groups (:func:`strong_groups`): (Na,) float64,
        or None where the best length is 0 (the cell step then corrects the groups' totals as before).

        The slow mode of clustered targets is mass between clusters: the Hessian's weights
        between them are small, so a diagonal or CG step on the cells barely moves it. Here
        every group's heights shift together by s_g, the solution of the groups' own Newton
        system. Its Hessian PᵀLP is estimated like the cells' (:func:`estimate_laplacian`),
        from each line-search point's best cell in its own group and in the runner-up group
        (group scores over all targets, :meth:`Scorer.group_topk`), so the long facets between
        clusters are sampled where the cells' top-2 pairs miss them. Its length (0 allowed)
        minimises the groups' TV error on the same points, which follows exactly from each
        point's k best groups (a whole-group shift keeps each group's best cell). No trust region:
        the exact search (which may answer 0) is what bounds it, and a cluster may need to move
        by many of its own cells' widths. ``n_multi`` is the number of groups of two cells or more.
        """
        Yc, nua, comm = problem.targets, problem.weights, problem.comm
        n_groups = int(groups.max()) + 1
        # a target-sharded solve scores the groups on every rank with all targets (N x m_search, once per step)
        scorer = problem.scorer if isinstance(problem.scorer, Scorer) else Scorer(Yc, int(self.max_memory))
        # (m, k) the k best groups of each line-search point, by score, and their best cells
        gvals, gcells = scorer.group_topk(ev.points, h.to(self._dtype), groups, n_groups, _TOPK)
        pos = ev.pos[:gvals.shape[0]] if comm.world > 1 else None   # the line-search points lead the Hessian's
        fine, _ = estimate_laplacian(gcells[:, :2], gvals[:, 0] - gvals[:, 1], Yc, comm=comm, pos=pos,
                                     band_fraction=_COARSE_BAND_FRACTION,
                                     band_per_cell=_COARSE_BAND_PER_GROUP * n_multi / Yc.shape[0])
        lap = group_laplacian(fine, groups, n_groups)
        W = torch.zeros(n_groups, dtype=torch.float64, device=grad.device).index_add_(0, groups, nua)
        err = torch.zeros_like(W).index_add_(0, groups, grad)
        # a cell without sampled facets is a group of its own: it stays where it is
        alone = torch.bincount(groups, minlength=n_groups) < 2                     # (K,)
        keep = ~(alone[lap.a] | alone[lap.b])
        lap = Laplacian(lap.a[keep], lap.b[keep], lap.w[keep], n_groups)
        err[alone] = 0.0
        # CG on K unknowns is exact after K steps (in exact arithmetic): let it run that long
        shift = lm_step(lap, err, W, _LM_TAU, max_cg=max(_COARSE_MIN_CG, 2 * n_groups))   # (K,)
        # the groups' masses after a shift αs, predicted from the points' k best groups: exact unless a group
        # from outside them overtakes (the step corrects the groups' totals; the cells' share is the cell step's)
        alpha = line_search(gvals, groups[gcells], shift, W, _ALPHAS + (0.0,), comm=comm)
        return alpha * shift[groups] if alpha > 0 else None

    def _checked_alpha(self, problem: _Problem, ev: _Evaluation, h, direction, rescue, alpha,
                       min_alpha: float) -> float:
        """:func:`check_step` on the first line-search points: their exact cells after the step."""
        n_check = max(_CHECK_POINTS_MIN, _CHECK_POINTS_PER_TARGET * problem.targets.shape[0])
        X, vals, idx = ev.points[:n_check], ev.topk_vals[:n_check], ev.topk_idx[:n_check]
        h_old = h.to(self._dtype)
        margin = score_margin(X, problem.targets, h_old.abs() + (direction + rescue).abs().to(self._dtype))

        def cells(step):
            return candidate_best(problem.scorer.best, X, (h + step).to(self._dtype), vals, idx, h_old, margin)[1]

        return check_step(cells, idx[:, 0], direction, rescue, problem.weights, alpha, min_alpha,
                          _CHECK_HALVINGS, comm=problem.comm)

    def _certified(self, tv: float, noise: float) -> bool:
        """Converged: the estimated TV error is below ``tol`` and its noise below ``tol / 2``."""
        return tv <= self.tol and noise <= _CERTIFY_NOISE * self.tol

    def _more_points(self, state: SolverState) -> bool:
        """The sample-growth rule: more points when the estimate is mostly noise, steps fail or progress stalls."""
        if state.n_samples >= self.max_samples:
            return False
        recent = state.recent_tv
        stalled = len(recent) >= _STALL_WINDOW and recent[-1] > _STALL_RATIO * recent[-_STALL_WINDOW]
        mostly_noise = state.tv <= _NOISE_RATIO * state.noise
        uncertified = state.tv <= self.tol and state.noise > _CERTIFY_NOISE * self.tol
        return mostly_noise or state.rejects >= _MAX_REJECTS or stalled or uncertified

    def step(self, state: SolverState, problem: _Problem) -> SolverState:
        """One iteration of the stochastic damped Newton method (steps 1-5 of the module docstring).

        Parameters
        ----------
        state : SolverState
            Where the iteration stands (heights to evaluate, last accepted heights, step).
        problem : _Problem
            The centred targets of positive weight, their weights, the scorer and the
            communicator (set up by :meth:`fit`).

        Returns
        -------
        SolverState
            The state of the next iteration; ``last`` holds what this one measured.
        """
        # 1. evaluate the cell masses at the current heights, from fresh points
        ev = self._evaluate(problem, state.heights, state.it, state.n_samples)
        grad = ev.masses - problem.weights
        tv = 0.5 * float(grad.abs().sum())
        # 2. accept unless the error grew by more than the estimates' noise
        accepted = state.accepted_heights is None or tv <= state.tv + _ACCEPT_NOISE * (ev.noise + state.noise)
        if accepted and self._certified(tv, ev.noise):   # the answer: no step to prepare (fit stops here)
            zero = torch.zeros_like(state.heights)
            state = replace(state, accepted_heights=state.heights, tv=tv, noise=ev.noise, direction=zero,
                            rescue=zero, alpha=0.0, rejects=0, recent_tv=state.recent_tv + [tv], coarse_groups=0)
        elif accepted:   # 3. Newton direction + line search + revival of empty cells
            state = self._newton_update(state, problem, ev, grad, tv)
        else:          # the predicted decrease did not happen: shorter step from the last accepted point
            state = replace(state, alpha=state.alpha * _REJECT_SHRINK, rescue=state.rescue * _RESCUE_SHRINK,
                            rejects=state.rejects + 1)
        last = dict(tv=tv, noise=ev.noise, n_samples=state.n_samples, accepted=accepted,
                    n_empty=int((ev.masses == 0).sum()), step=state.alpha, coarse_groups=state.coarse_groups)
        # 4. the sample-growth rule
        if self._more_points(state):
            state = replace(state, n_samples=min(state.n_samples * _SAMPLE_GROWTH, _next_pow2(self.max_samples)),
                            recent_tv=[])
        # 5. the next heights
        h = state.accepted_heights + state.alpha * state.direction + state.rescue
        h = problem.comm.broadcast(h - h.mean())   # keeps the ranks bit-identical
        return replace(state, heights=h, it=state.it + 1, last=last)

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
            Continue from ``self.checkpoint`` if that file exists. The checkpoint is read
            before any warm start and must come from a fit of the same problem: the same
            targets and weights (SHA-256 of their float64 bytes) with the same source,
            dtype, method, seed and qmc (the source by its canonical name: a fit with
            ``"normal"`` resumes one with ``"gaussian"``). Otherwise, or when the file is unreadable,
            ``ValueError`` names the file and what differs; start afresh with
            ``resume=False`` (``otgen fit-ot --restart``). ``tol``, ``max_iter`` and
            ``max_samples`` may change. ``method="exact2d"`` writes no checkpoint.
        callback : callable, optional
            ``callback(iteration, heights, info)`` after every iteration, with the
            current best heights (a copy) and the history entry.

        Returns
        -------
        self
        """
        t_fit = time.perf_counter()
        device = self._check_settings()
        comm = make_comm(self.parallel, device)
        Y64, nu, init_heights = self._check_on_all_ranks(comm, Y, weights, init_heights, callback, device)
        self.source_.check_dim(Y64.shape[1])      # a callable sampler is probed once, here
        setup = self._setup(Y64, nu)
        Yd = self._stored_targets(Y64, setup.frame.scale)
        h0 = None if init_heights is None else init_heights[setup.active] / setup.frame.scale
        if self._method(Y64.shape[1]) == "exact2d":
            return self._fit_exact2d(Yd, nu, setup, h0)
        problem = self._problem(setup.merged.to(self._dtype), setup.merged_weights, comm, device)
        state = None
        if resume and self.checkpoint is not None:     # read before any warm start
            state = self._resume(self._fingerprint(Y64, nu), comm, device)
        if state is None:
            M0 = self.n_samples if self.n_samples is not None else max(_M0_MIN, _M0_PER_TARGET * problem.targets.shape[0])
            if h0 is not None:         # a group's start: its members' mass-weighted mean height
                h0 = torch.zeros_like(setup.merged_weights).index_add_(0, setup.labels, h0 * setup.weights) \
                    / setup.merged_weights
            state = SolverState(n_samples=min(_next_pow2(M0), _next_pow2(self.max_samples)),
                                heights=self._warm_start(problem, h0))
            state.elapsed = time.perf_counter() - t_fit   # history times include the warm start
        state = self._iterate(problem, state, Y64, nu, setup, callback)
        self._finish(Yd, nu, setup, state, problem.scorer)
        if not self.converged_ and comm.rank == 0:
            warnings.warn(f"SemiDiscreteOT stopped after max_iter={self.max_iter} iterations with estimated "
                          f"TV error {state.tv:.4g} (noise {state.noise:.2g}) above tol={self.tol}"
                          f" or not certified; raise max_iter or max_samples (now {self.max_samples}), "
                          "or loosen tol", ConvergenceWarning, stacklevel=2)
        return self

    def _method(self, d: int) -> str:
        """The method that runs: ``"auto"`` is the exact 2-D solver for 2-D targets on a source with a polygon
        (a cube or the ball) in one process, the stochastic Newton method otherwise (a Gaussian or a callable)."""
        if self.method != "auto":
            return self.method
        exact = d == 2 and self.source_.domain2d() is not None and self.parallel is None
        return "exact2d" if exact else "stochastic"

    def _setup(self, Y64, nu) -> _Setup:
        """Centre and scale in float64, then merge the targets that coincide in the working dtype."""
        active = torch.nonzero(nu > 0).squeeze(1)
        frame = make_frame(Y64, active)
        Za, nua = frame.Z[active], nu[active] / nu[active].sum()
        pairs = close_pairs(Za, merge_threshold(Za, self._dtype), spawn_seed(self.seed, "near-duplicates"))
        labels = group_labels(Za.shape[0], pairs)
        merged, merged_weights = merge(Za, nua, labels)
        return _Setup(frame, active, nua, labels, merged, merged_weights)

    def _stored_targets(self, Y64, scale) -> torch.Tensor:
        """``targets_``: Y in ``dtype``; an error when the cast breaks it, a warning when it rounds it visibly."""
        Yd = Y64.to(self._dtype)
        verdict = check_cast(Y64, Yd, scale)
        if verdict is not None and verdict[0] == "error":
            raise ValueError(verdict[1])
        if verdict is not None:
            warnings.warn(verdict[1], UserWarning, stacklevel=4)
        return Yd

    def _fingerprint(self, Y64, nu) -> dict:
        """What defines the problem and its answer: the data's SHA-256 and the solution-changing settings."""
        settings = {k: v for k, v in self._saved_params().items() if k in _RESUME_SETTINGS}
        settings["method"] = self._method(Y64.shape[1])
        settings["source"] = self.source_.name     # aliases ("normal", "gaussian") are one problem
        return dict(data=fingerprint(Y64, nu), shape=list(Y64.shape), **settings)

    def _finish(self, Yd, nu, setup: _Setup, state: SolverState, scorer) -> None:
        """The fitted attributes: the merged heights split back (when targets were merged), in the user's frame."""
        gm = state.accepted_heights
        if setup.grouped:
            M = min(int((state.last or {}).get("n_samples", state.n_samples)), _SPLIT_POINTS_MAX)
            sampler = SourceSampler(self.source_, Yd.shape[1], spawn_seed(self.seed, "split"), qmc=self.qmc,
                                    dtype=self._dtype, device=gm.device)
            g = _split_heights(setup, gm, scorer, sampler, M)
        else:
            g = gm
        self._set_fitted(Yd, nu, setup, g, state.tv, state.noise, state.it, state.history)

    def _problem(self, Yc, nua, comm, device) -> _Problem:
        Na = Yc.shape[0]
        if self.parallel == "targets":
            comm.check_all(None if Na >= comm.world else ValueError(
                f"parallel='targets' needs at least one target per rank: {Na} targets, {comm.world} ranks"))
            scorer = ShardedScorer(Yc, int(self.max_memory), comm)
        else:
            scorer = Scorer(Yc, int(self.max_memory))
        n_hessian = min(max(_HESSIAN_POINTS_MIN, _HESSIAN_POINTS_PER_TARGET * Na), _HESSIAN_POINTS_MAX)
        return _Problem(Yc, nua, scorer, comm, device, n_hessian)

    def _iterate(self, problem, state, Y64, nu, setup: _Setup, callback) -> SolverState:
        """Run :meth:`step` until certified convergence or ``max_iter``; history, callbacks, checkpoints."""
        writer = self.checkpoint is not None and problem.comm.rank == 0
        self.converged_ = False
        t_start = time.perf_counter() - state.elapsed
        with tqdm(total=self.max_iter, initial=state.it, disable=not self.verbose or problem.comm.rank != 0,
                  desc="semi-discrete OT", unit="it", leave=False) as bar:
            while state.it < self.max_iter:
                state = self.step(state, problem)
                entry = dict(iter=state.it, **state.last, time=time.perf_counter() - t_start)
                state.history.append(entry)
                bar.update(1)
                bar.set_postfix(tv=f"{entry['tv']:.4f}", noise=f"{entry['noise']:.4f}", M=entry["n_samples"])
                if callback is not None:   # members of a merged group share its height until the split
                    g = state.accepted_heights[setup.labels]
                    callback(state.it, setup.frame.scale * _full_heights(g, setup.active, setup.frame.Z, self.source_),
                             entry)
                if entry["accepted"] and self._certified(entry["tv"], entry["noise"]):
                    self.converged_ = True
                    break
                state.elapsed = time.perf_counter() - t_start
                if writer and state.it % self.checkpoint_every == 0:
                    self._write_checkpoint(state, Y64, nu)
        state.elapsed = time.perf_counter() - t_start
        if writer:
            self._write_checkpoint(state, Y64, nu)
        return state

    def _set_fitted(self, Yd, nu, setup: _Setup, g_active, tv, noise, n_iter, history):
        """Fitted attributes from the normalised heights of the active targets (all members split)."""
        frame = setup.frame
        self._scorer_cache = None
        self.targets_ = Yd
        self.weights_ = nu
        self.heights_ = frame.scale * _full_heights(g_active, setup.active, frame.Z, self.source_)
        # the cells are scored in the frame of the solve; in float64 when near-duplicates were merged,
        # as the working dtype cannot separate them
        self.center_, self.scale_ = frame.center, frame.scale
        self._frame_targets = frame.Z if setup.grouped else frame.Z.to(self._dtype)
        self.n_iter_ = n_iter
        self.history_ = history
        self.result_ = SemiDiscreteResult(self.heights_, tv, noise, self.converged_, n_iter, history)

    def _fit_exact2d(self, Yd, nu, setup: _Setup, h0):
        """d = 2: damped Newton on exact power diagrams (:func:`otgen.transport.power2d.solve_power2d`), float64."""
        Za = setup.frame.Z[setup.active]
        D = self.source_.domain2d()
        if Za.shape[1] != 2 or D is None:
            raise ValueError(f"method='exact2d' needs 2-D targets and a source with a polygon ('unif', 'uniform' or "
                             f"'ball'; not a Gaussian or a callable sampler), got d = {Za.shape[1]} and "
                             f"source={self.source!r}")
        Z = Za.cpu().numpy()
        if h0 is not None:
            h0 = h0.cpu().numpy()
            if (cell_areas(Z, h0, D) <= 0).any():
                h0 = None       # the exact Newton method needs every cell non-empty at the start
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            res = solve_power2d(Z, setup.weights.cpu().numpy(), D, tol=self.tol, max_iter=self.max_iter,
                                init_heights=h0, verbose=self.verbose)
        history = [dict(iter=k, tv=e["error"], noise=0.0, n_samples=0, accepted=True, n_empty=0, step=e["step"],
                        coarse_groups=0, time=e["seconds"]) for k, e in enumerate(res.history[1:], start=1)]
        self.converged_ = res.converged
        g = torch.from_numpy(res.heights).to(Za.device)
        self._set_fitted(Yd, nu, setup, g, res.error, 0.0, res.n_iter, history)
        if not res.converged:
            why = str(caught[-1].message) if caught else "it stopped early"
            warnings.warn(f"SemiDiscreteOT(method='exact2d'): {why}", ConvergenceWarning, stacklevel=3)
        return self

    # ------------------------------------------------------------------ files and checkpoints
    @property
    def _dtype(self) -> torch.dtype:
        """The working dtype as a torch dtype (``dtype`` may be given as numpy or by name)."""
        return _torch_dtype(self.dtype)

    def _saved_params(self) -> dict:
        params = super()._saved_params()
        source = as_source(self.source)
        if isinstance(source, CallableSource):
            raise ValueError("a SemiDiscreteOT with a callable source cannot be saved: a file holds no code. Keep "
                             "the potential instead (g = ot.to_pot(), with ot.targets_ and ot.weights_) and rebuild "
                             "it with SemiDiscreteOT.from_pot(targets, g, weights, source=sampler)")
        if not isinstance(params["source"], str):    # a Source object: its name
            params["source"] = source.name
        params["dtype"] = str(self._dtype).replace("torch.", "")      # one spelling in files and fingerprints
        if params.get("checkpoint") is not None:     # a Path is not readable with weights_only
            params["checkpoint"] = os.fspath(params["checkpoint"])
        return params

    def _get_state(self) -> dict:
        return dict(kind="fit", targets=self.targets_, weights=self.weights_, heights=self.heights_,
                    n_iter=self.n_iter_, converged=self.converged_, tv_error=self.result_.tv_error,
                    noise=self.result_.noise, history=self.history_, center=self.center_, scale=self.scale_,
                    frame_targets=self._frame_targets)

    def _set_state(self, state: dict, device=None) -> None:
        """The fitted attributes from a saved fit, or from the last accepted heights of a checkpoint."""
        dev = resolve_device(device)
        self.source_ = as_source(self.source)
        if state.get("kind") == "checkpoint":
            self._set_from_checkpoint(state, dev)
            return
        self._scorer_cache = None
        self.targets_ = state["targets"].to(dev)
        self.weights_ = state["weights"].to(dev)
        self.heights_ = state["heights"].to(dev)
        if "frame_targets" in state:
            self.center_, self.scale_ = state["center"].to(dev), float(state["scale"])
            self._frame_targets = state["frame_targets"].to(dev)
        else:                   # files written before the frame was saved: centred, unscaled
            self.center_, self.scale_ = self.targets_.double().mean(0), 1.0
            self._frame_targets = (self.targets_.double() - self.center_).to(self.targets_.dtype)
        self.n_iter_ = int(state["n_iter"])
        self.converged_ = bool(state["converged"])
        self.history_ = list(state["history"])
        self.result_ = SemiDiscreteResult(self.heights_, state["tv_error"], state["noise"], self.converged_,
                                          self.n_iter_, self.history_)

    def _set_from_checkpoint(self, ck: dict, device) -> None:
        """A (partly) fitted solver from a checkpoint: the last accepted heights of the unfinished fit."""
        solver = ck["solver"]
        if solver["accepted_heights"] is None:
            raise ValueError("the checkpoint was written before the first iteration; it holds no heights yet")
        Y64, nu = ck["targets"].to(device, torch.float64), ck["weights"].to(device)
        setup = self._setup(Y64, nu)
        state = SolverState(**solver).to(device)
        hist = state.history
        self.converged_ = bool(hist) and hist[-1]["accepted"] and hist[-1]["tv"] <= self.tol \
            and hist[-1]["noise"] <= _CERTIFY_NOISE * self.tol
        scorer = Scorer(setup.merged.to(self._dtype), int(self.max_memory))
        self._finish(self._stored_targets(Y64, setup.frame.scale), nu, setup, state, scorer)

    def _write_checkpoint(self, state: SolverState, Y64, nu) -> None:
        """Atomic write (temporary file, then rename): a killed run leaves the last good checkpoint.

        The file has the format of :meth:`save` (so :meth:`load` reads it), with a state
        of kind "checkpoint": the solver state (heights of the merged problem), the targets
        in float64 and the weights exactly, and the fingerprint of the problem.
        """
        ck = dict(kind="checkpoint", solver=asdict(state.to("cpu")), targets=Y64.cpu(), weights=nu.cpu(),
                  fingerprint=self._fingerprint(Y64, nu))
        payload = {"format": FILE_FORMAT, "class": type(self).__name__, "version": self._SAVE_VERSION,
                   "params": encode_state(self._saved_params()), "state": encode_state(ck)}
        atomic_torch_save(payload, self.checkpoint)

    def _read_checkpoint(self, mine: dict) -> SolverState:
        """The solver state of ``self.checkpoint``; ``ValueError`` naming the file unless it is a readable
        checkpoint of this problem (fingerprint ``mine``) and settings."""
        path = os.fspath(self.checkpoint)
        try:
            payload = self._read_payload(path)        # weights_only; foreign or corrupt files -> ValueError
        except ValueError as e:
            raise ValueError(f"cannot resume from checkpoint {path}: {e}; {_RESTART_HINT}") from None
        ck = payload["state"]
        if not isinstance(ck, dict) or ck.get("kind") != "checkpoint":
            raise ValueError(f"{path} holds a finished SemiDiscreteOT fit written by save(), not a checkpoint of "
                             "fit(); refusing to resume from it (pass its heights_ as init_heights instead)")
        theirs = ck.get("fingerprint")
        if not isinstance(theirs, dict) or not isinstance(ck.get("solver"), dict):
            raise ValueError(f"checkpoint {path} has no fingerprint of its problem (written by an older otgen, or "
                             f"damaged); refusing to resume from it; {_RESTART_HINT}")
        diffs = [_difference(key, mine[key], theirs.get(key)) for key in mine if theirs.get(key) != mine[key]]
        if diffs:
            raise ValueError(f"checkpoint {path} belongs to another problem: {'; '.join(diffs)}; refusing to resume "
                             f"from it; {_RESTART_HINT}")
        try:
            return SolverState(**ck["solver"])
        except TypeError as e:
            raise ValueError(f"checkpoint {path} is damaged ({e}); {_RESTART_HINT}") from None

    def _resume(self, mine: dict, comm, device) -> SolverState | None:
        """The checkpoint's state when the file exists (read by rank 0, sent to all), else None."""
        error, state = None, None
        if comm.rank == 0 and os.path.exists(self.checkpoint):
            try:
                state = self._read_checkpoint(mine)
            except ValueError as e:
                error = e
        comm.check_all(error)
        state = comm.broadcast_object(state if comm.rank == 0 else None)
        return None if state is None else state.to(device)

    # ------------------------------------------------------------------ POT interop
    def to_pot(self):
        """POT's semi-dual potential g of these cells: (N,) float64 numpy, mean zero.

        ``ot.semidiscrete`` (squared Euclidean cost) puts x in the cell argmin_j
        |x − y_j|² − g_j = argmax_j ⟨x, y_j⟩ + (g_j − |y_j|²) / 2, so
        :math:`g_j = 2 h_j + |y_j|^2` up to a constant, y the stored ``targets_``. The source must
        be the same measure: POT's names mean the same measures here (``'unif'`` is the cube
        [0, 1]^d, ``'ball'`` the unit ball, ``'normal'`` N(0, I)); otgen's ``"uniform"``,
        the cube [-1, 1]^d, has no POT name (pass POT a callable sampler of [-1, 1]^d).
        """
        self._check_fitted()
        y = self.targets_.double()
        g = 2.0 * self.heights_.double() + (y * y).sum(1)
        return (g - g.mean()).cpu().numpy()

    @classmethod
    def from_pot(cls, targets, g, weights=None, **settings):
        """A fitted solver with the cells of POT's semi-dual potential ``g`` (see :meth:`to_pot`).

        Parameters
        ----------
        targets : (N, d) array-like
        g : (N,) array-like, POT's potential (squared Euclidean cost)
        weights : (N,) array-like, optional
            Target masses (default uniform); targets of zero weight get empty cells.
        **settings
            Constructor settings (``source`` must be the measure POT sampled).

        Returns
        -------
        SemiDiscreteOT
            Fitted (``heights_ = (g − |y|²) / 2``, mean zero), with ``n_iter_ = 0``,
            ``converged_ = False`` and an empty history: nothing was certified here.
        """
        ot = cls(**settings)
        device = ot._check_settings()
        Y64, nu, _ = ot._check_fit_inputs(targets, weights, None, None, device)
        g = as_tensor(g, "g", ndim=1, dtype=torch.float64, device=device)
        if g.shape[0] != Y64.shape[0]:
            raise ValueError(f"g must have length {Y64.shape[0]} (one per target), got {g.shape[0]}")
        ot.source_.check_dim(Y64.shape[1])
        setup = ot._setup(Y64, nu)
        h = 0.5 * (g - (Y64 * Y64).sum(1))
        ot.converged_ = False
        ot._set_fitted(ot._stored_targets(Y64, setup.frame.scale), nu, setup, h[setup.active] / setup.frame.scale,
                       math.nan, math.nan, 0, [])
        return ot

    # ------------------------------------------------------------------ using the map
    def _scorer(self):
        """The scorer of the fitted cells in the solve's frame (normalised targets; float64 after a merge)."""
        if getattr(self, "_scorer_cache", None) is None:
            self._scorer_cache = Scorer(self._frame_targets, int(self.max_memory))
        return self._scorer_cache

    def _scoring_heights(self):
        """Heights in the frame and dtype of the scorer: <x, y_i> + h_i = <x, c> + s (<x, z_i> + h_i / s)."""
        return (self.heights_ / self.scale_).to(self._frame_targets.dtype)

    def _scores_best(self, Xt):
        """Best normalised score (M,) and cell (M,) of points Xt in the targets' dtype."""
        return self._scorer().best(Xt.to(self._frame_targets.dtype), self._scoring_heights())

    def _assign(self, X):
        return self._scores_best(self._check_X(X))[1]

    def assign(self, X):
        """Index of the power cell containing each row of X.

        Parameters
        ----------
        X : (M, d) array or tensor

        Returns
        -------
        (M,) int64, numpy for numpy input, a tensor for a tensor.
        """
        return like_input(self._assign(X), X)

    def transform(self, X):
        """The transport map ∇u_h(X) = Y[assign(X)]: (M, d) -> (M, d), numpy or torch like X."""
        idx = self._assign(X)
        return like_input(self.targets_[idx], X)

    def potential(self, X):
        """Brenier potential u_h(X) = max_i <x, y_i> + h_i: (M, d) -> (M,) float64, numpy or torch like X."""
        Xt = self._check_X(X)
        u = self.scale_ * self._scores_best(Xt)[0].double() + Xt.double() @ self.center_
        return like_input(u, X)

    def topk(self, X, k=2):
        """The k best cells of each row of X (M, d): scores <x, y_i> + h_i (M, k) and indices (M, k) int64.

        Numpy for numpy input, tensors for a tensor.
        """
        Xt = self._check_X(X)
        k = check_positive_int(k, "k")
        vals, idx = self._scorer().topk(Xt.to(self._frame_targets.dtype), self._scoring_heights(), k)
        vals = self.scale_ * vals.double() + (Xt.double() @ self.center_)[:, None]
        return like_input(vals.to(Xt.dtype), X), like_input(idx, X)

    def cell_masses(self, n_samples=2**20, seed=None):
        """QMC estimate of μ(W_i) for every cell with ``n_samples`` source points.

        ``seed`` (default ``self.seed``) seeds the points' own stream. Returns (N,) float64 numpy.
        """
        self._check_fitted()
        n_samples = check_positive_int(n_samples, "n_samples")
        seed = self.seed if seed is None else check_seed(seed)
        sampler = SourceSampler(self.source_, self.targets_.shape[1], spawn_seed(seed, "cell-masses"), qmc=self.qmc,
                                dtype=self.targets_.dtype, device=self.targets_.device)
        counts = torch.zeros(self.targets_.shape[0], dtype=torch.float64, device=self.targets_.device)
        left = n_samples
        while left > 0:
            m = min(_DRAW_ROWS, left)
            counts += torch.bincount(self._scores_best(sampler.draw(m))[1], minlength=counts.shape[0]).double()
            left -= m
        return (counts / n_samples).cpu().numpy()

    def sample(self, n, seed=None, *, return_info=False):
        """Draw ``n`` source points and map them by ∇u_h.

        Parameters
        ----------
        n : int
        seed : int, optional
            Seed of the source points (pseudo-random); default ``self.seed``.
        return_info : bool, default False
            Also return ``{"cells": (n,) int64}``, the cell of each point.

        Returns
        -------
        points : (n, d) float32 numpy array, in the targets' space
        info : dict, only with ``return_info``
        """
        self._check_fitted()
        n = check_positive_int(n, "n")
        seed = self.seed if seed is None else check_seed(seed)
        X = SourceSampler(self.source_, self.targets_.shape[1], spawn_seed(seed, "sample"), qmc=False,
                          dtype=self.targets_.dtype, device=self.targets_.device).draw(n)
        idx = self._assign(X)
        points = self.targets_[idx].cpu().numpy().astype(np.float32, copy=False)
        return (points, {"cells": idx.cpu().numpy()}) if return_info else points
