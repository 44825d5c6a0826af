"""How far DDIM's deterministic noise -> code map is from an optimal-transport map, beside OT's own map.

An optimal-transport map for the quadratic cost is the gradient of a convex potential (Brenier). For
pairs (x_i, T(x_i)), :func:`otgen.metrics.convexity.convex_map_residual` fits the closest such gradient
(shape-constrained convex regression, a QP in cvxpy) and reports the relative residual: 0 for a
gradient of a convex function, 1 for no better than a constant map.

Data: ``gaussian_mixture`` in d dimensions, standardised as the denoiser sees it. Diffusion:
``LatentDiffusion`` (MLP), DDIM 50 steps with eta = 0 from given noise. OT: ``SemiDiscreteOT`` from the
standard normal (the same noise law) to the same codes, map x -> its target. Reference: noise paired
with codes drawn at random (no map at all).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/bench_convexity.py [--steps 4000] [--case d:pairs:components:reps ...]

Writes ``results/convexity.{json,md}``. Needs cvxpy (``pip install -e ".[cvxpy]"``).
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from otgen._base import spawn_seed  # noqa: E402
from otgen.data import gaussian_mixture  # noqa: E402
from otgen.diffusion import DDIMScheduler, LatentDiffusion, sample  # noqa: E402
from otgen.metrics.convexity import convex_map_residual  # noqa: E402
from otgen.transport import SemiDiscreteOT  # noqa: E402

N_TRAIN = 2000            # training codes per case
DDIM_STEPS = 50           # the DDIM sampler the README compares against
MAPS = ("DDIM-50", "OT (SemiDiscreteOT)", "random pairing")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def case_rows(d, n_pairs, k, reps, steps, seed):
    Y, _ = gaussian_mixture(N_TRAIN, d, n_components=k, seed=seed)
    dm = LatentDiffusion(n_steps=steps, seed=seed).fit(Y)
    Z = dm.latent_.transform(Y).astype(np.float64)                 # (N, d) the codes the denoiser sees
    ot = SemiDiscreteOT(source="gaussian", tol=0.02, seed=seed).fit(Z)
    sched = DDIMScheduler(num_train_timesteps=dm.num_train_timesteps, beta_schedule=dm.schedule,
                          clip_sample=dm.clip_range_)
    rows = []
    for rep in range(reps):
        rng = np.random.default_rng(spawn_seed(seed, "convexity", d, rep))
        x = rng.standard_normal((n_pairs, d))                        # (n, d) noise
        ddim = sample(dm.model_, sched, n_pairs, (d,), num_inference_steps=DDIM_STEPS,
                      x_T=torch.tensor(x, dtype=torch.float32), device="cpu").numpy().astype(np.float64)
        pairs = dict(zip(MAPS, (ddim, ot.transform(x), Z[rng.choice(len(Z), n_pairs, replace=False)])))
        for name, t in pairs.items():
            t0 = time.perf_counter()
            rows.append(dict(d=d, n_pairs=n_pairs, rep=rep, map=name, residual=float(convex_map_residual(x, t)),
                             qp_seconds=time.perf_counter() - t0, ot_converged=bool(ot.converged_)))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows) -> str:
    lines = ["| d | pairs | " + " | ".join(MAPS) + " |", "|---|---|" + "---|" * len(MAPS)]
    for d, n in sorted({(r["d"], r["n_pairs"]) for r in rows}):
        cells = []
        for name in MAPS:
            r = [row["residual"] for row in rows if (row["d"], row["n_pairs"], row["map"]) == (d, n, name)]
            cells.append(f"{np.mean(r):.4g} ({', '.join(f'{v:.3g}' for v in r)})")
        lines.append(f"| {d} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4000, help="diffusion training steps (default: %(default)s)")
    p.add_argument("--case", action="append", default=None,
                   help="d:pairs:components:reps (default: 2:200:4:3 and 8:150:10:3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    cases = [tuple(int(v) for v in c.split(":")) for c in (args.case or ["2:200:4:3", "8:150:10:3"])]
    rows = [r for c in cases for r in case_rows(*c, args.steps, args.seed)]
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "convexity.json"), "w") as f:
        json.dump(dict(steps=args.steps, seed=args.seed, rows=rows), f, indent=2)
    table = ("Relative residual of the closest gradient of a convex function (mean over draws, each draw in "
             f"brackets); diffusion trained {args.steps} steps.\n\n" + markdown(rows) + "\n")
    with open(os.path.join(RESULTS, "convexity.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
