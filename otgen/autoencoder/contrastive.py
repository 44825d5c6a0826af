r"""A contrastive digit encoder (SimCLR, NT-Xent loss) trained with digit augmentations.

Two random deformations :math:`v, v'` of each digit of a batch (see
:func:`otgen.autoencoder.augment.augment_digits`) are encoded, projected and
normalised to :math:`z, z'`; the NT-Xent loss (Chen et al. [1]_)

.. math::

    \ell = -\frac1{2B}\sum_{r=1}^{2B} \log
        \frac{\exp(z_r\cdot z_{r^+}/T)}{\sum_{s\ne r}\exp(z_r\cdot z_s/T)}

asks each view to pick out its twin among the 2B - 1 others. Deformations of one digit
thus map close together, and a digit's nearest neighbours in feature space are other
writings of the same digit, without labels.

References
----------
.. [1] T. Chen, S. Kornblith, M. Norouzi, G. Hinton, "A simple framework for
   contrastive learning of visual representations", ICML 2020.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from otgen.autoencoder.augment import augment_digits

__all__ = ["ContrastiveCNN", "nt_xent_loss", "train_contrastive"]

_CONV_MEMORY_FORMAT = torch.channels_last  # NHWC: CPU (oneDNN) convolutions and pooling run ~1.5x faster than NCHW


class ContrastiveCNN(nn.Module):
    """conv(width) - pool - conv(2 width) - pool - fc(feature_dim) body, and an MLP projection head.

    Parameters
    ----------
    width : int, default 32
    feature_dim : int, default 128
        Dimension of the features (the body's output, used for the neighbour graph).
    projection_dim : int, default 64
        Dimension of the head's output (the NT-Xent loss reads it).
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, projection_dim: int = 64):
        super().__init__()
        # Max-pool before ReLU: the same function as ReLU then pool (ReLU is monotone, so it
        # commutes with max), on a quarter of the activations.
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),               # (n, w, 14, 14)
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),       # (n, 2w, 7, 7)
            nn.Flatten(), nn.Linear(2 * width * 49, feature_dim),                        # (n, F)
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, feature_dim), nn.ReLU(),
                                  nn.Linear(feature_dim, projection_dim))
        self.to(memory_format=_CONV_MEMORY_FORMAT)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1, 28, 28) -> unit-norm features (n, feature_dim)."""
        return F.normalize(self._body(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1, 28, 28) -> unit-norm projections (n, projection_dim)."""
        return F.normalize(self.head(self._body(x)), dim=1)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1, 28, 28) -> the body's output before normalisation (n, feature_dim)."""
        return self.body(x.contiguous(memory_format=_CONV_MEMORY_FORMAT))


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of paired unit vectors z1, z2 (B, p) (row r of z1 and of z2 are twins)."""
    z = torch.cat([z1, z2])                                             # (2B, p)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    twin = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(sim, twin)


def train_contrastive(model: ContrastiveCNN, x: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
                      temperature: float, strength: float, generator: torch.Generator, device=None,
                      verbose: bool = False) -> dict:
    """Train ``model`` on digits ``x`` (n, 1, 28, 28) with NT-Xent (Adam, cosine decay).

    The two views of each digit are :func:`augment_digits` at ``strength``. Returns
    ``{"loss": per-epoch mean loss, "time": seconds at the end of each epoch}``; ``verbose`` shows
    a progress bar with the running loss.
    """
    dev = torch.device("cpu") if device is None else device
    n = x.shape[0]
    b = min(batch_size, n)
    steps = max(1, n // b)                      # full batches only: the loss's difficulty depends on B
    total = epochs * steps
    model.to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
    history, t0 = {"loss": [], "time": []}, time.perf_counter()
    bar = tqdm(range(epochs), desc="fit contrastive encoder", disable=not verbose, leave=False)
    for _ in bar:
        perm = torch.randperm(n, generator=generator)
        running = 0.0
        for s in range(steps):
            xb = x[perm[s * b:(s + 1) * b]].to(dev)
            v1, v2 = augment_digits(xb, generator, strength), augment_digits(xb, generator, strength)
            loss = nt_xent_loss(model(v1), model(v2), temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        history["loss"].append(running / steps)
        bar.set_postfix(loss=f"{history['loss'][-1]:.4f}")
        history["time"].append(time.perf_counter() - t0)
    model.eval()
    return history
