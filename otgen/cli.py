"""The ``otgen`` command.

    otgen demo [--out DIR]                 fit OT to a 2-D Gaussian mixture, draw the power diagram
    otgen fit-ot CODES.npy --out FILE.pt   fit the Brenier potential of saved latent codes
    otgen compare mnist [--out DIR]        OT vs diffusion on MNIST latents: report.md, metrics.json, figures
    otgen compare video --dataset NAME     OT vs a diffusion transformer on video clip latents (critical states)
    otgen figure NAME [--out DIR]          the figures of the paper-style comparisons
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _demo(args) -> int:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from otgen.data.toy2d import gaussian_grid, gaussian_ring
    from otgen.transport import SemiDiscreteOT, power2d

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    make = gaussian_ring if args.dataset == "ring" else gaussian_grid
    Y, labels = make(args.n_targets, seed=args.seed)
    t0 = time.perf_counter()
    sd = SemiDiscreteOT(source="uniform", tol=args.tol, seed=args.seed, verbose=not args.quiet).fit(Y)
    seconds = time.perf_counter() - t0
    h = sd.heights_.cpu().numpy()
    exact = power2d.cell_masses(Y, h, power2d.square_domain())
    tv_exact = 0.5 * float(np.abs(exact - 1 / len(Y)).sum())
    if not args.quiet:
        print(f"fitted {len(Y)} targets in {seconds:.1f} s, {sd.n_iter_} iterations, converged={sd.converged_}")
        for e in sd.history_:
            print(f"  iter {e['iter']:3d}  tv {e['tv']:.4f}  noise {e['noise']:.4f}  points {e['n_samples']:>9d}"
                  f"  {'accepted' if e['accepted'] else 'rejected'}")
        print(f"exact TV error of the fitted heights (exact power diagram): {tv_exact:.4f}")

    cells = power2d.power_cells(Y, h, power2d.square_domain())
    pts, idx = sd.sample(args.n_samples, seed=args.seed + 1)
    fig, ax = plt.subplots(1, 2, figsize=(11, 5.2))
    colors = plt.cm.tab20(labels % 20)
    ax[0].add_collection(PolyCollection([c for c in cells if len(c)], facecolors=colors[[len(c) > 0 for c in cells]],
                                        edgecolors="k", linewidths=0.2, alpha=0.8))
    ax[0].set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal",
              title=f"power diagram in the source [-1,1]² (exact TV {tv_exact:.3f})")
    ax[1].scatter(Y[:, 0], Y[:, 1], s=4, c=colors, label="targets")
    ax[1].scatter(pts[:, 0].cpu(), pts[:, 1].cpu(), s=14, facecolors="none", edgecolors="k", linewidths=0.4,
                  label="∇u_h(x) of source samples")
    ax[1].set(aspect="equal", title="targets and transported samples")
    ax[1].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=130)
    plt.close(fig)
    summary = dict(dataset=args.dataset, n_targets=len(Y), seconds=seconds, n_iter=sd.n_iter_,
                   converged=bool(sd.converged_), tv_estimate=sd.result_.tv_error, tv_exact=tv_exact,
                   history=sd.history_)
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    if not args.quiet:
        print(f"wrote {out / 'demo.png'} and {out / 'demo.json'}")
    return 0


def _init_distributed(device):
    """Under torchrun (WORLD_SIZE > 1): join the process group; returns (rank, world, device)."""
    import os

    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), world, f"cuda:{local}" if cuda else "cpu"


def _fit_ot(args) -> int:
    from otgen.transport import SemiDiscreteOT

    path = Path(args.codes)
    if not path.exists():
        raise SystemExit(f"otgen fit-ot: {path} does not exist")
    Y = np.load(path)
    weights = np.load(args.weights) if args.weights else None
    rank, world, device = _init_distributed(args.device)
    try:
        sd = SemiDiscreteOT(source=args.source, tol=args.tol, max_iter=args.max_iter, device=device,
                            max_samples=args.max_samples, seed=args.seed, verbose=not args.quiet,
                            checkpoint=args.out + ".ckpt" if args.resume else None,
                            checkpoint_every=args.checkpoint_every, parallel=args.parallel if world > 1 else None)
        sd.fit(Y, weights, resume=args.resume)
        if rank == 0:
            tmp = args.out + ".tmp"
            sd.save(tmp)
            Path(tmp).replace(args.out)
        if not args.quiet and rank == 0:
            print(f"converged={sd.converged_} after {sd.n_iter_} iterations, TV {sd.result_.tv_error:.4f}"
                  f"{f' ({world} processes)' if world > 1 else ''}; wrote {args.out}")
    finally:
        if world > 1:
            import torch.distributed as dist
            dist.destroy_process_group()
    return 0


def _figure(args) -> int:
    from otgen import figures

    out = Path(args.out)
    if args.name == "singular-set":
        numbers = figures.singular_set_figure(out, n_targets=args.n_targets or 1500, seed=args.seed)
    elif args.name == "mode-mixture":
        numbers = figures.mode_mixture_2d_figure(out, dataset=args.dataset, n_data=args.n_targets or 1000,
                                                 n_samples=args.n_samples, seed=args.seed,
                                                 diffusion_steps=args.diffusion_steps)
    elif args.name == "mnist-mode-mixture":
        numbers = figures.mnist_mode_mixture_figure(out, n_points=args.n_points, tau=args.tau,
                                                    diffusion_steps=args.diffusion_steps, method=args.method,
                                                    data_dir=args.data_dir, device=args.device, seed=args.seed,
                                                    cache_dir=args.cache_dir, verbose=not args.quiet)
    elif args.name == "video-critical-states":
        numbers = figures.video_critical_states_figure(out, n_train=args.n_train or 2000,
                                                       ae_epochs=args.ae_epochs, dit_steps=args.dit_steps,
                                                       diffusion_steps=args.diffusion_steps, n_points=args.n_points,
                                                       device=args.device, seed=args.seed, cache_dir=args.cache_dir,
                                                       verbose=not args.quiet)
    else:  # detector-pr
        numbers = figures.detector_precision_recall(out, n=args.n_targets or 400, seed=args.seed)
    if not args.quiet:
        shown = {k: v for k, v in numbers.items() if isinstance(v, (int, float, str, bool))}
        print(json.dumps(shown, indent=2))
        print(f"wrote figures to {out}")
    return 0


_MNIST_DEFAULTS = dict(out="otgen-out/compare-mnist", ae_epochs=20, n_samples=1000, diffusion_steps=10000, ot_tol=0.03)
_VIDEO_DEFAULTS = dict(ae_epochs=None, n_samples=500, diffusion_steps=10000, ot_tol=0.03, n_train=2000)


def _compare(args) -> int:
    if args.dataset == "video":
        from otgen.compare_video import compare_video

        v = {k: (getattr(args, k) if getattr(args, k) is not None else d) for k, d in _VIDEO_DEFAULTS.items()}
        video = args.video_dataset or "bistable"
        out = args.out or f"otgen-out/compare-video-{video}"
        result = compare_video(video, out, n_train=v["n_train"], n_test=args.n_test, ae_epochs=v["ae_epochs"],
                               diffusion_steps=v["diffusion_steps"], dit_steps=args.dit_steps,
                               n_samples=v["n_samples"], ddpm_steps=args.ddpm_steps, ddim_steps=args.ddim_steps,
                               ot_tol=v["ot_tol"], n_long=args.n_long, n_critical=args.n_critical, ae_extra=args.ae_extra,
                               angle_threshold=_angle(args.angle_threshold), angle_quantile=args.angle_quantile,
                               mode_rule=args.mode_rule, device=args.device, seed=args.seed,
                               cache_dir=args.cache_dir, verbose=not args.quiet)
        if not args.quiet:
            print((Path(out) / "report.md").read_text())
        return 0 if result else 1
    from otgen.compare import compare_mnist

    if args.dataset != "mnist":
        raise ValueError(f"only 'mnist' and 'video' can be compared, got {args.dataset!r}")
    if args.video_dataset is not None:
        raise ValueError("--dataset chooses the clips of 'otgen compare video'; 'otgen compare mnist' has none")
    m = {k: (getattr(args, k) if getattr(args, k) is not None else d) for k, d in _MNIST_DEFAULTS.items()}
    result = compare_mnist(m["out"], latent_dim=args.latent_dim, ae_epochs=m["ae_epochs"],
                           clf_epochs=args.clf_epochs, n_samples=m["n_samples"], data_dir=args.data_dir,
                           device=args.device, seed=args.seed, cache_dir=args.cache_dir,
                           verbose=not args.quiet, diffusion_steps=m["diffusion_steps"], ot_tol=m["ot_tol"],
                           n_train=args.n_train, angle_quantile=args.angle_quantile, mode_rule=args.mode_rule)
    if not args.quiet:
        print((Path(m["out"]) / "report.md").read_text())
    return 0 if result else 1


def _angle(value):
    """--angle-threshold: 'persistence', 'gap', 'ratio' or a number of radians."""
    if value is None or value in ("gap", "ratio", "persistence"):
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--angle-threshold must be 'persistence', 'gap', 'ratio' or a number of radians, "
                         f"got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from otgen import __version__

    p = argparse.ArgumentParser(prog="otgen", description="Geometric optimal-transport generative models.")
    p.add_argument("--version", action="version", version=f"otgen {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="fit semi-discrete OT to a 2-D Gaussian mixture and draw it")
    d.add_argument("--out", default="otgen-out/demo", help="output folder (default: %(default)s)")
    d.add_argument("--dataset", choices=["ring", "grid"], default="grid")
    d.add_argument("--n-targets", type=int, default=300)
    d.add_argument("--n-samples", type=int, default=1000)
    d.add_argument("--tol", type=float, default=0.02)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    d.set_defaults(func=_demo)

    f = sub.add_parser("fit-ot", help="fit the Brenier potential of latent codes saved with numpy.save",
                       description="Fit the Brenier potential of (N, d) codes. Under torchrun the solve is "
                       "sample-parallel over all processes (gloo on CPUs, nccl on GPUs): "
                       "torchrun --standalone --nproc_per_node 2 -m otgen fit-ot codes.npy --out pot.pt")
    f.add_argument("codes", help="(N, d) array in a .npy file")
    f.add_argument("--out", required=True, help="where to save the fitted potential (.pt)")
    f.add_argument("--weights", help="optional (N,) .npy file of target masses")
    f.add_argument("--source", choices=["uniform", "ball", "gaussian"], default="uniform")
    f.add_argument("--tol", type=float, default=0.01)
    f.add_argument("--max-iter", type=int, default=100)
    f.add_argument("--max-samples", type=int, default=2**26, help="cap on source points per iteration")
    f.add_argument("--device", default=None)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--resume", action="store_true", help="checkpoint to OUT.ckpt and resume from it")
    f.add_argument("--checkpoint-every", type=int, default=5, help="iterations between checkpoints (--resume)")
    f.add_argument("--parallel", choices=["samples", "targets"], default="samples",
                   help="under torchrun: split each iteration's points (default) or the targets over processes")
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=_fit_ot)

    c = sub.add_parser("compare", help="OT versus diffusion on the same latents: every metric, a report folder",
                       description="mnist: OT vs latent DDPM/DDIM on MNIST digits. video: OT vs a diffusion "
                       "transformer (DDPM, DDIM) and an MLP DDPM on video clip latents, with the critical-state "
                       "measurements (pick the clips with --dataset).")
    c.add_argument("dataset", choices=["mnist", "video"])
    c.add_argument("--dataset", dest="video_dataset", choices=["moving-digits", "bistable", "permanence"], default=None,
                   help="clips for 'compare video' (default: bistable)")
    c.add_argument("--out", default=None,
                   help="report folder (default: otgen-out/compare-mnist, otgen-out/compare-video-DATASET)")
    c.add_argument("--latent-dim", type=int, default=8, help="mnist only")
    c.add_argument("--ae-epochs", type=int, default=None, help="autoencoder epochs (default: mnist 20, video bistable 24, moving-digits 24, permanence 48)")
    c.add_argument("--clf-epochs", type=int, default=20, help="mnist only")
    c.add_argument("--n-samples", type=int, default=None, help="samples per generator (default: mnist 1000, video 500)")
    c.add_argument("--diffusion-steps", type=int, default=None,
                   help="training steps of the (MLP) latent diffusion (default: 10000)")
    c.add_argument("--dit-steps", type=int, default=4000, help="video: training steps of the diffusion transformer")
    c.add_argument("--ddpm-steps", type=int, default=1000, help="video: DDPM sampling steps")
    c.add_argument("--ddim-steps", type=int, default=50, help="video: DDIM sampling steps")
    c.add_argument("--ot-tol", type=float, default=None, help="TV tolerance of the OT solve (default: 0.03)")
    c.add_argument("--n-train", type=int, default=None,
                   help="mnist: a seeded subset of the training digits; video: training clips (default 2000)")
    c.add_argument("--n-test", type=int, default=1000, help="video: held-out clips")
    c.add_argument("--n-long", type=int, default=100, help="video (bistable): long clips for the localisation")
    c.add_argument("--ae-extra", type=int, default=None,
                   help="video (bistable): extra transition clips for the autoencoder only (default: n-train / 4)")
    c.add_argument("--n-critical", type=int, default=250,
                   help="video (bistable): flagged source points for the critical-state generation")
    c.add_argument("--angle-threshold", default="persistence",
                   help="video: detector threshold rule, 'persistence' (default), 'gap', 'ratio' or radians")
    c.add_argument("--angle-quantile", type=float, default=None,
                   help="detector threshold at this quantile of the neighbour angles (default: mnist the gap rule, "
                        "video --angle-threshold)")
    c.add_argument("--mode-rule", choices=["component", "facet"], default="component",
                   help="the extended OT map blends cells of one connected mode (default) or not across a "
                        "singular facet")
    c.add_argument("--data-dir", default=None, help="mnist: folder with the MNIST IDX files (default: embedded subset)")
    c.add_argument("--cache-dir", default=None, help="trained artifacts (default: OUT/cache)")
    c.add_argument("--device", default=None)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=_compare)

    g = sub.add_parser("figure", help="draw a figure (PNG + the numbers behind it as JSON)")
    g.add_argument("name", choices=["singular-set", "mode-mixture", "detector-pr", "mnist-mode-mixture",
                                    "video-critical-states"],
                   help="singular-set: the singular set of OT to a crescent (exact 2-D); mode-mixture: OT vs "
                        "DDPM on 8/25-Gaussian mixtures; detector-pr: detector precision/recall on two blobs; "
                        "mnist-mode-mixture: the MNIST latent-space figure, OT vs diffusion; video-critical-states: "
                        "bistable-ball latent map and filmstrips, OT on the singular set vs the diffusion transformer")
    g.add_argument("--out", default="otgen-out/figures")
    g.add_argument("--dataset", choices=["ring", "grid"], default="ring", help="for mode-mixture")
    g.add_argument("--n-targets", type=int, default=None, help="data points (figure-specific default)")
    g.add_argument("--n-samples", type=int, default=2000)
    g.add_argument("--diffusion-steps", type=int, default=10000, help="training steps of the DDPM baseline")
    g.add_argument("--n-points", type=int, default=100,
                   help="generated points (mnist-mode-mixture); flagged source points (video-critical-states)")
    g.add_argument("--n-train", type=int, default=None, help="training clips (video-critical-states, default 2000)")
    g.add_argument("--ae-epochs", type=int, default=24, help="autoencoder epochs (video-critical-states)")
    g.add_argument("--dit-steps", type=int, default=4000, help="diffusion-transformer steps (video-critical-states)")
    g.add_argument("--tau", type=float, default=0.2, help="mixed-digit threshold (mnist-mode-mixture)")
    g.add_argument("--method", choices=["ddpm", "ddim"], default="ddpm")
    g.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (default: embedded subset)")
    g.add_argument("--cache-dir", default=None, help="where trained models are cached")
    g.add_argument("--device", default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=_figure)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"otgen {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
