"""Collectives the semi-discrete solver needs, for one process or a ``torch.distributed`` group.

Sample-parallel solve: every rank holds all targets and heights and scores its own
share of each iteration's source points — block ``b`` of 2^16 points of the Sobol
stream goes to rank ``b mod world`` — so the union of the ranks' points is exactly
the single-process point set. Everything the solver derives from the points is
then reduced *exactly*:

- cell counts (integers in float64): ``all_reduce`` sum;
- order statistics (the Hessian band, the median gap): bisection on the float bit
  patterns with an ``all_reduce`` of counts per step;
- per-sample rows that are summed in floating point (the Laplacian's edges): gathered
  in the single-process order, so the sums are the same bit for bit;
- the k smallest margins of an empty cell: each rank's k smallest, gathered.

So a distributed fit reproduces the single-process fit with the same seed (up to
the GEMM's own rounding when ranks use different BLAS kernels), and the
single-process path costs nothing extra: :class:`Local` is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from otgen.transport._scoring import Scorer


class Local:
    """The one-process communicator: every collective is the identity."""

    rank, world = 0, 1

    def owns(self, block: int) -> bool:
        return True

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def kth(self, values: torch.Tensor, k: int) -> float:
        """k-th smallest (1-based) of ``values`` over all ranks."""
        return float(values.kthvalue(k).values)

    def count(self, n: int) -> int:
        return int(n)

    def gather_ordered(self, pos: torch.Tensor, *cols: torch.Tensor):
        return cols

    def smallest(self, values: torch.Tensor, q: int) -> torch.Tensor:
        """The q smallest entries of each row of ``values`` (E, m) over all ranks, ascending (E, q)."""
        return values.topk(q, dim=1, largest=False).values

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def broadcast_object(self, obj):
        return obj

    def check_all(self, error: BaseException | None) -> None:
        if error is not None:
            raise error


def _sortable(values: torch.Tensor) -> torch.Tensor:
    """float64 -> int64 with the same order (IEEE trick: flip the magnitude bits of negatives)."""
    bits = values.double().contiguous().view(torch.int64)
    return bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF)


class Distributed(Local):
    """Collectives over the default ``torch.distributed`` process group (gloo or nccl)."""

    def __init__(self, device: torch.device):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("parallel solve needs an initialised torch.distributed process group: call "
                               "torch.distributed.init_process_group(...) first, or launch with torchrun "
                               "(`torchrun --nproc_per_node 2 -m otgen fit-ot ...`)")
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        # nccl reduces device tensors only; gloo reduces CPU tensors
        self.comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")

    def owns(self, block: int) -> bool:
        return block % self.world == self.rank

    def _to(self, t):
        return t.to(self.comm_device)

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        buf = self._to(t)
        self.dist.all_reduce(buf)
        return buf.to(t.device)

    def count(self, n: int) -> int:
        return int(self.sum_(torch.tensor([int(n)], dtype=torch.int64))[0])

    def kth(self, values: torch.Tensor, k: int, buckets: int = 4096) -> float:
        """k-th smallest of non-negative ``values`` over all ranks, exactly.

        Radix-style selection on the sortable integer keys: each round all-reduces a
        histogram of ``buckets`` equal key ranges and keeps the one holding the k-th
        key, so 64-bit keys need about 6 rounds.
        """
        keys = _sortable(values.clamp_min(0)).cpu()                     # (m,) int64 >= 0
        ext = torch.tensor([keys.min() if keys.numel() else 2**62, -(keys.max() if keys.numel() else 0)],
                           dtype=torch.int64)
        ext = self._to(ext)
        self.dist.all_reduce(ext, op=self.dist.ReduceOp.MIN)
        lo, hi = int(ext[0]), -int(ext[1])                              # the k-th key is in [lo, hi]
        while lo < hi:
            width = (hi - lo) // buckets + 1
            inside = keys[(keys >= lo) & (keys <= hi)]
            hist = torch.zeros(buckets + 1, dtype=torch.int64)          # [keys below lo, buckets...]
            hist[0] = int((keys < lo).sum())
            hist[1:] = torch.bincount((inside - lo) // width, minlength=buckets)[:buckets]
            hist = self.sum_(hist)                                      # global counts
            cum = torch.cumsum(hist[1:], 0) + hist[0]
            b = int(torch.searchsorted(cum, torch.tensor([k], dtype=cum.dtype)))  # first bucket reaching k
            lo, hi = lo + b * width, min(hi, lo + (b + 1) * width - 1)
        return float(torch.tensor([lo], dtype=torch.int64).view(torch.float64)[0])

    def _all_gather_var(self, t: torch.Tensor) -> list[torch.Tensor]:
        """all_gather of tensors whose first dimension differs between ranks."""
        n = self._to(torch.tensor([t.shape[0]], dtype=torch.int64))
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        self.dist.all_gather(sizes, n)
        sizes = [int(s[0]) for s in sizes]
        pad = torch.zeros((max(sizes),) + tuple(t.shape[1:]), dtype=t.dtype, device=self.comm_device)
        pad[: t.shape[0]] = self._to(t)
        bufs = [torch.empty_like(pad) for _ in range(self.world)]
        self.dist.all_gather(bufs, pad)
        return [b[:s].to(t.device) for b, s in zip(bufs, sizes)]

    def gather_ordered(self, pos: torch.Tensor, *cols: torch.Tensor):
        """Rows of every rank, concatenated and sorted by their global position ``pos`` (unique)."""
        pos_all = torch.cat(self._all_gather_var(pos))
        order = torch.argsort(pos_all)
        return tuple(torch.cat(self._all_gather_var(c))[order] for c in cols)

    def smallest(self, values: torch.Tensor, q: int) -> torch.Tensor:
        E, m = values.shape
        local = values.topk(min(q, m), dim=1, largest=False).values if m else values[:, :0]
        pad = torch.full((E, q), float("inf"), dtype=values.dtype, device=values.device)
        pad[:, : local.shape[1]] = local
        buf = self._to(pad)
        bufs = [torch.empty_like(buf) for _ in range(self.world)]
        self.dist.all_gather(bufs, buf)
        return torch.cat(bufs, dim=1).to(values.device).topk(q, dim=1, largest=False).values

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        buf = self._to(t.contiguous())
        self.dist.broadcast(buf, src=0)
        return buf.to(t.device)

    def broadcast_object(self, obj):
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def check_all(self, error: BaseException | None) -> None:
        """Raise on every rank when any rank failed (instead of the others hanging in a collective)."""
        msg = None if error is None else f"{type(error).__name__}: {error}"
        msgs = [None] * self.world
        self.dist.all_gather_object(msgs, msg)
        bad = [(r, m) for r, m in enumerate(msgs) if m is not None]
        if not bad:
            return
        r, m = bad[0]
        name, text = m.split(": ", 1)
        kind = {"ValueError": ValueError, "TypeError": TypeError}.get(name, RuntimeError)
        raise kind(f"rank {r} of {self.world}: {text}") from error


class TargetSharded(Distributed):
    """Target-sharded solve: every rank scores the *same* points against its slice of the
    targets (:class:`ShardedScorer` merges the winners), so the per-sample statistics
    are already global and their reductions are the identity; only the group-wide
    operations (broadcast, checks) communicate."""

    owns = Local.owns
    sum_ = Local.sum_
    count = Local.count
    kth = Local.kth
    gather_ordered = Local.gather_ordered
    smallest = Local.smallest

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous slice [lo, hi) of n targets (sizes differ by at most one)."""
        q, r = divmod(n, self.world)
        lo = self.rank * q + min(self.rank, r)
        return lo, lo + q + (self.rank < r)


class ShardedScorer:
    """A :class:`~otgen.transport._scoring.Scorer` whose targets are split over the ranks.

    Each rank holds rows [lo, hi) of the targets and scores every point against them;
    the per-rank winners (best, or top-k) are all-gathered and merged, so ``best`` and
    ``topk`` return the same cells as a single scorer over all targets.
    """

    def __init__(self, Y: torch.Tensor, max_memory: int, comm: TargetSharded):
        self.N, self.d = Y.shape
        self.comm = comm
        self.lo, self.hi = comm.shard(self.N)
        self.local = Scorer(Y[self.lo:self.hi].contiguous(), max_memory)

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        buf = self.comm._to(t.contiguous())
        bufs = [torch.empty_like(buf) for _ in range(self.comm.world)]
        self.comm.dist.all_gather(bufs, buf)
        return torch.stack(bufs).to(t.device)                          # (world, *t.shape)

    def best(self, X: torch.Tensor, h: torch.Tensor):
        v, i = self.local.best(X, h[self.lo:self.hi])                   # (m,), (m,)
        V, I = self._gather(v), self._gather(i + self.lo)               # (world, m)
        w = V.argmax(0)                                                 # first rank among ties
        return V.gather(0, w[None]).squeeze(0), I.gather(0, w[None]).squeeze(0)

    def topk(self, X: torch.Tensor, h: torch.Tensor, k: int):
        k = min(k, self.N)
        v, i = self.local.topk(X, h[self.lo:self.hi], k)                # (m, k') with k' <= k
        if v.shape[1] < k:                                              # a shard smaller than k
            pad = k - v.shape[1]
            v = torch.cat([v, v.new_full((v.shape[0], pad), float("-inf"))], 1)
            i = torch.cat([i, i.new_zeros((i.shape[0], pad))], 1)
        V = self._gather(v).permute(1, 0, 2).flatten(1)                 # (m, world * k)
        I = self._gather(i + self.lo).permute(1, 0, 2).flatten(1)
        vals, sel = V.topk(k, dim=1)
        return vals, I.gather(1, sel)


def make_comm(parallel, device) -> Local:
    """``None`` -> :class:`Local`; ``"samples"`` -> :class:`Distributed`; ``"targets"`` ->
    :class:`TargetSharded`, over the default process group."""
    if parallel is None:
        return Local()
    return Distributed(device) if parallel == "samples" else TargetSharded(device)


__all__ = ["Local", "Distributed", "TargetSharded", "ShardedScorer", "make_comm"]
