"""Why the tight 8-D clusters of ``bench_hard_cases.py`` stalled (issue 15): where the error sits, and
which solver settings move it. The stall was the mass between clusters; the coarse step on strong
groups (``SemiDiscreteOT._coarse_step``) removes it, and ``no-coarse`` shows the solver without it.

The case: 10 Gaussian clusters of std 0.01 in 8-D, 1000 targets, tol 0.02. From one shared
warm start (a 1-iteration fit without the coarse step: the multiscale start plus one step), each variant runs 20
iterations of a default ``SemiDiscreteOT`` with one module constant changed:

* ``default``;  ``no-coarse``: without the coarse step on strong groups (``_COARSE_MIN_GROUPS`` = inf),
  the solver before it; and, without it, the settings tried
  first:  ``clip``: no trust region (``_STEP_CLIP`` = 1e9);  ``tau``: LM regularisation
  1e-7 instead of 1e-3;  ``cg``: CG up to 20,000 iterations at rtol 1e-10;  ``newton-0.3``: the
  full Newton step from TV 0.3 instead of 0.1.

For the no-coarse run's final heights it measures (2^20 fresh uniform points, float32 scoring):
the TV, the part of it between clusters (½ Σ_c |Σ_{i∈c} (μ_i − ν_i)|), and the share of
points whose runner-up cell lies in another cluster, by score (the solver's Hessian pairs)
and by source distance (score gap / |y_i − y_j|, among each point's 8 best cells); and the strength
of connection of the solver's Hessian estimate from those points' top-2 (between clusters: at most;
within: the 0.1 % quantile), which ``_COARSE_THETA`` separates.

    python benchmarks/diagnose_tight_clusters.py              # ~3 min on one thread

Writes ``tight_clusters.json`` and ``tight_clusters.md`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import otgen.transport.semidiscrete as sdm  # noqa: E402
from bench_hard_cases import case_specs  # noqa: E402
from otgen.transport import SemiDiscreteOT  # noqa: E402
from otgen.transport._newton import estimate_laplacian, lm_step  # noqa: E402
from otgen.transport._scoring import Scorer  # noqa: E402

CASE = "tight-clusters-8d"
ITERATIONS = 20
PROBE_POINTS = 1 << 20
_OFF = {"_COARSE_MIN_GROUPS": math.inf}    # no coarse step: the solver before it
VARIANTS = {"default": {}, "no-coarse": _OFF, "no-coarse+clip": {**_OFF, "_STEP_CLIP": 1e9},
            "no-coarse+tau": {**_OFF, "_LM_TAU": 1e-7},
            "no-coarse+cg": {**_OFF, "lm_step": functools.partial(lm_step, max_cg=20000, rtol=1e-10)},
            "no-coarse+newton-0.3": {**_OFF, "_NEWTON_BELOW": 0.3}}


def cluster_labels(n):
    """The cluster of each target, drawn as bench_hard_cases._clusters draws them (seed 4)."""
    rng = np.random.default_rng(4)
    rng.normal(size=(10, 8))
    return rng.integers(10, size=n)


def run_variant(Y, tol, h0, changes, iterations=ITERATIONS):
    saved = {k: getattr(sdm, k) for k in changes}
    try:
        for k, v in changes.items():
            setattr(sdm, k, v)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sd = SemiDiscreteOT(tol=tol, max_iter=iterations).fit(Y, init_heights=h0)
        return sd, time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            setattr(sdm, k, v)


def where_the_error_is(Y, h, lab):
    X = torch.rand(PROBE_POINTS, Y.shape[1], generator=torch.Generator().manual_seed(0)) * 2 - 1
    Yt, ht = torch.as_tensor(Y, dtype=torch.float32), torch.as_tensor(h, dtype=torch.float32)
    v, i = Scorer(Yt, 1 << 26).topk(X, ht, 8)                              # (P, 8)
    N = Y.shape[0]
    err = torch.bincount(i[:, 0], minlength=N).double().numpy() / PROBE_POINTS - 1.0 / N
    per_cluster = np.array([err[lab == c].sum() for c in range(lab.max() + 1)])
    sep = (Yt[i[:, :1]] - Yt[i[:, 1:]]).norm(dim=2)
    j = ((v[:, :1] - v[:, 1:]) / sep).argmin(1)
    lab_t = torch.as_tensor(lab)
    by_score = float((lab_t[i[:, 0]] != lab_t[i[:, 1]]).double().mean())
    by_dist = float((lab_t[i[:, 0]] != lab_t[i[:, 1:].gather(1, j[:, None]).squeeze(1)]).double().mean())
    return dict(tv=0.5 * float(np.abs(err).sum()), tv_between_clusters=0.5 * float(np.abs(per_cluster).sum()),
                cluster_mass_error=per_cluster.round(4).tolist(), cross_pairs_by_score=by_score,
                cross_pairs_by_distance=by_dist, **connection_strength(Yt, v, i, lab_t))


def connection_strength(Yt, v, i, lab):
    """The solver's Hessian estimate from these points' top-2 (its band constants), and each edge's weight over
    the weaker of its two cells' strongest edges, min(max_k L_ik, max_k L_jk): the quantity ``strong_groups``
    compares with ``_COARSE_THETA``. Returns its largest value between clusters and its 0.1 % quantile within."""
    lap, _ = estimate_laplacian(i[:, :2], v[:, 0] - v[:, 1], Yt, band_fraction=sdm._HESSIAN_BAND_FRACTION,
                                band_per_cell=sdm._HESSIAN_BAND_PER_CELL)
    rowmax = torch.zeros(lap.n, dtype=torch.float64)
    rowmax.scatter_reduce_(0, lap.a, lap.w, "amax").scatter_reduce_(0, lap.b, lap.w, "amax")
    rel = lap.w / torch.minimum(rowmax[lap.a], rowmax[lap.b])
    cross = lab[lap.a] != lab[lap.b]
    return dict(strength_between_max=float(rel[cross].max()) if bool(cross.any()) else None,
                strength_within_q001=float(rel[~cross].quantile(0.001)), coarse_theta=sdm._COARSE_THETA)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    Y, _, _, tol = case_specs(1000)[CASE]
    h0 = run_variant(Y, tol, None, _OFF, iterations=1)[0].heights_.clone()   # one plain step: no coarse step yet
    res = {"case": CASE, "iterations": ITERATIONS, "date": time.strftime("%Y-%m-%d %H:%M"), "variants": {}}
    for name in a.variants:
        sd, secs = run_variant(Y, tol, h0, VARIANTS[name])
        res["variants"][name] = dict(tv=[h["tv"] for h in sd.history_], step=[h["step"] for h in sd.history_],
                                     converged=bool(sd.converged_), seconds=secs)
        if name == "no-coarse":
            res["error"] = where_the_error_is(Y, sd.heights_.numpy(), cluster_labels(len(Y)))
        print(name, res["variants"][name]["tv"][-1], flush=True)
    lines = [f"Tight 8-D clusters (`{CASE}`): {ITERATIONS} iterations from one warm start, {res['date']}.", "",
             "| variant | TV after 5 / 10 / 20 iterations (or the last) | converged | seconds |", "|---|---|---|---|"]
    for name, r in res["variants"].items():
        tv = r["tv"]
        lines.append(f"| {name} | {tv[min(4, len(tv) - 1)]:.4f} / {tv[min(9, len(tv) - 1)]:.4f} / {tv[-1]:.4f} | "
                     f"{r['converged']} | {r['seconds']:.1f} |")
    if "error" in res:
        e = res["error"]
        lines += ["", f"No-coarse run's final heights, {PROBE_POINTS} fresh points: TV {e['tv']:.4f}, of which between "
                  f"clusters {e['tv_between_clusters']:.4f}; runner-up cell in another cluster: "
                  f"{e['cross_pairs_by_score']:.4%} of the points by score, {e['cross_pairs_by_distance']:.4%} by "
                  "source distance (among the 8 best). Strength of connection (an edge's Hessian weight over its "
                  "cells' strongest, the quantity `strong_groups` compares with `_COARSE_THETA` = "
                  f"{e['coarse_theta']:g}): at most {e['strength_between_max']:.2g} between clusters, 0.1 % quantile "
                  f"{e['strength_within_q001']:.2g} within them."]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tight_clusters.json").write_text(json.dumps(res, indent=1))
    (out / "tight_clusters.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
