"""Which neighbour embedding of the contrastive features gives a 2-D latent with separated digits.

:class:`otgen.autoencoder.SeparatedLatent` is a contrastive (SimCLR) encoder g followed by a
parametric neighbour embedding f (:func:`otgen.autoencoder.fit_embedding`). In 2-D, f's default
(InfoNCE loss, Cauchy kernel, k-NN graph of the features) left the held-out 10-NN label agreement
below 0.95 (``benchmarks/bench_separated_latent.py``). This script compares embedding variants
(``VARIANTS``: the kernel tail alpha of :math:`(1 + d^2/\alpha)^{-\alpha}`, a two-stage graph from
a 10-D embedding, more steps, more neighbours) on ONE contrastive encoder, trained once at
SeparatedLatent's settings and cached with its features (training digits, their 4 deformed
views, test digits) in ``--cache``.

Honest selection: each variant is scored twice.

- ``validation``: the embedding is trained on 90 % of the training digits (a seeded split); the
  other 10 % are queries against them. The variant is chosen by this column only (``chosen``).
- ``test``: the embedding is trained on all training digits, the held-out test digits are the
  queries: the number reported for the chosen variant, never used to choose it.

No labels are used in training; the encoder saw the validation digits (unlabelled), not the test digits.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/bench_embedding_2d.py \\
        [--variants cauchy alpha0.5 ...] [--splits validation test] [--cache FILE] [--out benchmarks/results] \\
        [--seed S] [--dim D] [--name STEM]

Writes ``embedding_2d.{json,md}`` (``--name``; rows already there for other variants are kept).
``--seed`` changes the embedded digits' train/test split, the encoder and every stream, so a
second seed checks that the choice is not one split's; ``--dim 10`` measures the variants in 10-D.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from otgen._base import spawn_seed, torch_generator  # noqa: E402
from otgen.autoencoder import ContrastiveCNN, SeparatedLatent, fit_embedding, train_contrastive, view_features  # noqa: E402
from otgen.data import load_mnist  # noqa: E402
from otgen.metrics.latent import knn_label_agreement  # noqa: E402

DEFAULTS = SeparatedLatent().get_params()


def images(split, data_dir, seed):
    x, y = load_mnist(split, data_dir=data_dir, seed=seed)
    return torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28), torch.as_tensor(y)


def features(encoder, x):
    with torch.no_grad():
        return torch.cat([encoder.features(x[i:i + 1024]) for i in range(0, len(x), 1024)])


def cached_features(path, data_dir, seed, quick):
    """Train the contrastive encoder once (SeparatedLatent's settings) and cache its features at ``path``."""
    if os.path.exists(path):
        return torch.load(path)
    (x, y), (xt, yt) = images("train", data_dir, seed), images("test", data_dir, seed)
    if quick:
        x, y, xt, yt = x[:300], y[:300], xt[:100], yt[:100]
    torch.manual_seed(spawn_seed(seed, "encoder init"))
    enc = ContrastiveCNN(8 if quick else DEFAULTS["width"], DEFAULTS["feature_dim"])
    start = time.perf_counter()
    train_contrastive(enc, x, epochs=1 if quick else DEFAULTS["epochs"], batch_size=DEFAULTS["batch_size"],
                      lr=DEFAULTS["lr"], temperature=DEFAULTS["temperature"], strength=DEFAULTS["strength"],
                      generator=torch_generator(spawn_seed(seed, "contrastive")))
    secs = time.perf_counter() - start
    enc.eval()
    out = dict(train=features(enc, x), y_train=y, test=features(enc, xt), y_test=yt,
               views=view_features(enc, x, DEFAULTS["embed_views"], seed), encoder_seconds=secs)
    torch.save(out, path)
    return out


#: the embedding variants compared: (name, settings of fit_embedding for the 2-D latent, graph source)
VARIANTS = {
    "cauchy": dict(alpha=1.0),
    "alpha0.5": dict(alpha=0.5),
    "alpha0.3": dict(alpha=0.3),
    "graph10d": dict(alpha=1.0, graph_dim=10),
    "graph10d_alpha0.5": dict(alpha=0.5, graph_dim=10),
    "steps3000": dict(alpha=1.0, steps=3000),
    "k30": dict(alpha=1.0, n_neighbors=30),
    "umap": dict(loss="umap"),
    "alpha0.5_steps3000": dict(alpha=0.5, steps=3000),
    "alpha0.5_exag2": dict(alpha=0.5, exaggeration=2.0),
    "alpha0.5_exag4": dict(alpha=0.5, exaggeration=4.0),
    "cauchy_exag2": dict(alpha=1.0, exaggeration=2.0),
    "cauchy_exag4": dict(alpha=1.0, exaggeration=4.0),
    "cauchy_exag8": dict(alpha=1.0, exaggeration=8.0),
    "cauchy_exag12": dict(alpha=1.0, exaggeration=12.0),
    "alpha0.5_k10": dict(alpha=0.5, n_neighbors=10),
    "steps6000": dict(alpha=1.0, steps=6000),
    "alpha0.5_steps6000": dict(alpha=0.5, steps=6000),
}
VALIDATION_SHARE = 0.1   # training digits left out of the embedding and used as validation queries


def embed(f_fit, views, dim, seed, *, alpha=1.0, exaggeration=1.0, graph_dim=None, steps=None, n_neighbors=None,
          loss="infonce", quick=False):
    """A 2-D (``dim``) embedding MLP of ``f_fit`` with SeparatedLatent's settings except those given."""
    kw = dict(views=views, n_neighbors=n_neighbors or DEFAULTS["n_neighbors"], batch_size=DEFAULTS["embed_batch"],
              steps=steps or (50 if quick else DEFAULTS["embed_steps"]), loss=loss, seed=seed)
    graph = None
    if graph_dim is not None:
        high, _, _ = fit_embedding(f_fit, graph_dim, **kw)        # the higher-dimensional embedding, Cauchy kernel
        with torch.no_grad():
            graph = high(f_fit)
    net, _, secs = fit_embedding(f_fit, dim, alpha=alpha, exaggeration=exaggeration, graph=graph, **kw)
    return net


def agreement(net, f_query, y_query, f_ref, y_ref):
    with torch.no_grad():
        return knn_label_agreement(net(f_query), y_query.numpy(), net(f_ref), y_ref.numpy())


def validation_split(n, seed):
    """Seeded (validation, fit) indices of the n training digits: VALIDATION_SHARE of them for validation."""
    perm = torch.randperm(n, generator=torch_generator(spawn_seed(seed, "validation split")))
    n_val = int(round(VALIDATION_SHARE * n))
    return perm[:n_val], perm[n_val:]


def run_variant(c, name, split, seed, quick, dim=2):
    """Held-out 10-NN agreement of variant ``name`` on ``split``: "validation" (embedding trained on 90% of the
    training digits, the other 10% as queries) or "test" (trained on all training digits, test digits as queries)."""
    f, y, views = c["train"], c["y_train"], c["views"]
    start = time.perf_counter()
    if split == "validation":
        val, fit = validation_split(len(f), seed)
        net = embed(f[fit], views[:, fit], dim, seed, quick=quick, **VARIANTS[name])
        score = agreement(net, f[val], y[val], f[fit], y[fit])
    else:
        net = embed(f, views, dim, seed, quick=quick, **VARIANTS[name])
        score = agreement(net, c["test"], c["y_test"], f, y)
    return score, time.perf_counter() - start


def write(results, out, name="embedding_2d"):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name + ".json"), "w") as fh:
        json.dump(results, fh, indent=2)
    rows = results["rows"]
    lines = ["| variant | settings | validation agreement | test agreement | seconds (val + test) |",
             "|---|---|---|---|---|"]
    for variant, r in rows.items():
        val, test = r.get("validation"), r.get("test")
        lines.append(f"| {variant}{' (chosen)' if variant == results.get('chosen') else ''} | {VARIANTS[variant]} | "
                     f"{'-' if val is None else f'{val:.3f}'} | {'-' if test is None else f'{test:.3f}'} | "
                     f"{r.get('seconds', 0):.0f} |")
    head = (f"{results['dim']}-D neighbour embedding of cached contrastive features (60 epochs, SeparatedLatent's "
            f"settings; seed {results['seed']}, {results['n_train']} training / {results['n_test']} test digits). "
            "Held-out 10-NN label agreement; no labels in training. The variant is chosen by the VALIDATION "
            f"column only ({VALIDATION_SHARE:.0%} of the training digits left out of the embedding, queried "
            "against the rest); the test column (held-out test digits against all training digits) is reported, "
            "never used for the choice. The encoder saw the validation digits (unlabelled).\n\n")
    ref = results.get("features_reference", {})
    tail = ("\n\nReference, the 128-D contrastive features themselves (no embedding): validation "
            f"{ref.get('validation', float('nan')):.3f}, test {ref.get('test', float('nan')):.3f}.\n")
    with open(os.path.join(out, name + ".md"), "w") as fh:
        fh.write(head + "\n".join(lines) + tail)
    print("\n".join(lines), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--splits", nargs="+", default=["validation", "test"], choices=["validation", "test"])
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "otgen_bench_features.pt"),
                   help="file of the cached contrastive features (written on the first run)")
    p.add_argument("--data-dir", default=None, help="folder of MNIST IDX files (default: the embedded digits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke run, not a measurement)")
    p.add_argument("--dim", type=int, default=2, help="embedding dimension (default 2)")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--name", default=None, help="file stem of the outputs (default: embedding_{dim}d)")
    args = p.parse_args()
    name = args.name or f"embedding_{args.dim}d"
    torch.set_num_threads(1)
    c = cached_features(args.cache, args.data_dir, args.seed, args.quick)
    path = os.path.join(args.out, name + ".json")
    results = json.load(open(path)) if os.path.exists(path) and not args.quick else {}
    results.update(n_train=len(c["train"]), n_test=len(c["test"]), data_dir=args.data_dir, seed=args.seed,
                   encoder_seconds=c["encoder_seconds"], validation_share=VALIDATION_SHARE, dim=args.dim)
    rows = results.setdefault("rows", {})
    ref = results.setdefault("features_reference", {})      # the features themselves, no embedding (a reference)
    for split in args.splits:
        f, y = c["train"], c["y_train"]
        if split == "validation":
            val, fit = validation_split(len(f), args.seed)
            ref[split] = knn_label_agreement(f[val], y[val].numpy(), f[fit], y[fit].numpy())
        else:
            ref[split] = knn_label_agreement(c["test"], c["y_test"].numpy(), f, y.numpy())
    for split in args.splits:
        for variant in args.variants:
            score, secs = run_variant(c, variant, split, args.seed, args.quick, args.dim)
            row = rows.setdefault(variant, {})
            row[split], row["seconds"] = score, row.get("seconds", 0) + secs
            print(variant, split, f"{score:.4f}", f"{secs:.0f} s", flush=True)
            scored = {k: r["validation"] for k, r in rows.items() if "validation" in r}
            results["chosen"] = max(scored, key=scored.get) if scored else None
            write(results, args.out, name)


if __name__ == "__main__":
    main()
