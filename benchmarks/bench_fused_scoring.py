"""The fused score + top-k kernel against the bare GEMM + bias and the torch Scorer (issue 15).

For each N x d, on the same M points and heights, side by side in one process, interleaved
(median of ``--reps``), at 1 and 2 threads (``torch.set_num_threads``; the fused kernel
runs as many threads):

* **bare GEMM + bias**: ``torch.addmm`` into a preallocated block, no reduction: the
  certification floor's definition (``bench_floor.floor_gemm``: the faster of the solver's
  block shape and ``max_memory`` blocks of whole rows);
* **Scorer.best** and **Scorer.topk** with k = 2 (the Hessian points) and k = 6 (the line
  search) on the torch path (``Scorer(..., fused=False)``);
* **fused best**, **fused top-2** and **fused top-6** (:mod:`otgen.transport._fused`: the k
  best values and cells), which never write the M x N scores.

Exactness (at the first thread count): the fused best cell against ``Scorer.best``'s and
the fused top-k against ``Scorer.topk(·, k)``, cell by cell; every disagreement is rescored
in float64, and a disagreement counts as real when the two cells' exact scores differ by
more than 1e-5 relative to the largest |score| term (must be 0: the others are rounding ties).

    python benchmarks/bench_fused_scoring.py                     # 10000x16, 20000x32, 5000x16; M = 2^18
    python benchmarks/bench_fused_scoring.py --sizes 2000x8 --points 65536 --reps 1 --name fused_quick

Writes ``NAME.json`` and ``NAME.md`` under ``--out`` (default ``benchmarks/results``, NAME
``fused_scoring``).
"""

from __future__ import annotations

import argparse
import json
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

from otgen.transport import _fused  # noqa: E402
from otgen.transport._scoring import Scorer  # noqa: E402

from bench_floor import gemm_passes  # noqa: E402  (the floor's own GEMM blockings)

MAX_MEMORY = 256 << 20       # the solver's default max_memory
REAL_GAP = 1e-5              # a disagreement whose exact scores differ by more than this (relative) is a bug
HEIGHT_SCALE = 0.5           # heights ~ N(0, 0.5^2): cells of unequal size, like a solve's
TOPK = (2, 6)                # the solver's k: Hessian points, line-search points
PASSES = ("gemm", "best") + tuple(f"topk{k}" for k in TOPK) + ("fused_best",) + tuple(f"fused_top{k}" for k in TOPK)
LABELS = {"gemm": "bare GEMM + bias (floor)", "best": "Scorer.best (torch)", "fused_best": "fused best",
          **{f"topk{k}": f"Scorer.topk, k = {k} (torch)" for k in TOPK},
          **{f"fused_top{k}": f"fused top-{k}" for k in TOPK}}


def problem(N: int, d: int, M: int, seed: int = 0):
    """Targets ~ N(0, I) (N, d), heights (N,), points uniform in [-1, 1]^d (M, d), float32."""
    g = torch.Generator().manual_seed(seed)
    Y = torch.randn(N, d, generator=g)
    h = HEIGHT_SCALE * torch.randn(N, generator=g)
    X = torch.rand(M, d, generator=g) * 2 - 1
    return X, Y, h


def exactness(X, Y, h, scorer, panels, hpad):
    """Disagreements of the fused passes with the torch Scorer, and how many are more than rounding."""
    _, i_t = scorer.best(X, h)
    v_f, i_f = _fused.fused_score(X, panels, hpad, 1)
    Yd, hd = Y.double(), h.double()
    big = (X.abs().max(1).values.double()[:, None] * Yd.abs().sum(1).max() + hd.abs().max()).squeeze(1)

    def real(rows, a, b):
        """Rows whose exact scores of cells a and b differ by more than REAL_GAP relative."""
        if rows.numel() == 0:
            return 0
        x = X[rows].double()
        sa = (x * Yd[a[rows]]).sum(1) + hd[a[rows]]
        sb = (x * Yd[b[rows]]).sum(1) + hd[b[rows]]
        return int(((sa - sb).abs() > REAL_GAP * big[rows]).sum())

    rows1 = torch.nonzero(i_f != i_t).squeeze(1)
    sf = (X.double() * Yd[i_f]).sum(1) + hd[i_f]          # exact scores of the fused cells
    out = {"best_disagree": int(rows1.numel()), "best_disagree_real": real(rows1, i_f, i_t),
           "max_rel_value_error_best": float(((v_f.double() - sf).abs() / big).max())}
    for k in TOPK:
        vk_t, ik_t = scorer.topk(X, h, k)
        vk_f, ik_f = _fused.fused_score(X, panels, hpad, k)
        rows = torch.nonzero((ik_f != ik_t).any(1)).squeeze(1)
        out[f"top{k}_disagree"] = int(rows.numel())
        out[f"top{k}_disagree_real"] = sum(real(rows, ik_f[:, c], ik_t[:, c]) for c in range(k))
        out[f"fused_best_equals_fused_top{k}_first"] = bool(torch.equal(i_f, ik_f[:, 0]))
        out[f"max_rel_value_diff_top{k}_vs_torch"] = float(((vk_f.double() - vk_t.double()).abs() / big[:, None]).max())
    return out


def run_size(N, d, M, threads, reps):
    X, Y, h = problem(N, d, M)
    scorer = Scorer(Y, MAX_MEMORY, fused=False)
    panels = _fused.pack_targets(Y)
    hpad = _fused.pad_heights(h, panels.shape[0])
    g_solver, g_rows = gemm_passes(X, Y, h, scorer, MAX_MEMORY)
    row = {"N": N, "d": d, "M": M, "threads": {}}
    row["exactness"] = exactness(X, Y, h, scorer, panels, hpad)
    for t in threads:
        torch.set_num_threads(t)
        calls = {
            "gemm_solver_blocks": g_solver, "gemm_row_blocks": g_rows,
            "best": lambda: scorer.best(X, h), "fused_best": lambda: _fused.fused_score(X, panels, hpad, 1, t),
            **{f"topk{k}": (lambda k=k: scorer.topk(X, h, k)) for k in TOPK},
            **{f"fused_top{k}": (lambda k=k: _fused.fused_score(X, panels, hpad, k, t)) for k in TOPK},
        }
        times = {k: [] for k in calls}
        for _ in range(reps):              # interleaved: the machine's load hits every pass alike
            for k, f in calls.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        med["gemm"] = min(med.pop("gemm_solver_blocks"), med.pop("gemm_row_blocks"))
        row["threads"][str(t)] = {"seconds": med, "all_seconds": times,
                                  "ratio_to_gemm": {k: med[k] / med["gemm"] for k in PASSES}}
        print(f"{N}x{d} {t} thread(s): " + ", ".join(f"{k} {med[k] * 1e3:.0f} ms ({med[k] / med['gemm']:.2f})"
                                                    for k in PASSES), flush=True)
    return row


def table(res) -> str:
    lines = [f"Fused score + top-k (otgen/transport/_fused.c) vs the bare GEMM + bias, M = {res['M']} "
             f"points, median of {res['reps']} interleaved runs; torch {res['torch']}, {res['cpu_count']} CPU cores, "
             f"{res['date']}; load average {res['load_start']:.1f} at the start, {res['load_end']:.1f} at the end "
             "(shared machine: compare the ratios, measured in one process).", "",
             "ms per pass over the M points (ratio to the bare GEMM + bias):", "",
             "| N × d | threads | " + " | ".join(LABELS[k] for k in PASSES) + " | Scorer.best / fused best |",
             "|---|---|" + "---|" * len(PASSES) + "---|"]
    for row in res["rows"]:
        for t, r in row["threads"].items():
            s, q = r["seconds"], r["ratio_to_gemm"]
            cells = [f"{s['gemm'] * 1e3:.0f} (1.00)"] + [f"{s[k] * 1e3:.0f} ({q[k]:.2f})" for k in PASSES[1:]]
            lines.append(f"| {row['N']} × {row['d']} | {t} | " + " | ".join(cells)
                         + f" | **{s['best'] / s['fused_best']:.2f}** |")
    lines += ["", f"Exactness against the torch Scorer on the same points (a disagreement is *real* when the two "
              f"cells' float64 scores differ by more than {REAL_GAP:g} of the largest |score| term):", "",
              "| N × d | best: disagree / real | " + " | ".join(f"top-{k} (any cell): disagree / real" for k in TOPK)
              + " | fused best = fused top-k's first | max rel. value error (fused best vs float64) |",
              "|---|---|" + "---|" * len(TOPK) + "---|---|"]
    for row in res["rows"]:
        e = row["exactness"]
        tops = " | ".join(f"{e[f'top{k}_disagree']} / {e[f'top{k}_disagree_real']}" for k in TOPK)
        first = all(e[f"fused_best_equals_fused_top{k}_first"] for k in TOPK)
        lines.append(f"| {row['N']} × {row['d']} | {e['best_disagree']} / {e['best_disagree_real']} | {tops} | "
                     f"{first} | {e['max_rel_value_error_best']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000x16,20000x32,5000x16")
    p.add_argument("--points", type=int, default=1 << 18)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--name", default="fused_scoring")
    a = p.parse_args(argv)
    if _fused.library() is None:
        sys.exit(f"fused kernel unavailable: {_fused.unavailable_reason()}")
    threads = [int(t) for t in a.threads.split(",")]
    res = {"M": a.points, "reps": a.reps, "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M"),
           "load_start": os.getloadavg()[0], "rows": []}
    for size in a.sizes.split(","):
        N, d = (int(v) for v in size.split("x"))
        res["rows"].append(run_size(N, d, a.points, threads, a.reps))
    res["load_end"] = os.getloadavg()[0]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(json.dumps(res, indent=1))
    (out / f"{a.name}.md").write_text(table(res))
    print(table(res))


if __name__ == "__main__":
    main()
