"""The fused score + argmax / top-2 kernel against the bare GEMM + bias and the torch Scorer (issue 15).

For each N x d, on the same M points and heights, side by side in one process, interleaved
(median of ``--reps``), at 1 and 2 threads (``torch.set_num_threads``; the fused kernel
runs as many threads):

* **bare GEMM + bias**: ``torch.addmm`` into a preallocated block, no reduction: the
  certification floor's definition (``bench_floor.floor_gemm``: the faster of the solver's
  block shape and ``max_memory`` blocks of whole rows);
* **Scorer.best** and **Scorer.topk, k = 2** on the torch path (``Scorer(..., fused=False)``);
* **fused best** and **fused top-2** (:mod:`otgen.transport._fused`: best index and value;
  best and second value and index), which never write the M x N scores.

Exactness (at the first thread count): the fused best cell against ``Scorer.best``'s and
the fused top-2 against ``Scorer.topk(·, 2)``; every disagreement is rescored in float64,
and a disagreement counts as real when the two cells' exact scores differ by more than
1e-5 relative to the largest |score| term (must be 0: the others are rounding ties).

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
PASSES = ("gemm", "best", "topk2", "fused_best", "fused_top2")
LABELS = {"gemm": "bare GEMM + bias (floor)", "best": "Scorer.best (torch)", "topk2": "Scorer.topk, k = 2 (torch)",
          "fused_best": "fused best", "fused_top2": "fused top-2"}


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
    v2_t, i2_t = scorer.topk(X, h, 2)
    v2_f, i2_f = _fused.fused_score(X, panels, hpad, 2)
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
    rows2 = torch.nonzero((i2_f != i2_t).any(1)).squeeze(1)
    # exact float64 scores of the fused cells against its reported values
    sf = (X.double() * Yd[i_f]).sum(1) + hd[i_f]
    return {
        "best_disagree": int(rows1.numel()),
        "best_disagree_real": real(rows1, i_f, i_t),
        "top2_disagree": int(rows2.numel()),
        "top2_disagree_real": real(rows2, i2_f[:, 0], i2_t[:, 0]) + real(rows2, i2_f[:, 1], i2_t[:, 1]),
        "fused_best_equals_fused_top2_first": bool(torch.equal(i_f, i2_f[:, 0])),
        "max_rel_value_error_best": float(((v_f.double() - sf).abs() / big).max()),
        "max_rel_value_diff_top2_vs_torch": float(((v2_f.double() - v2_t.double()).abs() / big[:, None]).max()),
    }


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
            "best": lambda: scorer.best(X, h), "topk2": lambda: scorer.topk(X, h, 2),
            "fused_best": lambda: _fused.fused_score(X, panels, hpad, 1, t),
            "fused_top2": lambda: _fused.fused_score(X, panels, hpad, 2, t),
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
    lines = [f"Fused score + argmax / top-2 (otgen/transport/_fused.c) vs the bare GEMM + bias, M = {res['M']} "
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
              "| N × d | best: disagree / real | top-2 (either cell): disagree / real | fused best = top-2's first |"
              " max rel. value error (fused best vs float64) |", "|---|---|---|---|---|"]
    for row in res["rows"]:
        e = row["exactness"]
        lines.append(f"| {row['N']} × {row['d']} | {e['best_disagree']} / {e['best_disagree_real']} | "
                     f"{e['top2_disagree']} / {e['top2_disagree_real']} | {e['fused_best_equals_fused_top2_first']} | "
                     f"{e['max_rel_value_error_best']:.1e} |")
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
