"""An offline MNIST classifier: a small CNN trained on the embedded digits.

It scores generated digits (class probabilities for the mode-mixture rate, the class
histogram and confidence) and embeds them (penultimate-layer features for the
Fréchet distance and precision / recall), with no download.

Outputs follow the input's kind: numpy in -> numpy out, torch in -> torch out.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from otgen._base import BaseEstimator, check_seed, flush_denormals, like_input
from otgen._validation import as_tensor, check_positive_float, check_positive_int, resolve_device
from otgen.autoencoder.image import check_images
from otgen.autoencoder.training import batched_apply

__all__ = ["MNISTClassifier", "N_CLASSES"]

N_CLASSES = 10
_CONV_MEMORY_FORMAT = torch.channels_last  # NHWC: CPU (oneDNN) convolutions and pooling run ~1.5x faster than NCHW
_BATCH = 1024          # images per inference chunk: bounds the memory of predict / features on the device


def _check_labels(labels, n: int, name: str = "labels") -> torch.Tensor:
    """Integer class labels (n,) in [0, 10) -> int64 tensor."""
    y = as_tensor(labels, name, ndim=1, dtype=torch.float64)
    if y.shape[0] != n:
        raise ValueError(f"{name} must have length {n} (one per image), got length {y.shape[0]}")
    if bool((y != y.round()).any()) or float(y.min()) < 0 or float(y.max()) >= N_CLASSES:
        raise ValueError(f"{name} must be integers in [0, {N_CLASSES}), got values in [{float(y.min())}, {float(y.max())}]")
    return y.long()


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image of x (b, 1, 28, 28) by an integer offset in [-max_shift, max_shift]^2, zero-filled."""
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    pad = F.pad(x, (max_shift,) * 4)  # (b, 1, h + 2s, w + 2s)
    off = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=gen).to(x.device)  # (b, 2)
    rows = (off[:, 0, None] + torch.arange(h, device=x.device))  # (b, h)
    cols = (off[:, 1, None] + torch.arange(w, device=x.device))  # (b, w)
    bi = torch.arange(b, device=x.device)[:, None, None]
    return pad[bi, 0, rows[:, :, None], cols[:, None, :]][:, None]  # (b, 1, h, w)


class _CNN(nn.Module):
    """conv(32) - pool - conv(64) - pool - fc(feature_dim) - fc(10)."""

    def __init__(self, feature_dim: int = 128, dropout: float = 0.3):
        super().__init__()
        # Max-pool before ReLU: the same function as ReLU then pool (ReLU is monotone), on a quarter
        # of the activations.
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),   # (n, 32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),  # (n, 64, 7, 7)
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, feature_dim), nn.ReLU(),                # (n, F)
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, N_CLASSES))
        self.to(memory_format=_CONV_MEMORY_FORMAT)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.contiguous(memory_format=_CONV_MEMORY_FORMAT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # logits (n, 10)
        return self.head(self.features(x))


class MNISTClassifier(BaseEstimator):
    r"""Small convolutional digit classifier (LeCun et al. [1]_ style), scikit-learn API.

    ``fit`` minimises the cross-entropy :math:`-\frac1n\sum_i \log p_\theta(y_i\mid x_i)`
    with Adam, a cosine learning-rate decay and random shifts of up to ``max_shift``
    pixels as augmentation. On the 4,000 embedded training digits the defaults reach
    about 98 % accuracy on the 1,000 test digits (98.1 % with seed 0) in 1-1.5 minutes
    on one CPU thread.

    Parameters
    ----------
    epochs : int, default 20
    batch_size : int, default 64
    lr : float, default 2e-3
        Peak learning rate (Adam, cosine decay).
    max_shift : int, default 2
        Largest random translation (pixels) applied to training images; 0 disables it.
    feature_dim : int, default 128
        Width F of the penultimate layer returned by :meth:`features`.
    device : str or torch.device or None, default None
        ``None``: CUDA when available, else CPU.
    seed : int, default 0
        Seeds initialisation, shuffling, augmentation and dropout.
    verbose : bool, default False
        Show a progress bar during ``fit``.

    Attributes
    ----------
    model_ : torch.nn.Module
    history_ : dict
        Per-epoch ``"loss"`` and training ``"accuracy"``, per-step ``"step_loss"``,
        cumulative ``"time"`` (s).

    Notes
    -----
    ``predict_proba``, ``predict`` and ``features`` return numpy arrays for numpy input
    and torch tensors (on the input's device) for torch input.

    References
    ----------
    .. [1] Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to
       document recognition", Proc. IEEE 86 (1998).
    """

    _FITTED_ATTR = "model_"
    _SAVE_VERSION = 1

    def __init__(self, epochs: int = 20, batch_size: int = 64, lr: float = 2e-3, max_shift: int = 2,
                 feature_dim: int = 128, device=None, seed: int = 0, verbose: bool = False):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.max_shift = max_shift
        self.feature_dim = feature_dim
        self.device = device
        self.seed = seed
        self.verbose = verbose

    def _device(self) -> torch.device:
        return next(self.model_.parameters()).device

    def fit(self, images, labels) -> "MNISTClassifier":
        """Train on ``images`` (n, 28, 28) or (n, 1, 28, 28) in [0, 1] and ``labels`` (n,) in 0..9; returns self."""
        x = check_images(images)  # (n, 1, 28, 28)
        y = _check_labels(labels, x.shape[0])  # (n,)
        epochs = check_positive_int(self.epochs, "epochs")
        bs = check_positive_int(self.batch_size, "batch_size")
        lr = check_positive_float(self.lr, "lr")
        shift = check_positive_int(self.max_shift, "max_shift", minimum=0)
        seed = check_seed(self.seed)
        check_positive_int(self.feature_dim, "feature_dim")
        dev = resolve_device(self.device)

        n = x.shape[0]
        steps = math.ceil(n / bs)
        total = epochs * steps
        gen = torch.Generator().manual_seed(seed)
        history = {"loss": [], "accuracy": [], "step_loss": [], "time": []}
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []), flush_denormals():
            torch.manual_seed(seed)  # initialisation and dropout
            model = _CNN(self.feature_dim).to(dev).train()
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
            bar = tqdm(range(epochs), desc="fit classifier", disable=not self.verbose, leave=False)
            for _ in bar:
                perm = torch.randperm(n, generator=gen)
                tot_loss, correct = 0.0, 0
                for s in range(steps):
                    idx = perm[s * bs:(s + 1) * bs]
                    xb = _random_shift(x[idx], shift, gen).to(dev)  # (b, 1, 28, 28)
                    yb = y[idx].to(dev)
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    lv = loss.item()
                    history["step_loss"].append(lv)
                    tot_loss += lv * idx.numel()
                    correct += int((logits.argmax(1) == yb).sum())
                history["loss"].append(tot_loss / n)
                history["accuracy"].append(correct / n)
                history["time"].append(time.perf_counter() - t0)
                bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", acc=f"{history['accuracy'][-1]:.3f}")
        self.model_ = model.eval()
        self.history_ = history
        return self

    def predict_proba(self, images):
        """Class probabilities (n, 10) (softmax of the logits); rows sum to 1."""
        self._check_fitted()
        x = check_images(images)
        p = batched_apply(lambda b: self.model_(b).softmax(dim=1), x, batch_size=_BATCH, device=self._device())
        return like_input(p, images)

    def outputs(self, images) -> tuple:
        """``(predict_proba(images), features(images))`` from one pass of the network (half the cost of two calls)."""
        self._check_fitted()
        x = check_images(images)

        def both(b):                                                   # (B, 1, 28, 28) -> (B, 10 + F)
            h = self.model_.features(b)
            return torch.cat([self.model_.head(h).softmax(dim=1), h], dim=1)

        out = batched_apply(both, x, batch_size=_BATCH, device=self._device())
        return like_input(out[:, :N_CLASSES], images), like_input(out[:, N_CLASSES:], images)

    def predict(self, images):
        """Most probable class (n,) int64."""
        p = torch.as_tensor(self.predict_proba(images))
        return like_input(p.argmax(dim=1), images)

    def features(self, images):
        """Penultimate-layer activations (n, feature_dim), e.g. for :func:`frechet_distance`."""
        self._check_fitted()
        x = check_images(images)
        f = batched_apply(self.model_.features, x, batch_size=_BATCH, device=self._device())
        return like_input(f, images)

    def score(self, images, labels) -> float:
        """Accuracy: the fraction of ``images`` whose predicted class equals ``labels``."""
        x = check_images(images)
        y = _check_labels(labels, x.shape[0])
        return float((self.predict(x).cpu() == y).double().mean())

    def _get_state(self) -> dict:
        return {"state_dict": self.model_.state_dict(), "history": self.history_}

    def _set_state(self, state: dict, device=None) -> None:
        model = _CNN(self.feature_dim)
        model.load_state_dict(state["state_dict"])
        self.model_ = model.to(resolve_device(device)).eval()
        self.history_ = state["history"]
