"""The ``otgen`` command.

    otgen demo [--out DIR]                    fit OT to a 2-D Gaussian mixture, draw the power diagram
    otgen fit-ot CODES.npy --out FILE.pt      fit the Brenier potential of saved latent codes
    otgen compare mnist [--out DIR] ...       OT vs diffusion on MNIST latents: report.md, metrics.json, figures
    otgen compare video [--clips NAME] ...    OT vs a diffusion transformer on video clip latents
    otgen figure NAME [--out DIR] ...         a figure, from the experiment stages it needs

The options of ``compare`` and of the experiment figures are built from the experiments' settings
dataclasses (:class:`otgen.experiments.MNISTSettings`, :class:`otgen.experiments.VideoSettings`):
every default is shown in ``--help`` from the one place it is defined, and an option that does not
apply to a subcommand does not exist there (argparse refuses it).

Exit codes: 0 success; 1 an OT fit that did not converge (unless ``--allow-unconverged``); 2 bad
usage or input; 130 interrupted (Ctrl-C), with the last checkpoint kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from otgen import __version__
from otgen._base import flush_denormals
from otgen._validation import ConvergenceWarning
from otgen.data.toy2d import gaussian_grid, gaussian_ring
from otgen.experiments import Cache, mnist, toy2d, video
from otgen.experiments._common import check_out_dir
from otgen.figures import mnist_mode_mixture as mnist_figures
from otgen.figures import mode_mixture_2d, singular_set
from otgen.figures import video_critical_states as video_figures
from otgen.figures.convergence import history_figure
from otgen.figures.demo import demo_figure
from otgen.transport import SOURCES, SemiDiscreteOT, power2d

EXIT_OK, EXIT_UNCONVERGED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(ValueError):
    """Bad command-line input found before any work started."""


# ----------------------------------------------------------------------------- options from settings

def _parse_value(kind):
    """An argparse ``type`` for a settings field of type ``kind`` (None accepted as 'none' when optional)."""
    def parse(text):
        if text.lower() == "none":
            return None
        for cast in (int, float):
            if kind in (cast, f"{cast.__name__}", f"{cast.__name__} | None"):
                return cast(text)
        if kind in ("object",):          # a rule name or a number
            try:
                return float(text)
            except ValueError:
                return text
        return text
    return parse


def add_settings_arguments(parser, settings_cls, *, defaults=None, skip=()) -> None:
    """One ``--option`` per field of ``settings_cls`` (help and default from the field), ``skip`` left out."""
    defaults = defaults or {}
    for f in dataclasses.fields(settings_cls):
        if f.name in skip:
            continue
        default = defaults.get(f.name, f.default)
        flag = "--" + f.name.replace("_", "-")
        about = f.metadata.get("help") or f"the {settings_cls.__name__} setting {f.name!r}"
        helptext = f"{about} (default: {default})".replace("%", "%%")
        if f.name == "taus":
            parser.add_argument(flag, type=float, nargs="+", default=default, help=helptext)
        else:
            parser.add_argument(flag, type=_parse_value(str(f.type)), default=default, help=helptext)


def settings_from_args(settings_cls, args, **fixed):
    """The settings dataclass from parsed arguments (a bad value is a UsageError with the field's message)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(settings_cls) if hasattr(args, f.name)}
    if "taus" in values:
        values["taus"] = tuple(values["taus"])
    values.update(fixed)
    try:
        return settings_cls(**values)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _run_options(p, out_default: str) -> None:
    p.add_argument("--out", default=out_default, help="output folder (default: %(default)s)")
    p.add_argument("--cache-dir", default=None, help="fitted models are cached here (default: OUT/cache)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:K (default: CUDA when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")


# ----------------------------------------------------------------------------- demo

def _demo(args) -> int:
    out = Path(check_out_dir(args.out))
    make = gaussian_ring if args.dataset == "ring" else gaussian_grid
    Y, labels = make(args.n_targets, seed=args.seed)
    t0 = time.perf_counter()
    sd = SemiDiscreteOT(source="uniform", tol=args.tol, seed=args.seed, verbose=not args.quiet).fit(Y)
    seconds = time.perf_counter() - t0
    h = sd.heights_.cpu().numpy()
    exact = power2d.cell_masses(Y, h, power2d.square_domain())
    tv_exact = 0.5 * float(np.abs(exact - 1 / len(Y)).sum())
    if not args.quiet:
        print(f"fitted {len(Y)} targets in {seconds:.1f} s, {sd.n_iter_} iterations, converged={sd.converged_}; "
              f"exact TV error of the fitted heights (exact power diagram): {tv_exact:.4f}")
    cells = power2d.power_cells(Y, h, power2d.square_domain())
    pts = sd.sample(args.n_samples, seed=args.seed)
    hist = sd.history_
    demo_figure(Y, labels, cells, pts, hist, out, tol=args.tol, tv_exact=tv_exact, numbers=dict(
        dataset=args.dataset, n_targets=len(Y), seconds=seconds, n_iter=sd.n_iter_, converged=bool(sd.converged_),
        tv_estimate=hist[-1]["tv"] if hist else None))
    if not args.quiet:
        print(f"wrote {out / 'demo.png'} and {out / 'demo.json'}")
    return EXIT_OK


# ----------------------------------------------------------------------------- fit-ot

def _init_distributed(device):
    """Under torchrun (WORLD_SIZE > 1): join the process group; returns (rank, world, device)."""
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


def check_output_file(out, *inputs) -> Path:
    """``--out``: not a folder, not one of the inputs, in a folder that exists and is writable."""
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out must be a file path, got the folder {out}")
    for src in inputs:
        if src is not None and Path(src).exists() and path.exists() and os.path.samefile(src, path):
            raise UsageError(f"--out {out} is the input file {src}: it would be overwritten")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"the folder of --out ({folder}) does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"the folder of --out ({folder}) is not writable")
    return path


def _fit_ot(args) -> int:
    codes = Path(args.codes)
    if not codes.is_file():
        raise UsageError(f"{codes} does not exist or is not a file")
    out = check_output_file(args.out, args.codes, args.weights)
    Y = np.load(codes)
    weights = np.load(args.weights) if args.weights else None
    rank, world, device = _init_distributed(args.device)
    if args.resume and args.restart:
        raise UsageError("--resume continues OUT.ckpt and --restart starts afresh: pass one of them")
    args.checkpoint_path = str(out) + ".ckpt" if args.resume or args.restart else None
    try:
        sd = SemiDiscreteOT(source=args.source, tol=args.tol, max_iter=args.max_iter, device=device,
                            max_samples=args.max_samples, seed=args.seed, verbose=not args.quiet,
                            checkpoint=args.checkpoint_path, checkpoint_every=args.checkpoint_every,
                            parallel=args.parallel if world > 1 else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)     # said below, with the exit code
            sd.fit(Y, weights, resume=args.resume)    # --restart: checkpoints overwrite OUT.ckpt
        if rank == 0:
            sd.save(out)
    finally:
        if world > 1:
            dist.destroy_process_group()
    tv = sd.history_[-1]["tv"] if sd.history_ else float("nan")
    if rank == 0 and args.plot and sd.history_:
        plot = history_figure(sd.history_, out.parent, f"{out.stem}_convergence", tol=args.tol)
        if not args.quiet:
            print(f"wrote {plot['png']}")
    if rank == 0 and not args.quiet:
        print(f"converged={sd.converged_} after {sd.n_iter_} iterations, TV {tv:.4f}"
              f"{f' ({world} processes)' if world > 1 else ''}; wrote {out}")
    if not sd.converged_ and not args.allow_unconverged:
        print(f"otgen fit-ot: not converged (TV {tv:.4g} > tol {args.tol} or not certified); the unconverged potential "
              f"is in {out}; raise --max-iter / --max-samples, or pass --allow-unconverged", file=sys.stderr)
        return EXIT_UNCONVERGED
    return EXIT_OK


# ----------------------------------------------------------------------------- compare

def _compare_mnist(args) -> int:
    settings = settings_from_args(mnist.MNISTSettings, args)
    result = mnist.run(settings, args.out, cache_dir=args.cache_dir, device=args.device, verbose=not args.quiet)
    result.paths.update(mnist_figures.comparison_figures(result, args.out))
    if not args.quiet:
        print(Path(result.paths["report"]).read_text())
    return EXIT_OK


def _compare_video(args) -> int:
    settings = settings_from_args(video.VideoSettings, args, dataset=args.clips)
    out = args.out or f"otgen-out/compare-video-{args.clips}"
    result = video.run(settings, out, cache_dir=args.cache_dir, device=args.device, verbose=not args.quiet)
    result.paths.update(video_figures.comparison_figures(result, out))
    if not args.quiet:
        print(Path(result.paths["report"]).read_text())
    return EXIT_OK


# ----------------------------------------------------------------------------- figures

def _figure_singular_set(args) -> dict:
    settings = settings_from_args(toy2d.SingularSetSettings, args)
    return singular_set.singular_set_figure(toy2d.run_singular_set(settings), args.out)


def _figure_detector_pr(args) -> dict:
    settings = settings_from_args(toy2d.DetectorPRSettings, args)
    return singular_set.detector_precision_recall(toy2d.run_detector_pr(settings), args.out)


def _figure_mode_mixture(args) -> dict:
    settings = settings_from_args(toy2d.ModeMixture2DSettings, args)
    return mode_mixture_2d.mode_mixture_2d_figure(toy2d.run_mode_mixture_2d(settings), args.out)


def _figure_mnist(args) -> dict:
    settings = settings_from_args(mnist.MNISTSettings, args)
    cache = Cache(os.path.join(check_out_dir(args.out), "cache") if args.cache_dir is None else args.cache_dir)
    art = mnist.fit(settings, cache, device=args.device, verbose=not args.quiet)
    det, gens = mnist.make_generators(settings, art)
    panels = mnist.mode_mixture_points(settings, art, gens, n_points=args.n_points, method=args.method)
    numbers = dict(settings=dataclasses.asdict(settings), method=args.method, n_modes_detected=int(det.n_components_),
                   detector_threshold=float(det.threshold_), cache_hits=dict(cache.hits))
    return mnist_figures.mnist_mode_mixture_figure(panels, art.z, art.train[1], args.out, tau=settings.tau,
                                                   angles=mnist.facet_angles(art, det, gens), numbers=numbers)


def _figure_video(args) -> dict:
    settings = settings_from_args(video.VideoSettings, args, dataset="bistable")
    cache = Cache(os.path.join(check_out_dir(args.out), "cache") if args.cache_dir is None else args.cache_dir)
    art = video.fit(settings, cache, device=args.device, verbose=not args.quiet)
    det, gens = video.make_generators(settings, art)
    sets = video.critical_sets(settings, art, det, gens, n_points=args.n_points)
    paths = video.localisation(settings, art, det, n_long=args.n_long)
    return video_figures.video_critical_states_figure(art, det, sets, paths, args.out, seed=settings.seed,
                                                      numbers=dict(cache_hits=dict(cache.hits)))


# name -> (runs the stages and draws, what it shows, its settings, settings not offered as options, option defaults)
_FIGURES = {
    "singular-set": (_figure_singular_set, "the singular set of OT to a crescent (exact 2-D power diagrams)",
                     toy2d.SingularSetSettings, ("seed",), {}),
    "detector-pr": (_figure_detector_pr, "the detector's precision / recall on two blobs",
                    toy2d.DetectorPRSettings, ("seed",), {}),
    "mode-mixture": (_figure_mode_mixture, "OT vs DDPM on 8 / 25-Gaussian mixtures in 2-D",
                     toy2d.ModeMixture2DSettings, ("seed", "diffusion_kwargs"), {}),
    "mnist-mode-mixture": (_figure_mnist, "the seeds' Fig. 3: a 2-D MNIST latent, OT vs diffusion",
                           mnist.MNISTSettings, ("seed",), dict(latent_dim=2)),
    "video-critical-states": (_figure_video, "bistable ball: OT on the singular set vs the diffusion transformer",
                              video.VideoSettings, ("seed", "dataset", "n_long"), {}),
}


def _figure(args) -> int:
    check_out_dir(args.out)
    numbers = _FIGURES[args.name][0](args)
    if not args.quiet:
        shown = {k: v for k, v in numbers.items() if isinstance(v, (int, float, str, bool))}
        print(json.dumps(shown, indent=2))
        print(f"wrote figures to {args.out}")
    return EXIT_OK


def _figure_parsers(sub) -> None:
    g = sub.add_parser("figure", help="draw a figure (PNG + the numbers behind it as JSON)")
    names = g.add_subparsers(dest="name", metavar="NAME", required=True)
    for name, (_, helptext, settings_cls, skip, defaults) in _FIGURES.items():
        p = names.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--out", default="otgen-out/figures", help="output folder (default: %(default)s)")
        p.add_argument("--seed", type=int, default=0, help="the one seed of every random stream (default: 0)")
        p.add_argument("--quiet", action="store_true", help="no progress bars or messages")
        p.set_defaults(func=_figure, name=name)
        add_settings_arguments(p, settings_cls, defaults=defaults, skip=skip)
        if name == "mnist-mode-mixture":
            p.add_argument("--n-points", type=int, default=100, help="generated points per panel (default: 100)")
            p.add_argument("--method", choices=["ddpm", "ddim", "dpm_solver"], default="ddpm",
                           help="diffusion sampler (default: ddpm)")
        if name == "video-critical-states":
            p.add_argument("--n-points", type=int, default=100, help="source points on the singular set (default: 100)")
            p.add_argument("--n-long", type=int, default=20, help="long clips localised on the map (default: 20)")
        if name in ("mnist-mode-mixture", "video-critical-states"):
            p.add_argument("--cache-dir", default=None, help="fitted models are cached here (default: OUT/cache)")
            p.add_argument("--device", default=None, help="cpu, cuda or cuda:K (default: CUDA when available)")


# ----------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="otgen", description="Geometric optimal-transport generative models.")
    p.add_argument("--version", action="version", version=f"otgen {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="fit semi-discrete OT to a 2-D Gaussian mixture and draw it")
    d.add_argument("--out", default="otgen-out/demo", help="output folder (default: %(default)s)")
    d.add_argument("--dataset", choices=["ring", "grid"], default="grid", help="8-Gaussian ring or 5 x 5 grid")
    d.add_argument("--n-targets", type=int, default=300, help="targets (default: %(default)s)")
    d.add_argument("--n-samples", type=int, default=1000, help="transported source points drawn (default: %(default)s)")
    d.add_argument("--tol", type=float, default=0.02, help="total-variation tolerance (default: %(default)s)")
    d.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    d.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    d.set_defaults(func=_demo)

    f = sub.add_parser("fit-ot", help="fit the Brenier potential of latent codes saved with numpy.save",
                       description="Fit the Brenier potential of (N, d) codes. Under torchrun the solve is "
                       "sample-parallel over all processes (gloo on CPUs, nccl on GPUs): "
                       "torchrun --standalone --nproc_per_node 2 -m otgen fit-ot codes.npy --out pot.pt. "
                       "Exits 1 when the fit did not converge (unless --allow-unconverged).")
    f.add_argument("codes", help="(N, d) array in a .npy file")
    f.add_argument("--out", required=True, help="where to save the fitted potential (.pt; not the input, not a folder)")
    f.add_argument("--weights", help="optional (N,) .npy file of target masses")
    f.add_argument("--source", choices=SOURCES, default="uniform",
                   help="uniform on [-1, 1]^d, ball (unif_ball) on the unit ball, gaussian (normal) N(0, I), or POT's "
                   "unif (unif_cube) on [0, 1]^d (default: %(default)s)")
    f.add_argument("--tol", type=float, default=0.01, help="total-variation tolerance (default: %(default)s)")
    f.add_argument("--max-iter", type=int, default=100, help="Newton iterations (default: %(default)s)")
    f.add_argument("--max-samples", type=int, default=2**26, help="cap on source points per iteration (default: %(default)s)")
    f.add_argument("--device", default=None, help="cpu, cuda or cuda:K (default: CUDA when available)")
    f.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    f.add_argument("--resume", action="store_true",
                   help="checkpoint to OUT.ckpt and resume from it (refused when its targets, weights, source, dtype "
                   "or seed differ)")
    f.add_argument("--restart", action="store_true",
                   help="checkpoint to OUT.ckpt, starting afresh: an existing OUT.ckpt is ignored and overwritten")
    f.add_argument("--checkpoint-every", type=int, default=5, help="iterations between checkpoints (default: %(default)s)")
    f.add_argument("--parallel", choices=["samples", "targets"], default="samples",
                   help="under torchrun: split each iteration's points or the targets over processes (default: %(default)s)")
    f.add_argument("--allow-unconverged", action="store_true", help="exit 0 even when the fit did not converge")
    f.add_argument("--plot", action="store_true",
                   help="also draw the convergence (TV and its noise per iteration and per second) as OUT_convergence.png")
    f.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    f.set_defaults(func=_fit_ot)

    c = sub.add_parser("compare", help="OT versus diffusion on the same latents: every metric, a report folder")
    exps = c.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    m = exps.add_parser("mnist", help="OT vs latent DDPM / DDIM on MNIST digits",
                        description="OT vs latent DDPM / DDIM on MNIST digits: report.md, metrics.json, figures.")
    _run_options(m, "otgen-out/compare-mnist")
    add_settings_arguments(m, mnist.MNISTSettings)
    m.set_defaults(func=_compare_mnist)
    v = exps.add_parser("video", help="OT vs a diffusion transformer and an MLP DDPM on video clip latents",
                        description="OT vs a diffusion transformer (DDPM, DDIM) and an MLP DDPM on video clip latents, "
                        "with the critical-state measurements on bistable.")
    _run_options(v, None)
    v.add_argument("--clips", choices=video.DATASETS, default="bistable", help="the clips (default: %(default)s)")
    add_settings_arguments(v, video.VideoSettings, skip=("dataset",))
    v.set_defaults(func=_compare_video)
    v.set_defaults(out=None)

    _figure_parsers(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        with flush_denormals():     # first thing: every torch thread the command starts inherits the mode
            return args.func(args)
    except KeyboardInterrupt:
        ckpt = getattr(args, "checkpoint_path", None)
        kept = f"; the last checkpoint is kept in {ckpt}" if ckpt and os.path.exists(ckpt) else ""
        print(f"otgen {args.command}: interrupted{kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"otgen {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
