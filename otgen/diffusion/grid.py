"""Latent diffusion over a latent video with a space-time diffusion transformer (Sora-style).

:class:`GridLatentDiffusion` is :class:`~otgen.diffusion.LatentDiffusion` whose denoiser is
a :class:`~otgen.diffusion.transformer.SpaceTimeDiT`: the code (N, d) is read as latent
videos (T', C', H', W') with ``d = T' C' H' W'``, cut into space-time patches, and denoised
by self-attention over the patches with their (frame, row, column) positions [1]_ [2]_.
Training, sampling (DDPM / DDIM), the shared :class:`~otgen.latent.LatentSpace` and the file
format are those of :class:`~otgen.diffusion.LatentDiffusion`.

References
----------
.. [1] W. Peebles, S. Xie. Scalable Diffusion Models with Transformers. ICCV 2023.
.. [2] T. Brooks et al. Video generation models as world simulators. OpenAI technical report, 2024.
"""

from __future__ import annotations

import math

from otgen.diffusion.latent import LatentDiffusion
from otgen.diffusion.transformer import SpaceTimeDiT

__all__ = ["GridLatentDiffusion"]


class GridLatentDiffusion(LatentDiffusion):
    """DDPM / DDIM over latent videos with a :class:`SpaceTimeDiT` denoiser.

    Parameters
    ----------
    latent_shape : tuple (T', C', H', W')
        Shape of one latent video; the codes have ``T' C' H' W'`` numbers in that order (the
        layout of :meth:`otgen.autoencoder.GridVideoAutoencoder.encode`).
    patch : int or tuple (t, p, q), default (2, 4, 4)
        Latent cells per transformer token (must divide (T', H', W')).
    hidden : int, default 64
        Token width of the transformer (divisible by ``heads``).
    depth : int, default 3
        Transformer blocks.
    time_embed_dim : int, default 64
    n_steps : int, default 4000
        Training steps.
    batch_size : int, default 128
    lr : float, default 2e-3
    ema : float or None, default 0.999
    schedule : {"linear", "cosine"}, default "cosine"
    num_train_timesteps : int, default 1000
    clip_sample : bool, default True
    heads : int, default 4
    mlp_ratio : int, default 2
    latent : LatentSpace or None, default None
    device : str or torch.device or None, default None
    seed : int, default 0
    verbose : bool, default False
        As in :class:`~otgen.diffusion.LatentDiffusion`.

    Attributes
    ----------
    As :class:`~otgen.diffusion.LatentDiffusion`; ``model_`` is a :class:`SpaceTimeDiT`.
    """

    def __init__(self, latent_shape=(8, 4, 8, 8), patch=(2, 4, 4), hidden: int = 64, depth: int = 3,
                 time_embed_dim: int = 64, n_steps: int = 4000, batch_size: int = 128, lr: float = 2e-3,
                 ema: float | None = 0.999, schedule: str = "cosine", num_train_timesteps: int = 1000,
                 clip_sample: bool = True, heads: int = 4, mlp_ratio: int = 2, latent=None, device=None,
                 seed: int = 0, verbose: bool = False):
        super().__init__(hidden=hidden, depth=depth, time_embed_dim=time_embed_dim, n_steps=n_steps,
                         batch_size=batch_size, lr=lr, ema=ema, schedule=schedule,
                         num_train_timesteps=num_train_timesteps, clip_sample=clip_sample, denoiser="dit",
                         n_tokens=None, heads=heads, mlp_ratio=mlp_ratio, latent=latent, device=device, seed=seed,
                         verbose=verbose)
        self.latent_shape = latent_shape                 # denoiser = "dit", n_tokens = None: fixed, not settings
        self.patch = patch

    def _make_denoiser(self, d: int):
        shape = tuple(self.latent_shape)
        if math.prod(shape) != d:
            raise ValueError(f"latent_shape {shape} has {math.prod(shape)} numbers, but the codes have d = {d}")
        return SpaceTimeDiT(shape, self.patch, width=self.hidden, depth=self.depth, heads=self.heads,
                            mlp_ratio=self.mlp_ratio, time_embed_dim=self.time_embed_dim)
