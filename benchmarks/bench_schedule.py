"""Solver schedule variants side by side: the same default fit with module constants changed.

Each variant sets some of ``otgen.transport.semidiscrete``'s tuning constants for one fit (the
default variant changes none) and the fits run one after the other in one process. For each:
wall time, iterations (rejected), the points scored by the fit's evaluations (Σ M over the
iterations) over the certification floor's M = 0.64 N / tol² -- a count that does not depend
on the machine -- the time over the floor's time (GEMM + bias over those M points,
:func:`bench_floor.floor_gemm`, timed before and after the fit) and the TV of the final heights
measured with independent points. The per-iteration history (TV, noise, M, accepted, step,
empty cells) is kept in the JSON.

    python benchmarks/bench_schedule.py                                   # 5000x16 to TV 0.02
    python benchmarks/bench_schedule.py --size 10000x16 --variants default newton-with-empty
    python benchmarks/bench_schedule.py --size 5000x32 --tol 0.05 --name schedule_5000x32

Writes ``NAME.json`` and ``NAME.md`` under ``--out`` (default ``benchmarks/results``, NAME
``schedule``), rewritten after every fit.
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

from _budget import fit_with_constants  # noqa: E402
from bench_floor import FLOOR_POINTS_PER_TARGET, floor_gemm, tv_error  # noqa: E402
from otgen.data.toy2d import gaussian_mixture  # noqa: E402

# name -> (constants of otgen.transport.semidiscrete set for the fit, what the variant tests)
VARIANTS = {
    "default": ({}, "the solver as it is"),
    "newton-with-empty": (dict(_NEWTON_EMPTY_SHARE=0.01),
                          "full Newton step below TV 0.1 also while up to 1 % of the cells are empty"),
    "newton-below-0.3": (dict(_NEWTON_EMPTY_SHARE=0.01, _NEWTON_BELOW=0.3),
                         "full Newton step below TV 0.3, up to 1 % of the cells empty"),
    "fewer-first-points": (dict(_M0_PER_TARGET=16), "first iterations at 16 N points instead of 64 N"),
    "newton-below-0.3+fewer-first-points": (dict(_NEWTON_EMPTY_SHARE=0.01, _NEWTON_BELOW=0.3, _M0_PER_TARGET=16),
                                            "both"),
    "band-0.05": (dict(_HESSIAN_BAND_FRACTION=0.05), "Hessian band of 5 % of its points (the default before 2026-12-02)"),
    "band-0.2": (dict(_HESSIAN_BAND_FRACTION=0.2), "Hessian from 20 % of its points (the facet band 4x wider)"),
    "band-0.2+newton-below-0.3": (dict(_HESSIAN_BAND_FRACTION=0.2, _NEWTON_EMPTY_SHARE=0.01, _NEWTON_BELOW=0.3),
                                  "both"),
    "band-0.5": (dict(_HESSIAN_BAND_FRACTION=0.5), "Hessian from half its points"),
    "diagonal-half-steps": (dict(_DIAGONAL_ALPHAS=(0.5, 0.25, 0.125, 0.0625, 0.03125)),
                            "the diagonal (Jacobi) step at most half its length"),
}


def fit(Y, tol, constants, max_seconds):
    """A default fit with ``constants`` set on the solver module. Returns a summary and the final heights."""
    _, record, h = fit_with_constants(Y, tol, constants, max_seconds)
    entries = record["history"]
    warm = entries[0]["time"] - (entries[1]["time"] - entries[0]["time"]) if len(entries) > 1 else None
    return dict(record, first_iteration_ends_s=entries[0]["time"], warm_start_estimate_s=warm), h


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="5000x16", help="N x d (default %(default)s)")
    p.add_argument("--tol", type=float, default=0.02)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--max-seconds", type=float, default=1200.0, help="time budget of each fit")
    p.add_argument("--eval-points", type=int, default=1 << 22, help="independent evaluation points")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--name", default="schedule")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    N, d = (int(float(x)) for x in args.size.lower().split("x"))
    Y = torch.as_tensor(gaussian_mixture(N, d, seed=0)[0], dtype=torch.float32)
    M_floor = FLOOR_POINTS_PER_TARGET * N / args.tol ** 2
    res = dict(machine=dict(python=sys.version.split()[0], torch=torch.__version__,
                            cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                            threads=args.threads, loadavg_start=list(os.getloadavg()),
                            date=time.strftime("%Y-%m-%d %H:%M")),
               N=N, d=d, tol=args.tol, floor_points=M_floor, eval_points=args.eval_points, runs=[])
    floors = [floor_gemm(Y - Y.mean(0), 1 << 18, reps=1) * M_floor / (1 << 18)]
    for name in args.variants:
        constants, why = VARIANTS[name]
        run, h = fit(Y, args.tol, constants, args.max_seconds)
        run.update(variant=name, constants=constants, why=why)
        run["tv"], run["eval_floor"] = tv_error(Y, h, args.eval_points)
        floors.append(floor_gemm(Y - Y.mean(0), 1 << 18, reps=1) * M_floor / (1 << 18))
        run["floor_s"] = (floors[-2] + floors[-1]) / 2          # the floor measured before and after it
        run["ratio"] = run["fit_s"] / run["floor_s"]
        run["points_over_floor"] = run["points"] / M_floor
        res["runs"].append(run)
        print(f"[{name}] {run['fit_s']:.1f} s, {run['iterations']} it ({run['rejected']} rejected), points/floor "
              f"{run['points_over_floor']:.2f}, time/floor {run['ratio']:.2f}, TV {run['tv']:.4f} ± "
              f"{run['eval_floor']:.4f}", flush=True)
        res["machine"]["loadavg_end"] = list(os.getloadavg())
        (out / f"{args.name}.json").write_text(json.dumps(res, indent=2))
        write_table(res, out, args.name)


def _m_path(hist):
    """The points per iteration as runs: '2^20 ×6, 2^22 ×3'."""
    runs = []
    for e in hist:
        k = e["n_samples"].bit_length() - 1
        if runs and runs[-1][0] == k:
            runs[-1][1] += 1
        else:
            runs.append([k, 1])
    return ", ".join(f"2^{k} ×{n}" for k, n in runs)


def write_table(res, out, name="schedule"):
    m = res["machine"]
    lines = [f"{res['N']} × {res['d']} to TV ≤ {res['tol']}: schedule variants one after the other in one process; "
             f"{m['threads']} torch thread(s), {m['cpu_count']} CPU cores, torch {m['torch']}, {m['date']}; load "
             f"average {m['loadavg_start'][0]:.1f} at the start, {m.get('loadavg_end', [float('nan')])[0]:.1f} at "
             "the end (shared machine: the points column does not depend on it, the time columns do).", "",
             f"Certification floor: M = 0.64 N / tol² = {res['floor_points']:.3g} points; its time is the GEMM + "
             "bias over them, measured before and after each fit. TV measured with "
             f"{res['eval_points']} independent points.", "",
             "| variant | fit (converged) | iterations (rejected) | points per iteration | points / floor M | "
             "floor | time / floor | measured TV ± floor |", "|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        fit_s = f"stopped at {r['fit_s']:.0f} s" if r["stopped_at_budget"] else f"{r['fit_s']:.1f} s"
        lines.append(f"| {r['variant']} | {fit_s} ({'yes' if r['converged'] else 'no'}) | {r['iterations']} "
                     f"({r['rejected']}) | {_m_path(r['history'])} | **{r['points_over_floor']:.2f}** | "
                     f"{r['floor_s']:.1f} s | **{r['ratio']:.2f}** | {r['tv']:.4f} ± {r['eval_floor']:.4f} |")
    lines += ["", "Variants:"] + [f"- `{r['variant']}`: {r['why']} ({r['constants'] or 'no change'})"
                                  for r in res["runs"]]
    (Path(out) / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
