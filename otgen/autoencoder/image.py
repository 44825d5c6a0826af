"""A small convolutional autoencoder for 28 x 28 digit images.

``ConvAutoencoder`` is the torch module; ``ImageAutoencoder`` wraps it as a
scikit-learn-style estimator (``fit`` / ``encode`` / ``decode`` / ``save`` / ``load``).
Latent codes of fitted digits are the targets Y of the semi-discrete OT map.

Outputs follow the input's kind: numpy in -> numpy out, torch in -> torch out (on the
input's device).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from otgen._base import BaseEstimator, check_seed, like_input
from otgen._validation import as_tensor, check_choice, check_positive_float, check_positive_int, resolve_device
from otgen.autoencoder.augment import augment_digits
from otgen.autoencoder.training import LOSSES, batched_apply, train_autoencoder

__all__ = ["ConvAutoencoder", "ImageAutoencoder", "IMAGE_SIZE"]

IMAGE_SIZE = 28
_BATCH = 1024          # images per inference chunk: bounds the memory of encode / decode on the device


def check_images(images, name: str = "images") -> torch.Tensor:
    """Validate digit images: (n, 28, 28) or (n, 1, 28, 28), values in [0, 1] -> float32 (n, 1, 28, 28) on CPU."""
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.dtype in (np.uint8, torch.uint8):
        raise TypeError(f"{name} must be floats in [0, 1], got uint8 pixels; divide by 255 first")
    x = as_tensor(images, name)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{name} must have shape (n, 28, 28) or (n, 1, 28, 28), got shape {tuple(x.shape)}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{name} must have pixel values in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return x



class ConvAutoencoder(nn.Module):
    r"""Convolutional autoencoder :math:`x \mapsto D(E(x))` for 1 x 28 x 28 images.

    Encoder: two stride-2 convolutions (28 -> 14 -> 7) and two linear layers to a
    ``latent_dim`` code; decoder: the mirror image with transposed convolutions and a
    sigmoid, so reconstructions are pixels in [0, 1] (deterministic autoencoder,
    Hinton & Salakhutdinov [1]_).

    Parameters
    ----------
    latent_dim : int, default 8
        Dimension d of the code z = E(x).
    width : int, default 32
        Channels of the first convolution (the second has ``2 * width``).
    hidden : int, default 256
        Width of the linear layer between the convolutions and the code (both ways).
    n_classes : int, default 0
        ``> 0`` adds a linear classification head ``classify(z)`` on the code (the
        labelled control); ``0``: none.

    References
    ----------
    .. [1] G. E. Hinton, R. R. Salakhutdinov, "Reducing the dimensionality of data with
       neural networks", Science 313 (2006).
    """

    def __init__(self, latent_dim: int = 8, width: int = 32, hidden: int = 256, n_classes: int = 0):
        super().__init__()
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        c1, c2 = check_positive_int(width, "width"), 2 * width
        hidden = check_positive_int(hidden, "hidden")
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(),   # (n, c1, 14, 14)
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),  # (n, c2, 7, 7)
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(),
            nn.Linear(hidden, latent_dim),                        # (n, d)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, c2 * 7 * 7), nn.ReLU(),
            nn.Unflatten(1, (c2, 7, 7)),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),  # (n, c1, 14, 14)
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1), nn.Sigmoid(),  # (n, 1, 28, 28)
        )
        n_classes = check_positive_int(n_classes, "n_classes", minimum=0)
        if n_classes:
            self.head = nn.Linear(latent_dim, n_classes)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Class logits of codes (n, latent_dim) -> (n, n_classes); needs ``n_classes > 0``."""
        return self.head(z)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1, 28, 28) -> (n, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, latent_dim) -> (n, 1, 28, 28) in [0, 1]."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class ImageAutoencoder(BaseEstimator):
    r"""Estimator wrapper: fit a :class:`ConvAutoencoder` on digits, then encode / decode.

    ``fit`` minimises the mean binary cross-entropy between :math:`D(E(x))` and
    :math:`x` (see :func:`otgen.autoencoder.training.train_autoencoder`). The default
    schedule (20 epochs, batch 64) fits the 4,000 embedded MNIST training digits in
    about 1.5 minutes on one CPU thread, to a test reconstruction MSE of about 0.020 per
    pixel with ``latent_dim=8`` (0.042 with ``latent_dim=2``).

    Parameters
    ----------
    latent_dim : int, default 8
        Code dimension d (``2`` gives a plottable latent space).
    epochs : int, default 20
        Passes over the training images.
    batch_size : int, default 64
    lr : float, default 2e-3
        Peak learning rate (Adam, cosine decay).
    weight_decay : float, default 0.0
    loss : {"bce", "mse"}, default "bce"
    width : int, default 32
        Channels of the first convolution (see :class:`ConvAutoencoder`).
    hidden : int, default 256
        Width of the hidden linear layer (see :class:`ConvAutoencoder`).
    augment : bool, default False
        Train on randomly deformed digits (small affine and elastic deformations,
        :func:`otgen.autoencoder.augment.augment_digits`, drawn afresh each epoch)
        instead of the digits themselves: a lower decoder floor, at the price of more
        epochs (AUGMENT_EPOCHS recommended).
    label_weight : float, default 0.0
        LABELLED CONTROL, never an unsupervised latent: ``> 0`` adds a linear
        classification head on the code and the loss
        ``label_weight * cross_entropy(head(E(x)), y)``, so ``fit`` then needs
        ``labels``. It bounds what separated digit modes can do.
    device : str or torch.device or None, default None
        ``None``: CUDA when available, else CPU.
    seed : int, default 0
        Seeds the weight initialisation and the shuffling.
    verbose : bool, default False
        Show a progress bar during ``fit``.

    Attributes
    ----------
    model_ : ConvAutoencoder
        The trained network (in eval mode).
    history_ : dict
        Per-epoch ``"loss"``, per-step ``"step_loss"``, cumulative ``"time"`` (s).

    Notes
    -----
    ``encode``, ``decode``, ``reconstruct`` and ``reconstruction_error(per_image=True)``
    return numpy arrays for numpy input and torch tensors (on the input's device) for
    torch input.
    """

    _FITTED_ATTR = "model_"
    _SAVE_VERSION = 1

    def __init__(self, latent_dim: int = 8, epochs: int = 20, batch_size: int = 64, lr: float = 2e-3,
                 weight_decay: float = 0.0, loss: str = "bce", width: int = 32, hidden: int = 256,
                 augment: bool = False, label_weight: float = 0.0, device=None, seed: int = 0,
                 verbose: bool = False):
        self.latent_dim = latent_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.loss = loss
        self.width = width
        self.hidden = hidden
        self.augment = augment
        self.label_weight = label_weight
        self.device = device
        self.seed = seed
        self.verbose = verbose

    def _build(self, n_classes: int = 0) -> ConvAutoencoder:
        return ConvAutoencoder(self.latent_dim, width=self.width, hidden=self.hidden, n_classes=n_classes)

    # -- fit -----------------------------------------------------------------------
    def fit(self, images, labels=None) -> "ImageAutoencoder":
        """Train on ``images`` (n, 28, 28) or (n, 1, 28, 28) with values in [0, 1]; returns self.

        ``labels`` (n,) integer classes are used only by the labelled control
        (``label_weight > 0``, where they are required) and ignored otherwise.
        """
        x = check_images(images)
        check_positive_int(self.latent_dim, "latent_dim")
        check_positive_float(self.lr, "lr")
        check_choice(self.loss, "loss", LOSSES)
        weight = check_positive_float(self.label_weight, "label_weight", allow_zero=True)
        if not isinstance(self.augment, bool):
            raise TypeError(f"augment must be True or False, got {self.augment!r}")
        if weight > 0 and labels is None:
            raise ValueError("label_weight > 0 (the labelled control) needs labels: fit(images, labels)")
        n_classes = int(as_tensor(labels, "labels", ndim=1).max()) + 1 if weight > 0 else 0
        seed = check_seed(self.seed)
        dev = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._build(n_classes)
        self.history_ = train_autoencoder(model, x, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                          weight_decay=self.weight_decay, loss=self.loss, device=dev, seed=seed,
                                          verbose=self.verbose, desc="fit autoencoder",
                                          augment=augment_digits if self.augment else None,
                                          labels=labels if weight > 0 else None, label_weight=weight)
        self.model_ = model
        return self

    # -- inference -----------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.model_.parameters()).device

    def encode(self, images):
        """Latent codes of ``images`` (n, 28, 28) or (n, 1, 28, 28) -> (n, latent_dim)."""
        self._check_fitted()
        x = check_images(images)
        z = batched_apply(self.model_.encode, x, batch_size=_BATCH, device=self._device())
        return like_input(z, images)

    def decode(self, codes):
        """Images from latent codes (n, latent_dim) -> (n, 28, 28) in [0, 1]."""
        self._check_fitted()
        z = as_tensor(codes, "codes", ndim=2)
        if z.shape[1] != self.model_.latent_dim:
            raise ValueError(f"codes must have shape (n, {self.model_.latent_dim}), got shape {tuple(z.shape)}")
        x = batched_apply(self.model_.decode, z, batch_size=_BATCH, device=self._device())[:, 0]  # (n, 28, 28)
        return like_input(x, codes)

    def reconstruct(self, images):
        """``decode(encode(images))`` -> (n, 28, 28)."""
        self._check_fitted()
        x = check_images(images)
        out = batched_apply(self.model_, x, batch_size=_BATCH, device=self._device())[:, 0]
        return like_input(out, images)

    def reconstruction_error(self, images, per_image: bool = False):
        r"""Mean squared pixel error :math:`\frac{1}{784}\|D(E(x)) - x\|^2`.

        Returns a float (mean over images) or, with ``per_image=True``, an (n,) array
        (numpy for numpy input, torch for torch input).
        """
        self._check_fitted()
        x = check_images(images)[:, 0]  # (n, 28, 28)
        err = ((self.reconstruct(x) - x) ** 2).mean(dim=(1, 2))  # (n,)
        return like_input(err, images) if per_image else float(err.mean())

    # -- files ---------------------------------------------------------------------
    def _get_state(self) -> dict:
        head = getattr(self.model_, "head", None)
        return {"state_dict": self.model_.state_dict(), "history": self.history_,
                "n_classes": 0 if head is None else head.out_features}

    def _set_state(self, state: dict, device=None) -> None:
        model = self._build(state.get("n_classes", 0))
        model.load_state_dict(state["state_dict"])
        self.model_ = model.to(resolve_device(device)).eval()
        self.history_ = state["history"]
