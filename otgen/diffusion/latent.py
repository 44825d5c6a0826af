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
.. [5] S. K. Aithal, P. Maini, Z. C. Lipton, J. Z. Kolter. Understanding Hallucinations in Diffusion
   Models through Mode Interpolation. NeurIPS 2024.
.. [6] C. Lu, Y. Zhou, F. Bao, J. Chen, C. Li, J. Zhu. DPM-Solver++: Fast Solver for Guided Sampling of
   Diffusion Probabilistic Models. arXiv:2211.01095, 2022.
"""

from __future__ import annotations

import math

import torch

from otgen._base import BaseEstimator, check_seed, part_from_state, part_state, spawn_seed
from otgen._validation import as_tensor, check_choice, check_positive_float, check_positive_int, resolve_device
from otgen.diffusion.denoisers import MLPDenoiser
from otgen.diffusion.schedules import (BETA_SCHEDULES, DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                                       NoiseSchedule)
from otgen.diffusion.training import sample, train_denoiser
from otgen.diffusion.transformer import DiTDenoiser
from otgen.latent import LatentSpace

__all__ = ["LatentDiffusion", "DENOISERS", "SAMPLERS", "DPM_LAMBDA_MIN", "SCHEDULE_RTOL", "VARIANCE_FRACTION", "MIN_VARIANCE_STEPS"]

DENOISERS = ("mlp", "dit")
#: Default number of inference steps of each sampler (capped at what the schedule allows): DDPM runs the
#: whole chain [1]_, DDIM 50 steps, the speed / quality trade-off of Song et al. [2]_, multistep
#: DPM-Solver++ 20 steps, where Lu et al. [6]_ report it converged on their image benchmarks.
SAMPLERS = {"ddpm": 1000, "ddim": 50, "dpm_solver": 20}
#: ``lambda_min_clipped`` of ``method="dpm_solver"``: start where ``lambda = log(alpha / sigma) = -4``
#: (``alpha = 0.018``; the start noise N(0, I) is then off the true marginal of standardised codes by
#: ``alpha^2 < 4e-4`` in variance) instead of the cosine schedule's ``t = T - 1`` (``alpha = 5e-5``), where an
#: error of the noise prediction is amplified 2e4 times into x̂0 and a 10-step solver carries it on. On the
#: 8-d MNIST codes of ``benchmarks/bench_generation.py`` it took DPM-Solver++ 10 from sliced Wasserstein
#: 0.170 to 0.079 (DDIM-200, near the ODE's own limit: 0.078; cut at -5: 0.100, at -3: 0.078), measured by
#: ``benchmarks/bench_dpm_lambda.py`` (``results/dpm_lambda.md``).
DPM_LAMBDA_MIN = -4.0
#: Largest relative gap between a given scheduler's ``alphas_cumprod`` and the model's: diffusers keeps
#: them in float32 (relative rounding ~1e-5 after 1000 products); a different schedule differs by far more.
SCHEDULE_RTOL = 1e-3
#: Default window of the x̂0 trajectory variance, as a share of the sampling steps (so the same noise levels for
#: DDPM and DDIM): over the last fifth x̂0 has settled inside a mode but still swings for a sample caught between
#: two (Aithal et al. [5]_); on constructed two-mode codes it ranked those better than the last tenth did.
VARIANCE_FRACTION = 0.2
#: ... and at least this many steps, the fewest over which a variance is defined.
MIN_VARIANCE_STEPS = 2


class LatentDiffusion(BaseEstimator):
    """Diffusion generative model of latent codes ``Y`` (N, d) with an MLP or transformer denoiser.

    The codes are standardised by a :class:`~otgen.latent.LatentSpace`,
    ``z = latent_.transform(y) = (y - m) / s``; an epsilon-prediction denoiser is trained
    on ``z`` with the loss

    .. math:: \\mathbb E \\| \\varepsilon - \\varepsilon_\\theta(\\sqrt{\\bar\\alpha_t} z + \\sqrt{1 - \\bar\\alpha_t}\\varepsilon, t) \\|^2

    [1]_, and samples are drawn with the ancestral DDPM sampler [1]_, DDIM [2]_, multistep
    DPM-Solver++ [6]_ or any diffusers scheduler built on the same schedule, then mapped back, ``y = latent_.inverse_transform(z) = m + s z`` (latent diffusion [3]_).

    Parameters
    ----------
    hidden : int, default 128
        Width of the denoiser: of the residual blocks of the :class:`MLPDenoiser`, or the
        token width of the :class:`DiTDenoiser` (divisible by ``heads``).
    depth : int, default 3
        Number of residual blocks (MLP) or transformer blocks (DiT).
    time_embed_dim : int, default 64
        Size of the sinusoidal time embedding (>= 2).
    n_steps : int, default 10000
        Training steps (mini-batches).
    batch_size : int, default 256
    lr : float, default 2e-3
        Peak learning rate (AdamW, warm-up then cosine decay).
    ema : float or None, default 0.999
        EMA decay of the weights used for sampling.
    schedule : {"linear", "cosine", "squaredcos_cap_v2"}, default "cosine"
        Beta schedule (``"squaredcos_cap_v2"`` is diffusers' name of ``"cosine"``).
    num_train_timesteps : int, default 1000
    clip_sample : bool, default True
        The samplers clip the predicted ``x_0`` (standardised) to ``[-r, r]``, with ``r``
        the largest ``|z|`` of the training codes (``clip_range_``). This bounds the
        amplification of the denoiser's errors at high noise, as Ho et al. clip images
        to [-1, 1] [1]_.
    denoiser : {"mlp", "dit"}, default "mlp"
        ``"mlp"``: residual MLP on the flat code. ``"dit"``: diffusion transformer with
        adaLN-Zero [4]_ over the code read as ``n_tokens`` tokens of ``d / n_tokens``
        channels (row-major, the layout of :meth:`VideoAutoencoder.encode`).
    n_tokens : int or None, default None
        Number of latent tokens for ``denoiser="dit"``; must divide ``d``. ``None``: one
        token per coordinate (``d`` tokens of 1 channel). Ignored by ``"mlp"``.
    heads : int, default 4
        Attention heads of the DiT blocks.
    mlp_ratio : int, default 2
        MLP width of the DiT blocks, in multiples of ``hidden``.
    latent : LatentSpace or None, default None
        The standardisation of the codes. A fitted one is used as it is (so that several
        generators share one latent space); an unfitted one is copied and fitted on ``Y``;
        ``None``: ``LatentSpace()`` fitted on ``Y``. Not written by :meth:`save` (the fitted
        ``latent_`` is).
    device : str or torch.device or None, default None
        ``None``: CUDA when available, else CPU.
    seed : int, default 0
        Seeds the network initialisation and the training draws; :meth:`sample` without a
        seed draws from the stream ``spawn_seed(seed, "sample")``.
    verbose : bool, default False
        Progress bars.

    Attributes
    ----------
    latent_ : LatentSpace
        The fitted standardisation (``latent_.mean_``, ``latent_.scale_``).
    model_ : MLPDenoiser or DiTDenoiser
        Trained denoiser (EMA weights) on ``device_``.
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
    50 steps is 20 times cheaper but less accurate; DPM-Solver++ with 10-20 steps makes
    2.5-5 times fewer network calls than DDIM-50 and, being second order, is more accurate
    than DDIM at the same number of steps (``benchmarks/bench_generation.py`` measures both).

    The transformer is much more expensive per step on a CPU: with the defaults
    (``hidden=128, depth=3, mlp_ratio=2``, 0.75 M parameters) on 4 tokens x 4 channels a
    step of batch 256 takes 60-90 ms on one core, against about 9 ms for the MLP; it
    pays off on a GPU or for longer token sequences.

    Examples
    --------
    >>> import numpy as np
    >>> codes = np.random.default_rng(0).normal(5.0, 2.0, size=(200, 3))
    >>> model = LatentDiffusion(hidden=16, depth=1, n_steps=20, num_train_timesteps=50, device="cpu").fit(codes)
    >>> model.sample(4, seed=0, method="ddim", num_inference_steps=5).shape
    (4, 3)
    """

    _FITTED_ATTR = "model_"
    _SAVE_VERSION = 1

    def __init__(self, hidden: int = 128, depth: int = 3, time_embed_dim: int = 64, n_steps: int = 10000,
                 batch_size: int = 256, lr: float = 2e-3, ema: float | None = 0.999, schedule: str = "cosine",
                 num_train_timesteps: int = 1000, clip_sample: bool = True, denoiser: str = "mlp",
                 n_tokens: int | None = None, heads: int = 4, mlp_ratio: int = 2, latent: LatentSpace | None = None,
                 device=None, seed: int = 0, verbose: bool = False):
        self.hidden = hidden
        self.depth = depth
        self.time_embed_dim = time_embed_dim
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.lr = lr
        self.ema = ema
        self.schedule = schedule
        self.num_train_timesteps = num_train_timesteps
        self.clip_sample = clip_sample
        self.denoiser = denoiser
        self.n_tokens = n_tokens
        self.heads = heads
        self.mlp_ratio = mlp_ratio
        self.latent = latent
        self.device = device
        self.seed = seed
        self.verbose = verbose

    # -- settings ------------------------------------------------------------------
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
        if self.latent is not None and not isinstance(self.latent, LatentSpace):
            raise TypeError(f"latent must be a LatentSpace or None, got {type(self.latent).__name__}")
        check_seed(self.seed)

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

    def _fit_latent(self, Y: torch.Tensor) -> LatentSpace:
        """The given fitted LatentSpace (checked against ``Y``), else a new one fitted on ``Y``."""
        if self.latent is not None and self.latent._is_fitted():
            if self.latent.n_features_in_ != Y.shape[1]:
                raise ValueError(f"latent was fitted on codes of dimension {self.latent.n_features_in_}, "
                                 f"but Y has shape {tuple(Y.shape)}")
            return self.latent
        params = {} if self.latent is None else self.latent.get_params(deep=False)
        return LatentSpace(**params).fit(Y)

    # -- fit -----------------------------------------------------------------------
    def fit(self, Y) -> "LatentDiffusion":
        """Train the denoiser on the standardised latent codes.

        Parameters
        ----------
        Y : array-like of shape (N, d)
            Latent codes (numpy or torch), finite, N >= 2.

        Returns
        -------
        self
        """
        self._check_params()
        Y = as_tensor(Y, "Y", ndim=2, min_rows=2, dtype=torch.float64, device="cpu")   # (N, d)
        if self.denoiser == "dit":
            self._token_layout(Y.shape[1])
        self.latent_ = self._fit_latent(Y)
        Z = self.latent_.transform(Y).float()                           # (N, d) standardised codes
        self.device_ = resolve_device(self.device)
        self.n_features_in_ = int(Y.shape[1])
        self.clip_range_ = float(Z.abs().max()) if self.clip_sample else None
        model = self._build(Y.shape[1])
        schedule = DDPMScheduler(**self._schedule_config())
        self.history_ = train_denoiser(model, Z, schedule, n_steps=self.n_steps, batch_size=self.batch_size,
                                       lr=self.lr, ema=self.ema, device=self.device_, seed=self.seed,
                                       verbose=self.verbose)
        self.model_ = model
        return self

    # -- sample --------------------------------------------------------------------
    def _scheduler(self, method: str, eta: float):
        if method == "ddim":
            return DDIMScheduler(**self._schedule_config(), eta=eta)
        if eta != 0.0:
            raise ValueError(f"eta is a DDIM setting; use method='ddim' (got method={method!r}, eta={eta!r})")
        if method == "dpm_solver":
            return DPMSolverMultistepScheduler(**self._schedule_config(), lambda_min_clipped=DPM_LAMBDA_MIN)
        return DDPMScheduler(**self._schedule_config())

    def noise_schedule(self) -> NoiseSchedule:
        """The schedule the denoiser is trained on, with the sampling clip of ``x̂_0`` once fitted.

        Its :attr:`~otgen.diffusion.NoiseSchedule.diffusers_config` builds a diffusers scheduler for
        :meth:`sample`: ``method=diffusers.UniPCMultistepScheduler.from_config(model.noise_schedule().diffusers_config)``.

        Returns
        -------
        NoiseSchedule
        """
        return NoiseSchedule(**self._schedule_config())

    def _check_foreign(self, scheduler, num_inference_steps, eta) -> None:
        """A scheduler object given as ``method``: needs a step count, no eta, and the model's schedule."""
        if num_inference_steps is None:
            raise ValueError(f"num_inference_steps is required with a scheduler object ({type(scheduler).__name__})")
        if eta != 0.0:
            raise ValueError(f"eta is a setting of method='ddim'; a scheduler object has its own (got eta={eta!r})")
        theirs = getattr(scheduler, "alphas_cumprod", None)
        if theirs is None:
            return
        ours = self.noise_schedule().alphas_cumprod
        theirs = torch.as_tensor(theirs).detach().cpu().double()
        if theirs.shape != ours.shape or not torch.allclose(theirs, ours, rtol=SCHEDULE_RTOL, atol=1e-8):
            raise ValueError(f"{type(scheduler).__name__} is not built on the schedule the model was trained with "
                             f"({self.num_train_timesteps} timesteps, {self.schedule!r}); build it with "
                             "from_config(model.noise_schedule().diffusers_config)")

    def _variance_window(self, variance_steps, num_inference_steps: int) -> int:
        """The checked window, or the default ``max(2, ceil(0.2 K))`` capped at ``K`` steps."""
        if variance_steps is None:
            default = max(MIN_VARIANCE_STEPS, math.ceil(VARIANCE_FRACTION * num_inference_steps))
            return min(default, num_inference_steps)
        variance_steps = check_positive_int(variance_steps, "variance_steps")
        if variance_steps > num_inference_steps:
            raise ValueError(f"variance_steps must be at most num_inference_steps={num_inference_steps}, "
                             f"got {variance_steps}")
        return variance_steps

    def sample(self, n: int, seed: int | None = None, *, method: str = "ddpm", num_inference_steps: int | None = None,
               eta: float = 0.0, batch_size: int | None = None, variance_steps: int | None = None,
               return_info: bool = False):
        """Draw ``n`` latent codes (in the space of the codes given to :meth:`fit`).

        The sampling loop is :func:`otgen.diffusion.sample` (outside the model, as in
        diffusers); its standardised output ``z`` is mapped back by
        ``latent_.inverse_transform(z)``.

        With ``return_info=True``, ``info["x0_variance"]`` is Aithal et al.'s hallucination
        score [5]_: the variance of the predicted clean code ``x̂_0`` (standardised, the space the
        denoiser works in) along the last ``W = variance_steps`` reverse steps, summed over the
        ``d`` coordinates,

        .. math:: V = \\sum_{j=1}^d \\frac1W \\sum_{k=K-W}^{K-1} \\big(\\hat x_{0,j}^{(k)} - \\bar x_{0,j}\\big)^2 .

        A sample that ends between two modes has an ``x̂_0`` that keeps swinging between them
        late in the chain, so a large ``V``; a sample inside a mode has a settled one. ``x̂_0`` is
        the prediction the sampler steps with (diffusers' ``pred_original_sample``), clipped to
        ``clip_range_`` with ``clip_sample``: a coordinate held at the clip along the whole window
        adds nothing to ``V``. Aithal et al. average over coordinates; the sum ranks samples alike.

        Parameters
        ----------
        n : int
            Number of samples.
        seed : int or None, default None
            Seeds the start noise and the sampler noise (same samples on every device).
            ``None``: the stream ``spawn_seed(self.seed, "sample")``.
        method : {"ddpm", "ddim", "dpm_solver"} or scheduler object, default "ddpm"
            Ancestral DDPM sampler, DDIM, or multistep DPM-Solver++ of order 2
            (:class:`~otgen.diffusion.DPMSolverMultistepScheduler`, from ``lambda = DPM_LAMBDA_MIN = -4``
            down). Or a scheduler object with
            diffusers' ``set_timesteps`` / ``step`` (otgen's or diffusers', duck-typed, see
            :func:`otgen.diffusion.sample`) built on the model's schedule, e.g.
            ``diffusers.UniPCMultistepScheduler.from_config(self.noise_schedule().diffusers_config)``;
            its ``alphas_cumprod``, when it has them, must be the model's. The model's clipping of
            ``x̂_0`` applies to the named methods only.
        num_inference_steps : int or None, default None
            ``None``: 1000 for DDPM, 50 for DDIM, 20 for DPM-Solver++ (at most what the schedule
            allows: ``num_train_timesteps``; for DPM-Solver++ one less than the timesteps with
            ``lambda >= -4``). Required with a scheduler object.
        eta : float, default 0.0
            DDIM stochasticity (``method="ddim"`` only).
        batch_size : int or None, default None
            Samples per model call (default all ``n``).
        variance_steps : int or None, default None
            Window ``W`` of ``x0_variance``, from 1 to the number of sampling steps ``K``; used only
            with ``return_info=True``. ``None``: the last fifth of the steps, at least 2
            (``min(K, max(2, ceil(0.2 K)))``: 200 of DDPM's 1000 steps, 10 of DDIM's 50, 4 of
            DPM-Solver++'s 20). A scheduler object must give ``pred_original_sample`` for it.
        return_info : bool, default False
            Also return ``info``; without it nothing more than the samples is computed.

        Returns
        -------
        codes : ndarray of float32, shape (n, d)
            The same with and without ``return_info`` for one seed.
        info : dict
            Only with ``return_info=True``: ``"method"`` (str; a scheduler object's class name), ``"num_inference_steps"`` (int, the
            steps used), ``"variance_steps"`` (int, the window used) and ``"x0_variance"``
            (ndarray of float64, shape (n,)): ``V`` above.
        """
        self._check_fitted()
        if num_inference_steps is not None:
            num_inference_steps = check_positive_int(num_inference_steps, "num_inference_steps")
        if isinstance(method, str):
            check_choice(method, "method", tuple(SAMPLERS))
            scheduler = self._scheduler(method, eta)
            if num_inference_steps is None:
                num_inference_steps = min(SAMPLERS[method], scheduler.max_inference_steps)
        else:
            scheduler = method
            self._check_foreign(scheduler, num_inference_steps, eta)
            method = type(scheduler).__name__
        seed = spawn_seed(self.seed, "sample") if seed is None else check_seed(seed)
        window = self._variance_window(variance_steps, num_inference_steps)
        out = sample(self.model_, scheduler, n, (self.n_features_in_,), num_inference_steps=num_inference_steps,
                     seed=seed, device=self.device_, batch_size=batch_size,
                     variance_steps=window if return_info else None, verbose=self.verbose)
        Z, variance = out if return_info else (out, None)
        codes = self.latent_.inverse_transform(Z.cpu().numpy())         # (n, d) float32
        if not return_info:
            return codes
        return codes, {"method": method, "num_inference_steps": int(num_inference_steps),
                       "variance_steps": window, "x0_variance": variance.cpu().numpy().astype("float64")}

    # -- files ---------------------------------------------------------------------
    def _get_state(self) -> dict:
        return {"state_dict": self.model_.state_dict(), "n_features_in": self.n_features_in_,
                "clip_range": self.clip_range_, "history": self.history_,
                "latent": part_state(self.latent_)}

    def _set_state(self, state: dict, device=None) -> None:
        self.latent_ = part_from_state(LatentSpace, state["latent"], device)
        self.n_features_in_ = int(state["n_features_in"])
        self.clip_range_ = state["clip_range"]
        self.history_ = state["history"]
        self.device_ = resolve_device(device)
        model = self._make_denoiser(self.n_features_in_)
        model.load_state_dict(state["state_dict"])
        self.model_ = model.to(self.device_).eval()
