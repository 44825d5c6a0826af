"""Chunked scoring of source points against targets: argmax_i <x, y_i> + h_i.

The score matrix S = X Yᵀ + h (shape (m, N)) is never materialised for all points:
rows are processed in blocks of ``block_rows`` and, when N is large, columns in
blocks of ``col_chunk``, so extra memory is bounded by ``max_memory`` bytes.
The heights are folded into the product (``torch.addmm`` with h as the bias),
so one GEMM gives the scores.

``torch.argmax`` along rows is not vectorised on the CPU and costs more than the
GEMM itself for small d; ``_block_argmax`` first takes ``amax`` over blocks of 64
columns (vectorised), then the argmax of the winning block only. It is about
4x faster and exact (ties resolve to some maximal index).

On the CPU in float32 the best cell and the top-k (k <= 16) come from the fused kernel of
:mod:`otgen.transport._fused` when it compiles here: it keeps each row's k best scores in a
short list and never writes S: 0.6-0.8x the bare GEMM's time at d = 16..32 for k = 1, 2, 6,
1.8-2.9x faster than the torch path (1 thread, benchmarks/results/fused_scoring.md).
``OTGEN_FUSED=0`` or ``Scorer(..., fused=False)`` keeps the torch path; any failure of the
kernel falls back to it.
"""

from __future__ import annotations

import math

import torch

from otgen.transport._fused import TOPK_MAX, FusedUnavailable, fused_score, library, pack_targets, pad_heights

_BLOCK = 64                     # columns per block in _block_argmax
_TARGET_BLOCK_BYTES = 8 << 20   # score block that stays in cache (8 MiB); capped by max_memory
_MIN_GEMM_ROWS = 256            # rows of a score block when max_memory allows
# Up to these row lengths torch's own kernels are faster on the CPU (1 thread, blocks of the
# solver's 8 MiB: short rows mean thousands of rows per block): S.max up to ~256 columns and
# S.topk up to ~400·k (k = 6: ~2400; k = 2: ~800). Effect on a solve: benchmarks/README.md,
# "Small N" (results/scaling_topk_cutoff_*). The block top-k needs at least k blocks: 400·k > 64·k.
_ARGMAX_MIN_COLS = 4 * _BLOCK
_TOPK_MIN_COLS_PER_K = 400
# Candidate certificate: two scores compared, each off by at most (d + 2) rounding units of the largest
# |score| term (d products summed in any order, the bias, the candidate update): a margin of 2 (d + 2) eps
_CERT_ULPS = 2


def _block_argmax(S: torch.Tensor):
    """Row-wise (max, argmax) of S (m, n). Returns values (m,), indices (m,) int64."""
    m, n = S.shape
    if n <= _ARGMAX_MIN_COLS or S.device.type != "cpu":
        return S.max(dim=1)
    bmax = _block_max(S)                                                # (m, nb)
    val, blk = bmax.max(dim=1)                                          # (m,)
    cols = (blk[:, None] * _BLOCK + torch.arange(_BLOCK, device=S.device)).clamp_(max=n - 1)  # (m, B)
    j = S.gather(1, cols).argmax(dim=1)                                # (m,)
    return val, cols.gather(1, j[:, None]).squeeze(1)


def _block_max(S: torch.Tensor) -> torch.Tensor:
    """Max over consecutive blocks of _BLOCK columns (the last one may be shorter): (m, n) -> (m, nb)."""
    m, n = S.shape
    nb = n // _BLOCK
    bmax = S[:, : nb * _BLOCK].unflatten(1, (nb, _BLOCK)).amax(dim=2)
    if nb * _BLOCK < n:
        bmax = torch.cat([bmax, S[:, nb * _BLOCK:].amax(dim=1, keepdim=True)], dim=1)
    return bmax


def _block_topk(S: torch.Tensor, k: int):
    """Row-wise top-k of S (m, n), descending: values (m, k), indices (m, k).

    The k best entries of a row lie in the k blocks (of _BLOCK columns) with the
    largest block maxima: an entry e in block B is beaten by every entry above it,
    and each block ranked above B holds one entry above max(B) >= e, so fewer than
    k blocks rank above B. One vectorised block-max pass, a top-k over the n/_BLOCK
    block maxima and a top-k over k·_BLOCK gathered columns replace ``S.topk``,
    whose CPU kernel costs several GEMMs at small d. Values are exact; at ties
    the indices are some set of maximal entries.
    """
    m, n = S.shape
    if n <= _TOPK_MIN_COLS_PER_K * k or S.device.type != "cpu":
        return S.topk(k, dim=1)
    bmax = _block_max(S)                                                # (m, nb)
    blk = bmax.topk(k, dim=1).indices                                   # (m, k)
    cols = (blk[:, :, None] * _BLOCK + torch.arange(_BLOCK, device=S.device)).flatten(1)  # (m, k·B)
    valid = cols < n                                                    # the last block may be short
    cols.clamp_(max=n - 1)
    vals, j = S.gather(1, cols).masked_fill_(~valid, float("-inf")).topk(k, dim=1)  # (m, k)
    return vals, cols.gather(1, j)


def certify_candidates(cand_vals: torch.Tensor, cand_idx: torch.Tensor, dh: torch.Tensor, margin: float):
    r"""The best cell at heights h + dh from each point's k best cells at h, where that is certain.

    A cell j outside a point's candidates scored at most v_k (the k-th best) at h, hence at most
    :math:`v_k + \max_j \Delta h_j` at h + dh. The best candidate, rescored as
    :math:`v_c + \Delta h_c`, is then the best of all cells if it beats that bound, and the
    second-best candidate, by more than ``margin`` (the rounding of the scores): the
    certificate. Points without it must be rescored against all cells.

    Parameters
    ----------
    cand_vals, cand_idx : (m, k) the k best scores at h (descending) and their cells
    dh : (N,) the height change, in the scores' dtype
    margin : float, the rounding allowance of one score

    Returns
    -------
    best value (m,), best cell (m,) int64, certified (m,) bool
    """
    new = cand_vals + dh[cand_idx]                                      # (m, k)
    top2, j = new.topk(min(2, new.shape[1]), dim=1)
    bound = cand_vals[:, -1] + dh.max()                                 # any cell outside the candidates
    runner_up = torch.maximum(top2[:, 1], bound) if top2.shape[1] > 1 else bound
    ok = top2[:, 0] - runner_up > margin
    return top2[:, 0], cand_idx.gather(1, j[:, :1]).squeeze(1), ok


def score_margin(X: torch.Tensor, Y: torch.Tensor, h: torch.Tensor) -> float:
    """Rounding allowance of one score ⟨x, y_j⟩ + h_j of the rows of X (m, d) against Y (N, d) at
    heights h (N,): 2 (d + 2) eps times the largest term (see ``_CERT_ULPS``)."""
    big = float(X.abs().max()) * float(Y.abs().sum(1).max()) + float(h.abs().max()) if X.numel() else 0.0
    return _CERT_ULPS * (Y.shape[1] + 2) * torch.finfo(X.dtype).eps * big


def candidate_best(best, X: torch.Tensor, h: torch.Tensor, cand_vals: torch.Tensor, cand_idx: torch.Tensor,
                   h_old: torch.Tensor, margin: float):
    """Each row's best cell at heights h, from its k best cells at ``h_old`` where they certify it.

    Parameters
    ----------
    best : callable
        ``best(X, h) -> (values, cells)`` over all targets (:meth:`Scorer.best` or a sharded one;
        a sharded one is a collective: every rank certifies the same rows, so every rank calls it
        with the same rows).
    X : (m, d) the points.  h, h_old : (N,) new and old heights, in the scores' dtype.
    cand_vals, cand_idx : (m, k) the k best scores at ``h_old`` (descending) and their cells.
    margin : float, the rounding allowance (:func:`score_margin`).

    Returns
    -------
    best value (m,), best cell (m,) int64 — the cells of ``best(X, h)`` — and the number of
    rows that had to be rescored.
    """
    v, idx, ok = certify_candidates(cand_vals, cand_idx, h - h_old, margin)
    redo = torch.nonzero(~ok).squeeze(1)
    if redo.numel():
        v[redo], idx[redo] = best(X[redo], h)
    return v, idx, int(redo.numel())


class Scorer:
    """Scores of points against fixed targets, chunked so memory stays under ``max_memory``.

    Parameters
    ----------
    Y : torch.Tensor, shape (N, d)
        Targets (the solver passes them centred; cells do not change).
    max_memory : int
        Bound in bytes on the score block held at once.
    fused : bool or None, default None
        Use the fused CPU kernel (:mod:`otgen.transport._fused`) for :meth:`best` and
        :meth:`topk` with k <= ``TOPK_MAX`` (16) when the targets and points are CPU float32: None (the
        default) when it is available and ``OTGEN_FUSED`` is not 0, False never.
    """

    def __init__(self, Y: torch.Tensor, max_memory: int, fused: bool | None = None):
        self.N, self.d = Y.shape
        self.Yt = Y.T.contiguous()                       # (d, N)
        item = Y.element_size()
        min_rows = 16
        # column chunks only when a block of min_rows full rows exceeds the budget
        self.col_chunk = min(self.N, max(_BLOCK * 4, max_memory // (item * min_rows)))
        block_bytes = min(max_memory, _TARGET_BLOCK_BYTES) if Y.device.type == "cpu" else max_memory
        # at least _MIN_GEMM_ROWS rows when the budget allows: thinner GEMMs run at half speed (N ~ 1e5)
        fit_rows = max_memory // (item * self.col_chunk)
        self.block_rows = max(min_rows, block_bytes // (item * self.col_chunk), min(_MIN_GEMM_ROWS, fit_rows))
        self._buf = None                                 # one reused score block (see _scores)
        self._fused_ok = fused is not False and Y.device.type == "cpu" and Y.dtype == torch.float32 \
            and self.N > 0 and self.d > 0
        self._panels = None                              # targets packed for the fused kernel (at first use)

    def _fused_pass(self, X: torch.Tensor, h: torch.Tensor, k: int):
        """(values, indices) of the fused kernel for 1 <= k <= TOPK_MAX, or None where the torch path must answer."""
        if not self._fused_ok or X.device.type != "cpu" or X.dtype != torch.float32 or X.dim() != 2 \
                or h.device.type != "cpu" or library() is None:
            return None
        try:
            if self._panels is None:
                self._panels = pack_targets(self.Yt.T)
            hpad = pad_heights(h.to(torch.float32), self._panels.shape[0])
            return fused_score(X.contiguous(), self._panels, hpad, k)
        except FusedUnavailable:                  # arguments the kernel does not take
            return None

    def _scores(self, X: torch.Tensor, h: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
        """S = X Y[c0:c1]ᵀ + h[c0:c1], shape (m, c1 - c0), written into one reused buffer.

        Allocating a fresh block per call let the CPU allocator's footprint grow to
        many blocks (measured 3.4 GB instead of 0.3 GB at N = 1e5); callers use S
        before the next call and keep only reductions of it.
        """
        m, n = X.shape[0], c1 - c0
        if self._buf is None or self._buf.dtype != X.dtype or self._buf.device != X.device \
                or self._buf.numel() < m * n:
            self._buf = torch.empty(max(m, self.block_rows) * self.col_chunk, dtype=X.dtype, device=X.device)
        out = self._buf[: m * n].view(m, n)
        return torch.addmm(h[c0:c1], X, self.Yt[:, c0:c1], out=out)

    # -- one block of rows -------------------------------------------------------------
    def _best_rows(self, X: torch.Tensor, h: torch.Tensor):
        """X (m, d), h (N,) -> best value (m,), best index (m,)."""
        if self.col_chunk >= self.N:
            return _block_argmax(self._scores(X, h, 0, self.N))
        best_v = best_i = None
        for c0 in range(0, self.N, self.col_chunk):
            c1 = min(self.N, c0 + self.col_chunk)
            v, i = _block_argmax(self._scores(X, h, c0, c1))
            i = i + c0
            if best_v is None:
                best_v, best_i = v, i
            else:
                better = v > best_v
                best_v = torch.where(better, v, best_v)
                best_i = torch.where(better, i, best_i)
        return best_v, best_i

    def _topk_rows(self, X: torch.Tensor, h: torch.Tensor, k: int):
        """X (m, d) -> top-k values (m, k) (descending) and indices (m, k)."""
        k = min(k, self.N)
        if self.col_chunk >= self.N:
            S = self._scores(X, h, 0, self.N)
            return _block_topk(S, k)
        vals = idx = None
        for c0 in range(0, self.N, self.col_chunk):
            c1 = min(self.N, c0 + self.col_chunk)
            v, i = _block_topk(self._scores(X, h, c0, c1), min(k, c1 - c0))
            i = i + c0
            if vals is None:
                vals, idx = v, i
            else:
                vals, sel = torch.cat([vals, v], 1).topk(k, dim=1)
                idx = torch.cat([idx, i], 1).gather(1, sel)
        return vals, idx

    # -- any number of rows ------------------------------------------------------------
    def best(self, X: torch.Tensor, h: torch.Tensor):
        """Best (value, index) for every row of X (M, d), processed in row blocks (or by the fused kernel)."""
        out = self._fused_pass(X, h, 1)
        if out is not None:
            return out
        if X.shape[0] <= self.block_rows:
            return self._best_rows(X, h)
        out = [self._best_rows(X[r:r + self.block_rows], h) for r in range(0, X.shape[0], self.block_rows)]
        return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])

    def margin(self, X: torch.Tensor, h: torch.Tensor) -> float:
        """Rounding allowance of one score of X against these targets at heights h (see ``_CERT_ULPS``)."""
        return score_margin(X, self.Yt.T, h)

    def best_from_candidates(self, X: torch.Tensor, h: torch.Tensor, cand_vals: torch.Tensor,
                             cand_idx: torch.Tensor, h_old: torch.Tensor):
        """``best(X, h)`` from each point's k best cells at ``h_old``: certified points reuse their
        candidates (:func:`certify_candidates`), the others are rescored. Returns value (M,),
        index (M,) and the number of rescored points; the indices equal ``best(X, h)``'s
        (the values up to rounding)."""
        margin = self.margin(X, torch.maximum(h.abs(), h_old.abs()))
        return candidate_best(self.best, X, h, cand_vals, cand_idx, h_old, margin)

    def group_topk(self, X: torch.Tensor, h: torch.Tensor, group: torch.Tensor, n_groups: int, k: int):
        """The k best groups of targets for every row of X (M, d), each by its best cell.

        ``group`` (N,) int64 in [0, n_groups) labels each target; a group's score at x is
        max over i in the group of <x, y_i> + h_i. Returns values (M, k') in descending order
        and the best cell of each of these groups (M, k'), k' = min(k, n_groups); ties go to
        the first cell. Costs one full score pass. ``group`` must use every label (no empty
        group: its -inf score and cell N could be ranked). Memory: per row block, the score block
        with an int64 copy and a few (rows, n_groups) tensors.
        """
        k = min(k, n_groups)
        vals, idx = [], []
        cols_all = torch.arange(self.N, device=X.device)
        for r in range(0, X.shape[0], self.block_rows):
            Xb = X[r:r + self.block_rows]
            shape = (Xb.shape[0], n_groups)
            v = torch.full(shape, -math.inf, dtype=X.dtype, device=X.device)   # (b, K) best score per group
            i = torch.full(shape, self.N, dtype=torch.int64, device=X.device)  # (b, K) its cell
            for c0 in range(0, self.N, self.col_chunk):
                c1 = min(self.N, c0 + self.col_chunk)
                S = self._scores(Xb, h, c0, c1)                              # (b, c)
                g = group[c0:c1].expand(S.shape[0], -1)                     # (b, c)
                cv = torch.full_like(v, -math.inf).scatter_reduce_(1, g, S, "amax")
                cols = torch.where(S == cv.gather(1, g), cols_all[c0:c1], self.N)
                ci = torch.full_like(i, self.N).scatter_reduce_(1, g, cols, "amin")
                better = cv > v
                v, i = torch.where(better, cv, v), torch.where(better, ci, i)
            v, order = v.topk(k, dim=1)
            vals.append(v)
            idx.append(i.gather(1, order))
        return torch.cat(vals), torch.cat(idx)

    def topk(self, X: torch.Tensor, h: torch.Tensor, k: int):
        """Top-k (values, indices) for every row of X (M, d), processed in row blocks (or by the fused kernel)."""
        if 1 <= min(k, self.N) <= TOPK_MAX:
            out = self._fused_pass(X, h, min(k, self.N))
            if out is not None:
                return (out[0][:, None], out[1][:, None]) if out[0].dim() == 1 else out
        if X.shape[0] <= self.block_rows:
            return self._topk_rows(X, h, k)
        out = [self._topk_rows(X[r:r + self.block_rows], h, k) for r in range(0, X.shape[0], self.block_rows)]
        return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
