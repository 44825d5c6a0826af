"""One rank of a sample-parallel solve, started by tests/transport/test_distributed.py.

python dist_worker.py TASK RANK WORLD INIT_FILE OUT_DIR

TASK: ``fit`` (fit, write heights), ``clusters`` (the same on tight clusters: coarse steps),
``targets`` (the same, target-sharded), ``sleep`` (fit with a checkpoint every iteration and
stall forever after iteration 3, to be killed), ``resume`` (resume that checkpoint),
``bad`` (rank 1 gets a NaN in its targets).
"""

import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from otgen.transport import SemiDiscreteOT


def problem():
    """Three clusters in 3-D: the solver needs a few full-Newton steps."""
    rng = np.random.default_rng(0)
    centres = np.array([[-1.0, 0, 0], [1.0, 0.5, 0], [0, -1.0, 1.0]])
    return centres[rng.integers(0, 3, 240)] + 0.3 * rng.normal(size=(240, 3))


def clusters():
    """Five clusters of std 0.003 in 4-D: the solver takes coarse steps on groups of cells."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 4))[np.arange(300) % 5] * 2 + 0.003 * rng.normal(size=(300, 4))


def main():
    task, rank, world, init_file, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    if task == "kth":   # the exact distributed order statistics against one process's
        from otgen.transport._dist import Distributed
        comm = Distributed(torch.device("cpu"))
        parts = [torch.from_numpy(np.random.default_rng(r).choice(50, 300 + 100 * r) * 0.37) for r in range(world)]
        parts[0][:5] = 1e-300
        allv = torch.cat(parts)
        got = [comm.kth(parts[rank], k) for k in (1, 2, 7, 300, allv.numel() // 2, allv.numel())]
        want = [float(allv.kthvalue(k).values) for k in (1, 2, 7, 300, allv.numel() // 2, allv.numel())]
        # target-sharded scoring (shards of 5 and 4 targets, k = 6) against one scorer
        from otgen.transport._dist import ShardedScorer, TargetSharded
        from otgen.transport._scoring import Scorer
        g = torch.Generator().manual_seed(0)
        Yt, X, h = torch.randn(9, 3, generator=g), torch.randn(500, 3, generator=g), torch.randn(9, generator=g)
        sh, one = ShardedScorer(Yt, 1 << 20, TargetSharded(torch.device("cpu"))), Scorer(Yt, 1 << 20)
        same = [torch.equal(sh.best(X, h)[1], one.best(X, h)[1]),
                torch.equal(sh.topk(X, h, 6)[1], one.topk(X, h, 6)[1]),
                torch.equal(sh.topk(X, h, 6)[0], one.topk(X, h, 6)[0])]
        (out / f"kth{rank}.txt").write_text(repr((got, want, same)))
        dist.destroy_process_group()
        return
    Y = clusters() if task == "clusters" else problem()
    ck = out / "ck.pt"
    callback = None
    if task == "bad" and rank == 1:
        Y[5, 1] = np.nan
    if task == "sleep":
        def callback(it, h, info):
            if it == 3:
                (out / f"stalled{rank}").write_text("3")
                time.sleep(600)
    ot = SemiDiscreteOT(tol=0.03 if task == "clusters" else 0.01, verbose=False,
                        init="linear" if task == "clusters" else "multiscale",
                        parallel="targets" if task == "targets" else "samples",
                        checkpoint=ck if task in ("sleep", "resume") else None, checkpoint_every=1)
    try:
        ot.fit(Y, resume=task == "resume", callback=callback)
    except (ValueError, TypeError) as e:
        (out / f"error{rank}.txt").write_text(f"{type(e).__name__}: {e}")
        dist.destroy_process_group()
        sys.exit(3)
    np.save(out / f"heights{rank}.npy", ot.heights_.cpu().numpy())
    (out / f"n_iter{rank}.txt").write_text(str(ot.n_iter_))
    (out / f"coarse{rank}.txt").write_text(str(sum(bool(e["coarse_groups"]) for e in ot.history_)))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
