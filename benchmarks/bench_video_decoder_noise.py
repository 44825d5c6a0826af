"""Does a noise-trained decoder let the diffusion transformer's samples decode to plausible clips?

In ``otgen compare video`` the diffusion transformer's samples decode to implausible clips on
permanence and moving digits (1.000), while its sampler, layout and standardisation pass exact
checks. One measured cause: the grid autoencoder's decoder tolerates only small errors around
the training codes. Latent diffusion models train their autoencoder with posterior noise (a
KL-regularised VAE), so that codes near the training codes decode to data. This script tests
that remedy with the experiment's own models, for each decoder-noise level sigma in ``--noise``:

1. fit the grid autoencoder (``VideoSettings(...).ae_config()``, the experiment's settings) with
   ``latent_noise=sigma`` (0: today's decoder; > 0: codes normalised per clip, decoded in training
   with N(0, sigma^2) added to every number);
2. **floor**: implausible rate of the held-out clips' reconstructions (± binomial SE);
3. **tolerance**: implausible rate of held-out codes moved by ``tau`` standard deviations of each
   coordinate (the generators' standardised units), for each ``tau`` in ``--tau``;
4. **the diffusion transformer** (the experiment's ``GridLatentDiffusion``, same steps and width)
   fitted on the training codes, sampled with DDIM and DDPM (the experiment's step counts); the
   implausible rate of its decoded samples (± SE), and the median distance of its codes to the
   nearest training code against the held-out codes' own (standardised units).

    PYTHONPATH=$PWD python benchmarks/bench_video_decoder_noise.py \\
        [--datasets permanence moving-digits] [--noise 0 0.3] [--n-samples 1000] [--quick]

Writes ``video_decoder_noise.{json,md}`` into ``--out`` (default ``benchmarks/results``).
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
from otgen.diffusion import GridLatentDiffusion  # noqa: E402
from otgen.experiments._common import binomial_se, host_gflops  # noqa: E402
from otgen.experiments.video import DIT_PATCH, VideoSettings, plausibility, video_data  # noqa: E402
from otgen.generate import DiffusionGenerator  # noqa: E402
from otgen.latent import LatentSpace  # noqa: E402
from otgen.metrics import off_support_rate  # noqa: E402
from otgen.metrics.generation import nn_distances  # noqa: E402

QUICK = dict(n_train=48, n_test=24, n_samples=8, ae_epochs=1, dit_steps=5, ddpm_steps=5, ddim_steps=3)


def implausible(dataset, ae, codes):
    """Implausible rate of the clips decoded from ``codes`` (n, d), and its binomial SE."""
    clips = np.clip(np.asarray(ae.decode(np.asarray(codes, np.float32))), 0.0, 1.0)
    rate = float(plausibility(dataset, clips)["implausible_rate"])
    return dict(implausible=rate, implausible_se=binomial_se(rate, len(clips)))


def nn_distance(codes, train, latent):
    """Median distance (standardised units) of ``codes`` to their nearest training code."""
    z, z_train = (torch.as_tensor(latent.transform(np.asarray(c, np.float32))) for c in (codes, train))
    return float(nn_distances(z, z_train).median())


def measure(dataset, sigma, taus, sizes, seed):
    s = VideoSettings(dataset=dataset, n_train=sizes["n_train"], n_test=sizes["n_test"], seed=seed,
                      ae_epochs=sizes["ae_epochs"], dit_steps=sizes["dit_steps"] or VideoSettings.dit_steps)
    train = video_data(dataset, s.n_train, seed, "train")[0]
    test = video_data(dataset, s.n_test, spawn_seed(seed, "test clips"), "test")[0]
    t0 = time.perf_counter()
    ae = GridVideoAutoencoder(**s.ae_config(), latent_noise=sigma, device="cpu", seed=seed).fit(train)
    ae_seconds = time.perf_counter() - t0
    codes, test_codes = np.asarray(ae.encode(train), np.float32), np.asarray(ae.encode(test), np.float32)
    latent = LatentSpace().fit(codes)
    std = codes.std(0, keepdims=True)                                          # (1, d): one standardised unit
    rng = np.random.default_rng(spawn_seed(seed, "tolerance", str(sigma)))
    row = dict(dataset=dataset, sigma=sigma, ae_seconds=ae_seconds, floor=implausible(dataset, ae, test_codes),
               heldout_nn=nn_distance(test_codes, codes, latent), tolerance={})
    for tau in taus:
        moved = test_codes + tau * std * rng.standard_normal(test_codes.shape).astype(np.float32)
        row["tolerance"][str(tau)] = implausible(dataset, ae, moved)
    t0 = time.perf_counter()
    dit = GridLatentDiffusion(latent_shape=ae.latent_shape_, patch=DIT_PATCH, n_steps=s.dit_steps, latent=latent,
                              device="cpu", seed=seed, **s.dit_config()).fit(codes)
    row["dit_seconds"], row["dit_loss_last"] = time.perf_counter() - t0, float(np.mean(dit.history_["loss"][-50:]))
    ddpm = sizes["ddpm_steps"] or VideoSettings.ddpm_steps
    ddim = sizes["ddim_steps"] or VideoSettings.ddim_steps
    for method, steps in (("ddim", ddim), ("ddpm", ddpm)):
        gen = DiffusionGenerator(dit, latent, method=method, num_inference_steps=steps).fit(codes)
        t0 = time.perf_counter()
        samples = np.asarray(gen.sample(sizes["n_samples"], seed=spawn_seed(seed, "sample", method)), np.float32)
        row[f"dit_{method}"] = dict(implausible(dataset, ae, samples), steps=steps,
                                    seconds=time.perf_counter() - t0, nn=nn_distance(samples, codes, latent),
                                    off_support=off_support_rate(latent.transform(samples), latent.transform(codes))["rate"])
    return row


def table(meta, rows, taus):
    head = (f"Grid autoencoder trained with decoder noise sigma, and the diffusion transformer on its codes: "
            f"implausible rate of decoded clips (± SE); {meta['n_train']} training / {meta['n_test']} held-out clips, "
            f"{meta['n_samples']} DiT samples per sampler; the experiment's settings otherwise; {meta['date']}, "
            f"{meta['threads']} thread(s), host GEMM {meta['gemm_gflops']:.0f} GFLOP/s. Tolerance: held-out codes "
            f"moved by tau standard deviations per coordinate. NN: median distance to the nearest training code "
            f"(standardised units; held-out codes for comparison); off support: farther from every training code than "
            f"99 % of the training codes' own nearest-neighbour distances.")
    cols = ["dataset", "sigma", "floor"] + [f"tau {t}" for t in taus] + [
        "DiT DDIM", "DiT DDPM", "NN held-out / DDIM / DDPM", "off support DDIM / DDPM", "DiT loss", "AE s", "DiT s"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    f = lambda r: f"{r['implausible']:.3f} ± {r['implausible_se']:.3f}"  # noqa: E731
    for r in rows:
        cells = [r["dataset"], f"{r['sigma']:g}", f(r["floor"])] + [f(r["tolerance"][str(t)]) for t in taus] + [
            f(r["dit_ddim"]), f(r["dit_ddpm"]),
            f"{r['heldout_nn']:.2f} / {r['dit_ddim']['nn']:.2f} / {r['dit_ddpm']['nn']:.2f}",
            f"{r['dit_ddim']['off_support']:.3f} / {r['dit_ddpm']['off_support']:.3f}",
            f"{r['dit_loss_last']:.3f}", f"{r['ae_seconds']:.0f}", f"{r['dit_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["permanence", "moving-digits"],
                    choices=["bistable", "moving-digits", "permanence"])
    ap.add_argument("--noise", nargs="+", type=float, default=[0.0, 0.3], help="decoder-noise levels sigma")
    ap.add_argument("--tau", nargs="+", type=float, default=[0.1, 0.3, 0.5], help="tolerance offsets (std units)")
    ap.add_argument("--n-train", type=int, default=VideoSettings.n_train)
    ap.add_argument("--n-test", type=int, default=VideoSettings.n_test)
    ap.add_argument("--n-samples", type=int, default=VideoSettings.n_samples)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    ap.add_argument("--device", default="cpu", help="only cpu is measured here")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--name", default="video_decoder_noise")
    args = ap.parse_args(argv)
    sizes = dict(QUICK) if args.quick else dict(n_train=args.n_train, n_test=args.n_test, n_samples=args.n_samples,
                                                 ae_epochs=None, dit_steps=None, ddpm_steps=None, ddim_steps=None)
    meta = dict(date=datetime.datetime.now().isoformat(timespec="minutes"), torch=torch.__version__,
                threads=torch.get_num_threads(), gemm_gflops=host_gflops(), quick=args.quick, **sizes)
    rows = []
    for ds in args.datasets:
        for sigma in args.noise:
            rows.append(measure(ds, sigma, args.tau, sizes, args.seed))
            r = rows[-1]
            print(f"{ds} sigma={sigma:g}: floor {r['floor']['implausible']:.3f}, DiT DDIM "
                  f"{r['dit_ddim']['implausible']:.3f}, DDPM {r['dit_ddpm']['implausible']:.3f}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    text = table(meta, rows, args.tau)
    with open(os.path.join(args.out, f"{args.name}.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    with flush_denormals():      # as the otgen command line: every torch thread flushes subnormals
        main()
