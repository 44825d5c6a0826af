"""The solve against the certification floor, side by side in one process.

The **certification floor** of a problem with N targets and tolerance tol is the time of
one bare GEMM + bias (``torch.addmm``, no argmax) over the M = 0.64·N / tol² points
whose mass estimates have noise tol / 2: the least that any solver which certifies
its answer must spend (issue 15). It is timed on ``--floor-points`` points in the
solver's own block shapes and in ``max_memory`` blocks (the faster counts) and scaled
linearly to M (a GEMM's time is linear in its rows); the table says so.

Then, in the same process:

* **the solve**: a default ``SemiDiscreteOT(tol=target)`` fit (multiscale warm start
  included), stopped after ``--max-seconds``; its time over the floor is the headline;
  the final heights' TV is measured with independent scrambled-Sobol points (two
  halves; ``--eval-points``), reported with the floor 0.4·sqrt(N / M_eval);
* **where the time goes**: the warm start, and the iterations grouped by their M;
* **the scoring passes** at the final heights, over the same ``--pass-points`` points, interleaved
  (median of ``PASS_REPS``): the bare GEMM + bias, ``Scorer.best`` (the fused kernel where it
  compiles, else GEMM + block argmax),
  ``Scorer.topk`` with k = 2 (the Hessian points) and k = 6 (the line-search points), and a
  top-2 without ``torch.topk`` (best cell by the block argmax, runner-up by masking it and
  taking maxima: :func:`top2_maxmask`), checked equal to the torch path's ``Scorer.topk(·, 2)`` (same GEMM
  scores; the fused kernel's sums round differently) before it is timed;
* **the candidate-reuse lever** (not used by the solver yet): for consecutive
  accepted heights (h_t, h_{t+1}) of the fit, the share of 2^18 points whose best
  cell at h_{t+1} is certified from their top-6 cells at h_t
  (:meth:`otgen.transport._scoring.Scorer.best_from_candidates`), and that pass's time
  against a full argmax pass over the same points.

    python benchmarks/bench_floor.py                           # 10000 x 16 to TV 0.02
    python benchmarks/bench_floor.py --size 2000x8 --tol 0.02 --max-seconds 120
    python benchmarks/bench_floor.py --size 20000x32 --tol 0.05 --eval-points 8388608 --name floor_20000x32
    python benchmarks/bench_floor.py --size 60000x16 --tol 0.05 --eval-points 8388608 --name floor_60000x16
    python benchmarks/bench_floor.py --passes-only --name passes_10000x16    # the scoring passes alone (~1 min)

Writes ``NAME.json`` and ``NAME.md`` under ``--out`` (default ``benchmarks/results``, NAME
``floor``). While the fit runs, ``NAME.json`` holds the history so far (estimated TV, its
noise and M against time, ``"status": "running"``), rewritten after every iteration, so a
run stopped from outside still leaves its TV against time
(``python benchmarks/bench_floor.py --partial-table results/NAME.json`` writes its table).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:          # benchmark this checkout even without an install
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from _budget import fit_within  # noqa: E402

from otgen._base import spawn_seed  # noqa: E402
from otgen.data.toy2d import gaussian_mixture  # noqa: E402
from otgen.transport import SemiDiscreteOT, SourceSampler  # noqa: E402
from otgen.transport import _scoring  # noqa: E402
from otgen.transport._scoring import Scorer  # noqa: E402

FLOOR_POINTS_PER_TARGET = 0.64   # M = 0.64 N / tol^2: mass estimates with noise tol / 2
CERT_POINTS = 1 << 18            # points of the candidate-reuse measurement
CERT_K = 6                       # candidates kept per point (the solver's line-search k)
PASS_REPS = 5                    # interleaved repetitions of each scoring pass (the median is kept)
_NEG = float("-inf")


def _timed(f, reps=2):
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_passes(X, Y, h, scorer, max_memory=256 << 20):
    """The floor's two bare GEMM + bias blockings over X (M, d) as callables: the solver's blocks
    (``scorer.block_rows`` x ``scorer.col_chunk``) and ``max_memory`` blocks of whole rows; one reused
    output block each, no reduction."""
    M, N = X.shape[0], Y.shape[0]
    Yt = Y.T.contiguous()

    def blocks(rows, cols):
        out = torch.empty(rows, cols)

        def run():
            for r in range(0, M, rows):
                x = X[r:r + rows]
                for c in range(0, N, cols):
                    c1 = min(N, c + cols)
                    torch.addmm(h[c:c1], x, Yt[:, c:c1], out=out[: x.shape[0], : c1 - c])
        return run

    return blocks(scorer.block_rows, scorer.col_chunk), blocks(max(16, max_memory // (4 * N)), N)


def floor_gemm(Y, n_points, max_memory=256 << 20, reps=2):
    """Seconds of the bare GEMM + bias over n_points points (best of the solver's and max_memory blocks)."""
    N, d = Y.shape
    scorer = Scorer(Y, max_memory)
    X = SourceSampler("uniform", d, spawn_seed(0, "floor"), qmc=True).draw(n_points)
    solver, rows = gemm_passes(X, Y, torch.zeros(N), scorer, max_memory)
    return min(_timed(solver, reps), _timed(rows, reps))


def top2_maxmask(S):
    """Row-wise top-2 of S (m, n) without ``torch.topk``: (values (m, 2), indices (m, 2)), ties to the lower index.

    The best entry by the block argmax (``_block_max`` over blocks of 64 columns, the winning block's
    argmax); the runner-up is the larger of the winning block's second entry (the best masked out)
    and the best entry of the best other block.
    """
    m, n = S.shape
    B = _scoring._BLOCK
    ar = torch.arange(B)
    bm = _scoring._block_max(S)                                   # (m, nb)
    v1, b1 = bm.max(dim=1)
    c1 = b1[:, None] * B + ar
    g1 = S.gather(1, c1.clamp(max=n - 1)).masked_fill_(c1 >= n, _NEG)
    j1 = g1.argmax(dim=1, keepdim=True)
    g1.scatter_(1, j1, _NEG)
    w, jw = g1.max(dim=1, keepdim=True)
    bm.scatter_(1, b1[:, None], _NEG)
    u, b2 = bm.max(dim=1, keepdim=True)
    c2 = b2 * B + ar
    g2 = S.gather(1, c2.clamp(max=n - 1)).masked_fill_(c2 >= n, _NEG)
    j2 = g2.argmax(dim=1, keepdim=True)
    other = (u > w) | ((u == w) & (b2 < b1[:, None]))
    return (torch.cat([v1[:, None], torch.where(other, u, w)], 1),
            torch.cat([c1.gather(1, j1), torch.where(other, c2.gather(1, j2), c1.gather(1, jw))], 1))


def scoring_passes(Y, h, n_points):
    """Seconds per point of the solver's scoring passes over the same points at heights h, over the bare GEMM."""
    N, d = Y.shape
    scorer = Scorer(Y - Y.mean(0), 256 << 20)
    X = SourceSampler("uniform", d, spawn_seed(0, "passes"), qmc=True).draw(n_points)
    h = h.float()
    rows = scorer.block_rows

    def gemm():
        for r in range(0, n_points, rows):
            scorer._scores(X[r:r + rows], h, 0, N)

    def maxmask():
        return [top2_maxmask(scorer._scores(X[r:r + rows], h, 0, N)) for r in range(0, n_points, rows)]

    ref = Scorer(Y - Y.mean(0), 256 << 20, fused=False).topk(X, h, 2)   # torch's topk on the same GEMM scores
    alt = [torch.cat(t) for t in zip(*maxmask())]
    untied = ref[0][:, 0] != ref[0][:, 1]
    same = torch.equal(ref[0], alt[0]) and torch.equal(ref[1][untied], alt[1][untied])
    passes = dict(gemm=gemm, best=lambda: scorer.best(X, h), topk2=lambda: scorer.topk(X, h, 2),
                  topk6=lambda: scorer.topk(X, h, 6), top2_maxmask=maxmask)
    times = {k: [] for k in passes}
    for _ in range(PASS_REPS):
        for k, f in passes.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["gemm"])
    return dict(points=n_points, gemm_us_per_point=1e6 * base / n_points, top2_maxmask_equal=same,
                over_gemm={k: statistics.median(v) / base for k, v in times.items()})


def tv_error(Y, h, n_points):
    """Independent QMC estimate of ½ Σ |μ(W_i) − 1/N| with two halves: (tv, floor 0.4 sqrt(N / M))."""
    N, d = Y.shape
    scorer = Scorer(Y - Y.mean(0), 256 << 20)
    counts = torch.zeros(2, N, dtype=torch.float64)
    for r in range(2):
        s = SourceSampler("uniform", d, spawn_seed(0, "evaluation", r), qmc=True)
        left = n_points // 2
        while left > 0:
            m = min(1 << 16, left)
            counts[r] += torch.bincount(scorer.best(s.draw(m), h.float())[1], minlength=N).double()
            left -= m
    masses = counts.mean(0) / (n_points // 2)
    return 0.5 * float((masses - 1.0 / N).abs().sum()), 0.4 * math.sqrt(N / n_points)


def candidate_reuse(Y, heights):
    """Share of points certified from their top-k at the previous accepted heights, and the time ratio."""
    N, d = Y.shape
    Yc = Y - Y.mean(0)
    scorer = Scorer(Yc, 256 << 20)
    X = SourceSampler("uniform", d, spawn_seed(0, "reuse"), qmc=True).draw(CERT_POINTS)
    rows = []
    for h0, h1 in zip(heights, heights[1:]):
        h0, h1 = h0.float(), h1.float()
        vals, idx = scorer.topk(X, h0, CERT_K)
        t_full = _timed(lambda: scorer.best(X, h1), reps=1)
        t0 = time.perf_counter()
        _, best, redo = scorer.best_from_candidates(X, h1, vals, idx, h0)
        t_reuse = time.perf_counter() - t0
        exact = float((best == scorer.best(X, h1)[1]).float().mean())
        rows.append(dict(certified=1 - redo / CERT_POINTS, reuse_over_full=t_reuse / t_full, agree=exact))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="10000x16", help="N x d (default %(default)s)")
    p.add_argument("--tol", type=float, default=0.02, help="TV target (default %(default)s)")
    p.add_argument("--max-seconds", type=float, default=900.0, help="time budget of the fit")
    p.add_argument("--floor-points", type=int, default=1 << 19, help="points the floor GEMM is timed on")
    p.add_argument("--eval-points", type=int, default=1 << 22, help="independent evaluation points")
    p.add_argument("--pass-points", type=int, default=1 << 17, help="points of the scoring-pass comparison")
    p.add_argument("--passes-only", action="store_true",
                   help="only the scoring-pass comparison, at the heights of the linear warm start (writes NAME.json/md)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--name", default="floor", help="stem of the JSON and markdown files (default %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    N, d = (int(float(x)) for x in args.size.lower().split("x"))
    Y = torch.as_tensor(gaussian_mixture(N, d, seed=0)[0], dtype=torch.float32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = dict(python=sys.version.split()[0], torch=torch.__version__, cpu=platform.processor() or platform.machine(),
                   cpu_count=os.cpu_count(), threads=args.threads, loadavg_start=list(os.getloadavg()),
                   date=time.strftime("%Y-%m-%d %H:%M"))
    M_floor = FLOOR_POINTS_PER_TARGET * N / args.tol ** 2
    if args.passes_only:
        h0 = _linear_heights(Y)
        res = dict(machine=machine, N=N, d=d, passes=scoring_passes(Y, h0, args.pass_points), heights="linear start")
        machine["loadavg_end"] = list(os.getloadavg())
        (out / f"{args.name}.json").write_text(json.dumps(res, indent=2, default=float))
        write_passes(res, out, args.name)
        return
    t_sample = floor_gemm(Y - Y.mean(0), args.floor_points)
    floor_s = t_sample * M_floor / args.floor_points
    print(f"floor: {floor_s:.1f} s (GEMM + bias over M = {M_floor:.3g} points, timed on {args.floor_points})",
          flush=True)
    snaps, t0, entries = [], time.perf_counter(), []

    partial = out / f"{args.name}.json"

    def cb(it, h, info):
        entries.append(dict(info, wall=time.perf_counter() - t0))
        partial.write_text(json.dumps(dict(status="running", machine=machine, N=N, d=d, tol=args.tol,
                                           floor_points=M_floor, floor_s=floor_s, history=entries), indent=1))
        if info["accepted"]:
            snaps.append(h.clone())

    sd = SemiDiscreteOT(tol=args.tol, seed=0, max_iter=200)
    stopped, _ = fit_within(sd, Y, callback=cb, max_seconds=args.max_seconds, start=t0)
    wall = time.perf_counter() - t0
    hist = sd.history_ if not stopped else entries
    h_final = sd.heights_ if not stopped else snaps[-1]
    tv, tv_floor = tv_error(Y, h_final, args.eval_points)
    t2 = floor_gemm(Y - Y.mean(0), args.floor_points, reps=1) * M_floor / args.floor_points
    by_m = {}
    for a, b in zip([dict(time=0.0)] + hist, hist):
        by_m.setdefault(b["n_samples"], []).append(b["time"] - a["time"])
    reuse = candidate_reuse(Y, snaps[-4:])
    passes = scoring_passes(Y, h_final, args.pass_points)
    res = dict(machine=machine, N=N, d=d, tol=args.tol, floor_points=M_floor, floor_s=floor_s, floor_after_s=t2,
               floor_timed_on=args.floor_points, fit_s=wall, stopped_at_budget=stopped,
               converged=bool(getattr(sd, "converged_", False)) and not stopped, iterations=len(hist),
               first_iteration_time_s=hist[0]["time"] if hist else None,
               seconds_by_M={str(k): sum(v) for k, v in by_m.items()},
               iterations_by_M={str(k): len(v) for k, v in by_m.items()},
               tv=tv, eval_floor=tv_floor, eval_points=args.eval_points,
               ratio=wall / statistics.mean([floor_s, t2]), points=sum(e["n_samples"] for e in hist),
               reuse=reuse, passes=passes, status="done", history=hist)
    machine["loadavg_end"] = list(os.getloadavg())
    (out / f"{args.name}.json").write_text(json.dumps(res, indent=2, default=float))
    write_table(res, out, args.name)


def write_table(r, out, name="floor"):
    m = r["machine"]
    floor = statistics.mean([r["floor_s"], r["floor_after_s"]])
    fit = f"stopped at {r['fit_s']:.0f} s" if r["stopped_at_budget"] else f"{r['fit_s']:.1f} s"
    lines = [f"{r['N']} × {r['d']} to TV ≤ {r['tol']}, {m['threads']} torch thread(s), {m['cpu_count']} CPU cores, "
             f"torch {m['torch']}, {m['date']}; load average {m['loadavg_start'][0]:.1f} at the start, "
             f"{m['loadavg_end'][0]:.1f} at the end (shared machine: only the ratio, measured in one process, "
             "travels).", "",
             "| N × d | floor: GEMM + bias over M = 0.64 N / tol² (before, after the fit) | solve (converged) | "
             "solve / floor | iterations (first ends at) | measured TV ± floor |",
             "|---|---|---|---|---|---|",
             f"| {r['N']} × {r['d']} | {floor:.1f} s ({r['floor_s']:.1f}, {r['floor_after_s']:.1f}; M = "
             f"{r['floor_points']:.3g}) | {fit} ({'yes' if r['converged'] else 'no'}) | **{r['ratio']:.2f}** | "
             f"{r['iterations']} ({(r['first_iteration_time_s'] or 0):.1f} s) | {r['tv']:.4f} ± {r['eval_floor']:.4f} |",
             "", "Seconds by points per iteration (M: iterations, seconds): " + ", ".join(
                 f"2^{int(math.log2(int(k)))}: {r['iterations_by_M'][k]} it, {s:.1f} s"
                 for k, s in r["seconds_by_M"].items()),
             "", f"Points scored by the fit's evaluations: {r['points']:.3g} = {r['points'] / r['floor_points']:.2f} × the "
             "floor's M.",
             "", f"The floor GEMM was timed on {r['floor_timed_on']} points and scaled to M.", "",
             "Candidate reuse (not used by the solver yet): consecutive accepted heights of this fit, "
             f"{CERT_POINTS} points, top-{CERT_K} cells at h_t:", "",
             "| step | certified share | certified pass / full argmax pass | agrees with the full pass |",
             "|---|---|---|---|"]
    for i, q in enumerate(r["reuse"]):
        lines.append(f"| {i + 1} | {q['certified']:.3f} | {q['reuse_over_full']:.2f} | {q['agree']:.6f} |")
    if r.get("passes"):
        lines += [""] + _passes_lines(r["passes"], "the final heights")
    (Path(out) / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _passes_lines(q, where):
    lines = [f"Scoring passes at {where} over the same {q['points']} points, interleaved, median of "
             f"{PASS_REPS} (bare GEMM + bias: {q['gemm_us_per_point']:.2f} µs per point; the top-2 without "
             f"torch.topk {'equals' if q['top2_maxmask_equal'] else 'DIFFERS FROM'} the torch path's Scorer.topk(·, 2)):", "",
             "| pass | time / bare GEMM |", "|---|---|"]
    names = dict(gemm="bare GEMM + bias", best="Scorer.best", topk2="Scorer.topk, k = 2",
                 topk6="Scorer.topk, k = 6", top2_maxmask="top-2 by max and mask (top2_maxmask)")
    return lines + [f"| {names[k]} | {v:.2f} |" for k, v in q["over_gemm"].items()]


def write_passes(r, out, name):
    m = r["machine"]
    lines = [f"{r['N']} × {r['d']}, {m['threads']} torch thread(s), {m['cpu_count']} CPU cores, torch {m['torch']}, "
             f"{m['date']}; load average {m['loadavg_start'][0]:.1f} at the start, {m['loadavg_end'][0]:.1f} at the "
             "end.", ""] + _passes_lines(r["passes"], "the heights of the linear warm start")
    (Path(out) / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _linear_heights(Y):
    """Heights of the affine map matching the targets' mean and covariance (the solver's linear start)."""
    sd = SemiDiscreteOT()
    sd._check_settings()                       # sets source_ (the default uniform cube)
    return sd._linear_init(Y.double() - Y.double().mean(0))


def partial_table(path):
    """The markdown of a run stopped from outside, from its running NAME.json (history so far)."""
    r = json.loads(Path(path).read_text())
    m = r["machine"]
    lines = [f"{r['N']} × {r['d']} to TV ≤ {r['tol']}, {m['threads']} torch thread(s), {m['cpu_count']} CPU cores, "
             f"torch {m['torch']}, started {m['date']}, load average {m['loadavg_start'][0]:.1f} at the start. "
             "**Stopped from outside before the end** (status running): no independent TV evaluation; the TV "
             "below is the solver's own estimate (fresh points each iteration) with its noise.", "",
             f"Floor (GEMM + bias over M = {r['floor_points']:.3g} points, timed before the fit): {r['floor_s']:.1f} s.",
             "", "| iteration | seconds since the fit began | / floor | M | estimated TV (noise) | accepted | step |",
             "|---|---|---|---|---|---|---|"]
    for h in r["history"]:
        lines.append(f"| {h['iter']} | {h['wall']:.0f} | {h['wall'] / r['floor_s']:.2f} | 2^{h['n_samples'].bit_length() - 1}"
                     f" | {h['tv']:.3f} ({h['noise']:.3f}) | {'yes' if h['accepted'] else 'no'} | {h['step']:.3g} |")
    Path(path).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--partial-table":
        partial_table(sys.argv[2])
    else:
        main()
