"""What separates the digits in :class:`otgen.autoencoder.SeparatedLatent`: encoder epochs and embedding views.

The separated latent is a contrastive (SimCLR) encoder g followed by a parametric neighbour
embedding f. Its premise is measured by the held-out 10-NN label agreement (the share of the
10 nearest training codes that carry a held-out digit's label; no label is used in training).
This script measures that agreement

- of the features g(x), after each number of contrastive epochs in ``--epochs``;
- of the embedding f(g(x)) in each dimension of ``--dims``, trained on the training features
  only (``views`` 0) or also on the features of deformed copies of each digit (``views`` > 0,
  the ``embed_views`` setting),

on the embedded 5,000 digits (or full MNIST with ``--data-dir``), with the settings of
``SeparatedLatent`` otherwise (in 2-D its exaggeration 4 since issue 13; the committed
``separated_latent.md`` was measured before, at exaggeration 1: 2-D 0.929 there; see
``bench_embedding_2d.py`` for the 2-D variants).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/bench_separated_latent.py \\
        [--epochs 20 60] [--views 0 4] [--dims 10 2] [--width 32] [--downsample 2] [--out benchmarks/results]

``--width`` and ``--downsample 2`` (digits average-pooled to 14 x 14 before the encoder) measure cheaper
encoders: what the latent's agreement costs (the encoder is most of ``otgen compare mnist``'s time).

Writes ``NAME.{json,md}`` (``--name``, default ``separated_latent``).
"""

import argparse
import json
import os
import sys
import time

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from otgen._base import spawn_seed, torch_generator  # noqa: E402
from otgen.autoencoder import ContrastiveCNN, SeparatedLatent, fit_embedding, train_contrastive, view_features  # noqa: E402
from otgen.data import load_mnist  # noqa: E402
from otgen.metrics.latent import knn_label_agreement  # noqa: E402

DEFAULTS = SeparatedLatent().get_params()   # every setting not swept here is the estimator's


def images(split, data_dir, seed):
    x, y = load_mnist(split, data_dir=data_dir, seed=seed)
    return torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28), y


def features(encoder, x):
    with torch.no_grad():
        return torch.cat([encoder.features(x[i:i + 1024]) for i in range(0, len(x), 1024)])


def downsampled_body(width, feature_dim):
    """The encoder's body on digits average-pooled to 14 x 14 (``--downsample 2``): ~1/4 of the convolutions' cost."""
    return nn.Sequential(nn.AvgPool2d(2),                                                      # (n, 1, 14, 14)
                         nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),       # (n, w, 7, 7)
                         nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (n, 2w, 3, 3)
                         nn.Flatten(), nn.Linear(2 * width * 9, feature_dim))                 # (n, F)


def fit_encoder(x, epochs, seed, width, downsample=1):
    torch.manual_seed(spawn_seed(seed, "encoder init"))
    enc = ContrastiveCNN(width, DEFAULTS["feature_dim"])
    if downsample == 2:
        enc.body = downsampled_body(width, DEFAULTS["feature_dim"])
    start = time.perf_counter()
    train_contrastive(enc, x, epochs=epochs, batch_size=DEFAULTS["batch_size"], lr=DEFAULTS["lr"],
                      temperature=DEFAULTS["temperature"], strength=DEFAULTS["strength"],
                      generator=torch_generator(spawn_seed(seed, "contrastive")))
    return enc.eval(), time.perf_counter() - start


def embedding_agreement(f_train, y_train, f_test, y_test, views, dim, steps, seed):
    """Held-out 10-NN agreement of SeparatedLatent's neighbour embedding of the features (views: (V, n, F) or None)."""
    exaggeration, alpha, _ = SeparatedLatent(latent_dim=dim)._embedding_settings()   # the estimator's, per dim
    net, _, _ = fit_embedding(f_train, dim, views=views, n_neighbors=DEFAULTS["n_neighbors"], steps=steps,
                              batch_size=DEFAULTS["embed_batch"], loss=DEFAULTS["embed_loss"], alpha=alpha,
                              exaggeration=exaggeration, seed=seed)
    with torch.no_grad():
        return knn_label_agreement(net(f_test), y_test, net(f_train), y_train)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, nargs="+", default=[20, 60])
    p.add_argument("--views", type=int, nargs="+", default=[0, 4])
    p.add_argument("--dims", type=int, nargs="+", default=[10, 2])
    p.add_argument("--data-dir", default=None, help="folder of MNIST IDX files (default: the embedded digits)")
    p.add_argument("--width", type=int, default=DEFAULTS["width"],
                   help="channels of the encoder's first convolution (the encoder's cost grows ~ width^2)")
    p.add_argument("--downsample", type=int, choices=(1, 2), default=1,
                   help="2: the encoder reads digits average-pooled to 14 x 14 (a cheaper encoder; not the estimator's)")
    p.add_argument("--name", default="separated_latent", help="stem of the output files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke run, not a measurement)")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args()
    torch.set_num_threads(1)
    (x, y), (xt, yt) = images("train", args.data_dir, args.seed), images("test", args.data_dir, args.seed)
    if args.quick:
        x, y, xt, yt, args.epochs, args.views, args.dims = x[:300], y[:300], xt[:100], yt[:100], [1], [0, 1], [2]
    steps = 50 if args.quick else DEFAULTS["embed_steps"]
    width = 8 if args.quick else args.width
    rows = []
    for epochs in args.epochs:
        enc, secs = fit_encoder(x, epochs, args.seed, width, args.downsample)
        f_train, f_test = features(enc, x), features(enc, xt)
        row = dict(epochs=epochs, width=width, input=28 // args.downsample,
                   encoder_seconds=secs, features=knn_label_agreement(f_test, yt, f_train, y))
        for v in args.views:
            views = view_features(enc, x, v, args.seed)
            for dim in args.dims:
                row[f"embedding_{dim}d_views{v}"] = embedding_agreement(f_train, y, f_test, yt, views, dim, steps,
                                                                        args.seed)
        rows.append(row)
        print(row, flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump(dict(n_train=len(x), n_test=len(xt), data_dir=args.data_dir, seed=args.seed, rows=rows), f, indent=2)
    cols = [c for c in rows[0] if c.startswith("embedding_")]
    lines = ["| contrastive epochs | width | input | encoder s | features | " + " | ".join(cols) + " |",
             "|---" * (5 + len(cols)) + "|"]
    lines += [f"| {r['epochs']} | {r['width']} | {r['input']} × {r['input']} | {r['encoder_seconds']:.0f} | {r['features']:.3f} | "
              + " | ".join(f"{r[c]:.3f}" for c in cols) + " |" for r in rows]
    with open(os.path.join(args.out, f"{args.name}.md"), "w") as f:
        f.write("Held-out 10-NN label agreement (no labels in training).\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
