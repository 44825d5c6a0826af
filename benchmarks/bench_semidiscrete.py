"""otgen's SemiDiscreteOT against POT's ``ot.semidiscrete.solve_semidiscrete``, side by side.

Problems: N targets from a standardised 10-Gaussian mixture in R^d, uniform masses,
uniform source on the cube [-1, 1]^d. Both solvers run in this process, one after
the other, on the same problem. The *benchmark* (not the solvers) measures the TV
error ½ Σ |μ(W_i) − ν_i| of each solver's heights at several moments of its run, with
its own scrambled-Sobol points (``eval_points`` of them, chunked), and reports the
estimate's noise floor next to each figure. Solver time excludes evaluation time.

It also times one otgen iteration (scoring M points against N targets: GEMM + argmax
+ histogram) against the bare ``torch.mm`` of the same shapes, and records peak extra
memory of the scoring against the ``max_memory`` setting.

    python benchmarks/bench_semidiscrete.py                  # the CPU sizes of the issue
    python benchmarks/bench_semidiscrete.py --sizes 1000x4 2000x8 --pot-factor 10

Writes ``benchmarks/results/semidiscrete.json`` and ``semidiscrete.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:          # benchmark this checkout even without an install
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from otgen._base import spawn_seed  # noqa: E402
from otgen.data.toy2d import gaussian_mixture  # noqa: E402
from otgen.figures.convergence import convergence_figure  # noqa: E402
from otgen.transport import SemiDiscreteOT, SourceSampler  # noqa: E402
from otgen.transport._scoring import Scorer  # noqa: E402

TARGETS = {1000: 0.02, 2000: 0.02, 5000: 0.02, 20000: 0.05}


def tv_error(Y: torch.Tensor, h: torch.Tensor, n_points: int, seed: int = 0):
    """Independent QMC estimate of the TV error and its noise floor (two replicates, the streams
    ``spawn_seed(seed, "evaluation", r)``, independent of the solver's own)."""
    scorer = Scorer(Y - Y.mean(0), 256 << 20)
    counts = torch.zeros(2, Y.shape[0], dtype=torch.float64)
    h32 = h.float()
    for r in range(2):
        s = SourceSampler("uniform", Y.shape[1], spawn_seed(seed, "evaluation", r), qmc=True)
        left = n_points // 2
        while left > 0:
            m = min(1 << 16, left)
            counts[r] += torch.bincount(scorer.best(s.draw(m), h32)[1], minlength=Y.shape[0]).double()
            left -= m
    masses = counts / (n_points // 2)
    tv = 0.5 * float((masses.mean(0) - 1.0 / Y.shape[0]).abs().sum())
    floor = 0.25 * float((masses[0] - masses[1]).abs().sum())
    return tv, floor


def run_otgen(Y, tol, max_time):
    """Fit with snapshots of the heights after each iteration (solver time only)."""
    snaps = []
    t0 = time.perf_counter()

    def cb(it, h, info):
        snaps.append((info["time"], h.clone(), it))

    sd = SemiDiscreteOT(tol=tol, max_iter=200, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd.fit(Y, callback=cb)
    return sd, snaps, time.perf_counter() - t0


def run_pot(Y, budget, batch_size):
    """POT's averaged SGD with a sampler on the same cube. To see its error at several
    moments without disturbing its step-size schedule, it is run from scratch with
    max_iter = 250, 500, 1000, ... until one run exceeds the time budget; each run's
    wall time is its own."""
    import ot

    d = Y.shape[1]
    Yn = Y.numpy().astype(np.float64)
    snaps, iters = [], 250
    while True:
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        g = ot.semidiscrete.solve_semidiscrete(Yn, sampler_source=lambda n: rng.uniform(-1, 1, size=(n, d)),
                                               batch_size=batch_size, max_iter=iters)
        elapsed = time.perf_counter() - t0
        h = (np.asarray(g) - (Yn ** 2).sum(1)) / 2   # argmin |x-y_j|^2 - g_j  ==  argmax <x,y_j> + h_j
        snaps.append((elapsed, torch.as_tensor(h - h.mean()), iters))
        if elapsed >= budget or iters >= 10**7:
            return snaps
        iters *= 2


def time_iteration(Y, M, max_memory):
    """One otgen scoring pass over M points vs the bare torch.mm of the same block shapes."""
    Yc = (Y - Y.mean(0)).float()
    sc = Scorer(Yc, max_memory)
    X = SourceSampler("uniform", Y.shape[1], 0).draw(M)
    h = torch.zeros(Y.shape[0])
    rows = sc.block_rows

    def ours():
        torch.bincount(sc.best(X, h)[1], minlength=Y.shape[0])

    out = torch.empty(rows, Y.shape[0])

    def bare():
        for r in range(0, M, rows):
            xb = X[r:r + rows]
            torch.mm(xb, Yc.T, out=out[: xb.shape[0]])

    def best_of(f, reps=3):
        f()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return min(ts)

    t_ours, t_bare = best_of(ours), best_of(bare)
    peak_block = rows * sc.col_chunk * 4
    return dict(M=M, ours_s=t_ours, bare_mm_s=t_bare, ratio=t_ours / t_bare, block_rows=rows,
                col_chunk=sc.col_chunk, score_block_bytes=peak_block, max_memory=max_memory)


def first_time_below(curve, target):
    for t, tv, _floor in curve:
        if tv <= target:
            return t
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["1000x4", "2000x8", "5000x16", "20000x32"])
    p.add_argument("--pot-factor", type=float, default=10.0, help="POT's time budget as a multiple of otgen's")
    p.add_argument("--pot-max-seconds", type=float, default=600.0)
    p.add_argument("--pot-batch", type=int, default=256)
    p.add_argument("--eval-per-target", type=int, default=3000)
    p.add_argument("--eval-max", type=int, default=2**24)
    p.add_argument("--curve-points", type=int, default=2**21,
                   help="evaluation points for intermediate moments (the final heights get 3000·N)")
    p.add_argument("--curve-evals", type=int, default=5, help="moments of otgen's run to evaluate")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = dict(machine=dict(python=sys.version.split()[0], torch=torch.__version__, cpu=platform.processor(),
                                threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                                loadavg_start=list(os.getloadavg()), date=time.strftime("%Y-%m-%d %H:%M")),
                   problems=[])
    for size in args.sizes:
        N, d = map(int, size.lower().split("x"))
        target = TARGETS.get(N, 0.02)
        Y = torch.as_tensor(gaussian_mixture(N, d, seed=0)[0], dtype=torch.float32)
        n_eval = min(args.eval_max, 1 << math.ceil(math.log2(args.eval_per_target * N)))
        n_quick = min(n_eval, args.curve_points)
        sd, snaps, wall = run_otgen(Y, target, None)
        # the curve with n_quick points per evaluation; the final heights with n_eval points
        pick = sorted(set(np.linspace(0, len(snaps) - 1, args.curve_evals).astype(int)))
        curve = []
        for i in pick:
            t, h, it = snaps[i]
            tv, floor = tv_error(Y, h, n_eval if i == len(snaps) - 1 else n_quick)
            curve.append((t, tv, floor))
            print(f"[{size}] otgen  t={t:7.1f}s iter={it:3d} TV={tv:.4f} (floor {floor:.4f})", flush=True)
        t_ot = snaps[-1][0]
        budget = min(args.pot_factor * t_ot, args.pot_max_seconds)
        pot_snaps = run_pot(Y, budget, args.pot_batch)
        pot_curve = []
        for j, (t, h, it) in enumerate(pot_snaps):
            tv, floor = tv_error(Y, h, n_eval if j == len(pot_snaps) - 1 else n_quick)
            pot_curve.append((t, tv, floor))
            print(f"[{size}] POT    t={t:7.1f}s iter={it:6d} TV={tv:.4f} (floor {floor:.4f})", flush=True)
        it_time = time_iteration(Y, 2**18, sd.max_memory)
        t_ours = first_time_below(curve, target)
        t_pot = first_time_below(pot_curve, target)
        best_pot = min(tv for _, tv, _ in pot_curve)
        prob = dict(N=N, d=d, target_tv=target, eval_points=n_eval, otgen_curve=curve, pot_curve=pot_curve,
                    otgen_converged=bool(sd.converged_), otgen_iterations=sd.n_iter_, otgen_time_to_target=t_ours,
                    pot_time_to_target=t_pot, pot_best_tv=best_pot, pot_budget_s=budget,
                    speedup=(t_pot / t_ours) if (t_ours and t_pot) else None, iteration=it_time)
        results["problems"].append(prob)
        print(f"[{size}] iteration: ours {it_time['ours_s']:.3f}s vs bare mm {it_time['bare_mm_s']:.3f}s "
              f"(ratio {it_time['ratio']:.2f})", flush=True)
        results["machine"]["loadavg_end"] = list(os.getloadavg())
        (out / "semidiscrete.json").write_text(json.dumps(results, indent=2))
    write_table(results, out)


def matched_speedup(ours, pot):
    """Ratio of POT's time to otgen's time at the smallest error POT reached.

    For POT's best error e*, otgen's time is the first of its evaluated moments with
    error <= e* (a conservative, coarse reading: otgen's curve has few points)."""
    t_pot, e_pot = min(((t, tv) for t, tv, _ in pot), key=lambda p: p[1])
    t_ours = first_time_below(ours, e_pot)
    return (t_pot / t_ours, e_pot) if t_ours else (None, e_pot)


def write_table(results, out):
    lines = ["| N × d | target TV | otgen: time to target (final TV ± floor) | POT: time to target (longest run: "
             "time, TV) | speed-up at target | speed-up at POT's best TV | iteration / bare mm |",
             "|---|---|---|---|---|---|---|"]
    for r in results["problems"]:
        last = r["otgen_curve"][-1]
        t_ours = r["otgen_time_to_target"]
        pot_t_max, pot_tv_last = r["pot_curve"][-1][0], r["pot_curve"][-1][1]
        ours = f"{t_ours:.1f} s" if t_ours else "not reached"
        pot = f"{r['pot_time_to_target']:.1f} s" if r["pot_time_to_target"] else "not reached"
        pot += f" ({pot_t_max:.0f} s, {pot_tv_last:.4f})"
        if r["speedup"]:
            sp = f"{r['speedup']:.1f}×"
        elif t_ours and not r["pot_time_to_target"]:
            sp = f"> {pot_t_max / t_ours:.1f}×"
        else:
            sp = "—"
        ms, e = matched_speedup(r["otgen_curve"], r["pot_curve"])
        ms = f"{ms:.1f}× (TV {e:.3f})" if ms else "—"
        lines.append(f"| {r['N']} × {r['d']} | {r['target_tv']} | {ours} ({last[1]:.4f} ± {last[2]:.4f}) | {pot} "
                     f"| {sp} | {ms} | {r['iteration']['ratio']:.2f} |")
    table = "\n".join(lines)
    (out / "semidiscrete.md").write_text(table + "\n")
    convergence_figure(results["problems"], out, "semidiscrete_convergence")   # TV against time, otgen and POT
    print(table)


def _table_from_json(path):
    results = json.loads(Path(path).read_text())
    write_table(results, Path(path).parent)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--table-from":
        _table_from_json(sys.argv[2])
    else:
        main()
