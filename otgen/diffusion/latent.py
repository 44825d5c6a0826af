"""Scikit-learn style diffusion model for latent vectors (the baseline against semi-discrete OT).

The denoiser is a residual MLP on the flat code (``denoiser="mlp"``) or a small
diffusion transformer over the code viewed as ``n_tokens`` latent tokens
(``denoiser="dit"``, Sora-style [4]_).

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel. Denoising Diffusion Probabilistic Models. NeurIPS 2020.
.. [2] J. Song, C. Meng, S. Ermon. Denoising Diffusion Implicit Models. ICLR 2021.
.. [3] R. Rombach et al. High-Resolution Image Synthesis with Latent Diffusion Models. CVPR 2022.
.. [4] W. Peebles, S. Xie. Scalable Diffusion Models with Transformers. ICCV 2023.
"""

from __future__ import annotations

import os

import torch

from otgen._validation import (as_tensor, check_choice, check_positive_float, check_positive_int,
                               resolve_device)
from otgen.diffusion.denoisers import MLPDenoiser
from otgen.diffusion.schedules import BETA_SCHEDULES, DDIMScheduler, DDPMScheduler
from otgen.diffusion.training import _check_seed, sample, train_denoiser
from otgen.diffusion.transformer import DiTDenoiser

_DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50}
DENOISERS = ("mlp", "dit")


class LatentDiffusion:
    """DDPM / DDIM generative model of latent codes ``Y`` (N, d) with an MLP or transformer denoiser.

    The codes are standardised per coordinate, ``z = (y - mean_) / scale_``; an
    epsilon-prediction denoiser is trained on ``z`` with the loss

    .. math:: \\mathbb E \\| \\varepsilon - \\varepsilon_\\theta(\\sqrt{\\bar\\alpha_t} z + \\sqrt{1 - \\bar\\alpha_t}\\varepsilon, t) \\|^2

    [1]_, and samples are drawn with the ancestral DDPM sampler [1]_ or DDIM [2]_,
    then mapped back, ``y = mean_ + scale_ * z`` (latent diffusion [3]_).

    Parameters
    ----------
    hidden, depth, time_embed_dim : int, default 128, 3, 64
        Width, number of blocks and time-embedding size of the denoiser: residual blocks of
        the :class:`MLPDenoiser`, or transformer blocks of the :class:`DiTDenoiser`
        (``hidden`` is then the token width, divisible by ``heads``).
    denoiser : {"mlp", "dit"}, default "mlp"
        ``"mlp"``: residual MLP on the flat code. ``"dit"``: diffusion transformer with
        adaLN-Zero [4]_ over the code read as ``n_tokens`` tokens of ``d / n_tokens``
        channels (row-major, the layout of :meth:`VideoAutoencoder.encode`).
    n_tokens : int or None, default None
        Number of latent tokens for ``denoiser="dit"``; must divide ``d``. ``None``: one
        token per coordinate (``d`` tokens of 1 channel). Ignored by ``"mlp"``.
    heads, mlp_ratio : int, default 4, 2
        Attention heads and MLP width (in multiples of ``hidden``) of the DiT blocks.
    n_steps : int, default 10000
        Training steps (mini-batches).
    batch_size : int, default 256
    lr : float, default 2e-3
        Peak learning rate (AdamW, warm-up then cosine decay).
    ema : float or None, default 0.999
        EMA decay of the weights used for sampling.
    schedule : {"linear", "cosine"}, default "cosine"
        Beta schedule.
    num_train_timesteps : int, default 1000
    clip_sample : bool, default True
        The samplers clip the predicted ``x_0`` (standardised) to ``[-r, r]``, with ``r``
        the largest ``|z|`` of the training codes (``clip_range_``). This bounds the
        amplification of the denoiser's errors at high noise, as Ho et al. clip images
        to [-1, 1] [1]_.
    device : str or torch.device, optional
        ``None``: CUDA when available, else CPU.
    seed : int, default 0
        Seeds the network initialisation and the training draws.
    verbose : bool, default True
        Progress bars.

    Attributes
    ----------
    model_ : MLPDenoiser or DiTDenoiser
        Trained denoiser (EMA weights) on ``device_``.
    mean_, scale_ : torch.Tensor of shape (d,)
        Standardisation of the codes.
    history_ : dict
        ``{"loss": [...]}``, the training loss per step.
    clip_range_ : float or None
        Clipping range of the predicted ``x_0`` (``None`` without ``clip_sample``).
    n_features_in_ : int
    device_ : torch.device

    Notes
    -----
    The defaults train to convergence on ~4,000 codes of dimension 8-16 in
    about 1.5 minutes on one CPU core (about 9 ms per step): on a 12-d mixture of
    10 low-rank Gaussians, 10,000 steps bring the mean log-density of DDPM samples
    to that of held-out data (-7.92 vs -7.89), where 4,000 steps reach -9.0.
    Sampling 1,000 DDPM steps costs 1,000 network calls per batch; DDIM with
    50 steps is 20 times cheaper but less accurate.

    The transformer is much more expensive per step on a CPU: with the defaults
    (``hidden=128, depth=3, mlp_ratio=2``, 0.75 M parameters) on 4 tokens x 4 channels a
    step of batch 256 takes 60-90 ms on one core, against about 9 ms for the MLP; it
    pays off on a GPU or for longer token sequences.
    """

    def __init__(self, hidden: int = 128, depth: int = 3, time_embed_dim: int = 64, n_steps: int = 10000,
                 batch_size: int = 256, lr: float = 2e-3, ema: float | None = 0.999, schedule: str = "cosine",
                 num_train_timesteps: int = 1000, clip_sample: bool = True, denoiser: str = "mlp",
                 n_tokens: int | None = None, heads: int = 4, mlp_ratio: int = 2, device=None, seed: int = 0,
                 verbose: bool = True):
        self.hidden, self.depth, self.time_embed_dim = hidden, depth, time_embed_dim
        self.denoiser, self.n_tokens, self.heads, self.mlp_ratio = denoiser, n_tokens, heads, mlp_ratio
        self.n_steps, self.batch_size, self.lr, self.ema = n_steps, batch_size, lr, ema
        self.schedule, self.num_train_timesteps, self.clip_sample = schedule, num_train_timesteps, clip_sample
        self.device, self.seed, self.verbose = device, seed, verbose

    _PARAMS = ("hidden", "depth", "time_embed_dim", "n_steps", "batch_size", "lr", "ema", "schedule",
               "num_train_timesteps", "clip_sample", "denoiser", "n_tokens", "heads", "mlp_ratio", "device", "seed",
               "verbose")

    def get_params(self) -> dict:
        """Constructor arguments."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def __repr__(self):
        return f"LatentDiffusion({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def _check_params(self):
        for name in ("hidden", "depth", "n_steps", "batch_size", "num_train_timesteps"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.time_embed_dim, "time_embed_dim", minimum=2)
        check_positive_float(self.lr, "lr")
        check_choice(self.schedule, "schedule", BETA_SCHEDULES)
        check_choice(self.denoiser, "denoiser", DENOISERS)
        if self.denoiser == "dit":
            check_positive_int(self.heads, "heads")
            check_positive_int(self.mlp_ratio, "mlp_ratio")
            if self.n_tokens is not None:
                check_positive_int(self.n_tokens, "n_tokens")
            if self.hidden % self.heads:
                raise ValueError(f"hidden must be divisible by heads for denoiser='dit', got hidden={self.hidden} "
                                 f"and heads={self.heads}")
        if not isinstance(self.clip_sample, bool):
            raise TypeError(f"clip_sample must be True or False, got {self.clip_sample!r}")
        _check_seed(self.seed)

    def _schedule_config(self) -> dict:
        clip = getattr(self, "clip_range_", None)
        return dict(num_train_timesteps=self.num_train_timesteps, beta_schedule=self.schedule, clip_sample=clip)

    def _token_layout(self, d: int) -> tuple[int, int]:
        """(n_tokens, token_dim) with n_tokens * token_dim == d, for the DiT."""
        n = d if self.n_tokens is None else self.n_tokens
        if d % n:
            raise ValueError(f"denoiser='dit' views the codes as n_tokens tokens, so n_tokens must divide the code "
                             f"dimension d; got n_tokens={n} and d={d}")
        return n, d // n

    def _make_denoiser(self, d: int):
        if self.denoiser == "dit":
            n, k = self._token_layout(d)
            return DiTDenoiser(n, k, width=self.hidden, depth=self.depth, heads=self.heads,
                               mlp_ratio=self.mlp_ratio, time_embed_dim=self.time_embed_dim)
        return MLPDenoiser(d, self.hidden, self.depth, self.time_embed_dim)

    def _build(self, d: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self._make_denoiser(d)

    def fit(self, Y) -> "LatentDiffusion":
        """Train the denoiser on the latent codes.

        Parameters
        ----------
        Y : array-like of shape (N, d)
            Latent codes (numpy or torch), finite, N >= 2.

        Returns
        -------
        self
        """
        self._check_params()
        Y = as_tensor(Y, "Y", ndim=2, min_rows=2, device="cpu")         # (N, d)
        if self.denoiser == "dit":
            self._token_layout(Y.shape[1])
        self.device_ = resolve_device(self.device)
        self.n_features_in_ = Y.shape[1]
        self.mean_ = Y.mean(0)                                          # (d,)
        scale = Y.std(0)
        self.scale_ = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
        Z = (Y - self.mean_) / self.scale_                              # (N, d)
        self.clip_range_ = float(Z.abs().max()) if self.clip_sample else None
        self.model_ = self._build(Y.shape[1])
        schedule = DDPMScheduler(**self._schedule_config())
        self.history_ = train_denoiser(self.model_, Z, schedule, n_steps=self.n_steps, batch_size=self.batch_size,
                                       lr=self.lr, ema=self.ema, device=self.device_, seed=self.seed,
                                       verbose=self.verbose)
        return self

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise RuntimeError("this LatentDiffusion is not fitted yet; call fit(Y) first")

    def sample(self, n: int, method: str = "ddpm", num_inference_steps: int | None = None, seed: int = 0,
               eta: float = 0.0, batch_size: int | None = None) -> torch.Tensor:
        """Draw ``n`` latent codes.

        Parameters
        ----------
        n : int
            Number of samples.
        method : {"ddpm", "ddim"}, default "ddpm"
            Ancestral DDPM sampler or DDIM.
        num_inference_steps : int, optional
            Default 1000 for DDPM (at most ``num_train_timesteps``), 50 for DDIM.
        seed : int, default 0
            Seeds the start noise and the sampler noise (same samples on every device).
        eta : float, default 0.0
            DDIM stochasticity (``method="ddim"`` only).
        batch_size : int, optional
            Samples per model call (default all ``n``).

        Returns
        -------
        torch.Tensor of shape (n, d), float32, on the CPU.
        """
        self._check_fitted()
        check_choice(method, "method", tuple(_DEFAULT_STEPS))
        if num_inference_steps is None:
            num_inference_steps = min(_DEFAULT_STEPS[method], self.num_train_timesteps)
        if method == "ddim":
            scheduler = DDIMScheduler(**self._schedule_config(), eta=eta)
        else:
            if eta != 0.0:
                raise ValueError(f"eta is a DDIM setting; use method='ddim' (got method='ddpm', eta={eta!r})")
            scheduler = DDPMScheduler(**self._schedule_config())
        Z = sample(self.model_, scheduler, n, (self.n_features_in_,), num_inference_steps=num_inference_steps,
                   seed=seed, device=self.device_, batch_size=batch_size, verbose=self.verbose)
        return (Z.cpu() * self.scale_ + self.mean_).contiguous()

    def save(self, path) -> None:
        """Write the settings, weights and standardisation to ``path`` (``torch.save``)."""
        self._check_fitted()
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        params = self.get_params()
        params["device"] = None if params["device"] is None else str(params["device"])
        state = {k: v.detach().cpu() for k, v in self.model_.state_dict().items()}
        torch.save({"format": "otgen.LatentDiffusion/1", "params": params, "state_dict": state,
                    "n_features_in": self.n_features_in_, "clip_range": self.clip_range_, "mean": self.mean_, "scale": self.scale_,
                    "history": self.history_}, path)

    @classmethod
    def load(cls, path, device=None) -> "LatentDiffusion":
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
        device : str or torch.device, optional
            Where to put the model (``None``: CUDA when available, else CPU).
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or ckpt.get("format") != "otgen.LatentDiffusion/1":
            raise ValueError(f"{path!s} is not a LatentDiffusion checkpoint written by LatentDiffusion.save")
        est = cls(**{**ckpt["params"], "device": device})
        est.device_ = resolve_device(device)
        est.n_features_in_ = int(ckpt["n_features_in"])
        est.clip_range_ = ckpt["clip_range"]
        est.mean_, est.scale_, est.history_ = ckpt["mean"], ckpt["scale"], ckpt["history"]
        est.model_ = est._make_denoiser(est.n_features_in_)
        est.model_.load_state_dict(ckpt["state_dict"])
        est.model_.to(est.device_).eval()
        return est
