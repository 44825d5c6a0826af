"""Training with and without flushing subnormal floats, side by side (``otgen._base.flush_denormals``).

The ``otgen`` command line runs with subnormal floats flushed to zero (FTZ/DAZ) in every torch thread,
and otgen's training and sampling loops flush them in the calling thread. This script measures what
that buys on the CPU: it trains the same network twice on the same data with the same seed, each fit
in a fresh process, one after the other -- ``flushed``: the mode set before any torch work, as the
command line does; ``kept``: the loops' undecorated functions, subnormals kept -- and reports the
seconds of each epoch, the final loss of both (they should agree to float32 noise), the share of a
multi-threaded product of subnormals that the process flushed (1: every thread; 0.5 with 2 threads:
only the calling one) and the host's GEMM rate before each fit (hosts drift; read the ratio).

- ``grid``: the grid video autoencoder of ``otgen compare video`` (``VideoSettings(dataset).ae_config()``,
  its training clips), ``--epochs`` epochs (default the experiment's);
- ``dit``: the experiment's diffusion transformer on that autoencoder's codes, ``--dit-steps`` steps.

    PYTHONPATH=$PWD python benchmarks/bench_denormals.py [--dataset moving-digits] [--epochs 20] \\
        [--dit-steps 1000] [--quick]

Writes ``denormals_<dataset>.{json,md}`` (or ``--name``) into ``--out`` (default ``benchmarks/results``).
"""

import argparse
import datetime
import json
import os
import contextlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import otgen.autoencoder.video_grid as video_grid  # noqa: E402
import otgen.diffusion.latent as diffusion_latent  # noqa: E402
from otgen._base import flush_denormals  # noqa: E402
from otgen.autoencoder import GridVideoAutoencoder  # noqa: E402
from otgen.diffusion.grid import GridLatentDiffusion  # noqa: E402
from otgen.experiments._common import host_gflops  # noqa: E402
from otgen.experiments.video import DATASETS, DIT_PATCH, VideoSettings, video_data  # noqa: E402

QUICK = dict(n_train=64, epochs=2, dit_steps=20)   # --quick: the script's plumbing only (tests)
#: As the command line runs (mode set before any torch work), then with subnormals kept; one fit at a time.
MODES = ("flushed", "kept")
#: Elements of the probe product: enough for torch to split it over all its threads.
PROBE_SIZE = 1 << 22


def threads_flushed() -> float:
    """Share of a multi-threaded product of subnormals that came out 0 (1.0: every thread flushes)."""
    x = torch.full((PROBE_SIZE,), 1e-40)
    return float(((x * 1.0) == 0).double().mean())


def keep_subnormals():
    """The loops without their ``@flush_denormals()`` (``functools.wraps`` keeps the plain function)."""
    video_grid.train_autoencoder = video_grid.train_autoencoder.__wrapped__
    diffusion_latent.train_denoiser = diffusion_latent.train_denoiser.__wrapped__


def fit_grid(settings, clips):
    ae = GridVideoAutoencoder(device="cpu", seed=settings.seed, **settings.ae_config()).fit(clips)
    t = np.diff([0.0] + ae.history_["time"])
    return ae, dict(seconds=float(ae.history_["time"][-1]), epoch_seconds=[round(float(s), 2) for s in t],
                    final_loss=float(ae.history_["loss"][-1]))


def fit_dit(settings, codes, latent_shape, steps):
    t0 = time.perf_counter()
    dit = GridLatentDiffusion(latent_shape=latent_shape, patch=DIT_PATCH, n_steps=steps, device="cpu",
                              seed=settings.seed, **settings.dit_config()).fit(codes)
    loss = np.asarray(dit.history_["loss"])
    return dict(seconds=time.perf_counter() - t0, final_loss=float(loss[-max(1, len(loss) // 10):].mean()))


def worker(args, sizes):
    """One process, one mode: the grid autoencoder, then the DiT on its codes; rows to ``--rows``."""
    settings = VideoSettings(dataset=args.dataset, n_train=sizes["n_train"], seed=args.seed, ae_epochs=sizes["epochs"])
    rows = []
    if args.worker == "kept":
        keep_subnormals()
    with flush_denormals() if args.worker == "flushed" else contextlib.nullcontext():
        probe = threads_flushed()
        clips = video_data(args.dataset, sizes["n_train"], args.seed, "train")[0]
        gflops = host_gflops()
        ae, row = fit_grid(settings, clips)
        rows.append(dict(row, model="grid", mode=args.worker, threads_flushed=probe, gemm_gflops=gflops))
        if sizes["dit_steps"]:
            codes = ae.encode(clips)
            gflops = host_gflops()
            row = fit_dit(settings, codes, ae.latent_shape_, sizes["dit_steps"])
            rows.append(dict(row, model="dit", mode=args.worker, threads_flushed=probe, gemm_gflops=gflops))
    with open(args.rows, "w") as f:
        json.dump(dict(rows=rows, ae_config=settings.ae_config()), f)


def run_workers(args, argv):
    """Each mode in a fresh process, one after the other; their rows, in MODES order."""
    rows, config = [], None
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    for mode in MODES:
        with tempfile.TemporaryDirectory() as tmp:               # the worker's rows, gone whatever happens
            path = os.path.join(tmp, "rows.json")
            subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--worker", mode, "--rows", path],
                           check=True, env=env)
            with open(path) as f:
                got = json.load(f)
        rows += got["rows"]
        config = got["ae_config"]
        for r in got["rows"]:
            print(f"{r['model']} {mode}: {r['seconds']:.1f} s, loss {r['final_loss']:.5f}, "
                  f"threads flushed {r['threads_flushed']:.2f}", flush=True)
    return rows, config


def write(args, sizes, rows, config):
    meta = dict(date=datetime.datetime.now().isoformat(timespec="minutes"), torch=torch.__version__,
                threads=torch.get_num_threads(), dataset=args.dataset, quick=args.quick, ae_config=config,
                epochs=config["epochs"], **{k: v for k, v in sizes.items() if k != "epochs"})
    name = args.name or f"denormals_{args.dataset.replace('-', '_')}"
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(dict(meta=meta, results=rows), f, indent=1)
    lines = [f"Training with subnormal floats flushed (as the otgen command line runs) and kept: the same network, "
             f"data and seed, each fit in a fresh process, one after the other ({args.dataset}, {sizes['n_train']} "
             f"clips; grid autoencoder width {config['width']}, {config['epochs']} epochs; DiT {sizes['dit_steps']} "
             f"steps). {meta['date']}, {meta['threads']} thread(s); threads flushed: share of a multi-threaded "
             f"product of subnormals that came out 0; GEMM: the host's float32 rate just before each fit.", "",
             "| model | subnormals | seconds | kept / flushed | final loss | threads flushed | GEMM GFLOP/s | "
             "seconds per epoch |", "|---|---|---|---|---|---|---|---|"]
    base = {r["model"]: r["seconds"] for r in rows if r["mode"] == "flushed"}
    for r in rows:
        epochs = ", ".join(f"{s:.1f}" for s in r.get("epoch_seconds", [])) or "-"
        lines.append(f"| {r['model']} | {r['mode']} | {r['seconds']:.1f} | {r['seconds'] / base[r['model']]:.2f} | "
                     f"{r['final_loss']:.5f} | {r['threads_flushed']:.2f} | {r['gemm_gflops']:.0f} | {epochs} |")
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="moving-digits", choices=DATASETS)
    ap.add_argument("--epochs", type=int, default=None, help="autoencoder epochs (default the experiment's)")
    ap.add_argument("--dit-steps", type=int, default=1000, help="diffusion transformer steps (0: skip it)")
    ap.add_argument("--n-train", type=int, default=VideoSettings.n_train)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default=None, help="file stem (default denormals_<dataset>)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    ap.add_argument("--device", default="cpu", choices=["cpu"], help="only cpu is measured (subnormals are a CPU matter)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)    # internal: one fit process
    ap.add_argument("--rows", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if (args.epochs is not None and args.epochs < 1) or args.dit_steps < 0:
        ap.error("--epochs must be >= 1 and --dit-steps >= 0")
    if args.worker and not args.rows:
        ap.error("--worker needs --rows")
    sizes = QUICK if args.quick else dict(n_train=args.n_train, epochs=args.epochs, dit_steps=args.dit_steps)
    try:                                      # the experiment's own checks, before minutes in a worker
        VideoSettings(dataset=args.dataset, n_train=sizes["n_train"], seed=args.seed, ae_epochs=sizes["epochs"])
    except ValueError as exc:
        ap.error(str(exc))
    if args.worker:
        return worker(args, sizes)
    os.makedirs(args.out, exist_ok=True)
    rows, config = run_workers(args, argv)
    write(args, sizes, rows, config)


if __name__ == "__main__":
    main()
