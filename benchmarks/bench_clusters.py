"""Clustered targets of other sizes, with and without the solver's coarse step, side by side.

The coarse step on strong groups (``SemiDiscreteOT._coarse_step``) was built on the tight 8-D
clusters of ``bench_hard_cases.py``. This benchmark checks it on other clustered problems: more
and fewer clusters, tighter ones, other dimensions, clusters of clusters. Each problem is fitted
twice in one process by a default ``SemiDiscreteOT(tol=0.02, seed=0)`` under ``--max-seconds``:
``default`` and ``no-coarse`` (``_COARSE_MIN_GROUPS`` = inf — the solver
without the step). The final heights' TV is measured with independent float64-scored points
(``bench_hard_cases.measured_tv``), with its floor 0.4·sqrt(N / M_eval).

    python benchmarks/bench_clusters.py                       # ~10 min on one thread
    python benchmarks/bench_clusters.py --cases 20x16 --max-seconds 60

Writes ``clusters.json`` and ``clusters.md`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _budget import fit_with_constants  # noqa: E402
from bench_hard_cases import _clusters, _nested_clusters, measured_tv  # noqa: E402

TOL = 0.02
EVAL_POINTS = 1 << 21
VARIANTS = {"default": {}, "no-coarse": {"_COARSE_MIN_GROUPS": math.inf}}


def case_specs(seed=0):
    """name -> (N, d) targets (the generators of ``bench_hard_cases.py``), one random stream per case, spawned
    from ``seed``."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    return {"20 clusters, 3000 x 16, std 0.01": _clusters(3000, 16, 20, 0.01, rngs[0]),
            "5 clusters, 2000 x 8, std 0.001": _clusters(2000, 8, 5, 0.001, rngs[1]),
            "30 clusters, 2000 x 4, std 0.01": _clusters(2000, 4, 30, 0.01, rngs[2]),
            "nested 4 x 5, 2000 x 8": _nested_clusters(2000, 8, rngs[3]),
            "10 clusters, 1000 x 32, std 0.01": _clusters(1000, 32, 10, 0.01, rngs[4])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=None, help="substrings of case names (default: all)")
    p.add_argument("--max-seconds", type=float, default=90.0, help="time budget of one fit")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    specs = {k: v for k, v in case_specs().items() if not a.cases or any(c in k for c in a.cases)}
    res = dict(date=time.strftime("%Y-%m-%d %H:%M"), threads=a.threads, cpu_count=os.cpu_count(),
               torch=torch.__version__, tol=TOL, max_seconds=a.max_seconds, rows=[])
    for name, Y in specs.items():
        for variant, constants in VARIANTS.items():
            sd, rec, h = fit_with_constants(Y, TOL, constants, a.max_seconds)
            tv, _, floor = measured_tv(Y, np.full(len(Y), 1 / len(Y)), h.cpu(), EVAL_POINTS)
            row = dict(case=name, variant=variant, fit_s=rec["fit_s"], converged=rec["converged"],
                       stopped_at_budget=rec["stopped_at_budget"], iterations=rec["iterations"],
                       coarse_steps=sum(bool(e.get("coarse_groups")) for e in rec["history"]),
                       solver_tv=rec["history"][-1]["tv"], tv=tv, eval_floor=floor)
            res["rows"].append(row)
            print(row, flush=True)
            write(res, Path(a.out))


def write(res, out):
    out.mkdir(parents=True, exist_ok=True)
    (out / "clusters.json").write_text(json.dumps(res, indent=1))
    lines = [f"Clustered targets to TV {res['tol']}, default solver and without its coarse step, one after the "
             f"other in one process; {res['threads']} torch thread(s), {res['cpu_count']} CPU cores, torch "
             f"{res['torch']}, {res['date']}, budget {res['max_seconds']:.0f} s per fit.", "",
             "| case | variant | fit (converged) | iterations | coarse steps | measured TV ± floor |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        fit = f"stopped at {r['fit_s']:.0f} s (budget)" if r["stopped_at_budget"] else \
            f"{r['fit_s']:.1f} s ({'yes' if r['converged'] else 'no'})"
        lines.append(f"| {r['case']} | {r['variant']} | {fit} | {r['iterations']} | {r['coarse_steps']} | "
                     f"{r['tv']:.4f} ± {r['eval_floor']:.4f} |")
    (out / "clusters.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
