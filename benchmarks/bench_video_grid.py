"""The grid video autoencoder's floor against its channels per latent cell, and a compressed code on top.

Every generator of ``otgen compare video`` works in the latent of
:class:`otgen.autoencoder.GridVideoAutoencoder`, so the share of held-out clips whose
reconstructions the pixel instruments reject is the floor no generator can beat. This script
fits the grid autoencoder with the experiment's settings (``VideoSettings(grid_channels=C).ae_config()``,
the same training and held-out clips) for each number of channels in ``--channels``
(C' = 1: 8 x 1 x 8 x 8 = 512 numbers per clip; 4: 2,048) and measures, on the held-out clips,

- the implausible rate of the reconstructions, with its binomial standard error;
- the same through the top-``k`` principal components of the code, for each ``k`` in ``--pca``
  smaller than the code (a compressed code learned on top of the grid: what a generator in
  ``k`` numbers would at best reach);
- the mean squared pixel error and the fit's seconds.

``--epochs`` and ``--widths`` sweep the training length and the autoencoder's width as well
(default: the experiment's).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/bench_video_grid.py \\
        [--datasets moving-digits permanence] [--channels 1 2 4] [--pca 512] [--epochs 10 30] [--widths 32 64] [--quick]

Writes ``video_grid.{json,md}`` (or ``--name``) into ``--out`` (default ``benchmarks/results``).
"""

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from otgen._base import flush_denormals, spawn_seed  # noqa: E402
from otgen.autoencoder import GridVideoAutoencoder  # noqa: E402
from otgen.experiments.video import VideoSettings, pca_codes, plausibility, video_data  # noqa: E402
from otgen.experiments._common import binomial_se  # noqa: E402

QUICK = dict(n_train=64, n_test=32, epochs=1)   # --quick: the script's plumbing only (tests)


def floor_row(dataset, ae, test_clips, name, codes):
    """Implausible rate (± SE) of the clips decoded from ``codes``, and their pixel MSE."""
    clips = torch.as_tensor(ae.decode(codes))
    rate = plausibility(dataset, clips.numpy())["implausible_rate"]
    mse = float(((clips - test_clips) ** 2).mean())
    return dict(code=name, implausible=rate, implausible_se=binomial_se(rate, len(test_clips)), mse=mse)


def measure(dataset, channels, pca_dims, n_train, n_test, epochs, seed, width=None):
    settings = VideoSettings(dataset=dataset, n_train=n_train, n_test=n_test, seed=seed, grid_channels=channels,
                             ae_epochs=epochs)
    train = video_data(dataset, n_train, seed, "train")[0]
    test = video_data(dataset, n_test, spawn_seed(seed, "test clips"), "test")[0]
    config = settings.ae_config()                     # the experiment's grid autoencoder with C' = channels
    if width is not None:
        config["width"] = width
    start = time.perf_counter()
    ae = GridVideoAutoencoder(**config, device="cpu", seed=seed).fit(train)
    seconds = time.perf_counter() - start
    codes_train, codes = np.asarray(ae.encode(train), np.float32), np.asarray(ae.encode(test), np.float32)
    dim = codes.shape[1]
    rows = [dict(floor_row(dataset, ae, test, f"grid ({dim})", codes), dim=dim)]
    for k in pca_dims:
        if 0 < k < dim and k < len(codes_train):
            rows.append(dict(floor_row(dataset, ae, test, f"PCA {k} of the grid", pca_codes(codes_train, codes, k)),
                             dim=k))
    return dict(dataset=dataset, channels=channels, code_dim=dim, epochs=config["epochs"], width=config["width"],
                fit_seconds=seconds, n_train=n_train, n_test=n_test, rows=rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["moving-digits", "permanence"],
                    choices=["bistable", "moving-digits", "permanence"])
    ap.add_argument("--channels", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--pca", nargs="+", type=int, default=[512], help="compressed-code sizes to measure")
    ap.add_argument("--epochs", nargs="+", type=int, default=None, help="training epochs (default the experiment's)")
    ap.add_argument("--widths", nargs="+", type=int, default=None, help="autoencoder widths (default the experiment's)")
    ap.add_argument("--name", default="video_grid", help="file stem of the results")
    ap.add_argument("--n-train", type=int, default=VideoSettings.n_train)
    ap.add_argument("--n-test", type=int, default=VideoSettings.n_test)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    ap.add_argument("--device", default="cpu", help="only cpu is measured here")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else dict(n_train=args.n_train, n_test=args.n_test, epochs=None)
    epochs_list = args.epochs or [sizes["epochs"]]
    results = []
    for ds in args.datasets:
        for c in args.channels:
            for epochs in epochs_list:
                for width in args.widths or [None]:
                    r = measure(ds, c, args.pca, seed=args.seed, width=width, **dict(sizes, epochs=epochs))
                    results.append(r)
                    print(f"{ds} C'={c} epochs {r['epochs']} width {r['width']}: "
                          + ", ".join(f"{row['code']} {row['implausible']:.3f}" for row in r["rows"])
                          + f" ({r['fit_seconds']:.0f} s)", flush=True)
    meta = dict(date=datetime.datetime.now().isoformat(timespec="minutes"), torch=torch.__version__,
                threads=torch.get_num_threads(), load=os.getloadavg()[0], quick=args.quick, **sizes)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump(dict(meta=meta, results=results), f, indent=1)
    lines = [f"Grid autoencoder floors: held-out clips whose reconstructions the pixel instruments reject (± SE); "
             f"{sizes['n_train']} training / {sizes['n_test']} held-out clips, the experiment's settings otherwise; "
             f"{meta['date']}, {meta['threads']} thread(s), load {meta['load']:.1f}.", "",
             "| dataset | channels C' | epochs | width | code | numbers | implausible | pixel MSE | fit s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for row in r["rows"]:
            lines.append(f"| {r['dataset']} | {r['channels']} | {r['epochs']} | {r['width']} | {row['code']} | "
                         f"{row['dim']} | "
                         f"{row['implausible']:.3f} ± {row['implausible_se']:.3f} | {row['mse']:.4f} | "
                         f"{r['fit_seconds']:.0f} |")
    with open(os.path.join(args.out, f"{args.name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    with flush_denormals():      # as the otgen command line: every torch thread flushes subnormals
        main()
