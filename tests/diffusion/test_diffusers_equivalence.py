"""otgen's samplers against Hugging Face diffusers' step by step, and diffusers' schedulers in otgen's loop.

Runs only where diffusers is installed (``pip install diffusers``). Each diffusers scheduler is built
from otgen's ``diffusers_config`` (same betas, spacing, no clipping). Both sides get the same
``x_t`` and noise prediction at every step (the exact Gaussian eps), so the comparison is of one
step at a time. Tolerance: diffusers keeps ``alphas_cumprod`` in float32, and ``x̂_0`` divides by
``sqrt(abar_t)``, so the gap allowed is ``TOL / sqrt(abar_t)`` (measured below 1.1e-5 / sqrt(abar_t)).
"""

import math

import pytest
import torch

from otgen.diffusion import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, LatentDiffusion,
                             NoiseSchedule, sample)

diffusers = pytest.importorskip("diffusers")

TOL = 1e-4          # float32 rounding of alphas_cumprod, amplified at most 10x along the products

# (otgen class, diffusers class name, spacing, steps). diffusers' DDIM steps to t - T // K, the next
# timestep only for "leading" spacing and for "trailing" when K divides T (see otgen.diffusion.schedules).
CASES = [(DDPMScheduler, "DDPMScheduler", "linspace", 20), (DDPMScheduler, "DDPMScheduler", "leading", 20),
         (DDPMScheduler, "DDPMScheduler", "trailing", 30),
         (DDIMScheduler, "DDIMScheduler", "leading", 20), (DDIMScheduler, "DDIMScheduler", "trailing", 25),
         (DPMSolverMultistepScheduler, "DPMSolverMultistepScheduler", "linspace", 10),
         (DPMSolverMultistepScheduler, "DPMSolverMultistepScheduler", "leading", 20),
         (DPMSolverMultistepScheduler, "DPMSolverMultistepScheduler", "trailing", 15)]


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
@pytest.mark.parametrize("cls,theirs,spacing,steps", CASES)
def test_step_by_step_equal_to_diffusers(cls, theirs, spacing, steps, beta_schedule, gaussian_oracle):
    ours = cls(beta_schedule=beta_schedule, timestep_spacing=spacing)
    ref = getattr(diffusers, theirs).from_config(ours.diffusers_config)
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    assert ours.timesteps.tolist() == ref.timesteps.tolist()
    torch.testing.assert_close(ref.alphas_cumprod.double(), ours.alphas_cumprod, rtol=1e-5, atol=1e-12)
    oracle = gaussian_oracle(ours, gaussian_oracle.M, gaussian_oracle.S)
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    for t in ours.timesteps.tolist():
        eps = oracle(x, torch.full((300,), t))
        a = ours.step(eps, t, x, generator=torch.Generator().manual_seed(t), return_dict=True)
        b = ref.step(eps, t, x, generator=torch.Generator().manual_seed(t))   # the same DDPM noise draw
        tol = TOL / math.sqrt(float(ours.alphas_cumprod[t]))
        torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=0, atol=tol)
        if hasattr(b, "pred_original_sample"):
            torch.testing.assert_close(a.pred_original_sample, b.pred_original_sample, rtol=0, atol=tol)
        x = a.prev_sample


def test_ddim_eta_one_equal_to_diffusers(gaussian_oracle):
    ours = DDIMScheduler(eta=1.0, timestep_spacing="leading")
    ref = diffusers.DDIMScheduler.from_config(ours.diffusers_config)
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    oracle = gaussian_oracle(ours, gaussian_oracle.M, gaussian_oracle.S)
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
    for t in ours.timesteps.tolist():
        eps = oracle(x, torch.full((300,), t))
        a = ours.step(eps, t, x, generator=torch.Generator().manual_seed(t))
        b = ref.step(eps, t, x, eta=1.0, generator=torch.Generator().manual_seed(t)).prev_sample
        torch.testing.assert_close(a, b, rtol=0, atol=TOL / math.sqrt(float(ours.alphas_cumprod[t])))
        x = a


def test_sample_runs_a_diffusers_scheduler(gaussian_oracle):
    """diffusers' own DPM-Solver++ in otgen's loop gives otgen's samples (float32 rounding apart)."""
    ours = DPMSolverMultistepScheduler(beta_schedule="cosine")
    ref = diffusers.DPMSolverMultistepScheduler.from_config(ours.diffusers_config)
    oracle = gaussian_oracle(ours, gaussian_oracle.M, gaussian_oracle.S)
    x_T = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    a = sample(oracle, ours, 500, 2, num_inference_steps=15, x_T=x_T, device="cpu")
    b = sample(oracle, ref, 500, 2, num_inference_steps=15, x_T=x_T, device="cpu", batch_size=250)  # 2 chains
    torch.testing.assert_close(a, b, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="pred_original_sample"):
        sample(oracle, ref, 10, 2, num_inference_steps=5, variance_steps=2, device="cpu")


def test_sample_runs_a_sigma_scheduler(gaussian_oracle):
    """Euler (Karras et al.'s sigma form) needs init_noise_sigma and scale_model_input: a closed-form check.

    "trailing" spacing gives integer timesteps from T - 1 (the oracle's table); "leading" would start
    at t = 980 from noise that ignores the signal there, a mean bias of 0.04 (Lin et al.'s point).
    """
    M, S = gaussian_oracle.M, gaussian_oracle.S
    sched = diffusers.EulerDiscreteScheduler.from_config(
        NoiseSchedule(beta_schedule="cosine", timestep_spacing="trailing").diffusers_config)
    oracle = gaussian_oracle(DDPMScheduler(beta_schedule="cosine"), M, S)
    x = sample(oracle, sched, 10_000, 2, num_inference_steps=50, seed=0, device="cpu")
    assert sched.init_noise_sigma > 10                      # the start noise was scaled, else this fails
    assert torch.allclose(x.mean(0), M, atol=0.04)
    assert torch.allclose(torch.cov(x.T), S, rtol=0.07, atol=0.03)


def test_latent_diffusion_takes_a_diffusers_scheduler():
    Y = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 + 3
    est = LatentDiffusion(hidden=16, depth=1, time_embed_dim=8, n_steps=50, num_train_timesteps=100,
                          clip_sample=False, device="cpu").fit(Y)       # diffusers' DPM-Solver has no static clip
    config = est.noise_schedule().diffusers_config
    ref = diffusers.DPMSolverMultistepScheduler.from_config(config)
    codes = est.sample(40, seed=1, method=ref, num_inference_steps=10)
    torch.testing.assert_close(torch.as_tensor(codes), torch.as_tensor(est.sample(40, seed=1, method="dpm_solver",
                                                                                  num_inference_steps=10)),
                               rtol=1e-4, atol=1e-3)     # barely trained: x̂0 is large at the first steps
    wrong = diffusers.DPMSolverMultistepScheduler.from_config(DDPMScheduler(100, "linear").diffusers_config)
    with pytest.raises(ValueError, match="not built on the schedule"):
        est.sample(4, method=wrong, num_inference_steps=10)
