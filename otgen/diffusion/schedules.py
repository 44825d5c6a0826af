"""Noise schedules and samplers for epsilon-prediction diffusion (DDPM, DDIM).

The forward (noising) process of a DDPM [1]_ with variances ``beta_1..beta_T``
has the closed-form marginal

.. math::

    q(x_t \\mid x_0) = \\mathcal N\\big(\\sqrt{\\bar\\alpha_t}\\, x_0,\\ (1 - \\bar\\alpha_t) I\\big),
    \\qquad \\bar\\alpha_t = \\prod_{s \\le t} (1 - \\beta_s).

A sampler walks a decreasing list of timesteps ``t_0 > t_1 > ... > t_{K-1}``
and maps ``x_{t_k}`` to ``x_{t_{k+1}}`` (``bar alpha = 1`` after the last step)
using the model's noise prediction ``eps_theta(x_t, t)``.

Timesteps are 0-based: index ``t`` in ``0..T-1`` holds ``beta[t]`` and
``alphas_cumprod[t] = prod_{s <= t} (1 - beta[s])``.

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel. Denoising Diffusion Probabilistic Models. NeurIPS 2020.
.. [2] J. Song, C. Meng, S. Ermon. Denoising Diffusion Implicit Models. ICLR 2021.
.. [3] A. Nichol, P. Dhariwal. Improved Denoising Diffusion Probabilistic Models. ICML 2021.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
import torch

from otgen._validation import check_choice, check_positive_float, check_positive_int

__all__ = ["NoiseSchedule", "DDPMScheduler", "DDIMScheduler", "SchedulerOutput", "BETA_SCHEDULES"]

BETA_SCHEDULES = ("linear", "cosine")


def _cosine_alpha_bar(u: np.ndarray, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's f(u) = cos^2(pi/2 (u + s) / (1 + s)) for u = t / T in [0, 1]."""
    return np.cos((u + s) / (1 + s) * math.pi / 2) ** 2


class SchedulerOutput(NamedTuple):
    """What ``step(..., return_output=True)`` returns (the fields of diffusers' ``DDPMSchedulerOutput``).

    Attributes
    ----------
    prev_sample : torch.Tensor of shape (B, ...)
        ``x_{prev(t)}``, what ``step`` returns by default.
    pred_original_sample : torch.Tensor of shape (B, ...)
        The predicted clean sample ``x̂_0(x_t, t)`` the step used (clipped when ``clip_sample`` is set).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def seeded_randn(shape, generator, device, dtype) -> torch.Tensor:
    """Standard normal draw from ``generator`` (which may live on another device)."""
    gen_device = generator.device if generator is not None else device
    z = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype)
    return z.to(device)


class NoiseSchedule:
    """Variance schedule of the forward process, shared by the samplers.

    Parameters
    ----------
    num_train_timesteps : int, default 1000
        Number of diffusion steps ``T``.
    beta_schedule : {"linear", "cosine"}, default "linear"
        ``"linear"``: ``beta`` evenly spaced from ``beta_start`` to ``beta_end`` [1]_.
        ``"cosine"``: ``bar alpha_t = f((t + 1) / T) / f(0)`` with
        ``f(u) = cos^2(pi/2 (u + 0.008) / 1.008)``, betas clipped at 0.999 [3]_.
    beta_start, beta_end : float, default 1e-4, 0.02
        End points of the linear schedule (ignored by ``"cosine"``).
    clip_sample : float or None, default None
        Samplers clip the predicted ``x_0`` to ``[-clip_sample, clip_sample]`` (Ho et al.
        clip images to [-1, 1] [1]_). At high noise the eps-prediction error is
        amplified by ``sqrt((1 - abar_t) / abar_t)`` in ``x_0``; clipping keeps it bounded.

    Attributes
    ----------
    betas, alphas, alphas_cumprod : torch.Tensor of shape (T,), float64
    timesteps : torch.Tensor of shape (K,), int64
        The decreasing sampling timesteps (all ``T`` until :meth:`set_timesteps`).
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 beta_start: float = 1e-4, beta_end: float = 0.02, clip_sample: float | None = None):
        T = check_positive_int(num_train_timesteps, "num_train_timesteps", minimum=2)
        check_choice(beta_schedule, "beta_schedule", BETA_SCHEDULES)
        beta_start = check_positive_float(beta_start, "beta_start")
        beta_end = check_positive_float(beta_end, "beta_end")
        if not beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
        self.num_train_timesteps = T
        self.beta_schedule = beta_schedule
        self.beta_start, self.beta_end = beta_start, beta_end
        self.clip_sample = None if clip_sample is None else check_positive_float(clip_sample, "clip_sample")
        if beta_schedule == "linear":
            betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
        else:
            u = np.arange(T + 1, dtype=np.float64) / T
            f = _cosine_alpha_bar(u)
            betas = np.minimum(1.0 - f[1:] / f[:-1], 0.999)
        self.betas = torch.from_numpy(betas)                  # (T,)
        self.alphas = 1.0 - self.betas                        # (T,)
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)   # (T,)
        self._cache = {}
        self.set_timesteps(T)

    @property
    def config(self) -> dict:
        """Constructor arguments of the schedule (to rebuild it or build a sampler on it)."""
        return dict(num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                    beta_start=self.beta_start, beta_end=self.beta_end, clip_sample=self.clip_sample)

    @classmethod
    def from_config(cls, config: dict, **overrides):
        """Build ``cls`` from a :attr:`config` dict (e.g. a DDIM sampler on a training schedule)."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        return cls(**{**config, **overrides})

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ helpers
    def _abar(self, device) -> torch.Tensor:
        """``alphas_cumprod`` (float64) on ``device``, cached."""
        key = str(device)
        if key not in self._cache:
            self._cache[key] = self.alphas_cumprod.to(device)
        return self._cache[key]

    def _check_t(self, t, batch: int | None = None) -> torch.Tensor:
        """Integer timestep(s) in ``[0, T)``: an int, a 0-d or a (B,) integer tensor."""
        T = self.num_train_timesteps
        if isinstance(t, numbers.Integral) and not isinstance(t, bool):
            t = torch.tensor(int(t))
        elif isinstance(t, torch.Tensor):
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise TypeError(f"timesteps must be integers, got a tensor of dtype {t.dtype}")
        else:
            raise TypeError(f"timesteps must be an int or an integer tensor, got {type(t).__name__}")
        if t.ndim > 1 or (t.ndim == 1 and batch is not None and t.shape[0] != batch):
            raise ValueError(f"timesteps must be a scalar or of shape ({batch},), got shape {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
            raise ValueError(f"timesteps must lie in [0, {T - 1}], got range [{int(t.min())}, {int(t.max())}]")
        return t.long()

    @staticmethod
    def _check_pair(a, b, name_a: str, name_b: str):
        for x, name in ((a, name_a), (b, name_b)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if not x.dtype.is_floating_point:
                raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
            if x.ndim < 1:
                raise ValueError(f"{name} must have shape (B, ...), got a 0-d tensor")
        if a.shape != b.shape:
            raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")

    # ------------------------------------------------------------------ forward process
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """Sample ``x_t ~ q(x_t | x_0)`` given the noise.

        .. math:: x_t = \\sqrt{\\bar\\alpha_t}\\, x_0 + \\sqrt{1 - \\bar\\alpha_t}\\, \\varepsilon

        Parameters
        ----------
        x0 : torch.Tensor of shape (B, ...)
            Clean data.
        noise : torch.Tensor of shape (B, ...)
            ``eps ~ N(0, I)``, same shape as ``x0``.
        t : int or integer torch.Tensor of shape (B,)
            Timesteps in ``[0, T)``.

        Returns
        -------
        torch.Tensor of shape (B, ...)
        """
        self._check_pair(x0, noise, "x0", "noise")
        t = self._check_t(t, x0.shape[0]).to(x0.device)
        abar = self._abar(x0.device)[t]                           # (B,) or (), float64
        abar = abar.reshape(abar.shape + (1,) * (x0.ndim - abar.ndim))  # (B, 1, ...) or (1, ...)
        return abar.sqrt().to(x0.dtype) * x0 + (1 - abar).sqrt().to(x0.dtype) * noise

    # ------------------------------------------------------------------ sampling
    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Choose ``K`` decreasing sampling timesteps, evenly spaced from ``T-1`` to ``0``.

        ``K = T`` gives ``T-1, T-2, ..., 0``; ``K = 1`` gives ``[T-1]``. The step
        after the last timestep goes to ``bar alpha = 1`` (the clean sample).

        Returns
        -------
        torch.Tensor of shape (K,), int64 (also stored in ``self.timesteps``).
        """
        T = self.num_train_timesteps
        K = check_positive_int(num_inference_steps, "num_inference_steps")
        if K > T:
            raise ValueError(f"num_inference_steps must be <= num_train_timesteps={T}, got {K}")
        ts = np.round(np.linspace(T - 1, 0, K)).astype(np.int64)
        assert np.all(np.diff(ts) < 0)
        self.num_inference_steps = K
        self.timesteps = torch.from_numpy(ts)
        self._prev = {int(a): int(b) for a, b in zip(ts, list(ts[1:]) + [-1])}
        return self.timesteps

    def previous_timestep(self, t: int) -> int:
        """The timestep after ``t`` in the current :attr:`timesteps` (``-1`` after the last)."""
        t = int(self._check_t(t))
        if t not in self._prev:
            raise ValueError(f"timestep {t} is not in the current sampling timesteps "
                             f"({self.num_inference_steps} steps from {int(self.timesteps[0])}); call set_timesteps")
        return self._prev[t]

    def _step_coefs(self, t, model_output, x_t):
        """Validated inputs and (abar_t, abar_prev) as float64 Python numbers."""
        self._check_pair(model_output, x_t, "model_output", "x_t")
        t = self._check_t(t)
        if t.ndim != 0:
            raise ValueError(f"step takes one timestep for the whole batch, got shape {tuple(t.shape)}")
        t = int(t)
        prev = self.previous_timestep(t)
        abar_t = float(self.alphas_cumprod[t])
        abar_prev = float(self.alphas_cumprod[prev]) if prev >= 0 else 1.0
        return t, prev, abar_t, abar_prev

    def _pred_x0(self, x_t, eps, abar_t):
        """``x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``, clipped to ``[-clip_sample, clip_sample]``."""
        x0 = (x_t - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)
        return x0 if self.clip_sample is None else x0.clamp(-self.clip_sample, self.clip_sample)

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None, *,
             return_output: bool = False):
        """One reverse step ``x_t -> x_{prev(t)}``; implemented by the samplers."""
        raise NotImplementedError("NoiseSchedule has no sampler; use DDPMScheduler or DDIMScheduler")


class DDPMScheduler(NoiseSchedule):
    """Ancestral DDPM sampler [1]_ (posterior variance beta-tilde), on any timestep subset.

    Between consecutive sampling timesteps ``t > s`` (``bar alpha_s = 1`` after the
    last), with ``beta = 1 - abar_t / abar_s`` and predicted
    ``x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``:

    .. math::

        x_s = \\frac{\\sqrt{\\bar\\alpha_s}\\,\\beta}{1 - \\bar\\alpha_t} x_0
            + \\frac{\\sqrt{1 - \\beta}\\,(1 - \\bar\\alpha_s)}{1 - \\bar\\alpha_t} x_t
            + \\tilde\\sigma z, \\qquad
        \\tilde\\sigma^2 = \\frac{1 - \\bar\\alpha_s}{1 - \\bar\\alpha_t}\\beta,\\quad z \\sim \\mathcal N(0, I).

    With all ``T`` timesteps this is exactly Ho et al.'s sampler (their Eq. 6-7).

    Parameters
    ----------
    num_train_timesteps, beta_schedule, beta_start, beta_end, clip_sample
        As in :class:`NoiseSchedule` (defaults 1000, ``"linear"``, 1e-4, 0.02, None).
    """

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None, *,
             return_output: bool = False):
        """Sample ``x_{prev(t)} ~ p(x_prev | x_t)``.

        Parameters
        ----------
        model_output : torch.Tensor of shape (B, ...)
            Predicted noise ``eps_theta(x_t, t)``.
        t : int
            Current timestep (one of :attr:`timesteps`).
        x_t : torch.Tensor of shape (B, ...)
        generator : torch.Generator, optional
            Source of the noise ``z``.
        return_output : bool, default False
            Return a :class:`SchedulerOutput` ``(prev_sample, pred_original_sample)`` instead of
            ``x_{prev(t)}`` alone (the same computation; the predicted ``x_0`` is exposed).

        Returns
        -------
        torch.Tensor of shape (B, ...), or SchedulerOutput with ``return_output=True``.
        """
        t, prev, abar_t, abar_prev = self._step_coefs(t, model_output, x_t)
        beta = 1.0 - abar_t / abar_prev
        x0 = self._pred_x0(x_t, model_output, abar_t)
        c0 = math.sqrt(abar_prev) * beta / (1 - abar_t)
        ct = math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar_t)
        x_prev = c0 * x0 + ct * x_t
        if prev >= 0:
            var = (1 - abar_prev) / (1 - abar_t) * beta
            x_prev = x_prev + math.sqrt(var) * seeded_randn(x_t.shape, generator, x_t.device, x_t.dtype)
        return SchedulerOutput(x_prev, x0) if return_output else x_prev


class DDIMScheduler(NoiseSchedule):
    """DDIM sampler [2]_; ``eta = 0`` is deterministic, ``eta = 1`` matches DDPM's variance.

    Between consecutive sampling timesteps ``t > s``:

    .. math::

        x_s = \\sqrt{\\bar\\alpha_s}\\, \\hat x_0 + \\sqrt{1 - \\bar\\alpha_s - \\sigma^2}\\, \\varepsilon_\\theta
              + \\sigma z, \\qquad
        \\sigma = \\eta \\sqrt{\\frac{1 - \\bar\\alpha_s}{1 - \\bar\\alpha_t}}
                  \\sqrt{1 - \\frac{\\bar\\alpha_t}{\\bar\\alpha_s}}

    (Song et al., Eq. 12 and 16).

    Parameters
    ----------
    num_train_timesteps, beta_schedule, beta_start, beta_end, clip_sample
        As in :class:`NoiseSchedule` (with clipping, ``eps`` is recomputed from the clipped ``x_0``).
    eta : float, default 0.0
        Stochasticity, ``>= 0``.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 beta_start: float = 1e-4, beta_end: float = 0.02, clip_sample: float | None = None,
                 eta: float = 0.0):
        super().__init__(num_train_timesteps, beta_schedule, beta_start, beta_end, clip_sample)
        self.eta = check_positive_float(eta, "eta", allow_zero=True)

    def __repr__(self):
        return super().__repr__()[:-1] + f", eta={self.eta!r})"

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None, *,
             return_output: bool = False):
        """Map ``x_t`` to ``x_{prev(t)}`` (see the class docstring for shapes and formula).

        Parameters
        ----------
        model_output : torch.Tensor of shape (B, ...)
            Predicted noise ``eps_theta(x_t, t)``.
        t : int
            Current timestep (one of :attr:`timesteps`).
        x_t : torch.Tensor of shape (B, ...)
        generator : torch.Generator, optional
            Source of the noise ``z`` (unused when ``eta = 0``).
        return_output : bool, default False
            Return a :class:`SchedulerOutput` ``(prev_sample, pred_original_sample)`` instead of
            ``x_{prev(t)}`` alone (the same computation; the predicted ``x_0`` is exposed).

        Returns
        -------
        torch.Tensor of shape (B, ...), or SchedulerOutput with ``return_output=True``.
        """
        t, prev, abar_t, abar_prev = self._step_coefs(t, model_output, x_t)
        x0 = self._pred_x0(x_t, model_output, abar_t)
        eps = model_output if self.clip_sample is None else (x_t - math.sqrt(abar_t) * x0) / math.sqrt(1 - abar_t)
        sigma = self.eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
        x_prev = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x_prev = x_prev + sigma * seeded_randn(x_t.shape, generator, x_t.device, x_t.dtype)
        return SchedulerOutput(x_prev, x0) if return_output else x_prev
