"""Hard cases for SemiDiscreteOT: stiff, clustered, unequal, curved and badly scaled targets.

Every case is a default ``SemiDiscreteOT(tol=target)`` fit (``method="auto"``: the exact
2-D solver in 2-D, the stochastic Newton method otherwise; a few cases force the
stochastic method in 2-D to show what ``auto`` avoids), uniform source on the cube,
float32 unless said otherwise, stopped after ``--max-seconds``. Reported per case:

* the fit's wall time, whether it converged (certified), its iterations;
* the time at which the solver's own estimated TV first fell to the target;
* the TV error ½ Σ |μ(W_i) − ν_i| of the final heights measured by the benchmark
  itself: with independent scrambled-Sobol points (two replicates, streams
  ``spawn_seed(0, "evaluation", r)``) scored in **float64** against all N targets
  (so near-duplicates are resolved), reported with the evaluation floor
  0.4·sqrt(N / M_eval); in 2-D also the exact TV from the exact power diagram.

The cases:

==========================  ================================================================
near-duplicates 8-D          1000 × 8 mixture; 10 targets get a twin 1e-6 away (float32)
near-duplicates 2-D          1000 × 2 mixture, 10 twins 1e-6 away (auto = exact 2-D)
near-duplicates 2-D (stoch)  the same, ``method="stochastic"`` (merge + split in float32)
tight clusters 2-D           the 25-Gaussian grid at std 0.05 (1000 targets), tol 0.01
tight clusters 8-D           10 Gaussian clusters of std 0.01 in 8-D (1000 targets)
nested clusters 8-D          4 clusters of 5 sub-clusters (std 0.05) of targets (std 0.002) in 8-D
unequal weights              1000 × 4 mixture, weights ∝ exp(2.5 ξ), ξ ~ N(0, 1) (max/min ~ 1e5)
ring 2-D                     8 Gaussians of std 0.05 on a circle (1000 targets), tol 0.01
ring 2-D (stochastic)        the same, ``method="stochastic"``: the 2-D stall of issue 15
scale 1e-6 / 1e6             the 1000 × 4 mixture times 1e-6 / 1e6
offset 1e6                   the 1000 × 4 mixture plus 1e6: float32 cannot store it (an error, recorded)
offset 1e6, float64          the same with ``dtype=torch.float64``
==========================  ================================================================

    python benchmarks/bench_hard_cases.py                    # all cases, ~5 min on one thread
    python benchmarks/bench_hard_cases.py --cases ring-2d scale-1e6 --max-seconds 60
    python benchmarks/bench_hard_cases.py --quick --out /tmp/q

Writes ``hard_cases.json`` and ``hard_cases.md`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:          # benchmark this checkout even without an install
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _budget import fit_within  # noqa: E402

from otgen._base import spawn_seed  # noqa: E402
from otgen.data.toy2d import gaussian_grid, gaussian_mixture, gaussian_ring  # noqa: E402
from otgen.transport import SemiDiscreteOT, SourceSampler, power2d  # noqa: E402
from otgen.transport._scoring import Scorer  # noqa: E402

TWIN_GAP = 1e-6          # distance of a near-duplicate from its twin (the stall of issue 15)
N_TWINS = 10
EVAL_MAX = 1 << 22       # independent evaluation points (float64 scoring)


# ----------------------------------------------------------------------------- the cases

def _twins(Y, rng):
    """Y with N_TWINS of its rows replaced by a twin of another row TWIN_GAP away."""
    Y = Y.copy()
    N, d = Y.shape
    src = rng.choice(N // 2, N_TWINS, replace=False)
    dst = N // 2 + rng.choice(N // 2, N_TWINS, replace=False)
    u = rng.normal(size=(N_TWINS, d))
    Y[dst] = Y[src] + TWIN_GAP * u / np.linalg.norm(u, axis=1, keepdims=True)
    return Y


def _clusters(N, d, k, std, seed):
    """N targets around k centres ~ N(0, 4 I) in R^d, each with isotropic spread std (seed: int or Generator)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 2
    return centres[rng.integers(k, size=N)] + std * rng.normal(size=(N, d))


def _nested_clusters(N, d, seed):
    """4 clusters (std 2) of 5 sub-clusters (std 0.05) of points (std 0.002): two scales of stiffness (seed: int
    or Generator)."""
    rng = np.random.default_rng(seed)
    sub = (rng.normal(size=(4, 1, d)) * 2 + 0.05 * rng.normal(size=(4, 5, d))).reshape(20, d)
    return sub[rng.integers(20, size=N)] + 0.002 * rng.normal(size=(N, d))


def case_specs(n):
    """name -> (targets (N, d), weights or None, settings, target TV)."""
    rng = np.random.default_rng(0)
    mix4 = gaussian_mixture(n, 4, seed=0)[0]
    w = np.exp(2.5 * rng.normal(size=n))
    return {
        "near-duplicates-8d": (_twins(gaussian_mixture(n, 8, seed=1)[0], rng), None, {}, 0.02),
        "near-duplicates-2d": (_twins(gaussian_mixture(n, 2, seed=2)[0], rng), None, {}, 0.01),
        "near-duplicates-2d-stochastic": (_twins(gaussian_mixture(n, 2, seed=2)[0], np.random.default_rng(0)), None,
                                          dict(method="stochastic"), 0.02),
        "tight-clusters-2d": (gaussian_grid(n, std=0.05, seed=3)[0], None, {}, 0.01),
        "tight-clusters-8d": (_clusters(n, 8, 10, 0.01, seed=4), None, {}, 0.02),
        "nested-clusters-8d": (_nested_clusters(n, 8, seed=6), None, {}, 0.02),
        "unequal-weights": (mix4, w / w.sum(), {}, 0.02),
        "ring-2d": (gaussian_ring(n, seed=5)[0], None, {}, 0.01),
        "ring-2d-stochastic": (gaussian_ring(n, seed=5)[0], None, dict(method="stochastic"), 0.02),
        "scale-1e-6": (mix4 * 1e-6, None, {}, 0.02),
        "scale-1e6": (mix4 * 1e6, None, {}, 0.02),
        "offset-1e6": (mix4 + 1e6, None, {}, 0.02),
        "offset-1e6-float64": (mix4 + 1e6, None, dict(dtype=torch.float64), 0.02),
    }


# ----------------------------------------------------------------------------- measuring

def measured_tv(Y, nu, h, n_points):
    """Independent float64 QMC estimate of ½ Σ|μ(W_i) − ν_i|: (tv, replicate noise, floor)."""
    Y64 = torch.as_tensor(Y, dtype=torch.float64)
    c = Y64.mean(0)
    s = float((Y64 - c).pow(2).sum(1).mean().sqrt())
    scorer = Scorer((Y64 - c) / s, 256 << 20)          # the cells of (Y, h) in a centred, scaled frame
    g = torch.as_tensor(h, dtype=torch.float64) / s
    N, d = Y64.shape
    counts = torch.zeros(2, N, dtype=torch.float64)
    for r in range(2):
        sampler = SourceSampler("uniform", d, spawn_seed(0, "evaluation", r), qmc=True, dtype=torch.float64)
        left = n_points // 2
        while left > 0:
            m = min(1 << 16, left)
            counts[r] += torch.bincount(scorer.best(sampler.draw(m), g)[1], minlength=N).double()
            left -= m
    masses = counts / (n_points // 2)
    nu = torch.as_tensor(nu, dtype=torch.float64)
    tv = 0.5 * float((masses.mean(0) - nu).abs().sum())
    noise = 0.25 * float((masses[0] - masses[1]).abs().sum())
    return tv, noise, 0.4 * math.sqrt(N / n_points)


def run_case(name, Y, nu, settings, target, max_seconds, eval_max, device="cpu"):
    N, d = Y.shape
    nu = np.full(N, 1.0 / N) if nu is None else nu
    t0 = time.perf_counter()
    seen = {}

    def budget(it, h, info):
        seen.update(h=h, it=it, info=info, coarse=seen.get("coarse", 0) + bool(info.get("coarse_groups")))
        if info["accepted"] and info["tv"] <= target and "first_s" not in seen:
            seen["first_s"] = time.perf_counter() - t0

    sd = SemiDiscreteOT(tol=target, seed=0, device=device, **settings)
    try:
        stopped, caught = fit_within(sd, Y, nu, callback=budget, max_seconds=max_seconds, start=t0,
                                     record_warnings=True)
    except ValueError as e:                # an input the dtype cannot hold: the message is the result
        return dict(case=name, N=N, d=d, target_tv=target, method=sd._method(d), error=str(e),
                    fit_wall_s=time.perf_counter() - t0, stopped_at_budget=False)
    wall = time.perf_counter() - t0
    row = dict(case=name, N=N, d=d, target_tv=target, method=sd._method(d), fit_wall_s=wall, stopped_at_budget=stopped,
               coarse_steps=seen.get("coarse", 0), warnings=sorted({str(w.message)[:160] for w in caught}))
    m_eval = min(eval_max, 1 << int(math.ceil(math.log2((1.6 / target) ** 2 * N))))
    if stopped:      # the best heights so far (members of merged groups share their group's height)
        tv, noise, floor = measured_tv(Y, nu, seen["h"].cpu(), m_eval)
        row.update(converged=False, iterations=seen["it"], solver_tv=seen["info"]["tv"],
                   final_M=seen["info"]["n_samples"], tv=tv, eval_noise=noise, eval_floor=floor, eval_points=m_eval,
                   first_below_target_s=seen.get("first_s"))
        if d == 2:
            exact = power2d.cell_masses(np.asarray(Y, dtype=np.float64), seen["h"].cpu().numpy(),
                                        power2d.square_domain())
            row["exact_tv"] = 0.5 * float(np.abs(exact - nu).sum())
        return row
    hist = sd.history_
    first = seen.get("first_s")
    if first is None and hist and hist[-1]["n_samples"] == 0:     # exact 2-D: no callback; the error is exact
        first = next((wall * e["time"] / hist[-1]["time"] for e in hist if e["tv"] <= target), None)
    tv, noise, floor = measured_tv(Y, nu, sd.heights_.cpu(), m_eval)
    row.update(converged=bool(sd.converged_), iterations=sd.n_iter_, first_below_target_s=first,
               solver_tv=hist[-1]["tv"] if hist else None, final_M=hist[-1]["n_samples"] if hist else None,
               tv=tv, eval_noise=noise, eval_floor=floor, eval_points=m_eval, merged=bool(
                   sd._frame_targets.dtype == torch.float64 and sd.dtype != torch.float64))
    if d == 2:
        exact = power2d.cell_masses(np.asarray(Y, dtype=np.float64), sd.heights_.cpu().numpy(),
                                    power2d.square_domain())
        row["exact_tv"] = 0.5 * float(np.abs(exact - nu).sum())
    return row


# ----------------------------------------------------------------------------- driver and table

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=None, help="case names (default: all)")
    p.add_argument("--n", type=int, default=1000, help="targets per case (default %(default)s)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="time budget of one fit")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the evaluation runs on the CPU in float64)")
    p.add_argument("--quick", action="store_true", help="200 targets, three cases (the tests use it)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = 200 if args.quick else args.n
    specs = case_specs(n)
    names = args.cases or (["near-duplicates-8d", "ring-2d", "scale-1e6"] if args.quick else list(specs))
    unknown = set(names) - set(specs)
    if unknown:
        p.error(f"unknown case(s) {sorted(unknown)}; known: {list(specs)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = dict(machine=dict(python=sys.version.split()[0], torch=torch.__version__,
                                cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                                threads=args.threads, device=args.device, loadavg_start=list(os.getloadavg()),
                                date=time.strftime("%Y-%m-%d %H:%M")),
                   settings=dict(n=n, max_seconds=args.max_seconds, twin_gap=TWIN_GAP, quick=args.quick),
                   cases=[])
    for name in names:
        Y, nu, settings, target = specs[name]
        r = run_case(name, Y, nu, settings, target, args.max_seconds, EVAL_MAX if not args.quick else 1 << 18,
                     args.device)
        results["cases"].append(r)
        print(f"[{name}] {r['method']}: {r['fit_wall_s']:.1f} s, converged {r.get('converged')}, {r.get('error', '')}"
              f"TV {r.get('tv', float('nan')):.4f} (exact {r.get('exact_tv', float('nan')):.4f})", flush=True)
        results["machine"]["loadavg_end"] = list(os.getloadavg())
        (out / "hard_cases.json").write_text(json.dumps(results, indent=2))
    write_table(results, out)


def _f(x, fmt="{:.4f}"):
    return "—" if x is None else fmt.format(x)


def write_table(results, out):
    m = results["machine"]
    lines = [f"Hard cases: {results['settings']['n']} targets each, uniform source, float32, {m['threads']} torch "
             f"thread(s), {m['cpu_count']} CPU cores, torch {m['torch']}, {m['date']}; load average "
             f"{m['loadavg_start'][0]:.1f} at the start, {m.get('loadavg_end', [float('nan')])[0]:.1f} at the end "
             "(shared machine: times are indicative).", "",
             "| case | N × d | method | target TV | fit (converged) | estimated TV ≤ target at | iterations, last M "
             "| coarse steps | measured TV ± floor | exact TV (2-D) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["cases"]:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['N']} × {r['d']} | {r['method']} | {r['target_tv']} | "
                         f"refused: {r['error'][:150]}… | — | — | — | — | — |")
            continue
        if r.get("stopped_at_budget"):
            fit = f"stopped at {r['fit_wall_s']:.0f} s (budget)"
        else:
            fit = f"{r['fit_wall_s']:.1f} s ({'yes' if r['converged'] else 'no'})"
        merged = (" (twins merged)" if r["method"] == "stochastic" else " (twins: float64 map)") if r.get("merged") else ""
        lines.append(f"| {r['case']}{merged} | {r['N']} × {r['d']} | {r['method']} | {r['target_tv']} | {fit} | "
                     f"{_f(r.get('first_below_target_s'), '{:.1f} s')} | {r.get('iterations', '—')}, "
                     f"{r.get('final_M', '—')} | {r.get('coarse_steps', '—')} | {_f(r.get('tv'))} ± "
                     f"{_f(r.get('eval_floor'))} | "
                     f"{_f(r.get('exact_tv'))} |")
    notes = sorted({w for r in results["cases"] for w in r.get("warnings", [])})
    if notes:
        lines += ["", "Warnings raised:", ""] + [f"- {w}" for w in notes]
    (out / "hard_cases.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
