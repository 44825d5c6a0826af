"""Sample-parallel semi-discrete OT: 1 process versus P processes on the same problem.

Every process uses one thread; each fit runs ``--iters`` iterations at a fixed number
of points per iteration (``n_samples = max_samples = M``), so iterations are
comparable. Reported per process count: median seconds per iteration, speed-up over
one process, and the time spent in collectives per iteration (all-reduce of the
counts, the order-statistic bisections, the gathers), measured by timing every call
of the communicator. The heights after the same iterations are compared with the
single-process run (they should agree to rounding).

    python benchmarks/bench_distributed.py                       # N=5000, d=16, M=2^20, 1 vs 2 processes
    python benchmarks/bench_distributed.py --n 2000 --d 8 --m-log2 18 --iters 3 --out /tmp/dist

Writes ``distributed.json`` and ``distributed.md`` to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:          # benchmark this checkout even without an install
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from otgen.transport import SemiDiscreteOT, _dist  # noqa: E402


def problem(n, d, seed=0):
    """Latent-like targets: 10 Gaussian clusters in d dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, d))
    return centres[rng.integers(0, 10, n)] + 0.35 * rng.normal(size=(n, d))


def worker(rank, world, init, out, n, d, m_log2, iters):
    """One rank: fit for ``iters`` iterations, time the iterations and the collectives."""
    torch.set_num_threads(1)
    comm_time = [0.0]
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=600))
        for name in ("sum_", "kth", "gather_ordered", "smallest", "broadcast", "count"):
            fn = getattr(_dist.Distributed, name)

            def timed(self, *a, _fn=fn, **k):
                t0 = time.perf_counter()
                try:
                    return _fn(self, *a, **k)
                finally:
                    comm_time[0] += time.perf_counter() - t0
            setattr(_dist.Distributed, name, timed)
    Y = problem(n, d)
    M = 2 ** m_log2
    marks = []
    ot = SemiDiscreteOT(tol=1e-6, max_iter=iters, n_samples=M, max_samples=M, init="linear",
                        parallel="samples" if world > 1 else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ot.fit(Y, callback=lambda it, h, info: marks.append((time.perf_counter(), comm_time[0])))
    if rank == 0:
        t = np.array([m[0] for m in marks])
        c = np.array([m[1] for m in marks])
        res = dict(world=world, iter_times=np.diff(t).tolist(), comm_times=np.diff(c).tolist(),
                   heights=ot.heights_.cpu().numpy().tolist(), tv=[e["tv"] for e in ot.history_])
        Path(out).write_text(json.dumps(res))
    if world > 1:
        dist.destroy_process_group()


def run(world, args):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "res.json"
        init = Path(tmp) / "init"
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(r), str(world), str(init), str(out),
                                   str(args.n), str(args.d), str(args.m_log2), str(args.iters)], env=env)
                 for r in range(world)]
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"a worker of the {world}-process run failed")
        return json.loads(out.read_text())


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        r, w, init, out, n, d, m, it = sys.argv[2:]
        worker(int(r), int(w), init, out, int(n), int(d), int(m), int(it))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--m-log2", type=int, default=20, help="points per iteration: 2^m")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    rows = []
    base = None
    for world in args.procs:
        res = run(world, args)
        it = float(np.median(res["iter_times"]))
        comm = float(np.median(res["comm_times"])) if world > 1 else 0.0
        if base is None:
            base = res
        dh = float(np.abs(np.array(res["heights"]) - np.array(base["heights"])).max())
        rows.append(dict(processes=world, seconds_per_iter=it, comm_seconds_per_iter=comm,
                         max_height_diff_vs_first=dh, tv=res["tv"]))
        print(f"{world} process(es): {it:.3f} s/iter, collectives {comm:.3f} s/iter, |dh| {dh:.2e}", flush=True)
    t1 = rows[0]["seconds_per_iter"]
    for r in rows:
        r["speedup"] = t1 / r["seconds_per_iter"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(n=args.n, d=args.d, points_per_iter=2 ** args.m_log2, iters=args.iters, threads_per_process=1,
                cpu_count=os.cpu_count(), date=time.strftime("%Y-%m-%d"))
    (out / "distributed.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [f"Sample-parallel solve, N = {args.n}, d = {args.d}, {2 ** args.m_log2} points per iteration, "
             f"1 thread per process, {os.cpu_count()} cores, gloo on loopback.", "",
             "| processes | s / iteration | speed-up | collectives s / iteration | max |h - h_1| |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['processes']} | {r['seconds_per_iter']:.3f} | {r['speedup']:.2f}x | "
                     f"{r['comm_seconds_per_iter']:.3f} | {r['max_height_diff_vs_first']:.1e} |")
    (out / "distributed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
