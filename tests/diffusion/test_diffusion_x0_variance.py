"""Aithal et al.'s trajectory variance of the predicted x̂0: the scheduler exposes x̂0, the sampling loop
accumulates its variance over the last steps, and LatentDiffusion reports it in ``info["x0_variance"]``."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from otgen.diffusion import DDIMScheduler, DDPMScheduler, LatentDiffusion, SchedulerOutput, sample

TINY = dict(hidden=8, depth=1, time_embed_dim=4, n_steps=3, num_train_timesteps=10, device="cpu")
MODE_SD = 0.05        # two tight modes at -1 and +1, far apart on the scale of their width


class _Oracle(nn.Module):
    """Stub denoiser whose predicted clean sample is known: ``x̂0(x_t, t) = target(t)`` (B, d).

    It returns the noise that makes the scheduler's ``x̂0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``
    equal ``target(t)`` (any clipping range must contain the target).
    """

    def __init__(self, alphas_cumprod, target):
        super().__init__()
        self.abar, self.target = alphas_cumprod, target

    def forward(self, x, t):
        a = self.abar[int(t[0])]
        x0 = self.target(int(t[0]), x.shape[0]).to(torch.float64)
        return ((x.double() - math.sqrt(a) * x0) / math.sqrt(1 - a)).to(x.dtype)


def _auc(scores, positives):
    """Mann-Whitney AUC: P(score of a positive > score of a negative), ties counted half."""
    pos, neg = scores[positives][:, None], scores[~positives][None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


@pytest.fixture(scope="module")
def two_modes():
    """A briefly trained LatentDiffusion on 1-d codes from two tight Gaussians at -1 and +1."""
    rng = np.random.default_rng(0)
    Y = np.concatenate([rng.normal(-1.0, MODE_SD, (200, 1)), rng.normal(1.0, MODE_SD, (200, 1))])
    est = LatentDiffusion(hidden=32, depth=2, time_embed_dim=16, n_steps=300, batch_size=128,
                          num_train_timesteps=100, device="cpu", seed=0).fit(Y)
    return Y, est


@pytest.fixture(scope="module")
def tiny():
    Y = np.random.default_rng(1).normal(2.0, 3.0, size=(40, 3))
    return LatentDiffusion(**TINY).fit(Y)


# ----------------------------------------------------------------------------- the scheduler exposes x̂0

@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
def test_step_returns_prev_sample_and_pred_original_sample(cls):
    s = cls(100, clip_sample=1.5)
    s.set_timesteps(10)
    x_t = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    t = int(s.timesteps[3])
    out = s.step(eps, t, x_t, generator=torch.Generator().manual_seed(2), return_dict=True)
    assert isinstance(out, SchedulerOutput)
    assert torch.equal(s.step(eps, t, x_t, generator=torch.Generator().manual_seed(2), return_output=True).prev_sample,
                       out.prev_sample)                                   # the former name of return_dict
    assert torch.equal(out.prev_sample, s.step(eps, t, x_t, generator=torch.Generator().manual_seed(2)))
    a = float(s.alphas_cumprod[t])
    expected = ((x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1.5, 1.5)
    torch.testing.assert_close(out.pred_original_sample, expected)


# ----------------------------------------------------------------------------- the sampling loop

@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize("window", [1, 2, 7, 20])
def test_sample_variance_of_a_known_x0_trajectory(cls, window):
    """x̂0(t) = (t / T) v with v fixed per sample: V = var_k(t_k / T) |v|^2 over the window's timesteps."""
    T, K, d = 200, 20, 3
    scheduler = cls(T)
    v = torch.randn(5, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    oracle = _Oracle(scheduler.alphas_cumprod.tolist(), lambda t, b: t / T * v[:b])
    x, var = sample(oracle, scheduler, 5, (d,), num_inference_steps=K, variance_steps=window, device="cpu")
    assert x.shape == (5, d) and var.shape == (5,) and var.dtype == torch.float64
    window_t = scheduler.timesteps.numpy()[-window:] / T
    expected = np.var(window_t) * (v ** 2).sum(1).numpy()
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-4, atol=1e-10)


def test_sample_returns_the_samples_alone_without_a_window():
    scheduler = DDPMScheduler(50)
    oracle = _Oracle(scheduler.alphas_cumprod.tolist(), lambda t, b: torch.zeros(b, 2))
    x = sample(oracle, scheduler, 4, 2, num_inference_steps=5, device="cpu")
    assert isinstance(x, torch.Tensor) and x.shape == (4, 2)
    with pytest.raises(ValueError, match="variance_steps"):
        sample(oracle, scheduler, 4, 2, num_inference_steps=5, variance_steps=6, device="cpu")
    with pytest.raises(ValueError, match="variance_steps"):
        sample(oracle, scheduler, 4, 2, num_inference_steps=5, variance_steps=0, device="cpu")


# ----------------------------------------------------------------------------- LatentDiffusion.sample

@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_constant_x0_oracle_has_zero_variance(method):
    """An oracle that always predicts the same x̂0 = c has no trajectory variance, and the chain ends at c."""
    est = LatentDiffusion(**TINY).fit(np.random.default_rng(1).normal(2.0, 3.0, size=(40, 3)))
    c = torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64)
    abar = DDPMScheduler(est.num_train_timesteps, beta_schedule=est.schedule).alphas_cumprod.tolist()
    est.model_ = _Oracle(abar, lambda t, b: c.expand(b, 3))
    codes, info = est.sample(16, seed=0, method=method, variance_steps=est.num_train_timesteps, return_info=True)
    np.testing.assert_allclose(info["x0_variance"], 0.0, atol=1e-9)
    np.testing.assert_allclose(codes, est.latent_.inverse_transform(c.numpy()).repeat(16, 0), atol=1e-4)


@pytest.mark.parametrize("method, min_auc", [("ddpm", 0.9), ("ddim", 0.65)])
def test_x0_variance_flags_samples_between_modes(two_modes, method, min_auc):
    """Samples that end in the gap between two tight modes have a larger x̂0 variance than those in a mode."""
    _, est = two_modes
    x, info = est.sample(2000, seed=7, method=method, return_info=True)
    x = x[:, 0]
    between = np.abs(x) < 1.0 - 4 * MODE_SD                  # in the gap, 4 widths from either mode
    inside = np.abs(np.abs(x) - 1.0) < 2 * MODE_SD           # within 2 widths of a mode's centre
    assert between.sum() >= 30 and inside.sum() >= 1000      # a briefly trained model interpolates
    keep = between | inside
    auc = _auc(info["x0_variance"][keep], between[keep])
    assert auc > min_auc, f"{method}: AUC {auc:.3f}"


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_info_shapes_dtype_seed_and_same_samples(tiny, method):
    codes, info = tiny.sample(11, seed=4, method=method, return_info=True)
    v = info["x0_variance"]
    assert isinstance(v, np.ndarray) and v.shape == (11,) and v.dtype == np.float64
    assert np.all(np.isfinite(v)) and np.all(v >= 0) and np.any(v > 0)
    assert info["variance_steps"] == 2                        # 10 steps: max(2, ceil(0.2 * 10))
    again, info2 = tiny.sample(11, seed=4, method=method, return_info=True)
    np.testing.assert_array_equal(again, codes)
    np.testing.assert_array_equal(info2["x0_variance"], v)
    np.testing.assert_array_equal(tiny.sample(11, seed=4, method=method), codes)     # return_info=False
    batched, info3 = tiny.sample(11, seed=4, method=method, batch_size=4, return_info=True)
    np.testing.assert_array_equal(tiny.sample(11, seed=4, method=method, batch_size=4), batched)
    assert info3["x0_variance"].shape == (11,)
    assert not np.array_equal(tiny.sample(11, seed=5, method=method, return_info=True)[1]["x0_variance"], v)


def test_default_window_and_checks(two_modes, tiny):
    _, est = two_modes                                        # 100 training timesteps
    assert est.sample(3, seed=0, return_info=True)[1]["variance_steps"] == 20                       # 100 DDPM steps
    assert est.sample(3, seed=0, method="ddim", return_info=True)[1]["variance_steps"] == 10        # 50 DDIM steps
    assert est.sample(3, seed=0, num_inference_steps=1, return_info=True)[1]["variance_steps"] == 1
    assert est.sample(3, seed=0, variance_steps=7, return_info=True)[1]["variance_steps"] == 7
    with pytest.raises(ValueError, match="variance_steps"):
        tiny.sample(3, variance_steps=11, return_info=True)
    with pytest.raises(ValueError, match="variance_steps"):
        tiny.sample(3, variance_steps=0)
    with pytest.raises(TypeError, match="variance_steps"):
        tiny.sample(3, variance_steps=2.0, return_info=True)


def test_no_x0_is_collected_without_return_info(tiny, monkeypatch):
    """Without return_info every step runs as before: no scheduler call asks for x̂0."""
    asked = []
    step = DDPMScheduler.step

    def spy(self, *args, return_dict=False, **kwargs):
        asked.append(return_dict)
        return step(self, *args, return_dict=return_dict, **kwargs)

    monkeypatch.setattr(DDPMScheduler, "step", spy)
    tiny.sample(5, seed=0)
    assert asked and not any(asked)
    asked.clear()
    tiny.sample(5, seed=0, return_info=True)
    assert sum(asked) == 2                                    # the default window of 10 steps
