"""Noise schedules and DDPM / DDIM samplers, checked against closed forms."""

import math

import numpy as np
import pytest
import torch

from otgen.diffusion import DDIMScheduler, DDPMScheduler, NoiseSchedule, sample




@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_alphas_cumprod_monotone_in_unit_interval(beta_schedule):
    s = NoiseSchedule(beta_schedule=beta_schedule)
    abar = s.alphas_cumprod
    assert abar.dtype == torch.float64 and abar.shape == (1000,)
    assert bool((abar > 0).all() and (abar < 1).all())
    assert bool((abar[1:] < abar[:-1]).all())
    assert torch.allclose(s.alphas, 1 - s.betas) and torch.allclose(abar, torch.cumprod(s.alphas, 0))


def test_linear_betas():
    s = NoiseSchedule(10, "linear", beta_start=0.1, beta_end=0.19)
    assert torch.allclose(s.betas, torch.arange(10, dtype=torch.float64) * 0.01 + 0.1)


def test_cosine_matches_formula():
    T, off = 1000, 0.008
    s = NoiseSchedule(T, "cosine")
    f = lambda u: np.cos((u + off) / (1 + off) * np.pi / 2) ** 2
    expected = f(np.arange(1, T + 1) / T) / f(0.0)
    # the last beta is clipped at 0.999 (f(1) = 0); every other one is exact
    np.testing.assert_allclose(s.alphas_cumprod[:-1].numpy(), expected[:-1], rtol=1e-10, atol=1e-14)
    assert float(s.betas.max()) == pytest.approx(0.999)


@pytest.mark.parametrize("t", [0, 300, 999])
def test_add_noise_moments(t):
    s = NoiseSchedule(beta_schedule="linear")
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.tensor([[2.0, -1.0, 0.5]]).expand(n, 3)
    noise = torch.randn(n, 3, generator=g, dtype=torch.float64).float()
    xt = s.add_noise(x0, noise, torch.full((n,), t))
    a = float(s.alphas_cumprod[t])
    sd = math.sqrt(1 - a)
    # mean: 5 standard errors; variance: 5 standard errors of a Gaussian sample variance
    assert torch.allclose(xt.mean(0), math.sqrt(a) * x0[0], atol=5 * sd / math.sqrt(n) + 1e-6)
    assert torch.allclose(xt.var(0), torch.full((3,), 1 - a), rtol=5 * math.sqrt(2 / n), atol=1e-7)
    # the scalar timestep form and the per-sample form agree exactly
    assert torch.equal(s.add_noise(x0[:5], noise[:5], t), xt[:5])


def test_add_noise_mixed_timesteps_any_shape():
    s = NoiseSchedule()
    x0, eps = torch.randn(4, 2, 3, 5), torch.randn(4, 2, 3, 5)
    t = torch.tensor([0, 10, 500, 999])
    xt = s.add_noise(x0, eps, t)
    for i in range(4):
        a = s.alphas_cumprod[t[i]]
        assert torch.allclose(xt[i], (a.sqrt() * x0[i] + (1 - a).sqrt() * eps[i]).float(), atol=1e-6)


def test_set_timesteps():
    s = DDPMScheduler(1000)
    assert torch.equal(s.set_timesteps(1000), torch.arange(999, -1, -1))
    ts = s.set_timesteps(50)
    assert ts.dtype == torch.int64 and len(ts) == 50 and int(ts[0]) == 999 and int(ts[-1]) == 0
    assert bool((ts[1:] < ts[:-1]).all())
    assert torch.equal(s.set_timesteps(1), torch.tensor([999]))
    assert torch.equal(DDIMScheduler(10).set_timesteps(4), torch.tensor([9, 6, 3, 0]))
    assert s.set_timesteps(4) is s.timesteps and s.previous_timestep(666) == 333 and s.previous_timestep(0) == -1


@pytest.mark.parametrize("spacing,expected", [("linspace", [9, 6, 3, 0]), ("leading", [6, 4, 2, 0]),
                                              ("trailing", [9, 7, 4, 1])])
def test_timestep_spacings(spacing, expected):
    """diffusers' three rules (Lin et al., Table 2); the step after each timestep goes to the next one."""
    s = DDIMScheduler(10, timestep_spacing=spacing)
    assert s.set_timesteps(4).tolist() == expected
    assert [s.previous_timestep(t) for t in expected] == expected[1:] + [-1]
    assert s.config["timestep_spacing"] == spacing and s.timestep_spacing == spacing
    assert len(DDPMScheduler(1000, timestep_spacing="trailing").set_timesteps(61)) == 61   # diffusers gives 62


def test_cosine_is_diffusers_squaredcos_cap_v2():
    alias = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    assert torch.equal(alias.betas, DDPMScheduler(beta_schedule="cosine").betas)
    assert DDPMScheduler(beta_schedule="cosine").diffusers_config["beta_schedule"] == "squaredcos_cap_v2"
    assert DDPMScheduler().diffusers_config["clip_sample"] is False


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
@pytest.mark.parametrize("cls,steps,kw", [(DDPMScheduler, 1000, {}), (DDIMScheduler, 200, {}),
                                          (DDIMScheduler, 1000, {"eta": 1.0})])
def test_samplers_with_exact_eps_reproduce_gaussian(beta_schedule, cls, steps, kw, gaussian_oracle):
    M, S = gaussian_oracle.M, gaussian_oracle.S
    sched = cls(beta_schedule=beta_schedule, **kw)
    x = sample(gaussian_oracle(sched, M, S), sched, 10_000, 2, num_inference_steps=steps, seed=0,
               device="cpu", verbose=False)
    assert x.shape == (10_000, 2)
    # standard errors: mean ~0.007, covariance ~1%; the discretisation bias is below 3% here
    assert torch.allclose(x.mean(0), M, atol=0.04)
    assert torch.allclose(torch.cov(x.T), S, rtol=0.07, atol=0.03)


def test_ddpm_step_noise_is_posterior_variance():
    """With x_t = 0 and eps = 0 the DDPM step is pure noise of variance beta-tilde_t (full schedule)."""
    s = DDPMScheduler()
    t, n = 400, 100_000
    z = torch.zeros(n, 1, dtype=torch.float64)
    out = s.step(z, t, z, generator=torch.Generator().manual_seed(0))
    abar = s.alphas_cumprod
    beta_tilde = float((1 - abar[t - 1]) / (1 - abar[t]) * s.betas[t])
    assert abs(float(out.mean())) < 5 * math.sqrt(beta_tilde / n)
    assert float(out.var()) == pytest.approx(beta_tilde, rel=5 * math.sqrt(2 / n))
    # the last step (t = 0 -> clean sample) adds no noise
    assert torch.equal(s.step(z, 0, z), z)


def test_ddim_eta0_deterministic_for_fixed_start_noise(gaussian_oracle):
    sched = DDIMScheduler(eta=0.0)
    oracle = gaussian_oracle(sched, gaussian_oracle.M, gaussian_oracle.S)
    xT = torch.randn(100, 2, generator=torch.Generator().manual_seed(3))
    a = sample(oracle, sched, 100, (2,), num_inference_steps=20, x_T=xT, seed=0, device="cpu", verbose=False)
    b = sample(oracle, sched, 100, (2,), num_inference_steps=20, x_T=xT, seed=99, device="cpu", verbose=False)
    assert torch.equal(a, b)
    sched1 = DDIMScheduler(eta=1.0)
    c = sample(oracle, sched1, 100, (2,), num_inference_steps=20, x_T=xT, seed=0, device="cpu", verbose=False)
    d = sample(oracle, sched1, 100, (2,), num_inference_steps=20, x_T=xT, seed=99, device="cpu", verbose=False)
    assert not torch.allclose(c, d)


def test_single_step_from_exact_x0_is_exact():
    """With eps equal to the true noise, one step to abar=1 returns x0 exactly (both samplers)."""
    x0, eps = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    for cls in (DDPMScheduler, DDIMScheduler):
        s = cls()
        s.set_timesteps(1)
        xt = s.add_noise(x0, eps, 999)
        assert torch.allclose(s.step(eps, 999, xt), x0, atol=1e-8)


def test_bad_inputs():
    with pytest.raises(ValueError, match="beta_schedule"):
        NoiseSchedule(beta_schedule="quadratic")
    with pytest.raises(ValueError, match="beta_start <= beta_end"):
        NoiseSchedule(beta_start=0.1, beta_end=0.01)
    with pytest.raises(TypeError, match="num_train_timesteps"):
        NoiseSchedule(num_train_timesteps=10.5)
    with pytest.raises(ValueError, match="eta"):
        DDIMScheduler(eta=-1.0)
    s = DDPMScheduler(100)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"\[0, 99\]"):
        s.add_noise(x, x, 100)
    with pytest.raises(ValueError, match=r"\[0, 99\]"):
        s.add_noise(x, x, torch.tensor([0, 1, -1, 2]))
    with pytest.raises(TypeError, match="integers"):
        s.add_noise(x, x, torch.tensor([0.5] * 4))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        s.add_noise(x, x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="same shape"):
        s.add_noise(x, torch.zeros(4, 3), 5)
    with pytest.raises(TypeError, match="torch.Tensor"):
        s.add_noise(np.zeros((4, 2)), x, 5)
    with pytest.raises(ValueError, match="num_inference_steps"):
        s.set_timesteps(101)
    s.set_timesteps(10)
    with pytest.raises(ValueError, match="not in the current sampling timesteps"):
        s.step(x, 50, x)
    with pytest.raises(ValueError, match="same shape"):
        s.step(torch.zeros(4, 3), 99, x)
    with pytest.raises(NotImplementedError):
        NoiseSchedule(100).step(x, 99, x)
    with pytest.raises(TypeError, match="must be a sampler"):
        sample(torch.nn.Identity(), NoiseSchedule(100), 4, 2, device="cpu", verbose=False)
    with pytest.raises(TypeError, match="set_timesteps and step"):
        sample(torch.nn.Identity(), object(), 4, 2, device="cpu", verbose=False)
    with pytest.raises(ValueError, match="timestep_spacing"):
        DDIMScheduler(timestep_spacing="uniform")
    with pytest.raises(ValueError, match="x_T must have shape"):
        sample(torch.nn.Identity(), s, 4, 2, x_T=torch.zeros(4, 3), device="cpu", verbose=False)


def test_from_config_builds_sampler_on_same_schedule():
    s = NoiseSchedule(500, "cosine")
    d = DDIMScheduler.from_config(s.config, eta=0.5)
    assert d.eta == 0.5 and torch.equal(d.alphas_cumprod, s.alphas_cumprod)


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
def test_clip_sample_bounds_predicted_x0(cls):
    s = cls(100, clip_sample=1.5)
    s.set_timesteps(1)
    x_t = torch.tensor([[30.0, -30.0, 0.5]])
    out = s.step(torch.zeros_like(x_t), 99, x_t)          # one step to the clean sample returns x0
    a = float(s.alphas_cumprod[99])
    assert torch.allclose(out, torch.tensor([[1.5, -1.5, 0.5 / math.sqrt(a)]]), atol=1e-5)
    free = cls(100)
    free.set_timesteps(1)
    assert torch.allclose(free.step(torch.zeros_like(x_t), 99, x_t), x_t / math.sqrt(a), atol=1e-4)
