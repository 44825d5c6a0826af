"""A generic training loop for autoencoders, and batched inference helpers.

Any ``torch.nn.Module`` with ``encode(x) -> z`` and ``decode(z) -> x_hat`` can be
trained here, whatever the shape of ``x`` (images ``(n, 1, 28, 28)``, videos
``(n, T, C, H, W)``, token sequences ...): the loss compares ``decode(encode(x))``
with ``x`` element-wise.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from otgen._base import check_seed, flush_denormals
from otgen._validation import (as_tensor, check_choice, check_positive_float, check_positive_int,
                               resolve_device)

__all__ = ["LOSSES", "reconstruction_loss", "train_autoencoder", "batched_apply"]

LOSSES = ("bce", "mse")


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, loss: str = "bce") -> torch.Tensor:
    r"""Mean element-wise reconstruction loss.

    .. math::

        \mathrm{mse}(\hat x, x) = \frac{1}{m}\sum_k (\hat x_k - x_k)^2, \qquad
        \mathrm{bce}(\hat x, x) = -\frac{1}{m}\sum_k x_k\log\hat x_k + (1 - x_k)\log(1 - \hat x_k)

    Parameters
    ----------
    x_hat, x : torch.Tensor, same shape (n, ...)
        Reconstruction and target; ``"bce"`` needs both in [0, 1].
    loss : {"bce", "mse"}
    """
    if loss == "bce":
        return F.binary_cross_entropy(x_hat, x)
    return F.mse_loss(x_hat, x)


@flush_denormals()
def train_autoencoder(model: torch.nn.Module, data, *, epochs: int = 30, batch_size: int = 128,
                      lr: float = 2e-3, weight_decay: float = 0.0, loss: str = "bce", device=None,
                      seed: int = 0, verbose: bool = False, desc: str = "autoencoder", augment=None, labels=None,
                      label_weight: float = 0.0, latent_noise: float = 0.0) -> dict:
    r"""Train ``model`` to reconstruct ``data`` with Adam and a cosine learning-rate decay.

    Minimises the empirical reconstruction risk

    .. math::

        \min_{\theta,\phi}\ \frac{1}{n}\sum_{i=1}^n \ell\big(D_\phi(E_\theta(x_i)),\, x_i\big)

    by mini-batch Adam [1]_ with learning rate :math:`\eta_t = \eta\,(1 + \cos(\pi t / T))/2`
    (cosine annealing [2]_, :math:`T` the number of steps).

    Parameters
    ----------
    model : torch.nn.Module
        Has ``encode`` and ``decode``; trained in place (moved to ``device``).
    data : array or tensor of shape (n, ...)
        Training inputs (already in the model's input shape).
    epochs : int, default 30
        Passes over the data.
    batch_size : int, default 128
    lr : float, default 2e-3
        Peak learning rate.
    weight_decay : float, default 0.0
        Adam weight decay (``>= 0``).
    loss : {"bce", "mse"}, default "bce"
        Element-wise reconstruction loss (see :func:`reconstruction_loss`).
    device : str or torch.device, optional
        ``None``: CUDA when available, else CPU.
    seed : int, default 0
        Seeds the mini-batch shuffling (and the augmentation).
    verbose : bool, default False
        Show a tqdm progress bar with the running loss.
    desc : str, default "autoencoder"
        Progress-bar label.
    augment : callable, optional
        ``augment(x, generator) -> x``: a random transformation of each mini-batch ``x``
        (b, ...) (on ``device``) that maps the data distribution to itself (a symmetry of
        the data), drawing its randomness from the CPU ``torch.Generator``; the model is
        trained to reconstruct the transformed batch. ``None`` (default): no augmentation.
    labels : array or tensor of shape (n,), optional
        Integer class labels; used only when ``label_weight > 0`` (a labelled control).
    label_weight : float, default 0.0
        Weight :math:`\lambda` of a cross-entropy term
        :math:`\lambda\,\mathrm{CE}(\mathrm{model.classify}(E(x_i)), y_i)` added to the loss;
        ``> 0`` needs ``labels`` and a ``model.classify(z) -> logits`` method.
    latent_noise : float, default 0.0
        Standard deviation :math:`\sigma` of Gaussian noise added to the codes before decoding,
        :math:`\ell(D(E(x) + \sigma\varepsilon), x)`: the decoder learns to draw the same image
        from every code near :math:`E(x)`, so codes a generator places near, not on, the training
        codes still decode to data (the posterior noise of a VAE with fixed variance; Ghosh et al. [3]_).
        Meaningful only when the encoder fixes the codes' scale (else it can outgrow the noise).
        The noise is drawn from the seeded generator.

    Returns
    -------
    history : dict
        ``"loss"``: mean training loss of each epoch (list of ``epochs`` floats),
        ``"step_loss"``: loss of every step, ``"time"``: seconds since the start at the
        end of each epoch (the loss includes the label term when ``label_weight > 0``).

    References
    ----------
    .. [1] D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015.
    .. [2] I. Loshchilov, F. Hutter, "SGDR: stochastic gradient descent with warm
       restarts", ICLR 2017.
    .. [3] P. Ghosh, M. S. M. Sajjadi, A. Vergari, M. Black, B. Schölkopf, "From variational to
       deterministic autoencoders", ICLR 2020.
    """
    if not (hasattr(model, "encode") and hasattr(model, "decode")):
        raise TypeError(f"model must be a torch.nn.Module with encode and decode methods, got {type(model).__name__}")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive_float(lr, "lr")
    weight_decay = check_positive_float(weight_decay, "weight_decay", allow_zero=True)
    check_choice(loss, "loss", LOSSES)
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be a callable augment(x, generator) or None, got {type(augment).__name__}")
    label_weight = check_positive_float(label_weight, "label_weight", allow_zero=True)
    latent_noise = check_positive_float(latent_noise, "latent_noise", allow_zero=True)
    seed = check_seed(seed)
    dev = resolve_device(device)
    x_all = as_tensor(data, "data")  # (n, ...) float32 on CPU
    if x_all.ndim < 2:
        raise ValueError(f"data must have shape (n, ...) with at least 2 dimensions, got shape {tuple(x_all.shape)}")
    if loss == "bce" and (float(x_all.min()) < 0 or float(x_all.max()) > 1):
        raise ValueError(f"loss='bce' needs data in [0, 1], got values in [{float(x_all.min()):.3g}, {float(x_all.max()):.3g}]")

    n = x_all.shape[0]
    y_all = _check_train_labels(model, labels, n) if label_weight > 0 else None
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    model.to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
    gen = torch.Generator().manual_seed(seed)
    history = {"loss": [], "step_loss": [], "time": []}
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc=desc, disable=not verbose, leave=False)
    for _ in bar:
        perm = torch.randperm(n, generator=gen)
        total_loss = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            x = x_all[idx].to(dev)  # (b, ...)
            if augment is not None:
                x = augment(x, gen)
            z = model.encode(x)
            z_dec = z if latent_noise == 0 else z + latent_noise * torch.randn(z.shape, generator=gen).to(dev)
            l = reconstruction_loss(model.decode(z_dec), x, loss)
            if y_all is not None:
                l = l + label_weight * F.cross_entropy(model.classify(z), y_all[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            l.backward()
            opt.step()
            sched.step()
            l = l.item()
            history["step_loss"].append(l)
            total_loss += l * idx.numel()
        history["loss"].append(total_loss / n)
        history["time"].append(time.perf_counter() - t0)
        bar.set_postfix(loss=f"{history['loss'][-1]:.4f}")
    model.eval()
    return history


def _check_train_labels(model, labels, n: int) -> torch.Tensor:
    """Labels (n,) as int64 for the label term; the model must have ``classify``."""
    if labels is None:
        raise ValueError("label_weight > 0 needs labels (one integer class per training input)")
    if not hasattr(model, "classify"):
        raise TypeError(f"label_weight > 0 needs a model with a classify(z) method, got {type(model).__name__}")
    y = as_tensor(labels, "labels", ndim=1, dtype=torch.float64)
    if y.shape[0] != n or bool((y != y.round()).any()) or float(y.min()) < 0:
        raise ValueError(f"labels must be {n} non-negative integers (one per training input)")
    return y.long()


@torch.no_grad()
def batched_apply(fn, x: torch.Tensor, *, batch_size: int = 512, device=None) -> torch.Tensor:
    """Apply ``fn`` to ``x`` (n, ...) in chunks of ``batch_size`` rows on ``device``.

    Returns the concatenated outputs on the CPU, so memory on ``device`` is bounded by
    ``batch_size``.
    """
    dev = resolve_device(device)
    outs = [fn(x[i:i + batch_size].to(dev)).cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs, dim=0)
