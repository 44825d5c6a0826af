"""Noise schedules and samplers for epsilon-prediction diffusion (DDPM, DDIM, DPM-Solver++).

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

Relation to Hugging Face diffusers [5]_ (the names are diffusers', and so is the behaviour where
stated; ``tests/diffusion/test_diffusers_equivalence.py`` checks it step by step when diffusers is
installed):

- ``beta_schedule="cosine"`` is diffusers' ``"squaredcos_cap_v2"`` (accepted here as an alias);
  ``"linear"`` is diffusers' ``"linear"``. otgen keeps the betas in float64, diffusers in float32.
- ``timestep_spacing`` takes diffusers' three values (Lin et al. [6]_, Table 2). otgen's default is
  ``"linspace"`` (its sampler always starts at the last training timestep ``T - 1``); diffusers'
  DDPM and DDIM default to ``"leading"``, whose first timestep is ``T - T // K`` (e.g. 980 of 1000
  with 50 steps), so it never starts from the noise level the model was trained to denoise at ``T - 1``.
- ``step(..., return_dict=True)`` returns a :class:`SchedulerOutput` with diffusers' field names;
  the default ``return_dict=False`` returns the tensor ``x_{prev(t)}`` alone (diffusers' default is
  ``True``, and its ``False`` gives a tuple; :class:`SchedulerOutput` is a tuple too).
- Every sampler steps to the next timestep of :attr:`NoiseSchedule.timesteps`, as diffusers' DDPM
  and DPM-Solver do; diffusers' DDIM steps to ``t - T // K`` instead, which is the next timestep
  only for ``"leading"`` spacing (and ``"trailing"`` when ``K`` divides ``T``).

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel. Denoising Diffusion Probabilistic Models. NeurIPS 2020.
.. [2] J. Song, C. Meng, S. Ermon. Denoising Diffusion Implicit Models. ICLR 2021.
.. [3] A. Nichol, P. Dhariwal. Improved Denoising Diffusion Probabilistic Models. ICML 2021.
.. [4] C. Lu, Y. Zhou, F. Bao, J. Chen, C. Li, J. Zhu. DPM-Solver++: Fast Solver for Guided Sampling of
   Diffusion Probabilistic Models. arXiv:2211.01095, 2022 (Machine Intelligence Research 2025).
.. [5] P. von Platen et al. Diffusers: State-of-the-art diffusion models. GitHub, 2022.
.. [6] S. Lin, B. Liu, J. Li, X. Yang. Common Diffusion Noise Schedules and Sample Steps are Flawed. WACV 2024.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
import torch

from otgen._validation import check_choice, check_positive_float, check_positive_int

__all__ = ["NoiseSchedule", "DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler", "SchedulerOutput",
           "BETA_SCHEDULES", "TIMESTEP_SPACINGS", "DIFFUSERS_BETA_SCHEDULES"]

#: Beta schedules; ``"squaredcos_cap_v2"`` is diffusers' name of ``"cosine"`` (the same betas).
BETA_SCHEDULES = ("linear", "cosine", "squaredcos_cap_v2")
#: diffusers' name of each beta schedule.
DIFFUSERS_BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2", "squaredcos_cap_v2": "squaredcos_cap_v2"}
#: Rules that place ``K`` sampling timesteps among ``0..T-1`` (diffusers' names and formulas).
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")


def _cosine_alpha_bar(u: np.ndarray, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's f(u) = cos^2(pi/2 (u + s) / (1 + s)) for u = t / T in [0, 1]."""
    return np.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def _spaced_timesteps(T: int, K: int, spacing: str) -> np.ndarray:
    """``K`` decreasing integer timesteps in ``[0, T)`` by diffusers' rule ``spacing`` (Lin et al., Table 2).

    ``"linspace"``: ``round(linspace(0, T-1, K))`` reversed (``[T-1]`` for ``K = 1``, where diffusers
    gives ``[0]``); ``"leading"``: ``(K-1, ..., 1, 0) * (T // K)``; ``"trailing"``: ``round(T - k T / K) - 1``
    for ``k = 0..K-1`` (diffusers' ``arange(T, 0, -T/K)`` sometimes gives a ``K+1``-th timestep ``-1``;
    this gives exactly ``K``).
    """
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, K).round()[::-1] if K > 1 else np.array([T - 1.0])
    elif spacing == "leading":
        ts = (np.arange(K) * (T // K))[::-1]
    else:
        ts = np.round(T - np.arange(K) * (T / K)) - 1
    return ts.astype(np.int64)


class SchedulerOutput(NamedTuple):
    """What ``step(..., return_dict=True)`` returns (the fields of diffusers' ``DDPMSchedulerOutput``).

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
    beta_schedule : {"linear", "cosine", "squaredcos_cap_v2"}, default "linear"
        ``"linear"``: ``beta`` evenly spaced from ``beta_start`` to ``beta_end`` [1]_.
        ``"cosine"``: ``bar alpha_t = f((t + 1) / T) / f(0)`` with
        ``f(u) = cos^2(pi/2 (u + 0.008) / 1.008)``, betas clipped at 0.999 [3]_; this is diffusers'
        ``"squaredcos_cap_v2"``, a name accepted here for the same betas.
    beta_start, beta_end : float, default 1e-4, 0.02
        End points of the linear schedule (ignored by ``"cosine"``).
    clip_sample : float or None, default None
        Samplers clip the predicted ``x_0`` to ``[-clip_sample, clip_sample]`` (Ho et al.
        clip images to [-1, 1] [1]_). At high noise the eps-prediction error is
        amplified by ``sqrt((1 - abar_t) / abar_t)`` in ``x_0``; clipping keeps it bounded.
    timestep_spacing : {"linspace", "leading", "trailing"}, default "linspace"
        How :meth:`set_timesteps` places ``K`` timesteps among ``0..T-1`` (diffusers' rules, see
        the module docstring): ``"linspace"`` evenly from ``T-1`` down to ``0``; ``"leading"``
        ``(K-1, ..., 0) * (T // K)`` (diffusers' DDPM / DDIM default); ``"trailing"`` evenly from
        ``T-1`` down, ending at ``T/K - 1``. The default starts every chain at ``T - 1``.

    Attributes
    ----------
    betas, alphas, alphas_cumprod : torch.Tensor of shape (T,), float64
    timesteps : torch.Tensor of shape (K,), int64
        The decreasing sampling timesteps (as many as the spacing allows, ``T`` for the
        samplers, until :meth:`set_timesteps`).
    init_noise_sigma : float
        Standard deviation of the start noise, 1 (diffusers' attribute, read by :func:`~otgen.diffusion.sample`).
    """

    init_noise_sigma = 1.0

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 beta_start: float = 1e-4, beta_end: float = 0.02, clip_sample: float | None = None,
                 timestep_spacing: str = "linspace"):
        T = check_positive_int(num_train_timesteps, "num_train_timesteps", minimum=2)
        check_choice(beta_schedule, "beta_schedule", BETA_SCHEDULES)
        self.timestep_spacing = check_choice(timestep_spacing, "timestep_spacing", TIMESTEP_SPACINGS)
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
        self.set_timesteps(self.max_inference_steps)

    @property
    def config(self) -> dict:
        """Constructor arguments of the schedule (to rebuild it or build a sampler on it)."""
        return dict(num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                    beta_start=self.beta_start, beta_end=self.beta_end, clip_sample=self.clip_sample,
                    timestep_spacing=self.timestep_spacing)

    @property
    def diffusers_config(self) -> dict:
        """The same schedule as a diffusers scheduler config: ``diffusers.DDIMScheduler.from_config(s.diffusers_config)``.

        Betas, spacing, epsilon prediction, the clean sample after the last step
        (``set_alpha_to_one``) and the clipping of ``x̂_0`` (diffusers clips to ``[-1, 1]`` by default,
        a range for images; here it is off unless ``clip_sample`` is set). ``from_config`` ignores
        the keys a scheduler does not take (DPM-Solver has no ``clip_sample``).
        """
        clip = self.clip_sample is not None
        return dict(num_train_timesteps=self.num_train_timesteps,
                    beta_schedule=DIFFUSERS_BETA_SCHEDULES[self.beta_schedule], beta_start=self.beta_start,
                    beta_end=self.beta_end, timestep_spacing=self.timestep_spacing, steps_offset=0,
                    prediction_type="epsilon", set_alpha_to_one=True, clip_sample=clip,
                    clip_sample_range=self.clip_sample if clip else 1.0)

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

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The denoiser's input at ``timestep``: ``sample`` itself (diffusers' method; sigma-based samplers scale)."""
        return sample

    # ------------------------------------------------------------------ sampling
    @property
    def max_inference_steps(self) -> int:
        """The most sampling steps :meth:`set_timesteps` takes (``T``; ``T - 1`` for DPM-Solver's ``"linspace"``)."""
        return self.num_train_timesteps

    def _timesteps_for(self, K: int) -> np.ndarray:
        return _spaced_timesteps(self.num_train_timesteps, K, self.timestep_spacing)

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Choose ``K`` decreasing sampling timesteps by the rule ``timestep_spacing``.

        With ``"linspace"`` (the default), ``K = T`` gives ``T-1, T-2, ..., 0`` and ``K = 1`` gives
        ``[T-1]``. The step after the last timestep goes to ``bar alpha = 1`` (the clean sample).

        Returns
        -------
        torch.Tensor of shape (K,), int64 (also stored in ``self.timesteps``).
        """
        T = self.num_train_timesteps
        K = check_positive_int(num_inference_steps, "num_inference_steps")
        if K > self.max_inference_steps:
            raise ValueError(f"num_inference_steps must be <= {self.max_inference_steps} for {type(self).__name__} with "
                             f"num_train_timesteps={T} and timestep_spacing={self.timestep_spacing!r}, got {K}")
        ts = self._timesteps_for(K)
        if len(ts) != K or np.any(np.diff(ts) >= 0) or ts[-1] < 0 or ts[0] >= T:
            raise ValueError(f"timestep_spacing={self.timestep_spacing!r} gives no {K} distinct timesteps in "
                             f"[0, {T - 1}]; choose fewer steps or another spacing")
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
             return_dict: bool = False, return_output: bool | None = None):
        """One reverse step ``x_t -> x_{prev(t)}``; implemented by the samplers."""
        raise NotImplementedError("NoiseSchedule has no sampler; use DDPMScheduler, DDIMScheduler or "
                                  "DPMSolverMultistepScheduler")


def _output(x_prev, x0, return_dict, return_output):
    """``x_prev`` alone, or ``SchedulerOutput(x_prev, x0)`` when asked by either name."""
    wanted = return_dict if return_output is None else return_output
    return SchedulerOutput(x_prev, x0) if wanted else x_prev


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
    num_train_timesteps, beta_schedule, beta_start, beta_end, clip_sample, timestep_spacing
        As in :class:`NoiseSchedule` (defaults 1000, ``"linear"``, 1e-4, 0.02, None, ``"linspace"``).
    """

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None, *,
             return_dict: bool = False, return_output: bool | None = None):
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
        return_dict : bool, default False
            Return a :class:`SchedulerOutput` ``(prev_sample, pred_original_sample)`` instead of
            ``x_{prev(t)}`` alone (the same computation; the predicted ``x_0`` is exposed).
        return_output : bool or None, default None
            Former name of ``return_dict`` (overrides it when given).

        Returns
        -------
        torch.Tensor of shape (B, ...), or SchedulerOutput with ``return_dict=True``.
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
        return _output(x_prev, x0, return_dict, return_output)


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
    num_train_timesteps, beta_schedule, beta_start, beta_end, clip_sample, timestep_spacing
        As in :class:`NoiseSchedule` (with clipping, ``eps`` is recomputed from the clipped ``x_0``,
        diffusers' ``use_clipped_model_output=True``).
    eta : float, default 0.0
        Stochasticity, ``>= 0``.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 beta_start: float = 1e-4, beta_end: float = 0.02, clip_sample: float | None = None,
                 eta: float = 0.0, timestep_spacing: str = "linspace"):
        super().__init__(num_train_timesteps, beta_schedule, beta_start, beta_end, clip_sample, timestep_spacing)
        self.eta = check_positive_float(eta, "eta", allow_zero=True)

    def __repr__(self):
        return super().__repr__()[:-1] + f", eta={self.eta!r})"

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None, *,
             return_dict: bool = False, return_output: bool | None = None):
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
        return_dict : bool, default False
            Return a :class:`SchedulerOutput` ``(prev_sample, pred_original_sample)`` instead of
            ``x_{prev(t)}`` alone (the same computation; the predicted ``x_0`` is exposed).
        return_output : bool or None, default None
            Former name of ``return_dict`` (overrides it when given).

        Returns
        -------
        torch.Tensor of shape (B, ...), or SchedulerOutput with ``return_dict=True``.
        """
        t, prev, abar_t, abar_prev = self._step_coefs(t, model_output, x_t)
        x0 = self._pred_x0(x_t, model_output, abar_t)
        eps = model_output if self.clip_sample is None else (x_t - math.sqrt(abar_t) * x0) / math.sqrt(1 - abar_t)
        sigma = self.eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
        x_prev = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x_prev = x_prev + sigma * seeded_randn(x_t.shape, generator, x_t.device, x_t.dtype)
        return _output(x_prev, x0, return_dict, return_output)


def _log_snr_half(abar: float) -> float:
    """``lambda = log(alpha / sigma) = 0.5 log(abar / (1 - abar))``, the half log signal-to-noise ratio."""
    return 0.5 * (math.log(abar) - math.log1p(-abar))


class DPMSolverMultistepScheduler(NoiseSchedule):
    """Multistep DPM-Solver++ of order 2 ("2M") [4]_: a deterministic sampler for 10-20 steps.

    With ``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``, the half log-SNR
    ``lambda_t = log(alpha_t / sigma_t)`` and the data prediction
    ``x̂_0(x_t, t) = (x_t - sigma_t eps_theta(x_t, t)) / alpha_t``, the probability-flow ODE in
    ``lambda`` has the exact solution (Lu et al. [4]_, Eq. 9)

    .. math::

        x_s = \\frac{\\sigma_s}{\\sigma_t} x_t
              + \\sigma_s \\int_{\\lambda_t}^{\\lambda_s} e^{\\lambda} \\hat x_0(x_\\lambda, \\lambda)\\, d\\lambda .

    Between consecutive sampling timesteps ``t > s``, with ``h = lambda_s - lambda_t``, the
    multistep solver (their Algorithm 2) holds ``x̂_0`` at a linear extrapolation from this
    step's prediction ``D_0 = x̂_0(x_t, t)`` and the previous step's ``x̂_0(x_u, u)`` (``u > t``):

    .. math::

        x_s = \\frac{\\sigma_s}{\\sigma_t} x_t - \\alpha_s \\big(e^{-h} - 1\\big)
              \\Big(D_0 + \\frac{1}{2 r} \\big(D_0 - \\hat x_0(x_u, u)\\big)\\Big),
        \\qquad r = \\frac{\\lambda_t - \\lambda_u}{h}.

    The first step (no previous prediction) and the last one, to the clean sample
    (``sigma = 0``, ``h = infinity``, where the update is ``x_s = D_0``), are first order: DDIM
    with ``eta = 0`` in the variables above. This is diffusers' ``DPMSolverMultistepScheduler``
    with ``algorithm_type="dpmsolver++"``, ``solver_order=2``, ``solver_type="midpoint"``,
    ``lower_order_final=True``, ``final_sigmas_type="zero"`` (its defaults).

    Parameters
    ----------
    num_train_timesteps, beta_schedule, beta_start, beta_end
        As in :class:`NoiseSchedule` (defaults 1000, ``"linear"``, 1e-4, 0.02).
    clip_sample : float or None, default None
        Clip ``x̂_0`` to ``[-clip_sample, clip_sample]`` before it enters the update (static
        thresholding of the data prediction, which is what DPM-Solver++ was designed for [4]_;
        diffusers offers the dynamic form, ``thresholding=True``).
    timestep_spacing : {"linspace", "leading", "trailing"}, default "linspace"
        As in diffusers' DPM-Solver: ``"linspace"`` and ``"leading"`` place ``K + 1`` timesteps by
        the rule and drop the last (``t = 0``), so every one of the ``K`` model calls moves the
        sample (at most ``T - 1`` steps); ``"trailing"`` as in :class:`NoiseSchedule`.

    Notes
    -----
    The sampler keeps the previous step's ``(t, lambda, x̂_0)``; it uses it only when the step
    continues the same chain (the previous ``t`` is the timestep before this one), so a new
    batch started at the first timestep begins afresh.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 beta_start: float = 1e-4, beta_end: float = 0.02, clip_sample: float | None = None,
                 timestep_spacing: str = "linspace"):
        self._history = None
        super().__init__(num_train_timesteps, beta_schedule, beta_start, beta_end, clip_sample, timestep_spacing)

    @property
    def diffusers_config(self) -> dict:
        """As :attr:`NoiseSchedule.diffusers_config`, with the solver's settings (for ``DPMSolverMultistepScheduler``)."""
        return dict(super().diffusers_config, algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                    lower_order_final=True, final_sigmas_type="zero", thresholding=False)

    @property
    def max_inference_steps(self) -> int:
        """``T - 1`` (``T`` with ``"trailing"``): ``K + 1`` distinct timesteps are placed before ``t = 0`` is dropped."""
        return self.num_train_timesteps - (self.timestep_spacing != "trailing")

    def _timesteps_for(self, K: int) -> np.ndarray:
        if self.timestep_spacing == "trailing":
            return _spaced_timesteps(self.num_train_timesteps, K, "trailing")
        return _spaced_timesteps(self.num_train_timesteps, K + 1, self.timestep_spacing)[:-1]

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Choose ``K`` sampling timesteps (see ``timestep_spacing``) and forget the previous chain.

        Returns
        -------
        torch.Tensor of shape (K,), int64 (also stored in ``self.timesteps``).
        """
        self._history = None
        return super().set_timesteps(num_inference_steps)

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None, *,
             return_dict: bool = False, return_output: bool | None = None):
        """Map ``x_t`` to ``x_{prev(t)}`` by the update in the class docstring.

        Parameters
        ----------
        model_output : torch.Tensor of shape (B, ...)
            Predicted noise ``eps_theta(x_t, t)``.
        t : int
            Current timestep (one of :attr:`timesteps`, in order).
        x_t : torch.Tensor of shape (B, ...)
        generator : torch.Generator, optional
            Unused (the sampler is deterministic); taken for the common signature.
        return_dict : bool, default False
            Return a :class:`SchedulerOutput` ``(prev_sample, pred_original_sample)``, with
            ``pred_original_sample = D_0`` (clipped when ``clip_sample`` is set).
        return_output : bool or None, default None
            Former name of ``return_dict``.

        Returns
        -------
        torch.Tensor of shape (B, ...), or SchedulerOutput with ``return_dict=True``.
        """
        t, prev, abar_t, abar_prev = self._step_coefs(t, model_output, x_t)
        x0 = self._pred_x0(x_t, model_output, abar_t)
        history, self._history = self._history, None
        if prev < 0:                                      # to sigma = 0: the first-order limit x_s = D_0
            return _output(x0, x0, return_dict, return_output)
        lam_t, lam_s = _log_snr_half(abar_t), _log_snr_half(abar_prev)
        h = lam_s - lam_t
        D = x0
        if history is not None and self._prev.get(history[0]) == t:
            r = (lam_t - history[1]) / h
            D = x0 + (x0 - history[2]) / (2 * r)
        x_prev = math.sqrt((1 - abar_prev) / (1 - abar_t)) * x_t - math.sqrt(abar_prev) * math.expm1(-h) * D
        self._history = (t, lam_t, x0)
        return _output(x_prev, x0, return_dict, return_output)
