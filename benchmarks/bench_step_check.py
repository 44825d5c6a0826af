"""The step check (exact rescoring of the line-search points, ``check_step``) on and off, side by side.

The line search predicts each point's cell after a step from its k best cells before it; long
steps far from the solution let other cells win, the predicted error is then far too low, and
the solver rejects the step only after a whole pass over fresh points. The step check rescores
the first ``max(2^16, 8 N)`` line-search points exactly (candidates that certify their cell are
reused, :func:`otgen.transport._scoring.candidate_best`) and halves the step while the exact
error falls. This script fits the same problems with the check off
(``otgen.transport.semidiscrete._CHECK_HALVINGS = 0``, the solver before the change) and on, one
after the other in one process, and reports wall time, iterations, rejected steps, the time over
the certification floor (GEMM + bias over 0.64 N / tol² points, :mod:`bench_floor`) and the TV of
the final heights measured with independent points.

    python benchmarks/bench_step_check.py                          # 2000x16 and 5000x16 to TV 0.05
    python benchmarks/bench_step_check.py --sizes 10000x16 --tol 0.02 --max-seconds 3000

Writes ``step_check.json`` and ``step_check.md`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE.parent, HERE):           # this checkout, and bench_floor next to this script
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402

import otgen.transport.semidiscrete as semidiscrete  # noqa: E402
from _budget import fit_with_constants  # noqa: E402
from bench_floor import FLOOR_POINTS_PER_TARGET, floor_gemm, tv_error  # noqa: E402
from otgen.data.toy2d import gaussian_mixture  # noqa: E402

DEFAULT_HALVINGS = semidiscrete._CHECK_HALVINGS


def fit(Y, tol, halvings, max_seconds):
    """A default fit with the step check set to ``halvings`` (0: off). Returns a summary and the heights."""
    _, record, h = fit_with_constants(Y, tol, {"_CHECK_HALVINGS": halvings}, max_seconds)
    return dict(record, check="on" if halvings else "off"), h


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["2000x16", "5000x16"])
    p.add_argument("--tol", type=float, default=0.05)
    p.add_argument("--max-seconds", type=float, default=1800.0, help="time budget of each fit")
    p.add_argument("--eval-per-target", type=int, default=1024, help="independent evaluation points per target")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = dict(machine=dict(python=sys.version.split()[0], torch=torch.__version__,
                            cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                            threads=args.threads, loadavg_start=list(os.getloadavg()),
                            date=time.strftime("%Y-%m-%d %H:%M")), tol=args.tol, problems=[])
    for size in args.sizes:
        N, d = (int(float(x)) for x in size.lower().split("x"))
        Y = torch.as_tensor(gaussian_mixture(N, d, seed=0)[0], dtype=torch.float32)
        M_floor = FLOOR_POINTS_PER_TARGET * N / args.tol ** 2
        n_eval = args.eval_per_target * N
        prob = dict(N=N, d=d, floor_points=M_floor, runs=[])
        floors = [floor_gemm(Y - Y.mean(0), 1 << 18, reps=1) * M_floor / (1 << 18)]
        for halvings in (0, DEFAULT_HALVINGS):
            run, h = fit(Y, args.tol, halvings, args.max_seconds)
            run["tv"], run["eval_floor"] = tv_error(Y, h, n_eval)
            floors.append(floor_gemm(Y - Y.mean(0), 1 << 18, reps=1) * M_floor / (1 << 18))
            run["floor_s"] = (floors[-2] + floors[-1]) / 2          # the floor measured before and after it
            run["ratio"] = run["fit_s"] / run["floor_s"]
            prob["runs"].append(run)
            print(f"[{size}] check {run['check']}: {run['fit_s']:.1f} s, {run['iterations']} it "
                  f"({run['rejected']} rejected), floor {run['floor_s']:.1f} s, ratio {run['ratio']:.2f}, "
                  f"TV {run['tv']:.4f} ± {run['eval_floor']:.4f}", flush=True)
        res["problems"].append(prob)
        res["machine"]["loadavg_end"] = list(os.getloadavg())
        (out / "step_check.json").write_text(json.dumps(res, indent=2))
    write_table(res, out)


def write_table(res, out):
    m = res["machine"]
    lines = [f"Step check off (the solver before it) and on, the same default fit to TV ≤ {res['tol']} one after "
             f"the other in one process; {m['threads']} torch thread(s), {m['cpu_count']} CPU cores, torch "
             f"{m['torch']}, {m['date']}; load average {m['loadavg_start'][0]:.1f} at the start, "
             f"{m['loadavg_end'][0]:.1f} at the end (shared machine: compare the two rows of a size).", "",
             "| N × d | step check | fit (converged) | iterations (rejected) | last M | floor (before/after) | "
             "fit / floor | measured TV ± floor |", "|---|---|---|---|---|---|---|---|"]
    for p in res["problems"]:
        for r in p["runs"]:
            fit_s = f"stopped at {r['fit_s']:.0f} s" if r["stopped_at_budget"] else f"{r['fit_s']:.1f} s"
            lines.append(f"| {p['N']} × {p['d']} | {r['check']} | {fit_s} ({'yes' if r['converged'] else 'no'}) | "
                         f"{r['iterations']} ({r['rejected']}) | 2^{r['last_M'].bit_length() - 1} | "
                         f"{r['floor_s']:.1f} s | **{r['ratio']:.2f}** | {r['tv']:.4f} ± {r['eval_floor']:.4f} |")
    (Path(out) / "step_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
