"""How SemiDiscreteOT scales with the number of targets N and the dimension d.

For every size N × d (default N in {10^3, 10^4, 10^5}, d in {2, 16, 64, 128}; targets
from the standardised 10-Gaussian mixture of ``otgen.data.toy2d.gaussian_mixture``,
uniform masses, uniform source on the cube [-1, 1]^d) it measures, each size in a fresh
subprocess (so that its peak memory is its own):

* **time per solver iteration** at a fixed number M of source points: a real
  ``SemiDiscreteOT.fit`` with ``n_samples = max_samples = M`` (so M never grows),
  ``init="linear"`` (no multiscale warm start to wait for; ``--init multiscale`` starts
  near the solution, as a real solve does after its warm start) and ``max_iter = --iters``;
  the per-iteration time is the median of the differences of ``history_[i]["time"]``
  over the accepted iterations among 2.. (the first one carries one-time
  costs; a rejected iteration only re-scores points). M is chosen per size so
  that one iteration takes about ``--iter-seconds`` (calibrated with a short fit at
  M = 2^10), never more than the solver's default first-iteration count
  ``max(2^16, 64 N)``; the table says which M was used;
* **the bare GEMM** of the same M points: the (M × d) @ (d × N) product plus the bias h
  (``torch.addmm``), chunked in the solver's own block shapes (``Scorer.block_rows`` ×
  ``Scorer.col_chunk``) and in ``max_memory``-sized row blocks; the faster of the two is
  the lower bound of one iteration, and the table reports iteration / bare GEMM;
* the solver's scoring passes over the same M points (``Scorer.best``: GEMM + block row
  argmax; ``Scorer.topk`` with k = 2 and k = 6) against the same bare GEMM, which says
  where an iteration's time goes;
* **peak memory**: ``ru_maxrss`` of the subprocess after the fit (on CUDA
  ``torch.cuda.max_memory_allocated``), next to the value before the fit;
* **time to a TV target** where that is affordable (CPU default: N ≤ 10^4 and N·d ≤ 1.6·10^5;
  CUDA: N ≤ 10^4 and the sizes (60000, 64), (200000, 128)): a default fit with
  ``tol = target`` (wall time including the multiscale warm start), stopped after ``--tv-max-seconds``; then the TV error
  ½ Σ |μ(W_i) − ν_i| of the final heights, measured by the benchmark with independent
  scrambled-Sobol points (two replicates of M_eval / 2, ``--eval-seconds`` budget),
  reported with the evaluation floor 0.4·sqrt(N / M_eval) and the replicates' own spread.

    python benchmarks/bench_scaling.py                      # the full CPU grid (about 20 min, one thread)
    python benchmarks/bench_scaling.py --sizes 10000x16 --threads 2
    python benchmarks/bench_scaling.py --quick --out /tmp/q # a small subset (the tests use it)

Writes ``scaling.json`` and ``scaling.md`` under ``--out`` (default ``benchmarks/results``);
on CUDA ``scaling_cuda.{json,md}``, so the CPU tables stay. The GPU sizes in one command::

    python benchmarks/bench_scaling.py --device cuda      # + 60000x64, 200000x128 to TV 0.02 (1800 s budget each)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:          # benchmark this checkout even without an install
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from _budget import fit_within  # noqa: E402

from otgen._base import spawn_seed  # noqa: E402
from otgen.data.toy2d import gaussian_mixture  # noqa: E402
from otgen.transport import SemiDiscreteOT, SourceSampler  # noqa: E402
from otgen.transport._scoring import Scorer  # noqa: E402

DEFAULT_N = (1000, 10000, 100000)
DEFAULT_D = (2, 16, 64, 128)
CUDA_SIZES = ((60000, 64), (200000, 128))
CPU_TV_TARGETS = {1000: 0.02, 10000: 0.05}   # the certification cost grows like N / target^2
CUDA_TV_TARGET = 0.02
CPU_TV_MAX_ND = 160_000                      # N·d above this: time to target not run on the CPU
CPU_TV_MAX_SECONDS = 150.0                   # budget of one fit to the target on the CPU
CUDA_TV_MAX_SECONDS = 1800.0                 # ... on CUDA: 200000 x 128 to TV 0.02 needs ~3e8 points per iteration


# ----------------------------------------------------------------------------- helpers

def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(1.0, x)))))


def _pow2_round(x: float) -> int:
    return 1 << max(0, int(round(math.log2(max(1.0, x)))))


def _pow2_ceil(x: float) -> int:
    return 1 << max(0, int(math.ceil(math.log2(max(1.0, x)))))


def default_first_m(N: int) -> int:
    """The solver's default first-iteration point count: max(2^16, 64 N) rounded up to a power of two
    (``SemiDiscreteOT.fit`` with ``n_samples=None``)."""
    return _pow2_ceil(max(2**16, 64 * N))


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is in KiB on Linux)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(f, device, reps):
    """Minimum wall time of ``reps`` calls after one warm-up call."""
    f()
    _sync(device)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        _sync(device)
        ts.append(time.perf_counter() - t)
    return min(ts)


def _targets(N, d, device):
    return torch.as_tensor(gaussian_mixture(N, d, seed=0)[0], dtype=torch.float32, device=device)


def _fit_fixed_m(Y, M, iters, device, init="linear"):
    """A real fit at a fixed M points per iteration; returns the fitted solver."""
    sd = SemiDiscreteOT(tol=1e-6, max_iter=iters, n_samples=M, max_samples=M, init=init, device=device, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd.fit(Y)
    return sd


def _iteration_times(history):
    """Per-iteration seconds from the cumulative ``history_[i]["time"]``."""
    t = [e["time"] for e in history]
    return [t[0]] + [b - a for a, b in zip(t, t[1:])]


# ----------------------------------------------------------------------------- workers (one per subprocess)

def worker_iteration(spec):
    """Time solver iterations at a fixed M against the bare GEMM of the same points; peak memory."""
    N, d, device = spec["N"], spec["d"], torch.device(spec["device"])
    Y = _targets(N, d, device)
    m_default = default_first_m(N)
    # calibration: a short fit at a small M; the iteration time is about proportional to M
    m0 = min(spec["m_calib"], m_default)
    cal = _iteration_times(_fit_fixed_m(Y, m0, 3, device).history_)
    t0 = statistics.median(cal[1:])
    M = _pow2_round(m0 * spec["iter_seconds"] / max(t0, 1e-9))
    M = max(spec["m_min"], min(M, m_default, spec["m_max"]))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        mem_before = torch.cuda.memory_allocated(device) / 2**20
    rss_before = _rss_mb()
    t_wall = time.perf_counter()
    sd = _fit_fixed_m(Y, M, spec["iters"], device, spec.get("init", "linear"))
    t_wall = time.perf_counter() - t_wall
    rss_peak = _rss_mb()
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    hist = sd.history_
    per_it = _iteration_times(hist)
    acc = [bool(e["accepted"]) for e in hist]
    steady = per_it[1:] if len(per_it) > 1 else per_it
    steady_acc = [t for t, a in zip(per_it[1:], acc[1:]) if a]
    steady_rej = [t for t, a in zip(per_it[1:], acc[1:]) if not a]
    # an accepted iteration does all the work (scoring, Hessian, step, line search, revival of empty
    # cells); a rejected one only scores the points and shortens the step
    t_iter = statistics.median(steady_acc or steady)

    # the bare GEMM + bias of the same M points, in the solver's block shapes and in max_memory blocks
    Yc = (Y - Y.mean(0)).float()
    Yt = Yc.T.contiguous()                                           # (d, N)
    sc = Scorer(Yc, int(sd.max_memory))
    X = SourceSampler("uniform", d, 1, dtype=torch.float32, device=device).draw(M)   # (M, d)
    h = torch.zeros(N, device=device)
    bufs = {}

    def bare(rows, cols):
        def run():
            for r in range(0, M, rows):
                xb = X[r:r + rows]
                for c0 in range(0, N, cols):
                    c1 = min(N, c0 + cols)
                    key = (xb.shape[0], c1 - c0)
                    if key not in bufs:
                        bufs[key] = torch.empty(key, device=device)
                    torch.addmm(h[c0:c1], xb, Yt[:, c0:c1], out=bufs[key])
        return run

    reps = spec["reps"]
    t_bare_solver = _best_of(bare(sc.block_rows, sc.col_chunk), device, reps)
    bufs.clear()
    t_best = _best_of(lambda: sc.best(X, h), device, reps)
    t_top2 = _best_of(lambda: sc.topk(X, h, 2), device, reps)
    t_top6 = _best_of(lambda: sc.topk(X, h, 6), device, reps)
    big_rows = max(1, min(M, int(sd.max_memory) // (4 * sc.col_chunk)))
    t_bare_big = _best_of(bare(big_rows, sc.col_chunk), device, reps)
    bufs.clear()
    t_bare = min(t_bare_solver, t_bare_big)
    return dict(
        N=N, d=d, device=str(device), M=M, m_default=m_default, iters=len(hist),
        iteration_s=t_iter, iteration_min_s=min(steady), iteration_times_s=per_it, first_iteration_s=per_it[0],
        rejected_iteration_s=statistics.median(steady_rej) if steady_rej else None,
        fit_wall_s=t_wall, n_empty=[e["n_empty"] for e in hist], tv=[e["tv"] for e in hist], accepted=acc,
        bare_gemm_s=t_bare, bare_gemm_solver_blocks_s=t_bare_solver, bare_gemm_big_blocks_s=t_bare_big,
        block_rows=sc.block_rows, col_chunk=sc.col_chunk, big_block_rows=big_rows,
        ratio=t_iter / t_bare, gemm_gflops=2.0 * M * N * d / t_bare / 1e9,
        argmax_pass_s=t_best, top2_pass_s=t_top2, top6_pass_s=t_top6,
        argmax_ratio=t_best / t_bare, top2_ratio=t_top2 / t_bare, top6_ratio=t_top6 / t_bare,
        per_point_iteration_us=1e6 * t_iter / M,
        default_m_iteration_lower_bound_s=t_best * m_default / M,
        calibration=dict(M=m0, iteration_s=t0),
        rss_before_fit_mb=rss_before, peak_rss_mb=rss_peak, peak_rss_after_all_mb=_rss_mb(),
        gpu_peak_mb=gpu_peak, gpu_before_fit_mb=mem_before if device.type == "cuda" else None,
        targets_mb=N * d * 4 / 2**20, score_block_mb=sc.block_rows * sc.col_chunk * 4 / 2**20,
        max_memory_mb=int(sd.max_memory) / 2**20,
    )


def tv_error(Y, h, n_points, device, seed=0, chunk=None):
    """Independent QMC estimate of ½ Σ |μ(W_i) − ν_i| (uniform ν) with two replicates of n_points / 2.

    The replicates are the streams ``spawn_seed(seed, "evaluation", r)``, independent of the
    solver's own. Returns (tv, replicate noise ¼ Σ |a_i − b_i|, seconds)."""
    N, d = Y.shape
    chunk = chunk or (1 << 16 if device.type == "cpu" else 1 << 20)
    scorer = Scorer(Y - Y.mean(0), 256 << 20)
    counts = torch.zeros(2, N, dtype=torch.float64, device=device)
    h32 = h.to(device=device, dtype=torch.float32)
    t = time.perf_counter()
    for r in range(2):
        s = SourceSampler("uniform", d, spawn_seed(seed, "evaluation", r), qmc=True, device=device)
        left = n_points // 2
        while left > 0:
            m = min(chunk, left)
            counts[r] += torch.bincount(scorer.best(s.draw(m), h32)[1], minlength=N).double()
            left -= m
    _sync(device)
    masses = counts / (n_points // 2)
    tv = 0.5 * float((masses.mean(0) - 1.0 / N).abs().sum())
    noise = 0.25 * float((masses[0] - masses[1]).abs().sum())
    return tv, noise, time.perf_counter() - t


def worker_tv(spec):
    """Time a default fit to TV ≤ target; measure the final heights' TV with independent points."""
    N, d, device, target = spec["N"], spec["d"], torch.device(spec["device"]), spec["target"]
    Y = _targets(N, d, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _rss_mb()
    snap = {}
    t0 = time.perf_counter()

    def cb(it, h, info):
        now = time.perf_counter() - t0
        if not snap:
            snap["init_s"] = now - info["time"]     # history_ times start after the warm start
        snap.update(h=h, it=it, t=now, info=dict(info))

    sd = SemiDiscreteOT(tol=target, max_iter=spec["max_iter"], device=device, seed=0)
    stopped, _ = fit_within(sd, Y, callback=cb, max_seconds=spec["max_seconds"], start=t0)
    wall = time.perf_counter() - t0
    rss_peak = _rss_mb()
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    converged = (not stopped) and bool(sd.converged_)
    h = snap["h"]
    info = snap["info"]
    # evaluation: floor 0.4 sqrt(N / M_eval) <= target / 4 if the budget allows it
    m_need = _pow2_ceil((1.6 / target) ** 2 * N)
    probe = 1 << 16 if device.type == "cpu" else 1 << 20
    _, _, t_probe = tv_error(Y, h, probe, device)
    m_afford = _pow2_floor(spec["eval_seconds"] * probe / max(t_probe, 1e-9))
    m_eval = max(probe, min(m_need, m_afford, spec["eval_max"]))
    tv, noise, t_eval = tv_error(Y, h, m_eval, device)
    return dict(N=N, d=d, device=str(device), target_tv=target, converged=converged, stopped_at_budget=stopped,
                max_seconds=spec["max_seconds"], fit_wall_s=wall, time_to_target_s=wall if converged else None,
                warm_start_s=snap.get("init_s"), iterations=snap["it"], final_M=info["n_samples"],
                solver_tv=info["tv"], solver_noise=info["noise"],
                eval_points=m_eval, eval_points_needed=m_need, eval_s=t_eval, tv=tv, eval_noise=noise,
                eval_floor=0.4 * math.sqrt(N / m_eval), reached=tv <= target,
                rss_before_fit_mb=rss_before, peak_rss_mb=rss_peak, gpu_peak_mb=gpu_peak)


# ----------------------------------------------------------------------------- driver

def _run_worker(spec, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        return dict(N=spec["N"], d=spec["d"], error=f"worker exited with {p.returncode}")
    return json.loads(lines[-1][len("RESULT "):])


def _parse_sizes(sizes):
    out = []
    for s in sizes:
        N, d = s.lower().split("x")
        out.append((int(float(N)), int(d)))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=None, help="N×d sizes such as 10000x16 (default: the full grid)")
    p.add_argument("--tv-sizes", nargs="*", default=None,
                   help="sizes that also get a time to TV target (default: the affordable ones, see above)")
    p.add_argument("--tv-target", type=float, default=None, help="one TV target for all sizes")
    p.add_argument("--quick", action="store_true", help="a small subset in seconds (used by the tests)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--iters", type=int, default=5, help="iterations of the fixed-M fit")
    p.add_argument("--iter-seconds", type=float, default=3.0, help="aimed time of one iteration (chooses M)")
    p.add_argument("--init", default="linear", choices=["linear", "multiscale"],
                   help="start of the fixed-M fit: linear (far from the solution: many empty cells) or the "
                        "multiscale warm start (near it: the steady iterations of a real solve); default linear")
    p.add_argument("--reps", type=int, default=2, help="repetitions (best of) of the bare GEMM and scoring passes")
    p.add_argument("--tv-max-seconds", type=float, default=None,
                   help="time budget of one fit to the TV target (default 150 s on the CPU, 1800 s on CUDA)")
    p.add_argument("--eval-seconds", type=float, default=60.0, help="time budget of one TV evaluation")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        torch.set_num_threads(spec["threads"])
        res = worker_iteration(spec) if spec["mode"] == "iter" else worker_tv(spec)
        print("RESULT " + json.dumps(res), flush=True)
        return

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    m_max, m_calib, eval_max = (2**22, 2**10, 2**24) if device == "cpu" else (2**26, 2**14, 2**30)
    if args.quick:
        sizes = _parse_sizes(args.sizes or ["256x4"])
        tv_sizes = _parse_sizes(args.tv_sizes if args.tv_sizes is not None else ["256x4"])
        iters, iter_seconds, reps, m_max, m_calib = 3, 0.05, 1, 2**13, 2**9
        tv_max_seconds, eval_seconds, eval_max = 15.0, 0.5, 2**17
        target_of = lambda N: args.tv_target or 0.1  # noqa: E731
    else:
        sizes = _parse_sizes(args.sizes) if args.sizes else [(N, d) for N in DEFAULT_N for d in DEFAULT_D]
        if device == "cuda" and not args.sizes:
            sizes += list(CUDA_SIZES)
        if args.tv_sizes is not None:
            tv_sizes = _parse_sizes(args.tv_sizes)
        elif device == "cuda":
            tv_sizes = [(N, d) for N, d in sizes if N <= 10000 or (N, d) in CUDA_SIZES]
        else:
            tv_sizes = [(N, d) for N, d in sizes if N <= 10000 and N * d <= CPU_TV_MAX_ND]
        iters, iter_seconds, reps = args.iters, args.iter_seconds, args.reps
        tv_max_seconds = args.tv_max_seconds or (CUDA_TV_MAX_SECONDS if device == "cuda" else CPU_TV_MAX_SECONDS)
        eval_seconds = args.eval_seconds
        target_of = (lambda N: args.tv_target or (CUDA_TV_TARGET if device == "cuda"  # noqa: E731
                                                  else CPU_TV_TARGETS.get(N, 0.05)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "scaling_cuda" if device == "cuda" and not args.quick else "scaling"   # the CPU tables stay
    results = dict(
        machine=dict(python=sys.version.split()[0], torch=torch.__version__,
                     cpu=platform.processor() or platform.machine(),
                     cpu_count=os.cpu_count(), device=device, threads=args.threads,
                     gpu=torch.cuda.get_device_name(0) if device == "cuda" else None,
                     loadavg_start=list(os.getloadavg()), date=time.strftime("%Y-%m-%d %H:%M")),
        settings=dict(init=args.init, iters=iters, iter_seconds=iter_seconds, reps=reps, m_max=m_max, m_calib=m_calib,
                      tv_max_seconds=tv_max_seconds, eval_seconds=eval_seconds, eval_max=eval_max, quick=args.quick),
        iteration=[], tv=[], tv_not_run=[])
    t_all = time.perf_counter()

    def save():
        results["machine"]["loadavg_end"] = list(os.getloadavg())
        results["total_s"] = time.perf_counter() - t_all
        (out / f"{stem}.json").write_text(json.dumps(results, indent=2))

    for N, d in sizes:
        spec = dict(mode="iter", N=N, d=d, device=device, threads=args.threads, iters=iters,
                    iter_seconds=iter_seconds, reps=reps, m_min=2**10 if not args.quick else 2**8, m_max=m_max,
                    m_calib=m_calib, init=args.init)
        r = _run_worker(spec, args.threads)
        results["iteration"].append(r)
        if "error" in r:
            print(f"[{N}x{d}] iteration worker failed: {r['error']}", flush=True)
        else:
            print(f"[{N}x{d}] M={r['M']} iteration {r['iteration_s']:.3f} s, bare GEMM {r['bare_gemm_s']:.3f} s "
                  f"(ratio {r['ratio']:.2f}; argmax {r['argmax_ratio']:.2f}, top-6 {r['top6_ratio']:.2f}), "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        save()
    for N, d in sizes:
        if (N, d) in tv_sizes:
            continue
        it = next((r for r in results["iteration"] if r["N"] == N and r["d"] == d and "error" not in r), None)
        target = target_of(N)
        m_cert = _pow2_ceil((0.8 / target) ** 2 * N)
        est = it["argmax_pass_s"] / it["M"] * m_cert if it else None     # a lower bound: the argmax pass alone
        results["tv_not_run"].append(dict(N=N, d=d, target_tv=target, certify_M=m_cert, est_iteration_s=est))
    for N, d in tv_sizes:
        spec = dict(mode="tv", N=N, d=d, device=device, threads=args.threads, target=target_of(N), max_iter=100,
                    max_seconds=tv_max_seconds, eval_seconds=eval_seconds, eval_max=eval_max)
        r = _run_worker(spec, args.threads)
        results["tv"].append(r)
        if "error" in r:
            print(f"[{N}x{d}] TV worker failed: {r['error']}", flush=True)
        else:
            print(f"[{N}x{d}] TV target {r['target_tv']}: fit {r['fit_wall_s']:.1f} s (converged {r['converged']}), "
                  f"TV {r['tv']:.4f} ± floor {r['eval_floor']:.4f} with {r['eval_points']} points", flush=True)
        save()
    save()
    write_table(results, out, stem)


# ----------------------------------------------------------------------------- tables

def _fmt_s(t):
    if t is None:
        return "—"
    return f"{t * 1e3:.0f} ms" if t < 1 else (f"{t:.1f} s" if t < 600 else f"{t / 60:.0f} min")


def _fmt_pow2(m):
    return f"2^{int(round(math.log2(m)))}" if m and m & (m - 1) == 0 else str(m)


def write_table(results, out, stem="scaling"):
    mach = results["machine"]
    lines = [f"Device {mach['device']}{' (' + mach['gpu'] + ')' if mach.get('gpu') else ''}, {mach['threads']} torch "
             f"thread(s), {mach.get('cpu_count')} CPU cores, torch {mach['torch']}, {mach.get('date', '')}; load "
             f"average {mach['loadavg_start'][0]:.1f} at the start, {mach.get('loadavg_end', [math.nan])[0]:.1f} at "
             "the end (the machine was shared: compare ratios, which are measured side by side in one process, "
             "rather than absolute times).", "",
             "**Time per iteration** (fit at a fixed M from the "
             f"{results['settings'].get('init', 'linear')} start, median of the accepted iterations among 2..k; in "
             "parentheses the median of the rejected ones, which only score the points) against the bare GEMM + bias "
             "of the same M points (best of the solver's block shapes and max_memory blocks), and the solver's "
             "scoring passes over the same points:", "",
             "| N × d | M (default M) | iteration | bare GEMM + bias | iteration / GEMM | argmax pass / GEMM | "
             "top-6 pass / GEMM | empty cells (last it.) | peak memory (before fit) | default-M iteration ≥ |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["iteration"]:
        if "error" in r:
            lines.append(f"| {r['N']} × {r['d']} | failed: {r['error']} |||||||||")
            continue
        mem = (f"{r['gpu_peak_mb']:.0f} MiB GPU" if r.get("gpu_peak_mb") is not None else
               f"{r['peak_rss_mb']:.0f} MiB ({r['rss_before_fit_mb']:.0f})")
        lower = _fmt_s(r["default_m_iteration_lower_bound_s"]) if r["M"] < r["m_default"] else "(= measured)"
        it_s = _fmt_s(r["iteration_s"])
        if r.get("rejected_iteration_s"):
            it_s += f" ({_fmt_s(r['rejected_iteration_s'])})"
        lines.append(
            f"| {r['N']} × {r['d']} | {_fmt_pow2(r['M'])} ({_fmt_pow2(r['m_default'])}) | {it_s} "
            f"| {_fmt_s(r['bare_gemm_s'])} ({r['gemm_gflops']:.0f} GFLOP/s) | **{r['ratio']:.2f}** "
            f"| {r['argmax_ratio']:.2f} | {r['top6_ratio']:.2f} | {r['n_empty'][-1]} / {r['N']} | {mem} | {lower} |")
    lines += ["", "M: source points per iteration, chosen so that one iteration takes a few seconds here "
              "(the solver's default first M, max(2^16, 64 N), in parentheses; N = 10^5 at large d uses far "
              "fewer points than targets, so most cells are empty and the iteration includes the revival of "
              "empty cells). Peak memory: ru_maxrss of the size's own subprocess after the fit (MiB; before "
              "the fit in parentheses); on the CPU it depends on glibc's allocator, see the notes in "
              "benchmarks/README.md. Last column: the default first iteration's lower bound, default M × "
              "the measured argmax-pass cost per point.", ""]
    lines += ["**Time to a TV target** (default settings, wall time including the multiscale warm start), and "
              "the TV of the final heights measured with independent points:", "",
              "| N × d | target TV | time to target (warm start) | iterations, last M | measured TV ± floor "
              "(M_eval) | replicate noise | solver's own TV (noise) | peak memory |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results["tv"]:
        if "error" in r:
            lines.append(f"| {r['N']} × {r['d']} | failed: {r['error']} |||||||")
            continue
        t = (_fmt_s(r["time_to_target_s"]) if r["converged"] else
             f"not reached in {_fmt_s(r['fit_wall_s'])}")
        t += f" ({_fmt_s(r['warm_start_s'])})"
        mem = (f"{r['gpu_peak_mb']:.0f} MiB GPU" if r.get("gpu_peak_mb") is not None else
               f"{r['peak_rss_mb']:.0f} MiB")
        lines.append(f"| {r['N']} × {r['d']} | {r['target_tv']} | {t} | {r['iterations']}, {_fmt_pow2(r['final_M'])} "
                     f"| {r['tv']:.4f} ± {r['eval_floor']:.4f} ({_fmt_pow2(r['eval_points'])}) "
                     f"| {r['eval_noise']:.4f} "
                     f"| {r['solver_tv']:.4f} ({r['solver_noise']:.4f}) | {mem} |")
    if results["tv_not_run"]:
        lines += ["", "Not run (evaluation and certification not affordable here): " + "; ".join(
            f"{r['N']} × {r['d']} (TV {r['target_tv']} needs M ≈ {_fmt_pow2(r['certify_M'])} points per iteration"
            + (f", ≥ {_fmt_s(r['est_iteration_s'])} each: the argmax pass alone at its measured cost per point)"
               if r["est_iteration_s"]
               else ")") for r in results["tv_not_run"]) + "."]
    lines += ["", "Floor: 0.4·sqrt(N / M_eval), the typical TV of a perfect solution measured with M_eval points; "
              "the replicate noise is ¼ Σ |a_i − b_i| of the two independent halves."]
    table = "\n".join(lines)
    (Path(out) / f"{stem}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--table-from":
        write_table(json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[2]).parent, Path(sys.argv[2]).stem)
    else:
        main()
