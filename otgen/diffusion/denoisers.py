"""Noise-prediction networks ``eps_theta(x_t, t)``.

Every denoiser follows one contract, which is all the trainer and samplers
assume: ``model(x_t, t) -> eps`` with ``x_t`` of shape (B, ...), integer
timesteps ``t`` of shape (B,) (or a scalar), and ``eps`` of the shape of ``x_t``.
A denoiser also exposes ``config`` (its constructor arguments) so it can be
rebuilt from a checkpoint.

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel. Denoising Diffusion Probabilistic Models. NeurIPS 2020.
.. [2] A. Vaswani et al. Attention Is All You Need. NeurIPS 2017 (sinusoidal embedding).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from otgen._validation import check_positive_int

__all__ = ["sinusoidal_embedding", "MLPDenoiser"]


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps [2]_.

    .. math:: e(t) = [\\cos(t \\omega_0), ..., \\cos(t \\omega_{h-1}), \\sin(t \\omega_0), ..., \\sin(t \\omega_{h-1})],
              \\quad \\omega_k = \\text{max\\_period}^{-k / h},\\ h = \\lfloor \\text{dim} / 2 \\rfloor

    (zero-padded to ``dim`` when ``dim`` is odd).

    Parameters
    ----------
    t : torch.Tensor of shape (B,)
    dim : int

    Returns
    -------
    torch.Tensor of shape (B, dim), float32
    """
    dim = check_positive_int(dim, "dim")
    if not isinstance(t, torch.Tensor) or t.ndim != 1:
        raise ValueError(f"t must be a 1-d tensor of shape (B,), got {getattr(t, 'shape', type(t).__name__)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    args = t.float()[:, None] * freqs[None]                                # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)             # (B, 2 half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


def check_timesteps(t, batch: int, device) -> torch.Tensor:
    """Scalar or (B,) timesteps -> (B,) tensor on ``device``."""
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        t = torch.tensor(t)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be an int or a tensor of timesteps, got {type(t).__name__}")
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape ({batch},), got shape {tuple(t.shape)}")
    return t.to(device)


class _ResBlock(nn.Module):
    """Pre-norm residual MLP block with an additive time embedding."""

    def __init__(self, hidden: int, temb: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.time = nn.Linear(temb, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h, temb):                                # (B, H), (B, E)
        z = self.fc1(self.norm(h)) + self.time(temb)
        return h + self.fc2(nn.functional.silu(z))


class MLPDenoiser(nn.Module):
    """Residual MLP noise predictor for flat latent vectors.

    .. math:: \\varepsilon_\\theta(x, t) = W_{out}\\, \\mathrm{SiLU}(h_L),\\quad
              h_{l+1} = h_l + W_2^l\\, \\mathrm{SiLU}(W_1^l \\mathrm{LN}(h_l) + V^l \\tau(t)),\\quad h_0 = W_{in} x,

    with ``tau(t)`` an MLP of the sinusoidal embedding of ``t``. There is no norm
    before the output layer, so the output can scale with ``x``: at high noise
    the optimal output is ``eps ~ x_t``, and the sampler amplifies its errors there
    by up to ``sqrt((1 - abar_t) / abar_t)``.

    Parameters
    ----------
    dim : int
        Data dimension ``d``.
    hidden : int, default 256
        Width of the residual stream.
    depth : int, default 3
        Number of residual blocks.
    time_embed_dim : int, default 64
        Size of the sinusoidal timestep embedding.

    Notes
    -----
    ``forward(x, t)``: ``x`` of shape (B, dim), ``t`` integer timesteps of shape
    (B,) or a scalar; returns the predicted noise, shape (B, dim).
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, time_embed_dim: int = 64):
        super().__init__()
        self.config = dict(dim=check_positive_int(dim, "dim"), hidden=check_positive_int(hidden, "hidden"),
                           depth=check_positive_int(depth, "depth"),
                           time_embed_dim=check_positive_int(time_embed_dim, "time_embed_dim", minimum=2))
        self.dim, self.time_embed_dim = dim, time_embed_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_embed_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList([_ResBlock(hidden, hidden) for _ in range(depth)])
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        t = check_timesteps(t, x.shape[0], x.device)                     # (B,)
        temb = self.time_mlp(sinusoidal_embedding(t, self.time_embed_dim).to(x.dtype))  # (B, H)
        h = self.inp(x)                                                    # (B, H)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(nn.functional.silu(h))                             # (B, dim)
