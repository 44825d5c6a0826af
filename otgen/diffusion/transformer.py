"""A small diffusion transformer (DiT) over latent tokens, the Sora-style denoiser.

Sora compresses a video to a latent space, cuts the latent into space-time
patches ("tokens") and denoises the token sequence with a transformer whose
layer norms are modulated by the diffusion timestep [1]_ [2]_. Here the
tokens are the ``latent_tokens`` x ``token_dim`` codes of
:class:`otgen.autoencoder.VideoAutoencoder` (or any latent vector viewed as
``n_tokens`` tokens), so :class:`DiTDenoiser` follows the same contract as
:class:`otgen.diffusion.MLPDenoiser`: ``model(x_t, t) -> eps``, usable as is
by :func:`otgen.diffusion.train_denoiser` and :func:`otgen.diffusion.sample`.

References
----------
.. [1] W. Peebles, S. Xie. Scalable Diffusion Models with Transformers. ICCV 2023 (DiT, adaLN-Zero).
.. [2] T. Brooks et al. Video generation models as world simulators. OpenAI technical report, 2024 (Sora).
.. [3] A. Vaswani et al. Attention Is All You Need. NeurIPS 2017.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from otgen._validation import check_positive_int
from otgen.diffusion.denoisers import check_timesteps, sinusoidal_embedding
from otgen.tokens import patchify, positional_embedding, token_grid, unpatchify

__all__ = ["DiTDenoiser", "SpaceTimeDiT"]


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive layer-norm modulation ``x * (1 + scale) + shift``; x (B, N, W), shift/scale (B, 1, W)."""
    return x * (1 + scale) + shift


class _SelfAttention(nn.Module):
    """Multi-head self-attention over the token axis (no mask: every token sees every token)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):                                                   # (B, N, W)
        B, N, W = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, W/h)
        y = F.scaled_dot_product_attention(q, k, v)                         # (B, h, N, W/h)
        return self.proj(y.transpose(1, 2).reshape(B, N, W))                # (B, N, W)


class _DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero conditioning on ``c`` (Peebles & Xie, Fig. 3 [1]_).

    ``h <- h + g1 * Attn(LN(h) (1 + a1) + b1)``, ``h <- h + g2 * MLP(LN(h) (1 + a2) + b2)``,
    with ``(b1, a1, g1, b2, a2, g2) = Linear(SiLU(c))`` initialised to zero, so the block starts
    as the identity.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = _SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, h, c):                                                # (B, N, W), (B, W)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None].chunk(6, dim=2)  # 6 x (B, 1, W)
        h = h + gate1 * self.attn(_modulate(self.norm1(h), shift1, scale1))
        return h + gate2 * self.mlp(_modulate(self.norm2(h), shift2, scale2))


class DiTDenoiser(nn.Module):
    r"""Diffusion transformer noise predictor over a sequence of latent tokens.

    A latent vector :math:`x \in \mathbb R^{n d}` is read as ``n_tokens`` tokens
    :math:`x_1, \dots, x_n \in \mathbb R^{d}` (row-major: token ``i`` is
    ``x[i * d:(i + 1) * d]``, the layout of :meth:`VideoAutoencoder.encode`), then

    .. math::

        h_i^0 = W_{in} x_i + p_i,\qquad c = \tau(t),\qquad
        h^{l+1} = \mathrm{Block}_l(h^l;\ c),\qquad
        \varepsilon_\theta(x, t)_i = W_{out}\big(\mathrm{LN}(h_i^L)(1 + a(c)) + b(c)\big),

    with learned positional embeddings :math:`p_i`, :math:`\tau(t)` an MLP of the
    sinusoidal embedding of ``t``, and each block a pre-norm self-attention + MLP
    block whose layer norms are shifted, scaled and gated by functions of :math:`c`
    (adaLN-Zero, Peebles & Xie [1]_). The gates and the output layer are initialised
    to zero, so the network outputs exactly zero at initialisation and every block
    starts as the identity.

    Parameters
    ----------
    n_tokens : int
        Number of tokens ``n`` per sample.
    token_dim : int
        Channels ``d`` per token.
    width : int, default 128
        Width of the residual stream (divisible by ``heads``).
    depth : int, default 4
        Number of transformer blocks.
    heads : int, default 4
        Attention heads.
    mlp_ratio : int, default 4
        Hidden width of each block's MLP, in multiples of ``width``.
    time_embed_dim : int, default 128
        Size of the sinusoidal timestep embedding.

    Notes
    -----
    ``forward(x, t)``: ``x`` of shape (B, n_tokens * token_dim) (flat latent vectors, as
    in :func:`otgen.diffusion.train_denoiser` and :func:`otgen.diffusion.sample`) or
    (B, n_tokens, token_dim); ``t`` integer timesteps of shape (B,) or a scalar. Returns
    the predicted noise with the shape of ``x``. Without masks the network is
    permutation-equivariant except through the positional embeddings :math:`p_i`.

    References
    ----------
    .. [1] W. Peebles, S. Xie. Scalable Diffusion Models with Transformers. ICCV 2023.
    """

    def __init__(self, n_tokens: int, token_dim: int, width: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: int = 4, time_embed_dim: int = 128):
        super().__init__()
        self.config = dict(n_tokens=check_positive_int(n_tokens, "n_tokens"),
                           token_dim=check_positive_int(token_dim, "token_dim"),
                           width=check_positive_int(width, "width"), depth=check_positive_int(depth, "depth"),
                           heads=check_positive_int(heads, "heads"),
                           mlp_ratio=check_positive_int(mlp_ratio, "mlp_ratio"),
                           time_embed_dim=check_positive_int(time_embed_dim, "time_embed_dim", minimum=2))
        if width % heads:
            raise ValueError(f"width must be divisible by heads, got width={width} and heads={heads}")
        self.n_tokens, self.token_dim, self.time_embed_dim = n_tokens, token_dim, time_embed_dim
        self.dim = n_tokens * token_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_embed_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(token_dim, width)
        self.pos = nn.Parameter(0.02 * torch.randn(n_tokens, width))
        self.blocks = nn.ModuleList([_DiTBlock(width, heads, mlp_ratio) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, token_dim)
        for layer in (self.ada_out[1], self.out):   # adaLN-Zero: the final layer starts at zero
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        n, d = self.n_tokens, self.token_dim
        if not ((x.ndim == 2 and x.shape[1] == n * d) or (x.ndim == 3 and tuple(x.shape[1:]) == (n, d))):
            raise ValueError(f"x must have shape (B, {n * d}) or (B, {n}, {d}), got {tuple(x.shape)}")
        B = x.shape[0]
        t = check_timesteps(t, B, x.device)                                # (B,)
        c = self.time_mlp(sinusoidal_embedding(t, self.time_embed_dim).to(x.dtype))  # (B, W)
        h = self.inp(x.reshape(B, n, d)) + self.pos                         # (B, n, W)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada_out(c)[:, None].chunk(2, dim=2)             # 2 x (B, 1, W)
        eps = self.out(_modulate(self.norm_out(h), shift, scale))           # (B, n, d)
        return eps.reshape(x.shape)


class SpaceTimeDiT(nn.Module):
    r"""Diffusion transformer over the space-time patches of a latent video (Sora's denoiser).

    A latent vector :math:`x \in \mathbb R^{T' C' H' W'}` is read as the latent video
    (T', C', H', W') of :class:`otgen.autoencoder.GridVideoAutoencoder`, cut into
    space-time patches of (t, p, q) latent cells by :func:`otgen.tokens.patchify` (tokens of
    :math:`P = t C' p q` numbers on a grid of :math:`n = (T'/t)(H'/p)(W'/q)` positions), and

    .. math::

        h_i^0 = W_{in} x_i + W_{pos}\, e(\tau_i, \eta_i, \omega_i),\qquad
        h^{l+1} = \mathrm{Block}_l(h^l;\ c),\qquad
        \varepsilon_\theta(x, t)_i = W_{out}\big(\mathrm{LN}(h_i^L)(1 + a(c)) + b(c)\big),

    with :math:`e` the factorised sinusoidal embedding of the patch's (frame, row, column)
    position (:func:`otgen.tokens.positional_embedding`), :math:`c = \tau(t)` the timestep
    embedding and adaLN-Zero blocks as in :class:`DiTDenoiser` [1]_; the predicted noise is
    put back on the grid by :func:`otgen.tokens.unpatchify`. The positions are fixed
    functions of where a patch is in space and time, so attention can relate an object's
    patches across frames (Sora [2]_: "spacetime patches").

    Parameters
    ----------
    latent_shape : tuple (T', C', H', W')
        Shape of the latent video.
    patch : int or tuple (t, p, q), default (2, 4, 4)
        Latent cells per token; must divide (T', H', W').
    width : int, default 64
        Width of the residual stream (divisible by ``heads``).
    depth : int, default 3
        Transformer blocks.
    heads : int, default 4
    mlp_ratio : int, default 2
    time_embed_dim : int, default 64

    Notes
    -----
    ``forward(x, t)`` takes ``x`` of shape (B, T' C' H' W') or (B, T', C', H', W') and
    integer timesteps ``t``; it returns the predicted noise with the shape of ``x``, exactly
    zero at initialisation.
    """

    def __init__(self, latent_shape, patch=(2, 4, 4), width: int = 64, depth: int = 3, heads: int = 4,
                 mlp_ratio: int = 2, time_embed_dim: int = 64):
        super().__init__()
        if not isinstance(latent_shape, (tuple, list)) or len(latent_shape) != 4:
            raise ValueError(f"latent_shape must be a tuple (T', C', H', W'), got {latent_shape!r}")
        self.latent_shape = tuple(check_positive_int(v, "latent_shape") for v in latent_shape)
        self.patch = patch
        self.grid = token_grid(self.latent_shape, patch)                       # (T'/t, H'/p, W'/q)
        for v, name in ((width, "width"), (depth, "depth"), (heads, "heads"), (mlp_ratio, "mlp_ratio")):
            check_positive_int(v, name)
        check_positive_int(time_embed_dim, "time_embed_dim", minimum=2)
        if width % heads:
            raise ValueError(f"width must be divisible by heads, got width={width} and heads={heads}")
        self.n_tokens = math.prod(self.grid)
        self.token_dim = math.prod(self.latent_shape) // self.n_tokens
        self.dim, self.time_embed_dim = math.prod(self.latent_shape), time_embed_dim
        d_pos = 6 * math.ceil(width / 6)                                       # positional_embedding needs 6 | dim
        self.register_buffer("pos", positional_embedding(self.latent_shape, patch, d_pos), persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(time_embed_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(self.token_dim, width)
        self.pos_proj = nn.Linear(d_pos, width, bias=False)
        self.blocks = nn.ModuleList([_DiTBlock(width, heads, mlp_ratio) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, self.token_dim)
        for layer in (self.ada_out[1], self.out):   # adaLN-Zero: the final layer starts at zero
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not ((x.ndim == 2 and x.shape[1] == self.dim) or (x.ndim == 5 and tuple(x.shape[1:]) == self.latent_shape)):
            raise ValueError(f"x must have shape (B, {self.dim}) or (B, {', '.join(map(str, self.latent_shape))}), "
                             f"got {tuple(x.shape)}")
        B = x.shape[0]
        t = check_timesteps(t, B, x.device)                                   # (B,)
        c = self.time_mlp(sinusoidal_embedding(t, self.time_embed_dim).to(x.dtype))  # (B, W)
        h = self.inp(patchify(x.reshape(B, *self.latent_shape), self.patch)) + self.pos_proj(self.pos)  # (B, n, W)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada_out(c)[:, None].chunk(2, dim=2)
        eps = self.out(_modulate(self.norm_out(h), shift, scale))            # (B, n, P)
        return unpatchify(eps, self.latent_shape, self.patch).reshape(x.shape)
