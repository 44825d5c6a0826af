"""Where does the video diffusion model lose the objects: training length, width, data size or noise level?

In ``otgen compare video`` the diffusion transformer's samples decode to implausible clips on
permanence and moving digits (about 1.0), with the autoencoder's floor at 0.04-0.08. For one
dataset and the experiment's grid autoencoder, this script fits each denoiser in ``--configs``
(``KIND:STEPS:WIDTH:DEPTH[:PATCH]``, KIND ``dit`` (the experiment's ``GridLatentDiffusion``; PATCH
``TxHxW`` latent cells per token, default ``DIT_PATCH``) or ``mlp``) on the training codes and measures

1. **the loss**: mean of the last 10 % of the training steps and its relative change against the
   previous 10 % (the plateau test of ``otgen compare``); the fit's seconds;
2. **samples**: implausible rate (± binomial SE) of ``--n-samples`` decoded DDIM samples (the
   experiment's step count);
3. **restarts**: held-out codes noised to timestep ``t`` (``q(z_t | z_0)``) and brought back by the
   same DDIM sampler from ``t``, for each ``t`` in ``--restart-t``. At small ``t`` this is the
   floor; the ``t`` at which the rate leaves it is the noise level from which the model no
   longer restores the objects. ``t = 999`` is nearly a sample from noise.

``--n-train`` changes the training clips (the same generator, more draws) to test whether the
data size, not the model, is what the diffusion model lacks.

    PYTHONPATH=$PWD python benchmarks/bench_video_dit.py --dataset permanence \\
        [--configs dit:1500:64:3 dit:6000:128:4 mlp:2000:512:2] [--n-train 2000] [--quick]

Writes ``video_dit_DATASET.{json,md}`` (or ``--name``) into ``--out`` (default ``benchmarks/results``).
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
from otgen.diffusion import DDIMScheduler, GridLatentDiffusion, LatentDiffusion  # noqa: E402
from otgen.experiments._common import host_gflops  # noqa: E402
from otgen.experiments.video import DIT_PATCH, VideoSettings, video_data  # noqa: E402
from otgen.latent import LatentSpace  # noqa: E402
from bench_video_decoder_noise import implausible  # noqa: E402  (the same decoding and instruments)

QUICK = dict(n_train=48, n_test=24, n_samples=8, ae_epochs=1, ddim_steps=4,
             configs=["dit:4:32:1", "dit:2:32:1:1x2x2", "mlp:4:32:1"],
             restart_t=[100, 999])
#: Share of the training steps over which the loss plateau is read (as ``otgen compare`` reports it).
PLATEAU_SHARE = 0.1


KINDS = ("dit", "mlp")
#: Diffusion timesteps of every denoiser fitted here (the models' default schedule): the range of ``--restart-t``.
TRAIN_TIMESTEPS = LatentDiffusion().num_train_timesteps


def parse_config(spec: str) -> tuple:
    """``KIND:STEPS:WIDTH:DEPTH[:PATCH]`` -> (kind, steps, width, depth, patch or None), or a clear error."""
    parts = spec.split(":") if isinstance(spec, str) else []
    try:
        kind, steps, width, depth = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
        patch = tuple(int(p) for p in parts[4].split("x")) if len(parts) == 5 else None
    except (IndexError, ValueError):
        kind = None
    if kind not in KINDS or len(parts) > 5 or steps < 2 or min(width, depth) < 1 or \
            (patch is not None and (kind == "mlp" or len(patch) != 3 or min(patch) < 1)):
        raise argparse.ArgumentTypeError(
            f"a denoiser is KIND:STEPS:WIDTH:DEPTH[:PATCH] with KIND in {KINDS}, STEPS >= 2 (the loss plateau "
            f"compares two windows), positive WIDTH and DEPTH and, for dit only, PATCH as TxHxW "
            f"(e.g. dit:3000:128:4:2x4x4), got {spec!r}")
    return kind, steps, width, depth, patch


def _config_arg(spec: str) -> str:
    parse_config(spec)                                 # checked before the autoencoder's minutes of training
    return spec


def _timestep_arg(text: str) -> int:
    t = int(text)
    if not 0 <= t < TRAIN_TIMESTEPS:
        raise argparse.ArgumentTypeError(f"a restart timestep is in [0, {TRAIN_TIMESTEPS}), got {t}")
    return t


@torch.no_grad()
def ddim_from(model, z0, t_start, steps, seed):
    """Noise ``z0`` (n, d) to the first DDIM timestep <= ``t_start``; run ``model``'s DDIM sampler down to 0."""
    scheduler = DDIMScheduler.from_config(model.noise_schedule().config)      # the model's schedule and clip
    net = model.model_.eval()
    scheduler.set_timesteps(steps)
    ts = [int(t) for t in scheduler.timesteps if int(t) <= t_start]
    g = torch.Generator().manual_seed(seed)
    z0 = torch.as_tensor(z0, dtype=torch.float32)
    x = scheduler.add_noise(z0, torch.randn(z0.shape, generator=g), ts[0])
    for t in ts:
        eps = net(x, torch.full((len(x),), t, dtype=torch.long))
        x = scheduler.step(eps, t, x)
    return x, ts[0]


def fit_model(spec, codes, latent, ae, s):
    """The denoiser of ``spec`` (``KIND:STEPS:WIDTH:DEPTH[:PATCH]``) fitted on ``codes``."""
    kind, steps, width, depth, patch = parse_config(spec)
    if kind == "mlp":
        return LatentDiffusion(denoiser="mlp", hidden=width, depth=depth, n_steps=steps, latent=latent, device="cpu",
                               seed=s.seed).fit(codes)
    cfg = dict(s.dit_config(), hidden=width, depth=depth)
    return GridLatentDiffusion(latent_shape=ae.latent_shape_, patch=patch or DIT_PATCH, n_steps=steps, latent=latent,
                               device="cpu", seed=s.seed, **cfg).fit(codes)


def measure(args, sizes):
    s = VideoSettings(dataset=args.dataset, n_train=sizes["n_train"], n_test=sizes["n_test"], seed=args.seed,
                      ae_epochs=sizes["ae_epochs"])
    train = video_data(s.dataset, s.n_train, s.seed, "train")[0]
    test = video_data(s.dataset, s.n_test, spawn_seed(s.seed, "test clips"), "test")[0]
    t0 = time.perf_counter()
    ae = GridVideoAutoencoder(**s.ae_config(), device="cpu", seed=s.seed).fit(train)
    ae_seconds = time.perf_counter() - t0
    codes = np.asarray(ae.encode(train), np.float32)
    latent = LatentSpace().fit(codes)
    z_test = latent.transform(np.asarray(ae.encode(test), np.float32))

    def decoded(z):                                    # standardised codes (n, d) -> implausible rate and SE
        return implausible(s.dataset, ae, latent.inverse_transform(np.asarray(z, np.float32)))

    out = dict(ae_seconds=ae_seconds, floor=decoded(z_test), rows=[])
    for spec in sizes["configs"]:
        t0 = time.perf_counter()
        model = fit_model(spec, codes, latent, ae, s)
        loss = np.asarray(model.history_["loss"])
        w = max(1, int(PLATEAU_SHARE * len(loss)))
        last, prev = float(loss[-w:].mean()), float(loss[-2 * w:-w].mean())
        row = dict(config=spec, fit_seconds=time.perf_counter() - t0, loss_last=last,
                   loss_change=(last - prev) / prev, restarts={})
        samples = model.sample(sizes["n_samples"], seed=spawn_seed(s.seed, "bench sample", spec), method="ddim",
                               num_inference_steps=sizes["ddim_steps"])
        row["samples"] = implausible(s.dataset, ae, samples)
        for t in sizes["restart_t"]:
            seed = spawn_seed(s.seed, "bench restart", spec, str(t))
            z, t_used = ddim_from(model, z_test, t, sizes["ddim_steps"], seed)
            row["restarts"][str(t)] = dict(decoded(z), t_used=t_used)
        out["rows"].append(row)
        print(f"{spec}: loss {last:.3f} ({row['loss_change']:+.1%}), "
              f"samples {row['samples']['implausible']:.3f}, "
              + ", ".join(f"t={t} {r['implausible']:.3f}" for t, r in row["restarts"].items()), flush=True)
    return out


def table(meta, res, restart_t):
    head = (f"Video diffusion denoisers on the grid autoencoder's codes ({meta['dataset']}, {meta['n_train']} training "
            f"clips): implausible rate (± SE) of decoded clips; samples: {meta['n_samples']} "
            f"DDIM-{meta['ddim_steps']} "
            f"samples from noise; t = k: {meta['n_test']} held-out codes noised to timestep k and brought back by the "
            f"same DDIM sampler. Floor (held-out reconstructions): {res['floor']['implausible']:.3f} ± "
            f"{res['floor']['implausible_se']:.3f}. Loss: last 10 % of the steps, and its change against the previous "
            f"10 %. {meta['date']}, {meta['threads']} thread(s), host GEMM {meta['gemm_gflops']:.0f} GFLOP/s.")
    cols = ["denoiser:steps:width:depth", "loss", "change", "fit s", "samples"] + [f"t = {t}" for t in restart_t]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    f = lambda r: f"{r['implausible']:.3f} ± {r['implausible_se']:.3f}"  # noqa: E731
    for r in res["rows"]:
        lines.append("| " + " | ".join([r["config"], f"{r['loss_last']:.3f}", f"{r['loss_change']:+.1%}",
                                        f"{r['fit_seconds']:.0f}", f(r["samples"])]
                                       + [f(r["restarts"][str(t)]) for t in restart_t]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="permanence", choices=["bistable", "moving-digits", "permanence"])
    ap.add_argument("--configs", nargs="+", type=_config_arg,
                    default=["dit:1500:64:3", "dit:6000:64:3", "mlp:2000:512:2"],
                    help="KIND:STEPS:WIDTH:DEPTH[:PATCH], KIND dit or mlp, PATCH e.g. 1x2x2")
    ap.add_argument("--restart-t", nargs="+", type=_timestep_arg, default=[50, 200, 400, 600, 800, 999])
    ap.add_argument("--n-train", type=int, default=VideoSettings.n_train)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--n-samples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--name", default=None, help="file stem (default video_dit_DATASET)")
    args = ap.parse_args(argv)
    sizes = dict(QUICK) if args.quick else dict(n_train=args.n_train, n_test=args.n_test, n_samples=args.n_samples,
                                                 ae_epochs=None, ddim_steps=VideoSettings.ddim_steps,
                                                 configs=args.configs, restart_t=args.restart_t)
    meta = dict(date=datetime.datetime.now().isoformat(timespec="minutes"), torch=torch.__version__,
                threads=torch.get_num_threads(), gemm_gflops=host_gflops(), quick=args.quick, dataset=args.dataset,
                **sizes)
    res = measure(args, sizes)
    name = args.name or f"video_dit_{args.dataset.replace('-', '_')}"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(dict(meta=meta, **res), f, indent=1)
    text = table(meta, res, sizes["restart_t"])
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    with flush_denormals():      # as the otgen command line: every torch thread flushes subnormals
        main()
