"""Training loop and sampling loop for epsilon-prediction denoisers.

Both loops only assume ``model(x_t, t) -> eps`` with ``x_t`` of shape (B, ...)
and integer timesteps ``t`` of shape (B,), so any denoiser (MLP on latent
vectors, transformer on space-time tokens) plugs in. The sampling loop lives
here, outside the model, as in Hugging Face diffusers, and runs any scheduler
with diffusers' interface (otgen's or diffusers' own; a sigma-based one may give
float timesteps, which reach the model as they are).

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel. Denoising Diffusion Probabilistic Models. NeurIPS 2020 (Algorithms 1 and 2).
.. [2] J. Song, C. Meng, S. Ermon. Denoising Diffusion Implicit Models. ICLR 2021.
"""

from __future__ import annotations

import inspect
import math
import numbers

import torch
from torch import nn
from tqdm.auto import tqdm

from otgen._base import check_seed, flush_denormals, torch_generator
from otgen._validation import as_tensor, check_positive_float, check_positive_int, resolve_device
from otgen.diffusion.schedules import NoiseSchedule, seeded_randn

__all__ = ["train_denoiser", "sample"]

_MAX_WARMUP = 500        # learning-rate warm-up steps at most: AdamW's moments settle within a few hundred steps
_WARMUP_DIVISOR = 10     # ... and at most a tenth of a short run, so most steps train at the full rate
_EMA_WARMUP = 10         # EMA decay min(ema, (1 + k) / (_EMA_WARMUP + k)): early weights are not averaged in
_LOSS_WINDOW = 100       # steps averaged for the progress bar's running loss

def _check_model(model):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module computing model(x_t, t) -> eps, got {type(model).__name__}")


def _lr_factor(step: int, n_steps: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(n_steps - warmup, 1)))


def _denoising_loss(model: nn.Module, schedule: NoiseSchedule, x: torch.Tensor, batch_size: int,
                    gen: torch.Generator) -> torch.Tensor:
    """One Monte-Carlo estimate of the loss of Ho et al.'s Algorithm 1 on a batch drawn from x (N, ...).

    ``x_0`` = ``batch_size`` rows of x drawn with replacement, ``t ~ U{0..T-1}``, ``eps ~ N(0, I)``;
    returns ``mean |eps - model(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t)|^2``.
    """
    device = x.device
    idx = torch.randint(x.shape[0], (batch_size,), generator=gen, device=device)
    x0 = x[idx]                                                                          # (B, ...)
    t = torch.randint(schedule.num_train_timesteps, (batch_size,), generator=gen, device=device)   # (B,)
    noise = torch.randn(x0.shape, generator=gen, device=device)                          # (B, ...)
    return nn.functional.mse_loss(model(schedule.add_noise(x0, noise, t), t), noise)


@flush_denormals()
def train_denoiser(model: nn.Module, data, schedule: NoiseSchedule, *, n_steps: int = 10000,
                   batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.0,
                   ema: float | None = 0.999, grad_clip: float | None = 1.0, warmup: int | None = None,
                   device=None, seed: int = 0, verbose: bool = False) -> dict:
    """Train ``model`` to predict the noise (Ho et al., Algorithm 1 [1]_).

    .. math::

        \\min_\\theta\\ \\mathbb E_{x_0, t \\sim U\\{0..T-1\\}, \\varepsilon \\sim \\mathcal N(0, I)}
        \\big\\| \\varepsilon - \\varepsilon_\\theta(\\sqrt{\\bar\\alpha_t} x_0 + \\sqrt{1 - \\bar\\alpha_t}\\varepsilon, t) \\big\\|^2

    AdamW with linear warm-up and cosine learning-rate decay, gradient clipping,
    and an exponential moving average (EMA) of the weights.

    Parameters
    ----------
    model : torch.nn.Module
        ``model(x_t, t) -> eps``; trained in place and moved to ``device``.
    data : array-like of shape (N, ...)
        Training samples (numpy or torch), finite.
    schedule : NoiseSchedule
        Forward-process schedule (any sampler class works).
    n_steps : int, default 10000
        Optimisation steps; each draws ``batch_size`` rows with replacement.
    batch_size : int, default 256
    lr : float, default 1e-3
        Peak learning rate.
    weight_decay : float, default 0.0
    ema : float or None, default 0.999
        EMA decay (warmed up as ``min(ema, (1 + k) / (10 + k))``). When set, the
        model holds the EMA weights on return; ``None`` keeps the last iterate.
    grad_clip : float or None, default 1.0
        Maximum gradient norm.
    warmup : int or None
        Warm-up steps; default ``min(500, n_steps // 10)``.
    device : str or torch.device, optional
        ``None``: CUDA when available, else CPU.
    seed : int, default 0
        Seeds the mini-batches, timesteps and noise.
    verbose : bool, default False
        Show a tqdm progress bar with the running loss.

    Returns
    -------
    dict
        ``{"loss": list of float}``, the mini-batch loss of every step.
    """
    _check_model(model)
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule (or a sampler), got {type(schedule).__name__}")
    n_steps = check_positive_int(n_steps, "n_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive_float(lr, "lr")
    weight_decay = check_positive_float(weight_decay, "weight_decay", allow_zero=True)
    if ema is not None and not (isinstance(ema, numbers.Real) and 0 <= ema < 1):
        raise ValueError(f"ema must be None or a decay in [0, 1), got {ema!r}")
    if grad_clip is not None:
        grad_clip = check_positive_float(grad_clip, "grad_clip")
    if warmup is None:
        warmup = min(_MAX_WARMUP, n_steps // _WARMUP_DIVISOR)
    warmup = check_positive_int(warmup, "warmup", minimum=0)
    seed = check_seed(seed)
    device = resolve_device(device)
    x = as_tensor(data, "data", device=device)                               # (N, ...)
    if x.ndim < 2:
        raise ValueError(f"data must have shape (N, ...) with at least 2 dimensions, got shape {tuple(x.shape)} "
                         "(reshape 1-d data to (N, 1))")

    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: _lr_factor(k, n_steps, max(warmup, 1)))
    ema_params = [p.detach().clone() for p in params] if ema is not None else None
    gen = torch_generator(seed, device)
    losses = torch.empty(n_steps, device=device)

    bar = tqdm(range(n_steps), desc="train denoiser", disable=not verbose, leave=False)
    for k in bar:
        loss = _denoising_loss(model, schedule, x, batch_size, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
        losses[k] = loss.detach()
        if ema_params is not None:
            decay = min(ema, (1 + k) / (_EMA_WARMUP + k))
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
        if verbose and (k % _LOSS_WINDOW == _LOSS_WINDOW - 1 or k == n_steps - 1):
            bar.set_postfix(loss=f"{float(losses[max(0, k + 1 - _LOSS_WINDOW):k + 1].mean()):.4f}")
    bar.close()
    if ema_params is not None:
        with torch.no_grad():
            for p, q in zip(params, ema_params):
                p.copy_(q)
    model.eval()
    return {"loss": losses.cpu().tolist()}


class _RunningVariance:
    """Welford's running mean and sum of squared deviations of a stream of (B, ...) tensors, in float64."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().double()
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = x.clone(), torch.zeros_like(x)
            return
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    def total(self) -> torch.Tensor:
        """Population variance over the stream, summed over all but the batch axis: shape (B,)."""
        return (self.m2 / self.count).flatten(1).sum(1)


def _check_scheduler(scheduler) -> None:
    """An otgen sampler, or any object with diffusers' ``set_timesteps``, ``step`` and ``timesteps``."""
    if isinstance(scheduler, NoiseSchedule):
        if type(scheduler).step is NoiseSchedule.step:
            raise TypeError(f"scheduler must be a sampler (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler "
                            f"or a diffusers scheduler), got the bare {type(scheduler).__name__}")
        return
    missing = [name for name in ("set_timesteps", "step") if not callable(getattr(scheduler, name, None))]
    if missing:
        raise TypeError(f"scheduler must have diffusers' set_timesteps and step methods (an otgen or diffusers "
                        f"scheduler), got {type(scheduler).__name__} without {' and '.join(missing)}")


def _step_keywords(scheduler) -> tuple[bool, bool]:
    """Whether ``scheduler.step`` takes ``generator`` and ``return_dict`` (diffusers' LMS takes no generator)."""
    params = inspect.signature(scheduler.step).parameters
    any_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return any_kw or "generator" in params, any_kw or "return_dict" in params


def _unpack_step(out, want_x0: bool, scheduler):
    """``(prev_sample, pred_original_sample or None)`` from a tensor, an output object or a tuple."""
    if isinstance(out, torch.Tensor):
        prev, x0 = out, None
    elif getattr(out, "prev_sample", None) is not None:
        prev, x0 = out.prev_sample, getattr(out, "pred_original_sample", None)
    elif isinstance(out, tuple) and out:
        prev, x0 = out[0], (out[1] if len(out) > 1 else None)
    else:
        raise TypeError(f"{type(scheduler).__name__}.step returned {type(out).__name__}; expected a tensor, an "
                        "output with prev_sample, or a tuple")
    if want_x0 and x0 is None:
        raise ValueError(f"variance_steps needs the predicted clean sample of every step, and "
                         f"{type(scheduler).__name__}.step gives no pred_original_sample; use variance_steps=None")
    return prev, x0


def _reverse_chain(model, scheduler, x, generator, variance_steps, bar):
    """Run every ``scheduler.step`` on the batch x (b, ...); returns ``(x_0, x0_variance (b,) or None)``.

    ``x`` is the standard normal start noise; it is scaled by the scheduler's ``init_noise_sigma``
    and the model sees ``scheduler.scale_model_input(x, t)`` when the scheduler has them (diffusers).
    """
    b, device = x.shape[0], x.device
    timesteps = scheduler.timesteps.tolist()
    first = len(timesteps) - (variance_steps or 0)        # index of the first step in the window
    running = _RunningVariance() if variance_steps else None
    takes_generator, takes_return_dict = _step_keywords(scheduler)
    keywords = dict(generator=generator) if takes_generator else {}
    scale_input = getattr(scheduler, "scale_model_input", None)
    x = x * float(getattr(scheduler, "init_noise_sigma", 1.0))
    for k, t in enumerate(timesteps):
        x_in = scale_input(x, t) if scale_input is not None else x
        eps = model(x_in, torch.full((b,), t, device=device))             # int64 (or float) timesteps (b,)
        in_window = running is not None and k >= first
        extra = dict(return_dict=True) if in_window and takes_return_dict else {}
        x, x0 = _unpack_step(scheduler.step(eps, t, x, **keywords, **extra), in_window, scheduler)
        if in_window:
            running.add(x0)
        bar.update(1)
    return x, (running.total() if running is not None else None)


@torch.no_grad()
@flush_denormals()
def sample(model: nn.Module, scheduler: NoiseSchedule, n: int, shape, *, num_inference_steps: int | None = None,
           seed: int = 0, generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
           device=None, batch_size: int | None = None, variance_steps: int | None = None, verbose: bool = False):
    """Generate ``n`` samples by running ``scheduler.step`` from pure noise (Ho et al., Algorithm 2 [1]_).

    .. math:: x_{t_0} \\sim \\mathcal N(0, I),\\quad x_{t_{k+1}} = \\mathrm{step}(\\varepsilon_\\theta(x_{t_k}, t_k), t_k, x_{t_k})

    With ``variance_steps = W`` it also returns the trajectory variance of the predicted
    clean sample over the last ``W`` steps (Aithal et al.'s hallucination score [3]_),

    .. math:: V = \\sum_j \\frac1W \\sum_{k=K-W}^{K-1} \\big(\\hat x_0^{(k)} - \\bar x_0\\big)_j^2,
              \\qquad \\bar x_0 = \\frac1W \\sum_{k=K-W}^{K-1} \\hat x_0^{(k)},

    with ``x̂_0^{(k)}`` the ``pred_original_sample`` of step ``k`` (of ``K``) and ``j`` running over the
    coordinates of one sample: the trace of the covariance of ``x̂_0`` along the window. It is
    accumulated with Welford's running mean and variance, so the trajectory is never stored; the
    samples are the same with or without it.

    Any scheduler with diffusers' interface works (duck-typed): ``set_timesteps(K)``, a
    decreasing ``timesteps`` tensor, ``step(model_output, t, x)`` returning a tensor, an output
    with ``prev_sample`` (diffusers' ``return_dict=True``) or a tuple, and, when present,
    ``init_noise_sigma`` (start noise ``init_noise_sigma * N(0, I)``) and ``scale_model_input``.
    It must be built on the schedule the model was trained with (e.g.
    ``diffusers.DPMSolverMultistepScheduler.from_config(schedule.diffusers_config)``); ``step`` gets
    ``generator`` when it takes one.

    Parameters
    ----------
    model : torch.nn.Module
        ``model(x_t, t) -> eps``, ``x_t`` of shape (B, *shape).
    scheduler : DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler or a diffusers scheduler
        Its timesteps are set again (``set_timesteps(K)``) before every batch, so that a
        multistep solver starts each batch afresh.
    n : int
        Number of samples.
    shape : int or tuple of int
        Shape of one sample (``(d,)`` for latent vectors).
    num_inference_steps : int, optional
        ``K``, the number of sampling steps; ``None`` keeps the scheduler's current number,
        ``len(scheduler.timesteps)``.
    seed : int, default 0
        Seeds a CPU generator when ``generator`` is ``None`` (the same noise on every device).
    generator : torch.Generator, optional
        Source of the start noise and the sampler noise.
    x_T : torch.Tensor of shape (n, *shape), optional
        Standard normal start noise (drawn from the generator when omitted), scaled by the
        scheduler's ``init_noise_sigma`` (1 for otgen's samplers).
    device : str or torch.device, optional
        ``None``: CUDA when available, else CPU.
    batch_size : int, optional
        Samples per model call (default all ``n``). The noise is drawn batch by batch,
        so samples depend on ``batch_size`` for a fixed seed.
    variance_steps : int or None, default None
        Window ``W`` (1 to the number of sampling steps) of the trajectory variance of ``x̂_0``;
        ``None`` computes nothing more and returns the samples alone. Needs a scheduler whose
        ``step`` output has ``pred_original_sample`` (otgen's, diffusers' DDPM and DDIM).
    verbose : bool, default False
        Show a tqdm progress bar.

    Returns
    -------
    samples : torch.Tensor of shape (n, *shape), float32, on ``device``.
    x0_variance : torch.Tensor of shape (n,), float64, on ``device``
        Only with ``variance_steps``: ``V`` above, for each sample.

    References
    ----------
    .. [3] S. K. Aithal, P. Maini, Z. C. Lipton, J. Z. Kolter. Understanding Hallucinations in Diffusion
       Models through Mode Interpolation. NeurIPS 2024.
    """
    _check_model(model)
    _check_scheduler(scheduler)
    n = check_positive_int(n, "n")
    shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
    for s in shape:
        check_positive_int(s, "shape entries")
    batch_size = n if batch_size is None else check_positive_int(batch_size, "batch_size")
    steps = len(scheduler.timesteps) if num_inference_steps is None else num_inference_steps
    scheduler.set_timesteps(steps)
    if variance_steps is not None:
        variance_steps = check_positive_int(variance_steps, "variance_steps")
        if variance_steps > len(scheduler.timesteps):
            raise ValueError(f"variance_steps must be at most the number of sampling steps "
                             f"({len(scheduler.timesteps)}), got {variance_steps}")
    device = resolve_device(device)
    if generator is None:
        generator = torch_generator(seed)
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if x_T is not None:
        x_T = as_tensor(x_T, "x_T", device=device)
        if tuple(x_T.shape) != (n, *shape):
            raise ValueError(f"x_T must have shape {(n, *shape)}, got {tuple(x_T.shape)}")

    was_training = model.training
    model.to(device).eval()
    out, variances = [], []
    bar = tqdm(total=len(scheduler.timesteps) * math.ceil(n / batch_size), desc="sample", disable=not verbose,
               leave=False)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = x_T[start:start + b] if x_T is not None else seeded_randn((b, *shape), generator, device, torch.float32)
        if start:
            scheduler.set_timesteps(steps)
        x, var = _reverse_chain(model, scheduler, x, generator, variance_steps, bar)
        out.append(x)
        variances.append(var)
    bar.close()
    model.train(was_training)
    if variance_steps is None:
        return torch.cat(out, 0)
    return torch.cat(out, 0), torch.cat(variances, 0)
