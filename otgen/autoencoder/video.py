"""A small transformer autoencoder for video clips on space-time tokens.

A clip (T, C, H, W) is cut into space-time patches (:func:`otgen.tokens.patchify`),
encoded by a transformer, and pooled into ``latent_tokens`` latent tokens of
``token_dim`` channels each: the clip's code is the flat vector of
``latent_dim = latent_tokens * token_dim`` numbers, ordered (latent token, channel).
This is the "compress the video, then work on latent tokens" design of Sora [1]_,
at toy scale; a :class:`otgen.diffusion.transformer.DiTDenoiser` with
``n_tokens=latent_tokens, token_dim=token_dim`` denoises these codes as tokens, and
the semi-discrete OT map transports to them as plain vectors.

``SpaceTimeAutoencoder`` is the torch module; ``VideoAutoencoder`` wraps it as a
scikit-learn-style estimator (``fit`` / ``encode`` / ``decode`` / ``save`` / ``load``).
Outputs follow the input's kind: numpy in -> numpy out, torch in -> torch out.

References
----------
.. [1] T. Brooks et al. Video generation models as world simulators. OpenAI technical report, 2024.
.. [2] A. Arnab et al. ViViT: A Video Vision Transformer. ICCV 2021 (tubelet embedding).
.. [3] A. Jaegle et al. Perceiver: General Perception with Iterative Attention. ICML 2021 (latent queries).
.. [4] K. He et al. Masked Autoencoders Are Scalable Vision Learners. CVPR 2022 (token decoder).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn as nn

from otgen._persistence import load_estimator, save_estimator
from otgen._validation import as_tensor, check_choice, check_positive_float, check_positive_int, resolve_device
from otgen.autoencoder.image import _like
from otgen.autoencoder.training import LOSSES, batched_apply, train_autoencoder
from otgen.tokens import patchify, positional_embedding, token_grid, unpatchify

_BATCH = 256  # clips per inference chunk


def _check_clips(clips, clip_shape=None, name: str = "clips") -> torch.Tensor:
    """Validate clips (n, T, C, H, W) with values in [0, 1] -> float32 on CPU (optionally of a given clip shape)."""
    if isinstance(clips, (np.ndarray, torch.Tensor)) and clips.dtype in (np.uint8, torch.uint8):
        raise TypeError(f"{name} must be floats in [0, 1], got uint8 pixels; divide by 255 first")
    x = as_tensor(clips, name)
    if x.ndim != 5:
        raise ValueError(f"{name} must have shape (n, T, C, H, W), got shape {tuple(x.shape)}")
    if clip_shape is not None and tuple(x.shape[1:]) != tuple(clip_shape):
        raise ValueError(f"{name} must have shape (n, {', '.join(map(str, clip_shape))}) (the clip shape "
                         f"(T, C, H, W) of this autoencoder), got shape {tuple(x.shape)}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{name} must have pixel values in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return x


class _Block(nn.Module):
    """Pre-norm transformer block: ``h <- h + Attn(LN(h))``, ``h <- h + MLP(LN(h))`` [2]_."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, h):                                                  # (B, N, W)
        x = self.norm1(h)
        h = h + self.attn(x, x, x, need_weights=False)[0]
        return h + self.mlp(self.norm2(h))


class _QueryPool(nn.Module):
    """Cross-attention pooling of N tokens into L learned query tokens (Perceiver [3]_).

    ``q <- q + Attn(LN(q), LN(h), LN(h))``, ``q <- q + MLP(LN(q))``: each latent token is a
    learned, content-dependent weighted average of the token sequence, so the pooled code
    does not depend on where in the sequence (which frames, which patches) the content is,
    only on what the queries attend to.
    """

    def __init__(self, n_queries: int, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.queries = nn.Parameter(0.02 * torch.randn(n_queries, width))
        self.norm_q, self.norm_kv = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, h):                                                  # (B, N, W)
        q = self.queries.expand(h.shape[0], -1, -1)                        # (B, L, W)
        kv = self.norm_kv(h)
        q = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]   # (B, L, W)
        return q + self.mlp(self.norm2(q))


class SpaceTimeAutoencoder(nn.Module):
    r"""Transformer autoencoder :math:`x \mapsto D(E(x))` on space-time tokens.

    Encoder :math:`E`: tokens :math:`s = \mathrm{patchify}(x) \in \mathbb R^{N \times P}`,
    :math:`h^0 = s W_{in} + p` (positions :math:`p` a learned projection of the factorised
    sinusoidal embedding of the tubelet coordinates), ``depth`` pre-norm transformer
    blocks, cross-attention pooling into ``latent_tokens`` learned queries
    (Perceiver [3]_), then a linear map of each to ``token_dim`` channels:
    :math:`z \in \mathbb R^{L \times k}`, flattened to :math:`L k` numbers.

    Decoder :math:`D`: the latent tokens are embedded (plus a learned position each) and
    appended to N learned output queries (plus the projected tubelet positions);
    ``depth`` transformer blocks run over the N + L tokens, the N query outputs are mapped
    linearly to P values and put back by :func:`otgen.tokens.unpatchify` (MAE-style
    decoder [4]_), with a sigmoid when ``sigmoid=True``.

    Parameters
    ----------
    clip_shape : tuple (T, C, H, W)
    tubelet : int or tuple (t, p, q), default (4, 8, 8)
        Must divide (T, H, W).
    latent_tokens, token_dim : int, default 4, 4
        Code of ``latent_tokens`` x ``token_dim`` numbers.
    width, depth, heads, mlp_ratio : int, default 128, 2, 4, 2
        Token width, transformer blocks in the encoder and in the decoder, attention
        heads (dividing ``width``), MLP width in multiples of ``width``.
    sigmoid : bool, default True
        Squash the output into [0, 1] (for the binary cross-entropy loss).
    """

    def __init__(self, clip_shape, tubelet=(4, 8, 8), latent_tokens: int = 4, token_dim: int = 4, width: int = 128,
                 depth: int = 2, heads: int = 4, mlp_ratio: int = 2, sigmoid: bool = True):
        super().__init__()
        T, C, H, W = clip_shape
        self.clip_shape, self.tubelet = tuple(clip_shape), tubelet
        grid = token_grid(self.clip_shape, tubelet)                        # (T/t, H/p, W/q)
        self.n_tokens = math.prod(grid)
        self.patch_dim = (T * C * H * W) // self.n_tokens                   # P = t C p q
        self.latent_tokens = check_positive_int(latent_tokens, "latent_tokens")
        self.token_dim = check_positive_int(token_dim, "token_dim")
        self.latent_dim = latent_tokens * token_dim
        for v, name in ((width, "width"), (depth, "depth"), (heads, "heads"), (mlp_ratio, "mlp_ratio")):
            check_positive_int(v, name)
        if width % heads:
            raise ValueError(f"width must be divisible by heads, got width={width} and heads={heads}")
        self.sigmoid = sigmoid
        N, P, L = self.n_tokens, self.patch_dim, latent_tokens
        d_pos = 6 * math.ceil(width / 6)                                   # positional_embedding needs 6 | dim
        self.register_buffer("pos", positional_embedding(self.clip_shape, tubelet, d_pos), persistent=False)  # (N, d_pos)
        # encoder
        self.embed = nn.Linear(P, width)
        self.enc_pos = nn.Linear(d_pos, width, bias=False)
        self.enc_blocks = nn.ModuleList([_Block(width, heads, mlp_ratio) for _ in range(depth)])
        self.pool = _QueryPool(L, width, heads, mlp_ratio)
        self.to_latent = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, token_dim))
        # decoder
        self.from_latent = nn.Linear(token_dim, width)
        self.latent_pos = nn.Parameter(0.02 * torch.randn(L, width))
        self.out_queries = nn.Parameter(0.02 * torch.randn(N, width))
        self.code_to_queries = nn.Linear(self.latent_dim, width)
        self.dec_pos = nn.Linear(d_pos, width, bias=False)
        self.dec_blocks = nn.ModuleList([_Block(width, heads, mlp_ratio) for _ in range(depth)])
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, P))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, latent_tokens * token_dim), ordered (latent token, channel)."""
        h = self.embed(patchify(x, self.tubelet)) + self.enc_pos(self.pos)  # (B, N, W)
        for block in self.enc_blocks:
            h = block(h)
        z = self.to_latent(self.pool(h))                                    # (B, L, k)
        return z.flatten(1)                                                 # (B, L k)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_tokens * token_dim) -> (B, T, C, H, W) (in [0, 1] with ``sigmoid``)."""
        B, N = z.shape[0], self.n_tokens
        lat = self.from_latent(z.view(B, self.latent_tokens, self.token_dim)) + self.latent_pos  # (B, L, W)
        q = self.out_queries + self.dec_pos(self.pos) + self.code_to_queries(z)[:, None]  # (B, N, W)
        h = torch.cat([q, lat], dim=1)                                      # (B, N + L, W)
        for block in self.dec_blocks:
            h = block(h)
        out = self.head(h[:, :N])                                           # (B, N, P)
        if self.sigmoid:
            out = torch.sigmoid(out)
        return unpatchify(out, self.clip_shape, self.tubelet)              # (B, T, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class VideoAutoencoder:
    r"""Estimator wrapper: fit a :class:`SpaceTimeAutoencoder` on clips, then encode / decode.

    ``fit`` minimises the mean element-wise reconstruction loss between
    :math:`D(E(x))` and :math:`x` with Adam and a cosine learning-rate decay
    (:func:`otgen.autoencoder.training.train_autoencoder`). A clip's code is
    :math:`z \in \mathbb R^{L k}` with ``L = latent_tokens`` tokens of ``k = token_dim``
    channels (token ``i`` is ``z[i * k:(i + 1) * k]``), so a transformer denoiser can
    read it as tokens: ``DiTDenoiser(n_tokens=latent_tokens, token_dim=token_dim)`` or
    ``LatentDiffusion(denoiser="dit", n_tokens=latent_tokens)``.

    With the defaults, fitting 2,000 moving-digit clips of 16 x 1 x 32 x 32 takes about
    two minutes on two CPU cores (see the project's report for measured errors).

    Parameters
    ----------
    latent_tokens, token_dim : int, default 4, 4
        Code of ``latent_dim_ = latent_tokens * token_dim`` numbers.
    tubelet : int or tuple (t, p, q), default (4, 8, 8)
        Space-time patch size; must divide (T, H, W) of the clips.
    width, depth, heads, mlp_ratio : int, default 128, 2, 4, 2
        Network size (see :class:`SpaceTimeAutoencoder`).
    epochs, batch_size : int, default 12, 32
    lr, weight_decay : float, default 1e-3, 0.0
    loss : {"bce", "mse"}, default "bce"
        ``"bce"`` puts a sigmoid on the output (reconstructions in [0, 1]); ``"mse"`` a
        linear output.
    clip_shape : tuple (T, C, H, W) or None, default None
        Shape of one clip; ``None`` takes it from the data at ``fit``. A loaded model
        holds the shape it was fitted on.
    device : str or torch.device, optional
        ``None``: CUDA when available, else CPU.
    seed : int
        Seeds the weight initialisation and the shuffling.
    verbose : bool
        Show a progress bar during ``fit``.

    Attributes
    ----------
    model_ : SpaceTimeAutoencoder
        The trained network (in eval mode).
    clip_shape_ : tuple (T, C, H, W)
    latent_dim_ : int
        ``latent_tokens * token_dim``.
    latent_shape_ : tuple (latent_tokens, token_dim)
        The token view of a code.
    history_ : dict
        Per-epoch ``"loss"``, per-step ``"step_loss"``, cumulative ``"time"`` (s).
    """

    def __init__(self, latent_tokens: int = 4, token_dim: int = 4, tubelet=(4, 8, 8), width: int = 128,
                 depth: int = 2, heads: int = 4, mlp_ratio: int = 2, epochs: int = 12, batch_size: int = 32,
                 lr: float = 1e-3, weight_decay: float = 0.0, loss: str = "bce", clip_shape=None, device=None,
                 seed: int = 0, verbose: bool = True):
        self.latent_tokens = latent_tokens
        self.token_dim = token_dim
        self.tubelet = tubelet
        self.width = width
        self.depth = depth
        self.heads = heads
        self.mlp_ratio = mlp_ratio
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.loss = loss
        self.clip_shape = clip_shape
        self.device = device
        self.seed = seed
        self.verbose = verbose

    # -- settings ------------------------------------------------------------------
    _SETTINGS = ("latent_tokens", "token_dim", "tubelet", "width", "depth", "heads", "mlp_ratio", "epochs",
                 "batch_size", "lr", "weight_decay", "loss", "clip_shape", "seed")

    def _build(self, clip_shape) -> SpaceTimeAutoencoder:
        return SpaceTimeAutoencoder(clip_shape, self.tubelet, self.latent_tokens, self.token_dim, width=self.width,
                                    depth=self.depth, heads=self.heads, mlp_ratio=self.mlp_ratio,
                                    sigmoid=self.loss == "bce")

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise RuntimeError("this VideoAutoencoder is not fitted yet; call fit(clips) first")

    @property
    def latent_dim_(self) -> int:
        self._check_fitted()
        return self.model_.latent_dim

    @property
    def latent_shape_(self) -> tuple:
        self._check_fitted()
        return (self.model_.latent_tokens, self.model_.token_dim)

    # -- fit -----------------------------------------------------------------------
    def fit(self, clips) -> "VideoAutoencoder":
        """Train on ``clips`` of shape (n, T, C, H, W) with values in [0, 1]; returns self."""
        check_choice(self.loss, "loss", LOSSES)
        check_positive_float(self.lr, "lr")
        seed = check_positive_int(self.seed, "seed", minimum=0)
        x = _check_clips(clips, self.clip_shape)
        clip_shape = tuple(int(s) for s in x.shape[1:])
        token_grid(clip_shape, self.tubelet)                                # tubelet must divide (T, H, W)
        dev = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._build(clip_shape)
        self.history_ = train_autoencoder(model, x, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                          weight_decay=self.weight_decay, loss=self.loss, device=dev, seed=seed,
                                          verbose=self.verbose, desc="fit video autoencoder")
        self.model_ = model
        self.clip_shape_ = clip_shape
        return self

    # -- inference -----------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.model_.parameters()).device

    def encode(self, clips):
        """Latent codes of ``clips`` (n, T, C, H, W) -> (n, latent_dim_), ordered (latent token, channel)."""
        self._check_fitted()
        x = _check_clips(clips, self.clip_shape_)
        z = batched_apply(self.model_.encode, x, batch_size=_BATCH, device=self._device())
        return _like(z, clips)

    def decode(self, codes):
        """Clips from latent codes (n, latent_dim_) or (n, latent_tokens, token_dim) -> (n, T, C, H, W)."""
        self._check_fitted()
        z = as_tensor(codes, "codes")
        d, (L, k) = self.latent_dim_, self.latent_shape_
        if not ((z.ndim == 2 and z.shape[1] == d) or (z.ndim == 3 and tuple(z.shape[1:]) == (L, k))):
            raise ValueError(f"codes must have shape (n, {d}) or (n, {L}, {k}), got shape {tuple(z.shape)}")
        x = batched_apply(self.model_.decode, z.reshape(-1, d), batch_size=_BATCH, device=self._device())
        return _like(x, codes)

    def reconstruct(self, clips):
        """``decode(encode(clips))`` -> (n, T, C, H, W)."""
        self._check_fitted()
        x = _check_clips(clips, self.clip_shape_)
        out = batched_apply(self.model_, x, batch_size=_BATCH, device=self._device())
        return _like(out, clips)

    def reconstruction_error(self, clips, per_clip: bool = False):
        r"""Mean squared pixel error :math:`\frac{1}{TCHW}\|D(E(x)) - x\|^2`.

        Returns a float (mean over clips) or, with ``per_clip=True``, an (n,) numpy array.
        """
        self._check_fitted()
        x = _check_clips(clips, self.clip_shape_)
        err = ((torch.as_tensor(self.reconstruct(x)) - x) ** 2).flatten(1).mean(1)  # (n,)
        return err.numpy() if per_clip else float(err.mean())

    # -- persistence ---------------------------------------------------------------
    def save(self, path) -> None:
        """Write settings (with the fitted clip shape), weights and history to ``path`` (a torch file)."""
        self._check_fitted()
        est = copy.copy(self)
        est.clip_shape = self.clip_shape_
        save_estimator(est, path)

    @classmethod
    def load(cls, path, device=None, verbose: bool = True) -> "VideoAutoencoder":
        """Read a video autoencoder written by :meth:`save` (onto ``device``)."""
        est = load_estimator(cls, path, lambda e: e._build(e.clip_shape), device=device, verbose=verbose)
        est.clip_shape_ = tuple(est.clip_shape)
        return est
